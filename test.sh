#!/usr/bin/env bash
# test.sh - the whole mtlslb test suite, against real processes: mtlslb
# itself, python3 backends (tests/backend.py), curl, openssl s_client and
# tests/tlsclient.py.  It makes its own PKI (tests/pki.sh) and ports, kills
# only what it started, and ends with one line "N passed, N failed".
#
# MTLSLB_BIN=path runs another binary (make test SAN=1 uses that).
# TESTS="t_sni t_echo" runs only those cases.
set -u
cd "$(dirname "$0")"
ROOT=$PWD
BIN=${MTLSLB_BIN:-$ROOT/mtlslb}
case $BIN in /*) ;; *) BIN=$ROOT/$BIN ;; esac
W=$(mktemp -d "${TMPDIR:-/tmp}/mtlslb-test.XXXXXX")
PKI=$W/pki
PASSED=0
FAILED=0
declare -A BE_PID=()
LB_PID=
LB_LOG=
LB_N=0
NEXT_PORT=$(( 21000 + (RANDOM % 300) * 100 ))

# ---------------------------------------------------------------- helpers

pass() { echo "PASS $1"; PASSED=$((PASSED + 1)); }
fail() { echo "FAIL $1: $2"; FAILED=$((FAILED + 1)); }

cleanup() {
    local p
    [ -n "$LB_PID" ] && kill -KILL "$LB_PID" 2>/dev/null
    for p in "${BE_PID[@]}"; do kill -TERM "$p" 2>/dev/null; done
    wait 2>/dev/null
    [ -n "${KEEP:-}" ] || rm -rf "$W"
}
trap cleanup EXIT

# newport VAR: a fresh port number for this run.
newport() { NEXT_PORT=$((NEXT_PORT + 1)); printf -v "$1" %d "$NEXT_PORT"; }

wait_file() {
    local i
    for i in $(seq 100); do [ -e "$1" ] && return 0; sleep 0.05; done
    return 1
}

# start_backend MODE PORT [NAME]: tests/backend.py, logging to $W/be.PORT.log.
start_backend() {
    local mode=$1 port=$2 name=${3:-$2}
    rm -f "$W/ready.$port" "$W/be.$port.log"
    python3 "$ROOT/tests/backend.py" "$mode" --port "$port" --name "$name" \
        --log "$W/be.$port.log" --ready "$W/ready.$port" >>"$W/be.$port.out" 2>&1 &
    BE_PID[$port]=$!
    wait_file "$W/ready.$port" || echo "  (backend $mode on $port did not start)"
}

stop_backend() {
    kill -TERM "${BE_PID[$1]}" 2>/dev/null
    wait "${BE_PID[$1]}" 2>/dev/null
    unset "BE_PID[$1]"
}

# Requests a backend logged (one line per request).
hits() { if [ -e "$W/be.$1.log" ]; then wc -l <"$W/be.$1.log" | tr -d ' '; else echo 0; fi; }

# start_lb CONF: run mtlslb in the background, wait until it serves.
start_lb() {
    LB_N=$((LB_N + 1))
    LB_LOG=$W/lb.$LB_N.log
    "$BIN" -c "$1" 2>"$LB_LOG" &
    LB_PID=$!
    local i
    for i in $(seq 100); do
        grep -q " started, pid" "$LB_LOG" && return 0
        kill -0 "$LB_PID" 2>/dev/null || break
        sleep 0.05
    done
    echo "  (mtlslb did not start:)"; sed 's/^/    /' "$LB_LOG"
    return 1
}

# stop_lb: SIGTERM and wait; the exit status is left in LB_RC.
stop_lb() {
    LB_RC=
    [ -n "$LB_PID" ] || return 0
    kill -TERM "$LB_PID" 2>/dev/null
    wait "$LB_PID"
    LB_RC=$?
    LB_PID=
}

# The head of every test configuration; $1 is the listener's port.
conf_global() {
    cat <<EOF
global
    log-level info
    timeout handshake 2s
    timeout connect 1s
    timeout idle 20s
    grace 10s
EOF
}

# conf_tcp PORT BACKEND_BODY [LISTENER_EXTRA]: one tcp listener, one backend.
conf_tcp() {
    conf_global
    cat <<EOF
listener tls
    bind 127.0.0.1:$1
    mode tcp
    cert $PKI/server.crt $PKI/server.key
    ca $PKI/ca.crt
    crl $PKI/ca.crl
${3:-}
    default-backend web
backend web
$2
EOF
}

# cget URL [curl args]: the HTTP status curl sees with the good client cert.
cget() {
    curl -s -o /dev/null -w '%{http_code}' --max-time 10 --cacert "$PKI/ca.crt" \
        --cert "$PKI/client.crt" --key "$PKI/client.key" "$@"
}

# cas NAME URL: like cget with the certificate pair NAME.crt/NAME.key.
cas() {
    local n=$1; shift
    curl -s -o /dev/null -w '%{http_code}' --max-time 10 --cacert "$PKI/ca.crt" \
        --cert "$PKI/$n.crt" --key "$PKI/$n.key" "$@"
}

tlsclient() { python3 "$ROOT/tests/tlsclient.py" "$@"; }

# Subject CN of the certificate a server presents for an SNI name ("" = none).
served_cn() {
    local port=$1 sni=$2 opt
    if [ -n "$sni" ]; then opt=(-servername "$sni"); else opt=(-noservername); fi
    openssl s_client -connect "127.0.0.1:$port" "${opt[@]}" -cert "$PKI/client.crt" \
        -key "$PKI/client.key" </dev/null 2>/dev/null |
        openssl x509 -noout -subject -nameopt multiline 2>/dev/null |
        sed -n 's/^ *commonName *= *//p'
}

# ------------------------------------------------------------------ cases

t_version() {
    local out
    out=$("$BIN" -V)
    if [[ $out =~ ^mtlslb\ [0-9]+\.[0-9]+\.[0-9]+\ \(wolfSSL\ [0-9]+\.[0-9]+\.[0-9]+\)$ ]]; then
        pass "version ($out)"
    else
        fail version "got '$out'"
    fi
}

t_sample_conf() {
    local d=$W/sample out rc
    mkdir -p "$d/demo"
    cp "$ROOT/sample.conf" "$d/"
    "$ROOT/tests/pki.sh" "$d/demo/pki" >/dev/null
    out=$("$BIN" -t -c "$d/sample.conf" 2>&1); rc=$?
    if [ $rc -eq 0 ] && [ "$out" = "configuration OK" ]; then
        pass "sample.conf passes -t"
    else
        fail "sample.conf" "rc=$rc: $out"
    fi
}

# check_bad NAME LINE PATTERN: -t on $W/chk/NAME.conf exits 1 naming FILE:LINE.
check_bad() {
    local f=$W/chk/$1.conf out rc
    out=$("$BIN" -t -c "$f" 2>&1); rc=$?
    if [ $rc -eq 1 ] && grep -q "^$f:$2: .*$3" <<<"$out"; then
        pass "-t refuses $1 ($(head -1 <<<"$out" | sed "s|$W/chk/||"))"
    else
        fail "-t refuses $1" "rc=$rc, wanted $f:$2: ...$3..., got: $out"
    fi
}

t_check_errors() {
    local d=$W/chk port
    newport port
    mkdir -p "$d"
    # Relative paths: resolved from the configuration's directory.
    base() {
        cat <<EOF
global
listener l
    bind 127.0.0.1:$port
    mode tcp
    cert ${1:-../pki/server.crt ../pki/server.key}
    ca ${2:-../pki/ca.crt}
    default-backend ${3:-web}
backend web
    server a 127.0.0.1:9
EOF
    }
    base >"$d/good.conf"
    if out=$("$BIN" -t -c "$d/good.conf" 2>&1) && [ "$out" = "configuration OK" ]; then
        pass "-t accepts a configuration with relative paths"
    else
        fail "-t good" "$out"
    fi
    { base; echo "    frobnicate yes"; } >"$d/unknown-directive.conf"
    check_bad unknown-directive 10 "unknown directive 'frobnicate'"
    base "" "../pki/nonexistent.crt" >"$d/missing-file.conf"
    check_bad missing-file 6 "cannot open ca .*nonexistent.crt"
    base "../pki/server.crt ../pki/mismatch.key" >"$d/key-mismatch.conf"
    check_bad key-mismatch 5 "does not match certificate"
    base "" "" nope >"$d/undefined-backend.conf"
    check_bad undefined-backend 7 "undefined backend 'nope'"
    { base; printf 'listener l\n    bind 127.0.0.1:%s\n' $((port + 50)); } >"$d/duplicate-listener.conf"
    check_bad duplicate-listener 10 "listener l is already defined at line 2"
    base | sed 's/^global$/global\n    timeout idle 10x/' >"$d/bad-duration.conf"
    check_bad bad-duration 2 "bad duration '10x'"
    { base; echo "    check http GET /healthz"; } >"$d/not-yet.conf"
    check_bad not-yet 10 "'check' is not supported yet"
    base | sed 's/^    mode tcp$/    mode http/' >"$d/mode-http.conf"
    check_bad mode-http 4 "mode http is not supported yet"
}

# Good client through; each bad certificate refused with its reason logged.
t_client_certs() {
    local lp bp c
    newport lp; newport bp
    start_backend http "$bp" web1
    conf_tcp "$lp" "    server a 127.0.0.1:$bp" >"$W/certs.conf"
    start_lb "$W/certs.conf" || { fail client-certs "no mtlslb"; return; }
    c=$(cget "https://localhost:$lp/")
    [ "$c" = 200 ] && pass "good client certificate gets through (tcp mode)" ||
        fail "good client" "curl got $c"
    c=$(curl -s -o /dev/null -w '%{http_code}' --max-time 10 --cacert "$PKI/ca.crt" \
        "https://localhost:$lp/")
    check_refused "no certificate" "$c" "no certificate"
    check_refused "revoked certificate" "$(cas revoked "https://localhost:$lp/")" "revoked"
    check_refused "expired certificate" "$(cas expired "https://localhost:$lp/")" "expired"
    check_refused "unrelated CA" "$(cas other-client "https://localhost:$lp/")" "unknown CA"
    stop_lb
    stop_backend "$bp"
}

# check_refused WHAT CURL_CODE REASON: no HTTP answer, and the reason logged.
check_refused() {
    sleep 0.2
    if [ "$2" = 000 ] && grep -q "handshake failed .*reason=\"$3\"" "$LB_LOG"; then
        pass "$1 refused, log says \"$3\""
    else
        fail "$1 refused" "curl got $2; log: $(grep 'handshake failed' "$LB_LOG" | tail -1)"
    fi
}

t_verify_optional() {
    local lp bp c
    newport lp; newport bp
    start_backend http "$bp" web1
    conf_tcp "$lp" "    server a 127.0.0.1:$bp" "    verify optional" >"$W/opt.conf"
    start_lb "$W/opt.conf" || { fail verify-optional "no mtlslb"; return; }
    c=$(curl -s -o /dev/null -w '%{http_code}' --max-time 10 --cacert "$PKI/ca.crt" \
        "https://localhost:$lp/")
    [ "$c" = 200 ] && pass "verify optional admits a client without a certificate" ||
        fail "verify optional, no cert" "curl got $c"
    c=$(cas other-client "https://localhost:$lp/")
    [ "$c" = 000 ] && pass "verify optional still refuses a certificate of another CA" ||
        fail "verify optional, other CA" "curl got $c"
    stop_lb
    stop_backend "$bp"
}

t_crl_expired() {
    local lp bp c
    newport lp; newport bp
    start_backend http "$bp" web1
    conf_tcp "$lp" "    server a 127.0.0.1:$bp" | sed "s|/ca.crl|/expired.crl|" >"$W/crlx.conf"
    start_lb "$W/crlx.conf" || { fail crl-expired "no mtlslb"; return; }
    c=$(cget "https://localhost:$lp/")
    sleep 0.2
    if [ "$c" = 000 ] && grep -q 'reason="CRL expired"' "$LB_LOG" &&
       grep -q "CRL .*expired.crl expired at 2020-01-02" "$LB_LOG"; then
        pass "an expired CRL fails closed: good cert refused, \"CRL expired\" logged"
    else
        fail "expired CRL" "curl got $c; log: $(tail -3 "$LB_LOG")"
    fi
    stop_lb
    # A CRL within 24 h of its nextUpdate: served, with a warning.
    conf_tcp "$lp" "    server a 127.0.0.1:$bp" | sed "s|/ca.crl|/soon.crl|" >"$W/crls.conf"
    start_lb "$W/crls.conf" || { fail crl-soon "no mtlslb"; return; }
    c=$(cget "https://localhost:$lp/")
    if [ "$c" = 200 ] && grep -q "warn .*CRL .*soon.crl expires at" "$LB_LOG"; then
        pass "a CRL expiring within 24 h still serves and is warned about"
    else
        fail "CRL expiring soon" "curl got $c; log: $(tail -3 "$LB_LOG")"
    fi
    stop_lb
    stop_backend "$bp"
}

t_sni() {
    local lp bp cn c
    newport lp; newport bp
    start_backend http "$bp" web1
    conf_tcp "$lp" "    server a 127.0.0.1:$bp" "    sni app.example.com $PKI/app.crt $PKI/app.key ca $PKI/app-ca.crt
    sni *.example.org $PKI/wild.crt $PKI/wild.key" >"$W/sni.conf"
    start_lb "$W/sni.conf" || { fail sni "no mtlslb"; return; }
    cn=$(served_cn "$lp" APP.Example.COM)
    [ "$cn" = app.example.com ] && pass "SNI exact name (any case) picks its certificate" ||
        fail "SNI exact" "got '$cn'"
    cn=$(served_cn "$lp" foo.example.org)
    [ "$cn" = "*.example.org" ] && pass "SNI wildcard covers one label" || fail "SNI wildcard" "got '$cn'"
    cn=$(served_cn "$lp" a.b.example.org)
    [ "$cn" = localhost ] && pass "SNI wildcard does not cover two labels (default served)" ||
        fail "SNI two labels" "got '$cn'"
    cn=$(served_cn "$lp" "")
    [ "$cn" = localhost ] && pass "no SNI gets the default certificate" || fail "SNI none" "got '$cn'"
    c=$(cas app-client --resolve "app.example.com:$lp:127.0.0.1" "https://app.example.com:$lp/")
    [ "$c" = 200 ] && pass "per-SNI ca admits its own client for that name" ||
        fail "per-SNI ca, own client" "curl got $c"
    c=$(cas app-client "https://localhost:$lp/")
    [ "$c" = 000 ] && pass "per-SNI ca's client is refused on the default name" ||
        fail "per-SNI ca client on default" "curl got $c"
    c=$(cget --resolve "app.example.com:$lp:127.0.0.1" "https://app.example.com:$lp/")
    [ "$c" = 000 ] && pass "the listener's client is refused on the per-SNI-ca name" ||
        fail "listener client on per-SNI name" "curl got $c"
    stop_lb
    conf_tcp "$lp" "    server a 127.0.0.1:$bp" "    sni app.example.com $PKI/app.crt $PKI/app.key
    sni-strict on" >"$W/strict.conf"
    start_lb "$W/strict.conf" || { fail sni-strict "no mtlslb"; return; }
    cn=$(served_cn "$lp" app.example.com)
    [ "$cn" = app.example.com ] || fail "sni-strict known name" "got '$cn'"
    cn=$(served_cn "$lp" unknown.example.com)
    c=$(served_cn "$lp" "")
    sleep 0.2
    if [ -z "$cn" ] && [ -z "$c" ] && [ "$(grep -c 'reason="unknown SNI name"' "$LB_LOG")" -ge 2 ]; then
        pass "sni-strict refuses an unknown name and a missing SNI"
    else
        fail "sni-strict" "unknown name got '$cn', no SNI got '$c'"
    fi
    stop_lb
    stop_backend "$bp"
}

# balance_run NAME SERVERS BALANCE N: N sequential requests; prints hits per backend.
t_roundrobin() {
    local lp b1 b2 i
    newport lp; newport b1; newport b2
    start_backend http "$b1" one; start_backend http "$b2" two
    conf_tcp "$lp" "    server a 127.0.0.1:$b1
    server b 127.0.0.1:$b2" >"$W/rr.conf"
    start_lb "$W/rr.conf" || { fail roundrobin "no mtlslb"; return; }
    for i in $(seq 10); do cget "https://localhost:$lp/" >/dev/null; done
    [ "$(hits "$b1")/$(hits "$b2")" = 5/5 ] && pass "round-robin: 10 connections split 5/5" ||
        fail roundrobin "split $(hits "$b1")/$(hits "$b2")"
    stop_lb
    rm -f "$W/be.$b1.log" "$W/be.$b2.log"
    conf_tcp "$lp" "    server a 127.0.0.1:$b1 weight 2
    server b 127.0.0.1:$b2" >"$W/wrr.conf"
    start_lb "$W/wrr.conf" || { fail weights "no mtlslb"; return; }
    for i in $(seq 30); do cget "https://localhost:$lp/" >/dev/null; done
    [ "$(hits "$b1")/$(hits "$b2")" = 20/10 ] && pass "weights 2:1 split 30 connections 20/10" ||
        fail weights "split $(hits "$b1")/$(hits "$b2")"
    stop_lb
    stop_backend "$b1"; stop_backend "$b2"
}

t_leastconn_source() {
    local lp b1 b2 i hold
    newport lp; newport b1; newport b2
    start_backend http "$b1" one; start_backend http "$b2" two
    conf_tcp "$lp" "    balance leastconn
    server a 127.0.0.1:$b1
    server b 127.0.0.1:$b2" >"$W/lc.conf"
    start_lb "$W/lc.conf" || { fail leastconn "no mtlslb"; return; }
    # One connection held open on server a (it sends nothing, so a logs nothing).
    tlsclient --connect "127.0.0.1:$lp" --cert "$PKI/client.crt" --key "$PKI/client.key" \
        --ca "$PKI/ca.crt" --servername localhost hold --seconds 4 >"$W/hold.out" 2>&1 &
    hold=$!
    sleep 0.7
    for i in $(seq 4); do cget "https://localhost:$lp/" >/dev/null; done
    if grep -q "handshake ok" "$W/hold.out" && [ "$(hits "$b1")/$(hits "$b2")" = 0/4 ]; then
        pass "leastconn: while server a holds a connection, 4 requests go to b"
    else
        fail leastconn "split $(hits "$b1")/$(hits "$b2"), hold: $(cat "$W/hold.out")"
    fi
    wait "$hold"
    stop_lb
    conf_tcp "$lp" "    balance source
    server a 127.0.0.1:$b1
    server b 127.0.0.1:$b2" >"$W/src.conf"
    rm -f "$W/be.$b1.log" "$W/be.$b2.log"
    start_lb "$W/src.conf" || { fail source "no mtlslb"; return; }
    for i in $(seq 10); do cget "https://localhost:$lp/" >/dev/null; done
    case "$(hits "$b1")/$(hits "$b2")" in
    10/0 | 0/10) pass "source: 10 connections from one address all reach one server" ;;
    *) fail source "split $(hits "$b1")/$(hits "$b2")" ;;
    esac
    stop_lb
    stop_backend "$b1"; stop_backend "$b2"
}

t_retries() {
    local lp b1 dead i ok=0
    newport lp; newport b1; newport dead
    start_backend http "$b1" one
    conf_tcp "$lp" "    retries 1
    server a 127.0.0.1:$b1
    server down 127.0.0.1:$dead" >"$W/retry.conf"
    start_lb "$W/retry.conf" || { fail retries "no mtlslb"; return; }
    for i in $(seq 10); do [ "$(cget "https://localhost:$lp/")" = 200 ] && ok=$((ok + 1)); done
    if [ $ok = 10 ] && grep -q "server down .*connect failed: Connection refused" "$LB_LOG"; then
        pass "one server down, retries 1: 10/10 requests succeed, failure logged"
    else
        fail retries "$ok/10 succeeded"
    fi
    stop_lb
    stop_backend "$b1"
}

t_relay() {
    local lp be bs out sent got
    newport lp; newport be; newport bs
    start_backend echo "$be"; start_backend sink "$bs"
    conf_tcp "$lp" "    server e 127.0.0.1:$be" >"$W/echo.conf"
    start_lb "$W/echo.conf" || { fail relay "no mtlslb"; return; }
    out=$(tlsclient --connect "127.0.0.1:$lp" --cert "$PKI/client.crt" --key "$PKI/client.key" \
        --ca "$PKI/ca.crt" --servername localhost echo --bytes 1048576 2>&1)
    [[ $out == "echo ok 1048576"* ]] && pass "1 MiB of random bytes echoes back byte-exact" ||
        fail "1 MiB echo" "$out"
    stop_lb
    conf_tcp "$lp" "    server s 127.0.0.1:$bs" >"$W/sink.conf"
    start_lb "$W/sink.conf" || { fail halfclose "no mtlslb"; return; }
    out=$(tlsclient --connect "127.0.0.1:$lp" --cert "$PKI/client.crt" --key "$PKI/client.key" \
        --ca "$PKI/ca.crt" --servername localhost halfclose --bytes 300000 2>&1)
    sent=$(sed -n 's/^sent sha256=//p' <<<"$out")
    got=$(sed -n 's/^got 300000 sha256=//p' <<<"$out")
    if [ -n "$sent" ] && [ "$sent" = "$got" ]; then
        pass "half-close: client shuts its write side and still receives the reply"
    else
        fail half-close "$out"
    fi
    stop_lb
    stop_backend "$be"; stop_backend "$bs"
}

t_proxy() {
    local lp bp v body
    newport lp; newport bp
    start_backend proxy "$bp"
    for v in v1 v2; do
        conf_tcp "$lp" "    server p 127.0.0.1:$bp" "    send-proxy $v" >"$W/proxy-$v.conf"
        start_lb "$W/proxy-$v.conf" || { fail "proxy $v" "no mtlslb"; continue; }
        body=$(curl -s --max-time 10 --cacert "$PKI/ca.crt" --cert "$PKI/client.crt" \
            --key "$PKI/client.key" "https://localhost:$lp/")
        if python3 - "$v" "$lp" "$body" <<'EOF'
import json, sys
v, port, body = sys.argv[1], int(sys.argv[2]), sys.argv[3]
j = json.loads(body)
assert j["version"] == int(v[1]), j
assert j["src"] == "127.0.0.1" and j["dst"] == "127.0.0.1" and j["dport"] == port, j
assert 1024 <= j["sport"] <= 65535, j
if v == "v2":
    s = j["ssl"]
    assert s and s["cn"] == "client-good" and s["version"].startswith("TLSv1."), j
    assert s["verify"] == 0 and s["client"] & 1 and s["client"] & 2, j
    assert j["authority"] == "localhost", j
EOF
        then
            pass "send-proxy $v: the backend sees the real client address$([ $v = v2 ] && echo ', CN, TLS version and SNI')"
        else
            fail "send-proxy $v" "backend saw: $body"
        fi
        stop_lb
    done
    stop_backend "$bp"
}

t_garbage() {
    local lp bp c
    newport lp; newport bp
    start_backend http "$bp" web1
    conf_tcp "$lp" "    server a 127.0.0.1:$bp" | sed 's/timeout handshake 2s/timeout handshake 1s/' >"$W/junk.conf"
    start_lb "$W/junk.conf" || { fail garbage "no mtlslb"; return; }
    python3 - "$lp" <<'EOF' || fail garbage "could not send 200 bad connections"
import os, socket, sys
port = int(sys.argv[1])
hello = bytes.fromhex("16030100f4010000f00303") + os.urandom(32)   # truncated ClientHello
sent = 0
for i in range(200):
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    kind = i % 3
    try:
        if kind == 0:
            s.sendall(os.urandom(1 + i * 7 % 700))
        elif kind == 1:
            s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        else:
            s.sendall(hello)
        sent += 1
        s.shutdown(socket.SHUT_WR)
        while s.recv(4096):
            pass
    except OSError:
        pass        # mtlslb may close (or reset) first: that is the point
    s.close()
sys.exit(0 if sent == 200 else 1)
EOF
    c=$(cget "https://localhost:$lp/")
    if [ "$c" = 200 ] && kill -0 "$LB_PID"; then
        pass "200 garbage/plain-HTTP/truncated handshakes, then a good request succeeds"
    else
        fail garbage "curl got $c"
    fi
    # A client that never finishes its handshake is closed after 1 s.
    if python3 - "$lp" <<'EOF'
import socket, sys, time
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=8)
s.sendall(bytes.fromhex("1603010200"))     # a record header, then silence
t = time.time()
try:
    while s.recv(4096):
        pass
except OSError:
    pass
sys.exit(0 if time.time() - t < 6 else 1)
EOF
    then
        sleep 0.2
        grep -q 'reason="handshake timeout"' "$LB_LOG" &&
            pass "a client that never finishes its handshake is closed after timeout handshake" ||
            fail "handshake timeout" "not logged"
    else
        fail "handshake timeout" "connection still open after 6 s"
    fi
    stop_lb
    stop_backend "$bp"
}

t_max_conns() {
    local lp bp h1 h2 cp c
    newport lp; newport bp
    start_backend http "$bp" web1
    { conf_tcp "$lp" "    server a 127.0.0.1:$bp"; } | sed 's/^global$/global\n    max-conns 2/' >"$W/max.conf"
    start_lb "$W/max.conf" || { fail max-conns "no mtlslb"; return; }
    for h in 1 2; do
        tlsclient --connect "127.0.0.1:$lp" --cert "$PKI/client.crt" --key "$PKI/client.key" \
            --ca "$PKI/ca.crt" --servername localhost hold --seconds 3 >"$W/hold$h.out" 2>&1 &
        eval "h$h=\$!"
    done
    sleep 0.8
    cget "https://localhost:$lp/" >"$W/third.out" &
    cp=$!
    sleep 1
    if kill -0 "$cp" 2>/dev/null; then
        wait "$cp"; c=$(cat "$W/third.out")
        [ "$c" = 200 ] && pass "at max-conns 2 the 3rd connection waits and is served once a slot frees" ||
            fail max-conns "3rd connection got $c after waiting"
    else
        fail max-conns "3rd connection finished while 2 were held ($(cat "$W/third.out"))"
    fi
    wait "$h1" "$h2"
    stop_lb
    stop_backend "$bp"
}

t_sigterm() {
    local lp wp cp c
    newport lp; newport wp
    mkdir -p "$W/www"
    head -c 3000000 /dev/urandom >"$W/www/big"
    python3 -m http.server "$wp" --bind 127.0.0.1 --directory "$W/www" >/dev/null 2>&1 &
    BE_PID[$wp]=$!
    sleep 0.5
    conf_tcp "$lp" "    server w 127.0.0.1:$wp" >"$W/term.conf"
    start_lb "$W/term.conf" || { fail sigterm "no mtlslb"; return; }
    curl -s --max-time 30 --limit-rate 1000k -o "$W/big.got" --cacert "$PKI/ca.crt" \
        --cert "$PKI/client.crt" --key "$PKI/client.key" "https://localhost:$lp/big" &
    cp=$!
    sleep 1
    kill -TERM "$LB_PID"
    sleep 0.3
    c=$(cget "https://localhost:$lp/")
    wait "$cp"; local crc=$?
    wait "$LB_PID"; local lrc=$?
    LB_PID=
    if [ $crc = 0 ] && cmp -s "$W/www/big" "$W/big.got" && [ "$c" = 000 ] && [ $lrc = 0 ] &&
       grep -q "stopping: listeners closed, 1 connection open" "$LB_LOG" && grep -q "info stopped" "$LB_LOG"; then
        pass "SIGTERM: the transfer in flight completes byte-exact, new connections refused, exit 0"
    else
        fail sigterm "curl rc=$crc, new conn got $c, exit $lrc, $(tail -2 "$LB_LOG")"
    fi
    stop_backend "$wp"
}

t_sigterm_status() {
    local lp bp rc
    newport lp; newport bp
    conf_tcp "$lp" "    server a 127.0.0.1:$bp" >"$W/st.conf"
    start_lb "$W/st.conf" || { fail exit-status "no mtlslb"; return; }
    stop_lb
    [ "$LB_RC" = 0 ] && pass "SIGTERM: exit status 0" || fail "exit status" "got $LB_RC"
    conf_tcp "$lp" "    server a 127.0.0.1:$bp" >"$W/st2.conf"
    "$BIN" -c "$W/st.conf" 2>"$W/lb.first.log" & local p1=$!
    sleep 0.5
    "$BIN" -c "$W/st2.conf" 2>"$W/lb.bind.log"; rc=$?
    kill -TERM $p1; wait $p1
    [ $rc = 2 ] && grep -q "cannot bind" "$W/lb.bind.log" && pass "a port already in use: exit status 2" ||
        fail "bind failure" "rc=$rc $(cat "$W/lb.bind.log")"
    "$BIN" -c "$W/nonexistent.conf" 2>"$W/lb.missing.log"; rc=$?
    [ $rc = 1 ] && pass "a missing configuration: exit status 1" || fail "missing config" "rc=$rc"
}

t_build() {
    local out cc
    for cc in gcc clang; do
        if ! command -v $cc >/dev/null; then fail "build $cc" "$cc not installed"; continue; fi
        out=$(env -u MAKEFLAGS -u MAKELEVEL make -s -B -C "$ROOT" CC=$cc SAN=0 BIN="$W/mtlslb-$cc" 2>&1)
        if [ -x "$W/mtlslb-$cc" ] && ! grep -qi "warning\|error" <<<"$out"; then
            pass "warning-free build with $cc -Wall -Wextra"
        else
            fail "build $cc" "$out"
        fi
    done
    out=$(readelf -d "$W/mtlslb-gcc" | sed -n 's/.*NEEDED.*\[\(.*\)\]/\1/p' | sort | tr '\n' ' ')
    if [[ $out =~ ^libc\.so\.[0-9]+\ libwolfssl\.so\.[0-9]+\ $ ]]; then
        pass "links only wolfSSL and libc ($out)"
    else
        fail "libraries" "NEEDED: $out"
    fi
    out=$(env -u MAKEFLAGS -u MAKELEVEL make -s -C "$ROOT" static SAN=0 BIN="$W/mtlslb-static" 2>&1)
    if [ -x "$W/mtlslb-static" ] && ! readelf -d "$W/mtlslb-static" 2>/dev/null | grep -q NEEDED &&
       "$W/mtlslb-static" -V | grep -q "^mtlslb "; then
        pass "make static: a static binary that runs ($(stat -c %s "$W/mtlslb-static") bytes)"
    else
        fail "make static" "$out"
    fi
}

# Sanitizer reports anywhere in mtlslb's logs fail the run.
t_sanitizers() {
    local bad
    bad=$(grep -l "Sanitizer\|runtime error:" "$W"/lb.*.log 2>/dev/null)
    if [ -z "$bad" ]; then
        pass "no sanitizer report in any mtlslb log ($LB_N runs)"
    else
        fail sanitizers "$(grep -h -A5 "Sanitizer\|runtime error:" $bad | head -30)"
    fi
}

# ------------------------------------------------------------------- main

ALL="t_version t_sample_conf t_check_errors t_client_certs t_verify_optional t_crl_expired
t_sni t_roundrobin t_leastconn_source t_retries t_relay t_proxy t_garbage t_max_conns
t_sigterm t_sigterm_status t_build t_sanitizers"

if [ ! -x "$BIN" ]; then
    echo "no binary at $BIN: run make first"
    echo "0 passed, 1 failed"
    exit 1
fi
"$ROOT/tests/pki.sh" "$PKI" || { echo "cannot make the test PKI"; echo "0 passed, 1 failed"; exit 1; }
echo "mtlslb tests: $BIN ($("$BIN" -V)), work dir $W"
for t in ${TESTS:-$ALL}; do
    "$t"
done
echo "$PASSED passed, $FAILED failed"
[ "$FAILED" = 0 ]
