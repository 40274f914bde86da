#!/usr/bin/env bash
# Evidence of a stalled `walgate run` of a bench (bench/ingest.sh and the like), for the
# intermittent catch-up stall seen under CPU load: run it beside the bench.
#   bench/watch-stall.sh [WALGATE_BIN] [OUTDIR]
# Every second it reads status.json of each `WALGATE_BIN ... run`; when one's confirmed_lsn
# stays the same for 6 s while lag_bytes > 0, it writes to OUTDIR/stall.<time>.*: the status,
# `ss -tnpi` of both ends of every connection to its PostgreSQL port (the server's Send-Q and
# the client's Recv-Q say on which side the bytes wait), the TCP counters, a 4 s strace and
# the threads' stacks, then the status once more (attaching a tracer has ended a stall) — and
# exits. Must run as root (strace, gdb).
bin=${1:-$PWD/build-release/walgate}
out=${2:-/tmp}
declare -A last since
while true; do
    for p in $(pgrep -f "^$bin .* run"); do
        cfg=$(tr '\0' ' ' </proc/$p/cmdline | awk '{print $3}')
        sd=$(awk -F' *= *' '/^state_dir/{print $2; exit}' "$cfg" 2>/dev/null)
        port=$(awk -F' *= *' '/^port/{print $2; exit}' "$cfg" 2>/dev/null)
        for st in "$sd"/sources/*/status.json; do
            [ -f "$st" ] || continue
            v=$(python3 -c "import json,sys;d=json.load(open(sys.argv[1]));print(d['confirmed_lsn'],d['lag_bytes'],d['state'])" "$st" 2>/dev/null)
            [ -n "$v" ] || continue
            k="$p $st"
            if [ "${last[$k]}" != "$v" ]; then
                last[$k]=$v
                since[$k]=$(date +%s)
                continue
            fi
            case "$v" in *" 0 "*) continue ;; esac
            [ $(($(date +%s) - ${since[$k]})) -ge 6 ] || continue
            f=$out/stall.$(date +%s)
            {
                echo "STALL pid $p: $v at $(date +%T.%N)"
                cat "$st"
                echo
                ss -tnpi "( sport = :$port or dport = :$port )"
                nstat -az 2>/dev/null | grep -Ei 'window|probe|prune|retrans|timeouts|drop'
                for t in /proc/$p/task/*; do echo "$t $(cat $t/comm) $(cat $t/wchan)"; done
            } >"$f.info" 2>&1
            timeout 4 strace -f -tt -p "$p" >"$f.strace" 2>&1
            gdb -p "$p" -batch -ex "thread apply all bt" >"$f.gdb" 2>&1
            sleep 1
            cat "$st" >"$f.after"
            echo "$f.*"
            exit 0
        done
    done
    sleep 1
done
