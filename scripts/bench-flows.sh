#!/bin/bash
# Flow collector benchmark (docs/benchmarks.md), side by side in one run:
# nfcapd (nfdump's collector, the classic C baseline) and Yagura's collector
# each receive the same paced NetFlow v5, v9 and IPFIX streams from
# `yagura flowgen` at increasing rates on loopback, with a 64 MiB socket
# buffer; what each stored is counted afterwards, and loss = 1 - stored/sent.
# The generator shares the machine's cores with the collector, for both.
# Yagura runs as `yagura server` with its embedded DuckDB flow store, and a
# flow counts as stored once `yagura ctl flows top` counts it (queryable).
#
#   PROTOCOLS="v5 v9 ipfix" RATES="1M 1500k 2M 3M" STEP=10s ./scripts/bench-flows.sh
#
# Environment:
#   PROTOCOLS   protocols to run (v5 v9 ipfix)
#   RATES       offered rates in flows/s, in increasing order (500k 1M 1500k 2M 3M)
#   STEP        how long each rate is sent (10s)
#   COLLECTORS  which collectors to run (nfcapd yagura)
#   WORKERS     flowgen workers (1); EXPORTERS flowgen exporters (default: WORKERS)
#   BUFFER      receive buffer for both collectors, bytes (67108864)
#   YAGURA      a yagura binary to use instead of building bin/yagura
#   WORK        scratch directory (a new one under /tmp); flow files are
#               deleted after each step, but a 4M flows/s step of 10 s
#               writes about 4 GB first
#
# Output: a Markdown table on standard output, one row per protocol and
# rate, then the highest rate each collector sustained with < 0.1 % loss.
# Progress and diagnostics go to standard error.
set -euo pipefail
cd "$(dirname "$0")/.."

PROTOCOLS="${PROTOCOLS:-v5 v9 ipfix}"
RATES="${RATES:-500k 1M 1500k 2M 3M}"
STEP="${STEP:-10s}"
COLLECTORS="${COLLECTORS:-nfcapd yagura}"
WORKERS="${WORKERS:-1}"
EXPORTERS="${EXPORTERS:-$WORKERS}"
BUFFER="${BUFFER:-67108864}"
GO="${GO:-$(command -v go || echo /usr/local/go/bin/go)}"
MAX_LOSS="0.001" # "sustained" means less than 0.1 % loss

log() { echo "bench-flows: $*" >&2; }
die() {
	log "$*"
	exit 1
}

for tool in nfcapd nfdump ss jq; do
	command -v "$tool" >/dev/null 2>&1 || die "$tool is missing: apt-get install nfdump iproute2 jq (make test-deps)"
done

if [ -z "${YAGURA:-}" ]; then
	"$GO" build -o bin/yagura ./cmd/yagura
	YAGURA="$PWD/bin/yagura"
fi
WORK="${WORK:-$(mktemp -d /tmp/yagura-bench-flows.XXXXXX)}"
mkdir -p "$WORK"
COLLECTOR_PID=""
cleanup() {
	if [ -n "$COLLECTOR_PID" ]; then
		kill "$COLLECTOR_PID" 2>/dev/null || true
		wait "$COLLECTOR_PID" 2>/dev/null || true
	fi
	yagura_stop || true
	rm -rf "$WORK"
}
trap cleanup EXIT

# The kernel caps SO_RCVBUF at net.core.rmem_max (nfcapd falls back to
# SO_RCVBUFFORCE as root, Yagura too); raise it so both get the same buffer.
rmem_max=$(sysctl -n net.core.rmem_max)
if [ "$rmem_max" -lt "$BUFFER" ]; then
	if [ "$(id -u)" = 0 ]; then
		sysctl -q -w net.core.rmem_max="$BUFFER"
		log "raised net.core.rmem_max from $rmem_max to $BUFFER (left raised; it is only a ceiling)"
	else
		log "warning: net.core.rmem_max is $rmem_max, below the $BUFFER-byte buffer: run as root or sysctl -w net.core.rmem_max=$BUFFER"
	fi
fi

# free_udp_port prints a loopback UDP port nothing listens on.
free_udp_port() {
	local port
	while :; do
		port=$((20000 + RANDOM % 30000))
		if [ -z "$(ss -Hlun "sport = :$port")" ]; then
			echo "$port"
			return
		fi
	done
}

# wait_listening PORT: until something listens on UDP PORT (10 s).
wait_listening() {
	local i
	for i in $(seq 100); do
		[ -n "$(ss -Hlun "sport = :$1")" ] && return 0
		sleep 0.1
	done
	return 1
}

# wait_drained PORT: until the socket on UDP PORT has no queued datagrams
# (its reader caught up) or 30 s passed.
wait_drained() {
	local i q
	for i in $(seq 300); do
		q=$(ss -Hlun "sport = :$1" | awk '{print $2; exit}')
		[ "${q:-0}" = 0 ] && return 0
		sleep 0.1
	done
	log "warning: the collector on port $1 still had $q bytes queued after 30 s"
}

# flowgen PROTOCOL RATE PORT: send one step's stream; prints flowgen's JSON.
# The seed is the same for every collector, so each gets the same flows.
# --catch-up 50ms: after the generator was not scheduled for a while it may
# send up to 50 ms of flows late (at 4M flows/s about 10 MB of datagrams,
# well within the collectors' buffers); longer stalls lower the achieved
# rate, and a step whose achieved rate is more than 1 % short does not count.
flowgen() {
	"$YAGURA" flowgen --to "127.0.0.1:$3" --protocol "$1" --rate "$2" --duration "$STEP" \
		--workers "$WORKERS" --exporters "$EXPORTERS" --seed 7 --catch-up 50ms --json
}

# ---------------------------------------------------------------- nfcapd --

# nfcapd_step PROTOCOL RATE: sets SENT, STORED and ACHIEVED.
nfcapd_step() {
	local dir="$WORK/nfcapd" port out
	rm -rf "$dir"
	mkdir -p "$dir"
	port=$(free_udp_port)
	# -t 3600: one file per step (rotation would only add files to read).
	nfcapd -w "$dir" -b 127.0.0.1 -p "$port" -B "$BUFFER" -t 3600 >"$WORK/nfcapd.log" 2>&1 &
	COLLECTOR_PID=$!
	wait_listening "$port" || die "nfcapd did not listen on 127.0.0.1:$port: $(cat "$WORK/nfcapd.log")"
	out=$(flowgen "$1" "$2" "$port")
	wait_drained "$port"
	# SIGTERM makes nfcapd flush and close its file.
	kill -TERM "$COLLECTOR_PID"
	wait "$COLLECTOR_PID" || true
	COLLECTOR_PID=""
	STORED=$(nfdump -R "$dir" -I | awk '$1 == "Flows:" {print $2; exit}')
	STORED=${STORED:-0}
	SENT=$(jq -r '.sent.flows' <<<"$out")
	ACHIEVED=$(jq -r '.flows_per_second | floor' <<<"$out")
	rm -rf "$dir"
}

# ---------------------------------------------------------------- Yagura --
#
# A `yagura server` whose collector listens on 127.0.0.1:PORT with a
# BUFFER-byte receive buffer and stores flows in the embedded DuckDB flow
# store; stored flows are counted through the API (`yagura ctl flows top`),
# so they are queryable, not just received.
#
#   yagura_start DIR PORT   start it with its data under DIR; return once its
#                           collector listens (1 if it does not).
#   yagura_count DIR SENT   print how many flows are stored, once SENT are or
#                           the count has stopped growing.
#   yagura_stop             stop it (no-op when none runs).

YAGURA_PID=""
yagura_start() {
	cat >"$1/yagura.yaml" <<-YAML
		flows:
		  enabled: true
		  collector:
		    netflow: ["127.0.0.1:$2"]
		    ipfix: []
		    sflow: []
		    read_buffer: $BUFFER
	YAML
	"$YAGURA" server --config "$1/yagura.yaml" --data-dir "$1/data" --listen 127.0.0.1:0 \
		--log-level warn --log-format json >"$1/server.log" 2>&1 &
	YAGURA_PID=$!
	local i
	for i in $(seq 300); do
		[ -f "$1/data/admin-credentials.json" ] && wait_listening "$2" && return 0
		kill -0 "$YAGURA_PID" 2>/dev/null || break
		sleep 0.1
	done
	log "yagura server did not start collecting on 127.0.0.1:$2: $(tail -3 "$1/server.log")"
	yagura_stop
	return 1
}

yagura_stored() {
	"$YAGURA" ctl --credentials "$1/data/admin-credentials.json" flows top --by proto --order flows --from 2h -o json |
		jq -r '.total.flows // 0'
}

yagura_count() {
	local n prev=-1 same=0 i
	for i in $(seq 300); do
		n=$(yagura_stored "$1" || echo 0)
		[ "$n" -ge "$2" ] && break
		# The collector flushes every second: three equal counts a second
		# apart mean it is done.
		if [ "$n" = "$prev" ]; then same=$((same + 1)); else same=0; fi
		[ "$same" -ge 3 ] && break
		prev=$n
		sleep 1
	done
	echo "$n"
}

yagura_stop() {
	if [ -n "$YAGURA_PID" ]; then
		kill -INT "$YAGURA_PID" 2>/dev/null || true
		wait "$YAGURA_PID" 2>/dev/null || true
		YAGURA_PID=""
	fi
}

# yagura_step PROTOCOL RATE: sets SENT, STORED and ACHIEVED, or returns 1
# when the server could not be started.
yagura_step() {
	local dir="$WORK/yagura" port out
	rm -rf "$dir"
	mkdir -p "$dir"
	port=$(free_udp_port)
	yagura_start "$dir" "$port" || return 1
	out=$(flowgen "$1" "$2" "$port")
	SENT=$(jq -r '.sent.flows' <<<"$out")
	wait_drained "$port"
	STORED=$(yagura_count "$dir" "$SENT")
	STORED=${STORED:-0}
	yagura_stop
	ACHIEVED=$(jq -r '.flows_per_second | floor' <<<"$out")
	rm -rf "$dir"
}

# ----------------------------------------------------------------- table --

# loss SENT STORED: prints the loss as a fraction with 6 decimals.
loss() {
	awk -v s="$1" -v k="$2" 'BEGIN { l = (s > 0) ? 1 - k / s : 0; if (l < 0) l = 0; printf "%.6f", l }'
}
pct() { awk -v l="$1" 'BEGIN { printf "%.3f %%", 100 * l }'; }
ok() { awk -v l="$1" -v m="$MAX_LOSS" 'BEGIN { exit !(l < m) }'; }
rate_num() { awk -v r="$1" 'BEGIN { m = 1; u = substr(r, length(r)); if (u == "k") m = 1e3; else if (u == "M") m = 1e6; else if (u == "G") m = 1e9; if (m > 1) r = substr(r, 1, length(r) - 1); printf "%d", r * m }'; }
group() { sed ':a;s/\B[0-9]\{3\}\>/,&/;ta' <<<"$1"; }
# kept RATE ACHIEVED: whether the generator achieved the offered rate (within
# 1 %): a step it could not pace says nothing about the collector at that rate.
kept() { awk -v r="$(rate_num "$1")" -v a="$2" 'BEGIN { exit !(a >= 0.99 * r) }'; }

# A header of plain text lines (docs/benchmarks.md keeps them out of the
# document's headings).
echo "Flow collector benchmark, $(date -u +%Y-%m-%dT%H:%MZ): $(nproc) cores ($(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo)), kernel $(uname -r), load average $(cut -d' ' -f1-3 /proc/loadavg) at start"
echo "$(nfcapd -V 2>&1 | head -1); yagura $("$YAGURA" version | awk '{print $2}'); paced by yagura flowgen (seed 7, $WORKERS worker(s), $EXPORTERS exporter(s)), $STEP per step on loopback, $BUFFER-byte receive buffers; loss = 1 - stored/sent"
echo
echo "| protocol | offered flows/s | flows sent | nfcapd: achieved flows/s | stored | loss | Yagura: achieved flows/s | stored | loss |"
echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"

declare -A best
yagura_ran=no
for proto in $PROTOCOLS; do
	best["nfcapd $proto"]=0
	best["yagura $proto"]=0
	for rate in $RATES; do
		sent=0
		behind=no
		nf="| n/a | n/a | n/a"
		ya="| n/a | n/a | n/a"
		if [[ " $COLLECTORS " == *" nfcapd "* ]]; then
			log "$proto at $rate flows/s → nfcapd"
			nfcapd_step "$proto" "$rate"
			l=$(loss "$SENT" "$STORED")
			ok "$l" && kept "$rate" "$ACHIEVED" && best["nfcapd $proto"]=$(rate_num "$rate")
			kept "$rate" "$ACHIEVED" || behind=yes
			sent=$SENT
			nf="| $(group "$ACHIEVED") | $(group "$STORED") | $(pct "$l")"
		fi
		if [[ " $COLLECTORS " == *" yagura "* ]]; then
			log "$proto at $rate flows/s → Yagura"
			if yagura_step "$proto" "$rate"; then
				yagura_ran=yes
				l=$(loss "$SENT" "$STORED")
				ok "$l" && kept "$rate" "$ACHIEVED" && best["yagura $proto"]=$(rate_num "$rate")
				kept "$rate" "$ACHIEVED" || behind=yes
				sent=$SENT
				ya="| $(group "$ACHIEVED") | $(group "$STORED") | $(pct "$l")"
			elif [ "$yagura_ran" = no ]; then
				log "Yagura's server did not start: its columns say n/a"
				yagura_ran=never
			fi
		fi
		echo "| $proto | $(group "$(rate_num "$rate")") | $(group "$sent") $nf $ya |"
		[ "$behind" = yes ] && log "the generator fell more than 1 % short of $rate flows/s: this rate does not count (try WORKERS=2, or a quieter machine)"
	done
done

echo
echo "Highest offered rate stored with < 0.1 % loss, and paced within 1 % (of the rates tried; 0: none). Load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)."
echo
echo "| protocol | nfcapd flows/s | Yagura flows/s | Yagura / nfcapd |"
echo "| --- | ---: | ---: | ---: |"
for proto in $PROTOCOLS; do
	n=${best["nfcapd $proto"]}
	y=${best["yagura $proto"]}
	ratio=$(awk -v n="$n" -v y="$y" 'BEGIN { if (n > 0) printf "%.2f", y / n; else print "n/a" }')
	ycol=$(group "$y")
	if [ "$yagura_ran" != yes ]; then
		ycol="n/a"
		ratio="n/a"
	fi
	echo "| $proto | $(group "$n") | $ycol | $ratio |"
done
