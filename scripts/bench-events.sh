#!/bin/bash
# Event ingest benchmark (docs/benchmarks.md): one `yagura server` on the
# embedded DuckDB telemetry store, then on a real ClickHouse, fed by
# `yagura sim --events` — simulated agents, each with its own certificate,
# posting batches of events over TLS with the real agent client, acknowledged
# only once stored. The load generator shares the machine's cores.
#
#   AGENTS=50 BATCH=1000 CONCURRENCY=16 DURATION=30s ./scripts/bench-events.sh
set -euo pipefail
cd "$(dirname "$0")/.."

AGENTS="${AGENTS:-50}"
BATCH="${BATCH:-1000}"
CONCURRENCY="${CONCURRENCY:-16}"
DURATION="${DURATION:-30s}"
BACKENDS="${BACKENDS:-duckdb clickhouse}"
GO="${GO:-$(command -v go || echo /usr/local/go/bin/go)}"

"$GO" build -o bin/yagura ./cmd/yagura
BIN="$PWD/bin/yagura"
WORK=$(mktemp -d /tmp/yagura-bench-events.XXXXXX)
SERVER=""
CH=""
cleanup() {
	[ -n "$SERVER" ] && kill "$SERVER" 2>/dev/null && wait "$SERVER" 2>/dev/null || true
	[ -n "$CH" ] && kill "$CH" 2>/dev/null && wait "$CH" 2>/dev/null || true
	rm -rf "$WORK"
}
trap cleanup EXIT

start_clickhouse() {
	local d="$WORK/ch"
	mkdir -p "$d/data" "$d/tmp" "$d/log" "$d/user_files"
	cat >"$d/users.xml" <<XML
<?xml version="1.0"?>
<yandex>
  <profiles><default><max_memory_usage>4000000000</max_memory_usage></default></profiles>
  <users><default><password></password><networks><ip>127.0.0.1</ip></networks><profile>default</profile><quota>default</quota></default></users>
  <quotas><default><interval><duration>3600</duration><queries>0</queries><errors>0</errors><result_rows>0</result_rows><read_rows>0</read_rows><execution_time>0</execution_time></interval></default></quotas>
</yandex>
XML
	cat >"$d/config.xml" <<XML
<?xml version="1.0"?>
<yandex>
  <logger><level>warning</level><log>$d/log/server.log</log><errorlog>$d/log/server.err.log</errorlog><size>10M</size><count>1</count></logger>
  <listen_host>127.0.0.1</listen_host>
  <tcp_port>59000</tcp_port>
  <path>$d/data/</path>
  <tmp_path>$d/tmp/</tmp_path>
  <user_files_path>$d/user_files/</user_files_path>
  <users_config>$d/users.xml</users_config>
  <default_profile>default</default_profile>
  <default_database>default</default_database>
  <timezone>UTC</timezone>
  <mark_cache_size>268435456</mark_cache_size>
  <uncompressed_cache_size>268435456</uncompressed_cache_size>
  <max_concurrent_queries>100</max_concurrent_queries>
</yandex>
XML
	/usr/sbin/clickhouse-server --config-file="$d/config.xml" >"$d/log/stdout" 2>&1 &
	CH=$!
	for _ in $(seq 100); do clickhouse-client --port 59000 -q 'SELECT 1' >/dev/null 2>&1 && return; sleep 0.2; done
	echo "clickhouse-server did not start; see $d/log" >&2
	exit 1
}

echo "# $(date -u +%Y-%m-%dT%H:%MZ) $(nproc) cores, $(awk '/MemTotal/{printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
echo "| telemetry store | agents | events per batch | batches in flight | events/s stored | p50 ms per batch | p99 ms per batch | manager µs CPU per batch |"
echo "| --- | --- | --- | --- | --- | --- | --- | --- |"
for backend in $BACKENDS; do
	data="$WORK/data-$backend"
	cfg="$WORK/$backend.yaml"
	if [ "$backend" = clickhouse ]; then
		start_clickhouse
		printf 'telemetry:\n  backend: clickhouse\n  clickhouse:\n    addr: 127.0.0.1:59000\n    database: yagura_bench\n' >"$cfg"
	else
		printf 'telemetry:\n  backend: duckdb\n' >"$cfg"
	fi
	"$BIN" server --config "$cfg" --data-dir "$data" --listen 127.0.0.1:0 --log-level warn --log-format json 2>"$WORK/server-$backend.log" &
	SERVER=$!
	for _ in $(seq 300); do [ -f "$data/admin-credentials.json" ] && break; sleep 0.1; done
	"$BIN" sim --credentials "$data/admin-credentials.json" --agents "$AGENTS" --events "$BATCH" --concurrency "$CONCURRENCY" \
		--duration "$DURATION" --warmup 5s --state "$WORK/sim-$backend" --progress=false -o json >"$WORK/r.json" 2>"$WORK/sim.err" ||
		{ echo "| $backend | sim failed: $(tail -1 "$WORK/sim.err") |"; }
	python3 - "$backend" "$WORK/r.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[2]))
print(f"| {sys.argv[1]} | {r['agents']} | {r['events_per_batch']} | {r['mode'].split(', ')[1].split()[0]} | {r['events_per_s']:,.0f} | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} | {r.get('manager_cpu_us_per_heartbeat', 0):,.0f} |" + (f" errors {r['errors']}: {r.get('first_error','')[:80]}" if r['errors'] else ""))
PY
	kill -INT "$SERVER"; wait "$SERVER" || true; SERVER=""
	if [ -n "$CH" ]; then kill "$CH"; wait "$CH" 2>/dev/null || true; CH=""; fi
done
