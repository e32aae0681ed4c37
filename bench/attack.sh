#!/usr/bin/env bash
# Stress benchmark: two cheap unauthenticated attacks against every yuyo adapter and the
# hand-written hyper baseline, same machine, same run. Each (server, attack) pair gets a
# fresh server pinned to CPU 0; yuyo-bench-attack (CPU 1) opens CONNECTIONS attacking
# connections from one client and holds them while a fresh client sends one signed PING
# per second, each on a new connection with a 2 s deadline, for DURATION seconds.
#   pipeline-no-read: 4 KiB receive buffer and 1,460-byte MSS (set before connect), 4,000
#                     pipelined GETs, never read.
#   stalled-body:     a validly signed POST head with Content-Length: 1000, then nothing.
# Prints, per server and attack: fresh PINGs answered, their p50 and p99 latency, and the
# attacking connections the server closed during the run.
#
#   bench/attack.sh                 # all servers, both attacks, 1,100 connections, 30 s
#   SERVERS="baseline smol" ATTACKS=stalled-body CONNECTIONS=500 DURATION=10 bench/attack.sh
#   ATTACKS=none DURATION=5 bench/attack.sh   # control: the fresh client alone
set -euo pipefail
cd "$(dirname "$0")/.."

SERVERS=${SERVERS:-"baseline smol tokio blocking tower"}
ATTACKS=${ATTACKS:-"pipeline-no-read stalled-body"}
CONNECTIONS=${CONNECTIONS:-1100}
DURATION=${DURATION:-30}
PORT=${PORT:-18091}

command -v taskset >/dev/null || { apt-get update -qq && apt-get install -y -qq util-linux >/dev/null; }

cargo build --release -q -p yuyo-cli -p yuyo-bench-baseline -p yuyo-bench-attack
YUYO=target/release/yuyo
BASELINE=target/release/yuyo-bench-baseline
ATTACK=target/release/yuyo-bench-attack

# The attacker holds CONNECTIONS sockets and the server as many (plus its own): both
# inherit this shell's limit.
need=$((CONNECTIONS + 1024))
if [ "$(ulimit -n)" != unlimited ] && [ "$(ulimit -n)" -lt "$need" ]; then
    ulimit -n "$need" || { echo "cannot raise the open files limit to $need" >&2; exit 1; }
fi

# shellcheck source=bench/servers.sh
. bench/servers.sh


results="$work/results"
: >"$results"
for server in $SERVERS; do
    for attack in $ATTACKS; do
        pid=$(start_server "$server"); pids+=("$pid")
        if line=$(taskset -c 1 "$ATTACK" --addr "127.0.0.1:$PORT" --attack "$attack" \
            --connections "$CONNECTIONS" --duration "$DURATION" --label "$server"); then
            # A server that died under the attack is part of the result.
            kill -0 "$pid" 2>/dev/null || line="$line server_exited=1"
            echo "$line" >>"$results"
            echo "  $line" >&2
        else
            echo "result server=$server attack=$attack failed=1" >>"$results"
            echo "  $server $attack: yuyo-bench-attack failed" >&2
        fi
        stop_server "$pid"
    done
done

python3 - "$results" "$CONNECTIONS" "$DURATION" <<'PY'
import sys
rows = []
for line in open(sys.argv[1]):
    fields = dict(f.split("=", 1) for f in line.split()[1:] if "=" in f)
    rows.append(fields)
print(f"\n{sys.argv[2]} attacking connections from one client, {sys.argv[3]} s of fresh"
      " signed PINGs (1/s, new connection each, 2 s deadline) while they are held")
print("| server | attack | fresh PINGs answered | p50 ms | p99 ms (max if n < 100) |"
      " attacking connections closed by the server | fresh PING failures |")
print("|---|---|---|---|---|---|---|")
for r in rows:
    if r.get("failed"):
        print(f"| {r['server']} | {r['attack']} | tool failed | - | - | - | - |")
        continue
    n, total = int(r["answered"]), int(r["pings"])
    pct = 100 * n / total if total else 0
    closed = f"{r['closed']} of {r['connected']}"
    if r["closed"] != "0":
        closed += f" (at {r['closed_first_s']}–{r['closed_last_s']} s)"
    if r["connect_errors"] != "-":
        closed += f"; connect failures {r['connect_errors']}"
    failures = r["ping_errors"] + ("; server exited" if r.get("server_exited") else "")
    print(f"| {r['server']} | {r['attack']} | {n}/{total} ({pct:.0f}%) | {r['p50_ms']} |"
          f" {r['p99_ms']} | {closed} | {failures} |")
PY
