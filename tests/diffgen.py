"""diffgen.py — the randomized differential test of the whole ingest path (issue 12).

From a seed it generates a random but valid workload, runs it against a real PostgreSQL while
`walgate run` ingests it, and checks walgate's change log against the server:

    wl = diffgen.generate(seed, opts)          # schema + transactions + faults, deterministic
    res = diffgen.Runner(pg, opts).run(wl)     # run it; res.ok, res.problems, res.stats
    small = diffgen.shrink(pg, opts, wl, budget_s)   # drop transactions while it still fails

The workload: tables of every supported type (docs/types.md) and arrays of them, single and
composite primary keys, REPLICA IDENTITY FULL / DEFAULT / USING INDEX, tables without a key
(FULL), TOAST-sized values stored out of line, NULLs, extreme numerics and dates, odd UTF-8 and
control characters; transactions with inserts, updates (some change the key), deletes, several
tables, savepoints rolled back or released, rollbacks, large transactions that the server
streams in progress (logical_decoding_work_mem = 64kB), truncates, and DDL (add, drop, rename,
retype a column; with `known` flags also rename table, drop + recreate, a partitioned table
published through its root), interleaved on several connections (lock_timeout makes a
statement that would wait on another connection fail instead, so the driver never deadlocks).
Faults (optional): kill -9 of walgate and restart, `pg_ctl restart -m immediate`.

The oracle: a marker row committed after the workload is waited for in the log (the log is in
commit order, so everything committed before it is there: a condition, never a sleep). Then
the log (read as bytes, split on b"\\n" only) is replayed with tests/logreplay.py (snapshot rows,
then changes by key; snapshot_start/abort honored; begin..commit whole, no commit twice), each
replayed table is loaded into a scratch table of the same column types (PostgreSQL itself
parses walgate's rendering back) and the scratch table's `COPY … TO STDOUT WITH CSV` must equal
the source table's byte for byte, for every table walgate did not put in an error state. Each
table in an error state must have been made incompatible by the workload, for the reason
walgate gives: its status `error_code` must be one that the transactions that may have
committed can cause (error_reasons); the tables in an error state are listed with their
reasons. The oracle waits for status's `catalog_checked_lsn` to pass the marker first: a table
dropped and created again (or renamed) with no change after is only failed by that check.

Only the standard library is used.
"""
import base64
import json
import os
import random
import signal
import subprocess
import time

import fixture
import logreplay

# ---- types ------------------------------------------------------------------------------------

ODD = ["é", "😀", "\u2028", "\u2029", "\u0085", "\ufeff", "\U0010ffff", "\u00a0", "ß", "中",
       '"', "'", "\\", ",", "{", "}", "(", ")", "[", "]", " ", "NULL", "null", "\x01", "\t",
       "\n", "\r", "\x1f", "\x7f", "\x0b", "\x0c", "\x08"]


def sql_text(s):
    """A SQL expression for the string s: control characters through chr(), so that psql never
    sees a raw CR or a line starting with a backslash."""
    parts, run = [], ""
    for ch in s:
        if ord(ch) < 32 or ord(ch) == 127:
            if run:
                parts.append("'" + run.replace("'", "''") + "'")
                run = ""
            parts.append(f"chr({ord(ch)})")
        else:
            run += ch
    if run or not parts:
        parts.append("'" + run.replace("'", "''") + "'")
    return "(" + " || ".join(parts) + ")"


def rand_text(rng, maxlen=12):
    n = rng.randint(0, maxlen)
    out = []
    for _ in range(n):
        if rng.random() < 0.3:
            out.append(rng.choice(ODD))
        else:
            out.append(rng.choice("abcdefghijklmnopqrstuvwxyzABC0123456789 _-"))
    return "".join(out)


def repr_sql(s):
    return "'" + s.replace("'", "''") + "'"


def _pick(rng, *choices):
    return rng.choice(choices)


def v_scalar(rng, t):
    """A SQL expression of base type t (never NULL)."""
    r = rng.random
    if t == "bool":
        return _pick(rng, "true", "false")
    if t == "int2":
        return f"({_pick(rng, -32768, 32767, 0, rng.randint(-999, 999))})::int2"
    if t == "int4":
        return f"({_pick(rng, -2147483648, 2147483647, 0, rng.randint(-10**6, 10**6))})::int4"
    if t == "int8":
        return f"({_pick(rng, -9223372036854775808, 9223372036854775807, rng.randint(-10**12, 10**12))})::int8"
    if t == "oid":
        return f"'{_pick(rng, 0, 4294967295, rng.randint(1, 10**6))}'::oid"
    if t == "float4":
        return "'" + _pick(rng, "NaN", "Infinity", "-Infinity", "-0", "1e-45", "3.4028235e+38",
                           "0.1", str(rng.uniform(-1e6, 1e6))) + "'::float4"
    if t == "float8":
        return "'" + _pick(rng, "NaN", "Infinity", "-Infinity", "-0", "5e-324",
                           "1.7976931348623157e+308", "0.1", repr(rng.uniform(-1e300, 1e300)),
                           repr(rng.random())) + "'::float8"
    if t == "numeric":
        return "'" + _pick(rng, "NaN", "Infinity", "-Infinity", "9" * 1000,
                           "-0." + "0" * 300 + "1", "123.4500", "0", "-0.000001",
                           f"{rng.randint(-10**20, 10**20)}.{rng.randint(0, 10**6)}") + "'::numeric"
    if t == "dnum":
        return f"'{rng.randint(-10**9, 10**9)}.{rng.randint(0, 99999):05d}'::dnum"
    if t == "text":
        if r() < 0.05:
            return "''::text"
        return f"{sql_text(rand_text(rng))}::text"
    if t == "varchar":
        return f"CAST({sql_text(rand_text(rng, 8))} AS varchar(10))"
    if t == "bpchar":
        return f"CAST({sql_text(rand_text(rng, 4))} AS char(5))"
    if t == "char":
        return _pick(rng, "'a'::\"char\"", "'é'::\"char\"", "'Z'::\"char\"", "chr(1)::\"char\"",
                     "''::\"char\"", "'\\'::\"char\"")
    if t == "bytea":
        n = rng.randint(0, 12)
        return "'\\x" + bytes(rng.randrange(256) for _ in range(n)).hex() + "'::bytea"
    if t in ("json", "jsonb"):
        docs = ["null", '"str"', '{"a": [1, 2.5e3, null, true]}', "[]", "{}", '  [1,  2 ]  ',
                '{"dup": 1, "dup": 2}', '"\\u00e9\\n\\"q\\""', "-0.5E+10", "false",
                '{"k": {"n": [[[]]], "s": "😀\u2028"}}', '"null"']
        if t == "json":
            docs.append('"\\u0000"')
        return f"{sql_text(rng.choice(docs))}::{t}"
    if t == "date":
        return "'" + _pick(rng, "2024-02-29", "infinity", "-infinity", "4713-01-01 BC",
                           "5874897-12-31", "0001-01-01", "0044-03-15 BC",
                           f"{rng.randint(1900, 2100)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}") + "'::date"
    if t == "time":
        return "'" + _pick(rng, "00:00:00", "23:59:59.999999", "24:00:00",
                           f"{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}:{rng.randint(0, 59):02d}.{rng.randint(0, 999999)}") + "'::time"
    if t == "timestamp":
        return "'" + _pick(rng, "infinity", "-infinity", "4713-01-01 00:00:00 BC",
                           "294276-12-31 23:59:59.999999", "2024-01-02 03:04:05.678901",
                           "0044-03-15 12:00:00 BC", "1999-12-31 23:59:59") + "'::timestamp"
    if t == "timestamptz":
        return "'" + _pick(rng, "infinity", "-infinity", "2024-01-02 03:04:05+05:30",
                           "4713-01-01 00:00:00+00 BC", "2000-01-01 00:00:00.000001+00",
                           "1970-01-01 00:00:00-12") + "'::timestamptz"
    if t == "interval":
        return "'" + _pick(rng, "1 year 2 mons 3 days 04:05:06.5", "0", "-1 days +02:03",
                           "1 mon -1 day", "00:00:00.000001", "-178000000 years",
                           "178000000 years", "-00:00:01.5", "P1Y2M") + "'::interval"
    if t == "uuid":
        return "'" + "%032x" % rng.getrandbits(128) + "'::uuid"
    if t == "int2vector":
        return "'" + _pick(rng, "1 2 3", "", "-32768 32767", "7") + "'::int2vector"
    if t == "int4range":
        return "'" + _pick(rng, "[1,10)", "empty", "(,)", "(,5]", "[-2147483648,2147483647)",
                           f"[{rng.randint(-100, 0)},{rng.randint(1, 100)}]") + "'::int4range"
    if t == "int8range":
        return "'" + _pick(rng, "[1,10)", "empty", "[-9223372036854775808,)", "(0,)") + "'::int8range"
    if t == "numrange":
        return "'" + _pick(rng, "(1.5,2.25]", "empty", "(,)", "[-Infinity,Infinity]",
                           "[0.000001,1e20)") + "'::numrange"
    if t == "daterange":
        return "'" + _pick(rng, "[2024-01-01,infinity)", "empty", "[4713-01-01 BC,2024-01-01)",
                           "(,2000-01-01)") + "'::daterange"
    if t == "tsrange":
        return "'" + _pick(rng, '["2024-01-01 00:00","2024-01-02 00:00")', "empty",
                           '[-infinity,infinity]', '("2000-01-01 00:00:00.5",)') + "'::tsrange"
    if t == "tstzrange":
        return "'" + _pick(rng, '["2024-01-01 00:00+00","2024-01-02 00:00+02")', "empty",
                           "(,)", '[-infinity,"1999-12-31 23:00-05")') + "'::tstzrange"
    raise ValueError(t)


SCALARS = ["bool", "int2", "int4", "int8", "oid", "float4", "float8", "numeric", "dnum", "text",
           "varchar", "bpchar", "char", "bytea", "json", "jsonb", "date", "time", "timestamp",
           "timestamptz", "interval", "uuid", "int2vector", "int4range", "int8range",
           "numrange", "daterange", "tsrange", "tstzrange"]
NO_ARRAY = {"int2vector", "dnum"}
DDL_TYPE = {"varchar": "varchar(10)", "bpchar": "char(5)", "char": '"char"'}


def col_type(t):
    """The column type in DDL for a generator type name (arrays end in [])."""
    if t.endswith("[]"):
        return DDL_TYPE.get(t[:-2], t[:-2]) + "[]"
    return DDL_TYPE.get(t, t)


def value(rng, t, null_p=0.15):
    if rng.random() < null_p:
        return f"NULL::{col_type(t)}"
    if not t.endswith("[]"):
        return v_scalar(rng, t)
    e = t[:-2]
    ct = col_type(t)
    shape = rng.random()
    if shape < 0.1:
        return f"'{{}}'::{ct}"
    if shape < 0.3:  # two dimensions
        inner = rng.randint(1, 3)  # every row of a 2-D array has the same length
        rows = ["ARRAY[" + ", ".join(value(rng, e, 0.2) for _ in range(inner)) + "]"
                for _ in range(rng.randint(1, 3))]
        return f"ARRAY[{', '.join(rows)}]::{ct}"
    return f"ARRAY[{', '.join(value(rng, e, 0.2) for _ in range(rng.randint(1, 4)))}]::{ct}"


# ---- workload ---------------------------------------------------------------------------------

class Opts:
    """What a workload may contain. `known`: flags that turn on the known divergences of issue
    12 (partitions, rename_table, drop_recreate) and the ones this test found
    (replident_index). DEFAULT_KNOWN: those fixed since, on by default (all four now)."""

    # the flags whose divergence is fixed: on unless WALGATE_DIFF_KNOWN says otherwise
    DEFAULT_KNOWN = ("replident_index", "partitions", "rename_table", "drop_recreate")

    def __init__(self, ddl=True, faults=False, known=DEFAULT_KNOWN, txns=60, tables=6, conns=3,
                 big=True):
        self.ddl = ddl
        self.faults = faults
        self.known = set(known)
        self.txns = txns
        self.tables = tables
        self.conns = conns
        self.big = big

    @classmethod
    def from_env(cls, **kw):
        o = cls(**kw)
        if os.environ.get("WALGATE_DIFF_DDL") is not None:
            o.ddl = os.environ["WALGATE_DIFF_DDL"] not in ("0", "off", "no")
        if os.environ.get("WALGATE_DIFF_FAULTS") is not None and "faults" not in kw:
            o.faults = os.environ["WALGATE_DIFF_FAULTS"] not in ("0", "off", "no")
        if os.environ.get("WALGATE_DIFF_KNOWN") is not None and "known" not in kw:
            o.known = {k.strip() for k in os.environ["WALGATE_DIFF_KNOWN"].split(",") if k.strip()}
        if os.environ.get("WALGATE_DIFF_TXNS"):
            o.txns = int(os.environ["WALGATE_DIFF_TXNS"])
        return o

    def describe(self):
        return (f"ddl={int(self.ddl)} faults={int(self.faults)} known={','.join(sorted(self.known)) or '-'} "
                f"txns={self.txns} tables={self.tables} conns={self.conns}")


class Table:
    def __init__(self, name, keys, cols, identity, external):
        self.name = name          # current name (without schema)
        self.keys = keys          # [(col, type)] primary key, [] for none
        self.cols = cols          # [(col, gen type)] other columns
        self.identity = identity  # full | default | index
        self.external = external  # text column stored out of line (TOAST-sized values)
        self.partitioned = False
        self.next_id = 1000
        self.next_u = 1

    def all_cols(self):
        return self.keys + self.cols


def gen_table(rng, i, opts):
    name = f"t{i}"
    style = rng.choice(["single", "single", "composite", "nokey"])
    keys = {"single": [("id", "int8")], "composite": [("k1", "int4"), ("k2", "text")],
            "nokey": []}[style]
    types = SCALARS + [t + "[]" for t in SCALARS if t not in NO_ARRAY]
    cols = [(f"c{j}_{t.replace('[]', '_a')}", t) for j, t in
            enumerate(rng.sample(types, rng.randint(3, 7)))]
    idents = ["full", "full", "default"] + (["index"] if "replident_index" in opts.known else [])
    identity = "full" if not keys else rng.choice(idents)
    if identity == "index":
        cols.append(("u", "int8"))
    external = rng.random() < 0.5
    if external:
        cols.append(("big", "text"))
    return Table(name, keys, cols, identity, external)


def create_sql(t, pub_table=None):
    defs = [f"{c} {col_type(ty)}" + (" NOT NULL" if c == "u" else "")
            for c, ty in t.all_cols()]
    if t.keys:
        defs.append(f"PRIMARY KEY ({', '.join(c for c, _ in t.keys)})")
    s = f"CREATE TABLE {t.name} ({', '.join(defs)})"
    if t.partitioned:
        s += f" PARTITION BY RANGE (id); CREATE TABLE {t.name}_lo PARTITION OF {t.name} FOR " \
             f"VALUES FROM (MINVALUE) TO (500); CREATE TABLE {t.name}_hi PARTITION OF {t.name} " \
             f"FOR VALUES FROM (500) TO (MAXVALUE)"
    s += ";"
    if t.identity == "full":
        s += f" ALTER TABLE {t.name} REPLICA IDENTITY FULL;"
    elif t.identity == "index":
        s += (f" CREATE UNIQUE INDEX {t.name}_u ON {t.name} (u);"
              f" ALTER TABLE {t.name} REPLICA IDENTITY USING INDEX {t.name}_u;")
    if t.external:
        s += f" ALTER TABLE {t.name} ALTER COLUMN big SET STORAGE EXTERNAL;"
    return s


def row_values(rng, t, key_expr=None):
    """(columns, [SQL expressions]) for one new row."""
    cols, vals = [], []
    for c, ty in t.keys:
        cols.append(c)
        if key_expr is not None:
            vals.append(key_expr[c])
        elif ty == "int8":
            vals.append(str(rng.randint(1, 40)))
        elif ty == "int4":
            vals.append(str(rng.randint(1, 8)))
        else:
            vals.append(repr_sql(rng.choice(["a", "b", "é", "x y"])))
    for c, ty in t.cols:
        cols.append(c)
        if c == "u":
            t.next_u += 1
            vals.append(f"{t.next_u * 1000 + rng.randint(0, 999)}")
        elif c == "big":
            vals.append(_pick(rng, "NULL", f"repeat(md5('{rng.random()}'), {rng.randint(80, 400)})",
                              "'small'"))
        else:
            vals.append(value(rng, ty))
    return cols, vals


def key_where(rng, t):
    if not t.keys:
        return f"ctid = (SELECT ctid FROM {t.name} ORDER BY ctid LIMIT 1 OFFSET {rng.randint(0, 10)})"
    conds = []
    for c, ty in t.keys:
        if ty == "int8":
            conds.append(f"{c} = {rng.randint(1, 40)}")
        elif ty == "int4":
            conds.append(f"{c} = {rng.randint(1, 8)}")
        else:
            conds.append(f"{c} = {repr_sql(rng.choice(['a', 'b', 'é', 'x y']))}")
    return " AND ".join(conds)


def op_insert(rng, t):
    cols, vals = row_values(rng, t)
    return (f"INSERT INTO {t.name} ({', '.join(cols)}) VALUES ({', '.join(vals)}) "
            f"ON CONFLICT DO NOTHING")


def op_update(rng, t):
    sets = []
    for c, ty in rng.sample(t.cols, min(len(t.cols), rng.randint(1, 3))):
        if c == "u":
            t.next_u += 1
            sets.append(f"u = {t.next_u * 1000 + 500}")
        elif c == "big":
            sets.append(f"big = {_pick(rng, 'NULL', 'big', 'md5(big)')}")
        else:
            sets.append(f"{c} = {value(rng, ty)}")
    where = key_where(rng, t)
    if t.keys and rng.random() < 0.25:  # change the key, where the new one is free
        c, ty = t.keys[0]
        nv = str(rng.randint(1, 40) if ty == "int8" else rng.randint(1, 8))
        sets.append(f"{c} = {nv}")
        others = " AND ".join(f"x.{k} = {t.name}.{k}" for k, _ in t.keys[1:])
        where += (f" AND NOT EXISTS (SELECT 1 FROM {t.name} x WHERE x.{c} = {nv}"
                  + (f" AND {others}" if others else "") + ")")
    if not sets:
        return None
    return f"UPDATE {t.name} SET {', '.join(sets)} WHERE {where}"


def op_delete(rng, t):
    return f"DELETE FROM {t.name} WHERE {key_where(rng, t)}"


def op_big(rng, t):
    """Enough rows to pass logical_decoding_work_mem (64kB): streamed in progress."""
    n = rng.randint(300, 1500)
    base = t.next_id
    t.next_id += n + 1
    cols, exprs = [], []
    for c, ty in t.keys:
        cols.append(c)
        exprs.append({"int8": "g", "int4": "g::int4"}.get(ty, "'b' || g"))
    for c, ty in t.cols:
        cols.append(c)
        if c == "u":
            exprs.append(f"{t.next_u * 1000 + 10**12} + g")
            t.next_u += 1
        elif c == "big":
            exprs.append("repeat(md5(g::text), 4)")
        else:
            exprs.append(value(rng, ty, 0.1))
    return (f"INSERT INTO {t.name} ({', '.join(cols)}) SELECT {', '.join(exprs)} FROM "
            f"generate_series({base}, {base + n - 1}) g ON CONFLICT DO NOTHING")


def op_big_update(rng, t):
    c, ty = rng.choice(t.cols)
    v = "md5(coalesce(big, ''))" if c == "big" else ("u + 7" if c == "u" else value(rng, ty))
    return f"UPDATE {t.name} SET {c} = {v} WHERE ctid IN (SELECT ctid FROM {t.name} LIMIT {rng.randint(200, 1200)})"


def gen_ddl(rng, t, tables, opts):
    """One DDL statement list for table t (mutates the model), or None."""
    kinds = ["add", "add", "drop", "rename_col", "retype"]
    if "rename_table" in opts.known:
        kinds.append("rename_table")
    if "drop_recreate" in opts.known:
        kinds.append("drop_recreate")
    k = rng.choice(kinds)
    plain = [(c, ty) for c, ty in t.cols if c not in ("u", "big")]
    if k == "add":
        ty = rng.choice(SCALARS)
        c = f"n{rng.randint(0, 10**6)}_{ty}"
        t.cols.append((c, ty))
        return [f"ALTER TABLE {t.name} ADD COLUMN {c} {col_type(ty)}"]
    if k == "drop" and plain:
        c, ty = rng.choice(plain)
        t.cols.remove((c, ty))
        return [f"ALTER TABLE {t.name} DROP COLUMN {c}"]
    if k == "rename_col" and plain:
        c, ty = rng.choice(plain)
        i = t.cols.index((c, ty))
        n = f"r{rng.randint(0, 10**6)}"
        t.cols[i] = (n, ty)
        return [f"ALTER TABLE {t.name} RENAME COLUMN {c} TO {n}"]
    if k == "retype" and plain:
        c, ty = rng.choice(plain)
        i = t.cols.index((c, ty))
        t.cols[i] = (c, "text")
        return [f"ALTER TABLE {t.name} ALTER COLUMN {c} TYPE text USING {c}::text"]
    if k == "rename_table":
        old = t.name
        t.name = f"{old}_r{rng.randint(0, 999)}"
        return [f"ALTER TABLE {old} RENAME TO {t.name}"]
    if k == "drop_recreate" and not t.partitioned:
        return [f"DROP TABLE {t.name}", create_sql(t), f"ALTER PUBLICATION diffpub ADD TABLE {t.name}"]
    return None


def generate(seed, opts):
    """The workload of a seed: {"seed", "setup": [sql], "initial": [sql], "txns": [...],
    "faults": [(txn index, kind)], "tables": [name]}. Each txn: {"conn", "stmts", "end"}."""
    rng = random.Random(seed)
    tables = [gen_table(rng, i, opts) for i in range(opts.tables)]
    if "partitions" in opts.known:
        p = Table("tp", [("id", "int8")], [("c0_text", "text"), ("c1_numeric", "numeric")],
                  "full", False)
        p.partitioned = True
        tables.append(p)
    setup = ["CREATE DOMAIN dnum AS numeric(20,5)"]
    setup += [create_sql(t) for t in tables]
    setup.append("CREATE TABLE _diff_marker (id int PRIMARY KEY)")
    names = ", ".join([t.name for t in tables] + ["_diff_marker"])
    via = " WITH (publish_via_partition_root = true)" if "partitions" in opts.known else ""
    setup.append(f"CREATE PUBLICATION diffpub FOR TABLE {names}{via}")
    initial = []
    for t in tables:
        for _ in range(rng.randint(0, 25)):
            initial.append(op_insert(rng, t))
        if t.external and rng.random() < 0.7:
            initial.append(f"UPDATE {t.name} SET big = repeat(md5(ctid::text), 200) WHERE big IS NULL")
    txns = []
    for _ in range(opts.txns):
        stmts = []
        x = rng.random()
        if opts.big and x < 0.06:
            t = rng.choice(tables)
            # (a table whose every non-key column was dropped has nothing to update; the draw
            # stays first, so every other seed's workload is unchanged)
            stmts.append(op_big(rng, t) if rng.random() < 0.7 or not t.cols
                         else op_big_update(rng, t))
        elif opts.ddl and x < 0.12:
            t = rng.choice(tables)
            d = gen_ddl(rng, t, tables, opts)
            if d:
                stmts += d
        elif x < 0.14:
            t = rng.choice(tables)
            stmts.append(f"TRUNCATE {t.name}")
        else:
            for _ in range(rng.randint(1, 6)):
                t = rng.choice(tables)
                y = rng.random()
                if y < 0.08:
                    sp = f"s{rng.randint(0, 99)}"
                    inner = [op_insert(rng, t), op_update(rng, t) or op_delete(rng, t)]
                    end = rng.choice(["ROLLBACK TO SAVEPOINT", "RELEASE SAVEPOINT"])
                    stmts += [f"SAVEPOINT {sp}"] + inner + [f"{end} {sp}"]
                elif y < 0.45:
                    stmts.append(op_insert(rng, t))
                elif y < 0.8:
                    u = op_update(rng, t)
                    if u:
                        stmts.append(u)
                else:
                    stmts.append(op_delete(rng, t))
        if not stmts:
            continue
        end = "ROLLBACK" if rng.random() < 0.1 else "COMMIT"
        txns.append({"conn": rng.randrange(opts.conns), "stmts": stmts, "end": end})
    faults = []
    if opts.faults and txns:
        for _ in range(rng.randint(1, 3)):
            faults.append((rng.randrange(len(txns)), rng.choice(["kill", "kill", "pg_restart"])))
    return {"seed": seed, "opts": opts.describe(), "setup": setup, "initial": initial,
            "txns": txns, "faults": sorted(faults), "schedule_seed": rng.getrandbits(32)}


# ---- running ----------------------------------------------------------------------------------

class Conn:
    """A psql session fed statements through a pipe. A statement that fails (or would wait for
    a lock: lock_timeout) aborts its transaction, like a real client's; `:ERROR` says so."""

    def __init__(self, pg, db, errlog):
        self.pg, self.db, self.errlog = pg, db, errlog
        self.n = 0
        self.p = None
        self.open()

    def open(self):
        self.p = subprocess.Popen(
            ["psql", "-X", "-q", "-v", "ON_ERROR_STOP=0", "-h", self.pg.host, "-p", str(self.pg.port),
             "-U", "postgres", "-d", self.db], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=self.errlog)
        self.in_txn = False
        return self.run("SET lock_timeout = '100ms'; SET client_min_messages = warning")

    def run(self, sql):
        """True: ok; False: the statement failed; None: the session is gone."""
        self.n += 1
        mark = f"__done_{self.n}".encode()
        try:
            self.p.stdin.write(sql.encode() + b";\n\\echo " + mark + b" :ERROR\n")
            self.p.stdin.flush()
        except (BrokenPipeError, OSError):
            return None
        for line in self.p.stdout:
            if line.startswith(mark + b" "):
                return line.strip().endswith(b"false")
        return None

    def close(self):
        try:
            self.p.stdin.close()
        except OSError:
            pass
        try:
            self.p.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.p.kill()
            self.p.wait()


class Result:
    def __init__(self, seed):
        self.seed = seed
        self.problems = []      # mismatches: strings
        self.errors = {}        # table -> walgate's error (error state)
        self.notes = []         # things worth knowing that are not mismatches
        self.stats = {"txns": 0, "stmts": 0, "failed_stmts": 0, "log_records": 0,
                      "tables_compared": 0, "rows_compared": 0, "faults": 0}

    @property
    def ok(self):
        return not self.problems


class Runner:
    """Runs workloads against one PostgreSQL server, each in a fresh database with its own
    walgate state directory and slot."""

    counter = 0

    def __init__(self, pg, opts, verbose=True):
        self.pg = pg
        self.opts = opts
        self.verbose = verbose

    def say(self, msg):
        if self.verbose:
            print(msg, flush=True)

    def run(self, wl, timeout=240):
        Runner.counter += 1
        n = Runner.counter
        db = f"diff{n}"
        src = f"d{n}"
        pg = self.pg
        res = Result(wl["seed"])
        state = fixture.tempdir("walgate-diff-")
        pg.sql(f"CREATE DATABASE {db}")
        cfg = fixture.write_file(os.path.join(state, "w.ini"), fixture.ini([
            ("walgate", {"state_dir": state}),
            ("postgres main", {"host": pg.host, "port": pg.port, "user": "postgres",
                               "dbname": db, "sslmode": "disable"}),
            (f"source {src}", {"connection": "main", "publication": "diffpub",
                               "status_interval": "200ms", "max_txn_memory": "1MiB",
                               "catalog_interval": "200ms"})]))
        errlog = open(os.path.join(state, "psql.err"), "ab")
        wlog = os.path.join(state, "walgate.log")
        proc = None
        conns = []

        def start():
            return fixture.walgate_popen("run", config=cfg, stdout=subprocess.DEVNULL,
                                         stderr=open(wlog, "ab"))

        def walgate_log():
            with open(wlog, "rb") as f:
                return f.read()[-3000:].decode("utf-8", "replace")

        try:
            setup = Conn(pg, db, errlog)
            for s in wl["setup"]:
                if setup.run(s) is not True:
                    raise RuntimeError(f"setup failed: {s}")
            for s in wl["initial"]:
                setup.run(s)
            setup.close()
            proc = start()
            conns = [Conn(pg, db, errlog) for _ in range(self.opts.conns)]
            proc = self._drive(wl, conns, proc, start, res)
            for c in conns:
                c.close()
            conns = []
            # Touch one row of every table (an update to the same value), so that walgate
            # sees each table's current shape in a Relation message: a column dropped, renamed
            # or retyped by the workload's last DDL is then noticed, as it would be by the next
            # change of a live application, instead of being invisible to it.
            touch = pg.sql("SELECT format('UPDATE %I SET %I = %I WHERE ctid = (SELECT ctid FROM "
                           "%I LIMIT 1)', c.relname, a.attname, a.attname, c.relname) FROM "
                           "pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace JOIN "
                           "pg_attribute a ON a.attrelid = c.oid AND a.attnum = (SELECT min(attnum) "
                           "FROM pg_attribute WHERE attrelid = c.oid AND attnum > 0 AND NOT "
                           "attisdropped) WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p') "
                           "AND NOT c.relispartition AND c.relname <> '_diff_marker'", db=db)
            if touch:
                pg.sql("; ".join(touch.split("\n")), db=db)
            # The marker: committed after everything else, so once it is in the log every
            # earlier commit is too (the log is in commit order).
            # ... streamed, not copied: when faults made the snapshot start over until after
            # the workload, the marker would be a snapshot row, so first wait for the snapshot.
            self._wait_snapshot(cfg, proc, walgate_log, timeout)
            pg.sql("INSERT INTO _diff_marker VALUES (1)", db=db)
            lines, marker_end = self._wait_marker(src, state, proc, walgate_log, timeout)
            status = self._wait_status(cfg, marker_end, proc, walgate_log, timeout)
            self._oracle(wl, db, lines, status, res)
        finally:
            for c in conns:
                c.close()
            if proc and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            errlog.close()
            pg.sql(f"SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots "
                   f"WHERE slot_name = 'walgate_{src}' AND NOT active", check=False)
            pg.sql(f"DROP DATABASE IF EXISTS {db} WITH (FORCE)", check=False)
        return res

    def _drive(self, wl, conns, proc, start, res):
        """Interleave the transactions' statements over the connections, one step at a time
        (BEGIN, each statement, COMMIT/ROLLBACK) on a connection picked by the schedule seed;
        inject the faults before the transaction they are placed at begins."""
        rng = random.Random(wl["schedule_seed"])
        faults = list(wl["faults"])
        queues = {i: [] for i in range(len(conns))}
        for i, t in enumerate(wl["txns"]):
            queues[t["conn"]].append(i)
        step = {i: 0 for i in queues}
        begun = 0
        self.failed_txns = set()  # transactions known not to have committed
        while any(queues.values()):
            c = rng.choice([i for i in queues if queues[i]])
            t = wl["txns"][queues[c][0]]
            conn = conns[c]
            k = step[c]
            if k == 0:
                while faults and faults[0][0] <= begun:
                    kind = faults.pop(0)[1]
                    proc = self._fault(kind, begun, proc, start, conns, res)
                    if kind == "pg_restart":
                        self._drop_open(queues, step, res)
                begun += 1
                sql = "BEGIN"
            elif k <= len(t["stmts"]):
                sql = t["stmts"][k - 1]
                res.stats["stmts"] += 1
            else:
                sql = t["end"]
            r = conn.run(sql)
            if r is False:
                res.stats["failed_stmts"] += 1
                self.failed_txns.add(queues[c][0])
            if k > len(t["stmts"]) and t["end"] != "COMMIT":
                self.failed_txns.add(queues[c][0])
            if r is None:  # the server went away: the transaction is lost with the session
                conn.close()
                conn.open()
                k = len(t["stmts"]) + 1
            if k > len(t["stmts"]):
                res.stats["txns"] += 1
                queues[c].pop(0)
                step[c] = 0
            else:
                step[c] = k + 1
        return proc

    def _drop_open(self, queues, step, res):
        """After a server restart: the transactions open on any connection died with their
        sessions (never committed); their remaining statements must not run on the new
        session, where each would commit on its own."""
        for c in queues:
            if step[c] > 0:
                self.failed_txns.add(queues[c].pop(0))
                res.stats["txns"] += 1
                step[c] = 0

    def _fault(self, kind, at, proc, start, conns, res):
        res.stats["faults"] += 1
        if kind == "kill":
            self.say(f"  fault: kill -9 walgate before transaction {at}")
            proc.kill()
            proc.wait()
            return start()
        self.say(f"  fault: pg_ctl restart -m immediate before transaction {at}")
        self.pg.restart(mode="immediate")
        for k in conns:  # their open transactions died with the server
            k.close()
            k.open()
        return proc

    def _wait_marker(self, src, state, proc, walgate_log, timeout):
        deadline = time.time() + timeout
        while True:
            if proc.poll() is not None:
                raise AssertionError(f"walgate exited {proc.returncode}\n{walgate_log()}")
            p = subprocess.run([fixture.WALGATE_BIN, "log", "tail", src, "--state-dir", state],
                               capture_output=True, timeout=120)
            if p.returncode == 0:
                lines = [l for l in p.stdout.split(b"\n") if l]
                for i in range(len(lines) - 1, max(-1, len(lines) - 50), -1):
                    if lines[i].startswith(b'{"op":"insert","table":"public._diff_marker"'):
                        commit = next(json.loads(l) for l in lines[i:]
                                      if l.startswith(b'{"op":"commit"'))
                        return lines, logreplay.parse_lsn(commit["end_lsn"])
            if time.time() > deadline:
                raise AssertionError(f"the marker transaction did not reach the log within "
                                     f"{timeout}s\n{walgate_log()}")
            time.sleep(0.2)

    def _wait_snapshot(self, cfg, proc, walgate_log, timeout):
        deadline = time.time() + timeout
        while True:
            p = fixture.walgate("status", "--json", config=cfg)
            st = json.loads(p.stdout)[0] if p.stdout.strip().startswith("[") else {}
            if st.get("state") == "running":  # streaming: the snapshot is done and recorded
                return
            if proc.poll() is not None or time.time() > deadline:
                raise AssertionError(f"the snapshot did not finish within {timeout}s: {st}\n"
                                     f"{walgate_log()}")
            time.sleep(0.2)

    def _wait_status(self, cfg, lsn, proc, walgate_log, timeout):
        """Wait for a status written after the marker was durable (every table error of the
        transactions before it is in it) and after a catalog check that began after the
        marker's commit (`catalog_checked_lsn`): a table dropped and created again, or renamed,
        and not changed since sends nothing in the stream; only that check fails it."""
        deadline = time.time() + timeout
        while True:
            p = fixture.walgate("status", "--json", config=cfg)
            st = json.loads(p.stdout)[0] if p.stdout.strip().startswith("[") else {}
            if (st.get("durable_lsn") and logreplay.parse_lsn(st["durable_lsn"]) >= lsn and
                    st.get("catalog_checked_lsn") and
                    logreplay.parse_lsn(st["catalog_checked_lsn"]) >= lsn):
                return st
            if proc.poll() is not None or time.time() > deadline:
                raise AssertionError(f"status.json did not reach durable_lsn and "
                                     f"catalog_checked_lsn >= the marker's commit within "
                                     f"{timeout}s: {st}\n{walgate_log()}")
            time.sleep(0.2)

    # ---- the oracle ----

    def _oracle(self, wl, db, lines, status, res):
        pg = self.pg
        res.stats["log_records"] = len(lines)
        recs = [json.loads(l.decode("utf-8"), parse_float=str, parse_int=str) for l in lines]
        try:
            st = logreplay.replay(recs, bags=True)
        except logreplay.ReplayError as e:
            res.problems.append(f"log structure: {e}")
            return
        xids = [r["xid"] for r in recs if r["op"] == "commit"]
        if len(xids) != len(set(xids)):
            res.problems.append("a transaction id appears in two commits")
        self.notes = res.notes
        res.errors = {t["table"]: t["error"] for t in status.get("tables", []) if t.get("error")}
        # Every table in an error state must have been made incompatible by the workload, and
        # for a reason it gave: walgate's error_code (never its text) among the ones the
        # transactions that may have committed can cause.
        allowed = error_reasons(wl, getattr(self, "failed_txns", set()))
        for t in status.get("tables", []):
            if t.get("error"):
                code = t.get("error_code")
                if code not in allowed.get(t["table"], set()):
                    res.problems.append(
                        f"{t['table']}: error state {code!r} but the workload gave it no such "
                        f"reason (possible: {sorted(allowed.get(t['table'], set())) or 'none'}): "
                        f"{t['error'][:300]}")
        if status.get("state") == "failed":
            res.problems.append(f"the source failed: {status.get('error')}")
        tables = pg.sql("SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = "
                        "c.relnamespace WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p') "
                        "AND NOT c.relispartition AND c.relname <> '_diff_marker'",
                        db=db).split("\n")
        seen = set(st.tables) | set(res.errors)
        for name in sorted(t for t in tables if t):
            q = f"public.{name}"
            if q in res.errors:
                continue
            why = self._compare(db, q, name, st.tables.get(q, {}), st.anomalies.get(q, []))
            res.stats["tables_compared"] += 1
            res.stats["rows_compared"] += getattr(self, "rows_compared", 0)
            if why:
                res.problems.append(f"{q}: {why}")
            seen.discard(q)
        for q in sorted(seen - {"public._diff_marker"}):
            if q not in res.errors and st.tables.get(q):
                res.problems.append(f"{q}: rows in the log for a table the server does not have "
                                    f"(and no error state)")

    notes = []

    def _columns(self, db, name):
        out = self.pg.sql(
            "SELECT a.attname, bt.typname, coalesce(et.typname, ''), coalesce(rt.typname, ''), "
            "coalesce(ert.typname, '') "
            "FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid "
            "JOIN pg_type bt ON bt.oid = CASE WHEN t.typtype = 'd' THEN t.typbasetype ELSE t.oid END "
            "LEFT JOIN pg_type et ON et.oid = bt.typelem AND bt.typcategory = 'A' "
            "LEFT JOIN pg_range r ON r.rngtypid = bt.oid LEFT JOIN pg_type rt ON rt.oid = r.rngsubtype "
            "LEFT JOIN pg_range er ON er.rngtypid = et.oid LEFT JOIN pg_type ert ON ert.oid = er.rngsubtype "
            f"WHERE a.attrelid = 'public.{name}'::regclass AND a.attnum > 0 AND NOT a.attisdropped "
            "ORDER BY a.attnum", db=db)
        cols = []
        for line in out.split("\n"):
            c, typ, elem, sub, esub = line.split("|")
            cols.append((c, typ, elem, sub or esub))
        return cols

    def _compare(self, db, q, name, rows, anomalies):
        cols = self._columns(db, name)
        colnames = [c for c, *_ in cols]
        data = []
        extra = set()
        nrows = 0
        for bucket in rows.values():
            for row in bucket:
                nrows += 1
                extra |= set(row) - set(colnames)
                fields = []
                for c, typ, elem, sub in cols:
                    # A column added upstream is missing from earlier rows (docs/ingest.md): the
                    # workload adds columns without a default, so the server has NULL there.
                    v = row.get(c)
                    try:
                        fields.append(csv_field(to_pg_text(v, typ, elem, sub)))
                    except (ValueError, TypeError, AttributeError) as e:
                        return f"column {c} ({typ}): walgate's value is not what docs/types.md says: {e}"
                data.append(",".join(fields))
        # Columns the log has and the table no longer has: dropped upstream with no change of
        # the table since, so walgate has not seen the drop yet (it fails the table at the next
        # change). The other columns must still be equal.
        if extra:
            self.notes.append(f"{q}: columns dropped upstream, not seen by walgate yet (no change "
                              f"since): {sorted(extra)}")
        qcols = ", ".join(f'"{c}"' for c in colnames)
        scratch = f"_oracle_{name}"
        self.pg.sql(f"DROP TABLE IF EXISTS {scratch}; CREATE TABLE {scratch} AS SELECT {qcols} "
                    f"FROM public.{name} LIMIT 0", db=db)
        p = self._psql(db, f"COPY {scratch} ({qcols}) FROM STDIN WITH CSV",
                       ("\n".join(data) + ("\n" if data else "")).encode("utf-8"))
        if p.returncode != 0:
            return (f"PostgreSQL refused walgate's values: {p.stderr.decode('utf-8', 'replace')[:500]}"
                    + (f"; replay anomalies: {anomalies[:3]}" if anomalies else ""))
        want = self._copy_out(db, f"SELECT {qcols} FROM public.{name}")
        got = self._copy_out(db, f"SELECT {qcols} FROM {scratch}")
        self.pg.sql(f"DROP TABLE {scratch}", db=db)
        self.rows_compared = nrows
        if want == got:
            return None
        return describe_diff(want, got) + (f"; replay anomalies: {anomalies[:3]}" if anomalies else "")

    def _psql(self, db, sql, data=b""):
        return subprocess.run(["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", self.pg.host, "-p",
                               str(self.pg.port), "-U", "postgres", "-d", db, "-c", sql],
                              input=data, capture_output=True, timeout=120)

    def _copy_out(self, db, select):
        p = self._psql(db, f"COPY (SELECT * FROM ({select}) x ORDER BY x::text COLLATE \"C\") "
                           "TO STDOUT WITH CSV")
        if p.returncode != 0:
            raise RuntimeError(p.stderr.decode("utf-8", "replace"))
        return p.stdout


def error_reasons(wl, failed):
    """{table: {error_code}}: why walgate may fail each table after this workload, from the
    setup and the transactions not known to have failed (`failed`: their indexes). A rename
    fails both names (the new one may also be `not_snapshotted`, when the old name had already
    failed for another reason); a DROP + CREATE under a name is `recreated` (or `dropped`: found
    by the catalog check, or WAL of the dropped relation decoded after the drop), and every
    earlier name of the dropped relation may be `dropped`; a column dropped or
    renamed is `column_dropped_or_renamed` (or `column_replaced` if another column took its
    name); a retype `column_type_changed`; TRUNCATE `truncated`; an unchanged TOASTed value that
    the server does not send is `toast_missing` on a table with an out-of-line column whose
    REPLICA IDENTITY is not FULL."""
    import re
    q = lambda n: n if "." in n else f"public.{n}"
    allowed = {}
    toast = {}
    aliases = {}  # name -> every name its relation had (renames)

    def add(name, *codes):
        allowed.setdefault(q(name), set()).update(codes)

    def created(stmt):
        for m in re.finditer(r"CREATE TABLE (\w+) \(", stmt):
            n = m.group(1)
            toast[q(n)] = toast.get(q(n), False) or (
                " big text" in stmt and f"ALTER TABLE {n} REPLICA IDENTITY FULL" not in stmt)

    for stmt in wl["setup"]:
        created(stmt)
    for i, t in enumerate(wl["txns"]):
        if i in failed:
            continue
        for stmt in t["stmts"]:
            created(stmt)
            m = re.match(r"ALTER TABLE (\w+) RENAME TO (\w+)$", stmt)
            if m:
                add(m.group(1), "renamed")
                add(m.group(2), "renamed", "not_snapshotted")
                toast[q(m.group(2))] = toast.get(q(m.group(1)), False)
                aliases[m.group(2)] = aliases.get(m.group(1), {m.group(1)}) | {m.group(2)}
                continue
            m = re.match(r"DROP TABLE (\w+)$", stmt)
            if m:  # the relation is gone under every name it had; the name is a new one
                for n in aliases.pop(m.group(1), {m.group(1)}):
                    add(n, "dropped")
                add(m.group(1), "recreated")
                continue
            m = re.match(r"ALTER TABLE (\w+) (DROP|RENAME) COLUMN ", stmt)
            if m:
                add(m.group(1), "column_dropped_or_renamed", "column_replaced")
                continue
            m = re.match(r"ALTER TABLE (\w+) ALTER COLUMN \w+ TYPE ", stmt)
            if m:
                add(m.group(1), "column_type_changed")
                continue
            m = re.match(r"TRUNCATE (\w+)$", stmt)
            if m:
                add(m.group(1), "truncated")
    for name, yes in toast.items():
        if yes:
            add(name, "toast_missing")
    return allowed


def csv_field(s):
    if s is None:
        return ""
    return '"' + s.replace('"', '""') + '"'


def _quote_elem(s):
    if s is None:
        return "NULL"
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def to_pg_text(v, typ, elem="", sub=""):
    """walgate's JSON rendering of a value (docs/types.md) back in PostgreSQL input form.
    Numbers arrive as their digits (parse_int/parse_float=str)."""
    if v is None:
        return None
    if elem and typ.startswith("_"):
        def arr(x):
            if isinstance(x, list):
                return "{" + ",".join(arr(e) for e in x) + "}"
            return _quote_elem(to_pg_text(x, elem, "", sub))
        if not isinstance(v, list):
            raise ValueError(f"array value expected for {typ}: {v!r}")
        return arr(v)
    if isinstance(v, bool):
        return "t" if v else "f"
    if typ == "bytea":
        return "\\x" + base64.b64decode(v, validate=True).hex()
    if typ == "int2vector":
        return " ".join(v)
    if isinstance(v, dict):  # a range
        if v.get("empty"):
            return "empty"
        lo, hi = v.get("lower"), v.get("upper")
        b = "[" if v.get("lower_inc") else "("
        b += "" if lo is None else _quote_elem(to_pg_text(lo, sub))
        b += ","
        b += "" if hi is None else _quote_elem(to_pg_text(hi, sub))
        return b + ("]" if v.get("upper_inc") else ")")
    if not isinstance(v, str):
        raise ValueError(f"unexpected value for {typ}: {v!r}")
    return v


def describe_diff(want, got, limit=3):
    import csv
    import io

    def rows(b):
        return list(csv.reader(io.StringIO(b.decode("utf-8"), newline="")))
    def short(r):
        return tuple(v if len(v) <= 80 else v[:60] + f"...({len(v)} chars)" for v in r)
    w, g = rows(want), rows(got)
    ws, gs = [short(r) for r in w], [short(r) for r in g]
    missing = [r for r in ws if r not in gs]
    extra = [r for r in gs if r not in ws]
    out = [f"source has {len(ws)} rows, replayed log {len(gs)}"]
    if missing:
        out.append(f"{len(missing)} source rows not in the log, e.g. {missing[:limit]}")
    if extra:
        out.append(f"{len(extra)} log rows not in the source, e.g. {extra[:limit]}")
    return "; ".join(out)


# ---- shrinking --------------------------------------------------------------------------------

def shrink(runner, wl, budget_s):
    """Drop transactions (then statements, initial rows and faults) while the workload still
    fails; at most budget_s seconds. Returns (the smallest failing workload, its result)."""
    deadline = time.time() + budget_s
    best = wl
    best_res = None

    def fails(cand):
        nonlocal best_res
        try:
            r = runner.run(cand, timeout=120)
        except AssertionError as e:  # walgate exited or stalled: that is a failure too
            r = Result(cand["seed"])
            r.problems.append(str(e)[:500])
        if not r.ok:
            best_res = r
        return not r.ok

    def pieces(key):
        nonlocal best
        n = 2
        while len(best[key]) >= 1 and time.time() < deadline:
            items = best[key]
            size = max(1, len(items) // n)
            changed = False
            for start in range(0, len(items), size):
                if time.time() >= deadline:
                    break
                cand = dict(best)
                cand[key] = items[:start] + items[start + size:]
                if key == "txns":  # fault positions are transaction indexes
                    cand["faults"] = [(min(i, max(0, len(cand["txns"]) - 1)), k)
                                      for i, k in best["faults"]]
                if fails(cand):
                    best = cand
                    changed = True
                    break
            if not changed:
                if size == 1:
                    break
                n = min(len(items), n * 2)
    runner.verbose = False
    for key in ("txns", "faults", "initial"):
        pieces(key)
    # statements inside the remaining transactions
    for i in range(len(best["txns"])):
        j = 0
        while j < len(best["txns"][i]["stmts"]) and time.time() < deadline:
            t = dict(best["txns"][i])
            t["stmts"] = t["stmts"][:j] + t["stmts"][j + 1:]
            cand = dict(best)
            cand["txns"] = best["txns"][:i] + [t] + best["txns"][i + 1:]
            if t["stmts"] and fails(cand):
                best = cand
            else:
                j += 1
    runner.verbose = True
    return best, best_res


def reproduction(wl):
    """A SQL script that replays the workload serially (the interleaving is in the JSON)."""
    out = [f"-- walgate differential test, seed {wl['seed']} ({wl['opts']})",
           "-- run in an empty database; start walgate run after the initial rows", ""]
    out += [s + ";" for s in wl["setup"]]
    out += [s + ";" for s in wl["initial"]]
    out.append("-- start walgate run here")
    fi = dict()
    for i, k in wl["faults"]:
        fi.setdefault(i, []).append(k)
    for i, t in enumerate(wl["txns"]):
        for k in fi.get(i, []):
            out.append(f"-- fault: {k}")
        out.append(f"-- connection {t['conn']}")
        out.append("BEGIN;")
        out += [s + ";" for s in t["stmts"]]
        out.append(t["end"] + ";")
    return "\n".join(out) + "\n"
