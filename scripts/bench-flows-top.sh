#!/bin/bash
# Top-10 over the same flows (docs/benchmarks.md): `yagura flowgen` sends the
# same FLOWS flows (same seed) to nfcapd and to `yagura server` (DuckDB flow
# store); then `nfdump -s srcip/bytes -n 10` over nfcapd's files and
# `yagura ctl flows top --by srcip --order bytes --limit 10` over the store
# are timed, and their answers compared: the same ten addresses and bytes.
#
#   FLOWS=20M ./scripts/bench-flows-top.sh
#
# Environment: FLOWS (20M), NFCAPD_RATE (2M flows/s), YAGURA_RATE (1M
# flows/s: what the embedded store takes without loss here, see
# bench-flows.sh),
# RUNS (3 timed queries each), YAGURA (a binary; default: build bin/yagura),
# WORK (scratch directory).
set -euo pipefail
cd "$(dirname "$0")/.."

FLOWS="${FLOWS:-20M}"
NFCAPD_RATE="${NFCAPD_RATE:-2M}"
YAGURA_RATE="${YAGURA_RATE:-1M}"
RUNS="${RUNS:-3}"
SEED=11
GO="${GO:-$(command -v go || echo /usr/local/go/bin/go)}"
log() { echo "bench-flows-top: $*" >&2; }
for tool in nfcapd nfdump jq; do
	command -v "$tool" >/dev/null 2>&1 || { log "$tool is missing: apt-get install nfdump jq"; exit 1; }
done
if [ -z "${YAGURA:-}" ]; then
	"$GO" build -o bin/yagura ./cmd/yagura
	YAGURA="$PWD/bin/yagura"
fi
WORK="${WORK:-$(mktemp -d /tmp/yagura-bench-top.XXXXXX)}"
PIDS=()
cleanup() {
	for p in "${PIDS[@]}"; do kill -INT "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
	rm -rf "$WORK"
}
trap cleanup EXIT
if [ "$(id -u)" = 0 ] && [ "$(sysctl -n net.core.rmem_max)" -lt 67108864 ]; then
	log "raising net.core.rmem_max to 64 MiB (root) for both collectors' receive buffers"
	sysctl -qw net.core.rmem_max=67108864
fi
ms() { date +%s%3N; }

# nfcapd
mkdir -p "$WORK/nfcapd"
nfcapd -B 67108864 -b 127.0.0.1 -p 29995 -w "$WORK/nfcapd" -t 3600 >"$WORK/nfcapd.log" 2>&1 &
NFPID=$!
PIDS+=("$NFPID")
sleep 1
log "sending $FLOWS flows to nfcapd at $NFCAPD_RATE/s"
"$YAGURA" flowgen --to 127.0.0.1:29995 --protocol v5 --seed "$SEED" --rate "$NFCAPD_RATE" --flows "$FLOWS" >&2
kill -TERM "$NFPID"
wait "$NFPID" 2>/dev/null || true
nf_stored=$(nfdump -R "$WORK/nfcapd" -I | awk '/^Flows:/ {print $2; exit}')
best_nf=""
for _ in $(seq "$RUNS"); do
	t0=$(ms)
	nfdump -R "$WORK/nfcapd" -q -s srcip/bytes -n 10 -o csv >"$WORK/nf.csv" 2>"$WORK/nf.err" ||
		nfdump -R "$WORK/nfcapd" -q -s srcip/bytes -n 10 >"$WORK/nf.csv"
	t=$(($(ms) - t0))
	if [ -z "$best_nf" ] || [ "$t" -lt "$best_nf" ]; then best_nf=$t; fi
done

# Yagura
mkdir -p "$WORK/yagura"
cat >"$WORK/yagura/yagura.yaml" <<YAML
flows:
  enabled: true
  collector:
    netflow: ["127.0.0.1:29996"]
    ipfix: []
    sflow: []
YAML
"$YAGURA" server --config "$WORK/yagura/yagura.yaml" --data-dir "$WORK/yagura/data" --listen 127.0.0.1:0 \
	--log-level warn --log-format json >"$WORK/yagura/server.log" 2>&1 &
PIDS+=("$!")
for _ in $(seq 300); do [ -f "$WORK/yagura/data/admin-credentials.json" ] && break; sleep 0.1; done
sleep 1
CTL=("$YAGURA" ctl --credentials "$WORK/yagura/data/admin-credentials.json")
log "sending $FLOWS flows to Yagura at $YAGURA_RATE/s"
"$YAGURA" flowgen --to 127.0.0.1:29996 --protocol v5 --seed "$SEED" --rate "$YAGURA_RATE" --flows "$FLOWS" >&2
prev=-1
for _ in $(seq 120); do
	y_stored=$("${CTL[@]}" flows stats -o json | jq -r '.store.flows // .flows // 0')
	[ "$y_stored" = "$prev" ] && break
	prev=$y_stored
	sleep 2
done
best_y=""
for _ in $(seq "$RUNS"); do
	t0=$(ms)
	"${CTL[@]}" flows top --by srcip --order bytes --limit 10 --from 1d -o json >"$WORK/y.json"
	t=$(($(ms) - t0))
	if [ -z "$best_y" ] || [ "$t" -lt "$best_y" ]; then best_y=$t; fi
done

echo "Top 10 source addresses by bytes over the same $FLOWS flows (flowgen seed $SEED, NetFlow v5), best of $RUNS:"
echo
echo "| | flows stored | top-10 time |"
echo "| --- | ---: | ---: |"
echo "| nfdump -s srcip/bytes -n 10 (nfcapd files) | $nf_stored | $best_nf ms |"
echo "| yagura ctl flows top --by srcip (DuckDB, through the API) | $y_stored | $best_y ms |"
echo
# Both answers as "address bytes", and whether they agree.
grep -E '^[0-9]{4}-' "$WORK/nf.csv" | head -10 | awk -F, '{print $5, $10}' >"$WORK/nf.top"
jq -r '.rows[] | "\(.keys.srcip // .keys[0]) \(.bytes)"' "$WORK/y.json" >"$WORK/y.top"
echo "nfdump's answer | Yagura's answer:"
paste -d'|' "$WORK/nf.top" "$WORK/y.top"
if cmp -s "$WORK/nf.top" "$WORK/y.top"; then
	echo "Same ten addresses and bytes."
else
	echo "The answers differ (flows lost on the way to one of them?)."
fi
