#!/usr/bin/env python3
"""capture.py — regenerate the pgoutput fixtures in this directory from a real PostgreSQL 15.

    python3 tests/data/pgoutput/capture.py

Starts a throwaway cluster (tests/fixture.py), creates a table with a column of every type
walgate renders (and an array of each), writes rows with ordinary and special values, and
reads the raw pgoutput messages with pg_logical_slot_peek_binary_changes under the session
settings walgate uses. Each *.bin file is a sequence of messages, each a 4-byte big-endian
length followed by that many bytes:

    types_v1.bin   protocol 1: Type, Relation, Insert/Update/Delete (FULL and key), unchanged
                   TOASTed values, Truncate, transactional and non-transactional Message, Origin
    stream_v2.bin  protocol 2 with streaming: Stream Start/Stop/Commit/Abort with xid prefixes

The expected renderings (types_v1.expected.jsonl) are written by hand; test_pgoutput.c checks
the decoder and renderer against them. types_v1.records is the change log test_apply.c expects
from types_v1.bin (decoder, apply step, stubbed catalog); after a capture, regenerate it with
WALGATE_REGENERATE=1 build/tests/test_apply and review the difference. It also refreshes tests/fuzz/corpus/fuzz_pgoutput/.
"""
import os
import struct
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", ".."))
import fixture  # noqa: E402

SESSION = ("SET DateStyle = ISO; SET IntervalStyle = iso_8601; SET extra_float_digits = 3; "
           "SET bytea_output = hex; SET TimeZone = 'UTC'; SET client_encoding = 'UTF8'; ")

TYPES = ["bool", "bytea", '"char"', "int8", "int2", "int2vector", "int4", "text", "oid", "json",
         "float4", "float8", "char(5)", "varchar(20)", "date", "time", "timestamp", "timestamptz",
         "interval", "numeric", "uuid", "jsonb", "int4range", "numrange", "tsrange", "tstzrange",
         "daterange", "int8range"]
NAMES = ["bool", "bytea", "char", "int8", "int2", "int2vector", "int4", "text", "oid", "json",
         "float4", "float8", "bpchar", "varchar", "date", "time", "timestamp", "timestamptz",
         "interval", "numeric", "uuid", "jsonb", "int4range", "numrange", "tsrange", "tstzrange",
         "daterange", "int8range"]

ROW1 = {
    "c_bool": "true", "c_bytea": r"'\xdeadbeef'", "c_char": "'a'",
    "c_int8": "9223372036854775807", "c_int2": "-32768", "c_int2vector": "'1 2 3'",
    "c_int4": "42", "c_text": "'hello, world'", "c_oid": "4294967295",
    "c_json": """'{"a": [1, 2.5, "x"], "b": null}'""", "c_float4": "1.5", "c_float8": "0.1",
    "c_bpchar": "'ab'", "c_varchar": "'varchar'", "c_date": "'2024-02-29'",
    "c_time": "'23:59:59.999999'", "c_timestamp": "'2024-01-02 03:04:05.678901'",
    "c_timestamptz": "'2024-01-02 03:04:05+02'",
    "c_interval": "'1 year 2 months 3 days 04:05:06.5'", "c_numeric": "123.4500",
    "c_uuid": "'A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11'",
    "c_jsonb": """'{"b": 1, "a": [true, false]}'""", "c_int4range": "'[1,10)'",
    "c_numrange": "'(1.5,2.25]'",
    "c_tsrange": """'["2024-01-01 00:00:00","2024-01-02 00:00:00")'""",
    "c_tstzrange": "'[2024-01-01 00:00:00+00,2024-01-02 00:00:00+00)'",
    "c_daterange": "'[2024-01-01,2024-02-01)'", "c_int8range": "'[-5,5]'",
    "a_bool": "'{t,f,NULL}'", "a_bytea": r"""'{"\\x01ff",NULL}'""", "a_char": "'{a,b}'",
    "a_int8": "'{1,-2}'", "a_int2": "'{{1,2},{3,4}}'",
    "a_int2vector": "ARRAY['1 2'::int2vector, '3']", "a_int4": "'[0:2]={1,2,3}'",
    "a_text": r"""E'{"a b","quote\\"d","back\\\\slash",NULL,"NULL",""}'""", "a_oid": "'{1}'",
    "a_json": """ARRAY['{"k": "v"}'::json, '[1, 2]']""",
    "a_float4": "'{NaN,Infinity,-Infinity,1.25}'", "a_float8": "'{1e+300,-0}'",
    "a_bpchar": "'{ab,c}'", "a_varchar": """'{x,"y z"}'""", "a_date": "'{2024-01-01,infinity}'",
    "a_time": "'{00:00:00}'", "a_timestamp": """'{"2024-01-01 00:00:00",-infinity}'""",
    "a_timestamptz": """'{"2024-01-01 00:00:00+00"}'""", "a_interval": """'{"1 day",P1Y}'""",
    "a_numeric": "'{1.5,NaN,-Infinity}'", "a_uuid": "'{a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11}'",
    "a_jsonb": """ARRAY['{"x": 1}'::jsonb]""", "a_int4range": """'{"[1,2)",empty}'""",
    "a_numrange": """'{"(,5.5]"}'""",
    "a_tsrange": r"""E'{"[\\"2024-01-01 00:00:00\\",)"}'""",
    "a_tstzrange": "'{empty}'", "a_daterange": """'{"[2024-01-01,infinity)"}'""",
    "a_int8range": """'{"(,)"}'""",
}

ROW2 = {
    "c_bool": "false", "c_bytea": r"'\x'", "c_char": """'"'""",
    "c_int8": "-9223372036854775808", "c_int2": "0", "c_int2vector": "''", "c_int4": "-1",
    "c_text": r"""E'quote " backslash \\ tab \t nl \n ctrl \x01 unicode \u00e9 \U0001F600'""",
    "c_oid": "0",
    "c_json": r"""E'  {"nested": {"deep": [[[]]]},\n  "s": "esc\\"aped \\u00e9"}\n  '""",
    "c_float4": "'NaN'", "c_float8": "'-Infinity'", "c_bpchar": "''", "c_varchar": "''",
    "c_date": "'infinity'", "c_time": "'00:00'", "c_timestamp": "'-infinity'",
    "c_timestamptz": "'infinity'", "c_interval": "'-1 days -00:00:01'",
    "c_numeric": "('-' || repeat('1', 500) || '.' || repeat('2', 500))::numeric",
    "c_uuid": "'00000000-0000-0000-0000-000000000000'", "c_jsonb": "'[]'",
    "c_int4range": "'empty'", "c_numrange": "'(,)'",
    "c_tsrange": """'(,"2024-01-01 00:00:00")'""",
    "c_tstzrange": """'["2024-01-01 00:00:00+00",infinity)'""",
    "c_daterange": "'[-infinity,infinity]'", "c_int8range": "'(,5]'",
    "a_bool": "'{}'", "a_bytea": "'{}'", "a_char": "'{}'",
    "a_int8": "'[-1:0][1:1]={{1},{2}}'", "a_int2": "'{{1,NULL},{NULL,4}}'",
    "a_int2vector": "'{}'", "a_int4": "'{{{1},{2}},{{3},{4}}}'",
    "a_text": r"""ARRAY[E'tab\there', E'nl\nx', 'é', '{braces}', ' lead', 'a,b', 'null']""",
    "a_oid": "'{}'",
    "a_json": r"""ARRAY[E'{"q": "a\\"b\\\\c"}'::json, 'null']""", "a_float4": "'{}'",
    "a_float8": "'{NaN}'", "a_bpchar": "'{}'", "a_varchar": "'{}'", "a_date": "'{}'",
    "a_time": "'{}'", "a_timestamp": "'{}'", "a_timestamptz": "'{}'", "a_interval": "'{}'",
    "a_numeric": "'{1e-20,NULL}'", "a_uuid": "'{}'", "a_jsonb": "ARRAY[NULL::jsonb]",
    "a_int4range": "'{}'", "a_numrange": "'{}'", "a_tsrange": "'{}'", "a_tstzrange": "'{}'",
    "a_daterange": "'{}'", "a_int8range": "'{}'",
}


def main():
    cols = ["id int primary key"]
    cols += [f"c_{n} {t}" for n, t in zip(NAMES, TYPES)]
    cols += [f"a_{n} {t}[]" for n, t in zip(NAMES, TYPES)]
    # synchronous_commit: the peek functions decode only WAL that is already flushed.
    with fixture.Postgres(conf={"synchronous_commit": "on"}) as pg:
        pg.sql("CREATE TABLE walgate_types (" + ", ".join(cols) + ")")
        pg.sql("ALTER TABLE walgate_types REPLICA IDENTITY FULL")
        pg.sql("CREATE TYPE mood AS ENUM ('happy', 'sad')")
        pg.sql("CREATE TABLE walgate_toast (id int primary key, n int, big text, m mood)")
        pg.sql("ALTER TABLE walgate_toast ALTER COLUMN big SET STORAGE EXTERNAL")
        pg.sql("CREATE TABLE walgate_stream (id int primary key, t text)")
        pg.sql("CREATE PUBLICATION walgate_pub FOR ALL TABLES")
        pg.sql("SELECT pg_create_logical_replication_slot('s1', 'pgoutput')")
        pg.sql("SELECT pg_create_logical_replication_slot('s2', 'pgoutput')")

        for i, row in ((1, ROW1), (2, ROW2)):
            names = ["id"] + list(row)
            pg.sql(SESSION + f"INSERT INTO walgate_types ({', '.join(names)}) VALUES "
                   f"({i}, {', '.join(row.values())})")
        pg.sql("INSERT INTO walgate_types (id) VALUES (3)")
        pg.sql("UPDATE walgate_types SET c_int4 = 43 WHERE id = 1")
        pg.sql("DELETE FROM walgate_types WHERE id = 3")
        pg.sql("INSERT INTO walgate_toast VALUES (1, 1, (SELECT string_agg(md5(i::text), '') "
               "FROM generate_series(1, 100) i), 'happy')")
        pg.sql("UPDATE walgate_toast SET n = 2 WHERE id = 1")
        pg.sql("UPDATE walgate_toast SET id = 10 WHERE id = 1")
        pg.sql("DELETE FROM walgate_toast WHERE id = 10")
        pg.sql("TRUNCATE walgate_toast, walgate_stream RESTART IDENTITY CASCADE")
        pg.sql("BEGIN; SELECT pg_logical_emit_message(true, 'walgate', 'hello'); "
               "INSERT INTO walgate_toast VALUES (2, 2, 'x', 'sad'); COMMIT")
        pg.sql(r"SELECT pg_logical_emit_message(false, 'walgate', '\x00ff'::bytea)")
        pg.sql("SELECT pg_replication_origin_create('walgate_origin')")
        pg.sql("SELECT pg_replication_origin_session_setup('walgate_origin'); BEGIN; "
               "SELECT pg_replication_origin_xact_setup('0/ABCDEF', now()); "
               "INSERT INTO walgate_toast VALUES (3, 3, 'y', NULL); COMMIT")
        v1 = pg.sql(SESSION + "SELECT encode(data, 'hex') FROM pg_logical_slot_peek_binary_changes("
                    "'s1', NULL, NULL, 'proto_version', '1', 'publication_names', 'walgate_pub', "
                    "'messages', 'true')")
        write(os.path.join(HERE, "types_v1.bin"), v1)

        # Streaming: a transaction larger than logical_decoding_work_mem, a rolled-back
        # subtransaction and a rolled-back transaction, both after they were streamed.
        pg.sql("BEGIN; INSERT INTO walgate_stream SELECT i, repeat('s', 40) FROM "
               "generate_series(1, 400) i; SAVEPOINT sp; INSERT INTO walgate_stream SELECT i, 'r' "
               "FROM generate_series(2001, 2700) i; ROLLBACK TO SAVEPOINT sp; "
               "UPDATE walgate_stream SET id = 0 WHERE id = 1; "
               "DELETE FROM walgate_stream WHERE id = 2; COMMIT")
        pg.sql("BEGIN; INSERT INTO walgate_stream SELECT i, 'a' FROM generate_series(5001, 5700) i; "
               "ROLLBACK")
        # An abort record is not flushed by itself: a commit after it makes it decodable.
        pg.sql("INSERT INTO walgate_stream VALUES (9999, 'end')")
        v2 = pg.sql(SESSION + "SET logical_decoding_work_mem = '64kB'; "
                    "SELECT encode(data, 'hex') FROM pg_logical_slot_peek_binary_changes("
                    "'s2', NULL, NULL, 'proto_version', '2', 'publication_names', 'walgate_pub', "
                    "'messages', 'true', 'streaming', 'on')")
        write(os.path.join(HERE, "stream_v2.bin"), v2)
    write_seeds()


def write(path, hexlines):
    msgs = [bytes.fromhex(h) for h in hexlines.split("\n") if h]
    with open(path, "wb") as f:
        for m in msgs:
            f.write(struct.pack(">I", len(m)) + m)
    print(f"{path}: {len(msgs)} messages, types {''.join(chr(m[0]) for m in msgs)[:200]}")


# The type table of tests/fuzz/fuzz_render.c, in its order (index = the seed's first byte).
FUZZ_RENDER_OIDS = [
    16, 17, 18, 20, 21, 22, 23, 25, 26, 114, 700, 701, 1042, 1043, 1082, 1083, 1114, 1184, 1186,
    1700, 2950, 3802, 3904, 3906, 3908, 3910, 3912, 3926, 1000, 1001, 1002, 1016, 1005, 1006,
    1007, 1009, 1028, 199, 1021, 1022, 1014, 1015, 1182, 1183, 1115, 1185, 1187, 1231, 2951, 3807,
    3905, 3907, 3909, 3911, 3913, 3927]


def read_msgs(path):
    with open(path, "rb") as f:
        d = f.read()
    msgs, i = [], 0
    while i < len(d):
        n = struct.unpack(">I", d[i:i + 4])[0]
        msgs.append(d[i + 4:i + 4 + n])
        i += 4 + n
    return msgs


def cstr(m, i):
    j = m.index(b"\0", i)
    return m[i:j], j + 1


def write_seeds():
    """Seeds for fuzz_pgoutput (chunks of the captured streams, each after the Relation and
    Type messages seen so far) and fuzz_render (every captured text value, by column type)."""
    root = os.path.join(HERE, "..", "..", "fuzz", "corpus")
    pdir, rdir = os.path.join(root, "fuzz_pgoutput"), os.path.join(root, "fuzz_render")
    os.makedirs(pdir, exist_ok=True)
    os.makedirs(rdir, exist_ok=True)
    for name, proto, step in (("types_v1", 1, 8), ("stream_v2", 2, 8)):
        msgs = read_msgs(os.path.join(HERE, name + ".bin"))
        schema, seen = [], 0
        for k in range(0, len(msgs), step):
            for m in msgs[seen:k]:
                if m[:1] in (b"R", b"Y") and m not in schema:
                    schema.append(m)
            seen = k
            chunk = msgs[k:k + step]
            if all(m[:1] == b"I" for m in chunk) and k > 200:
                continue  # the long runs of streamed inserts add nothing
            body = b"".join(struct.pack(">H", len(m)) + m for m in schema[-6:] + chunk)
            with open(os.path.join(pdir, f"{name}_{k:04d}"), "wb") as f:
                f.write(bytes([proto - 1]) + body)
    # Values: parse Relation and Insert messages of the protocol 1 capture.
    rels, values = {}, set()
    for m in read_msgs(os.path.join(HERE, "types_v1.bin")):
        if m[:1] == b"R":
            oid = struct.unpack(">I", m[1:5])[0]
            _, i = cstr(m, 5)
            _, i = cstr(m, i)
            ncols = struct.unpack(">H", m[i + 1:i + 3])[0]
            i += 3
            types = []
            for _ in range(ncols):
                _, i = cstr(m, i + 1)
                types.append(struct.unpack(">I", m[i:i + 4])[0])
                i += 8
            rels[oid] = types
        elif m[:1] == b"I":
            types = rels[struct.unpack(">I", m[1:5])[0]]
            i = 8
            for t in types:
                kind = m[i:i + 1]
                i += 1
                if kind in (b"t", b"b"):
                    n = struct.unpack(">I", m[i:i + 4])[0]
                    v = m[i + 4:i + 4 + n]
                    i += 4 + n
                    idx = FUZZ_RENDER_OIDS.index(t) if t in FUZZ_RENDER_OIDS else len(FUZZ_RENDER_OIDS)
                    if len(v) < 4096:
                        values.add(bytes([idx]) + v)
    for n, v in enumerate(sorted(values)):
        with open(os.path.join(rdir, f"captured_{n:03d}"), "wb") as f:
            f.write(v)
    print(f"{len(values)} render seeds, {len(os.listdir(pdir))} pgoutput seeds")


if __name__ == "__main__":
    main()
