#!/usr/bin/env bash
# tests/bench.sh - make bench: mtlslb side by side with the peers an operator
# would otherwise pick, in one run on this machine.  The server under test
# runs pinned to CPU 0, the load generator and the backends (nginx) to CPU 1;
# the server's CPU time comes from /proc, so the figures are CPU per unit of
# work, steadier than rates on a shared machine.  ECDSA P-256 PKI (and one
# RSA-2048 row), verify required, CA and CRL, round-robin over two backends.
#
# Servers: mtlslb with Debian's wolfSSL (mtlslb-deb) and with the fast static
# one built from source (mtlslb-fast), the latter again with `workers 2`
# (fast-w2: every process on CPU 0, CPU and RSS summed over the first process
# and its workers), haproxy in http mode and in tcp mode (haproxy-tcp),
# stunnel.  Workloads: (a) full handshakes, (b) resumed
# handshakes (TLS 1.3 tickets), (c) keep-alive requests (as fast as they go, and
# paced: the same rate for every server), (d) bulk, (e) idle
# connections' memory, (g) keep-alive requests beside 1,000 idle connections.
# Below the table: in-memory handshake ceilings (tests/hsloop.c) and a plain
# HTTP keep-alive ceiling straight to nginx (loadgen --plain); then the size
# of the two mtlslb binaries (stripped) and of the shared libraries they need.
#
# BENCH_SECONDS=N per workload (default 5; (g) assumes N <= 20, as the idle
# connections must outlive its two runs within the 60 s idle timeouts);
# BENCH_RATE, BENCH_RATE4 the paced (c) rows' requests/s (15000, 5000).  Peers are used
# when installed (as root it installs haproxy, stunnel4 and nginx-light).
set -u
cd "$(dirname "$0")/.."
ROOT=$PWD
export LC_ALL=C
DUR=${BENCH_SECONDS:-5}
RATE=${BENCH_RATE:-15000} RATE4=${BENCH_RATE4:-5000}     # (c) paced: 32 and 4 clients
W=$(mktemp -d "${TMPDIR:-/tmp}/mtlslb-bench.XXXXXX")
chmod 755 "$W"                  # nginx workers (not root) read www/
PIDS=()                         # nginx
SERVER= HOLD=                   # the server under test, a holding loadgen, while they run
cleanup() {
    for p in "${PIDS[@]}" $SERVER $HOLD; do kill "$p" 2>/dev/null; done
    wait 2>/dev/null; rm -rf "$W"
}
trap cleanup EXIT
say() { printf '%s\n' "$*" >&2; }
# 1,000 held + 32 active connections, each one or two descriptors (the soft
# limit: haproxy raises its own as far as the hard one for its maxconn).
[ "$(ulimit -n)" != unlimited ] && [ "$(ulimit -n)" -lt 8192 ] && { ulimit -Sn 8192 2>/dev/null ||
    say "bench: ulimit -n is $(ulimit -n); (e) and (g) may fall short"; }

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
# The size-first build: static, musl, wolfSSL -Os with SP C for P-256/RSA-2048.
SMALLP=
if [ -n "$SRC" ] && command -v musl-gcc >/dev/null; then
    make -s static BIN="$W/mtlslb-small" SAN=0 SMALL=1 CC=musl-gcc WOLFSSL_SRC="$SRC" >/dev/null 2>&1 &&
        SMALLP=$ROOT/build/wolfssl-$(musl-gcc -dumpmachine)-musl-small/prefix
    [ -n "$SMALLP" ] && musl-gcc -O2 -static -I"$SMALLP/include" -o "$W/hsloop-small" tests/hsloop.c \
        "$SMALLP/lib/libwolfssl.a" -lm || say "no SMALL=1 build (musl-gcc)"
fi
# The library mtlslb-fast links (the Makefile's build/wolfssl-TRIPLET), else any.
FAST_PREFIX=$ROOT/build/wolfssl-$(cc -dumpmachine 2>/dev/null || echo native)/prefix
[ -f "$FAST_PREFIX/lib/libwolfssl.a" ] || FAST_PREFIX=$(ls -d "$ROOT"/build/wolfssl-*/prefix 2>/dev/null | head -1)
if [ -n "$FAST_PREFIX" ]; then
    cc -O2 -I"$FAST_PREFIX/include" -o "$W/loadgen" tests/loadgen.c "$FAST_PREFIX/lib/libwolfssl.a" -lm &&
    cc -O2 -I"$FAST_PREFIX/include" -o "$W/hsloop-fast" tests/hsloop.c "$FAST_PREFIX/lib/libwolfssl.a" -lm
else
    cc -O2 -o "$W/loadgen" tests/loadgen.c -lwolfssl
fi || exit 1
cc -O2 -o "$W/hsloop-deb" tests/hsloop.c -lwolfssl || exit 1
tests/pki.sh "$W/pki" || exit 1
PKI_KEY=rsa2048 tests/pki.sh "$W/pki-rsa" || exit 1
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
worker_rlimit_nofile 8192;
http {
    access_log off;
    keepalive_requests 1000000;
    server { listen 127.0.0.1:21081; listen 127.0.0.1:21082; root $W/www; }
}
EOF
taskset -c 1 nginx -c "$W/nginx.conf" -e "$W/nginx.err" &
NGINX=$!
PIDS+=("$NGINX")
sleep 0.5
# The worker (a child of the master started above): its CPU counts as CPU 1's.
NGINX_W=$(cat "/proc/$NGINX/task/$NGINX/children" 2>/dev/null)

# haproxy in http mode does what mtlslb's http mode does to every request
# (SPEC 5): each of these headers replaces any copy the client sent.
HAPROXY_HEADERS='    http-request set-header X-Forwarded-For %[src]
    http-request set-header X-Forwarded-Proto https
    http-request set-header X-Real-IP %[src]
    http-request set-header X-Client-Verify SUCCESS if { ssl_c_used }
    http-request set-header X-Client-Verify NONE unless { ssl_c_used }
    http-request set-header X-Client-Subject %[ssl_c_s_dn(,0,rfc2253)] if { ssl_c_used }
    http-request set-header X-Client-Issuer %[ssl_c_i_dn(,0,rfc2253)] if { ssl_c_used }
    http-request set-header X-Client-Serial %[ssl_c_serial,hex] if { ssl_c_used }
    http-request set-header X-Client-Fingerprint %[ssl_c_der,sha2(256),hex] if { ssl_c_used }
    http-request set-header X-Client-Not-After %[ssl_c_notafter] if { ssl_c_used }'

# ---- servers under test (each on 127.0.0.1:21443, CPU 0); one set of
# configurations per PKI: $W/ec (P-256, every workload) and $W/rsa (RSA-2048)
mkconfs() {
    local C=$1 P=$2 mode
    mkdir -p "$C"
    cat "$P/server.crt" "$P/server.key" >"$C/haproxy.pem"
    # timeout request 60s: idle new connections ((e), (g)) live 60 s, as
    # haproxy's (timeout client; its http-request timeout follows it).
    cat >"$C/mtlslb.conf" <<EOF
global
    log-level error
    max-conns 4096
    timeout request 60s
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
    sed 's/^global$/global\n    workers 2/' "$C/mtlslb.conf" >"$C/mtlslb-w2.conf"
    sed 's/^    mode http$/    mode tcp/' "$C/mtlslb.conf" >"$C/mtlslb-tcp.conf"
    for mode in http tcp; do
        cat >"$C/haproxy-$mode.cfg" <<EOF
global
    nbthread 1
    maxconn 4096
defaults
    mode $mode
    timeout connect 3s
    timeout client 60s
    timeout server 60s
frontend fe
    bind 127.0.0.1:21443 ssl crt $C/haproxy.pem ca-file $P/ca.crt verify required crl-file $P/ca.crl
$([ $mode = http ] && echo "$HAPROXY_HEADERS")
    default_backend be
backend be
    balance roundrobin
$([ $mode = http ] && echo "    http-reuse always")
    server a 127.0.0.1:21081
    server b 127.0.0.1:21082
EOF
    done
    cat >"$C/stunnel.conf" <<EOF
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
}
mkconfs "$W/ec" "$W/pki"
mkconfs "$W/rsa" "$W/pki-rsa"

# start NAME CONFDIR
start() {
    local C=$2
    case $1 in
    mtlslb-deb) taskset -c 0 "$W/mtlslb-deb" -c "$C/mtlslb.conf" 2>"$W/srv.log" & ;;
    mtlslb-fast) taskset -c 0 "$W/mtlslb-fast" -c "$C/mtlslb.conf" 2>"$W/srv.log" & ;;
    mtlslb-small) taskset -c 0 "$W/mtlslb-small" -c "$C/mtlslb.conf" 2>"$W/srv.log" & ;;
    fast-static) taskset -c 0 "$W/mtlslb-fast-static" -c "$C/mtlslb.conf" 2>"$W/srv.log" & ;;
    # the workers inherit the first process's CPU affinity (CPU 0)
    fast-w2) taskset -c 0 "$W/mtlslb-fast" -c "$C/mtlslb-w2.conf" 2>"$W/srv.log" & ;;
    fast-tcp) taskset -c 0 "$W/mtlslb-fast" -c "$C/mtlslb-tcp.conf" 2>"$W/srv.log" & ;;
    haproxy) taskset -c 0 haproxy -db -f "$C/haproxy-http.cfg" >"$W/srv.log" 2>&1 & ;;
    haproxy-tcp) taskset -c 0 haproxy -db -f "$C/haproxy-tcp.cfg" >"$W/srv.log" 2>&1 & ;;
    stunnel) taskset -c 0 stunnel "$C/stunnel.conf" >"$W/srv.log" 2>&1 & ;;
    esac
    SERVER=$!
    # ready: every process that serves listens (fast-w2: both workers bound)
    local want=1
    [ "$1" = fast-w2 ] && want=2
    for _ in $(seq 50); do
        [ "$(ss -Hltn '( sport = :21443 )' 2>/dev/null | wc -l)" -ge "$want" ] &&
            (exec 3<>/dev/tcp/127.0.0.1/21443) 2>/dev/null && return 0
        sleep 0.1
    done
    return 1
}
stop() { kill "$SERVER" 2>/dev/null; wait "$SERVER" 2>/dev/null; SERVER=; sleep 0.3; }
# The server's processes: the one started and its children (fast-w2: the
# first process and its workers; the others have none).
procs() { echo "$SERVER" $(pgrep -P "$SERVER" | sort -n); }
# Server CPU ms: utime + stime (fields 14, 15) summed over procs, plus the
# first process's cutime + cstime (16, 17) so a worker that died and was
# reaped still counts (lgrun marks such runs).  No children: as before.
cpu_ms() {
    local p t=0 f
    for p in $(procs); do
        f=15; [ "$p" = "$SERVER" ] && f=17
        t=$(awk -v t="$t" -v f="$f" '{ for (i = 14; i <= f; i++) t += $i; print t }' "/proc/$p/stat" \
            2>/dev/null || echo "$t")
    done
    awk -v t="$t" 'BEGIN { print t * 1000 / '"$(getconf CLK_TCK)"' }'
}
# RSS KB summed over procs (shared pages counted in each process); anon_kb:
# only the private memory (RssAnon: heap, stacks, data), no shared library
# or executable pages
rss_kb() { local p; for p in $(procs); do cat "/proc/$p/status" 2>/dev/null; done |
    awk '/^VmRSS/ { t += $2 } END { print t + 0 }'; }
anon_kb() { local p; for p in $(procs); do cat "/proc/$p/status" 2>/dev/null; done |
    awk '/^RssAnon/ { t += $2 } END { print t + 0 }'; }
ng_ms() {
    local p t=0
    for p in $NGINX_W; do
        t=$(awk -v t="$t" '{print t + ($14 + $15) * 1000 / '"$(getconf CLK_TCK)"'}' "/proc/$p/stat" 2>/dev/null ||
            echo "$t")
    done
    echo "$t"
}
# Client-side mTLS connections to the server that are established now.
est() { ss -Htn state established '( dport = :21443 )' 2>/dev/null | wc -l; }
LGP=$P
lg() { taskset -c 1 "$W/loadgen" --connect 127.0.0.1:21443 --sni localhost --cert "$LGP/client.crt" \
        --key "$LGP/client.key" --ca "$LGP/ca.crt" --duration "$DUR" "$@"; }
# lgx: lg for the background, the loadgen in place of the subshell, so that
# $! is the loadgen itself (a killed subshell would leave it running).
lgx() { exec taskset -c 1 "$W/loadgen" --connect 127.0.0.1:21443 --sni localhost --cert "$LGP/client.crt" \
        --key "$LGP/client.key" --ca "$LGP/ca.crt" --duration "$DUR" "$@"; }
field() { sed -n "s/.*\b$1=\([0-9.]*\).*/\1/p" <<<"$2"; }

# lgrun ARGS: one loadgen run against the server.  Sets OUT (its line), DCPU
# (server CPU ms) and SAT ("*" when CPU 1 - this loadgen plus nginx - was busy
# for >= 95 % of the run's wall time: the client side, not the server, set
# the pace).  The loadgen's own CPU comes from `times` in its subshell.
# The server's processes must be the same before and after (a worker
# restarted in between: "^" after the figure, RESPAWN).
OUT= DCPU=0 SAT=
lgrun() {
    local c0 c1 n0 n1 t0 t1 res p0
    p0=$(procs); c0=$(cpu_ms); n0=$(ng_ms); t0=$EPOCHREALTIME
    res=$(lg "$@"; times)
    t1=$EPOCHREALTIME; c1=$(cpu_ms); n1=$(ng_ms)
    OUT=$(grep -m1 '^requests=' <<<"$res")
    DCPU=$(awk -v a="$c0" -v b="$c1" 'BEGIN { printf "%.0f", b - a }')
    SAT=$(tail -1 <<<"$res" | awk -v t0="$t0" -v t1="$t1" -v n="$((${n1%.*} - ${n0%.*}))" '
        function sec(x, a) { split(x, a, "m"); return a[1] * 60 + substr(a[2], 1, length(a[2]) - 1) }
        { busy = sec($1) + sec($2) + n / 1000; print (t1 > t0 && busy >= 0.95 * (t1 - t0)) ? "*" : "" }')
    [ -n "$SAT" ] && ANYSAT=1
    [ "$(procs)" = "$p0" ] || { SAT="^$SAT"; RESPAWN="$RESPAWN $SERVER_NAME"; }
    [ -n "$OUT" ] || say "  loadgen $*: no result"
}
ANYSAT= RESPAWN= SERVER_NAME=
# per SCALE FMT N: DCPU * SCALE / N, or "-" when N is 0 or missing
per() { awk -v c="$DCPU" -v s="$1" -v n="${3:-0}" 'BEGIN { if (n > 0) printf "'"$2"'", c * s / n; else print "-" }'; }
# short_of N: "<" when the last run's rate fell below 97 % of N, its --rate
short_of() { awk -v r="$(field req_per_s "$OUT")" -v n="$1" 'BEGIN { if (r + 0 < 0.97 * n) print "<" }'; }
rate() { local v; v=$(field "$1" "$OUT"); [ -n "$v" ] && [ "$v" != 0.0 ] && echo "$v$SAT" || echo -; }

# run NAME: one server through every workload, into R[NAME,key]
declare -A R
SHORT=
run() {
    local name=$1 n rss0 rss1 i held c0 c1 p0
    SERVER_NAME=$name
    start "$name" "$W/ec" || { say "$name does not start: $(tail -2 "$W/srv.log")"; stop; return; }
    R[$name,rss]=$(rss_kb)
    R[$name,anon]=$(anon_kb)
    # (a) full handshakes, one request each, 16 clients
    lgrun --concurrency 16 --requests-per-conn 1 --path /64
    R[$name,a]=$(per 1000 %.0f "$(field handshakes "$OUT")")$SAT
    R[$name,ar]=$(rate hs_per_s)
    # (b) resumed handshakes (TLS 1.3 tickets), one request each, 16 clients;
    # CPU per handshake of this run (each client's first one is full)
    lgrun --concurrency 16 --requests-per-conn 1 --path /64 --resume
    n=$(field handshakes "$OUT")
    R[$name,b]=$(per 1000 %.0f "$n")$SAT
    R[$name,br]=$(rate hs_per_s)
    R[$name,bs]=$(awk -v r="$(field resumed "$OUT")" -v n="${n:-0}" \
        'BEGIN { if (n > 0) printf "%.1f", 100 * r / n; else print "-" }')
    # (a) and (b) again with an X25519 key share, as curl and browsers send
    # (the loadgen's wolfSSL sends P-256 by default)
    lgrun --concurrency 16 --requests-per-conn 1 --path /64 --group x25519
    R[$name,ax]=$(per 1000 %.0f "$(field handshakes "$OUT")")$SAT
    lgrun --concurrency 16 --requests-per-conn 1 --path /64 --resume --group x25519
    R[$name,bx]=$(per 1000 %.0f "$(field handshakes "$OUT")")$SAT
    # (c) keep-alive requests, 64-byte bodies, 32 clients
    lgrun --concurrency 32 --requests-per-conn 0 --path /64
    R[$name,c]=$(per 1000 %.1f "$(field requests "$OUT")")$SAT
    R[$name,cr]=$(rate req_per_s)
    # (c) again at one paced load for every server (loadgen --rate): above,
    # a server that keeps up with the client side never sleeps (its poll or
    # epoll_wait always finds something), so its CPU per request is the
    # client's pace, not its own cost.  "<": the server fell short of it.
    lgrun --concurrency 32 --requests-per-conn 0 --path /64 --rate "$RATE"
    R[$name,cp]=$(per 1000 %.1f "$(field requests "$OUT")")$SAT$(short_of "$RATE")
    lgrun --concurrency 4 --requests-per-conn 0 --path /64 --rate "$RATE4"
    R[$name,cp4]=$(per 1000 %.1f "$(field requests "$OUT")")$SAT$(short_of "$RATE4")
    # (d) bulk 16 MiB bodies, 4 clients
    lgrun --concurrency 4 --requests-per-conn 0 --path /bulk
    n=$(field requests "$OUT")
    R[$name,d]=$(per 100 %.0f "$(awk -v n="${n:-0}" 'BEGIN { print n * 16.78 }')")$SAT
    # (e) KB per idle established mTLS connection, 1,000 held
    p0=$(procs); rss0=$(rss_kb)
    lgx --hold 1000 --duration 4 >/dev/null &
    HOLD=$!
    sleep 3
    rss1=$(rss_kb)
    wait "$HOLD"; HOLD=
    R[$name,e]=$(awk -v a="$rss0" -v b="$rss1" 'BEGIN { printf "%.1f", (b - a) / 1000 }')
    [ "$(procs)" = "$p0" ] || { R[$name,e]+="^"; RESPAWN="$RESPAWN $name"; }
    # (g) (c) again while 1,000 idle mTLS connections are open: a holder
    # loadgen keeps them until its --duration ends; wait until they are all
    # established and the server has finished their handshakes (its CPU
    # quiet), then run the load, then end the holder.
    lgx --hold 1000 --duration $((2 * DUR + 40)) >/dev/null &
    HOLD=$!
    c0=$(cpu_ms)
    for i in $(seq 100); do
        sleep 0.3
        c1=$(cpu_ms)
        [ "$(est)" -ge 1000 ] && awk -v a="$c0" -v b="$c1" 'BEGIN { exit !(b - a < 15) }' && break
        c0=$c1
    done
    held=$(est)
    lgrun --concurrency 32 --requests-per-conn 0 --path /64
    R[$name,g]=$(per 1000 %.1f "$(field requests "$OUT")")$SAT
    R[$name,gr]=$(rate req_per_s)
    # the same with 4 busy clients: a box whose connections are mostly idle
    # (devices holding mTLS sessions open), the busy ones too few to keep
    # its loop from waiting
    lgrun --concurrency 4 --requests-per-conn 0 --path /64
    R[$name,g4]=$(per 1000 %.1f "$(field requests "$OUT")")$SAT
    R[$name,g4r]=$(rate req_per_s)
    i=$(est)
    [ "$i" -lt "$held" ] && held=$i
    kill "$HOLD" 2>/dev/null; wait "$HOLD" 2>/dev/null; HOLD=
    [ "$held" -lt 1000 ] && { R[$name,g]+="!"; R[$name,gr]+="!"; R[$name,g4]+="!"; R[$name,g4r]+="!"
        SHORT="$SHORT $name:$held"; }
    stop
    # (a) again with the RSA-2048 PKI (server and client certificates)
    start "$name" "$W/rsa" || { say "$name does not start (RSA): $(tail -2 "$W/srv.log")"; stop; return; }
    LGP=$W/pki-rsa
    lgrun --concurrency 16 --requests-per-conn 1 --path /64
    LGP=$P
    R[$name,ra]=$(per 1000 %.0f "$(field handshakes "$OUT")")$SAT
    stop
}

NAMES="mtlslb-deb"
[ -n "$SRC" ] && NAMES="$NAMES mtlslb-fast"
[ -x "$W/mtlslb-small" ] && NAMES="$NAMES mtlslb-small"
[ -n "$SRC" ] && NAMES="$NAMES fast-w2 fast-tcp"
command -v haproxy >/dev/null && NAMES="$NAMES haproxy haproxy-tcp"
command -v stunnel >/dev/null && NAMES="$NAMES stunnel"
for n in $NAMES; do say "bench: $n"; run "$n"; done

# ---- ceilings, with no server running: the in-memory handshake loop on
# CPU 0, and loadgen --plain straight to nginx
say "bench: ceilings"
HS=
for lib in fast small deb; do
    [ -x "$W/hsloop-$lib" ] || continue
    for k in pki pki-rsa; do
        HS+="$lib $k $(taskset -c 0 "$W/hsloop-$lib" "$W/$k" --seconds 2 || echo failed)"$'\n'
    done
done
plain() { "$@" "$W/loadgen" --plain --connect 127.0.0.1:21081 --duration "$DUR" --concurrency 32 \
    --requests-per-conn 0 --path /64; }
PL1=$(field req_per_s "$(plain taskset -c 1)")
PL0=$(field req_per_s "$(plain taskset -c 0)")

# ---- the table: rows are workloads, columns servers, then three ratios:
# fast/best, mtlslb-fast to the best of haproxy, haproxy-tcp and stunnel
# whatever their mode (fast-w2 is there to compare with mtlslb-fast: workers
# 2 vs 1); http, mtlslb-fast to haproxy in http mode (the same headers
# added); tcp, fast-tcp to the better of haproxy-tcp and stunnel.
printf '\nmtlslb bench: %s s per workload, server on CPU 0, loadgen + nginx on CPU 1, %s\n' "$DUR" \
    "$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
printf '%-50s' "workload"; for n in $NAMES; do printf '%13s' "$n"; done
printf '%10s%7s%7s\n' "fast/best" http tcp
# ratio NAME "PEERS" KEY lo|hi: NAME's figure over the best of PEERS' (lo:
# the lowest is best), or "-"
ratio() {
    local n v best=
    for n in $2; do
        v=${R[$n,$3]:--}; v=${v%%[!0-9.]*}
        [ -n "$v" ] || continue
        if [ -z "$best" ] || awk -v v="$v" -v b="$best" -v d="$4" \
                'BEGIN { exit !(d == "lo" ? v < b : v > b) }'; then best=$v; fi
    done
    v=${R[$1,$3]:--}; v=${v%%[!0-9.]*}
    if [ -n "$v" ] && [ -n "$best" ]; then
        awk -v v="$v" -v b="$best" 'BEGIN { if (b > 0) printf "%.2f", v / b; else print "-" }'
    else
        echo -
    fi
}
# row LABEL KEY lo|hi (lower or higher is better)
row() {
    local n
    printf '%-50s' "$1"; for n in $NAMES; do printf '%13s' "${R[$n,$2]:--}"; done
    printf '%10s%7s%7s\n' "$(ratio mtlslb-fast "haproxy haproxy-tcp stunnel" "$2" "$3")" \
        "$(ratio mtlslb-fast haproxy "$2" "$3")" "$(ratio fast-tcp "haproxy-tcp stunnel" "$2" "$3")"
}
row "(a) CPU ms / 1,000 full mTLS handshakes" a lo
row "(a) handshakes/s (16 clients)" ar hi
row "(a) CPU ms / 1,000 full handshakes, RSA-2048" ra lo
row "(b) CPU ms / 1,000 resumed handshakes" b lo
row "(b) resumed handshakes/s (16 clients)" br hi
row "(b) share resumed, %" bs hi
row "(a) CPU ms / 1,000 full, X25519 key share" ax lo
row "(b) CPU ms / 1,000 resumed, X25519 key share" bx lo
row "(c) CPU us / keep-alive request (64 B)" c lo
row "(c) requests/s (32 clients)" cr hi
row "(c) CPU us / request, $RATE/s paced, 32 clients" cp lo
row "(c) CPU us / request, $RATE4/s paced, 4 clients" cp4 lo
row "(d) CPU ms / 100 MB bulk" d lo
row "(e) RSS idle, KB" rss lo
row "(e) of which private (RssAnon), KB" anon lo
row "(e) KB per idle mTLS connection" e lo
row "(g) CPU us / keep-alive request, 1,000 idle open" g lo
row "(g) requests/s, 1,000 idle open" gr hi
row "(g) CPU us / request, 4 clients, 1,000 idle open" g4 lo
row "(g) requests/s, 4 clients, 1,000 idle open" g4r hi
printf 'fast/best: mtlslb-fast / the best of haproxy, haproxy-tcp, stunnel; http: mtlslb-fast / haproxy\n'
printf '    (http mode, adding the headers mtlslb adds: X-Forwarded-*, X-Real-IP, X-Client-*); tcp: fast-tcp\n'
printf '    (mtlslb-fast, mode tcp) / the better of haproxy-tcp, stunnel (CPU, memory: < 1 is better;\n'
printf '    rates, share: > 1 is better).  (b): CPU over every handshake of a run where each client\n'
printf '    resumes its previous session (TLS 1.3 tickets; its first handshake is full).  (g): 32\n'
printf '    (then 4) keep-alive clients while another loadgen holds 1,000 handshaken mTLS connections idle.\n'
printf '    RSA-2048: server and client certificates and CA RSA-2048 (tests/pki.sh PKI_KEY=rsa2048).\n'
printf '    Key exchange: the loadgen (wolfSSL) offers a P-256 key share; the X25519 rows offer X25519,\n'
printf '    as OpenSSL-based clients (curl) and browsers do.  (c) paced: loadgen --rate, the same\n'
printf '    request rate for every server (BENCH_RATE, BENCH_RATE4), so CPU per request is its own cost.\n'
case " $NAMES " in *" mtlslb-small "*)
printf 'mtlslb-small: make static WOLFSSL_SRC=DIR SMALL=1 CC=musl-gcc (wolfSSL -Os, single-precision\n'
printf '    assembly for P-256 and RSA-2048 only, no AES-NI; musl; everything linked in).\n'
esac
case " $NAMES " in *" fast-w2 "*)
printf 'fast-w2: mtlslb-fast with `workers 2`, first process and both workers on CPU 0; CPU summed\n'
printf '    over the three processes; (e) RSS summed too, so pages they share count two or three times.\n'
esac
[ -n "$RESPAWN" ] && printf '^   the server'"'"'s processes changed during the run (a worker restarted):%s\n' "$RESPAWN"
[ -n "$ANYSAT" ] && printf '*   CPU 1 (loadgen + nginx) busy >= 95 %% of the run: the client side set the pace.\n'
grep -q '<' <(for n in $NAMES; do printf ' %s %s' "${R[$n,cp]:-}" "${R[$n,cp4]:-}"; done) &&
    printf '<   the server fell short of the paced rate (below 97 %% of it).\n'
[ -n "$SHORT" ] && printf '!   fewer than 1,000 connections held during (g):%s\n' "$SHORT"
grep -q -- ' -' <(for k in a ar ra b br bs ax bx c cr cp cp4 d rss anon e g gr; do for n in $NAMES; do
    printf ' %s' "${R[$n,$k]:--}"; done; done) &&
    printf -- '-   no figure: the server did not start or the workload failed (see stderr)\n'
printf '\nCeilings, same machine:\n'
while read -r lib k line; do
    [ -n "$lib" ] || continue
    printf '  in-memory mTLS handshakes (tests/hsloop.c), %-5s wolfSSL, %-8s: ' "$lib" \
        "$([ "$k" = pki ] && echo P-256 || echo RSA-2048)"
    if [[ $line == full=* ]]; then
        printf 'server CPU %s us/full, %s us/resumed (%s of %s resumed)\n' "$(field server_us_full "$line")" \
            "$(field server_us_resumed "$line")" "$(field resumed "$line")" "$(field of "$line")"
    else
        printf '%s\n' "$line"
    fi
done <<<"$HS"
printf '  plain HTTP keep-alive straight to nginx (loadgen --plain, 32 clients, 64 B): %s req/s with\n' "${PL1:--}"
printf '    loadgen on CPU 1 beside nginx, %s req/s with loadgen on CPU 0\n' "${PL0:--}"

# ---- size: the binaries stripped (a copy), the shared libraries each needs
# (ldd, less the vDSO), and the libwolfssl.so mtlslb-deb links
printf '\nSize:\n'
for b in mtlslb-deb mtlslb-fast mtlslb-small; do
    [ -x "$W/$b" ] || continue
    strip -o "$W/$b.stripped" "$W/$b" 2>/dev/null || continue
    needs=$(ldd "$W/$b" 2>/dev/null | awk '$1 !~ /^linux-vdso/ && NF > 1 { sub(".*/", "", $1); printf "%s%s", s, $1; s = " " }')
    printf '  %-12s %9s bytes stripped; %s\n' "$b" "$(stat -c %s "$W/$b.stripped")" \
        "$([ -n "$needs" ] && echo "needs $needs" || echo "static: needs nothing")"
done
# The fast build linked statically with musl: its idle RSS without libc.so's
# and ld.so's pages (most of mtlslb-fast's in the table are theirs).
if [ -n "$SRC" ] && command -v musl-gcc >/dev/null &&
   make -s static BIN="$W/mtlslb-fast-static" SAN=0 CC=musl-gcc WOLFSSL_SRC="$SRC" >/dev/null 2>&1 &&
   strip -o "$W/mtlslb-fast-static.stripped" "$W/mtlslb-fast-static" && start fast-static "$W/ec"; then
    printf '  %-12s %9s bytes stripped; static (make static WOLFSSL_SRC=DIR CC=musl-gcc): idle RSS %s KB,
' \
        mtlslb-fast "$(stat -c %s "$W/mtlslb-fast-static.stripped")" "$(rss_kb)"
    printf '               %s KB of it private
' "$(anon_kb)"
    stop
fi
# aarch64 (a Raspberry Pi 3/4/5), cross-built here: the same two WOLFSSL_SRC builds
if [ -n "$SRC" ] && X=$("$ROOT/tests/cross.sh" "$ROOT/tests/work/sysroot"); then
    for flav in fast small; do
        if [ $flav = small ]; then
            set -- static SMALL=1 CC="aarch64-linux-gnu-gcc -specs=$ROOT/tests/work/sysroot/arm64-musl/musl.specs"
        else
            set -- CC=aarch64-linux-gnu-gcc
        fi
        make -s "$@" SAN=0 CROSS_COMPILE=aarch64-linux-gnu- WOLFSSL_SRC="$SRC" BIN="$W/a64-$flav" >/dev/null 2>&1 &&
            aarch64-linux-gnu-strip -o "$W/a64-$flav.stripped" "$W/a64-$flav" &&
            printf '  %-12s %9s bytes stripped; aarch64, %s\n' "mtlslb-$flav" "$(stat -c %s "$W/a64-$flav.stripped")" \
                "$([ $flav = small ] && echo "static (musl)" || echo "needs libc (glibc)")"
    done
else
    printf '  aarch64: no cross build (%s)\n' "${X:-no WOLFSSL_SRC}"
fi
LIBW=$(ldd "$W/mtlslb-deb" 2>/dev/null | awk '$1 ~ /^libwolfssl\.so/ { print $3; exit }')
[ -n "$LIBW" ] && LIBW=$(readlink -f "$LIBW") && [ -f "$LIBW" ] &&
    printf '  %-12s %9s bytes (%s, linked by mtlslb-deb)\n' "$(basename "$LIBW")" "$(stat -c %s "$LIBW")" "$LIBW"
