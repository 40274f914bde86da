"""test_differential.py — the randomized differential test (issue 12; tests/diffgen.py does the
work): random workloads against a real PostgreSQL 15 while `walgate run` ingests them; the
replayed change log must equal the server, table by table, in PostgreSQL's own COPY output,
for every table not in an error state; a table in an error state must have a reason the
workload gave it (status error_code, diffgen.error_reasons).

CI (the default): the seeds in tests/data/diff-seeds.txt (seeds that once failed, and a few
fixed ones) plus one random seed: 17 corpus seeds, 75-90 s under ASan on 2 busy cores.
Locally: WALGATE_DIFF_SECONDS=3600 keeps running random seeds for an hour after the fixed ones.

  WALGATE_DIFF_SEED=N        run only this seed
  WALGATE_DIFF_REPLAY=F.json run exactly this (shrunk) workload, as written on a mismatch
  WALGATE_DIFF_DDL=0         no DDL (default on: add/drop/rename/retype a column)
  WALGATE_DIFF_FAULTS=1      kill -9 walgate and restart PostgreSQL (-m immediate) mid-workload
  WALGATE_DIFF_KNOWN=a,b     which of the known divergences of issue 12 the workloads contain:
                             partitions (a partitioned table published via its root),
                             rename_table, drop_recreate, replident_index (REPLICA IDENTITY USING
                             INDEX on a table whose primary key is another index). Default:
                             all four (each is fixed: walgate follows or fails the table);
                             WALGATE_DIFF_KNOWN= (empty) for none. A table dropped and created
                             again (or renamed) that gets no change afterwards is failed by
                             walgate's catalog check only: the oracle waits for status's
                             catalog_checked_lsn to pass the marker (seed 725584587)
  WALGATE_DIFF_TXNS=N        transactions per workload (default 60)
  WALGATE_DIFF_SHRINK_SECONDS=N  time to shrink a failing workload (default 120)
  WALGATE_DIFF_OUT=DIR       where failing workloads are written (default: the temp dir)

It prints each seed; on a mismatch it shrinks the workload (drops transactions, statements,
initial rows and faults while it still fails) and writes the smallest reproduction as
JSON (the exact workload, for diffgen) and SQL (to read), then fails naming both files.
"""
import json
import os
import random
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import diffgen  # noqa: E402
import fixture  # noqa: E402

SEEDS_FILE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                          "data", "diff-seeds.txt")


def fixed_seeds():
    """[(seed, {"faults": bool, "known": set?})] from the seeds file:
    `SEED [faults] [known=a,b|known=-]  # why`: known= pins the flags the seed was found with
    (its workload depends on them); without it the default flags."""
    seeds = []
    with open(SEEDS_FILE) as f:
        for line in f:
            words = line.split("#", 1)[0].split()
            if words:
                over = {"faults": "faults" in words[1:]}
                for w in words[1:]:
                    if w.startswith("known="):
                        over["known"] = {k for k in w[6:].split(",") if k and k != "-"}
                seeds.append((int(words[0]), over))
    return seeds


def report_failure(runner, wl, res, outdir):
    print(f"MISMATCH seed {wl['seed']} ({wl['opts']}):")
    for p in res.problems:
        print(f"  {p}")
    budget = float(os.environ.get("WALGATE_DIFF_SHRINK_SECONDS", "120"))
    print(f"shrinking for at most {budget:.0f}s ...", flush=True)
    small, sres = diffgen.shrink(runner, wl, budget)
    base = os.path.join(outdir, f"diff-seed-{wl['seed']}")
    with open(base + ".json", "w") as f:
        json.dump(small, f, indent=1)
    with open(base + ".sql", "w") as f:
        f.write(diffgen.reproduction(small))
    print(f"shortest reproduction ({len(small['txns'])} of {len(wl['txns'])} transactions, "
          f"{len(small['initial'])} initial rows): {base}.sql (exact workload: {base}.json)")
    if sres:
        for p in sres.problems:
            print(f"  {p}")
    print(diffgen.reproduction(small)[:3000])
    return base


def main():
    seconds = float(os.environ.get("WALGATE_DIFF_SECONDS", "0"))
    opts = diffgen.Opts.from_env()
    outdir = os.environ.get("WALGATE_DIFF_OUT") or fixture.tempdir("walgate-diffout-")
    if os.environ.get("WALGATE_DIFF_SEED"):
        seeds = [(int(os.environ["WALGATE_DIFF_SEED"]), {})]
        extra = False
    else:
        seeds = fixed_seeds() + [(random.SystemRandom().randrange(2**31), {})]
        extra = True
    t0 = time.time()
    totals = {"workloads": 0}
    failed = []
    with fixture.Postgres(conf={"logical_decoding_work_mem": "64kB",
                                "max_replication_slots": "20"}) as pg:
        runner = diffgen.Runner(pg, opts)
        i = 0
        while True:
            if i < len(seeds):
                seed, over = seeds[i]
            elif extra and time.time() - t0 < seconds:
                seed, over = random.SystemRandom().randrange(2**31), {}
            else:
                break
            i += 1
            sopts = diffgen.Opts.from_env(**over) if over else opts
            runner.opts = sopts
            try:
                wl = diffgen.generate(seed, sopts)
            except Exception:
                print(f"seed {seed}: the workload generator failed", flush=True)
                raise
            if os.environ.get("WALGATE_DIFF_REPLAY"):
                with open(os.environ["WALGATE_DIFF_REPLAY"]) as f:
                    wl = json.load(f)
                wl["faults"] = [tuple(x) for x in wl["faults"]]
            print(f"seed {seed}: {len(wl['txns'])} transactions, {len(wl['initial'])} initial "
                  f"rows, faults {wl['faults']} ({wl['opts']})", flush=True)
            ts = time.time()
            try:
                res = runner.run(wl)
            except AssertionError as e:
                res = diffgen.Result(seed)
                res.problems.append(str(e)[:3000])
            totals["workloads"] += 1
            for k, v in res.stats.items():
                totals[k] = totals.get(k, 0) + v
            errs = "; ".join(f"{t}: {e[:160]}" for t, e in sorted(res.errors.items()))
            print(f"  {'ok' if res.ok else 'MISMATCH'} in {time.time() - ts:.1f}s: {res.stats}"
                  + (f"\n  tables in an error state: {errs}" if errs else "")
                  + "".join(f"\n  note: {n}" for n in res.notes), flush=True)
            if not res.ok:
                failed.append(report_failure(runner, wl, res, outdir))
            if i >= len(seeds) and time.time() - t0 >= seconds:
                break
    print(f"differential: {totals} in {time.time() - t0:.0f}s")
    if failed:
        print("FAILED: " + ", ".join(failed) + " (add the seeds to tests/data/diff-seeds.txt "
              "once fixed)")
        sys.exit(1)
    print("ok")


if __name__ == "__main__":
    main()
