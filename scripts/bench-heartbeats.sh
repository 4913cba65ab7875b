#!/bin/bash
# Heartbeat load benchmark (docs/benchmarks.md): one `yagura server` on the
# embedded SQLite store, then on a real PostgreSQL, driven by `yagura sim`
# on the same machine over real TLS, each simulated agent with its own
# certificate and its own kept connection.
#
#   AGENTS="1000 10000" RATE=20000 DURATION=30s ./scripts/bench-heartbeats.sh
set -euo pipefail
cd "$(dirname "$0")/.."

AGENTS="${AGENTS:-1000 10000 19000 50000}"
RATE="${RATE:-20000}"
DURATION="${DURATION:-30s}"
BACKENDS="${BACKENDS:-sqlite postgres}"
GO="${GO:-$(command -v go || echo /usr/local/go/bin/go)}"

"$GO" build -o bin/yagura ./cmd/yagura
BIN="$PWD/bin/yagura"
WORK=$(mktemp -d /tmp/yagura-bench.XXXXXX)
chmod 755 "$WORK"
PGDATA=""
SERVER=""
cleanup() {
	[ -n "$SERVER" ] && kill "$SERVER" 2>/dev/null && wait "$SERVER" 2>/dev/null || true
	if [ -n "$PGDATA" ]; then pgrun pg_ctl -D "$PGDATA" -m immediate stop >/dev/null 2>&1 || true; fi
	rm -rf "$WORK"
}
trap cleanup EXIT

pgbin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n1)
pgrun() {
	if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$pgbin/$1" "${@:2}"; else "$pgbin/$1" "${@:2}"; fi
}

limit=$(ulimit -n)
echo "# $(date -u +%Y-%m-%dT%H:%MZ) $(nproc) cores, $(awk '/MemTotal/{printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -r), open-file limit $limit, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
echo "| store | agents | mode | heartbeats/s | p50 ms | p99 ms | p99.9 ms | manager µs CPU/heartbeat | wire bytes/heartbeat |"
echo "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"

start_server() { # backend
	local data="$WORK/data-$1"
	local args=(server --data-dir "$data" --listen 127.0.0.1:0 --log-level warn --log-format json)
	if [ "$1" = postgres ]; then
		PGDATA="$WORK/pg"
		mkdir -p "$PGDATA" && { [ "$(id -u)" -ne 0 ] || chown postgres "$PGDATA" "$WORK"; }
		pgrun initdb -D "$PGDATA" -U postgres --auth=trust -E UTF8 >/dev/null
		# fsync stays on: this is the production configuration.
		pgrun pg_ctl -D "$PGDATA" -o "-c listen_addresses=127.0.0.1 -p 55432 -k $PGDATA -c max_connections=200" -w -l "$PGDATA/log" start >/dev/null
		args+=(--store-driver postgres)
		export YAGURA_STORE_DSN="postgres://postgres@127.0.0.1:55432/postgres?sslmode=disable"
	fi
	"$BIN" "${args[@]}" 2>"$WORK/server-$1.log" &
	SERVER=$!
	for _ in $(seq 100); do [ -f "$data/admin-credentials.json" ] && break; sleep 0.1; done
	CREDS="$data/admin-credentials.json"
	unset YAGURA_STORE_DSN
}

stop_server() {
	kill -INT "$SERVER"; wait "$SERVER" || true; SERVER=""
	if [ -n "$PGDATA" ]; then pgrun pg_ctl -D "$PGDATA" -m fast stop >/dev/null; PGDATA=""; fi
}

row() { # store agents json
	python3 - "$1" "$2" "$3" <<'PY'
import json, sys
r = json.load(open(sys.argv[3]))
mode = r["mode"] + ("" if r["client"] == "raw" else f", {r['client']} client")
if r.get("target_rate"): mode += f" at {r['target_rate']:.0f}/s"
print(f"| {sys.argv[1]} | {int(sys.argv[2]):,} | {mode} | {r['heartbeats_per_s']:,.0f} | {r['p50_ms']:.2f} | {r['p99_ms']:.1f} | {r['p999_ms']:.1f} | {r.get('manager_cpu_us_per_heartbeat', 0):.1f} | {r['wire_bytes_per_heartbeat']:.0f} |" + (f" errors {r['errors']}: {r.get('first_error','')[:80]}" if r['errors'] else ""))
PY
}

for backend in $BACKENDS; do
	start_server "$backend"
	for n in $AGENTS; do
		# Each connected agent holds a socket here and in the manager.
		if [ $((n + 512)) -gt "$limit" ]; then
			echo "| $backend | $(printf "%'d" "$n") | not run: needs more than the open-file limit of $limit per process (ulimit -n; raising it was refused here) | | | | | | |"
			continue
		fi
		sim=("$BIN" sim --credentials "$CREDS" --agents "$n" --duration "$DURATION" --warmup 5s --state "$WORK/sim" --progress=false -o json)
		"${sim[@]}" --rate "$RATE" >"$WORK/open.json" 2>"$WORK/sim.err" || { echo "| $backend | $n | sim failed: $(tail -1 "$WORK/sim.err") |"; continue; }
		row "$backend" "$n" "$WORK/open.json"
		"${sim[@]}" --concurrency 128 >"$WORK/closed.json" 2>>"$WORK/sim.err"
		row "$backend" "$n" "$WORK/closed.json"
	done
	# The real agent client (net/http), for its wire size and cost.
	"$BIN" sim --credentials "$CREDS" --agents 1000 --rate 2000 --duration 10s --warmup 3s --state "$WORK/sim" --progress=false --client agent -o json >"$WORK/agent.json" 2>>"$WORK/sim.err"
	row "$backend" 1000 "$WORK/agent.json"
	stop_server
done
