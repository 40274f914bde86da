"""test_ingest_diverge3.py — domains and enums altered while walgate runs (issue 12: never
diverge silently; neighbours of the differential test's DDL).

Against a real PostgreSQL 15; every table either replays equal to `COPY ... TO STDOUT WITH CSV`
or is in an error state whose status `error_code` names the reason:
- a domain altered (ADD CONSTRAINT, DROP CONSTRAINT, SET/DROP NOT NULL, SET DEFAULT, RENAME)
  changes no stored value: the table keeps streaming, equal to the source; a domain over a
  domain is rendered as its base type (not failed as unsupported);
- a domain-typed column retyped (to its base type, to another domain): `column_type_changed`,
  also when walgate decodes the WAL of the old type after the retype (it was down), where the
  catalog no longer has the column as that domain; a table with a domain column dropped and
  created again while walgate was down: `recreated`; resync recovers;
- an enum column (ingested as text through text_columns): ALTER TYPE ... ADD VALUE changes no
  stored value (keeps streaming, equal); ALTER TYPE ... RENAME VALUE changes what every stored
  row of that value reads without a change in the WAL, so the table fails
  (`enum_value_renamed`, found by the catalog check) instead of keeping the old label silently;
  the resync recovers; an enum column not in text_columns fails as `unsupported_type`;
- WAL that still has a domain column decoded after the column was dropped (also from a
  partitioned root published through it), retyped, or its table renamed and the column
  retyped: the domain is resolved by its type OID, the row is ingested, and the table fails
  only for what was done (`column_dropped_or_renamed` at the root, not its leaf;
  `column_type_changed`; `renamed`): the leaf and the renamed table failed as a dropped or
  retyped column (differential seeds 898236430, 829557202); a domain dropped with CASCADE
  (its columns with it): `column_dropped_or_renamed`;
- a table failed (TRUNCATE) and then renamed, with changes under its new name: the new name is
  failed too (`not_snapshotted`; it had no status entry and looked healthy while none of its
  rows reached the log: differential seeds 1716834022, 46590454).
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import fixture  # noqa: E402
from walgate_run import Run  # noqa: E402
from test_ingest_diverge import assert_equal, log_rows, resync, table_errors, wait_error  # noqa: E402


def codes(run):
    return {t["table"]: t["error_code"] for t in run.status()["tables"] if t["error"]}


def mark(pg, run, n):
    """A change of the table `mk` committed after everything before; waits for it in the log
    (the log is in commit order)."""
    pg.sql(f"INSERT INTO mk VALUES ({n})")
    run.wait_committed(lambda r: r.get("table") == "public.mk" and r.get("new", {}).get("id") == n,
                       f"marker {n}")


def settled(pg, run):
    """Wait until a catalog check began after everything committed so far."""
    lsn = pg.sql("SELECT pg_current_wal_lsn()")
    run.wait(lambda: run.status().get("catalog_checked_lsn") and
             pg.sql(f"SELECT '{run.status()['catalog_checked_lsn']}'::pg_lsn >= '{lsn}'::pg_lsn")
             == "t", "a catalog check after the DDL")


def test_domain_altered(pg):
    pg.sql("CREATE DOMAIN posint AS int CHECK (VALUE > 0); CREATE DOMAIN small AS posint "
           "CHECK (VALUE < 1000000); CREATE DOMAIN dnum AS numeric(12,2);"
           "CREATE TABLE da (id int PRIMARY KEY, p posint, s small, n dnum, v text);"
           "INSERT INTO da SELECT g, g, g * 2, g / 3.0, 'v' || g FROM generate_series(1, 20) g;"
           "CREATE TABLE dr (id int PRIMARY KEY, p posint, n dnum);"
           "INSERT INTO dr SELECT g, g, g FROM generate_series(1, 5) g;"
           "CREATE TABLE dd (id int PRIMARY KEY, p posint); INSERT INTO dd VALUES (1, 1);"
           "CREATE TABLE dx (id int PRIMARY KEY, p posint); INSERT INTO dx VALUES (1, 1);"
           "CREATE TABLE mk (id int PRIMARY KEY);"
           "CREATE PUBLICATION dom_pub FOR TABLE da, dr, dd, dx, mk")
    run = Run(pg, "dom", "dom_pub", extra={"catalog_interval": "200ms"}).start()
    run.wait_running()
    assert not table_errors(run), table_errors(run)  # small (a domain over a domain) renders

    # Domains altered: no stored value changes, the table keeps streaming.
    pg.sql("ALTER DOMAIN posint ADD CONSTRAINT under_1m CHECK (VALUE < 1000000);"
           "UPDATE da SET p = p + 1, v = 'a' WHERE id <= 5; INSERT INTO da VALUES (21, 21, 42, 7, 'x')")
    pg.sql("ALTER DOMAIN dnum SET DEFAULT 1.5; INSERT INTO da (id, p, s, v) VALUES (22, 1, 1, 'd')")
    pg.sql("ALTER DOMAIN small ADD CONSTRAINT even CHECK (VALUE % 2 = 0) NOT VALID;"
           "UPDATE da SET s = 4 WHERE id = 3; ALTER DOMAIN small DROP CONSTRAINT even")
    pg.sql("ALTER DOMAIN posint SET NOT NULL; DELETE FROM da WHERE id = 7;"
           "ALTER DOMAIN posint DROP NOT NULL; ALTER DOMAIN posint RENAME TO posint2;"
           "ALTER DOMAIN posint2 DROP CONSTRAINT under_1m; INSERT INTO da VALUES (23, 5, 6, NULL, 'r')")
    # A domain column retyped while running: to the base type, and to another domain.
    pg.sql("ALTER TABLE dr ALTER COLUMN p TYPE int; INSERT INTO dr VALUES (6, 6, 6)")
    pg.sql("ALTER TABLE da ADD COLUMN z int;"
           "ALTER TABLE dx ALTER COLUMN p TYPE small; INSERT INTO dx VALUES (2, 2)")
    assert wait_error(run, "public.dr") and wait_error(run, "public.dx")
    mark(pg, run, 1)
    settled(pg, run)
    assert codes(run) == {"public.dr": "column_type_changed", "public.dx": "column_type_changed"}, \
        table_errors(run)
    n = assert_equal(pg, run, "public.da", "SELECT id, p, s, n, v FROM da", ["id", "p", "s", "n", "v"])
    assert n == 22

    # While walgate is down: a change with the domain column, then the column retyped. On
    # restart the Relation message carries the old domain, which the catalog no longer has there.
    run.stop()
    pg.sql("INSERT INTO dd VALUES (2, 2); ALTER TABLE dd ALTER COLUMN p TYPE bigint;"
           "INSERT INTO dd VALUES (3, 3)")
    run.start()
    wait_error(run, "public.dd")
    mark(pg, run, 2)
    # dr's and dx's codes survived the restart (the state file's errcode lines)
    assert codes(run) == {t: "column_type_changed" for t in ("public.dr", "public.dx", "public.dd")}, \
        table_errors(run)
    for t in ("public.dr", "public.dd", "public.dx"):
        resync(run, t)
    pg.sql("INSERT INTO dr VALUES (7, 7, 7); INSERT INTO dd VALUES (4, 4); INSERT INTO dx VALUES (3, 4)")
    mark(pg, run, 3)
    assert not table_errors(run), table_errors(run)
    assert_equal(pg, run, "public.dr", "SELECT id, p, n FROM dr", ["id", "p", "n"])
    assert_equal(pg, run, "public.dd", "SELECT id, p FROM dd", ["id", "p"])
    assert_equal(pg, run, "public.dx", "SELECT id, p FROM dx", ["id", "p"])
    assert_equal(pg, run, "public.da", "SELECT id, p, s, n, v FROM da", ["id", "p", "s", "n", "v"])

    # A table with a domain column dropped and created again while walgate was down, with a
    # change walgate has not decoded yet: the catalog check when it starts finds the name is
    # another relation now (`dropped` is what the WAL's old relation would say, were it decoded
    # first: the catalog no longer has it).
    run.stop()
    pg.sql("INSERT INTO dd VALUES (5, 5)")  # bigint now: not a domain; dr still has dnum
    pg.sql("INSERT INTO dr VALUES (8, 8, 8); DROP TABLE dr; CREATE TABLE dr (id int PRIMARY KEY, "
           "p int, n dnum); ALTER PUBLICATION dom_pub ADD TABLE dr")
    run.start()
    wait_error(run, "public.dr")
    mark(pg, run, 4)
    assert codes(run) == {"public.dr": "recreated"}, table_errors(run)
    run.stop()
    print("domains altered: streaming goes on, equal to the source; domain over domain rendered; "
          "a domain column retyped fails as column_type_changed (also after a restart), a "
          "table dropped and created again as recreated; resync recovers")


def test_enum_altered(pg):
    pg.sql("CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy'); CREATE DOMAIN dmood AS mood;"
           "CREATE TABLE en (id int PRIMARY KEY, m mood, ms mood[], v text);"
           "INSERT INTO en SELECT g, (ARRAY['sad', 'ok', 'happy'])[g % 3 + 1]::mood, "
           "ARRAY['ok', 'sad']::mood[], 'v' || g FROM generate_series(1, 12) g;"
           "CREATE TABLE ed (id int PRIMARY KEY, m dmood); INSERT INTO ed VALUES (1, 'happy');"
           "CREATE TABLE eu (id int PRIMARY KEY, m mood); INSERT INTO eu VALUES (1, 'ok');"
           "CREATE TABLE mk (id int PRIMARY KEY);"
           "CREATE PUBLICATION en_pub FOR TABLE en, ed, eu, mk")
    run = Run(pg, "en", "en_pub", extra={
        "catalog_interval": "200ms",
        "text_columns": "public.en.m, public.en.ms, public.ed.m"}).start()
    run.wait_running()
    mark(pg, run, 1)
    assert codes(run) == {"public.eu": "unsupported_type"}, table_errors(run)

    # ADD VALUE: no stored value changes; the new value streams as text.
    pg.sql("ALTER TYPE mood ADD VALUE 'meh' BEFORE 'ok'")
    pg.sql("ALTER TYPE mood ADD VALUE IF NOT EXISTS 'glad'")
    pg.sql("INSERT INTO en VALUES (13, 'meh', ARRAY['glad']::mood[], 'n'); UPDATE en SET m = 'glad' "
           "WHERE id = 1; INSERT INTO ed VALUES (2, 'meh')")
    mark(pg, run, 2)
    settled(pg, run)
    assert codes(run) == {"public.eu": "unsupported_type"}, table_errors(run)
    cols = ["id", "m", "ms", "v"]
    assert_equal(pg, run, "public.en", "SELECT id, m, ms, v FROM en", cols)
    assert_equal(pg, run, "public.ed", "SELECT id, m FROM ed", ["id", "m"])

    # RENAME VALUE: every stored 'sad' now reads 'unhappy', with nothing in the WAL: the tables
    # whose columns use the type fail (the catalog check), none keeps 'sad' silently.
    pg.sql("ALTER TYPE mood RENAME VALUE 'sad' TO 'unhappy'")
    wait_error(run, "public.en")
    wait_error(run, "public.ed")
    mark(pg, run, 3)
    want = {"public.en": "enum_value_renamed", "public.ed": "enum_value_renamed",
            "public.eu": "unsupported_type"}
    assert codes(run) == want, table_errors(run)
    err = table_errors(run)["public.en"]
    assert "walgate source resync en public.en" in err, err
    for t in ("public.en", "public.ed"):
        resync(run, t)
    pg.sql("INSERT INTO en VALUES (14, 'unhappy', NULL, 'after')")
    mark(pg, run, 4)
    assert codes(run) == {"public.eu": "unsupported_type"}, table_errors(run)
    assert_equal(pg, run, "public.en", "SELECT id, m, ms, v FROM en", cols)
    assert_equal(pg, run, "public.ed", "SELECT id, m FROM ed", ["id", "m"])
    # The enum labels survive a restart (the state file keeps them): a rename while down fails.
    run.stop()
    pg.sql("ALTER TYPE mood RENAME VALUE 'meh' TO 'so-so'")
    run.start()
    wait_error(run, "public.en")
    mark(pg, run, 5)
    assert codes(run)["public.en"] == "enum_value_renamed", table_errors(run)
    run.stop()
    print("enums altered: ADD VALUE streams on, equal to the source; RENAME VALUE fails the "
          "tables using the type (enum_value_renamed), also across a restart; resync recovers")


def test_failed_then_renamed(pg):
    pg.sql("CREATE TABLE fr (id int PRIMARY KEY, v text); INSERT INTO fr VALUES (1, 'a');"
           "CREATE TABLE mk (id int PRIMARY KEY); CREATE PUBLICATION fr_pub FOR TABLE fr, mk")
    # The default catalog_interval (10 s): the new name's Relation message is decoded before
    # the next catalog check, which then found the relation failed already (under its old
    # name) and gave the new name no failure of its own.
    run = Run(pg, "fr", "fr_pub").start()
    run.wait_running()
    pg.sql("TRUNCATE fr; INSERT INTO fr VALUES (2, 'b')")
    wait_error(run, "public.fr")
    pg.sql("ALTER TABLE fr RENAME TO fr2; INSERT INTO fr2 VALUES (3, 'c'); UPDATE fr2 SET v = 'x'")
    mark(pg, run, 1)
    settled(pg, run)
    assert codes(run) == {"public.fr": "truncated", "public.fr2": "not_snapshotted"}, \
        table_errors(run)
    resync(run, "public.fr2")
    pg.sql("INSERT INTO fr2 VALUES (4, 'd')")
    mark(pg, run, 2)
    assert_equal(pg, run, "public.fr2", "SELECT id, v FROM fr2", ["id", "v"])
    run.stop()
    print("a failed table renamed: the new name fails too (not_snapshotted); resync recovers")


def test_domain_column_gone(pg):
    """WAL that still has a domain column, decoded after the column was dropped or retyped:
    the domain is resolved by its type OID, so the row is ingested and the table fails only for
    what the workload did (differential seeds 898236430, 829557202)."""
    pg.sql("CREATE DOMAIN dnum AS numeric(20,5); CREATE DOMAIN dgone AS int;"
           "CREATE TABLE gc (id int PRIMARY KEY, d dgone); INSERT INTO gc VALUES (1, 1);"
           "CREATE TABLE gp (id int8 PRIMARY KEY, v text) PARTITION BY RANGE (id);"
           "CREATE TABLE gp_lo PARTITION OF gp FOR VALUES FROM (MINVALUE) TO (500);"
           "CREATE TABLE gp_hi PARTITION OF gp FOR VALUES FROM (500) TO (MAXVALUE);"
           "INSERT INTO gp SELECT g, 'v' || g FROM generate_series(1, 10) g;"
           "CREATE TABLE gr (id int PRIMARY KEY, n dnum, v text);"
           "INSERT INTO gr SELECT g, g / 4.0, 'v' || g FROM generate_series(1, 5) g;"
           "CREATE TABLE gn (id int PRIMARY KEY, n dnum); INSERT INTO gn VALUES (1, 1);"
           "CREATE TABLE mk (id int PRIMARY KEY);"
           "CREATE PUBLICATION g_pub FOR TABLE gp, gr, gn, gc, mk WITH (publish_via_partition_root = true)")
    run = Run(pg, "g", "g_pub").start()
    run.wait_running()
    mark(pg, run, 1)
    run.stop()
    # While walgate is down: a domain column added to the partitioned root, a row with it, the
    # column dropped; a row of a table with a domain column, the column retyped; another such
    # table renamed and its column retyped. On restart the Relation messages carry the domain,
    # which the catalog no longer has under the column's name.
    pg.sql("ALTER TABLE gp ADD COLUMN n dnum")
    pg.sql("INSERT INTO gp VALUES (11, 'v11', 1.5)")
    pg.sql("ALTER TABLE gp DROP COLUMN n")
    pg.sql("INSERT INTO gp VALUES (12, 'v12')")
    pg.sql("INSERT INTO gr VALUES (6, 2.25, 'v6')")
    pg.sql("ALTER TABLE gr ALTER COLUMN n TYPE text")
    pg.sql("INSERT INTO gr VALUES (7, 'x', 'v7')")
    pg.sql("INSERT INTO gn VALUES (2, 2); ALTER TABLE gn RENAME TO gn2;"
           "ALTER TABLE gn2 ALTER COLUMN n TYPE text; INSERT INTO gn2 VALUES (3, 'x')")
    # And a domain dropped with its column (CASCADE): its type cannot be told any more.
    pg.sql("INSERT INTO gc VALUES (2, 2); DROP DOMAIN dgone CASCADE; INSERT INTO gc VALUES (3)")
    run.start()
    mark(pg, run, 2)
    # The leaf gp_lo has no failure of its own (it failed as column_dropped_or_renamed), gp
    # fails for the dropped column at the row without it, gr for the retype at the row of the
    # new type (both failed at the row that still had the domain), gn for the rename.
    want = {"public.gp": "column_dropped_or_renamed", "public.gr": "column_type_changed",
            "public.gn": "renamed", "public.gn2": "renamed", "public.gc": "column_dropped_or_renamed"}
    run.wait(lambda: codes(run) == want, f"error codes {want}")
    assert ("11", "v11", "1.50000") in log_rows(run, "public.gp", ["id", "v", "n"])
    assert ("6", "v6", "2.25000") in log_rows(run, "public.gr", ["id", "v", "n"])
    resync(run, "public.gp")
    pg.sql("INSERT INTO gp VALUES (13, 'v13'), (600, 'v600')")
    mark(pg, run, 3)
    assert_equal(pg, run, "public.gp", "SELECT id, v FROM gp", ["id", "v"])
    assert set(codes(run)) == {"public.gr", "public.gn", "public.gn2", "public.gc"}, \
        table_errors(run)
    run.stop()
    print("a domain column dropped or retyped before its WAL is decoded: the domain resolved by "
          "its type OID, the row ingested; the root fails for the dropped column (not its leaf), "
          "the retyped table as column_type_changed, the renamed one as renamed, one whose domain was "
          "dropped as column_dropped_or_renamed; resync recovers")

def main():
    with fixture.Postgres() as pg:
        test_domain_column_gone(pg)
    with fixture.Postgres() as pg:
        test_failed_then_renamed(pg)
    with fixture.Postgres() as pg:
        test_domain_altered(pg)
    with fixture.Postgres() as pg:
        test_enum_altered(pg)
    print("ok")


if __name__ == "__main__":
    main()
