"""test_ingest.py — `walgate run` against a real PostgreSQL (WALGATE_TEST_PG: 15 by default, any
of 11-18; checks that need a newer server are skipped with the reason printed).

- every supported type, with NULLs, arrays (NULL elements, 2-D), NaN/Infinity, a 1000-digit
  numeric, infinite timestamps, empty ranges and UTF-8: the snapshot (COPY) and the stream
  (pgoutput) render the same rows identically, and spot values are checked exactly;
- a multi-table transaction appears whole; interleaved transactions appear in commit order;
- a transaction larger than max_txn_memory spills and arrives whole;
- a TOASTed value updated without being touched is taken from the old row;
- protocol 2 streaming of in-progress transactions (logical_decoding_work_mem = 64kB): large
  transactions streamed in blocks interleaved with small ones arrive whole in commit order,
  rolled-back subtransactions (nested too) and aborted streamed transactions leave nothing,
  and a SIGKILL while a streamed transaction is open loses and duplicates nothing;
- an idle source (writes only to a table outside the publication) keeps confirmed_flush_lsn
  moving with the server;
- failures that retrying cannot fix: a dropped column fails only its table, the slot dropped,
  the publication dropped, the slot invalidated by max_slot_wal_keep_size — each with state
  `failed` and its message (one clean line); `walgate status --json`, `slots list`, `slots
  drop`; SIGTERM exits 0;
- the server's notices (client_min_messages = log) go to walgate's log, named by the connection,
  never raw to stderr.
"""
import os
import subprocess
import time

import fixture
import logreplay
from walgate_run import Run, committed

TYPES_DDL = """
CREATE TABLE types (
  id int PRIMARY KEY, c_bool bool, c_bpchar char(4), c_bytea bytea, c_char "char", c_date date,
  c_daterange daterange, c_float4 float4, c_float8 float8, c_int2 int2, c_int2vector int2vector,
  c_int4 int4, c_int4range int4range, c_int8 int8, c_int8range int8range, c_interval interval,
  c_json json, c_jsonb jsonb, c_numeric numeric, c_numrange numrange, c_oid oid, c_text text,
  c_time time, c_timestamp timestamp, c_timestamptz timestamptz, c_tsrange tsrange,
  c_tstzrange tstzrange, c_uuid uuid, c_varchar varchar(10),
  a_int4 int4[], a_text text[], a_numeric numeric[], a_bool bool[], a_ts timestamptz[],
  a_jsonb jsonb[], a_uuid uuid[], a_range int4range[], a_float8 float8[], a_date date[]);
ALTER TABLE types REPLICA IDENTITY FULL;
"""

ROWS = [
    "({id}, true, 'ab', '\\xdeadbeef', 'q', '2024-02-29', '[2024-01-01,2024-02-01)', 1.5, "
    "0.1, -32768, '1 2 3', 42, '[1,10)', 9223372036854775807, '[-5,6)', '1 year 2 mons 3 days "
    "04:05:06.5', '{{\"a\":[1,2.5,\"x\"]}}', '{{\"b\":true}}', 123.4500, '(1.5,2.25]', "
    "4294967295, 'héllo 😀 \"q\" \\\\ tab\tend', '23:59:59.999999', '2024-01-02 03:04:05.678901', "
    "'2024-01-02 03:04:05+02', '[2024-01-01,2024-01-02)', '[2024-01-01 00:00+00,infinity)', "
    "'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', 'varchar', '{{{{1,NULL}},{{3,4}}}}', "
    "'{{\"a b\",NULL,\"NULL\",\"\"}}', '{{1.5,NaN,{ninf}}}', '{{t,f,NULL}}', "
    "'{{infinity,-infinity}}', ARRAY['{{\"x\":1}}'::jsonb, NULL], "
    "'{{a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11}}', ARRAY['empty'::int4range, '[1,2)'], "
    "'{{NaN,Infinity,-0}}', '{{infinity,2024-01-01}}')",
    "({id}, NULL, NULL, NULL, NULL, 'infinity', 'empty', 'NaN', '-Infinity', 0, '', NULL, "
    "'empty', NULL, NULL, NULL, 'null', '[]', repeat('9', 1000)::numeric, '(,)', 0, '', "
    "NULL, '-infinity', 'infinity', '(,)', NULL, NULL, '', '{{}}', '{{}}', NULL, NULL, NULL, "
    "NULL, NULL, NULL, NULL, NULL)",
]


def test_types(pg):
    # numeric Infinity is PostgreSQL 14+
    ninf = "-Infinity" if fixture.need_pg(14, "numeric -Infinity") else "-1e100"
    pg.sql(TYPES_DDL + "CREATE PUBLICATION types_pub FOR TABLE types;")
    pg.sql("INSERT INTO types VALUES " + ", ".join(r.format(id=i + 1, ninf=ninf)
                                                   for i, r in enumerate(ROWS)))
    run = Run(pg, "types", "types_pub").start()
    run.wait_running()
    pg.sql("INSERT INTO types VALUES " + ", ".join(r.format(id=i + 101, ninf=ninf)
                                                   for i, r in enumerate(ROWS)))
    run.wait(lambda: sum(1 for r in run.lines() if r["op"] == "insert") == len(ROWS), "stream")
    run.stop()
    recs = run.lines()
    snap = {r["new"]["id"]: r["new"] for r in recs if r["op"] == "read"}
    strm = {r["new"]["id"] - 100: r["new"] for r in recs if r["op"] == "insert"}
    for i in snap:
        a, b = dict(snap[i]), dict(strm[i])
        a.pop("id"), b.pop("id")
        assert a == b, f"snapshot and stream differ for row {i}:\n{a}\n{b}"
    r1, r2 = snap[1], snap[2]
    assert r1["c_numeric"] == "123.4500" and r2["c_numeric"] == "9" * 1000
    assert r1["c_bytea"] == "3q2+7w==" and r1["c_text"] == 'héllo 😀 "q" \\\\ tab\tend'
    assert r1["a_int4"] == [[1, None], [3, 4]] and r1["a_text"] == ["a b", None, "NULL", ""]
    want_ninf = "-Infinity" if ninf == "-Infinity" else "-1" + "0" * 100
    assert r1["a_numeric"] == ["1.5", "NaN", want_ninf] and r1["a_float8"] == ["NaN", "Infinity", -0]
    assert r1["c_json"] == '{"a":[1,2.5,"x"]}' and r1["c_timestamptz"] == "2024-01-02 01:04:05+00"
    assert r1["c_interval"] == "P1Y2M3DT4H5M6.5S" and r1["c_int2vector"] == [1, 2, 3]
    assert r1["a_range"] == [{"empty": True}, {"lower": 1, "upper": 2, "lower_inc": True, "upper_inc": False}]
    assert r2["c_date"] == "infinity" and r2["c_timestamp"] == "-infinity" and r2["c_float4"] == "NaN"
    assert r2["c_daterange"] == {"empty": True} and r2["c_bool"] is None and r2["c_jsonb"] == "[]"
    # json/jsonb are strings of the document text: the document null is "null", SQL NULL null
    assert r2["c_json"] == "null" and r1["a_jsonb"] == ['{"x": 1}', None] and r2["a_jsonb"] is None
    print(f"types: {len(ROWS)} rows x {len(r1)} columns identical from snapshot and stream")


def test_transactions(pg):
    pg.sql("CREATE TABLE a (id int PRIMARY KEY, v text); CREATE TABLE b (id int PRIMARY KEY, v text);"
           "ALTER TABLE a REPLICA IDENTITY FULL; ALTER TABLE b REPLICA IDENTITY FULL;"
           "CREATE TABLE big (id int PRIMARY KEY, n int, doc text); ALTER TABLE big REPLICA IDENTITY FULL;"
           "CREATE TABLE outside (id serial PRIMARY KEY, v int);"
           "CREATE PUBLICATION txn_pub FOR TABLE a, b, big")
    run = Run(pg, "txn", "txn_pub", extra={"max_txn_memory": "1MiB"}).start()
    run.wait_running()

    # Multi-table transaction, whole.
    pg.sql("BEGIN; INSERT INTO a VALUES (1, 'a1'); INSERT INTO b VALUES (1, 'b1'); COMMIT")
    t = run.wait_committed(lambda r: r.get("table") == "public.a", "multi-table")
    assert [r["op"] for r in t] == ["begin", "insert", "insert", "commit"], t
    assert {r["table"] for r in t[1:3]} == {"public.a", "public.b"}

    # Interleaved: T1 begins first, T2 commits first -> T2 then T1 in the log.
    env = dict(os.environ)
    t1 = subprocess.Popen(["psql", "-X", "-q", "-h", pg.host, "-p", str(pg.port), "-U", "postgres"],
                          stdin=subprocess.PIPE, text=True, env=env)
    t1.stdin.write("BEGIN; INSERT INTO a VALUES (10, 't1');\n")
    t1.stdin.flush()
    time.sleep(0.5)
    pg.sql("INSERT INTO a VALUES (20, 't2')")
    t1.stdin.write("COMMIT;\n")
    t1.stdin.close()
    t1.wait()
    run.wait_committed(lambda r: r.get("new", {}).get("id") == 10, "t1")
    order = [r["new"]["id"] for r in run.lines() if r["op"] == "insert" and r["table"] == "public.a"]
    assert order == [1, 20, 10], order

    # A transaction far larger than max_txn_memory (1 MiB) spills and arrives whole.
    pg.sql("INSERT INTO big SELECT g, g, repeat(md5(g::text), 4) FROM generate_series(1, 60000) g")
    t = run.wait_committed(lambda r: r.get("table") == "public.big", "big txn", 60)
    assert len(t) == 60002 and t[-1]["op"] == "commit", len(t)

    # Unchanged TOAST: a big incompressible value, update another column only.
    pg.sql("UPDATE big SET doc = (SELECT string_agg(md5(random()::text), '') FROM "
           "generate_series(1, 1000)) WHERE id = 1")
    doc = pg.sql("SELECT doc FROM big WHERE id = 1")
    pg.sql("UPDATE big SET n = -1 WHERE id = 1")
    t = run.wait_committed(lambda r: r.get("new", {}).get("n") == -1, "toast")
    assert t[1]["new"]["doc"] == doc and len(doc) == 32000, "unchanged TOAST value not filled in"

    # Idle source: only the table outside the publication is written.
    slot_lsn = lambda: logreplay.parse_lsn(pg.sql(
        "SELECT confirmed_flush_lsn FROM pg_replication_slots WHERE slot_name = 'walgate_txn'"))
    before = slot_lsn()
    for _ in range(30):
        pg.sql("INSERT INTO outside (v) SELECT g FROM generate_series(1, 1000) g")
        time.sleep(0.1)
    target = logreplay.parse_lsn(pg.sql("SELECT pg_current_wal_lsn()"))
    run.wait(lambda: slot_lsn() >= target - 64 * 1024, "confirmed_flush_lsn to follow an idle source", 30)
    print(f"idle source: confirmed_flush_lsn moved {slot_lsn() - before} bytes with no published change")
    run.stop()
    st = logreplay.replay(run.lines())
    assert logreplay.diff(logreplay.source_rows(pg, "public.big", ["id"]), st.tables["public.big"]) == ""


class Session:
    """An interactive psql session, to keep a transaction open across steps."""

    def __init__(self, pg):
        self.p = subprocess.Popen(["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", pg.host,
                                   "-p", str(pg.port), "-U", "postgres"],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.n = 0

    def run(self, sql):
        self.n += 1
        self.p.stdin.write(f"{sql}\n\\echo __done_{self.n}\n")
        self.p.stdin.flush()
        for line in self.p.stdout:
            if line.strip() == f"__done_{self.n}":
                return
        raise AssertionError(f"psql session ended during: {sql}")

    def close(self):
        self.p.stdin.close()
        assert self.p.wait(timeout=30) == 0


def test_streaming(pg):
    """On 14+ large transactions are streamed in progress (protocol 2); before, the server
    decodes them whole at commit: the same results are expected either way."""
    streams = fixture.need_pg(14, "streaming of in-progress transactions (protocol 2)")
    if fixture.need_pg(13, "logical_decoding_work_mem"):
        pg.sql("ALTER SYSTEM SET logical_decoding_work_mem = '64kB'")
        pg.sql("SELECT pg_reload_conf()")
    pg.sql("CREATE TABLE s1 (id int PRIMARY KEY, v text); CREATE TABLE s2 (id int PRIMARY KEY, v text);"
           "ALTER TABLE s1 REPLICA IDENTITY FULL; ALTER TABLE s2 REPLICA IDENTITY FULL;"
           "CREATE TABLE s3 (id int PRIMARY KEY, m money); INSERT INTO s3 VALUES (1, 1);"
           "CREATE PUBLICATION s_pub FOR TABLE s1, s2, s3")
    # s3 is published but not configured (and of a type walgate cannot render): never ingested;
    # public.nope is configured but not published: that table reports it.
    run = Run(pg, "strm", "s_pub", extra={"max_txn_memory": "1MiB",
                                          "tables": "public.s1, public.s2, public.nope"}).start()
    run.wait_running()
    rows = lambda t, a, b: (f"INSERT INTO {t} SELECT g, repeat(md5(g::text), 3) "
                            f"FROM generate_series({a}, {b}) g;")
    a, b = Session(pg), Session(pg)
    a.run("BEGIN;" + rows("s1", 1, 5000))
    b.run("BEGIN;" + rows("s2", 50001, 55000))           # streamed, then rolled back
    a.run("SAVEPOINT x;" + rows("s1", 100001, 105000) + "ROLLBACK TO SAVEPOINT x;")
    pg.sql("INSERT INTO s1 VALUES (999999, 'small')")     # commits first
    a.run("SAVEPOINT p;" + rows("s2", 1, 100) + "SAVEPOINT q;" + rows("s2", 200001, 204000) +
          "RELEASE SAVEPOINT q;" + rows("s2", 300001, 300010) + "ROLLBACK TO SAVEPOINT p;")
    a.run("SAVEPOINT r;" + rows("s2", 1, 3000) + "RELEASE SAVEPOINT r;" +
          "UPDATE s1 SET v = 'u' WHERE id <= 10; DELETE FROM s1 WHERE id BETWEEN 4991 AND 5000;")
    b.run("ROLLBACK;")
    a.run("INSERT INTO s3 VALUES (2, 2); TRUNCATE s3; COMMIT;")
    t = run.wait_committed(lambda r: r.get("table") == "public.s2", "streamed txn", 60)
    ops = [r["op"] for r in t]
    assert ops.count("insert") == 5000 + 3000 and ops.count("update") == 10, ops.count("insert")
    assert ops.count("delete") == 10 and t[0]["lsn"] == t[-1]["lsn"], (t[0], t[-1])
    small = [r["new"]["id"] for r in run.lines() if r["op"] == "insert" and r["table"] == "public.s1"
             and r["new"]["id"] in (999999, 1)]
    assert small == [999999, 1], small  # commit order, not start order
    streamed = 0
    if streams:
        streamed = int(pg.sql("SELECT stream_txns FROM pg_stat_replication_slots "
                              "WHERE slot_name = 'walgate_strm'"))
        assert streamed >= 2, f"the server streamed {streamed} transactions: protocol 2 not used"

    # SIGKILL while a streamed transaction is open: it arrives once, whole, after the restart.
    a.run("BEGIN;" + rows("s1", 20001, 30000))
    time.sleep(1)
    run.proc.kill()
    run.proc.wait()
    run.start()
    a.run(rows("s2", 20001, 22000) + "COMMIT;")
    a.close()
    b.close()
    run.wait_committed(lambda r: r.get("new", {}).get("id") == 22000, "after kill", 60)
    run.stop()
    assert not [r for r in run.lines() if "s3" in str(r.get("table", r.get("tables")))]
    errs = {t["table"]: t["error"] for t in run.status()["tables"] if t["error"]}
    assert list(errs) == ["public.nope"] and "not in publication s_pub" in errs["public.nope"], errs
    st = logreplay.replay(run.lines())
    for tbl in ("public.s1", "public.s2"):
        assert logreplay.diff(logreplay.source_rows(pg, tbl, ["id"]), st.tables[tbl]) == "", tbl
    if pg.major >= 13:
        pg.sql("ALTER SYSTEM RESET logical_decoding_work_mem")
        pg.sql("SELECT pg_reload_conf()")
    print(f"streaming: {streamed} transactions streamed in progress, subtransaction and "
          "transaction aborts discarded, SIGKILL mid-stream: log equals source")


def test_publication_shapes(pg):
    """PostgreSQL 15 column lists and row filters hold for the snapshot as for the stream, and a
    column dropped between the snapshot and the table's first change is noticed."""
    if not fixture.need_pg(15, "publication column lists and row filters"):
        return
    pg.sql("CREATE TABLE cl (id int PRIMARY KEY, a int, secret text);"
           "INSERT INTO cl VALUES (1, 1, 's1'), (2, 2, 's2');"
           "CREATE TABLE rf (id int PRIMARY KEY, region text, v int); ALTER TABLE rf REPLICA IDENTITY FULL;"
           "INSERT INTO rf SELECT g, CASE WHEN g % 2 = 0 THEN 'eu' ELSE 'us' END, g FROM generate_series(1, 20) g;"
           "CREATE TABLE dc (id int PRIMARY KEY, x int, y int); ALTER TABLE dc REPLICA IDENTITY FULL;"
           "INSERT INTO dc VALUES (1, 1, 1);"
           "CREATE PUBLICATION shape_pub FOR TABLE rf WHERE (region = 'eu'), dc;"
           "CREATE PUBLICATION shape_ins FOR TABLE cl (id, a) WITH (publish = 'insert')")
    # column list (an insert-only publication: a column list must cover REPLICA IDENTITY FULL)
    run = Run(pg, "shapecl", "shape_ins").start()
    run.wait_running()
    pg.sql("INSERT INTO cl VALUES (3, 3, 's3')")
    run.wait_committed(lambda r: r.get("new", {}).get("id") == 3, "cl insert")
    run.stop()
    rows = [r["new"] for r in run.lines() if r["op"] in ("read", "insert")]
    assert rows and all(set(r) == {"id", "a"} for r in rows), rows
    # row filter, and a column dropped before the first change
    run = Run(pg, "shaperf", "shape_pub").start()
    run.wait_running()
    pg.sql("ALTER TABLE dc DROP COLUMN y")
    pg.sql("UPDATE rf SET region = 'eu' WHERE id = 1; UPDATE rf SET region = 'us' WHERE id = 2;"
           "UPDATE rf SET v = v + 100 WHERE region = 'eu'; DELETE FROM rf WHERE id = 4;"
           "INSERT INTO rf VALUES (21, 'eu', 21), (23, 'us', 23); INSERT INTO dc VALUES (2, 2)")
    st = run.wait(lambda: [t for t in run.status()["tables"] if t["table"] == "public.dc" and t["error"]],
                  "dc error")
    assert "y was dropped" in st[0]["error"], st
    run.wait_committed(lambda r: r.get("new", {}).get("id") == 21, "rf insert")
    run.stop()
    got = logreplay.replay(run.lines()).tables["public.rf"]
    want = logreplay.source_rows(pg, "(SELECT * FROM rf WHERE region = 'eu') q", ["id"])
    assert logreplay.diff(want, got) == "", logreplay.diff(want, got)
    print(f"publication shapes: column list kept out `secret`; row filter: {len(got)} rows equal "
          "to the filtered source; a column dropped before the first change failed its table")


def test_failures(pg):
    # A dropped column fails only its table; the other continues.
    pg.sql("CREATE TABLE f1 (id int PRIMARY KEY, x int, y int); CREATE TABLE f2 (id int PRIMARY KEY);"
           "CREATE TABLE f3 (id int PRIMARY KEY, old_name int); CREATE TABLE f4 (id int PRIMARY KEY);"
           "ALTER TABLE f1 REPLICA IDENTITY FULL; ALTER TABLE f2 REPLICA IDENTITY FULL;"
           "ALTER TABLE f3 REPLICA IDENTITY FULL; ALTER TABLE f4 REPLICA IDENTITY FULL;"
           "CREATE TABLE f5 (id int PRIMARY KEY, v int); ALTER TABLE f5 REPLICA IDENTITY FULL;"
           "INSERT INTO f4 SELECT generate_series(1, 50);"
           "CREATE PUBLICATION f_pub FOR TABLE f1, f2, f3, f4, f5")
    run = Run(pg, "fail", "f_pub").start()
    run.wait_running()
    pg.sql("INSERT INTO f1 VALUES (1, 1, 1)")
    pg.sql("ALTER TABLE f1 DROP COLUMN y")
    pg.sql("INSERT INTO f1 VALUES (2, 2); INSERT INTO f2 VALUES (7)")
    run.wait_committed(lambda r: r.get("table") == "public.f2", "f2 continues")
    st = run.wait(lambda: [t for t in run.status()["tables"] if t["table"] == "public.f1" and t["error"]],
                  "f1 error")
    assert "dropped" in st[0]["error"], st
    # A renamed column, and an added one (compatible: the table keeps streaming).
    pg.sql("INSERT INTO f3 VALUES (1, 1); ALTER TABLE f2 ADD COLUMN extra text;"
           "INSERT INTO f2 VALUES (8, 'e')")
    run.wait_committed(lambda r: r.get("new", {}).get("id") == 8, "f2 after add")
    pg.sql("ALTER TABLE f3 RENAME COLUMN old_name TO new_name; INSERT INTO f3 VALUES (2, 2)")
    st = run.wait(lambda: [t for t in run.status()["tables"] if t["table"] == "public.f3" and t["error"]],
                  "f3 error")
    assert "renamed" in st[0]["error"], st
    # A table removed from the publication (checked every 10 s).
    pg.sql("ALTER PUBLICATION f_pub DROP TABLE f4")
    st = run.wait(lambda: [t for t in run.status()["tables"] if t["table"] == "public.f4" and t["error"]],
                  "f4 removed", 30)
    assert "removed from publication" in st[0]["error"], st

    # Failures survive a restart (the state file keeps them): f1 stays failed after kill -9.
    run.proc.kill()
    run.proc.wait()
    run.start()
    run.wait(lambda: run.status().get("state") == "running" and run.status()["pid"] == run.proc.pid,
             "restarted")
    pg.sql("INSERT INTO f1 VALUES (3, 3); INSERT INTO f5 VALUES (1, 1)")
    run.wait_committed(lambda r: r.get("table") == "public.f5", "f5 after restart")
    errs = {t["table"]: t["error"] for t in run.status()["tables"] if t["error"]}
    assert set(errs) == {"public.f1", "public.f3", "public.f4"}, errs
    assert not committed(run, lambda r: r.get("new", {}).get("id") == 3 and r.get("table") == "public.f1")

    # TRUNCATE fails only that table, with the remedy; the others continue.
    pg.sql("INSERT INTO f2 VALUES (9); TRUNCATE f2; INSERT INTO f2 VALUES (10); INSERT INTO f5 VALUES (2, 2)")
    st = run.wait(lambda: [t for t in run.status()["tables"] if t["table"] == "public.f2" and t["error"]],
                  "f2 truncated")
    assert "truncated" in st[0]["error"] and "walgate source resync fail public.f2" in st[0]["error"], st
    run.wait_committed(lambda r: r.get("new", {}).get("id") == 2 and r.get("table") == "public.f5",
                       "f5 after truncate")
    assert not committed(run, lambda r: r.get("new", {}).get("id") == 10), "f2 ingested after its truncate"

    # walgate source resync: f1 (dropped column) while it is being written to, f2 (truncated),
    # f4 (added back to the publication). Each ends equal to the source; f5 keeps streaming.
    pg.sql("ALTER PUBLICATION f_pub ADD TABLE f4; INSERT INTO f1 SELECT g, g FROM generate_series(100, 20000) g")
    writer = subprocess.Popen(
        ["psql", "-X", "-q", "-h", pg.host, "-p", str(pg.port), "-U", "postgres", "-c",
         "DO $$ BEGIN FOR i IN 1..300 LOOP UPDATE f1 SET x = x + 1 WHERE id = 100 + i; "
         "INSERT INTO f1 VALUES (30000 + i, i); INSERT INTO f5 VALUES (100 + i, i); COMMIT; "
         "PERFORM pg_sleep(0.01); END LOOP; END $$"], stdout=subprocess.DEVNULL)
    t0 = time.time()
    r = fixture.walgate("source", "resync", "fail", "f1", "--wait", "60", config=run.cfg)
    resync_s = time.time() - t0
    assert r.returncode == 0 and "done" in r.stdout, r.stdout + r.stderr + run.log()
    assert writer.wait(timeout=60) == 0
    for t in ("f2", "public.f4"):
        r = fixture.walgate("source", "resync", "fail", t, "--wait", "60", config=run.cfg)
        assert r.returncode == 0, r.stdout + r.stderr
    bad = fixture.walgate("source", "resync", "fail", "public.nope", "--wait", "30", config=run.cfg)
    assert bad.returncode == 1 and "not in publication f_pub" in bad.stderr, bad.stdout + bad.stderr
    pg.sql("INSERT INTO f1 VALUES (99999, 1); INSERT INTO f2 VALUES (11); INSERT INTO f4 VALUES (51)")
    run.wait_committed(lambda r: r.get("new", {}).get("id") == 51, "after resync")
    errs = {t["table"]: t["error"] for t in run.status()["tables"] if t["error"]}
    assert set(errs) == {"public.f3", "public.nope"}, errs
    st = logreplay.replay(run.lines())
    for tbl in ("public.f1", "public.f2", "public.f4", "public.f5"):
        assert logreplay.diff(logreplay.source_rows(pg, tbl, ["id"]), st.tables[tbl]) == "", tbl
    assert all("y" not in r for r in st.tables["public.f1"].values())
    print(f"resync: f1 re-snapshotted under concurrent writes in {resync_s:.1f} s; truncated and "
          "re-added tables recovered; failures kept across kill -9")

    # slots list shows it; the slot dropped under walgate -> failed, with the remedy.
    sl = fixture.walgate("slots", "list", config=run.cfg)
    assert "walgate_fail" in sl.stdout and "source fail" in sl.stdout, sl.stdout + sl.stderr
    deadline = time.time() + 20
    while time.time() < deadline:
        pg.sql("SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots "
               "WHERE slot_name = 'walgate_fail' AND active")
        p = pg.sql("SELECT pg_drop_replication_slot('walgate_fail')", check=False)
        if p.returncode == 0:
            break
    s = run.wait(lambda: (lambda x: x if x["state"] == "failed" else None)(run.status()), "failed")
    assert "dropped" in s["error"] and "slots drop fail" in s["remedy"], s
    t = fixture.walgate("status", config=run.cfg)
    assert t.returncode == 1 and "fix:" in t.stdout, t.stdout
    # The server's message is one clean line, in status.json and as `walgate status` prints it.
    assert not any(c < " " for c in s["error"]) and f"  error: {s['error']}\n" in t.stdout, t.stdout
    run.stop()
    d = fixture.walgate("slots", "drop", "fail", config=run.cfg)
    assert d.returncode == 0, d.stderr

    # The publication dropped -> failed.
    pg.sql("CREATE TABLE p1 (id int PRIMARY KEY); ALTER TABLE p1 REPLICA IDENTITY FULL;"
           "CREATE PUBLICATION p_pub FOR TABLE p1")
    run = Run(pg, "pubdrop", "p_pub").start()
    run.wait_running()
    pg.sql("DROP PUBLICATION p_pub; INSERT INTO p1 VALUES (1)")
    if pg.major >= 18:
        # PostgreSQL 18 skips a missing publication with a WARNING (55000) instead of ending
        # the stream: the change never arrives, so the table fails (membership check, every
        # 10 s), and the server's warning is in walgate's log under the connection's name.
        # The table's error says the publication was dropped, with re-creating it (not
        # ALTER PUBLICATION ... ADD TABLE) and a resync as the remedy.
        st = run.wait(lambda: [t for t in run.status()["tables"]
                               if t["table"] == "public.p1" and t["error"]], "p1 failed", 30)
        err = st[0]["error"]
        assert "publication p_pub was dropped" in err and "CREATE PUBLICATION p_pub" in err \
            and "walgate source resync pubdrop public.p1" in err and "ALTER PUBLICATION" not in err, st
        run.wait(lambda: "[postgres main] server WARNING 55000" in open(run.err).read(),
                 "the server's warning in the log")
        # Following the remedy brings the table back, equal to the source.
        pg.sql("CREATE PUBLICATION p_pub FOR TABLE p1")
        r = fixture.walgate("source", "resync", "pubdrop", "public.p1", "--wait", "60",
                            config=run.cfg)
        assert r.returncode == 0, r.stdout + r.stderr + run.log()
        pg.sql("INSERT INTO p1 VALUES (2)")
        run.wait_committed(lambda x: x.get("new", {}).get("id") == 2, "p1 again")
        st = logreplay.replay(run.lines())
        assert sorted(st.tables["public.p1"]) == sorted(
            logreplay.source_rows(pg, "public.p1", ["id"])), st.tables
    else:
        s = run.wait(lambda: (lambda x: x if x["state"] == "failed" else None)(run.status()),
                     "failed")
        assert "publication p_pub" in s["error"], s
    run.stop()

    # The slot invalidated by max_slot_wal_keep_size while walgate is away -> overcompacted.
    if not fixture.need_pg(13, "max_slot_wal_keep_size (slot invalidation)"):
        print("failures: dropped column, renamed column, truncate, table removed from "
              "publication, slot dropped, publication dropped")
        return
    pg.sql("CREATE TABLE w1 (id int PRIMARY KEY, v text); ALTER TABLE w1 REPLICA IDENTITY FULL;"
           "CREATE PUBLICATION w_pub FOR TABLE w1")
    run = Run(pg, "wal", "w_pub").start()
    run.wait_running()
    run.stop()
    pg.sql("ALTER SYSTEM SET max_slot_wal_keep_size = '1MB'")
    pg.sql("SELECT pg_reload_conf()")
    for _ in range(4):
        pg.sql("INSERT INTO w1 SELECT g, repeat('x', 100) FROM generate_series(1, 20000) g "
               "ON CONFLICT (id) DO UPDATE SET v = excluded.v")
        pg.sql("SELECT pg_switch_wal()")
        pg.sql("CHECKPOINT")
    lost = pg.sql("SELECT wal_status FROM pg_replication_slots WHERE slot_name = 'walgate_wal'")
    assert lost == "lost", lost
    run.start()
    s = run.wait(lambda: (lambda x: x if x["state"] == "failed" else None)(run.status()), "failed")
    assert "overcompacted" in s["error"] and "requested LSN no longer available" in s["error"], s
    run.stop()
    pg.sql("ALTER SYSTEM RESET max_slot_wal_keep_size")
    pg.sql("SELECT pg_reload_conf()")
    print("failures: dropped column, renamed column, truncate, table removed from publication, "
          "slot dropped, publication dropped, slot overcompacted")


def test_notices(pg):
    """Notices from the server (here the LOG lines of logical decoding, which the role's
    client_min_messages = log sends to the client) are logged by walgate under the connection's
    name, never printed raw to stderr by libpq."""
    pg.sql("CREATE TABLE n1 (id int PRIMARY KEY); ALTER TABLE n1 REPLICA IDENTITY FULL;"
           "CREATE PUBLICATION n_pub FOR TABLE n1")
    pg.sql("ALTER ROLE postgres SET client_min_messages = 'log'")
    try:
        run = Run(pg, "notice", "n_pub").start()
        run.wait_running()
        pg.sql("INSERT INTO n1 VALUES (1)")
        run.wait_committed(lambda r: r.get("table") == "public.n1", "insert")
        run.stop()
    finally:
        pg.sql("ALTER ROLE postgres RESET client_min_messages")
    log = open(run.err).read()
    got = [l for l in log.splitlines() if "[postgres main] server LOG" in l]
    assert any("walgate_notice" in l for l in got), log  # "starting logical decoding for slot"
    raw = [l for l in log.splitlines() if l.split(":")[0] in ("LOG", "NOTICE", "WARNING", "DETAIL")]
    assert not raw, raw
    print(f"notices: {len(got)} server notices logged under [postgres main], none raw, e.g.\n"
          f"  {got[0]}")


def main():
    with fixture.Postgres() as pg:
        print(f"PostgreSQL {pg.major} ({pg.bin})")
        test_notices(pg)
        test_types(pg)
        test_transactions(pg)
        test_streaming(pg)
        test_publication_shapes(pg)
        test_failures(pg)
    print("ok")


if __name__ == "__main__":
    main()
