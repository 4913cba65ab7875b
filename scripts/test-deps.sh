#!/bin/sh
# Installs what `make test` needs when it is missing, from Debian's packages:
#   PostgreSQL 15 (the state store conformance suite runs against a real one),
#   gcc and libc headers (the race detector needs cgo),
#   python3 (make bench formats its tables with it),
#   tinyproxy (the agent is tested through a real authenticating proxy),
#   nftables, iproute2, conntrack and procps (the firewall is tested on real
#   packets in network namespaces; nft lists tables in the tests),
#   ClickHouse, rsyslog and postfix (the telemetry store and notifications
#   are tested on the real engines and daemons),
#   softflowd, nfdump and pmacct (real flow exporters, and nfcapd, the
#   collector Yagura's is compared with), curl and jq (the Flowmon API
#   examples run as written), chromium and a Japanese font (the web console
#   is tested in a real, headless browser, and its screenshots must show
#   Japanese)
set -eu

need=""
pg_ok=false
for d in /usr/lib/postgresql/*/bin; do
	if [ -x "$d/initdb" ] && [ -x "$d/pg_ctl" ]; then pg_ok=true; fi
done
$pg_ok || need="$need postgresql"
command -v runuser >/dev/null 2>&1 || need="$need util-linux"
command -v gcc >/dev/null 2>&1 || need="$need gcc"
[ -e /usr/include/stdlib.h ] || need="$need libc6-dev"
command -v python3 >/dev/null 2>&1 || need="$need python3"
command -v tinyproxy >/dev/null 2>&1 || need="$need tinyproxy"
command -v nft >/dev/null 2>&1 || need="$need nftables"
command -v ip >/dev/null 2>&1 || need="$need iproute2"
command -v conntrack >/dev/null 2>&1 || need="$need conntrack"
command -v timeout >/dev/null 2>&1 || need="$need coreutils"
[ -x /usr/sbin/clickhouse-server ] || need="$need clickhouse-server"
command -v clickhouse-client >/dev/null 2>&1 || need="$need clickhouse-client"
[ -x /usr/sbin/rsyslogd ] || need="$need rsyslog"
[ -e /usr/lib/x86_64-linux-gnu/rsyslog/lmnsd_gtls.so ] || [ -e /usr/lib/rsyslog/lmnsd_gtls.so ] || need="$need rsyslog-gnutls"
[ -x /usr/sbin/postfix ] || need="$need postfix"
command -v swaks >/dev/null 2>&1 || need="$need swaks"
command -v softflowd >/dev/null 2>&1 || need="$need softflowd"
command -v nfcapd >/dev/null 2>&1 || need="$need nfdump"
command -v pmacctd >/dev/null 2>&1 || need="$need pmacct"
command -v curl >/dev/null 2>&1 || need="$need curl"
command -v jq >/dev/null 2>&1 || need="$need jq"
[ -x /usr/bin/chromium ] || need="$need chromium"
[ -e /usr/share/fonts/opentype/ipafont-gothic/ipag.ttf ] || need="$need fonts-ipafont-gothic"

if [ -z "$need" ]; then
	exit 0
fi
echo "make test: installing$need (Debian packages)"
if [ "$(id -u)" -eq 0 ]; then
	SUDO=""
elif command -v sudo >/dev/null 2>&1; then
	SUDO="sudo"
else
	echo "make test needs$need; run as root or install them with apt-get" >&2
	exit 1
fi
export DEBIAN_FRONTEND=noninteractive
# postfix asks how mail is delivered: only locally, for the tests' MTA.
printf 'postfix postfix/main_mailer_type select Local only\npostfix postfix/mailname string yagura.test\n' | $SUDO debconf-set-selections 2>/dev/null || true
$SUDO apt-get update -qq
# shellcheck disable=SC2086
$SUDO apt-get install -y -qq --no-install-recommends $need >/dev/null
