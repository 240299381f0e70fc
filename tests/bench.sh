#!/usr/bin/env bash
# tests/bench.sh - make bench: mtlslb side by side with the peers an operator
# would otherwise pick, in one run on this machine.  The server under test
# runs pinned to CPU 0, the load generator and the backends (nginx) to CPU 1;
# the server's CPU time comes from /proc, so the figures are CPU per unit of
# work, steadier than rates on a shared machine.  ECDSA P-256 PKI, verify
# required, CA and CRL, round-robin over two backends.
#
# BENCH_SECONDS=N per workload (default 5).  Peers are used when installed
# (as root it installs haproxy, stunnel4 and nginx-light with apt-get).
set -u
cd "$(dirname "$0")/.."
ROOT=$PWD
DUR=${BENCH_SECONDS:-5}
W=$(mktemp -d "${TMPDIR:-/tmp}/mtlslb-bench.XXXXXX")
chmod 755 "$W"                  # nginx workers (not root) read www/
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done; wait 2>/dev/null; rm -rf "$W"; }
trap cleanup EXIT
say() { printf '%s\n' "$*" >&2; }

if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    need=""
    for p in haproxy stunnel4 nginx-light; do
        dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q "ok installed" || need="$need $p"
    done
    [ -n "$need" ] && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $need \
        >/dev/null 2>&1
fi
command -v nginx >/dev/null || { say "bench needs nginx for the backends"; exit 1; }

# ---- binaries
make -s BIN="$W/mtlslb-deb" SAN=0 >/dev/null || exit 1
SRC=$("$ROOT/tests/wolfssl-src.sh" "$ROOT/build/src") && make -s BIN="$W/mtlslb-fast" SAN=0 WOLFSSL_SRC="$SRC" \
    >/dev/null 2>&1 || { say "no WOLFSSL_SRC build: $SRC"; SRC=; }
FAST_PREFIX=$(ls -d "$ROOT"/build/wolfssl-*/prefix 2>/dev/null | head -1)
if [ -n "$FAST_PREFIX" ]; then
    cc -O2 -I"$FAST_PREFIX/include" -o "$W/loadgen" tests/loadgen.c "$FAST_PREFIX/lib/libwolfssl.a" -lm
else
    cc -O2 -o "$W/loadgen" tests/loadgen.c -lwolfssl
fi || exit 1
tests/pki.sh "$W/pki" || exit 1
P=$W/pki

# ---- backends: nginx, one worker, on CPU 1
mkdir -p "$W/www"
head -c 64 /dev/zero | tr '\0' x >"$W/www/64"
head -c $((16 << 20)) /dev/urandom >"$W/www/bulk"
cat >"$W/nginx.conf" <<EOF
worker_processes 1;
daemon off;
pid $W/nginx.pid;
error_log $W/nginx.err;
events { worker_connections 8192; }
http {
    access_log off;
    keepalive_requests 1000000;
    server { listen 127.0.0.1:21081; listen 127.0.0.1:21082; root $W/www; }
}
EOF
taskset -c 1 nginx -c "$W/nginx.conf" -e "$W/nginx.err" &
PIDS+=($!)
sleep 0.5

# ---- servers under test (each on 127.0.0.1:21443, CPU 0)
cat "$P/server.crt" "$P/server.key" >"$W/haproxy.pem"
cat >"$W/mtlslb.conf" <<EOF
global
    log-level error
    max-conns 4096
listener bench
    bind 127.0.0.1:21443
    mode http
    cert $P/server.crt $P/server.key
    ca $P/ca.crt
    crl $P/ca.crl
    default-backend b
backend b
    server a 127.0.0.1:21081
    server b 127.0.0.1:21082
EOF
cat >"$W/haproxy.cfg" <<EOF
global
    nbthread 1
    maxconn 4096
defaults
    mode http
    timeout connect 3s
    timeout client 60s
    timeout server 60s
frontend fe
    bind 127.0.0.1:21443 ssl crt $W/haproxy.pem ca-file $P/ca.crt verify required crl-file $P/ca.crl
    default_backend be
backend be
    balance roundrobin
    http-reuse always
    server a 127.0.0.1:21081
    server b 127.0.0.1:21082
EOF
cat >"$W/stunnel.conf" <<EOF
foreground = yes
pid =
[bench]
accept = 127.0.0.1:21443
connect = 127.0.0.1:21081
connect = 127.0.0.1:21082
failover = rr
cert = $P/server.crt
key = $P/server.key
CAfile = $P/ca.crt
CRLfile = $P/ca.crl
verifyChain = yes
requireCert = yes
sslVersionMin = TLSv1.2
EOF

SERVER=
start() {
    case $1 in
    mtlslb-deb) taskset -c 0 "$W/mtlslb-deb" -c "$W/mtlslb.conf" 2>"$W/srv.log" & ;;
    mtlslb-fast) taskset -c 0 "$W/mtlslb-fast" -c "$W/mtlslb.conf" 2>"$W/srv.log" & ;;
    haproxy) taskset -c 0 haproxy -db -f "$W/haproxy.cfg" >"$W/srv.log" 2>&1 & ;;
    stunnel) taskset -c 0 stunnel "$W/stunnel.conf" >"$W/srv.log" 2>&1 & ;;
    esac
    SERVER=$!
    for _ in $(seq 50); do (exec 3<>/dev/tcp/127.0.0.1/21443) 2>/dev/null && return 0; sleep 0.1; done
    return 1
}
stop() { kill "$SERVER" 2>/dev/null; wait "$SERVER" 2>/dev/null; SERVER=; sleep 0.3; }
cpu_ms() { awk '{print ($14 + $15) * 1000 / '"$(getconf CLK_TCK)"'}' "/proc/$SERVER/stat" 2>/dev/null || echo 0; }
rss_kb() { awk '/^VmRSS/ {print $2}' "/proc/$SERVER/status"; }
lg() { taskset -c 1 "$W/loadgen" --connect 127.0.0.1:21443 --sni localhost --cert "$P/client.crt" \
        --key "$P/client.key" --ca "$P/ca.crt" --duration "$DUR" "$@"; }
field() { sed -n "s/.*\b$1=\([0-9.]*\).*/\1/p" <<<"$2"; }

# run NAME: one server through every workload; prints "NAME a b c d e1 e2" lines
declare -A R
run() {
    local name=$1 c0 c1 out n rss0 rss1
    start "$name" || { say "$name does not start: $(tail -2 "$W/srv.log")"; return; }
    R[$name,rss]=$(rss_kb)
    # (a) full handshakes, one request each, 16 clients
    c0=$(cpu_ms); out=$(lg --concurrency 16 --requests-per-conn 1 --path /64); c1=$(cpu_ms)
    n=$(field handshakes "$out")
    R[$name,a]=$(awk -v c=$((${c1%.*} - ${c0%.*})) -v n="$n" 'BEGIN { printf "%.0f", n ? c * 1000 / n : 0 }')
    R[$name,ar]=$(field hs_per_s "$out")
    # (c) keep-alive requests, 64-byte bodies, 32 clients
    c0=$(cpu_ms); out=$(lg --concurrency 32 --requests-per-conn 0 --path /64); c1=$(cpu_ms)
    n=$(field requests "$out")
    R[$name,c]=$(awk -v c=$((${c1%.*} - ${c0%.*})) -v n="$n" 'BEGIN { printf "%.1f", n ? c * 1000 / n : 0 }')
    R[$name,cr]=$(field req_per_s "$out")
    # (d) bulk 16 MiB bodies, 4 clients
    c0=$(cpu_ms); out=$(lg --concurrency 4 --requests-per-conn 0 --path /bulk); c1=$(cpu_ms)
    n=$(field requests "$out")
    R[$name,d]=$(awk -v c=$((${c1%.*} - ${c0%.*})) -v n="$n" 'BEGIN { printf "%.0f", n ? c * 100 / (n * 16.78) : 0 }')
    # (e) KB per idle established mTLS connection, 1,000 held
    rss0=$(rss_kb)
    lg --hold 1000 --duration 4 >/dev/null &
    local h=$!
    sleep 3
    rss1=$(rss_kb)
    wait "$h"
    R[$name,e]=$(( (rss1 - rss0) / 1000 ))
    stop
}

NAMES="mtlslb-deb"
[ -n "$SRC" ] && NAMES="$NAMES mtlslb-fast"
command -v haproxy >/dev/null && NAMES="$NAMES haproxy"
command -v stunnel >/dev/null && NAMES="$NAMES stunnel"
for n in $NAMES; do say "bench: $n"; run "$n"; done

printf '\nmtlslb bench: %s s per workload, server on CPU 0, loadgen + nginx on CPU 1, %s\n' "$DUR" \
    "$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
printf '%-44s' "workload"; for n in $NAMES; do printf '%14s' "$n"; done; printf '\n'
row() {
    printf '%-44s' "$1"; for n in $NAMES; do printf '%14s' "${R[$n,$2]:--}"; done; printf '\n'
}
row "(a) CPU ms / 1,000 full mTLS handshakes" a
row "(a) handshakes/s (16 clients)" ar
row "(c) CPU us / keep-alive request (64 B)" c
row "(c) requests/s (32 clients)" cr
row "(d) CPU ms / 100 MB bulk" d
row "(e) RSS idle, KB" rss
row "(e) KB per idle mTLS connection" e
printf '(b) resumed handshakes: not measured; with client certificates mtlslb does full\n    handshakes (wolfSSL 5.5 tickets lose the certificate, see README)\n'
