"""logreplay.py — replay a walgate change log into table contents, checking it on the way.

Integration tests use it to prove "the log equals the source, with no gap and no duplicate":

    state = logreplay.replay(lines)          # lines: the output of `walgate log tail SOURCE`
    assert state.tables["public.accounts"] == logreplay.source_rows(pg, "public.accounts", ["id"])

While replaying it checks the invariants of docs/changelog.md and raises ReplayError naming the
line when one is broken: every transaction is `begin`, rows, `commit` with the same xid; commit
end LSNs strictly increase (a transaction written twice shows up here); no row operation
outside a transaction; an insert never hits an existing key and an update or delete always
finds the old row (a lost transaction shows up here, as the next one touching the same row
will not find it in the state it expects).

With ``bags=True`` (tests/diffgen.py) a table maps each key to a *list* of rows, so a table
without a primary key (whose key is every column) can hold equal rows more than once, and
problems with rows are collected in ``State.anomalies`` (per table) instead of raised; the
transaction structure is still checked strictly.

Only the standard library is used.
"""
import json


class ReplayError(AssertionError):
    pass


def parse_lsn(s):
    hi, lo = s.split("/")
    return (int(hi, 16) << 32) | int(lo, 16)


def _key(row, key_cols):
    cols = key_cols or sorted(row)
    return json.dumps([row.get(c) for c in cols], sort_keys=True)


class State:
    def __init__(self):
        self.tables = {}  # "schema.table" -> {key json: row dict}
        self.txns = 0
        self.rows = 0
        self.last_end_lsn = 0
        self.xids = []  # commit order
        self.snapshot_rows = {}  # table -> rows read in the snapshot
        self.truncates = 0
        self.messages = []
        self.bags = False
        self.anomalies = {}  # table -> [why] (bags mode)
        self.commit_lsns = set()

    def table(self, name):
        return self.tables.setdefault(name, {})


def replay(lines, strict=True, bags=False):
    """Apply the records in `lines` (strings or dicts). Returns a State."""
    st = State()
    st.bags = bags
    txn = None  # (xid, [records]) while inside begin..commit
    for n, line in enumerate(lines, 1):
        rec = json.loads(line) if isinstance(line, str) else line
        op = rec.get("op")

        def fail(why):
            raise ReplayError(f"change log line {n}: {why}: {json.dumps(rec)[:300]}")

        if op == "begin":
            if txn is not None:
                fail("begin inside a transaction")
            txn = (rec.get("xid"), [], rec.get("lsn"))
        elif op == "commit":
            if txn is None:
                fail("commit without begin")
            if rec.get("xid") != txn[0]:
                fail(f"commit xid differs from begin xid {txn[0]}")
            end = parse_lsn(rec["end_lsn"])
            if end <= st.last_end_lsn:
                fail("commit end_lsn does not increase (a duplicated or reordered transaction)")
            st.last_end_lsn = end
            if rec.get("lsn") in st.commit_lsns:
                fail("commit lsn seen twice (a duplicated transaction)")
            st.commit_lsns.add(rec.get("lsn"))
            if txn[2] is not None and txn[2] != rec.get("lsn"):
                fail(f"begin lsn {txn[2]} differs from the commit lsn")
            for r in txn[1]:
                _apply(st, r, fail if strict else None)
            st.txns += 1
            st.xids.append(txn[0])
            txn = None
        elif op in ("insert", "update", "delete", "truncate", "message"):
            if txn is None:
                if op == "message" and rec.get("transactional") is False:
                    st.messages.append(rec)
                    continue
                fail(f"{op} outside a transaction")
            txn[1].append(rec)
        elif op == "read":
            if txn is not None:
                fail("snapshot row inside a transaction")
            t = st.table(rec["table"])
            k = _bag_key(rec["new"], rec.get("key")) if bags else _key(rec["new"], rec.get("key"))
            if bags:
                st.__dict__.setdefault("bag_cols", {})[rec["table"]] = set(rec["new"])
                t.setdefault(k, []).append(rec["new"])
            else:
                if strict and k in t:
                    fail("snapshot row read twice")
                t[k] = rec["new"]
            st.snapshot_rows[rec["table"]] = st.snapshot_rows.get(rec["table"], 0) + 1
        elif op in ("snapshot_abort", "snapshot_start"):
            # abandoned rows, or a new snapshot of the table begins (walgate source resync)
            if txn is not None:
                fail(f"{op} inside a transaction")
            st.tables[rec["table"]] = {}
            st.snapshot_rows[rec["table"]] = 0
        elif op in ("snapshot", "snapshot_done", "snapshot_begin"):
            pass
        else:
            # Readers must ignore what they do not know (docs/changelog.md); but a record
            # without an op is broken.
            if op is None:
                fail("record without op")
    if txn is not None and strict:
        raise ReplayError("change log ends inside a transaction (a partial transaction)")
    return st


def _apply(st, rec, fail):
    op = rec["op"]
    if op == "truncate":
        for name in rec.get("tables", []):
            st.tables[name] = {}
        st.truncates += 1
        return
    if op == "message":
        st.messages.append(rec)
        return
    t = st.table(rec["table"])
    key_cols = rec.get("key")
    st.rows += 1
    if st.bags:
        _apply_bag(st, t, rec, key_cols)
        return
    if op == "insert":
        k = _key(rec["new"], key_cols)
        if fail and k in t:
            fail("insert of a key that already exists (a duplicated transaction?)")
        t[k] = rec["new"]
    elif op == "update":
        old = rec.get("old") or rec["new"]
        ko = _key(old, key_cols)
        if fail and ko not in t:
            fail("update of a row that does not exist (a lost transaction?)")
        t.pop(ko, None)
        t[_key(rec["new"], key_cols)] = rec["new"]
    elif op == "delete":
        ko = _key(rec["old"], key_cols)
        if fail and ko not in t:
            fail("delete of a row that does not exist (a lost transaction?)")
        t.pop(ko, None)


def _bag_key(row, key_cols, keyed=None):
    """A table without a primary key is keyed by every column; a column added upstream is then
    in the key of later records only, and absent from earlier rows (docs/ingest.md). Leaving
    out NULL members makes both the same key (the workloads add columns without a default).
    `keyed`: whether the table has a key narrower than its row (default: told from `row`,
    which must then be a whole row)."""
    if keyed is None:
        keyed = key_cols and set(key_cols) != set(row)
    if keyed:
        return _key(row, key_cols)
    return json.dumps({c: v for c, v in row.items() if v is not None}, sort_keys=True)


def _apply_bag(st, t, rec, key_cols):
    """Bags mode: key -> [rows]. A keyless table's key is every column, so equal rows stack."""
    op = rec["op"]
    name = rec["table"]
    # Keyed: the key is a strict subset of the table's columns as last seen whole (a read,
    # insert or update's new row). Not told from an old row alone: one sent key-only (DEFAULT,
    # USING INDEX) carries exactly the key's columns, like a keyless table's whole old row; and
    # a keyless table's key grows with a column added since its rows were last seen whole.
    cols = st.__dict__.setdefault("bag_cols", {})
    if rec.get("new"):
        cols[name] = set(rec["new"])
    keyed = bool(key_cols) and set(key_cols) < cols.get(name, set(rec.get("old") or {}))

    def note(why):
        st.anomalies.setdefault(name, []).append(f"{why}: {json.dumps(rec)[:300]}")

    def remove(row):
        k = _bag_key(row, key_cols, keyed)
        rows = t.get(k)
        if not rows:
            note(f"{op} of a row that does not exist (key {k})")
            return
        rows.pop()
        if not rows:
            del t[k]

    if op in ("update", "delete"):
        remove(rec.get("old") or rec["new"])
    if op in ("insert", "update"):
        k = _bag_key(rec["new"], key_cols, keyed)
        if keyed and t.get(k):
            note(f"{op} to a key that already exists (key {k})")
            t[k] = []
        t.setdefault(k, []).append(rec["new"])


def source_rows(pg, table, key_cols, db="postgres", columns=None):
    """The rows of `table` as {key json: row dict}, read with row_to_json. Numbers are kept as
    their exact text (numeric is a string in the change log) and ints as ints."""
    cols = ", ".join(columns) if columns else "*"
    out = pg.sql(f"SELECT row_to_json(t) FROM (SELECT {cols} FROM {table}) t", db=db)
    rows = {}
    for line in out.splitlines():
        if not line:
            continue
        row = json.loads(line, parse_float=str)
        rows[_key(row, key_cols)] = row
    return rows


def diff(expected, actual, limit=5):
    """A short human description of how two {key: row} maps differ ('' when equal)."""
    if expected == actual:
        return ""
    missing = [k for k in expected if k not in actual]
    extra = [k for k in actual if k not in expected]
    changed = [k for k in expected if k in actual and expected[k] != actual[k]]
    parts = []
    if missing:
        parts.append(f"{len(missing)} rows missing from the log, e.g. {missing[:limit]}")
    if extra:
        parts.append(f"{len(extra)} rows in the log but not the source, e.g. {extra[:limit]}")
    if changed:
        k = changed[0]
        parts.append(f"{len(changed)} rows differ, e.g. {k}: source {expected[k]} log {actual[k]}")
    return "; ".join(parts)
