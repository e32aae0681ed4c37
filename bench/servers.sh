# shellcheck shell=bash
# The scratch directory, the cleanup of everything started (pids) and starting and
# stopping the servers under test; sourced by load.sh and attack.sh, which set YUYO,
# BASELINE and PORT (and TLS_CERT, TLS_KEY for HTTPS).

# The key `yuyo serve` and the baseline check signatures with by default (the fixtures').
DEMO_PUBLIC_KEY=ea4a6c63e29c520abef5507b132ec5f9954776aebebe7b92421eea691446d22c

work=$(mktemp -d)
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT INT TERM

start_server() { # $1 = server name, [$2 = https: with TLS_CERT and TLS_KEY]; echoes the pid
    local tls=()
    case "$1:${2:-http}" in
        baseline:https) tls=("$DEMO_PUBLIC_KEY" "$TLS_CERT" "$TLS_KEY") ;;
        *:https) tls=(--tls-cert "$TLS_CERT" --tls-key "$TLS_KEY") ;;
    esac
    # RUNTIME-metrics: the same server with the Prometheus exporter on (see scrape_metrics).
    local runtime=${1%-metrics} metrics=()
    [ "$runtime" != "$1" ] && metrics=(--metrics 127.0.0.1:0)
    case "$1" in
        baseline) taskset -c 0 "$BASELINE" "127.0.0.1:$PORT" "${tls[@]}" >"$work/server.log" 2>&1 & ;;
        *) RUST_LOG=warn taskset -c 0 "$YUYO" serve --runtime "$runtime" --bind "127.0.0.1:$PORT" "${tls[@]}" "${metrics[@]}" >"$work/server.log" 2>&1 & ;;
    esac
    local pid=$!
    for _ in $(seq 100); do
        if grep -q "listening on" "$work/server.log" 2>/dev/null; then echo "$pid"; return; fi
        sleep 0.1
    done
    echo "server $1 did not start:" >&2; cat "$work/server.log" >&2; exit 1
}

scrape_metrics() { # the /metrics text of the server started last (with --metrics)
    # In bash itself, from wrk's core: a Prometheus server scrapes from elsewhere, so the
    # only cost measured is the server's rendering, not a scraper process on its core.
    local url addr line
    url=$(awk '/^metrics: / {print $2}' "$work/server.log")
    [ -n "$url" ] || return 1
    taskset -cp 1 "$BASHPID" >/dev/null
    addr=${url#http://}
    addr=${addr%%/*}
    exec 3<>"/dev/tcp/${addr%:*}/${addr##*:}" || return 1
    printf 'GET /metrics HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n' "$addr" >&3
    while IFS= read -r -t 10 line <&3; do
        printf '%s\n' "${line%$'\r'}"
    done
    exec 3<&-
}

stop_server() { # $1 = pid; returns once it is gone (it is not this shell's child)
    kill "$1" 2>/dev/null || true
    for _ in $(seq 100); do
        kill -0 "$1" 2>/dev/null || return 0
        sleep 0.1
    done
    kill -9 "$1" 2>/dev/null || true
    sleep 0.2
}
