"""test_snapshot_ranges.py — a table split into ctid ranges copied by several snapshot workers.

With snapshot_workers = 3 on PostgreSQL 14+, a table of more than 128 heap pages is copied in
ctid ranges (up to 4 per worker, the last one open-ended) that the workers share, all under the
slot's exported snapshot. Against a table with holes (deleted rows, updated rows that moved to
other pages) and writes going on during the snapshot, plus two small tables copied whole:

- walgate's log says the big table was copied in several ranges;
- each table has exactly one `snapshot_done`, after all of its `read` rows, carrying the
  table's total row count (which equals the `read` rows written and the sum of its chunks);
- no row is read twice (logreplay strict), and once the stream has caught up the replayed log
  equals each table's `COPY ... TO STDOUT WITH CSV`;
- a table with a column walgate cannot render (money), big enough to be split, is not copied
  and its error is logged once, not once per range.

On PostgreSQL 11-13 every table is one range: the same checks hold, the split is skipped.
"""
import csv
import io
import re
import threading
import time

import fixture
import logreplay
from walgate_run import Run

SETUP = """
CREATE TABLE big (id bigint PRIMARY KEY, v text, n numeric, t timestamptz, nul text);
INSERT INTO big SELECT g, repeat(md5(g::text), 2) || E'\\t\\n\\\\', g / 7.0,
    '2026-01-01 00:00:00+00'::timestamptz + g * interval '1 minute',
    CASE WHEN g % 5 = 0 THEN NULL ELSE 'x' || g END
  FROM generate_series(1, 60000) g;
DELETE FROM big WHERE id % 97 = 0;
UPDATE big SET v = 'moved ' || id WHERE id % 89 = 0;
CREATE TABLE small (id int PRIMARY KEY, v text);
INSERT INTO small SELECT g, 's' || g FROM generate_series(1, 50) g;
CREATE TABLE nokey (a int, b text);
INSERT INTO nokey SELECT g, 'k' || g FROM generate_series(1, 300) g;
ALTER TABLE nokey REPLICA IDENTITY FULL;
CREATE TABLE marker (id int PRIMARY KEY);
CREATE TABLE odd (id int PRIMARY KEY, m money, pad text);
INSERT INTO odd SELECT g, g, repeat('p', 200) FROM generate_series(1, 20000) g;
CREATE PUBLICATION rpub FOR TABLE big, small, nokey, marker, odd;
"""

COLS = {"public.big": ["id", "v", "n", "t", "nul"], "public.small": ["id", "v"],
        "public.nokey": ["a", "b"]}


def copy_csv(pg, table):
    """The table as COPY ... WITH CSV (timestamptz in UTC, as the log writes it), sorted."""
    sel = ", ".join("(t AT TIME ZONE 'UTC')::text || '+00'" if c == "t" else c
                    for c in COLS[table])
    out = pg.sql(f"COPY (SELECT {sel} FROM {table}) TO STDOUT WITH CSV")
    return sorted(csv.reader(io.StringIO(out)))


def log_csv(rows, table):
    """The replayed rows through the same CSV writer (NULL and '' both read back as '')."""
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerows(
        ["" if r[c] is None else str(r[c]) for c in COLS[table]] for r in rows.values())
    return sorted(csv.reader(io.StringIO(out.getvalue())))


def check_run(pg, round_no):
    pg.sql("DROP TABLE IF EXISTS big, small, nokey, marker, odd; "
           "DROP PUBLICATION IF EXISTS rpub;")
    pg.sql(SETUP)
    pages = int(pg.sql("SELECT pg_relation_size('big') / current_setting('block_size')::int"))
    split = fixture.need_pg(14, "TID range scans (ctid-split snapshot)")
    # Writes before, while and after the slot is created and the snapshot taken: each must be
    # in the log exactly once, in the snapshot or in the stream.
    stop = threading.Event()
    done = [0]

    def writer():
        while not stop.is_set() and done[0] < 2000:
            i = done[0] + 1
            pg.sql(f"INSERT INTO big VALUES ({100000 + i}, 'live {i}', {i}, now(), NULL); "
                   f"UPDATE big SET n = n + 1 WHERE id = {i * 13}; "
                   f"DELETE FROM big WHERE id = {i * 17 + 1}")
            done[0] = i
    th = threading.Thread(target=writer)
    th.start()
    deadline = time.time() + 60
    while done[0] < 3 and time.time() < deadline and th.is_alive():
        time.sleep(0.05)
    run = Run(pg, name=f"r{round_no}", pub="rpub", extra={"snapshot_workers": "3"}).start()
    try:
        run.wait_running("snapshot done", timeout=180)
    finally:
        stop.set()
        th.join()
    writes = done[0]
    pg.sql("INSERT INTO marker VALUES (1)")
    run.wait(lambda: any(r.get("op") == "insert" and r.get("table") == "public.marker"
                         for r in run.lines()), "the marker row", timeout=60)
    lines = run.lines()
    run.stop()
    log = open(run.err).read()

    m = re.search(r"snapshot of public\.big: (\d+) rows(?: \((\d+) ctid ranges\))?", log)
    assert m, log[-3000:]
    ranges = int(m.group(2) or 1)
    if split:
        assert ranges > 1, f"{pages} pages copied in one range\n{log[-3000:]}"
    else:
        assert ranges == 1, log[-3000:]

    # A table walgate cannot render (money), large enough to be split: not copied, its
    # error reported once (not once per range), the other tables go on.
    assert not [r for r in lines if r.get("table") == "public.odd"], "odd was copied"
    assert log.count("table public.odd not ingested") == 1, log[-3000:]

    # Per table: one snapshot_done, last, with the total; chunk counts add up.
    for table in ("public.big", "public.small", "public.nokey", "public.marker"):
        reads = chunks = 0
        done = []
        for i, r in enumerate(lines):
            if r.get("table") != table:
                continue
            if r["op"] == "read":
                assert not done, f"{table}: a read row after snapshot_done (line {i})"
                reads += 1
            elif r["op"] == "snapshot":
                chunks += r["rows"]
            elif r["op"] == "snapshot_done":
                done.append(r)
        assert len(done) == 1, f"{table}: {len(done)} snapshot_done records"
        assert done[0]["rows"] == reads == chunks, (table, done[0], reads, chunks)

    st = logreplay.replay(lines)  # strict: a row read twice fails here
    for table in COLS:
        want = copy_csv(pg, table)
        got = log_csv(st.tables.get(table, {}), table)
        assert got == want, (f"{table}: log {len(got)} rows, table {len(want)}; e.g. "
                             f"{[r for r in want if r not in got][:2]} / "
                             f"{[r for r in got if r not in want][:2]}")
    pg.sql(f"SELECT pg_drop_replication_slot('walgate_r{round_no}')")
    print(f"round {round_no}: big ({pages} pages) in {ranges} ctid ranges by 3 workers, "
          f"{m.group(1)} snapshot rows, {writes} write transactions around it; log replayed equals COPY ... WITH CSV for "
          f"{', '.join(COLS)}")


def main():
    with fixture.Postgres() as pg:
        print(f"PostgreSQL {pg.major} ({pg.bin})")
        check_run(pg, 1)
        check_run(pg, 2)
    print("ok")


if __name__ == "__main__":
    main()
