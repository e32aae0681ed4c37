#!/usr/bin/env bash
# Load benchmark: every yuyo adapter vs the hand-written hyper baseline, same machine, same
# run. The server is pinned to CPU 0, wrk to CPU 1. Prints req/s, p50, p99, the server's CPU
# time (user + system) per request and each one's ratio to the baseline measured in this
# run, plus the single-core verify ceiling and the time the host took from the VM (steal).
#
#   bench/load.sh                 # all servers, 5 s per run, 3 runs per cell (round-robin)
#   DURATION=10 RUNS=3 SERVERS="baseline tokio" bench/load.sh
#   FILLER=0 bench/load.sh        # without the idle spinner on wrk's core (see below)
#   SERVERS="smol smol-metrics" CONFIGS="16 64" bench/load.sh   # the cost of metrics
#
# A server named RUNTIME-metrics is `yuyo serve --runtime RUNTIME --metrics 127.0.0.1:0`,
# scraped once halfway through each measured run; its req/s is also reported as a ratio to
# RUNTIME's in the same round (the cost of metrics).
#
# Configurations: connections, `close` for `Connection: close`, `tls` for HTTPS (yuyo
# terminating TLS itself vs the baseline behind tokio-rustls, same self-signed certificate;
# yuyo-tower serves under its host's TLS and is left out of those rows).
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-5}
RUNS=${RUNS:-3}
SERVERS=${SERVERS:-"baseline smol smol-metrics tokio blocking tower"}
CONFIGS=${CONFIGS:-"1 16 64 16close 16tls 16tlsclose"}
FILLER=${FILLER:-1}
PORT=${PORT:-18090}
BODY=core/fixtures/interactions/command_load.json

command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk >/dev/null; }
command -v taskset >/dev/null && command -v chrt >/dev/null \
    || { apt-get update -qq && apt-get install -y -qq util-linux >/dev/null; }
command -v openssl >/dev/null || { apt-get update -qq && apt-get install -y -qq openssl >/dev/null; }

cargo build --release -q -p yuyo-cli -p yuyo-bench-baseline
cargo bench -q --no-run -p yuyo-core --bench exchange 2>/dev/null
YUYO=target/release/yuyo
BASELINE=target/release/yuyo-bench-baseline

# shellcheck source=bench/servers.sh
. bench/servers.sh

# On a virtual machine, a vCPU that goes idle and is woken again loses time to the host
# (steal, in /proc/stat), on both vCPUs. wrk's core idles between responses, more often the
# faster the server: without this, the faster servers were charged 4-18x the baseline's
# steal, in bursts of milliseconds that set their p99. A spinner at SCHED_IDLE priority
# keeps that core busy (like booting with idle=poll) and yields to wrk at once: wrk's
# req/s for the baseline is unchanged. A real server does not share its VM with its load.
if [ "$FILLER" = 1 ]; then
    taskset -c 1 chrt -i 0 sh -c 'while :; do :; done' &
    pids+=($!)
fi

# Signed request: the headers come from `yuyo sign` with the built-in test key.
signed=$("$YUYO" sign --file "$BODY")
signature=$(awk '/^X-Signature-Ed25519:/ {print $2}' <<<"$signed")
timestamp=$(awk '/^X-Signature-Timestamp:/ {print $2}' <<<"$signed")
body_path=$(realpath "$BODY")
make_lua() { # $1 = extra header line or empty
    cat <<LUA
wrk.method = "POST"
local file = io.open("$body_path", "rb")
wrk.body = file:read("*a")
file:close()
wrk.headers["Content-Type"] = "application/json"
wrk.headers["User-Agent"] = "Discord-Interactions/1.0 (+https://discord.com)"
wrk.headers["X-Signature-Ed25519"] = "$signature"
wrk.headers["X-Signature-Timestamp"] = "$timestamp"
$1
LUA
}
make_lua "" >"$work/keepalive.lua"
make_lua 'wrk.headers["Connection"] = "close"' >"$work/close.lua"
# The certificate both servers present in the `tls` rows (P-256, as most public ones).
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
    -subj /CN=127.0.0.1 -addext subjectAltName=IP:127.0.0.1 \
    -keyout "$work/key.pem" -out "$work/cert.pem" 2>/dev/null
TLS_CERT="$work/cert.pem"
TLS_KEY="$work/key.pem"


to_ms() { # wrk latency like 1.23ms / 456.78us / 1.02s
    python3 -c 'import sys,re; v=sys.argv[1]; m=re.match(r"([\d.]+)(us|ms|s)",v); f={"us":0.001,"ms":1,"s":1000}[m.group(2)]; print(f"{float(m.group(1))*f:.3f}")' "$1"
}

run_wrk() { # $1 = connections, $2 = lua, [$3 = seconds]; prints "rps p50 p99 requests"
    local out
    if ! out=$(taskset -c 1 wrk -t1 -c"$1" -d"${3:-$DURATION}s" --latency -s "$2" "$SCHEME://127.0.0.1:$PORT/" 2>&1) \
        || ! grep -q "Requests/sec" <<<"$out"; then
        echo "wrk failed: $out" >&2
        return 1
    fi
    local rps p50 p99 non2xx count
    rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
    count=$(awk '/requests in/ {print $1}' <<<"$out")
    p50=$(to_ms "$(awk '$1=="50%" {print $2}' <<<"$out")")
    p99=$(to_ms "$(awk '$1=="99%" {print $2}' <<<"$out")")
    non2xx=$(awk '/Non-2xx/ {print $4}' <<<"$out")
    if [ -n "$non2xx" ]; then echo "$out" >&2; echo "non-2xx responses: $non2xx" >&2; return 1; fi
    echo "$rps $p50 $p99 $count"
}

cpu_ticks() { # $1 = pid: user + system CPU time so far, in clock ticks
    awk '{print $14 + $15}' "/proc/$1/stat"
}

# The single-core ceiling: 1 / median verify_strict time of the same body (criterion), on
# the server's core. Measured before every configuration of every round, since the VM's
# speed drifts by a quarter between phases; prints nanoseconds.
verify_ns() {
    taskset -c 0 cargo bench -q -p yuyo-core --bench exchange -- --warm-up-time 1 --measurement-time 2 \
        'command_echo/verify_strict' 2>/dev/null \
        | awk '/time:/ {v=$4; u=$5; gsub(/\]/,"",u); if (u=="µs"||u=="us") v*=1000; else if (u=="ms") v*=1000000; print v; exit}'
}

steal_ticks() { # time the host ran something else while CPUs 0 and 1 wanted to run
    awk '$1 == "cpu0" || $1 == "cpu1" {steal += $9} END {print steal}' /proc/stat
}

results="$work/results"
: >"$results"
ceilings="$work/ceilings"
: >"$ceilings"
ulimit -n 8192 2>/dev/null || true
memory="$work/memory"
: >"$memory"
if [ "${MEMORY:-1}" = 1 ]; then
    for server in $SERVERS; do
        pid=$(start_server "$server" http); pids+=("$pid")
        echo "== $server" >>"$memory"
        python3 bench/memory.py "$pid" "$PORT" "$signature" "$timestamp" "$body_path" 1000 >>"$memory" 2>&1 \
            || echo "memory check failed" >>"$memory"
        stop_server "$pid"
    done
fi
# Round-robin: each run measures every server once per config, one after the other, so
# the machine's drift (it is noisy) affects them alike and the ratios stay comparable.
for run in $(seq "$RUNS"); do
    for config in $CONFIGS; do
        case "$config" in
            *close) lua="$work/close.lua" ;;
            *) lua="$work/keepalive.lua" ;;
        esac
        conns=${config%%[a-z]*}
        case "$config" in *tls*) SCHEME=https ;; *) SCHEME=http ;; esac
        echo "$run $config $(verify_ns)" >>"$ceilings"
        # Every other round in reverse order, so that no server always runs first.
        order=$SERVERS
        [ $(( run % 2 )) = 0 ] && order=$(tr ' ' '\n' <<<"$SERVERS" | tac | tr '\n' ' ')
        for server in $order; do
            if [ "$SCHEME" = https ] && [ "$server" = tower ]; then continue; fi
            pid=$(start_server "$server" "$SCHEME"); pids+=("$pid")
            # Warm-up (threads, buffers, first connections), not measured.
            run_wrk "$conns" "$lua" 1 >/dev/null || true
            ticks=$(cpu_ticks "$pid")
            steal=$(steal_ticks)
            scraper=
            case "$server" in
                *-metrics) { sleep "$(( DURATION / 2 ))"; scrape_metrics >"$work/scrape" || echo "scrape failed" >&2; } &
                    scraper=$! ;;
            esac
            measured=$(run_wrk "$conns" "$lua") || exit 1
            if [ -n "$scraper" ]; then
                wait "$scraper" || true
                echo "  scraped $(grep -c '^yuyo_' "$work/scrape" || true) yuyo_ series mid-run" >&2
            fi
            ticks=$(( $(cpu_ticks "$pid") - ticks ))
            steal=$(( $(steal_ticks) - steal ))
            stop_server "$pid"
            # Server CPU (user + system) per request: what the server spends, whether or
            # not the closed loop of `wrk` keeps it busy.
            read -r rps p50 p99 count <<<"$measured"
            cpu_us=$(python3 -c "print(f'{$ticks * 1e6 / $(getconf CLK_TCK) / max($count, 1):.1f}')")
            steal_ms=$(( steal * 1000 / $(getconf CLK_TCK) ))
            echo "$run $server $config $rps $p50 $p99 $cpu_us $steal_ms" >>"$results"
            echo "  run $run c=$config $server: $(tail -1 "$results" | cut -d' ' -f4-)" >&2
        done
    done
done

echo
echo "Memory (RSS of the server process):"
cat "$memory"

python3 - "$results" "$ceilings" <<'PY'
import statistics, sys
from collections import defaultdict
rows = defaultdict(list)
by_run = {}
for line in open(sys.argv[1]):
    run, server, config, rps, p50, p99, cpu, steal = line.split()
    rows[(server, config)].append((float(rps), float(p50), float(p99), float(cpu), float(steal)))
    by_run[(run, server, config)] = float(rps)
# verify_strict time (ns) measured just before each configuration of each round.
verify = {}
for line in open(sys.argv[2]):
    fields = line.split()
    if len(fields) == 3:
        verify[(fields[0], fields[1])] = float(fields[2])
med = {k: tuple(statistics.median(x[i] for x in v) for i in range(5)) for k, v in rows.items()}
# Ratios are medians of each round's ratio to what was measured in the same round: the
# baseline's req/s, and the verify ceiling (1 / verify_strict time).
ratios = defaultdict(list)
ceiling_share = defaultdict(list)
for (run, server, config), rps in by_run.items():
    base = by_run.get((run, "baseline", config))
    if base:
        ratios[(server, config)].append(rps / base)
    if (run, config) in verify:
        ceiling_share[(server, config)].append(rps * verify[(run, config)] / 1e9)
configs = sorted({c for _, c in med}, key=lambda c: ("tls" in c, c.endswith("close"), int(c.rstrip("closet"))))
servers = list(dict.fromkeys(s for s, _ in med))
ceilings = sorted(1e9 / ns for ns in verify.values())
print("\nmedian of runs; × baseline and % ceiling = medians of each round's ratio to the baseline's"
      " req/s and to the verify ceiling (1 / verify_strict time, criterion, CPU 0) measured in that round"
      + (f"; ceiling {statistics.median(ceilings):,.0f} req/s ({ceilings[0]:,.0f}–{ceilings[-1]:,.0f})" if ceilings else ""))
print("| server | conns | req/s | p50 ms | p99 ms | × baseline (min–max) | CPU µs/req | steal ms | % ceiling |")
print("|---|---|---|---|---|---|---|---|---|")
for c in configs:
    for s in servers:
        if (s, c) not in med: continue
        rps, p50, p99, cpu, steal = med[(s, c)]
        r = ratios.get((s, c))
        ratio = f"{statistics.median(r):.2f} ({min(r):.2f}–{max(r):.2f})" if r else "-"
        share = ceiling_share.get((s, c))
        ceiling = f"{100 * statistics.median(share):.0f}" if share else "-"
        print(f"| {s} | {c} | {rps:,.0f} | {p50:.2f} | {p99:.2f} | {ratio} | {cpu:.0f} | {steal:.0f} | {ceiling} |")
# The cost of metrics: RUNTIME-metrics against RUNTIME, round by round.
cost = defaultdict(list)
for (run, server, config), rps in by_run.items():
    plain = by_run.get((run, server.removesuffix("-metrics"), config))
    if server.endswith("-metrics") and plain:
        cost[(server, config)].append(rps / plain)
if cost:
    print("\nmetrics on / off: req/s (median of each round's ratio; cost = 1 - ratio), and the"
          " server's CPU per request (steadier when other work shares the machine)")
    print("| server | conns | req/s on | req/s off | on / off (min–max) | cost | CPU µs/req on | off | CPU cost |")
    print("|---|---|---|---|---|---|---|---|---|")
    for (s, c), r in sorted(cost.items()):
        on, off = med[(s, c)], med[(s.removesuffix("-metrics"), c)]
        m = statistics.median(r)
        print(f"| {s} | {c} | {on[0]:,.0f} | {off[0]:,.0f} | {m:.3f} ({min(r):.3f}–{max(r):.3f})"
              f" | {100 * (1 - m):.1f} % | {on[3]:.1f} | {off[3]:.1f} | {100 * (on[3] / off[3] - 1):.1f} % |")
PY
