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
# Ports for our listeners come from below the ephemeral range (where the
# kernel picks clients' ports, which would make a bind fail now and then).
EPHEMERAL_LOW=$(cut -f1 /proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || echo 32768)
NEXT_PORT=$(( 10000 + (RANDOM % ((EPHEMERAL_LOW - 10000 - 1000) / 100)) * 100 ))

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

# newport VAR: a fresh port number for this run, nobody listening on it.
newport() {
    NEXT_PORT=$((NEXT_PORT + 1))
    while (exec 3<>"/dev/tcp/127.0.0.1/$NEXT_PORT") 2>/dev/null; do NEXT_PORT=$((NEXT_PORT + 1)); done
    printf -v "$1" %d "$NEXT_PORT"
}

# wait_file FILE [STEPS]: until FILE exists, STEPS x 50 ms at most (200:
# 10 s, for python servers on a loaded machine).
wait_file() {
    local i
    for i in $(seq "${2:-200}"); do [ -e "$1" ] && return 0; sleep 0.05; done
    return 1
}

# wait_port PORT: until something accepts on 127.0.0.1:PORT (5 s at most).
wait_port() {
    python3 - "$1" <<'PY'
import socket, sys, time
for i in range(100):
    try:
        socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=1).close()
        sys.exit(0)
    except OSError:
        time.sleep(0.05)
sys.exit(1)
PY
}

# start_backend MODE PORT [NAME]: tests/backend.py, logging to $W/be.PORT.log.
start_backend() {
    local mode=$1 port=$2 name=${3:-$2}
    shift 2; [ $# -gt 0 ] && shift     # the rest: more backend.py options
    rm -f "$W/ready.$port" "$W/be.$port.log"
    python3 "$ROOT/tests/backend.py" "$mode" --port "$port" --name "$name" \
        --log "$W/be.$port.log" --ready "$W/ready.$port" "$@" >>"$W/be.$port.out" 2>&1 &
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
    local i want=" started, pid"
    grep -q "^ *workers [2-9]" "$1" && want=" workers started, pid"
    for i in $(seq 100); do
        grep -q "$want" "$LB_LOG" && return 0
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
# WORKERS=N runs the configuration with `workers N`.
conf_global() {
    cat <<EOF
global
    log-level info
    timeout handshake 2s
    timeout connect 1s
    timeout idle 20s
    grace 10s
EOF
    if [ "${WORKERS:-1}" -gt 1 ]; then echo "    workers $WORKERS"; fi
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
    # Options as getopt() takes them; anything else is a usage error (1).
    if [ "$("$BIN" -tc "$d/sample.conf" 2>&1)" = "configuration OK" ] &&
       [ "$("$BIN" -c"$d/sample.conf" -t 2>&1)" = "configuration OK" ] &&
       ! "$BIN" -t -c "$d/sample.conf" extra >/dev/null 2>&1 && ! "$BIN" -x >/dev/null 2>&1 &&
       [ "$("$BIN" -h | head -1)" = "usage: mtlslb [-c FILE] [-t] [-V] [-h]" ]; then
        pass "options: -tc FILE and -cFILE -t work; an unknown option or operand is a usage error"
    else
        fail "options" "$("$BIN" -tc "$d/sample.conf" 2>&1 | head -2)"
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
    # An expired server certificate loads (it may be being replaced) but -t
    # says so.
    base "../pki/expired.crt ../pki/expired.key" >"$d/expcert.conf"
    out=$("$BIN" -t -c "$d/expcert.conf" 2>&1)
    if [ $? = 0 ] && grep -q "expcert.conf:5: certificate .*/expired.crt expired at 2021-01-01" <<<"$out" &&
       grep -q "^configuration OK$" <<<"$out"; then
        pass "-t: an expired server certificate is warned about (FILE:LINE), the configuration still OK"
    else
        fail "-t expired cert" "$out"
    fi
    # An sni line takes one ca (a bundle file holds several).
    base | sed "s|^    ca .*|&\n    sni app.example.com ../pki/app.crt ../pki/app.key ca ../pki/ca.crt ca ../pki/app-ca.crt|" \
        >"$d/snica2.conf"
    out=$("$BIN" -t -c "$d/snica2.conf" 2>&1)
    if [ $? = 1 ] && grep -q "snica2.conf:7: sni: ca given twice" <<<"$out"; then
        pass "-t: an sni line with two ca options is refused"
    else
        fail "-t sni ca twice" "$out"
    fi
    # bind is numeric; a host name gets an error that says so.
    base | sed "s/bind 127.0.0.1:/bind localhost:/" >"$d/bindname.conf"
    out=$("$BIN" -t -c "$d/bindname.conf" 2>&1)
    if [ $? = 1 ] && grep -q "bindname.conf:3: 'localhost:$port': bind takes a numeric address" <<<"$out"; then
        pass "-t: bind with a host name is refused, saying bind takes a numeric address"
    else
        fail "-t bind name" "$out"
    fi
    # A file that is not text: its bytes come out as \xHH, never raw.
    { base; printf '\001\377bin\033[2J junk\n'; } >"$d/binary.conf"
    out=$("$BIN" -t -c "$d/binary.conf" 2>&1)
    if [ $? = 1 ] && grep -qF "binary.conf:10: unknown directive '\x01\xffbin\x1b[2J'" <<<"$out" &&
       ! LC_ALL=C grep -q '[^ -~]' <<<"$out"; then
        pass "-t: bytes of a file that is not text are shown as \\xHH, never raw"
    else
        fail "-t binary" "$(cat -v <<<"$out")"
    fi
    # Quotes keep a blank inside a path; '#' starts a comment anywhere.
    mkdir -p "$d/my pki"
    cp "$PKI/server.crt" "$PKI/server.key" "$d/my pki/"
    base '"my pki/server.crt" "my pki/server.key"   # default certificate' \
        | sed 's/^global$/global   # the global section/' >"$d/quoted.conf"
    if out=$("$BIN" -t -c "$d/quoted.conf" 2>&1) && [ "$out" = "configuration OK" ]; then
        pass "-t accepts quoted paths with blanks and trailing comments"
    else
        fail "-t quoted" "$out"
    fi
    { base; echo "    frobnicate yes"; } >"$d/unknown-directive.conf"
    check_bad unknown-directive 10 "unknown directive 'frobnicate'"
    base "" "../pki/nonexistent.crt" >"$d/missing-file.conf"
    check_bad missing-file 6 "cannot open ca .*nonexistent.crt"
    # SPEC 2: each error.  A missing certificate does not hide a missing CA
    # or CRL after it.
    base "../pki/none.crt ../pki/server.key" "../pki/none-ca.crt" |
        sed 's|^    default-backend web$|    crl ../pki/none.crl\n&|' >"$d/three-files.conf"
    out=$("$BIN" -t -c "$d/three-files.conf" 2>&1)
    if [ $? = 1 ] && grep -q "three-files.conf:5: .*none.crt" <<<"$out" &&
       grep -q "three-files.conf:6: .*none-ca.crt" <<<"$out" && grep -q "three-files.conf:7: .*none.crl" <<<"$out"; then
        pass "-t names every bad file: certificate, ca and crl, each with its line"
    else
        fail "-t three files" "$out"
    fi
    base "../pki/server.crt ../pki/mismatch.key" >"$d/key-mismatch.conf"
    check_bad key-mismatch 5 "does not match certificate"
    base "" "" nope >"$d/undefined-backend.conf"
    check_bad undefined-backend 7 "undefined backend 'nope'"
    { base; printf 'listener l\n    bind 127.0.0.1:%s\n' $((port + 50)); } >"$d/duplicate-listener.conf"
    check_bad duplicate-listener 10 "listener l is already defined at line 2"
    base | sed 's/^global$/global\n    timeout idle 10x/' >"$d/bad-duration.conf"
    check_bad bad-duration 2 "bad duration '10x'"
    { base; echo "    allow cn device-1"; } >"$d/allow-in-backend.conf"
    check_bad allow-in-backend 10 "'allow' belongs in a listener section"
    { base; echo "    check http GET healthz"; } >"$d/bad-check.conf"
    check_bad bad-check 10 "check http: bad method 'GET' or path 'healthz'"
    base | sed 's/^global$/global\n    user no-such-user-mtlslb/' >"$d/no-user.conf"
    check_bad no-user 2 "user no-such-user-mtlslb: no such user"
    base | sed 's/^    mode tcp$/    mode http/; s|^    default-backend web$|&\n    route path /x backend nope|' \
        >"$d/route-undefined.conf"
    check_bad route-undefined 8 "undefined backend 'nope'"
    # The stats address on a listener's bind: the start would fail on it.
    base | sed "s/^global$/global\n    stats 127.0.0.1:$port/" >"$d/stats-on-bind.conf"
    check_bad stats-on-bind 2 "stats 127.0.0.1:$port is already used by bind at line 4"
    # A directive that takes one value, given twice in a section.
    base | sed 's/^    mode tcp$/&\n    mode http/' >"$d/mode-twice.conf"
    check_bad mode-twice 5 "'mode' is already set at line 4"
    base | sed 's|^    server a 127.0.0.1:9$|& weight|' >"$d/weight-missing.conf"
    check_bad weight-missing 9 "server: 'weight' needs a number"
    { base; echo "    balance leastconn"; echo "    balance source"; } >"$d/balance-twice.conf"
    check_bad balance-twice 11 "'balance' is already set at line 10"
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
    # The client learns why: an alert, in TLS 1.2 too (RFC 5246 7.4.6:
    # handshake_failure; TLS 1.3: certificate_required), not a bare close.
    c="$(echo | timeout 10 openssl s_client -connect "127.0.0.1:$lp" -tls1_2 -ign_eof -CAfile "$PKI/ca.crt" 2>&1 |
         grep -o 'alert number [0-9]*')|$(echo | timeout 10 openssl s_client -connect "127.0.0.1:$lp" -tls1_3 -ign_eof \
         -CAfile "$PKI/ca.crt" 2>&1 | grep -o 'alert number [0-9]*')"
    [ "$c" = "alert number 40|alert number 116" ] &&
        pass "no certificate: TLS 1.2 gets the alert handshake_failure, TLS 1.3 certificate_required" ||
        fail "no certificate alert" "got '$c'"
    # SPEC 8: a client's SNI cannot forge log fields (quoted and escaped
    # when it has a blank, '"' or '\'; host names are logged as they are).
    echo | timeout 10 openssl s_client -connect "127.0.0.1:$lp" -servername 'localhost reason="ok" cn=admin' \
        -CAfile "$PKI/ca.crt" >/dev/null 2>&1
    sleep 0.2
    grep -q 'handshake failed .* sni="localhost reason=\\"ok\\" cn=admin" reason="no certificate"' "$LB_LOG" &&
        pass "log: an SNI with blanks and quotes is logged quoted and escaped, no field forged" ||
        fail "log SNI forging" "$(grep 'handshake failed' "$LB_LOG" | tail -1)"
    check_refused "revoked certificate" "$(cas revoked "https://localhost:$lp/")" "revoked"
    check_refused "expired certificate" "$(cas expired "https://localhost:$lp/")" "expired"
    check_refused "unrelated CA" "$(cas other-client "https://localhost:$lp/")" "unknown CA"
    check_refused "a certificate for servers only (EKU serverAuth)" \
        "$(cas server "https://localhost:$lp/")" "bad certificate"
    # RFC 5280 4.2.1.3: a client certificate signs; the CA's own (keyUsage
    # keyCertSign, cRLSign) chains to the ca but is no client's.
    check_refused "the CA's own certificate as a client's (keyUsage without digitalSignature)" \
        "$(cas ca "https://localhost:$lp/")" "bad certificate"
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
    # A session made while the CRL was current, resumed after its
    # nextUpdate: refused, and logged as a full handshake would be.
    openssl ca -batch -config "$PKI/ca-db/ca.cnf" -gencrl -out "$W/short.crl" \
        -crl_nextupdate "$(date -u -d '+5 sec' +%Y%m%d%H%M%SZ)" 2>/dev/null
    conf_tcp "$lp" "    server a 127.0.0.1:$bp" | sed "s|$PKI/ca.crl|$W/short.crl|" >"$W/crlt.conf"
    start_lb "$W/crlt.conf" || { fail crl-resume "no mtlslb"; return; }
    local rq='GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n'
    c=$(printf "$rq" | timeout 10 openssl s_client -connect "127.0.0.1:$lp" -tls1_2 -no_ticket \
        -cert "$PKI/client.crt" -key "$PKI/client.key" -CAfile "$PKI/ca.crt" -sess_out "$W/crlt.sess" \
        -ign_eof 2>/dev/null | grep -c '^HTTP/1.1 200')
    sleep 6
    c="$c $(printf "$rq" | timeout 10 openssl s_client -connect "127.0.0.1:$lp" -tls1_2 -no_ticket \
        -CAfile "$PKI/ca.crt" -sess_in "$W/crlt.sess" -ign_eof 2>/dev/null | grep -c '^HTTP/1.1 200')"
    sleep 0.2
    if [ "$c" = "1 0" ] &&
       grep -q 'handshake failed .*reason="CRL expired" detail="resumed session"' "$LB_LOG"; then
        pass "a session resumed after the CRL's nextUpdate is refused as \"CRL expired\""
    else
        fail "resumed after CRL expiry" "responses: $c; $(grep 'handshake failed' "$LB_LOG" | tail -1)"
    fi
    stop_lb
    stop_backend "$bp"
}

# crl_conf PORT BACKEND CA CRL-LINES: a tcp listener with that ca and those crl lines.
crl_conf() {
    conf_global
    printf 'listener tls\n    bind 127.0.0.1:%s\n    mode tcp\n    cert %s %s\n    ca %s\n%s\n' \
        "$1" "$PKI/server.crt" "$PKI/server.key" "$3" "$4"
    printf '    default-backend web\nbackend web\n    server a 127.0.0.1:%s\n' "$2"
}

# Several CRLs in one file all count; every certificate of the client's chain is checked.
t_crl_chain() {
    local lp bp c
    newport lp; newport bp
    start_backend http "$bp" web1
    cat "$PKI/ca.crt" "$PKI/app-ca.crt" >"$W/two-ca.crt"
    cat "$PKI/ca.crl" "$PKI/app-ca.crl" >"$W/two.crl"
    crl_conf "$lp" "$bp" "$W/two-ca.crt" "    crl $W/two.crl" >"$W/crl2.conf"
    start_lb "$W/crl2.conf" || { fail crl-two "no mtlslb"; return; }
    c="$(cget "https://localhost:$lp/") $(cas app-client "https://localhost:$lp/") $(cas revoked "https://localhost:$lp/")"
    if [ "$c" = "200 200 000" ]; then
        pass "a crl file with two CAs' CRLs: both load (client 200, app-client 200, revoked refused)"
    else
        fail "two CRLs in one file" "client, app-client, revoked: $c"
    fi
    stop_lb
    # Root -> intermediate -> leaf; the client sends leaf + intermediate
    # (curl, chain file), or its leaf alone (the intermediate is in the ca
    # file, which wolfSSL does not check against the CRLs by itself).
    cat "$PKI/other-ca.crt" "$PKI/int-ca.crt" >"$W/int-ca.crt"
    cp "$PKI/other-ca.crl" "$W/root.crl"
    local ic=(--cert "$PKI/int-client-chain.crt" --key "$PKI/int-client.key" "https://localhost:$lp/")
    local il=(--cert "$PKI/int-client.crt" --key "$PKI/int-client.key" "https://localhost:$lp/")
    local rq='GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n'
    crl_conf "$lp" "$bp" "$W/int-ca.crt" "    crl $W/root.crl
    crl $PKI/int-ca.crl" >"$W/crli.conf"
    start_lb "$W/crli.conf" || { fail crl-int "no mtlslb"; return; }
    c="$(curl -s -o /dev/null -w '%{http_code}' --max-time 10 --cacert "$PKI/ca.crt" "${ic[@]}")"
    c="$c $(curl -s -o /dev/null -w '%{http_code}' --max-time 10 --cacert "$PKI/ca.crt" "${il[@]}")"
    printf "$rq" | timeout 10 openssl s_client -connect "127.0.0.1:$lp" -tls1_3 -servername localhost \
        -cert "$PKI/int-client.crt" -key "$PKI/int-client.key" -CAfile "$PKI/ca.crt" \
        -sess_out "$W/int.s13" -ign_eof >/dev/null 2>&1
    # The root's new CRL revokes the intermediate: a session made before
    # does not resume past it.
    cp "$PKI/other-ca-int-revoked.crl" "$W/root.crl.new" && mv "$W/root.crl.new" "$W/root.crl"
    if wait_log "CRL reloaded" 15 >/dev/null; then
        c="$c $(printf "$rq" | timeout 10 openssl s_client -connect "127.0.0.1:$lp" -tls1_3 \
            -servername localhost -CAfile "$PKI/ca.crt" -sess_in "$W/int.s13" -ign_eof 2>/dev/null |
            grep -c '^HTTP/1.1 200')"
    fi
    stop_lb
    crl_conf "$lp" "$bp" "$W/int-ca.crt" "    crl $PKI/other-ca-int-revoked.crl
    crl $PKI/int-ca.crl" >"$W/crlr.conf"
    start_lb "$W/crlr.conf" || { fail crl-int-revoked "no mtlslb"; return; }
    c="$c $(curl -s -o /dev/null -w '%{http_code}' --max-time 10 --cacert "$PKI/ca.crt" "${ic[@]}")"
    c="$c $(curl -s -o /dev/null -w '%{http_code}' --max-time 10 --cacert "$PKI/ca.crt" "${il[@]}")"
    sleep 0.2
    if [ "$c" = "200 200 0 000 000" ] && [ -s "$W/int.s13" ] &&
       [ "$(grep -c 'handshake failed .*reason="revoked"' "$LB_LOG")" = 2 ]; then
        pass "an intermediate CA the root's CRL revokes: its leaves are refused (chain sent or not, and a session made before)"
    else
        fail "revoked intermediate" "current CRLs (chain, leaf), resumed after rotation, revoked (chain, leaf): $c; log: $(tail -2 "$LB_LOG")"
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
    # SPEC 4: an sni line's own ca replaces the listener's, with verify
    # required as its default, also on a listener that has no ca at all.
    conf_global >"$W/snica.conf"
    cat >>"$W/snica.conf" <<EOF
listener tls
    bind 127.0.0.1:$lp
    mode tcp
    cert $PKI/server.crt $PKI/server.key
    sni app.example.com $PKI/app.crt $PKI/app.key ca $PKI/app-ca.crt
    default-backend web
backend web
    server a 127.0.0.1:$bp
EOF
    start_lb "$W/snica.conf" || { fail sni-ca "no mtlslb"; return; }
    local r=(--resolve "app.example.com:$lp:127.0.0.1" "https://app.example.com:$lp/")
    c="$(cas app-client "${r[@]}") $(curl -s -o /dev/null -w '%{http_code}' --max-time 10 \
        --cacert "$PKI/ca.crt" "${r[@]}") $(cget "${r[@]}") $(curl -s -o /dev/null \
        -w '%{http_code}' --max-time 10 --cacert "$PKI/ca.crt" "https://localhost:$lp/")"
    if [ "$c" = "200 000 000 200" ]; then
        pass "an sni line's own ca on a listener without one: that name's clients are verified"
    else
        fail "sni ca without listener ca" "app-client, none, other CA, default name: $c"
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
        # v2 on a resumed session (a TLS 1.3 ticket, a TLS 1.2 session id):
        # the certificate came with the session, not on this connection, so
        # CLIENT_SSL | CERT_SESS (0x05) without CERT_CONN (proxy-protocol.txt
        # 2.2.5; haproxy sets it only when verification ran on the
        # connection); the identity is the session's.
        if [ $v = v2 ]; then
            local sv out=""
            for sv in 1_3 "1_2 -no_ticket"; do
                set -- $sv
                ossl_get "$lp" "$1" / "${@:2}" -sess_out "$W/pp.sess" >/dev/null
                out+="$(ossl_get "$lp" "$1" / "${@:2}" -sess_in "$W/pp.sess" | sed -n '1p;/^{/p' | tr '\n' ' ')|"
            done
            if python3 - "$out" <<'EOF'
import json, sys
runs = [r for r in sys.argv[1].split("|") if r]
assert len(runs) == 2, runs
for r in runs:
    assert r.startswith("Reused "), r
    s = json.loads(r[len("Reused "):])["ssl"]
    assert s["client"] == 5 and s["verify"] == 0 and s["cn"] == "client-good", s
EOF
            then
                pass "send-proxy v2 on a resumed session (TLS 1.3 ticket, TLS 1.2 session id): client flags 0x05, the session's CN"
            else
                fail "send-proxy v2 resumed" "$out"
            fi
        fi
        stop_lb
    done
    # v2, verify optional, a client without a certificate: verify is
    # non-zero (PROXY protocol 2.2.5: zero only if a certificate was
    # presented and verified), no CN, client flags CLIENT_SSL only; the
    # TLS 1.3 cipher by its standard name, as haproxy sends it.
    conf_tcp "$lp" "    server p 127.0.0.1:$bp" "    send-proxy v2
    verify optional" >"$W/proxy-opt.conf"
    if start_lb "$W/proxy-opt.conf"; then
        body=$(curl -s --max-time 10 --tlsv1.3 --cacert "$PKI/ca.crt" "https://localhost:$lp/")
        if python3 - "$body" <<'EOF'
import json, sys
s = json.loads(sys.argv[1])["ssl"]
assert s["verify"] != 0 and s["client"] == 1 and not s["cn"], s
assert s["version"] == "TLSv1.3" and s["cipher"].startswith("TLS_"), s
EOF
        then
            pass "send-proxy v2, no client certificate (verify optional): verify non-zero, no CN, the cipher's standard name"
        else
            fail "send-proxy v2 without a certificate" "backend saw: $body"
        fi
        stop_lb
    else
        fail "proxy verify optional" "no mtlslb"
    fi
    # http mode: every request goes over a new server connection that opens
    # with its client's PROXY header (none is pooled: the header names one
    # client); two requests on one keep-alive client connection.
    conf_http "$lp" "backend web
    server p 127.0.0.1:$bp" | sed 's/^    mode http$/&\n    send-proxy v2/' >"$W/proxy-http.conf"
    start_lb "$W/proxy-http.conf" || { fail "proxy http" "no mtlslb"; stop_backend "$bp"; return; }
    body=$(curl -s --max-time 10 --cacert "$PKI/ca.crt" --cert "$PKI/client.crt" \
        --key "$PKI/client.key" "https://localhost:$lp/a" "https://localhost:$lp/b")
    if python3 - "$lp" "$body" <<'EOF'
import json, sys
port, body = int(sys.argv[1]), sys.argv[2].split("\n")
js = [json.loads(l) for l in body if l.strip()]
assert len(js) == 2, js
for j in js:
    assert j["version"] == 2 and j["src"] == "127.0.0.1" and j["dport"] == port, j
    assert j["ssl"]["cn"] == "client-good", j
EOF
    then
        pass "send-proxy v2 in mode http: each request's server connection opens with the client's PROXY header"
    else
        fail "send-proxy http" "backend saw: $body"
    fi
    stop_lb
    stop_backend "$bp"
    # A tls server: the header comes first, then the TLS handshake (as
    # haproxy's send-proxy to an ssl server); tcp mode.
    start_backend proxy "$bp" p --tls-cert "$PKI/server.crt" --tls-key "$PKI/server.key"
    conf_tcp "$lp" "    server p 127.0.0.1:$bp tls ca $PKI/ca.crt sni localhost" "    send-proxy v1" \
        >"$W/proxy-tls.conf"
    start_lb "$W/proxy-tls.conf" || { fail "proxy tls" "no mtlslb"; stop_backend "$bp"; return; }
    body=$(curl -s --max-time 10 --cacert "$PKI/ca.crt" --cert "$PKI/client.crt" \
        --key "$PKI/client.key" "https://localhost:$lp/")
    if python3 -c 'import json,sys; j=json.loads(sys.argv[1]); assert j["tls"] and j["version"] == 1 and j["src"] == "127.0.0.1", j' "$body" 2>/dev/null; then
        pass "send-proxy to a tls server: the PROXY header precedes the TLS handshake"
    else
        fail "send-proxy tls" "backend saw: $body $(tail -2 "$W/be.$bp.log" 2>/dev/null)"
    fi
    stop_lb
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
    # A handshake still open when grace ends is logged and counted as one
    # that timed out.
    conf_tcp "$lp" "    server a 127.0.0.1:$bp" |
        sed 's/^    grace .*/    grace 500ms/; s/^    timeout handshake .*/    timeout handshake 10s/' >"$W/st3.conf"
    start_lb "$W/st3.conf" || { fail grace-handshake "no mtlslb"; return; }
    exec 7<>"/dev/tcp/127.0.0.1/$lp"
    sleep 0.3
    stop_lb
    exec 7<&-
    if [ "$LB_RC" = 0 ] &&
       grep -q 'handshake failed .*reason="handshake timeout" detail="stopped (grace period over)"' "$LB_LOG"; then
        pass "SIGTERM: a handshake still open at the end of grace is logged (handshake timeout)"
    else
        fail "grace handshake" "rc=$LB_RC; $(tail -2 "$LB_LOG")"
    fi
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
    out=$(env -u MAKEFLAGS -u MAKELEVEL make -s -C "$ROOT" install SAN=0 BIN="$W/mtlslb-gcc" \
        PREFIX=/usr DESTDIR="$W/inst" 2>&1)
    if [ -x "$W/inst/usr/bin/mtlslb" ] && [ -f "$W/inst/usr/share/mtlslb/sample.conf" ]; then
        pass "make install honours PREFIX and DESTDIR"
    else
        fail "make install" "$out $(find "$W/inst" 2>/dev/null)"
    fi
    out=$(env -u MAKEFLAGS -u MAKELEVEL -u CC make -n -B -C "$ROOT" SAN=0 CROSS_COMPILE=aarch64-linux-gnu- \
        WOLFSSL_PREFIX=/opt/wolf BIN="$W/x" 2>&1)
    if grep -q "^aarch64-linux-gnu-gcc .*-I/opt/wolf/include .*-L/opt/wolf/lib .*-lwolfssl" <<<"$out"; then
        pass "CROSS_COMPILE and WOLFSSL_PREFIX reach the compile line"
    else
        fail "cross variables" "$out"
    fi
    out=$(env -u MAKEFLAGS -u MAKELEVEL make -s -C "$ROOT" static SAN=0 BIN="$W/mtlslb-static" 2>&1)
    if [ -x "$W/mtlslb-static" ] && ! readelf -d "$W/mtlslb-static" 2>/dev/null | grep -q NEEDED &&
       "$W/mtlslb-static" -V | grep -q "^mtlslb "; then
        pass "make static: a static binary that runs ($(stat -c %s "$W/mtlslb-static") bytes)"
    else
        fail "make static" "$out"
    fi
}

t_timeouts() {
    local lp bp slow out c sp
    newport lp; newport bp; newport slow
    start_backend http "$bp" web1
    conf_tcp "$lp" "    server a 127.0.0.1:$bp" | sed 's/timeout idle 20s/timeout idle 1s/' >"$W/idle.conf"
    start_lb "$W/idle.conf" || { fail idle-timeout "no mtlslb"; return; }
    out=$(tlsclient --connect "127.0.0.1:$lp" --cert "$PKI/client.crt" --key "$PKI/client.key" \
        --ca "$PKI/ca.crt" --servername localhost hold --seconds 5 2>&1)
    sleep 0.2
    if [[ $out == *"closed by server after"* ]] && grep -q 'end="idle timeout"' "$LB_LOG"; then
        pass "timeout idle: a silent connection is closed ($(grep -o 'closed by server after [0-9.]* s' <<<"$out"))"
    else
        fail "idle timeout" "$out"
    fi
    stop_lb
    # A server whose listen queue is full never completes the connect: after
    # timeout connect (1 s) the next server is tried.
    start_backend stall "$slow"
    conf_tcp "$lp" "    server slow 127.0.0.1:$slow
    server a 127.0.0.1:$bp" >"$W/ctmo.conf"
    start_lb "$W/ctmo.conf" || { fail connect-timeout "no mtlslb"; stop_backend "$slow"; return; }
    c=$(cget "https://localhost:$lp/")
    if [ "$c" = 200 ] && grep -q "server slow .*connect failed: Connection timed out" "$LB_LOG"; then
        pass "timeout connect: a server that never answers the connect is left for the next"
    else
        fail "connect timeout" "curl got $c; $(grep 'connect failed' "$LB_LOG" | tail -1)"
    fi
    stop_lb
    stop_backend "$slow"
    stop_backend "$bp"
}

# Out of file descriptors: accepting pauses (logged once) and recovers.
t_fd_exhaustion() {
    local lp bp i ok=0 c open_fds pids=()
    newport lp; newport bp
    start_backend http "$bp" web1
    conf_tcp "$lp" "    server a 127.0.0.1:$bp" >"$W/fd.conf"
    start_lb "$W/fd.conf" || { fail fd-exhaustion "no mtlslb"; return; }
    # Room for two connections (two fds each) above what is open now.
    open_fds=$(ls /proc/$LB_PID/fd | wc -l)
    prlimit --pid "$LB_PID" --nofile=$((open_fds + 4)):
    for i in 1 2 3 4 5 6; do
        tlsclient --connect "127.0.0.1:$lp" --cert "$PKI/client.crt" --key "$PKI/client.key" \
            --ca "$PKI/ca.crt" --servername localhost --timeout 20 hold --seconds 1.5 \
            >"$W/fdhold.$i" 2>&1 &
        pids+=($!)
    done
    wait "${pids[@]}"
    prlimit --pid "$LB_PID" --nofile=1024:
    c=$(cget "https://localhost:$lp/")
    for i in 1 2 3 4 5 6; do grep -q "handshake ok" "$W/fdhold.$i" && ok=$((ok + 1)); done
    if [ "$c" = 200 ] && [ "$(grep -c 'pausing accepts' "$LB_LOG")" = 1 ] && [ $ok = 6 ] &&
       [ "$(grep -c 'conn .* cn=client-good ' "$LB_LOG")" = 7 ]; then
        pass "EMFILE: accepting pauses, logged once; all 6 queued clients served two at a time, identity intact"
    else
        fail "fd exhaustion" "curl $c, $(grep -c 'pausing accepts' "$LB_LOG") pause lines, $ok/6 served, $(grep -c 'conn .* cn=client-good ' "$LB_LOG")/7 with CN"
    fi
    stop_lb
    stop_backend "$bp"
}

# s_client_ok PORT ARGS: does a handshake with these openssl options succeed?
s_client_ok() {
    local port=$1; shift
    openssl s_client -connect "127.0.0.1:$port" -cert "$PKI/client.crt" -key "$PKI/client.key" \
        -CAfile "$PKI/ca.crt" "$@" </dev/null 2>&1 | grep -q "^New, TLSv1"
}

t_tls_options() {
    local lp bp out want
    newport lp; newport bp
    start_backend http "$bp" web1
    conf_tcp "$lp" "    server a 127.0.0.1:$bp" >"$W/def.conf"
    start_lb "$W/def.conf" || { fail tls-defaults "no mtlslb"; return; }
    if s_client_ok "$lp" -tls1_2 -cipher ECDHE-ECDSA-AES128-GCM-SHA256 &&
       ! s_client_ok "$lp" -tls1_2 -cipher ECDHE-ECDSA-AES128-SHA &&
       ! s_client_ok "$lp" -tls1_2 -cipher AES128-GCM-SHA256; then
        pass "default ciphers: ECDHE with AEAD only (CBC and static-RSA suites refused)"
    else
        fail "default ciphers" "a non-ECDHE or non-AEAD suite was accepted, or the default was not"
    fi
    # The server's preference: ChaCha20-Poly1305 where wolfSSL has no AES
    # instructions (Debian's shared build, the SMALL=1 build: TLS_FIRST),
    # AES-GCM where it has (the static WOLFSSL_SRC build on x86_64),
    # whatever order the client offers.
    want=AES; ldd "$BIN" 2>/dev/null | grep -q libwolfssl && want=CHACHA20
    want=${TLS_FIRST:-$want}
    out=$(for v in -tls1_3 -tls1_2; do
        openssl s_client -connect "127.0.0.1:$lp" -cert "$PKI/client.crt" -key "$PKI/client.key" \
            -CAfile "$PKI/ca.crt" $v </dev/null 2>&1 | sed -n 's/^New, TLSv1.*Cipher is //p'
    done | tr '\n' ' ')
    if [ "$(grep -o "$want" <<<"$out" | wc -l)" = 2 ]; then
        pass "default cipher preference: $want first for this wolfSSL ($out)"
    else
        fail "default cipher preference" "want $want, got $out"
    fi
    stop_lb
    conf_tcp "$lp" "    server a 127.0.0.1:$bp" "    tls-min 1.3" >"$W/tls13.conf"
    start_lb "$W/tls13.conf" || { fail tls-min "no mtlslb"; return; }
    if s_client_ok "$lp" -tls1_3 && ! s_client_ok "$lp" -tls1_2; then
        pass "tls-min 1.3 refuses TLS 1.2"
    else
        fail "tls-min 1.3" "TLS 1.2 accepted or TLS 1.3 refused"
    fi
    stop_lb
    conf_tcp "$lp" "    server a 127.0.0.1:$bp" "    ciphers ECDHE-ECDSA-AES256-GCM-SHA384" >"$W/ciph.conf"
    start_lb "$W/ciph.conf" || { fail ciphers "no mtlslb"; return; }
    if s_client_ok "$lp" -tls1_2 -cipher ECDHE-ECDSA-AES256-GCM-SHA384 &&
       ! s_client_ok "$lp" -tls1_2 -cipher ECDHE-ECDSA-AES128-GCM-SHA256; then
        pass "ciphers restricts the TLS 1.2 suites to the list"
    else
        fail ciphers "list not honoured"
    fi
    stop_lb
    conf_tcp "$lp" "    server a 127.0.0.1:$bp" "    ciphers NOT-A-CIPHER" >"$W/badciph.conf"
    out=$("$BIN" -t -c "$W/badciph.conf" 2>&1)
    if [ $? = 1 ] && grep -q "badciph.conf:13: no usable cipher in 'NOT-A-CIPHER'" <<<"$out"; then
        pass "-t refuses an unusable ciphers line"
    else
        fail "bad ciphers" "$out"
    fi
    # tls-min 1.3 with a list of TLS 1.2 suites only would refuse every
    # handshake: a configuration error, on the ciphers line.
    conf_tcp "$lp" "    server a 127.0.0.1:$bp" "    tls-min 1.3
    sni app.example.com $PKI/app.crt $PKI/app.key
    ciphers ECDHE-ECDSA-AES128-GCM-SHA256" >"$W/ciph13.conf"
    out=$("$BIN" -t -c "$W/ciph13.conf" 2>&1)
    if [ $? = 1 ] && [ "$out" = "$W/ciph13.conf:15: no TLS 1.3 cipher in 'ECDHE-ECDSA-AES128-GCM-SHA256', and tls-min is 1.3" ] &&
       sed -i 's/ciphers ECDHE-ECDSA-AES128-GCM-SHA256$/&:TLS13-AES128-GCM-SHA256/' "$W/ciph13.conf" &&
       "$BIN" -t -c "$W/ciph13.conf" >/dev/null 2>&1; then
        pass "-t refuses tls-min 1.3 with no TLS 1.3 cipher in the list (once), takes it with one"
    else
        fail "tls-min 1.3 ciphers" "$out"
    fi
    stop_backend "$bp"
}

# The README's copy-paste PKI block works, end to end.
t_readme_pki() {
    local d=$W/readme lp bp c
    newport lp; newport bp
    mkdir -p "$d"
    awk '/^    cat >ca.cnf/,/-gencrl -out ca.crl/' "$ROOT/README" | sed 's/^    //' >"$d/steps.sh"
    if ! (cd "$d" && bash -e steps.sh >steps.out 2>&1); then
        fail "README PKI" "$(tail -3 "$d/steps.out")"; return
    fi
    start_backend http "$bp" web1
    cat >"$d/m.conf" <<EOF
listener r
    bind 127.0.0.1:$lp
    mode tcp
    cert server.crt server.key
    ca ca.crt
    crl ca.crl
    default-backend b
backend b
    server s 127.0.0.1:$bp
EOF
    start_lb "$d/m.conf" || { fail "README PKI" "no mtlslb"; return; }
    c=$(curl -s -o /dev/null -w '%{http_code}' --max-time 10 --cacert "$d/ca.crt" \
        --cert "$d/client.crt" --key "$d/client.key" "https://localhost:$lp/")
    if [ "$c" = 200 ]; then
        pass "the README's PKI block makes a CA, server, client and CRL that work"
    else
        fail "README PKI" "curl got $c"
    fi
    stop_lb
    stop_backend "$bp"
}

t_signals() {
    local lp bp c
    newport lp; newport bp
    start_backend http "$bp" web1
    conf_tcp "$lp" "    server a 127.0.0.1:$bp" >"$W/sig.conf"
    start_lb "$W/sig.conf" || { fail signals "no mtlslb"; return; }
    cget "https://localhost:$lp/" >/dev/null
    cas revoked "https://localhost:$lp/" >/dev/null
    kill -USR1 "$LB_PID"
    kill -HUP "$LB_PID"
    sleep 0.3
    c=$(cget "https://localhost:$lp/")
    if [ "$c" = 200 ] &&
       grep -q 'stats listener=tls active=0 total=2 handshake_failures: "revoked"=1' "$LB_LOG" &&
       grep -q "stats backend=web server=a state=up active=0 requests=1 total=1 " "$LB_LOG" &&
       grep -q "reload: configuration of .* in use" "$LB_LOG"; then
        pass "SIGUSR1 logs the counters; SIGHUP reloads and serving goes on"
    else
        fail signals "curl $c; $(grep -E 'stats|SIGHUP' "$LB_LOG")"
    fi
    stop_lb
    stop_backend "$bp"
}

t_log_level() {
    local lp bp dead c
    newport lp; newport bp; newport dead
    start_backend http "$bp" web1
    conf_tcp "$lp" "    server down 127.0.0.1:$dead
    server a 127.0.0.1:$bp" | sed 's/log-level info/log-level warn/' >"$W/warn.conf"
    LB_LOG=$W/lb.warn.log
    "$BIN" -c "$W/warn.conf" 2>"$LB_LOG" &
    LB_PID=$!
    wait_port "$lp" || { fail log-level "no mtlslb"; return; }
    c=$(cget "https://localhost:$lp/")
    cas revoked "https://localhost:$lp/" >/dev/null
    sleep 0.2
    if [ "$c" = 200 ] && grep -q " warn backend web server down .*connect failed" "$LB_LOG" &&
       ! grep -q " info \| debug " "$LB_LOG"; then
        pass "log-level warn: warnings only, no connection or handshake lines"
    else
        fail log-level "curl $c; $(cat "$LB_LOG")"
    fi
    # SIGUSR1 asks for the stats: written (at info) whatever log-level says.
    kill -USR1 "$LB_PID"
    if wait_log "info stats backend=web server=a state=up " 3 >/dev/null &&
       grep -q " info stats listener=tls " "$LB_LOG"; then
        pass "log-level warn: SIGUSR1 still writes the stats"
    else
        fail "log-level SIGUSR1" "$(tail -3 "$LB_LOG")"
    fi
    kill -TERM "$LB_PID"; wait "$LB_PID"; LB_PID=
    stop_backend "$bp"
}

t_ipv6() {
    local lp bp c
    newport lp; newport bp
    if ! python3 -c 'import socket; s=socket.socket(socket.AF_INET6); s.bind(("::1", 0))' 2>/dev/null; then
        pass "IPv6 (skipped: no ::1 on this machine)"; return
    fi
    start_backend proxy "$bp"
    conf_tcp "$lp" "    server a 127.0.0.1:$bp" "    send-proxy v1" |
        sed "s/bind 127.0.0.1:$lp/bind [::1]:$lp/" >"$W/v6.conf"
    start_lb "$W/v6.conf" || { fail ipv6 "no mtlslb"; return; }
    c=$(curl -s --max-time 10 --cacert "$PKI/ca.crt" --cert "$PKI/client.crt" --key "$PKI/client.key" \
        "https://[::1]:$lp/")
    if python3 -c 'import json,sys; j=json.loads(sys.argv[1]); assert j["src"]=="::1" and j["dst"]=="::1"' "$c" 2>/dev/null &&
       grep -q "conn \[::1\]:" "$LB_LOG"; then
        pass "IPv6 listener: [::1] served, the PROXY v1 header says TCP6 ::1"
    else
        fail ipv6 "got $c"
    fi
    stop_lb
    stop_backend "$bp"
}

# A client that sends without reading: buffers stay bounded (back-pressure).
t_backpressure() {
    local lp bp before out sent rss
    newport lp; newport bp
    start_backend echo "$bp"
    conf_tcp "$lp" "    server e 127.0.0.1:$bp" >"$W/bp.conf"
    start_lb "$W/bp.conf" || { fail back-pressure "no mtlslb"; return; }
    cget "https://localhost:$lp/" >/dev/null        # warm up: first-use allocations
    before=$(awk '/VmRSS/ {print $2}' "/proc/$LB_PID/status")
    out=$(python3 - "$lp" "$PKI" "$LB_PID" <<'PY'
import socket, ssl, sys
port, pki, pid = int(sys.argv[1]), sys.argv[2], sys.argv[3]
ctx = ssl.create_default_context(cafile=pki + "/ca.crt")
ctx.load_cert_chain(pki + "/client.crt", pki + "/client.key")
s = ctx.wrap_socket(socket.create_connection(("127.0.0.1", port)), server_hostname="localhost")
s.settimeout(3)
sent = 0
chunk = b"x" * 65536
try:
    while sent < 200 * 1024 * 1024:
        s.sendall(chunk)
        sent += len(chunk)
except (socket.timeout, OSError):
    pass
rss = [l for l in open("/proc/%s/status" % pid) if l.startswith("VmRSS")][0].split()[1]
print(sent, rss)
PY
)
    sent=${out% *}; rss=${out#* }
    # AddressSanitizer's quarantine keeps freed memory: RSS says nothing there.
    [ "${MTLSLB_SAN:-0}" = 1 ] && before=$rss
    if [ -n "$sent" ] && [ "$sent" -lt $((200 * 1024 * 1024)) ] && [ $((rss - before)) -lt 4096 ]; then
        pass "back-pressure: a client that never reads is held after $((sent / 1024)) KiB; mtlslb RSS +$((rss - before)) KiB"
    else
        fail back-pressure "sent $sent bytes, RSS $before -> $rss KiB"
    fi
    stop_lb
    stop_backend "$bp"
}

# Resumption keeps the identity, and never crosses from one sni name's CA
# to another name.
t_resumption() {
    local lp bp out
    newport lp; newport bp
    start_backend http "$bp" web1
    conf_tcp "$lp" "    server a 127.0.0.1:$bp" "    sni app.example.com $PKI/app.crt $PKI/app.key ca $PKI/app-ca.crt" \
        >"$W/resume.conf"
    start_lb "$W/resume.conf" || { fail resumption "no mtlslb"; return; }
    out=$(resume_matrix "$lp" "1.3 app.example.com app-client" "1.3 localhost client" "1.2 localhost client")
    sleep 0.2
    # Tickets carry the identity (SPEC 4) and are bound to their sni name:
    # both versions resume on the same name, never on the other one.
    if [ "$out" = "1.3 app.example.com: first=True same=True other=False
1.3 localhost: first=True same=True other=False
1.2 localhost: first=True same=True other=False" ] &&
       [ "$(grep -c 'conn .* sni=app.example.com cn=app-client ' "$LB_LOG")" = 2 ] &&
       [ "$(grep -c 'conn .* sni=localhost cn=client-good ' "$LB_LOG")" = 4 ]; then
        pass "with client certificates and sni lines: TLS 1.2 and 1.3 resume with the identity, never on another name"
    else
        fail "resumption with sni" "$(tr '\n' ' ' <<<"$out")"
    fi
    # The session cache (TLS 1.2 session ids, no ticket) is on there too
    # (SPEC 4), and a session id made under one name does not resume under
    # the other: a full handshake or a refusal, never a 200 on it.
    if [ "${WORKERS:-1}" = 1 ]; then
        ossl_get "$lp" 1_2 / -no_ticket -sess_out "$W/sni.sid" >/dev/null
        out="$(ossl_get "$lp" 1_2 / -no_ticket -sess_in "$W/sni.sid" | head -2 | tr '\r\n' '  ')|$(ossl_get "$lp" 1_2 / -no_ticket -sess_in "$W/sni.sid" -servername app.example.com | head -2 | tr '\r\n' '  ')"
        if [[ $out == "Reused HTTP/1.1 200"*"|"* ]] && [[ ${out#*|} != Reused*"HTTP/1.1 200"* ]] &&
           grep -q "TLS 1.2 session of another sni name" "$LB_LOG"; then
            pass "with sni lines, TLS 1.2 session ids resume on their own name, never on the other"
        else
            fail "session id with sni" "$out"
        fi
    fi
    stop_lb
    conf_tcp "$lp" "    server a 127.0.0.1:$bp" >"$W/resume2.conf"
    start_lb "$W/resume2.conf" || { fail resumption "no mtlslb"; return; }
    out=$(resume_matrix "$lp" "1.2 localhost client")
    sleep 0.2
    # No sni lines: every name is the default certificate and CA.
    if [ "$out" = "1.2 localhost: first=True same=True other=True" ] &&
       [ "$(grep -c 'conn .* cn=client-good ' "$LB_LOG")" = 3 ]; then
        pass "without sni lines TLS 1.2 resumes too, keeping the identity"
    else
        fail "TLS 1.2 resumption" "$out"
    fi
    stop_lb
    # http: a resumed session's requests carry the identity headers.
    conf_http "$lp" "backend web
    server a 127.0.0.1:$bp" >"$W/resume3.conf"
    start_lb "$W/resume3.conf" || { fail resumption "no mtlslb"; return; }
    for v in 1_3 1_2 "1_2 -no_ticket"; do
        set -- $v                   # version [option]
        ossl_get "$lp" "$1" /headers "${@:2}" -sess_out "$W/sess" >/dev/null
        out=$(ossl_get "$lp" "$1" /headers "${@:2}" -sess_in "$W/sess")
        # With workers, a session id resumes only on the worker whose cache
        # has it (tickets resume on any): a full handshake is right too.
        if [[ $out == Reused*"HTTP/1.1 200"*"X-Client-Verify: SUCCESS"*"X-Client-Subject: CN=client-good"*"X-Client-Fingerprint: "* ]] ||
           { [ "${WORKERS:-1}" -gt 1 ] && [ "${2:-}" = -no_ticket ] &&
             [[ $out == New*"HTTP/1.1 200"*"X-Client-Subject: CN=client-good"* ]]; }; then
            pass "http, TLS ${v/_/.} resumed: the request carries the client certificate's identity"
        else
            fail "http TLS ${v/_/.} resumed identity" "$(tr '\r\n' '  ' <<<"$out")"
        fi
    done
    # A session resumed by id, saved again and resumed again (by a ticket if
    # wolfSSL issued one then, else by id): the identity stays.
    if [ "${WORKERS:-1}" = 1 ]; then
        ossl_get "$lp" 1_2 /headers -no_ticket -sess_out "$W/sess.id" >/dev/null
        ossl_get "$lp" 1_2 /headers -sess_in "$W/sess.id" -sess_out "$W/sess.tk" >/dev/null
        out=$(ossl_get "$lp" 1_2 /headers -sess_in "$W/sess.tk")
        if [[ $out == Reused*"HTTP/1.1 200"*"X-Client-Subject: CN=client-good"* ]]; then
            pass "http, TLS 1.2: a session resumed by id resumes again with the identity"
        else
            fail "resumed twice" "$(tr '\r\n' '  ' <<<"$out")"
        fi
    fi
    # A request sent in one segment with the client's Finished: mtlslb
    # holds its TLS 1.3 ticket back (MSG_MORE) to leave with the response,
    # which ends with close_notify and FIN in the same segment.  The ticket
    # must arrive all the same, and the response whole.
    out=$(tlsclient --connect "127.0.0.1:$lp" --cert "$PKI/client.crt" --key "$PKI/client.key" \
        --ca "$PKI/ca.crt" --servername localhost --tls 1.3 resume --with-finished \
        --send 'GET /headers HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n' 2>&1)
    if [[ $out == "reused yes"*"HTTP/1.1 200"*"X-Client-Subject: CN=client-good"* ]] &&
       [ "$(grep -c 'req .* status=200 method=GET path="/headers"' "$LB_LOG")" -ge 2 ]; then
        pass "http, TLS 1.3: a request sent with the Finished gets its response, and the ticket held back for it resumes"
    else
        fail "ticket with the response" "$(tr '\r\n' '  ' <<<"$out")"
    fi
    # What is held back for the close (ticket, response, close_notify) is
    # one buffer of 16 KB: responses under it, across it and far over it
    # arrive whole, then the close, and the ticket resumes.
    local n ok=1 got first
    for n in 100 16000 16500 70000; do
        out=$(tlsclient --connect "127.0.0.1:$lp" --cert "$PKI/client.crt" --key "$PKI/client.key" \
            --ca "$PKI/ca.crt" --servername localhost --tls 1.3 resume -v --with-finished \
            --send "GET /bytes/$n HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n" 2>&1)
        got=$(grep -o 'xxxx*' <<<"$out" | tr -d '\n' | wc -c)
        first=$(sed -n 's/.*first response: \([0-9]*\) bytes.*/\1/p' <<<"$out")
        if [[ $out != *"reused yes"*"HTTP/1.1 200"* ]] || [ "$got" != "$n" ] ||
           [ "${first:-0}" -le "$n" ] || [ "$first" -gt $((n + 400)) ]; then
            ok=0
            fail "response of $n bytes with the ticket and close" "got $got: $(head -c 300 <<<"$out" | tr '\r\n' '  ')"
        fi
    done
    [ $ok = 1 ] && pass "http, TLS 1.3, Connection: close: responses of 100 B to 70 KB arrive whole with the ticket held for them"
    stop_lb
    stop_backend "$bp"
}

# ossl_get PORT VERSION PATH OPTION...: one request by openssl s_client with
# the client certificate, e.g. saving (-sess_out F) or offering (-sess_in F)
# a session; prints "New"/"Reused", then the response.
ossl_get() {
    printf 'GET %s HTTP/1.0\r\nHost: localhost\r\n\r\n' "$3" |
        timeout 10 openssl s_client -connect "127.0.0.1:$1" "-tls$2" -servername localhost \
            -cert "$PKI/client.crt" -key "$PKI/client.key" -CAfile "$PKI/ca.crt" "${@:4}" \
            -ign_eof 2>&1 | sed -n 's/^\(New\|Reused\), TLS.*/\1/p; /^HTTP\/1/,$p'
}

# resume_matrix PORT "VERSION NAME CERT"...: for each, a full handshake, a
# resumption on the same name, a resumption attempt on the other name
# (app.example.com <-> localhost); prints whether each got a 200 resumed.
resume_matrix() {
    python3 - "$PKI" "$@" <<'PY'
import socket, ssl, sys
pki, port = sys.argv[1] + "/", int(sys.argv[2])

def get(ctx, sni, session=None):
    try:
        s = ctx.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=5),
                            server_hostname=sni, session=session)
        s.sendall(b"GET / HTTP/1.0\r\n\r\n")
        data = b""
        while True:
            d = s.recv(4096)
            if not d:
                break
            data += d
    except (ssl.SSLError, OSError):
        return None, False
    sess, reused = s.session, s.session_reused
    s.close()
    return sess, data.split(b"\r\n", 1)[0].endswith(b" 200 OK") and (session is None or reused)

for case in sys.argv[3:]:
    ver, sni, cert = case.split()
    other = "localhost" if sni != "localhost" else "app.example.com"
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.load_verify_locations(pki + "ca.crt")
    ctx.minimum_version = ctx.maximum_version = getattr(ssl.TLSVersion, "TLSv1_" + ver[-1])
    ctx.load_cert_chain(pki + cert + ".crt", pki + cert + ".key")
    sess, first = get(ctx, sni)
    _, same = get(ctx, sni, sess)
    _, cross = get(ctx, other, sess)
    print("%s %s: first=%s same=%s other=%s" % (ver, sni, first, same, cross))
PY
}

# A side that waits for its peer costs no CPU: a client resets its
# connection while mtlslb is still connecting to a server that never
# answers; poll() reports the reset at once, but nothing can be done until
# the connect ends, so the client side must leave the poll set.
t_no_spin() {
    local lp slow sp out
    newport lp; newport slow
    start_backend stall "$slow"
    conf_tcp "$lp" "    server slow 127.0.0.1:$slow" | sed 's/timeout connect 1s/timeout connect 4s/' >"$W/nospin.conf"
    start_lb "$W/nospin.conf" || { fail no-spin "no mtlslb"; stop_backend "$slow"; return; }
    out=$(python3 - "$lp" "$PKI" "$LB_PID" <<'PY'
import os, socket, ssl, struct, sys, time
port, pki, pid = int(sys.argv[1]), sys.argv[2] + "/", sys.argv[3]
tick = os.sysconf("SC_CLK_TCK")
def cpu():
    f = open("/proc/%s/stat" % pid).read().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / tick
ctx = ssl.create_default_context(cafile=pki + "ca.crt")
ctx.load_cert_chain(pki + "client.crt", pki + "client.key")
s = ctx.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=5), server_hostname="localhost")
s.sendall(b"hello")
time.sleep(0.3)                          # mtlslb is connecting now
s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
s.close()                                # RST
time.sleep(0.2)
c0 = cpu()
time.sleep(2)
print("%.2f" % (cpu() - c0))
PY
)
    if [ -n "$out" ] && python3 -c "import sys; sys.exit(float('$out') > 0.5)"; then
        pass "a reset client waiting on a slow connect costs no CPU ($out s over 2 s)"
    else
        fail no-spin "mtlslb used $out s of CPU in 2 s"
    fi
    stop_lb
    stop_backend "$slow"
}

# ------------------------------------------------------------ http mode

# conf_http PORT BACKENDS_AND_MORE [LISTENER_EXTRA]: one http listener whose
# default backend is web; the caller writes the backend sections.
conf_http() {
    conf_global | sed 's/timeout idle 20s/timeout idle 2s\n    timeout request 1s/'
    cat <<EOF
listener https
    bind 127.0.0.1:$1
    mode http
    cert $PKI/server.crt $PKI/server.key
    ca $PKI/ca.crt
    crl $PKI/ca.crl
${3:-}
    default-backend web
$2
EOF
}

# hraw PORT STRING [tlsclient raw options]: send STRING over mTLS, print the reply.
hraw() {
    local port=$1 str=$2; shift 2
    tlsclient --connect "127.0.0.1:$port" --cert "$PKI/client.crt" --key "$PKI/client.key" \
        --ca "$PKI/ca.crt" --servername localhost --timeout 5 raw --send "$str" "$@" 2>&1
}

# status lines of a raw reply, space-separated
statuses() { grep -o '^HTTP/1\.[01] [0-9][0-9][0-9]' | awk '{printf "%s%s", sep, $2; sep=" "}'; }

t_http_keepalive() {
    local lp b1 b2 urls=() i out
    newport lp; newport b1; newport b2
    start_backend http "$b1" one; start_backend http "$b2" two
    conf_http "$lp" "backend web
    server a 127.0.0.1:$b1
    server b 127.0.0.1:$b2" >"$W/ka.conf"
    start_lb "$W/ka.conf" || { fail http-keepalive "no mtlslb"; return; }
    for i in $(seq 10); do urls+=(-o /dev/null "https://localhost:$lp/r$i"); done
    out=$(curl -s -w '%{num_connects} ' --max-time 10 --cacert "$PKI/ca.crt" \
        --cert "$PKI/client.crt" --key "$PKI/client.key" "${urls[@]}")
    if [ "$(hits "$b1")/$(hits "$b2")" = 5/5 ] && [ "$out" = "1 0 0 0 0 0 0 0 0 0 " ]; then
        pass "http: 10 requests on one keep-alive connection alternate 5/5, one TLS handshake"
    else
        fail http-keepalive "split $(hits "$b1")/$(hits "$b2"), connects: $out"
    fi
    out=$(hraw "$lp" 'GET /p1 HTTP/1.1\r\nHost: localhost\r\n\r\nGET /p2 HTTP/1.1\r\nHost: localhost\r\n\r\nGET /p3 HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n' --keep-open)
    if [ "$(statuses <<<"$out")" = "200 200 200" ] && grep -q "GET /p3" "$W/be.$b1.log" "$W/be.$b2.log" &&
       [ "$(grep -h 'GET /p[123]' "$W/be.$b1.log" "$W/be.$b2.log" | wc -l)" = 3 ]; then
        pass "http: three pipelined requests are answered in order"
    else
        fail "http pipelining" "$(statuses <<<"$out")"
    fi
    # The same, the client half-closing (FIN) once they are sent: what it
    # sent before its FIN is answered, in order, then the close.
    out=$(hraw "$lp" 'GET /q1 HTTP/1.1\r\nHost: localhost\r\n\r\nGET /q2 HTTP/1.1\r\nHost: localhost\r\n\r\nGET /q3 HTTP/1.1\r\nHost: localhost\r\n\r\n')
    if [ "$(statuses <<<"$out")" = "200 200 200" ] &&
       [ "$(grep -h 'GET /q[123]' "$W/be.$b1.log" "$W/be.$b2.log" | wc -l)" = 3 ] &&
       [ "$(grep -c 'req .* path="/q[123]"' "$LB_LOG")" = 3 ]; then
        pass "http: three pipelined requests, then the client's FIN: all three answered and logged"
    else
        fail "http pipelining, half-closed" "$(statuses <<<"$out")"
    fi
    stop_lb
    stop_backend "$b1"; stop_backend "$b2"
}

t_http_headers() {
    local lp bp body fp
    newport lp; newport bp
    start_backend http "$bp" web1
    conf_http "$lp" "backend web
    server a 127.0.0.1:$bp" "    forward-cert on" >"$W/hdr.conf"
    start_lb "$W/hdr.conf" || { fail http-headers "no mtlslb"; return; }
    body=$(curl -s --max-time 10 --cacert "$PKI/ca.crt" --cert "$PKI/client.crt" --key "$PKI/client.key" \
        -H "X-Forwarded-For: 6.6.6.6" -H "x-client-subject: CN=admin" -H "X-Real-IP: 6.6.6.6" \
        -H "X-Client-Verify: FORGED" -H "Client-Cert: :Zm9yZ2Vk:" -H "X-Forwarded-Proto: http" \
        -H "X_Client_Verify: FORGED" -H "x-client_subject: CN=admin" \
        -H "Client-Cert-Chain: :Zm9yZ2Vk:" "https://localhost:$lp/headers")
    fp=$(openssl x509 -in "$PKI/client.crt" -outform DER | sha256sum | cut -d' ' -f1)
    if python3 - "$body" "$fp" "$PKI/client.crt" <<'PY'
import base64, subprocess, sys
body, fp, crt = sys.argv[1], sys.argv[2], sys.argv[3]
h = {}
for line in body.splitlines():
    k, _, v = line.partition(": ")
    h.setdefault(k.lower(), []).append(v)
def one(k):
    assert len(h.get(k, [])) == 1, (k, h.get(k))
    return h[k][0]
der = subprocess.run(["openssl", "x509", "-in", crt, "-outform", "DER"], capture_output=True).stdout
ossl = subprocess.run(["openssl", "x509", "-in", crt, "-noout", "-subject", "-issuer", "-serial",
                       "-nameopt", "RFC2253"], capture_output=True, text=True).stdout.splitlines()
assert one("x-forwarded-for") == "127.0.0.1"
assert one("x-real-ip") == "127.0.0.1"
assert one("x-forwarded-proto") == "https"
assert one("x-client-verify") == "SUCCESS"
assert one("x-client-subject") == ossl[0].split("=", 1)[1], (one("x-client-subject"), ossl)
assert one("x-client-issuer") == ossl[1].split("=", 1)[1]
assert one("x-client-serial") == ossl[2].split("=", 1)[1]
assert one("x-client-fingerprint") == fp
import datetime
end = subprocess.run(["openssl", "x509", "-in", crt, "-noout", "-enddate"], capture_output=True,
                     text=True).stdout.strip().split("=", 1)[1]
want = datetime.datetime.strptime(end, "%b %d %H:%M:%S %Y GMT").strftime("%Y-%m-%dT%H:%M:%SZ")
assert one("x-client-not-after") == want, (one("x-client-not-after"), want)
assert one("client-cert") == ":" + base64.b64encode(der).decode() + ":"
for k in ("x_client_verify", "x-client_subject", "client-cert-chain"):
    assert k not in h, (k, h[k])
PY
    then
        pass "http: the backend gets X-Forwarded-*, X-Real-IP and X-Client-* (fingerprint = sha256 of the DER), spoofed copies dropped (X_Client_* and Client-Cert-Chain too)"
    else
        fail http-headers "backend saw: $(tr '\n' '|' <<<"$body")"
    fi
    stop_lb
    stop_backend "$bp"
}

# A certificate whose subject holds CR LF cannot split a header.
t_http_evil_subject() {
    local lp bp body d=$W/evil
    newport lp; newport bp
    mkdir -p "$d"
    openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$d/evil.key" \
        -out "$d/evil.csr" -subj $'/O=Acme/CN=evil\r\nX-Injected: yes' 2>/dev/null
    printf 'basicConstraints=CA:FALSE\nextendedKeyUsage=clientAuth\n' >"$d/ext"
    openssl x509 -req -in "$d/evil.csr" -CA "$PKI/ca.crt" -CAkey "$PKI/ca.key" -days 2 \
        -extfile "$d/ext" -out "$d/evil.crt" 2>/dev/null
    start_backend http "$bp" web1
    conf_http "$lp" "backend web
    server a 127.0.0.1:$bp" >"$W/evil.conf"
    start_lb "$W/evil.conf" || { fail evil-subject "no mtlslb"; return; }
    body=$(curl -s --max-time 10 --cacert "$PKI/ca.crt" --cert "$d/evil.crt" --key "$d/evil.key" \
        "https://localhost:$lp/headers")
    if [ "$(grep -ci '^x-client-subject:' <<<"$body")" = 1 ] &&
       grep -q '^X-Client-Subject: CN=evil\\0D\\0AX-Injected: yes,O=Acme$' <<<"$body" &&
       ! grep -qi '^x-injected' <<<"$body"; then
        pass "http: a subject with CR LF arrives as one X-Client-Subject line, escaped (\\0D\\0A)"
    else
        fail evil-subject "backend saw: $(tr '\n' '|' <<<"$body")"
    fi
    # README: the DN as `openssl x509 -nameopt RFC2253` prints it: '=' in a
    # value unescaped, a multi-valued RDN's attributes last first.
    openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$d/mv.key" \
        -out "$d/mv.csr" -multivalue-rdn -subj '/O=Acme/CN=a=b,c+UID=42' 2>/dev/null
    openssl x509 -req -in "$d/mv.csr" -CA "$PKI/ca.crt" -CAkey "$PKI/ca.key" -days 2 \
        -extfile "$d/ext" -out "$d/mv.crt" 2>/dev/null
    local want
    want=$(openssl x509 -in "$d/mv.crt" -noout -subject -nameopt RFC2253 | sed 's/^subject=//')
    body=$(curl -s --max-time 10 --cacert "$PKI/ca.crt" --cert "$d/mv.crt" --key "$d/mv.key" \
        "https://localhost:$lp/headers")
    if [ "$want" = 'UID=42+CN=a=b\,c,O=Acme' ] && grep -qxF "X-Client-Subject: $want" <<<"$body"; then
        pass "http: X-Client-Subject is OpenSSL's RFC 2253 form ($want)"
    else
        fail "subject as openssl prints it" "openssl: $want; backend saw: $(grep -i '^x-client-subject' <<<"$body")"
    fi
    stop_lb
    stop_backend "$bp"
}

t_http_routes() {
    local lp bw ba bh c
    newport lp; newport bw; newport ba; newport bh
    start_backend http "$bw" web; start_backend http "$ba" api; start_backend http "$bh" app
    conf_http "$lp" "backend web
    server w 127.0.0.1:$bw
backend api
    server a 127.0.0.1:$ba
backend app
    server h 127.0.0.1:$bh" "    sni app.example.com $PKI/app.crt $PKI/app.key
    route host app.example.com backend app
    route path /admin backend api allow cn admin
    route path /api backend api" >"$W/routes.conf"
    start_lb "$W/routes.conf" || { fail http-routes "no mtlslb"; return; }
    get() {
        curl -s --max-time 10 --cacert "$PKI/ca.crt" --cert "$PKI/client.crt" --key "$PKI/client.key" \
            --resolve "app.example.com:$lp:127.0.0.1" "$@"
    }
    c="$(get "https://app.example.com:$lp/api/x") $(get "https://localhost:$lp/api/v1") $(get "https://localhost:$lp/apix") $(get "https://localhost:$lp/")"
    if [ "$c" = "app api api web" ]; then
        pass "http: routes by host, then by path prefix, else the default backend"
    else
        fail http-routes "got '$c'"
    fi
    # A route's allow rule holds for every spelling of its path a server
    # would take for it (escaped unreserved characters, dot segments, //).
    c=""
    for p in /admin /%61dmin //admin /x/../admin /./admin/ /ADMIN; do
        c+=" $(get --path-as-is -o /dev/null -w '%{http_code}' "https://localhost:$lp$p")"
    done
    [ "$c" = " 403 403 403 403 403 200" ] && pass "http: a route's allow rule cannot be passed by another spelling of its path" ||
        fail "http route path spelling" "got$c"
    # absolute-form: the target's authority is the request's host (RFC 9112
    # 3.2.2), for the 421 rule too; a Host naming another host is 400 (as
    # haproxy answers): a server reading Host would serve that other name,
    # past the 421 rule.  The same host in another case or with a port is
    # the same host.
    c=$(hraw "$lp" 'GET http://app.example.com/ HTTP/1.1\r\nHost: app.example.com:443\r\nConnection: close\r\n\r\n' | statuses)
    c+=" $(hraw "$lp" 'GET http://localhost/ HTTP/1.1\r\nHost: app.example.com\r\nConnection: close\r\n\r\n' | statuses)"
    c+=" $(hraw "$lp" 'GET http://app.example.com/ HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n' | statuses)"
    c+=" $(hraw "$lp" 'GET http://LOCALHOST:443/ HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n' | statuses)"
    [ "$c" = "421 400 400 200" ] &&
        pass "http: an absolute-form target naming another sni entry gets 421; a Host naming another host than it, 400" ||
        fail "http absolute-form 421/400" "got $c"
    c=$(get -o /dev/null -w '%{http_code}' -H "Host: APP.example.com:443" "https://localhost:$lp/")
    [ "$c" = 421 ] && pass "http: Host naming another sni entry than the handshake's gets 421" ||
        fail "http 421" "got $c"
    # The other way: a handshake under the sni line, a Host of the default
    # certificate (no sni line names it); the same Host with a port is fine.
    c="$(get -o /dev/null -w '%{http_code}' -H "Host: localhost" "https://app.example.com:$lp/") $(get -o /dev/null -w '%{http_code}' -H "Host: App.Example.com:$lp" "https://app.example.com:$lp/")"
    [ "$c" = "421 200" ] && pass "http: a handshake under an sni line, Host of the default certificate: 421" ||
        fail "http 421 reverse" "got $c"
    # SPEC 8: answers of mtlslb's own count the request's bytes too, and a
    # route's 403 names the backend the route picked.
    if grep -q 'req .* status=421 .* bytes_in=[1-9][0-9]* ' "$LB_LOG" &&
       grep -q 'req .* backend=api/- status=403 .* bytes_in=[1-9][0-9]* ' "$LB_LOG"; then
        pass "http: 421 and 403 log lines count the request's bytes; a route's 403 names its backend"
    else
        fail "http local answers logged" "$(grep -m1 'status=421' "$LB_LOG"); $(grep -m1 'status=403' "$LB_LOG")"
    fi
    stop_lb
    stop_backend "$bw"; stop_backend "$ba"; stop_backend "$bh"
}

t_http_errors() {
    local lp bp silent sp out c
    newport lp; newport bp; newport silent
    start_backend http "$bp" web1
    conf_http "$lp" "backend web
    server a 127.0.0.1:$bp" >"$W/err.conf"
    start_lb "$W/err.conf" || { fail http-errors "no mtlslb"; return; }
    # expect NAME STATUS REQUEST
    expect() {
        out=$(hraw "$lp" "$3")
        if [[ $(statuses <<<"$out") == "$2" ]] && grep -q "^Content-Type: text/plain" <<<"$out"; then
            pass "http: $1 -> $2"
        else
            fail "http $1" "wanted $2, got: $(head -1 <<<"$out")"
        fi
    }
    local H='Host: localhost\r\n'
    expect "malformed request line" 400 'GET /\r\n\r\n'
    expect "Content-Length with Transfer-Encoding" 400 "POST / HTTP/1.1\r\n${H}Content-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
    expect "differing Content-Lengths" 400 "POST / HTTP/1.1\r\n${H}Content-Length: 3\r\nContent-Length: 4\r\n\r\nabcd"
    out=$(hraw "$lp" "POST /headers HTTP/1.1\r\n${H}Content-Length: 3\r\nContent-Length: 3\r\nConnection: close\r\n\r\nabc")
    if [[ $(statuses <<<"$out") == 200 ]] && [ "$(grep -ci '^content-length: 3$' <<<"$out")" = 1 ]; then
        pass "http: two equal Content-Lengths reach the server as one"
    else
        fail "http equal Content-Lengths" "$(tr '\r\n' '||' <<<"$out")"
    fi
    expect "Content-Length with a sign" 400 "POST / HTTP/1.1\r\n${H}Content-Length: +3\r\n\r\nabc"
    expect "Transfer-Encoding: xchunked" 501 "POST / HTTP/1.1\r\n${H}Transfer-Encoding: xchunked\r\n\r\n"
    expect "chunked twice" 400 "POST / HTTP/1.1\r\n${H}Transfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n"
    expect "bad chunk size" 400 "POST / HTTP/1.1\r\n${H}Transfer-Encoding: chunked\r\n\r\nzz\r\nab\r\n0\r\n\r\n"
    expect "overflowing chunk size" 400 "POST / HTTP/1.1\r\n${H}Transfer-Encoding: chunked\r\n\r\n10000000000000000\r\n"
    expect "obs-fold" 400 "GET / HTTP/1.1\r\n${H}X-A: 1\r\n  folded\r\n\r\n"
    expect "blank before the colon" 400 "GET / HTTP/1.1\r\n${H}X-A : 1\r\n\r\n"
    expect "control byte in a value" 400 "GET / HTTP/1.1\r\n${H}X-A: a\x01b\r\n\r\n"
    expect "bare LF" 400 "GET / HTTP/1.1\n${H}\r\n"
    expect "missing Host" 400 'GET / HTTP/1.1\r\n\r\n'
    # A Host a server could read as another host than routes and 421 saw.
    local h
    for h in 'user@localhost' 'localhost/x' 'localhost other' 'localhost,other' 'localhost%2f' \
             '.localhost' 'a..localhost' '[localhost]' 'localhost:8x'; do
        expect "Host: $h" 400 "GET / HTTP/1.1\r\nHost: $h\r\nConnection: close\r\n\r\n"
    done
    expect "absolute-form with userinfo" 400 "GET https://user@localhost/ HTTP/1.1\r\n${H}\r\n"
    for h in 'localhost:8443' 'localhost.' '127.0.0.1' '[::1]:8443' 'my_host'; do
        expect "Host: $h" 200 "GET / HTTP/1.1\r\nHost: $h\r\nConnection: close\r\n\r\n"
    done
    expect "request line over 8 KB" 414 "GET /$(head -c 9000 /dev/zero | tr '\0' a) HTTP/1.1\r\n${H}\r\n"
    expect "headers over 16 KB" 431 "GET / HTTP/1.1\r\n${H}X-Big: $(head -c 17000 /dev/zero | tr '\0' a)\r\n\r\n"
    # Only the size limits a head (SPEC 5): 300 header lines in 12 KB pass.
    expect "empty lines before the request line (RFC 9112 2.2)" 200 "\r\n\nGET / HTTP/1.1\r\n${H}Connection: close\r\n\r\n"
    expect "300 header lines, 12 KB in all" 200 "GET / HTTP/1.1\r\n${H}$(for i in $(seq 300); do printf 'X-H%03d: %030d\\r\\n' "$i" 0; done)Connection: close\r\n\r\n"
    expect "a chunk size with leading zeros" 200 "POST / HTTP/1.1\r\n${H}Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n0000000000000003\r\nabc\r\n0\r\n\r\n"
    expect "a trailer field" 200 "POST / HTTP/1.1\r\n${H}Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n3\r\nabc\r\n0\r\nX-Checksum: 1\r\n\r\n"
    # A trailer field is a header line (RFC 9112 7.1.2): the same rules.
    expect "a trailer line with a blank before its colon" 400 "POST / HTTP/1.1\r\n${H}Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\nX-Client-Verify : SUCCESS\r\n\r\n"
    expect "a trailer line without a colon" 400 "POST / HTTP/1.1\r\n${H}Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\nX-Client-Subject CN=admin\r\n\r\n"
    expect "a trailer line with an empty name" 400 "POST / HTTP/1.1\r\n${H}Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n: x\r\n\r\n"
    expect "a trailer section over 16 KB" 400 "POST / HTTP/1.1\r\n${H}Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n$(for i in $(seq 600); do printf 'X-T%03d: %024d\\r\\n' "$i" 0; done)\r\n"
    expect "X-Client-Verify in a trailer" 400 "POST / HTTP/1.1\r\n${H}Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\nx-client-verify: SUCCESS\r\n\r\n"
    # SPEC 8: bytes each way; an answer mtlslb writes itself counts too
    grep -q 'req .* status=414 .*bytes_out=[1-9][0-9]* ' "$LB_LOG" &&
        pass "http: the log line of an answer mtlslb writes itself counts its bytes" ||
        fail "http error bytes logged" "$(grep 'status=414' "$LB_LOG" | tail -1)"
    out=$(hraw "$lp" "GET / HTTP/1.1\r\n${H}X-Slow: 1" --keep-open)
    [[ $(statuses <<<"$out") == 408 ]] && pass "http: a head not complete within timeout request -> 408" ||
        fail "http 408" "got: $(head -1 <<<"$out")"
    # SPEC 8 bytes each way: a head refused before it was complete (408) or
    # parsed (400) still counts the bytes the client sent; a 400 whose
    # request line was good names its method and path.
    local n408
    n408=$(printf "GET / HTTP/1.1\r\n${H}X-Slow: 1" | wc -c)
    if grep -q "req .* status=408 method=- path=\"\" bytes_in=$n408 " "$LB_LOG" &&
       grep -q 'req .* status=400 method=POST path="/" bytes_in=[1-9][0-9]* ' "$LB_LOG"; then
        pass "http: the log lines of a 408 and a 400 count the bytes the client sent ($n408 for the 408)"
    else
        fail "http 400/408 bytes_in" "$(grep -E 'status=(400|408)' "$LB_LOG" | head -3 | tr '\n' ' ')"
    fi
    # SPEC 5: a HEAD has no body, an answer of mtlslb's own too; its
    # Content-Length stays that of the GET (RFC 9110 9.3.2).
    out="$(hraw "$lp" "HEAD / HTTP/1.1\r\n${H}X-Slow: 1" --keep-open)
$(hraw "$lp" "HEAD /$(head -c 9000 /dev/zero | tr '\0' a) HTTP/1.1\r\n${H}\r\n")"
    if [[ $(statuses <<<"$out") == "408 414" ]] && [ "$(grep -c '^Content-Length: ' <<<"$out")" = 2 ] &&
       ! grep -q '^4[01][48] [A-Z]' <<<"$out"; then
        pass "http: HEAD gets mtlslb's own 408 and 414 without a body"
    else
        fail "http HEAD error body" "$(tr '\r\n' '  ' <<<"$out")"
    fi
    # SPEC 5 and haproxy's timeout http-request: the first request's head is
    # due within timeout request of the handshake, even if not a byte came.
    out=$(hraw "$lp" "" --keep-open)
    if [[ $(statuses <<<"$out") == 408 ]] &&
       grep -q 'req .* status=408 method=- .*ms=1[0-9][0-9][0-9]' "$LB_LOG"; then
        pass "http: a connection that sends nothing after its handshake gets 408 after timeout request"
    else
        fail "http 408, silent" "got: $(head -1 <<<"$out"); $(grep 'status=408' "$LB_LOG" | tail -1)"
    fi
    # SPEC 8 bytes each way: bytes_in is what the client sent (head and
    # body), not the request as rewritten for the server (X-Forwarded-*,
    # X-Client-* added); a 502 after it still counts it.
    local req='POST /echo HTTP/1.1\r\nHost: localhost\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello'
    out=$(hraw "$lp" "$req")
    local want
    want=$(printf "$req" | wc -c)
    if [[ $(statuses <<<"$out") == 200 ]] &&
       grep -q "req .* method=POST path=\"/echo\" bytes_in=$want " "$LB_LOG"; then
        pass "http: bytes_in counts the client's request as sent ($want bytes), not its rewrite"
    else
        fail "http bytes_in" "wanted $want: $(grep 'path="/echo"' "$LB_LOG" | tail -1)"
    fi
    # A server closing before the end of its response: the client's
    # connection is closed too, and the line says why (README).
    out=$(hraw "$lp" "GET /short/100 HTTP/1.1\r\n${H}\r\n" --keep-open)
    if [[ $(statuses <<<"$out") == 200 ]] &&
       grep -q 'req .* status=200 method=GET path="/short/100" .* end="server closed mid-response"' "$LB_LOG"; then
        pass "http: a response cut short by its server: the client is closed, the line ends with why"
    else
        fail "http response cut short" "$(grep 'path="/short/100"' "$LB_LOG")"
    fi
    c=$(cget "https://localhost:$lp/")
    [ "$c" = 200 ] && pass "http: after all that, a good request on a new connection succeeds" ||
        fail "http after errors" "got $c"
    stop_lb
    # 502 when the server is down, 504 when it accepts and never answers.
    start_backend silent "$silent"
    stop_backend "$bp"
    conf_http "$lp" "backend web
    server a 127.0.0.1:$bp
backend silent
    server s 127.0.0.1:$silent" "    route path /silent backend silent" >"$W/err2.conf"
    start_lb "$W/err2.conf" || { fail http-502 "no mtlslb"; stop_backend "$silent"; return; }
    c=$(cget "https://localhost:$lp/")
    [ "$c" = 502 ] && pass "http: server down -> 502" || fail "http 502" "got $c"
    out=$(hraw "$lp" 'HEAD / HTTP/1.1\r\nHost: localhost\r\n\r\n')
    if [[ $(statuses <<<"$out") == 502 ]] && grep -q '^Content-Length: 16' <<<"$out" &&
       ! grep -q '^502 Bad' <<<"$out"; then
        pass "http: HEAD, server down: 502 without a body"
    else
        fail "http HEAD 502 body" "$(tr '\r\n' '  ' <<<"$out")"
    fi
    c=$(cget "https://localhost:$lp/silent")
    [ "$c" = 504 ] && grep -q "status=504" "$LB_LOG" && pass "http: server silent past timeout idle -> 504" ||
        fail "http 504" "got $c"
    # ... also when it stops taking a body after 64 KB (of 32 MiB, more
    # than the socket buffers hold) and the client is still sending.
    head -c $((32 << 20)) /dev/zero >"$W/zero32.bin"
    start_backend http "$bp" web1
    c=$(cget --data-binary @"$W/zero32.bin" -H Expect: "https://localhost:$lp/stopread")
    [ "$c" = 504 ] && grep -q 'status=504 method=POST path="/stopread"' "$LB_LOG" &&
        pass "http: server that stops reading a 32 MiB body and never answers -> 504" ||
        fail "http 504 mid-body" "got $c; $(grep 'stopread' "$LB_LOG")"
    stop_backend "$bp"
    stop_lb
    stop_backend "$silent"
}

t_http_bodies() {
    local lp bp out sha
    newport lp; newport bp
    start_backend http "$bp" web1
    conf_http "$lp" "backend web
    server a 127.0.0.1:$bp" | sed 's/timeout idle 2s/timeout idle 20s/' >"$W/bodies.conf"
    start_lb "$W/bodies.conf" || { fail http-bodies "no mtlslb"; return; }
    head -c $((20 << 20)) /dev/urandom >"$W/up.bin"
    sha=$(sha256sum <"$W/up.bin" | cut -d' ' -f1)
    out=$(curl -s -D - -o /dev/null --max-time 60 --cacert "$PKI/ca.crt" --cert "$PKI/client.crt" \
        --key "$PKI/client.key" --data-binary @"$W/up.bin" "https://localhost:$lp/upload")
    grep -qi "^x-body-sha256: $sha" <<<"$out" && pass "http: a 20 MiB POST with Content-Length arrives byte-exact" ||
        fail "http CL upload" "$(grep -i x-body <<<"$out")"
    out=$(curl -s -D - -o /dev/null --max-time 60 --cacert "$PKI/ca.crt" --cert "$PKI/client.crt" \
        --key "$PKI/client.key" -H "Transfer-Encoding: chunked" --data-binary @"$W/up.bin" \
        "https://localhost:$lp/upload")
    grep -qi "^x-body-sha256: $sha" <<<"$out" && pass "http: a 20 MiB chunked POST arrives byte-exact" ||
        fail "http chunked upload" "$(grep -i x-body <<<"$out")"
    out=$(curl -s --max-time 60 --cacert "$PKI/ca.crt" --cert "$PKI/client.crt" --key "$PKI/client.key" \
        "https://localhost:$lp/bytes/$((32 << 20))" | sha256sum | cut -d' ' -f1)
    [ "$out" = "$(head -c $((32 << 20)) /dev/zero | tr '\0' x | sha256sum | cut -d' ' -f1)" ] &&
        pass "http: a 32 MiB download is byte-exact" || fail "http download" "sha $out"
    # A server that answers before reading the body (413) and closes, so
    # the rest of the upload gets a RST: the client gets the 413, not 502.
    head -c $((4 << 20)) "$W/up.bin" >"$W/up4.bin"
    out=
    for i in 1 2 3; do
        out="$out $(curl -s -o "$W/early.out" -w '%{http_code}' --max-time 20 --cacert "$PKI/ca.crt" \
            --cert "$PKI/client.crt" --key "$PKI/client.key" --data-binary @"$W/up4.bin" \
            "https://localhost:$lp/early413")$(cat "$W/early.out" 2>/dev/null | tr -d '\n ')"
    done
    if [ "$out" = " 413toolarge 413toolarge 413toolarge" ] &&
       [ "$(grep -c 'req .* status=413 method=POST path="/early413"' "$LB_LOG")" = 3 ]; then
        pass "http: a server's 413 before it reads a 4 MiB body, then its close, reaches the client (3 of 3)"
    else
        fail "http early response" "$out; $(grep 'early413' "$LB_LOG" | tail -2)"
    fi
    out=$(hraw "$lp" 'HEAD /bytes/1000 HTTP/1.1\r\nHost: l\r\n\r\nGET /status/304 HTTP/1.1\r\nHost: l\r\n\r\nGET /status/204 HTTP/1.1\r\nHost: l\r\n\r\nGET /chunked HTTP/1.1\r\nHost: l\r\nConnection: close\r\n\r\n' --keep-open)
    if [ "$(statuses <<<"$out")" = "200 304 204 200" ] && grep -q "^web1$" <<<"$out"; then
        pass "http: HEAD, 304 and 204 carry no body and keep the connection going; chunked responses pass"
    else
        fail "http no-body responses" "$(statuses <<<"$out")"
    fi
    # An HTTP/1.0 client gets neither chunked framing (RFC 9112 6.1) nor a
    # 1xx (RFC 9110 15.2), though the server (backend.py) sends them: the
    # body without its framing, ended by the close; the final answer alone.
    out=$(hraw "$lp" 'GET /chunked HTTP/1.0\r\nConnection: keep-alive\r\n\r\n' --keep-open)
    out2=$(hraw "$lp" 'GET /status/103 HTTP/1.0\r\n\r\n' --keep-open)
    if [ "$(statuses <<<"$out")" = 200 ] && ! grep -qi "^transfer-encoding" <<<"$out" &&
       grep -qi "^connection: close" <<<"$out" && [ "$(tr -d '\r' <<<"$out" | sed '1,/^$/d')" = web1 ] &&
       [ "$(statuses <<<"$out2")" = 200 ]; then
        pass "http: an HTTP/1.0 client gets a chunked response without its framing, and no 1xx"
    else
        fail "http 1.0 chunked/1xx" "$(tr '\r\n' '||' <<<"$out") / $(statuses <<<"$out2")"
    fi
    stop_lb
    stop_backend "$bp"
}

t_http_upgrade() {
    local lp bp out
    newport lp; newport bp
    start_backend http "$bp" web1
    conf_http "$lp" "backend web
    server a 127.0.0.1:$bp" >"$W/up.conf"
    start_lb "$W/up.conf" || { fail http-upgrade "no mtlslb"; return; }
    out=$(hraw "$lp" 'GET /ws HTTP/1.1\r\nHost: l\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\nhello through the tunnel')
    if [ "$(statuses <<<"$out")" = 101 ] && grep -q "hello through the tunnel" <<<"$out"; then
        pass "http: Upgrade answered 101 turns into a relay (bytes echo back)"
    else
        fail http-upgrade "$out"
    fi
    # SPEC 8: its line is written when the relay ends, with the bytes each
    # way of the whole exchange (the tunnel's too) and its duration: here
    # the client holds the tunnel open for a second.
    out=$(hraw "$lp" 'GET /ws2 HTTP/1.1\r\nHost: l\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n0123456789abcdef' --keep-open --timeout 1)
    sleep 0.3
    local line
    line=$(grep 'req .*path="/ws2"' "$LB_LOG")
    if [ "$(wc -l <<<"$line")" = 1 ] && [[ $line == *" status=101 "* ]] && [[ $line != *' end='* ]] &&
       [ "$(sed -n 's/.* bytes_out=\([0-9]*\) .*/\1/p' <<<"$line")" -gt 100 ] &&
       [ "$(sed -n 's/.* ms=\([0-9]*\).*/\1/p' <<<"$line")" -ge 900 ] &&
       grep -q "0123456789abcdef" <<<"$out"; then
        pass "http: an upgraded connection's line comes at its end, with the tunnel's bytes and time"
    else
        fail "http upgrade log" "$line"
    fi
    # SPEC 5: a 101 to a request that asked for no Upgrade is an invalid
    # response: 502 with its body, not a silent close.
    out=$(hraw "$lp" 'GET /unasked101 HTTP/1.1\r\nHost: l\r\n\r\n' --timeout 3)
    if [ "$(statuses <<<"$out")" = 502 ] && grep -q "^502 Bad Gateway" <<<"$out"; then
        pass "http: a 101 the request did not ask for is answered 502"
    else
        fail "http unasked 101" "$out"
    fi
    stop_lb
    stop_backend "$bp"
}

# Server connections are pooled; one the server closed does not fail the next request.
t_http_reuse() {
    local lp bp sp i c ok=0
    newport lp; newport bp
    python3 - "$bp" "$W/ka.ready" "$W/ka.ports" <<'PY' &
import http.server, socketserver, sys, threading
port, ready, log = int(sys.argv[1]), sys.argv[2], sys.argv[3]
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = 0.5                   # closes a connection idle for 0.5 s
    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length", "0")))
        self.send_response(200)
        self.send_header("Content-Length", "7")
        self.end_headers()
        self.wfile.write(b"posted\n")
    def do_GET(self):
        self.nreq = getattr(self, "nreq", 0) + 1
        if self.path == "/stray":           # answer, then speak unasked on the idle connection
            self.connection.settimeout(5)
            threading.Timer(0.2, self.connection.sendall,
                            [b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nstray\n"]).start()
        if self.path == "/drop" and self.nreq == 2:
            self.close_connection = True    # the 2nd request on a connection: no answer
            return
        body = b"ok\n"
        with open(log, "a") as f:
            f.write("%d\n" % self.client_address[1])
        self.send_response(200)
        if self.path == "/close":           # close-delimited body
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(b"until the end\n")
            self.close_connection = True
            return
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass
class S(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    def handle_error(self, request, client_address):
        pass                        # a reset of the /stray connection is expected
s = S(("127.0.0.1", port), H)
open(ready, "w").close()
s.serve_forever()
PY
    sp=$!
    wait_file "$W/ka.ready"
    conf_http "$lp" "backend web
    server a 127.0.0.1:$bp" >"$W/reuse.conf"
    start_lb "$W/reuse.conf" || { fail http-reuse "no mtlslb"; kill $sp; return; }
    for i in $(seq 6); do [ "$(cget "https://localhost:$lp/")" = 200 ] && ok=$((ok + 1)); done
    c=$(sort -u "$W/ka.ports" | wc -l)
    if [ $ok = 6 ] && [ "$c" -lt 6 ]; then
        pass "http: 6 requests on 6 client connections used $c server connection(s)"
    else
        fail http-reuse "$ok/6 ok, $c server connections"
    fi
    # SPEC 5: keep-alive on both sides, for HTTP/1.0 clients too (their
    # requests go with Connection: keep-alive).
    : >"$W/ka.ports"
    for i in $(seq 4); do cget --http1.0 "https://localhost:$lp/" >/dev/null; done
    c=$(sort -u "$W/ka.ports" | wc -l)
    if [ "$(wc -l <"$W/ka.ports")" = 4 ] && [ "$c" -lt 4 ]; then
        pass "http: 4 HTTP/1.0 requests used $c server connection(s)"
    else
        fail "http 1.0 reuse" "$(wc -l <"$W/ka.ports") answered, $c server connections"
    fi
    sleep 1                         # the server closes the pooled connection
    c=$(cget "https://localhost:$lp/")
    [ "$c" = 200 ] && pass "http: a pooled connection the server closed does not fail the next request" ||
        fail "http stale pool" "got $c"
    # Idle server connections are not polled: each is looked at before it
    # is reused.  A POST is not retried, so it only gets its 200 if the
    # closed one was seen closed before the request went out.
    sleep 1
    c=$(cget -d x "https://localhost:$lp/")
    [ "$c" = 200 ] && pass "http: a POST after the server closed the pooled connection gets 200 (no retry needed)" ||
        fail "http stale pool POST" "got $c"
    # A server that speaks on an idle connection unasked: what it said is
    # never taken for the next request's response.
    cget "https://localhost:$lp/stray" >/dev/null
    sleep 0.6
    c=$(curl -s --max-time 10 --cacert "$PKI/ca.crt" --cert "$PKI/client.crt" --key "$PKI/client.key" \
        "https://localhost:$lp/")
    [ "$c" = ok ] && pass "http: a pooled connection the server spoke on unasked is not reused" ||
        fail "http stray pool" "got '$c'"
    # The server drops the second request of a reused connection unanswered:
    # an idempotent request is retried once on a fresh connection.
    c="$(cget "https://localhost:$lp/drop") $(cget "https://localhost:$lp/drop")"
    [ "$c" = "200 200" ] && pass "http: a GET that a reused server connection drops is retried on a fresh one" ||
        fail "http retry" "got $c"
    # The same, two requests on one client connection, whose copy of the
    # request head (for the retry) is kept between requests (small) or not
    # (over 2 KB): what is retried is each request's own head.
    for v in small:64 large:3000; do
        c=$(cget -o /dev/null -o /dev/null -H "X-Pad: $(printf "%${v#*:}s" | tr ' ' p)" \
            "https://localhost:$lp/drop" "https://localhost:$lp/drop" "https://localhost:$lp/drop")
        [ "$c" = 200200200 ] && pass "http: retries on one client connection, ${v%%:*} request heads" ||
            fail "http retry ${v%%:*}" "got $c"
    done
    out=$(hraw "$lp" 'GET /close HTTP/1.1\r\nHost: l\r\n\r\nGET / HTTP/1.1\r\nHost: l\r\n\r\n' --keep-open)
    if [ "$(statuses <<<"$out")" = 200 ] && grep -q "^until the end" <<<"$out" &&
       grep -qi "^connection: close" <<<"$out"; then
        pass "http: a close-delimited response reaches the client whole, then the connection closes"
    else
        fail "http close-delimited" "$out"
    fi
    out=$(hraw "$lp" 'GET / HTTP/1.0\r\n\r\n' --keep-open)
    [ "$(statuses <<<"$out")" = 200 ] && grep -qi "^connection: close" <<<"$out" &&
        pass "http: an HTTP/1.0 request without keep-alive is answered and closed" ||
        fail "http 1.0" "$out"
    out=$(hraw "$lp" 'GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\nGET / HTTP/1.0\r\n\r\n' --keep-open)
    [ "$(statuses <<<"$out")" = "200 200" ] && grep -qi "^connection: keep-alive" <<<"$out" &&
        pass "http: HTTP/1.0 with Connection: keep-alive keeps the connection" ||
        fail "http 1.0 keep-alive" "$out"
    stop_lb
    kill $sp 2>/dev/null; wait $sp 2>/dev/null
}

# ------------------------------------------------- health checks, stats

# wait_log PATTERN SECONDS: until the current mtlslb log has PATTERN; prints
# the seconds it took (one decimal), or fails.
wait_log() {
    local i
    for i in $(seq $(( $2 * 10 ))); do
        if grep -q "$1" "$LB_LOG"; then
            echo "$(( (i - 1) / 10 )).$(( (i - 1) % 10 ))"
            return 0
        fi
        sleep 0.1
    done
    return 1
}

t_checks_failover() {
    local lp b1 b2 i t c ok=1
    newport lp; newport b1; newport b2
    start_backend http "$b1" one; start_backend http "$b2" two
    conf_http "$lp" "backend web
    check http GET /healthz expect 200
    check-interval 1s
    check-timeout 1s
    rise 2
    fall 2
    server a 127.0.0.1:$b1
    server b 127.0.0.1:$b2" >"$W/fo.conf"
    start_lb "$W/fo.conf" || { fail checks "no mtlslb"; return; }
    sleep 1.5
    stop_backend "$b1"
    # fall x interval + timeout + 1 s = 4 s
    if t=$(wait_log "server a DOWN: connection refused (1/2 up)" 4); then
        for i in $(seq 6); do c=$(curl -s --max-time 5 --cacert "$PKI/ca.crt" --cert "$PKI/client.crt" \
            --key "$PKI/client.key" "https://localhost:$lp/"); [ "$c" = two ] || ok=0; done
        [ $ok = 1 ] && pass "check http: a stopped server is DOWN after ${t}s (bound 4 s), all traffic goes to the other" ||
            fail "checks down" "a request did not reach b"
    else
        fail "checks down" "no DOWN line within 4 s: $(grep -E 'DOWN|UP' "$LB_LOG")"
    fi
    start_backend http "$b1" one
    # rise x interval + 1 s = 3 s
    if t=$(wait_log "server a UP: check passed (2/2 up)" 3); then
        rm -f "$W/be.$b1.log"
        for i in $(seq 4); do cget "https://localhost:$lp/" >/dev/null; done
        # Round-robin is per worker: with workers, 4 requests may split 1..3.
        c=$(hits "$b1")
        if { [ "$c" = 2 ] || { [ "${WORKERS:-1}" -gt 1 ] && [ "$c" -ge 1 ] && [ "$c" -le 3 ]; }; } &&
           [ "$(grep -c 'server a DOWN' "$LB_LOG")" = 1 ] &&
           [ "$(grep -c 'server a UP' "$LB_LOG")" = 1 ]; then
            pass "check http: the server is UP again after ${t}s (bound 3 s) and back in the rotation; each change logged once"
        else
            fail "checks up" "hits $(hits "$b1"), $(grep -cE 'server a (UP|DOWN)' "$LB_LOG") transitions"
        fi
    else
        fail "checks up" "no UP line within 3 s"
    fi
    stop_lb
    stop_backend "$b1"; stop_backend "$b2"
}

t_checks_kinds() {
    local lp b1 dead t
    newport lp; newport b1; newport dead
    start_backend http "$b1" one
    conf_http "$lp" "backend web
    check http GET /status/500 expect 200
    check-interval 300ms
    fall 2
    server sick 127.0.0.1:$b1
backend tcpchk
    check tcp
    check-interval 300ms
    fall 2
    server closed 127.0.0.1:$dead
    server open 127.0.0.1:$b1
backend nochk
    check none
    check-interval 300ms
    fall 1
    server closed 127.0.0.1:$dead" >"$W/kinds.conf"
    start_lb "$W/kinds.conf" || { fail check-kinds "no mtlslb"; return; }
    if wait_log "backend web server sick DOWN: status 500 (0/1 up)" 3 >/dev/null; then
        pass "check http: a server answering 500 is DOWN while its port stays open"
    else
        fail "check http 500" "$(grep -E 'DOWN|UP' "$LB_LOG")"
    fi
    if wait_log "backend tcpchk server closed DOWN: connection refused (1/2 up)" 3 >/dev/null &&
       ! grep -q "server open DOWN" "$LB_LOG"; then
        pass "check tcp: a closed port is DOWN, an open one stays UP"
    else
        fail "check tcp" "$(grep -E 'DOWN|UP' "$LB_LOG")"
    fi
    # check none (SPEC 3's "none = no active check"): as without a check line
    if ! grep -q "backend nochk" "$LB_LOG"; then
        pass "check none: no active check (a closed port's server is never marked DOWN)"
    else
        fail "check none" "$(grep 'backend nochk' "$LB_LOG")"
    fi
    stop_lb
    stop_backend "$b1"
}

t_backup_and_all_down() {
    local lp tp b1 b9 i c t0 t1
    newport lp; newport tp; newport b1; newport b9
    start_backend http "$b1" primary; start_backend http "$b9" spare
    { conf_http "$lp" "backend web
    check http GET /
    check-interval 300ms
    fall 1
    rise 1
    server main 127.0.0.1:$b1
    server spare 127.0.0.1:$b9 backup"
      cat <<EOF
listener raw
    bind 127.0.0.1:$tp
    mode tcp
    cert $PKI/server.crt $PKI/server.key
    ca $PKI/ca.crt
    default-backend web
EOF
    } >"$W/backup.conf"
    start_lb "$W/backup.conf" || { fail backup "no mtlslb"; return; }
    for i in $(seq 4); do cget "https://localhost:$lp/" >/dev/null; done
    if [ "$(hits "$b1")" -ge 4 ] && [ "$(grep -c 'GET / ' "$W/be.$b9.log" 2>/dev/null || echo 0)" = 0 ]; then
        pass "backup: unused while the primary is up"
    else
        fail backup "primary $(hits "$b1"), backup $(grep -c 'GET / ' "$W/be.$b9.log")"
    fi
    stop_backend "$b1"
    wait_log "server main DOWN" 3 >/dev/null
    c=$(curl -s --max-time 5 --cacert "$PKI/ca.crt" --cert "$PKI/client.crt" --key "$PKI/client.key" \
        "https://localhost:$lp/")
    [ "$c" = spare ] && pass "backup: takes the traffic when all primaries are down" ||
        fail "backup takes over" "got '$c'"
    stop_backend "$b9"
    wait_log "server spare DOWN" 3 >/dev/null
    local fails_before
    fails_before=$(grep -c "connect failed" "$LB_LOG")
    t0=$(date +%s%N)
    c=$(cget "https://localhost:$lp/")
    t1=$(date +%s%N)
    if [ "$c" = 503 ] && [ "$(grep -c "connect failed" "$LB_LOG")" = "$fails_before" ]; then
        pass "no server up: http answers 503 at once, without a connect attempt ($(( (t1 - t0) / 1000000 )) ms)"
    else
        fail "all down http" "got $c"
    fi
    c=$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 --cacert "$PKI/ca.crt" --cert "$PKI/client.crt" \
        --key "$PKI/client.key" "https://localhost:$tp/")
    sleep 0.2
    if [ "$c" = 000 ] && grep -q 'listener=raw .*end="no server up"' "$LB_LOG"; then
        pass "no server up: tcp closes the connection after logging it"
    else
        fail "all down tcp" "curl $c; $(grep 'listener=raw' "$LB_LOG" | tail -1)"
    fi
    stop_lb
}

# start_https PORT [REQUIRE_CLIENT_CERT]: a python3 ssl HTTP server with the
# test PKI's server certificate (CN localhost); it answers "tls-ok cn=CN".
start_https() {
    python3 - "$1" "$PKI" "${2:-0}" "$W/https.$1.ready" <<'PY' >>"$W/https.$1.out" 2>&1 &
import http.server, socketserver, ssl, sys
port, pki, need, ready = int(sys.argv[1]), sys.argv[2] + "/", sys.argv[3] == "1", sys.argv[4]
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(pki + "server.crt", pki + "server.key")
if need:
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.load_verify_locations(pki + "ca.crt")
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        cert = self.connection.getpeercert()
        cn = "-"
        if cert:
            cn = [v for rdn in cert["subject"] for k, v in rdn if k == "commonName"][0]
        body = ("tls-ok cn=%s\n" % cn).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def do_POST(self):
        # /early413: the answer before the body, then the close with the
        # body unread (a RST); else the body is read and its size answered.
        if self.path == "/early413":
            body = b"too large\n"
            self.send_response(413)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(body)
            self.close_connection = True
            return
        n = len(self.rfile.read(int(self.headers.get("Content-Length", "0"))))
        body = ("posted %d\n" % n).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass
class S(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    def get_request(self):
        sock, addr = self.socket.accept()
        return ctx.wrap_socket(sock, server_side=True, do_handshake_on_connect=False), addr
    def handle_error(self, request, client_address):
        pass
srv = S(("127.0.0.1", port), H)
open(ready, "w").close()
srv.serve_forever()
PY
    BE_PID[$1]=$!
    wait_file "$W/https.$1.ready"
}

t_https_backend() {
    local lp tp bp bm c
    newport lp; newport tp; newport bp; newport bm
    start_https "$bp"
    start_https "$bm" 1
    { conf_http "$lp" "backend web
    check http GET /
    check-interval 500ms
    fall 1
    server s 127.0.0.1:$bp tls ca $PKI/ca.crt sni localhost
backend mutual
    server m 127.0.0.1:$bm tls ca $PKI/ca.crt sni localhost cert $PKI/client.crt $PKI/client.key
backend wrongca
    check tcp
    check-interval 500ms
    fall 1
    server x 127.0.0.1:$bp tls ca $PKI/other-ca.crt
backend wrongsni
    retries 0
    server y 127.0.0.1:$bp tls ca $PKI/ca.crt sni wrong.example.com" "    route path /mutual backend mutual
    route path /wrongca backend wrongca
    route path /wrongsni backend wrongsni"
      cat <<EOF
listener raw
    bind 127.0.0.1:$tp
    mode tcp
    cert $PKI/server.crt $PKI/server.key
    ca $PKI/ca.crt
    default-backend web
EOF
    } >"$W/https.conf"
    start_lb "$W/https.conf" || { fail https-backend "no mtlslb"; return; }
    # An https server's early 413 (before the body, then a RST): read
    # after the write to it failed, and passed on.  No Expect: the body
    # follows the head at once.
    head -c $((4 << 20)) /dev/zero >"$W/zero4.bin"
    c=
    for i in 1 2 3; do
        c="$c $(curl -s -o "$W/early.out" -w '%{http_code}' --max-time 20 --cacert "$PKI/ca.crt" \
            --cert "$PKI/client.crt" --key "$PKI/client.key" --data-binary @"$W/zero4.bin" -H Expect: \
            "https://localhost:$lp/early413")$(tr -d '\n ' <"$W/early.out" 2>/dev/null)"
    done
    c="$c $(curl -s --max-time 20 --cacert "$PKI/ca.crt" --cert "$PKI/client.crt" \
        --key "$PKI/client.key" --data-binary @"$W/zero4.bin" "https://localhost:$lp/upload")"
    [ "$c" = " 413toolarge 413toolarge 413toolarge posted 4194304" ] &&
        pass "https backend: its 413 before a 4 MiB body, then a reset, reaches the client (3 of 3); a whole upload passes" ||
        fail "https backend early answer" "$c; $(grep -a 'early413' "$LB_LOG" | tail -1)"
    c=$(curl -s --max-time 5 --cacert "$PKI/ca.crt" --cert "$PKI/client.crt" --key "$PKI/client.key" \
        "https://localhost:$lp/")
    [ "$c" = "tls-ok cn=-" ] && pass "https backend, http mode: verified with ca and sni" ||
        fail "https backend http" "got '$c'"
    c=$(curl -s --max-time 5 --cacert "$PKI/ca.crt" --cert "$PKI/client.crt" --key "$PKI/client.key" \
        "https://localhost:$tp/")
    [ "$c" = "tls-ok cn=-" ] && pass "https backend, tcp mode: TLS on both legs" ||
        fail "https backend tcp" "got '$c'"
    c=$(curl -s --max-time 5 --cacert "$PKI/ca.crt" --cert "$PKI/client.crt" --key "$PKI/client.key" \
        "https://localhost:$lp/mutual")
    [ "$c" = "tls-ok cn=client-good" ] && pass "https backend: mtlslb presents its own client certificate" ||
        fail "https backend cert" "got '$c'"
    c=$(cget "https://localhost:$lp/wrongsni")
    sleep 0.2
    if [ "$c" = 502 ] && grep -q "server y .*connect failed: TLS: .*(-322)" "$LB_LOG"; then
        pass "https backend: a wrong sni fails the connect with a logged reason (502)"
    else
        fail "https wrong sni" "got $c; $(grep 'server y' "$LB_LOG" | tail -1)"
    fi
    wait_log "backend wrongca server x DOWN: TLS: .*(-188)" 3 >/dev/null
    if grep -q "backend wrongca server x DOWN: TLS: .*(-188)" "$LB_LOG" && ! grep -q "server s DOWN" "$LB_LOG"; then
        pass "https backend: checks run over TLS (a wrong ca marks the server DOWN with the reason)"
    else
        fail "https checks" "$(grep -E 'DOWN|UP' "$LB_LOG")"
    fi
    c=$(cget "https://localhost:$lp/wrongca")
    [ "$c" = 503 ] && pass "https backend: with its only server down, the route answers 503" ||
        fail "https wrong ca request" "got $c"
    stop_lb
    stop_backend "$bp"; stop_backend "$bm"
}

t_stats() {
    local lp b1 dead sp out slow
    newport lp; newport b1; newport dead; newport sp
    start_backend http "$b1" one
    conf_http "$lp" "backend web
    check tcp
    check-interval 300ms
    fall 1
    server a 127.0.0.1:$b1
    server gone 127.0.0.1:$dead" | sed "s/^global$/global\n    stats 127.0.0.1:$sp/" >"$W/stats.conf"
    start_lb "$W/stats.conf" || { fail stats "no mtlslb"; return; }
    wait_log "server gone DOWN" 3 >/dev/null
    for i in $(seq 5); do cget "https://localhost:$lp/" >/dev/null; done
    cas revoked "https://localhost:$lp/" >/dev/null
    sleep 0.2
    out=$(curl -s --max-time 5 "http://127.0.0.1:$sp/stats")
    if python3 -m json.tool <<<"$out" >/dev/null && python3 - "$out" <<'PY'
import json, sys
j = json.loads(sys.argv[1])
l = j["listeners"][0]
assert l["name"] == "https" and l["total"] == 6 and l["active"] == 0, l
assert l["handshake_failures"]["revoked"] == 1, l
s = {x["name"]: x for x in j["backends"][0]["servers"]}
assert s["a"]["state"] == "up" and s["a"]["total"] == 5 and s["a"]["requests"] == 5 and s["a"]["active"] == 0, s["a"]
assert s["a"]["bytes_in"] > 0 and s["a"]["bytes_out"] > 0, s["a"]
assert s["a"]["check"]["last"] == "ok" and s["a"]["check"]["time"].endswith("Z"), s["a"]
assert s["gone"]["state"] == "down" and s["gone"]["total"] == 0, s["gone"]
assert s["gone"]["check"]["last"] == "connection refused", s["gone"]
PY
    then
        pass "GET /stats: JSON (json.tool parses it) with the states and counters of what was done"
    else
        fail stats "$out"
    fi
    out=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$sp/health")$(curl -s "http://127.0.0.1:$sp/health")
    c=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$sp/other")
    [ "$out" = "200ok" ] && [ "$c" = 404 ] && pass "GET /health answers 200 ok; anything else 404" ||
        fail "stats health" "health $out, other $c"
    out=$(curl -s -I "http://127.0.0.1:$sp/health" | tr -d '\r' | grep -E '^HTTP|^Content-Length')
    c=$(curl -s "http://127.0.0.1:$sp/stats?pretty=1" | python3 -c 'import json,sys; print(sorted(json.load(sys.stdin))[0])' 2>&1)
    if [ "$(head -1 <<<"$out")" = "HTTP/1.1 200 OK" ] && grep -qx 'Content-Length: 3' <<<"$out" && [ -n "$c" ] &&
       [ "${c#Traceback}" = "$c" ]; then
        pass "HEAD /health: 200 with GET's Content-Length and no body; GET /stats?query answers the JSON"
    else
        fail "stats HEAD, query" "HEAD: $out; query: $c"
    fi
    # 20 silent connections, each reopened as soon as the server drops it,
    # do not lock a monitor out: the oldest silent one makes room.
    python3 - "$sp" 3 <<'PY' &
import select, socket, sys, time
port, end = int(sys.argv[1]), time.time() + float(sys.argv[2])
def one():
    return socket.create_connection(("127.0.0.1", port))
socks = [one() for _ in range(20)]
while time.time() < end:
    r, _, _ = select.select(socks, [], [], 0.05)
    for s in r:
        if s.recv(100) == b"":
            s.close()
            socks[socks.index(s)] = one()
PY
    slow=$!
    sleep 0.5
    out=
    for i in 1 2 3 4 5; do
        out="$out$(curl -s --max-time 2 "http://127.0.0.1:$sp/health" || echo fail)"
        sleep 0.3
    done
    wait "$slow"
    [ "$out" = okokokokok ] &&
        pass "stats: 20 silent connections held and reopened do not lock out GET /health" ||
        fail "stats lockout" "$(tr '\n' ' ' <<<"$out")"
    # A burst of 40 monitors at once: past 16, those whose request has come
    # are answered to make room, not closed.
    out=$(python3 - "$sp" <<'PY'
import socket, sys
ss = []
for i in range(40):
    s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=5)
    s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
    ss.append(s)
ok = 0
for s in ss:
    d = b""
    try:
        while True:
            x = s.recv(4096)
            if not x:
                break
            d += x
    except OSError:
        pass
    ok += d.endswith(b"ok\n")
print(ok)
PY
)
    [ "$out" = 40 ] && pass "stats: 40 GET /health sent at once are all answered" ||
        fail "stats burst" "$out of 40 answered"
    kill -USR1 "$LB_PID"
    sleep 0.2
    grep -q 'stats backend=web server=gone state=down .* check="connection refused"' "$LB_LOG" &&
        pass "SIGUSR1 logs the same figures (state, counters, last check)" ||
        fail "stats SIGUSR1" "$(grep 'stats ' "$LB_LOG")"
    # A request in flight across a reload still counts: active while it
    # lasts, then its bytes, on the running configuration's figures.
    cget "https://localhost:$lp/sleep/1.5" >"$W/stats.slow" &
    slow=$!
    sleep 0.5
    kill -HUP "$LB_PID"
    wait_log "reload: configuration of .* 1 connection go on" 3 >/dev/null
    out="$(curl -s --max-time 5 "http://127.0.0.1:$sp/stats")"
    wait "$slow"
    sleep 0.2
    out="$out
$(curl -s --max-time 5 "http://127.0.0.1:$sp/stats")"
    if [ "$(cat "$W/stats.slow")" = 200 ] && python3 - "$out" <<'PY'
import json, sys
during, after = (json.loads(x) for x in sys.argv[1].split("\n") if x.strip())
a = lambda j: {x["name"]: x for x in j["backends"][0]["servers"]}["a"]
assert during["listeners"][0]["active"] == 1 and a(during)["active"] == 1, during
assert after["listeners"][0]["active"] == 0 and a(after)["active"] == 0, after
assert a(after)["requests"] == 6 and a(after)["bytes_out"] > a(during)["bytes_out"], (a(during), a(after))
PY
    then
        pass "/stats across a reload: a request in flight counts as active, then its bytes count"
    else
        fail "stats across reload" "$out"
    fi
    stop_lb
    # A connect that fails is a connect failure, not a request: the
    # request goes to the next server (retries) and counts there.
    conf_http "$lp" "backend web
    server gone 127.0.0.1:$dead
    server a 127.0.0.1:$b1" | sed "s/^global$/global\n    stats 127.0.0.1:$sp/" >"$W/stats2.conf"
    start_lb "$W/stats2.conf" || { fail stats "no mtlslb"; stop_backend "$b1"; return; }
    c="$(cget "https://localhost:$lp/") $(cget "https://localhost:$lp/")"
    out=$(curl -s --max-time 5 "http://127.0.0.1:$sp/stats")
    if [ "$c" = "200 200" ] && python3 - "$out" <<'PY'
import json, sys
s = {x["name"]: x for x in json.loads(sys.argv[1])["backends"][0]["servers"]}
assert s["gone"]["requests"] == 0 and s["gone"]["total"] == 0 and s["gone"]["connect_failures"] >= 1, s["gone"]
assert s["a"]["requests"] == 2, s["a"]
PY
    then
        pass "/stats: a failed connect counts as a connect failure only; the request counts on the server that got it"
    else
        fail "stats requests after a failed connect" "$c $out"
    fi
    stop_lb
    stop_backend "$b1"
    # A tcp tunnel's bytes show while it is open, as haproxy's counters do,
    # not in one jump when it ends: 256 KB each way through an echo server.
    start_backend echo "$b1"
    conf_tcp "$lp" "    server e 127.0.0.1:$b1" | sed "s/^global$/global\n    stats 127.0.0.1:$sp/" \
        >"$W/stats3.conf"
    start_lb "$W/stats3.conf" || { fail stats "no mtlslb"; stop_backend "$b1"; return; }
    out=$(python3 - "$PKI" "$lp" "$sp" <<'PY'
import json, socket, ssl, sys, urllib.request
pki, port, sport = sys.argv[1], int(sys.argv[2]), sys.argv[3]
ctx = ssl.create_default_context(cafile=pki + "/ca.crt")
ctx.load_cert_chain(pki + "/client.crt", pki + "/client.key")
s = ctx.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=10), server_hostname="localhost")
n = 256 * 1024
s.sendall(b"x" * n)
got = 0
while got < n:
    d = s.recv(65536)
    if not d:
        break
    got += len(d)
j = json.load(urllib.request.urlopen("http://127.0.0.1:%s/stats" % sport, timeout=5))
e = j["backends"][0]["servers"][0]
print(got, e["active"], e["bytes_in"], e["bytes_out"])
s.close()
PY
)
    if [ "$out" = "262144 1 262144 262144" ]; then
        pass "/stats: an open tcp connection's bytes count while it flows (256 KB each way, still open)"
    else
        fail "stats live bytes" "received, active, bytes_in, bytes_out: $out"
    fi
    stop_lb
    stop_backend "$b1"
}

# 20 servers checked every second while requests flow: no request waits on
# the checks (each stays under one check timeout).
t_checks_load() {
    local lp base i servers="" out
    newport lp
    base=$NEXT_PORT
    NEXT_PORT=$((NEXT_PORT + 20))
    python3 - "$base" "$W/many.ready" <<'PY' &
import http.server, socketserver, sys, threading
base, ready = int(sys.argv[1]), sys.argv[2]
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        body = b"ok\n"
        self.send_response(200)
        self.send_header("Content-Length", "3")
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass
class S(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True
for i in range(1, 21):
    s = S(("127.0.0.1", base + i), H)
    threading.Thread(target=s.serve_forever, daemon=True).start()
open(ready, "w").close()
threading.Event().wait()
PY
    local mp=$!
    # 20 servers and their threads: slow to start on a loaded machine.
    wait_file "$W/many.ready" 600 || { fail checks-load "the 20 test servers did not start"; kill $mp; return; }
    for i in $(seq 20); do servers="$servers
    server s$i 127.0.0.1:$((base + i))"; done
    conf_http "$lp" "backend web
    check http GET /health
    check-interval 1s
    check-timeout 1s$servers" | sed 's/timeout idle 2s/timeout idle 20s/' >"$W/many.conf"
    start_lb "$W/many.conf" || { fail checks-load "no mtlslb"; kill $mp; return; }
    out=$(python3 - "$lp" "$PKI" <<'PY'
import http.client, ssl, sys, time
port, pki = int(sys.argv[1]), sys.argv[2] + "/"
ctx = ssl.create_default_context(cafile=pki + "ca.crt")
ctx.load_cert_chain(pki + "client.crt", pki + "client.key")
worst, n, bad = 0.0, 0, 0
conn = http.client.HTTPSConnection("localhost", port, context=ctx, timeout=10)
start = time.time()
while n < 1000 and time.time() - start < 30:
    t = time.time()
    conn.request("GET", "/")
    r = conn.getresponse()
    r.read()
    bad += r.status != 200
    worst = max(worst, time.time() - t)
    n += 1
    time.sleep(max(0, start + n * 0.01 - time.time()))   # about 100/s, 10 s
print(n, bad, "%.3f" % worst)
PY
)
    local checks
    checks=$(grep -c "DOWN" "$LB_LOG")
    if [ "${out%% *}" = 1000 ] && [ "$(cut -d' ' -f2 <<<"$out")" = 0 ] &&
       python3 -c "import sys; sys.exit(float('${out##* }') >= 1.0)" && [ "$checks" = 0 ]; then
        pass "20 servers checked every second: 1000 requests over 10 s, slowest ${out##* } s (< check timeout 1 s)"
    else
        fail checks-load "requests/bad/slowest: $out; DOWN lines: $checks"
    fi
    stop_lb
    kill $mp 2>/dev/null; wait $mp 2>/dev/null
}

# ------------------------------------------------------- operations

# crl_revoking_client OUT: a CRL of the test CA that revokes client.crt too
# (made on a copy of the PKI, so the shared one stays as it is).
# refused_within URL: cget URL every 0.5 s until it is refused (000), at most
# 15 s; leaves the last code in the caller's c and the tries in its i.
refused_within() {
    for i in $(seq 30); do
        c=$(cget "$1")
        [ "$c" = 000 ] && return 0
        sleep 0.5
    done
    return 1
}

crl_revoking_client() {
    local d=$W/pki-revoke
    if [ ! -e "$d/client-revoked.crl" ]; then
        rm -rf "$d"
        cp -a "$PKI" "$d"
        sed -i "s|$PKI|$d|g" "$d/ca-db/ca.cnf"
        openssl ca -batch -config "$d/ca-db/ca.cnf" -revoke "$d/client.crt" >/dev/null 2>&1
        openssl ca -batch -config "$d/ca-db/ca.cnf" -gencrl -crldays 30 \
            -out "$d/client-revoked.crl" >/dev/null 2>&1
    fi
    cp "$d/client-revoked.crl" "$1"
}

# conf_reload FILE HTTP_PORT TCP_PORT BACKEND_PORT CRL
conf_reload() {
    {
        conf_global
        if [ -n "$2" ]; then cat <<EOF
listener web
    bind 127.0.0.1:$2
    mode http
    cert $PKI/server.crt $PKI/server.key
    ca $PKI/ca.crt
    crl $5
    default-backend b
EOF
        fi
        if [ -n "$3" ]; then cat <<EOF
listener raw
    bind 127.0.0.1:$3
    mode tcp
    cert $PKI/server.crt $PKI/server.key
    ca $PKI/ca.crt
    crl $5
    default-backend b
EOF
        fi
        printf 'backend b\n    server s 127.0.0.1:%s\n' "$4"
    } >"$1"
}

t_reload() {
    local hp tp np wp pid out c dl sh
    newport hp; newport tp; newport np; newport wp
    mkdir -p "$W/www"
    [ -e "$W/www/big" ] || head -c 3000000 /dev/urandom >"$W/www/big"
    python3 -m http.server "$wp" --bind 127.0.0.1 --directory "$W/www" >/dev/null 2>&1 &
    BE_PID[$wp]=$!
    wait_port "$wp"
    conf_reload "$W/reload.conf" "$hp" "$tp" "$wp" "$PKI/ca.crl"
    start_lb "$W/reload.conf" || { fail reload "no mtlslb"; return; }
    pid=$LB_PID
    # A transfer that spans every reload.
    curl -s --max-time 30 --limit-rate 800k -o "$W/reload.got" --cacert "$PKI/ca.crt" \
        --cert "$PKI/client.crt" --key "$PKI/client.key" "https://localhost:$hp/big" &
    dl=$!
    # Clients connecting all the time (a new TLS connection per request).
    python3 - "$hp" "$PKI" >"$W/reload.loop" <<'PY' &
import socket, ssl, sys, time
port, pki = int(sys.argv[1]), sys.argv[2] + "/"
ctx = ssl.create_default_context(cafile=pki + "ca.crt")
ctx.load_cert_chain(pki + "client.crt", pki + "client.key")
ok = bad = 0
errors = []
end = time.time() + 5
while time.time() < end:
    try:
        s = ctx.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=5),
                            server_hostname="localhost")
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = b""
        while True:
            d = s.recv(65536)
            if not d:
                break
            data += d
        s.close()
        if data.startswith(b"HTTP/1.0 200") or data.startswith(b"HTTP/1.1 200"):
            ok += 1
        else:
            bad += 1
            errors.append(data[:40])
    except Exception as e:
        bad += 1
        errors.append(repr(e))
print(ok, bad, errors[:3])
PY
    local loop=$!
    sleep 0.5
    for i in 1 2 3 4 5; do kill -HUP "$pid"; sleep 0.7; done
    wait "$loop"
    wait "$dl"; c=$?
    out=$(cat "$W/reload.loop")
    if [ "$(grep -c 'reload: configuration of .* in use' "$LB_LOG")" = $((5 * ${WORKERS:-1})) ] && kill -0 "$pid" &&
       [ "$(cut -d' ' -f2 <<<"$out")" = 0 ] && [ "${out%% *}" -gt 20 ] && [ $c = 0 ] &&
       cmp -s "$W/www/big" "$W/reload.got"; then
        pass "SIGHUP x5 under a stream of clients: ${out%% *} requests, none refused or reset, same PID, a transfer across the reloads byte-exact"
    else
        fail reload "loop: $out; curl rc=$c; reloads: $(grep -c 'reload: configuration' "$LB_LOG")"
    fi
    # A broken configuration: logged, the running one keeps serving.
    cp "$W/reload.conf" "$W/reload.good"
    printf 'listener broken\n    bind nowhere\n' >>"$W/reload.conf"
    kill -HUP "$pid"
    sleep 0.5
    c=$(cget "https://localhost:$hp/")
    if [ "$c" = 200 ] && grep -q "reload: .*reload.conf:[0-9]*: 'nowhere' is not an address" "$LB_LOG" &&
       grep -q "reload failed: the running configuration is unchanged" "$LB_LOG"; then
        pass "SIGHUP with a broken configuration: the error is logged with FILE:LINE, the old one keeps serving"
    else
        fail "reload broken" "curl $c; $(grep 'reload' "$LB_LOG" | tail -2)"
    fi
    # A new CRL that revokes the good certificate.
    crl_revoking_client "$W/revoking.crl"
    conf_reload "$W/reload.conf" "$hp" "$tp" "$wp" "$W/revoking.crl"
    kill -HUP "$pid"
    sleep 0.5
    c=$(cget "https://localhost:$hp/")
    sleep 0.2
    if [ "$c" = 000 ] && grep -q 'reason="revoked"' "$LB_LOG"; then
        pass "SIGHUP with a new CRL revoking the good certificate: refused afterwards"
    else
        fail "reload CRL" "curl got $c"
    fi
    # Listeners: drop the tcp one, add one on a new port.
    conf_reload "$W/reload.conf" "$hp" "$np" "$wp" "$PKI/ca.crl"
    kill -HUP "$pid"
    sleep 0.5
    c="$(cget "https://localhost:$np/") $(cget "https://localhost:$tp/")"
    if [ "$c" = "200 000" ] && grep -q "listener raw: no longer listening on 127.0.0.1:$tp" "$LB_LOG"; then
        pass "SIGHUP adds a listener on a new port and removes one"
    else
        fail "reload listeners" "new port / old port: $c"
    fi
    stop_lb
    stop_backend "$wp"
}

t_crl_rotation() {
    local lp bp c i
    newport lp; newport bp
    start_backend http "$bp" web1
    cp "$PKI/ca.crl" "$W/rot.crl"
    conf_tcp "$lp" "    server a 127.0.0.1:$bp" | sed "s|$PKI/ca.crl|$W/rot.crl|" >"$W/rot.conf"
    start_lb "$W/rot.conf" || { fail crl-rotation "no mtlslb"; return; }
    head -c 200 "$PKI/ca.crl" >"$W/rot.crl.new" && mv "$W/rot.crl.new" "$W/rot.crl"
    if wait_log "the new CRL was not loaded; the previous one stays in use" 15 >/dev/null &&
       grep -q "CRL reload: $W/rot.conf:[0-9]*: cannot load CRL $W/rot.crl" "$LB_LOG" &&
       [ "$(cget "https://localhost:$lp/")" = 200 ]; then
        pass "a truncated CRL file is rejected (logged with FILE:LINE) and the old CRL stays"
    else
        fail "truncated CRL" "$(grep -i crl "$LB_LOG" | tail -2)"
    fi
    crl_revoking_client "$W/rot.crl.new"
    ossl_get "$lp" 1_3 / -sess_out "$W/rot.s13" >/dev/null
    ossl_get "$lp" 1_2 / -sess_out "$W/rot.s12" >/dev/null
    ossl_get "$lp" 1_2 / -no_ticket -sess_out "$W/rot.sid" >/dev/null
    mv "$W/rot.crl.new" "$W/rot.crl"
    refused_within "https://localhost:$lp/"
    if [ "$c" = 000 ] && grep -q "CRL reloaded; new handshakes use it" "$LB_LOG"; then
        pass "a replaced CRL file takes effect without a signal (after ~$((i / 2)) s, bound 15 s)"
    else
        fail "CRL rotation" "still $c after 15 s"
    fi
    # A session of the revoked client does not resume past the new CRL.
    c="$(ossl_get "$lp" 1_3 / -sess_in "$W/rot.s13" | head -2 | tr '\r\n' '  ')|$(ossl_get "$lp" 1_2 / -sess_in "$W/rot.s12" | head -2 | tr '\r\n' '  ')|$(ossl_get "$lp" 1_2 / -no_ticket -sess_in "$W/rot.sid" | head -2 | tr '\r\n' '  ')"
    # A session id may already be gone from wolfSSL's small cache (then the
    # full handshake is refused); one it still has is refused once resumed.
    if [[ $c != *200* ]] && [ -s "$W/rot.s13" ] && [ -s "$W/rot.s12" ] && [ -s "$W/rot.sid" ] &&
       [ "$(grep -c 'handshake failed .*reason="revoked"' "$LB_LOG")" -ge 3 ]; then
        pass "sessions (TLS 1.3, 1.2 tickets, 1.2 session id) of a client the new CRL revokes do not resume"
    else
        fail "revoked client resumes" "$c"
    fi
    # The CRL file deleted (a botched rotation): said once, and the CRL
    # loaded from it stays in force (the revoked client stays refused).
    rm -f "$W/rot.crl"
    if wait_log "CRL $W/rot.crl: No such file or directory; the CRL loaded from it stays in force" 15 \
        >/dev/null && [ "$(cget "https://localhost:$lp/")" = 000 ]; then
        pass "a CRL file deleted is logged, and the CRL loaded from it stays in force"
    else
        fail "CRL file deleted" "$(grep -i crl "$LB_LOG" | tail -2)"
    fi
    stop_lb
    # A new CRL that arrives while the certificate is half renewed (its key
    # not yet matching) is not lost: the reload is tried again at every
    # watch and the CRL takes effect once the key matches.
    cp "$PKI/ca.crl" "$W/rot2.crl"; cp "$PKI/server.crt" "$W/rot2.crt"; cp "$PKI/server.key" "$W/rot2.key"
    conf_tcp "$lp" "    server a 127.0.0.1:$bp" |
        sed "s|$PKI/ca.crl|$W/rot2.crl|; s|$PKI/server.crt $PKI/server.key|$W/rot2.crt $W/rot2.key|" \
        >"$W/rot2.conf"
    start_lb "$W/rot2.conf" || { fail crl-retry "no mtlslb"; stop_backend "$bp"; return; }
    cp "$PKI/mismatch.key" "$W/rot2.key"
    crl_revoking_client "$W/rot2.crl.new" && mv "$W/rot2.crl.new" "$W/rot2.crl"
    if wait_log "the new CRL was not loaded" 15 >/dev/null && [ "$(cget "https://localhost:$lp/")" = 200 ]; then
        cp "$PKI/server.key" "$W/rot2.key"
        refused_within "https://localhost:$lp/"
        if [ "$c" = 000 ] && grep -q "CRL reloaded; new handshakes use it" "$LB_LOG" &&
           [ "$(grep -c 'the new CRL was not loaded' "$LB_LOG")" = 1 ]; then
            pass "a CRL replaced while the key did not match loads once it does (tried again, logged once)"
        else
            fail "CRL retry" "still $c; $(grep -i crl "$LB_LOG" | tail -2)"
        fi
    else
        fail "CRL retry" "no failed reload logged, or the client was cut: $(grep -i crl "$LB_LOG" | tail -2)"
    fi
    stop_lb
    stop_backend "$bp"
}

t_user() {
    local lp bp d=$W/priv uid gid want c
    newport lp; newport bp
    if [ "$(id -u)" != 0 ] || ! getent passwd nobody >/dev/null; then
        pass "user (skipped: needs root and a 'nobody' user)"; return
    fi
    mkdir -p "$d"
    cp "$PKI/server.crt" "$PKI/server.key" "$d/"
    chmod 700 "$d"; chmod 600 "$d/server.key"     # nobody cannot read the key
    # The configuration itself stays readable, as /etc/mtlslb.conf would be.
    chmod 711 "$W"
    mkdir -p "$W/etc" && chmod 755 "$W/etc"
    start_backend http "$bp" web1
    conf_tcp "$lp" "    server a 127.0.0.1:$bp" | sed "s|$PKI/server.crt $PKI/server.key|$d/server.crt $d/server.key|; s/^global$/global\n    user nobody/" >"$W/etc/user.conf"
    chmod 644 "$W/etc/user.conf"
    start_lb "$W/etc/user.conf" || { fail user "no mtlslb"; return; }
    uid=$(awk '/^Uid:/ {print $2 "/" $3 "/" $4 "/" $5}' "/proc/$LB_PID/status")
    gid=$(awk '/^Gid:/ {print $2 "/" $3 "/" $4 "/" $5}' "/proc/$LB_PID/status")
    want="$(id -u nobody)/$(id -u nobody)/$(id -u nobody)/$(id -u nobody)"
    c=$(cget "https://localhost:$lp/")
    if [ "$uid" = "$want" ] && [ "$gid" = "$(id -g nobody)/$(id -g nobody)/$(id -g nobody)/$(id -g nobody)" ] &&
       [ "$c" = 200 ] && [ "$(awk '/^Groups:/ {$1 = ""; print}' "/proc/$LB_PID/status" | xargs)" = "$(id -g nobody)" ]; then
        pass "user nobody: running as uid/gid $(id -u nobody)/$(id -g nobody) after loading a key only root can read"
    else
        fail user "Uid $uid Gid $gid, curl $c"
    fi
    kill -HUP "$LB_PID"
    sleep 0.5
    if grep -q "reload: .*user.conf:[0-9]*: cannot open .*$d/server.*: Permission denied" "$LB_LOG" &&
       [ "$(cget "https://localhost:$lp/")" = 200 ]; then
        pass "user nobody: a reload reads files as nobody (the root-only key fails, the old configuration serves)"
    else
        fail "user reload" "$(grep reload "$LB_LOG" | tail -2)"
    fi
    stop_lb
    stop_backend "$bp"
}

# `log syslog`: lines reach /dev/log (facility daemon, ident mtlslb).  The
# test gives mtlslb a /dev of its own, in a mount namespace, whose log
# socket the test reads.
t_syslog() {
    local lp bp dev=$W/devroot n lpid c
    newport lp; newport bp
    if ! unshare -m true 2>/dev/null; then
        pass "log syslog (skipped: no mount namespaces here)"; return
    fi
    mkdir -p "$dev"
    for n in null zero random urandom; do : >"$dev/$n"; done
    python3 - "$dev/log" "$W/syslog.out" "$W/syslog.ready" <<'PY' &
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(sys.argv[1])
open(sys.argv[3], "w").close()
with open(sys.argv[2], "ab", buffering=0) as out:
    while True:
        out.write(s.recv(65536) + b"\n")
PY
    lpid=$!
    wait_file "$W/syslog.ready"
    start_backend http "$bp" web1
    conf_tcp "$lp" "    server a 127.0.0.1:$bp" | sed 's/^global$/global\n    log syslog/' >"$W/syslog.conf"
    unshare -m sh -c 'for n in null zero random urandom; do mount --bind /dev/$n "$1/$n"; done &&
        mount --rbind "$1" /dev && exec "$2" -c "$3"' sh "$dev" "$BIN" "$W/syslog.conf" \
        2>"$W/lb.syslog.log" &
    LB_PID=$!
    wait_port "$lp"
    c=$(cget "https://localhost:$lp/")
    sleep 0.3
    # <30> = daemon.info
    if [ "$c" = 200 ] && grep -q '^<30>.*mtlslb\[[0-9]*\]: conn 127.0.0.1:.* listener=tls .*end="done"' "$W/syslog.out"; then
        pass "log syslog: connection lines reach syslog as daemon.info with ident mtlslb"
    else
        fail syslog "curl $c; syslog got: $(head -3 "$W/syslog.out" 2>/dev/null)"
    fi
    kill -TERM "$LB_PID"; wait "$LB_PID"; LB_PID=
    kill "$lpid"; wait "$lpid" 2>/dev/null
    stop_backend "$bp"
}

# qemu_check NAME BIN QEMU TRIPLET LIBDIR BACKEND-PORT: a cross-built BIN
# under qemu-user answers -V and -t and relays one mTLS request (curl with
# the client certificate) to the backend; its stripped size goes to SIZES,
# what went wrong to QERR.
qemu_check() {
    local name=$1 bin=$2 q=$3 tgt=$4 lib=$5 bp=$6 lp c
    qrun() { "$q" -L "/usr/$tgt" -E "LD_LIBRARY_PATH=$lib" "$bin" "$@"; }
    newport lp
    conf_tcp "$lp" "    server a 127.0.0.1:$bp" >"$W/$name.conf"
    LB_N=$((LB_N + 1))
    LB_LOG=$W/lb.$LB_N.log
    "$q" -L "/usr/$tgt" -E "LD_LIBRARY_PATH=$lib" "$bin" -c "$W/$name.conf" 2>"$LB_LOG" &
    LB_PID=$!                       # qemu itself (a backgrounded function would be a subshell)
    wait_port "$lp"
    c=$(cget "https://localhost:$lp/")
    if [[ $(qrun -V) == "mtlslb "*" (wolfSSL 5."* ]] &&
       [ "$(qrun -t -c "$W/$name.conf" 2>&1)" = "configuration OK" ] && [ "$c" = 200 ] &&
       grep -q "conn 127.0.0.1:.* cn=client-good " <(sleep 0.3; cat "$LB_LOG"); then
        "$tgt-strip" -o "$bin.stripped" "$bin"
        SIZES="$SIZES $name=$(stat -c %s "$bin.stripped")"
        kill -TERM "$LB_PID"; wait "$LB_PID"; LB_PID=
        return 0
    fi
    QERR="curl $c; -V: $(qrun -V 2>&1 | head -1); log: $(tail -3 "$LB_LOG")"
    kill -TERM "$LB_PID"; wait "$LB_PID"; LB_PID=
    return 1
}

# Cross builds for the Raspberry Pi family (aarch64, armhf), dynamic and
# static, each run under qemu-user: -V, -t, one mTLS request end to end.
t_cross() {
    local sys=$ROOT/tests/work/sysroot why a tgt q bin kind bp out
    SIZES=""
    why=$("$ROOT/tests/cross.sh" "$sys") || { pass "cross builds (skipped: $why)"; return; }
    newport bp
    start_backend http "$bp" web1
    for a in arm64 armhf; do
        if [ $a = arm64 ]; then tgt=aarch64-linux-gnu; q=qemu-aarch64; else tgt=arm-linux-gnueabihf; q=qemu-arm; fi
        for kind in dynamic static; do
            bin=$W/mtlslb-$a-$kind
            out=$(env -u MAKEFLAGS -u MAKELEVEL -u CC make -s -B -C "$ROOT" $([ $kind = static ] && echo static) \
                SAN=0 CROSS_COMPILE=$tgt- WOLFSSL_PREFIX="$sys/$a/usr" BIN="$bin" 2>&1)
            if [ ! -x "$bin" ] || grep -q "error" <<<"$out"; then
                fail "cross $a $kind" "build: $out"
                continue
            fi
            if qemu_check "$a-$kind" "$bin" "$q" "$tgt" "$sys/$a/usr/lib/$tgt" "$bp"; then
                pass "cross $a ($tgt) $kind: built here, -V, -t and an mTLS request under $q"
            else
                fail "cross $a $kind" "$QERR"
            fi
        done
    done
    echo "  stripped sizes (bytes):$SIZES"
    stop_backend "$bp"
}

# The OpenWrt package: the recipe's parts, its compile step as the SDK runs
# it (with the host compiler standing in for TARGET_CC), the procd script
# and the default configuration.
t_openwrt() {
    local o=$ROOT/openwrt b=$W/owrt-build out
    if grep -q '^  DEPENDS:=+libwolfssl$' "$o/Makefile" &&
       grep -q 'INSTALL_BIN) $(PKG_BUILD_DIR)/mtlslb $(1)/usr/sbin/mtlslb' "$o/Makefile" &&
       grep -q 'INSTALL_BIN) ./files/mtlslb.init $(1)/etc/init.d/mtlslb' "$o/Makefile" &&
       grep -q 'INSTALL_CONF) ./files/mtlslb.conf $(1)/etc/mtlslb.conf' "$o/Makefile" &&
       grep -A2 'Package/mtlslb/conffiles' "$o/Makefile" | grep -q '^/etc/mtlslb.conf$' &&
       grep -q '^\$(eval \$(call BuildPackage,mtlslb))$' "$o/Makefile"; then
        pass "openwrt/Makefile: DEPENDS:=+libwolfssl, binary, procd script and conffile installed"
    else
        fail openwrt-recipe "a part of the recipe is missing"
    fi
    # Build/Prepare + Build/Compile as the SDK would run them.
    rm -rf "$b" && mkdir -p "$b"
    cp "$ROOT/mtlslb.c" "$ROOT/mtlslb.h" "$ROOT/Makefile" "$b/"
    out=$(env -u MAKEFLAGS -u MAKELEVEL make -C "$b" CC=cc CFLAGS="-Os -pipe" CPPFLAGS= LDFLAGS= \
        WOLFSSL_PREFIX=/usr BIN=mtlslb 2>&1)
    if [ -x "$b/mtlslb" ] && ! grep -qi "warning\|error" <<<"$out" && "$b/mtlslb" -V | grep -q "^mtlslb "; then
        pass "openwrt: the package's compile step (TARGET_CFLAGS, WOLFSSL_PREFIX=staging) builds"
    else
        fail openwrt-compile "$out"
    fi
    out=$(sh -n "$o/files/mtlslb.init" 2>&1)
    if [ -z "$out" ] && grep -q '^USE_PROCD=1$' "$o/files/mtlslb.init" &&
       grep -q 'procd_set_param respawn' "$o/files/mtlslb.init" &&
       grep -q 'procd_set_param command "$PROG" -c "$CONF"' "$o/files/mtlslb.init" &&
       grep -A2 '^reload_service()' "$o/files/mtlslb.init" | grep -q "procd_send_signal mtlslb '\*' HUP"; then
        pass "openwrt: procd init script (respawn, reload sends HUP, -c /etc/mtlslb.conf)"
    else
        fail openwrt-init "$out"
    fi
    sed "s|/etc/mtlslb/|$PKI/|g" "$o/files/mtlslb.conf" >"$W/owrt.conf"
    out=$("$BIN" -t -c "$W/owrt.conf" 2>&1)
    [ "$out" = "configuration OK" ] && pass "openwrt: the default configuration passes -t" ||
        fail openwrt-conf "$out"
}

# build_loadgen: tests/loadgen (on the system's wolfSSL) at $W/loadgen, built
# once per run; a compiler error is left in $W/loadgen.err.
build_loadgen() {
    [ -x "$W/loadgen" ] || cc -std=c99 -O2 -o "$W/loadgen" "$ROOT/tests/loadgen.c" \
        $(pkg-config --cflags --libs wolfssl 2>/dev/null || echo -lwolfssl) 2>"$W/loadgen.err"
}

# tests/loadgen against mtlslb: 32 clients asking to resume, TLS 1.2 and
# 1.3, none refused (sessions the cache forgot become full handshakes), and
# every request counted reached the backend.
t_loadgen() {
    local lp bp out v n r
    newport lp; newport bp
    if ! build_loadgen; then
        fail loadgen "does not build: $(head -3 "$W/loadgen.err")"; return
    fi
    start_backend http "$bp" web1
    conf_http "$lp" "backend web
    server a 127.0.0.1:$bp" | sed 's/timeout idle 2s/timeout idle 20s/' >"$W/lg.conf"
    start_lb "$W/lg.conf" || { fail loadgen "no mtlslb"; return; }
    for v in 1.3 1.2; do
        rm -f "$W/be.$bp.log"
        out=$("$W/loadgen" --connect "127.0.0.1:$lp" --sni localhost --cert "$PKI/client.crt" \
            --key "$PKI/client.key" --ca "$PKI/ca.crt" --concurrency 32 --duration 2 --resume --tls $v)
        n=$(sed -n 's/.*requests=\([0-9]*\).*/\1/p' <<<"$out")
        r=$(sed -n 's/.* resumed=\([0-9]*\).*/\1/p' <<<"$out")
        # Most handshakes resume (each client's first one cannot).
        if [[ $out == *" errors=0 "* ]] && [ "${n:-0}" -gt 50 ] && [ "$(hits "$bp")" = "$n" ] &&
           [ "${r:-0}" -gt $((n / 2)) ]; then
            pass "loadgen TLS $v, 32 clients resuming: $n requests ($r resumed), 0 errors, every one reached the backend"
        else
            fail "loadgen TLS $v" "$out (backend logged $(hits "$bp"))"
        fi
    done
    # --group: the key share the bench's X25519 rows offer (and P-256, the
    # library's default, asked for by name), seen in the handshake made
    for v in x25519:X25519 p256:SECP256R1; do
        rm -f "$W/be.$bp.log"
        out=$("$W/loadgen" --connect "127.0.0.1:$lp" --sni localhost --cert "$PKI/client.crt" \
            --key "$PKI/client.key" --ca "$PKI/ca.crt" --concurrency 4 --duration 1 \
            --group "${v%%:*}" -v 2>&1)
        n=$(sed -n 's/.*requests=\([0-9]*\).*/\1/p' <<<"$out")
        if [[ $out == *"key exchange ${v#*:}"* ]] && [[ $out == *" errors=0 "* ]] &&
           [ "${n:-0}" -gt 5 ] && [ "$(hits "$bp")" = "$n" ]; then
            pass "loadgen --group ${v%%:*}: key exchange ${v#*:}, $n requests, 0 errors"
        else
            fail "loadgen --group ${v%%:*}" "$(tail -3 <<<"$out")"
        fi
    done
    # --rate (the bench's paced rows): request k begins no sooner than k / N
    # s after the start, so 2 s at 100/s is at most 201 requests; at least
    # half of them, however slow the machine, and each reached the backend.
    rm -f "$W/be.$bp.log"
    out=$("$W/loadgen" --connect "127.0.0.1:$lp" --sni localhost --cert "$PKI/client.crt" \
        --key "$PKI/client.key" --ca "$PKI/ca.crt" --concurrency 8 --duration 2 --requests-per-conn 0 \
        --rate 100)
    n=$(sed -n 's/.*requests=\([0-9]*\).*/\1/p' <<<"$out")
    if [[ $out == *" errors=0 "* ]] && [ "${n:-0}" -ge 100 ] && [ "$n" -le 201 ] && [ "$(hits "$bp")" = "$n" ]; then
        pass "loadgen --rate 100 for 2 s, 8 clients: $n requests, 0 errors"
    else
        fail "loadgen --rate" "$out (backend logged $(hits "$bp"))"
    fi
    stop_lb
    stop_backend "$bp"
}

# The event loop's cold part (issue 6, (g)): connections quiet for a while
# are polled only every few ms while others keep the loop busy.  80
# keep-alive clients (over LOOP_SPLIT_MIN, and more than the busy part) make
# a request each, go quiet past LOOP_COLD_MS while 8 loadgen clients keep
# mtlslb busy, then ask again (each still answered, from the cold part), and
# once more after the load has ended (the loop then sleeps on every
# descriptor).  http and tcp mode.
t_cold() {
    local lp bp out mode lg
    newport bp
    if ! build_loadgen; then
        fail cold "loadgen does not build: $(head -3 "$W/loadgen.err")"; return
    fi
    start_backend http "$bp" web1
    for mode in http tcp; do
        newport lp
        if [ $mode = http ]; then
            conf_http "$lp" "backend web
    server a 127.0.0.1:$bp" | sed 's/timeout idle 2s/timeout idle 20s/' >"$W/cold.conf"
        else
            conf_tcp "$lp" "    server a 127.0.0.1:$bp" >"$W/cold.conf"
        fi
        start_lb "$W/cold.conf" || { fail "cold $mode" "no mtlslb"; continue; }
        "$W/loadgen" --connect "127.0.0.1:$lp" --sni localhost --cert "$PKI/client.crt" \
            --key "$PKI/client.key" --ca "$PKI/ca.crt" --concurrency 8 --requests-per-conn 0 --duration 4 \
            >"$W/cold.lg" 2>&1 &
        lg=$!
        out=$(python3 - "$lp" "$PKI" <<'PY'
import http.client, socket, ssl, sys, time
port, pki = int(sys.argv[1]), sys.argv[2] + "/"
ctx = ssl.create_default_context(cafile=pki + "ca.crt")
ctx.load_cert_chain(pki + "client.crt", pki + "client.key")
t0 = time.monotonic()
conns = [http.client.HTTPSConnection("localhost", port, context=ctx, timeout=5) for _ in range(80)]
def round_():
    ok, worst = 0, 0.0
    for c in conns:
        t = time.monotonic()
        try:
            c.request("GET", "/cold")
            r = c.getresponse()
            r.read()
            ok += r.status == 200
        except OSError as e:
            print("error:", e)
        worst = max(worst, time.monotonic() - t)
    return ok, worst
a, _ = round_()
time.sleep(1.2)                         # quiet past LOOP_COLD_MS, the load going on
b, w = round_()
busy = time.monotonic() - t0 < 4        # the load still ran all through
time.sleep(max(0, 5 - (time.monotonic() - t0)))
c, _ = round_()
print(a, b, c, "busy" if busy else "late", "%.1f" % (w * 1000))
PY
)
        wait "$lg"
        set -- $out
        if [ "${1:-}" = 80 ] && [ "${2:-}" = 80 ] && [ "${3:-}" = 80 ] && [ "${4:-}" = busy ] &&
           grep -q " errors=0 " "$W/cold.lg"; then
            pass "$mode: 80 keep-alive clients quiet past 500 ms are answered while 8 others keep mtlslb busy (slowest ${5} ms), and after"
        else
            fail "cold $mode" "$out; loadgen: $(cat "$W/cold.lg")"
        fi
        stop_lb
    done
    stop_backend "$bp"
}

# workers 2 (issue 6): both workers take a share of the connections, /stats
# sums them (a connection the client dropped mid-handshake as its run ended
# counts as a handshake failure), worker 0's health checks steer both, signals reach both, a
# killed worker is started again, and tickets resume on either worker.
t_workers() {
    local lp sp b1 b2 out pids p n i c
    newport lp; newport sp; newport b1; newport b2
    start_backend http "$b1" web1
    start_backend http "$b2" web2
    conf_http "$lp" "backend web
    server a 127.0.0.1:$b1
    server b 127.0.0.1:$b2
    check http GET / expect 200
    check-interval 300ms
    rise 1
    fall 1" | sed "s/^global\$/global\n    workers 2\n    stats 127.0.0.1:$sp/" >"$W/workers.conf"
    start_lb "$W/workers.conf" || { fail workers "no mtlslb"; return; }
    pids=$(pgrep -P "$LB_PID" | sort | tr '\n' ' ')
    if ! build_loadgen; then
        fail workers "loadgen does not build: $(head -3 "$W/loadgen.err")"; stop_lb; return
    fi
    rm -f "$W/be.$b1.log" "$W/be.$b2.log"
    out=$("$W/loadgen" --connect "127.0.0.1:$lp" --sni localhost --cert "$PKI/client.crt" \
        --key "$PKI/client.key" --ca "$PKI/ca.crt" --concurrency 16 --requests-per-conn 1 --duration 3 \
        --path /load)
    n=$(sed -n 's/.* handshakes=\([0-9]*\).*/\1/p' <<<"$out")
    c=$(cat "$W/be.$b1.log" "$W/be.$b2.log" 2>/dev/null | grep -c " /load")   # not the checks
    sleep 0.3
    [ "$c" = "$n" ] || n="$n (backends logged $c)"
    c=$(curl -s "http://127.0.0.1:$sp/stats" | python3 -c '
import json, sys
d = json.load(sys.stdin)
w = [x["connections"] for x in d["workers"]]
srv = sum(s["total"] for b in d["backends"] for s in b["servers"])
l = d["listeners"][0]
print(len(w), " ".join("%d" % (100 * x // max(sum(w), 1)) for x in w),
      l["total"] - sum(l["handshake_failures"].values()), srv)')
    set -- $c
    if [ "$(wc -w <<<"$pids")" = 2 ] && [ "${1:-}" = 2 ] && [ "${2:-0}" -ge 35 ] && [ "${2:-0}" -le 65 ] &&
       [[ $out == *" errors=0 "* ]] && [ "${4:-}" = "$n" ] && [ "${5:-}" = "$n" ]; then
        pass "workers 2: $n connections split $2 % / $3 %; /stats sums match the client (handshakes $4, server requests $5) and the backends"
    else
        fail workers "pids=$pids stats=$c client: $out; n=$n"
    fi
    # Worker 0 checks; both stop sending to the server it finds down.
    stop_backend "$b2"
    wait_log "server b DOWN" 5 >/dev/null
    out=$(for i in $(seq 40); do cget "https://localhost:$lp/"; echo; done | sort | uniq -c | tr -s ' \n' ' ')
    c=$(grep -c "server b DOWN" "$LB_LOG")
    if [ "$out" = " 40 200 " ] && [ "$c" = 1 ] &&
       curl -s "http://127.0.0.1:$sp/stats" | grep -q '"name":"b","address":"[^"]*","state":"down"'; then
        pass "workers 2: one health checker (DOWN logged once), no request sent to the down server by either worker"
    else
        fail "workers health" "answers:$out DOWN lines: $c"
    fi
    start_backend http "$b2" web2
    # Tickets open on either worker: 20 resumptions of one session.
    ossl_get "$lp" 1_3 /headers -sess_out "$W/wsess" >/dev/null
    c=0
    for i in $(seq 20); do
        out=$(ossl_get "$lp" 1_3 /headers -sess_in "$W/wsess")
        [[ $out == Reused*"X-Client-Subject: CN=client-good"* ]] && c=$((c + 1))
    done
    if [ "$c" = 20 ]; then
        pass "workers 2: a TLS 1.3 ticket resumes with the identity on whichever worker gets it (20 of 20)"
    else
        fail "workers tickets" "$c of 20 resumed with the identity"
    fi
    # SIGHUP reaches both; a killed worker is started again.
    kill -HUP "$LB_PID"
    sleep 1
    c=$(grep -c "reload: configuration of .* in use" "$LB_LOG")
    # Worker 0 (the checker) killed while server b is down: the new one goes
    # on from the shared states (no second DOWN), and /stats sums do not go
    # back (the dead worker's totals are kept).
    stop_backend "$b2"
    wait_log "server b DOWN" 5 >/dev/null
    sleep 0.5
    local down0 total0 total1
    down0=$(grep -c "server b DOWN" "$LB_LOG")
    total0=$(curl -s "http://127.0.0.1:$sp/stats" | python3 -c 'import json,sys; print(json.load(sys.stdin)["listeners"][0]["total"])')
    p=$(curl -s "http://127.0.0.1:$sp/stats" | python3 -c 'import json,sys; print(json.load(sys.stdin)["workers"][0]["pid"])')
    kill -KILL "$p"
    for i in $(seq 40); do
        [ "$(pgrep -P "$LB_PID" | wc -l)" = 2 ] && [ -z "$(pgrep -P "$LB_PID" | grep -x "$p")" ] && break
        sleep 0.1
    done
    sleep 1.5                       # five check intervals
    total1=$(curl -s "http://127.0.0.1:$sp/stats" | python3 -c 'import json,sys; print(json.load(sys.stdin)["listeners"][0]["total"])')
    if [ "$c" = 2 ] && grep -q "worker 0 (pid $p) killed by signal 9; starting it again" "$LB_LOG" &&
       [ "$(pgrep -P "$LB_PID" | wc -l)" = 2 ] && [ "$(cget "https://localhost:$lp/")" = 200 ]; then
        pass "workers 2: SIGHUP reloads both; a killed worker is started again and serves"
    else
        fail "workers signals" "reloads=$c children=$(pgrep -P "$LB_PID" | tr '\n' ' ')"
    fi
    if [ "$(grep -c "server b DOWN" "$LB_LOG")" = "$down0" ] && [ "$total1" -ge "$total0" ] &&
       curl -s "http://127.0.0.1:$sp/stats" | grep -q '"name":"b","address":"[^"]*","state":"down"'; then
        pass "workers 2: worker 0 started again keeps the server states (no second DOWN) and /stats totals ($total0 -> $total1)"
    else
        fail "workers restart state" "DOWN lines $down0 -> $(grep -c "server b DOWN" "$LB_LOG"), total $total0 -> $total1"
    fi
    start_backend http "$b2" web2
    # SPEC 2: a second instance on the same addresses cannot bind (exit 2),
    # although the workers' sockets have SO_REUSEPORT.
    timeout 10 "$BIN" -c "$W/workers.conf" 2>"$W/second.log"
    c=$?
    if [ "$c" = 2 ] && grep -q "cannot bind 127.0.0.1:$lp: Address already in use" "$W/second.log" &&
       [ "$(cget "https://localhost:$lp/")" = 200 ]; then
        pass "workers 2: a second instance on the same address exits 2 (cannot bind); the first serves on"
    else
        fail "workers second instance" "exit $c: $(head -3 "$W/second.log")"
    fi
    pids=$(pgrep -P "$LB_PID" | tr '\n' ' ')
    stop_lb
    sleep 0.2
    c=0; for p in $pids; do kill -0 "$p" 2>/dev/null && c=$((c + 1)); done
    if [ "$LB_RC" = 0 ] && [ "$c" = 0 ] && grep -q "stopped (all workers)" "$LB_LOG"; then
        pass "workers 2: SIGTERM stops every worker, then the first process (exit 0)"
    else
        fail "workers stop" "rc=$LB_RC, $c workers left"
    fi
    # The first process killed outright: its workers stop too (as on
    # SIGTERM), rather than serve on as orphans beside a new instance.
    start_lb "$W/workers.conf" || { fail workers-orphans "no mtlslb"; return; }
    # A new workers count is for the next start, and the reload says so.
    sed -i 's/^    workers 2$/    workers 3/' "$W/workers.conf"
    kill -HUP "$LB_PID"
    if wait_log "reload: workers 3 is for the next start; 2 workers go on" 5 >/dev/null &&
       [ "$(pgrep -P "$LB_PID" | wc -l)" = 2 ]; then
        pass "workers: a reload that changes workers says it is for the next start"
    else
        fail "workers count reload" "$(grep reload "$LB_LOG" | tail -2)"
    fi
    pids=$(pgrep -P "$LB_PID" | tr '\n' ' ')
    kill -KILL "$LB_PID"
    wait "$LB_PID" 2>/dev/null
    LB_PID=
    for i in $(seq 50); do
        c=0; for p in $pids; do kill -0 "$p" 2>/dev/null && c=$((c + 1)); done
        [ "$c" = 0 ] && break
        sleep 0.1
    done
    if [ "$(wc -w <<<"$pids")" = 2 ] && [ "$c" = 0 ] && [ "$(cget "https://localhost:$lp/")" = 000 ]; then
        pass "workers 2: the first process killed (SIGKILL), its workers stop as on SIGTERM"
    else
        fail "workers orphans" "$c of '$pids' still running"
        for p in $pids; do kill -KILL "$p" 2>/dev/null; done
    fi
    # A reload the workers refuse (a new listener's address is taken for
    # 3 s) is not what a worker started again runs.
    local xp hold
    newport xp
    sed -i 's/^    workers 3$/    workers 2/' "$W/workers.conf"
    start_lb "$W/workers.conf" || { fail workers-refused "no mtlslb"; return; }
    python3 -c 'import socket, sys, time
s = socket.socket(); s.bind(("127.0.0.1", int(sys.argv[1]))); s.listen(); time.sleep(3)' "$xp" &
    hold=$!
    sleep 0.3
    printf 'listener extra\n    bind 127.0.0.1:%s\n    cert %s %s\n    default-backend web\n' \
        "$xp" "$PKI/server.crt" "$PKI/server.key" >>"$W/workers.conf"
    kill -HUP "$LB_PID"
    wait_log "reload failed" 5 >/dev/null
    kill -KILL "$(pgrep -P "$LB_PID" | head -1)"
    wait "$hold" 2>/dev/null
    sleep 1.5
    c="$(cget "https://localhost:$xp/") $(cget "https://localhost:$lp/")"
    if [ "$c" = "000 200" ] && ! grep -q "exited with status" "$LB_LOG"; then
        pass "workers 2: a worker started again after a reload the workers refused runs what they run"
    else
        fail "workers refused reload" "extra listener, old one: $c; $(grep -m1 'exited with status' "$LB_LOG")"
    fi
    stop_lb
    stop_backend "$b1"
    stop_backend "$b2"
}

# The acceptance of the earlier issues, again with workers 2.
t_workers_again() {
    WORKERS=2
    t_client_certs
    t_sni
    t_relay
    t_http_keepalive
    t_http_headers
    t_http_errors
    t_http_bodies
    t_checks_failover
    t_resumption
    t_reload
    WORKERS=
}

# allow lines (issue 8, SPEC 4): client certificates made here with the test
# CA: CN device-1, device-2, admin, a SAN URI spiffe://edge/sensor, a CN
# with a `*` and one with CR LF.
allow_cert() {      # allow_cert NAME SUBJECT [EXTRA EXT LINE]
    local d=$W/allow
    mkdir -p "$d"
    [ -e "$d/$1.crt" ] && return 0
    openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -utf8 -keyout "$d/$1.key" \
        -out "$d/$1.csr" -subj "$2" 2>/dev/null
    printf 'basicConstraints=CA:FALSE\nextendedKeyUsage=clientAuth\n%s\n' "${3:-}" >"$d/$1.ext"
    openssl x509 -req -in "$d/$1.csr" -CA "$PKI/ca.crt" -CAkey "$PKI/ca.key" -days 2 \
        -extfile "$d/$1.ext" -out "$d/$1.crt" 2>/dev/null
}

# aget NAME URL: the HTTP status with certificate NAME of allow_cert.
aget() {
    curl -s -o /dev/null -w '%{http_code}' --max-time 10 --cacert "$PKI/ca.crt" \
        --cert "$W/allow/$1.crt" --key "$W/allow/$1.key" "$2"
}

t_allow() {
    local tp hp bp out fp c want d=$W/allow
    newport tp; newport hp; newport bp
    allow_cert device-1 "/O=Acme/OU=devices/CN=device-1"
    allow_cert device-2 "/O=Acme/OU=devices/CN=device-2"
    allow_cert admin "/O=Acme/OU=ops/CN=admin"
    allow_cert sensor "/O=Acme/CN=sensor-7" "subjectAltName=URI:spiffe://edge/sensor,DNS:sensor-7.edge"
    allow_cert star "/O=Acme/CN=adm*"
    allow_cert ctl $'/O=Acme/CN=admin\r\nX: y'
    start_backend http "$bp" web1
    # allow FIELD PATTERN as a listener's rule, in tcp and in http mode.
    allow_conf() {      # allow_conf RULES... (one per argument, listener lines)
        local r
        {
            conf_tcp "$tp" "    server a 127.0.0.1:$bp" "$(for r in "$@"; do echo "    allow $r"; done)"
            echo "listener web"
            echo "    bind 127.0.0.1:$hp"
            echo "    mode http"
            echo "    cert $PKI/server.crt $PKI/server.key"
            echo "    ca $PKI/ca.crt"
            echo "    default-backend web"
            for r in "$@"; do echo "    allow $r"; done
        } >"$W/allow.conf"
    }
    allow_conf "cn device-*"
    start_lb "$W/allow.conf" || { fail allow "no mtlslb"; return; }
    out="$(aget device-1 "https://localhost:$tp/")$(aget device-2 "https://localhost:$tp/")$(aget admin "https://localhost:$tp/")"
    out="$out $(aget device-1 "https://localhost:$hp/")$(aget device-2 "https://localhost:$hp/")$(aget admin "https://localhost:$hp/")"
    # The alert (SPEC 4): access_denied right after the handshake, with a
    # shared libwolfssl too (tls_seal_alert), for each AEAD of TLS 1.3 and 1.2.
    want="alert access denied"
    c=$(for v in "-tls1_3 -ciphersuites TLS_AES_128_GCM_SHA256" "-tls1_3 -ciphersuites TLS_AES_256_GCM_SHA384" \
                 "-tls1_3 -ciphersuites TLS_CHACHA20_POLY1305_SHA256" \
                 "-tls1_2 -cipher ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256" \
                 "-tls1_2 -cipher ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384" \
                 "-tls1_2 -cipher ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305"; do
        timeout 10 openssl s_client -connect "127.0.0.1:$tp" $v -ign_eof -cert "$d/admin.crt" \
            -key "$d/admin.key" -CAfile "$PKI/ca.crt" </dev/null 2>&1 | grep -ci "$want"
    done | awk '$1 > 0' | wc -l)
    if [ "$out" = "200200000 200200403" ] && [ "$c" = 6 ] &&
       grep -q 'access denied .* listener=tls cn=admin rule="allow cn device-\*"' "$LB_LOG" &&
       grep -q 'handshake failed .*reason="access denied"' "$LB_LOG" &&
       grep -q 'access denied .* listener=web cn=admin rule="allow cn device-\*"' "$LB_LOG" &&
       grep -q 'req .* listener=web .* cn=admin .*status=403' "$LB_LOG"; then
        pass "allow cn device-*: device-1 and device-2 admitted, admin refused (tcp: TLS $want, http: 403), logged with CN and rule"
    else
        fail "allow cn" "tcp/http statuses: $out, alerts seen: $c; $(grep -m2 'access denied' "$LB_LOG")"
    fi
    stop_lb
    fp=$(openssl x509 -in "$d/device-2.crt" -noout -fingerprint -sha256 | sed 's/.*=//')   # AB:CD:..., upper case
    allow_conf "san-uri spiffe://edge/*"
    start_lb "$W/allow.conf" || { fail allow "no mtlslb"; return; }
    out="$(aget sensor "https://localhost:$hp/")$(aget device-1 "https://localhost:$hp/")$(aget sensor "https://localhost:$tp/")$(aget device-1 "https://localhost:$tp/")"
    stop_lb
    allow_conf "fingerprint $fp"
    start_lb "$W/allow.conf" || { fail allow "no mtlslb"; return; }
    out="$out $(aget device-2 "https://localhost:$hp/")$(aget device-1 "https://localhost:$hp/")"
    stop_lb
    allow_conf "fingerprint $(tr -d : <<<"$fp" | tr A-F a-f)" "san-dns nothing.example"
    start_lb "$W/allow.conf" || { fail allow "no mtlslb"; return; }
    out="$out $(aget device-2 "https://localhost:$hp/")$(aget admin "https://localhost:$hp/")"
    stop_lb
    # SPEC 4: any field's pattern may be a * glob: the first 4 bytes.
    allow_conf "fingerprint $(cut -c1-11 <<<"$fp" | tr A-F a-f)*"
    start_lb "$W/allow.conf" || { fail allow "no mtlslb"; return; }
    out="$out $(aget device-2 "https://localhost:$hp/")$(aget device-1 "https://localhost:$hp/")"
    stop_lb
    if [ "$out" = "200403200000 200403 200403 200403" ]; then
        pass "allow san-uri spiffe://edge/* and allow fingerprint (colons or not, any case, a * glob) admit exactly the matching certificate"
    else
        fail "allow san-uri / fingerprint" "$out (want 200403200000 200403 200403 200403)"
    fi
    # Route rules: /admin only for CN admin, / for everyone; no fall-through.
    {
        conf_http "$hp" "backend web
    server a 127.0.0.1:$bp" "    route path /admin backend web allow cn admin
    route path / backend web"
    } >"$W/allow-route.conf"
    start_lb "$W/allow-route.conf" || { fail allow "no mtlslb"; return; }
    out="$(aget admin "https://localhost:$hp/admin")$(aget admin "https://localhost:$hp/")$(aget device-1 "https://localhost:$hp/admin")$(aget device-1 "https://localhost:$hp/")"
    if [ "$out" = "200200403200" ] &&
       grep -q 'access denied .* listener=https route="line [0-9]*" cn=device-1 rule="allow cn admin"' "$LB_LOG"; then
        pass "route allow: /admin only for CN admin (403 for device-1, not passed on to the next route), / for everyone"
    else
        fail "route allow" "$out (want 200200403200)"
    fi
    stop_lb
    # SIGHUP: new allow lines for new connections.
    allow_conf "cn device-*"
    start_lb "$W/allow.conf" || { fail allow "no mtlslb"; return; }
    out="$(aget admin "https://localhost:$hp/")$(aget device-1 "https://localhost:$hp/")"
    allow_conf "cn admin"
    kill -HUP "$LB_PID"
    wait_log "reload: configuration of" 5 >/dev/null
    out="$out $(aget admin "https://localhost:$hp/")$(aget device-1 "https://localhost:$hp/")"
    stop_lb
    if [ "$out" = "403200 200403" ]; then
        pass "SIGHUP: new allow lines apply to new connections (admin 403 -> 200, device-1 200 -> 403)"
    else
        fail "allow reload" "$out (want 403200 200403)"
    fi
    # A `*` or control bytes in a certificate field are data, never a
    # wildcard; a `*` covers UTF-8 (a CN of Jürgen), never a control byte.
    allow_cert utf8 "/O=Acme/CN=J$(printf '\xc3\xbc')rgen"
    allow_conf "cn admin" "cn admin*" "cn J*rgen"
    start_lb "$W/allow.conf" || { fail allow "no mtlslb"; return; }
    out="$(aget admin "https://localhost:$hp/")$(aget star "https://localhost:$hp/")$(aget ctl "https://localhost:$hp/")$(aget utf8 "https://localhost:$hp/")"
    stop_lb
    if [ "$out" = "200403403200" ]; then
        pass "a CN 'adm*' or 'admin<CR><LF>X: y' matches neither 'cn admin' nor 'cn admin*'; 'cn J*rgen' admits CN J\xc3\xbcrgen (UTF-8)"
    else
        fail "allow literal values and UTF-8" "$out (want 200403403200)"
    fi
    # Errors name file and line.
    conf_tcp "$tp" "    server a 127.0.0.1:$bp" "    allow cnn x
    allow fingerprint 12:34
    allow serial xyz" >"$W/allow-bad.conf"
    out=$("$BIN" -t -c "$W/allow-bad.conf" 2>&1)
    c=$(grep -n "allow cnn" "$W/allow-bad.conf" | cut -d: -f1)
    if grep -q "allow-bad.conf:$c: allow: unknown field 'cnn'" <<<"$out" &&
       grep -q "allow-bad.conf:$((c + 1)): allow fingerprint: '12:34' is not a SHA-256" <<<"$out" &&
       grep -q "allow-bad.conf:$((c + 2)): allow serial: 'xyz' is not a serial number in hex" <<<"$out"; then
        pass "-t refuses bad allow lines with FILE:LINE (unknown field, short fingerprint, non-hex serial)"
    else
        fail "allow errors" "$out"
    fi
    stop_backend "$bp"
}

# The fuzz targets' seeds and every input a fuzzer once failed on (issue 7),
# run through the targets built with ASan + UBSan (tests/fuzz/run.sh).
t_fuzz_regress() {
    local out
    if out=$("$ROOT/tests/fuzz/run.sh" regress 2>&1); then
        pass "fuzz regressions: $(grep -c ' ok (' <<<"$out") targets over their corpora and regress/ inputs, no sanitizer report"
    else
        fail "fuzz regressions" "$(grep -v ' ok (' <<<"$out" | tail -5)"
    fi
}

# valgrind (memcheck) over the tcp, http and reload cases (issue 7): no
# error and no definitely lost block, mtlslb's own exit status says so.
# Not under SAN=1 (AddressSanitizer and valgrind do not mix).
t_valgrind() {
    local lp hp bp vlog out c i
    if [ "${MTLSLB_SAN:-0}" = 1 ]; then
        pass "valgrind (skipped under SAN=1: the plain run does it)"; return
    fi
    if ! command -v valgrind >/dev/null; then fail valgrind "valgrind is not installed"; return; fi
    newport lp; newport hp; newport bp
    start_backend http "$bp" web1
    {
        conf_tcp "$lp" "    server a 127.0.0.1:$bp"
        cat <<EOF
listener web
    bind 127.0.0.1:$hp
    mode http
    cert $PKI/server.crt $PKI/server.key
    ca $PKI/ca.crt
    crl $PKI/ca.crl
    forward-cert on
    default-backend web
EOF
    } | sed 's/timeout handshake 2s/timeout handshake 20s/; s/timeout connect 1s/timeout connect 10s/' >"$W/vg.conf"
    vlog=$W/valgrind.log
    LB_N=$((LB_N + 1))
    LB_LOG=$W/lb.$LB_N.log
    valgrind -q --leak-check=full --show-leak-kinds=definite --errors-for-leak-kinds=definite \
        --error-exitcode=99 --log-file="$vlog" "$BIN" -c "$W/vg.conf" 2>"$LB_LOG" &
    LB_PID=$!
    for i in $(seq 300); do grep -q " started, pid" "$LB_LOG" && break; sleep 0.1; done
    out=""
    for i in 1 2 3; do
        out="$out$(cget --max-time 30 "https://localhost:$hp/headers")$(cget --max-time 30 "https://localhost:$lp/") "
    done
    c=$(cas other-client --max-time 30 "https://localhost:$hp/")               # refused handshake
    ossl_get "$hp" 1_3 / -sess_out "$W/vg.sess" >/dev/null
    out="$out$(ossl_get "$hp" 1_3 / -sess_in "$W/vg.sess" | head -2 | tr '\r\n' '  ')"
    kill -HUP "$LB_PID"
    for i in $(seq 300); do grep -q "reload: configuration of" "$LB_LOG" && break; sleep 0.1; done
    out="$out $(cget --max-time 30 "https://localhost:$hp/")$(cget --max-time 30 "https://localhost:$lp/")"
    kill -USR1 "$LB_PID"
    sleep 0.5
    stop_lb
    if [ "$LB_RC" = 0 ] && [ "$c" = 000 ] && [[ $out == "200200 200200 200200 Reused HTTP/1.1 200 OK"*" 200200" ]] && [ -e "$vlog" ] &&
       ! grep -q "definitely lost\|Invalid \|uninitialised\|Mismatched" "$vlog"; then
        pass "valgrind: tcp, http (keep-alive, Client-Cert), a refused handshake, a resumption, SIGHUP, SIGUSR1, SIGTERM: no error, no definite leak"
    else
        fail valgrind "rc=$LB_RC refused=$c out=[$out] $(grep -m3 "==" "$vlog" | tr '\n' ' ')"
    fi
    stop_backend "$bp"
}

# The fast build (make WOLFSSL_SRC=DIR, SPEC 10): wolfSSL built from Debian's
# source with SP assembly, single-threaded, linked in.  A different library
# build behaves differently (it found the shared cipher-suite list, see
# tls_own_suites), so the TLS cases run again on it.  Skipped under SAN=1
# (the plain run covers it) and where the source cannot be fetched.
# wolfssl_src NAME: the wolfSSL source tree for a WOLFSSL_SRC build into
# src (the caller's local); 1 when test NAME is skipped (SAN=1: the plain
# run builds and tests it) or failed (no source).
wolfssl_src() {
    if [ "${MTLSLB_SAN:-0}" = 1 ]; then
        pass "$1 (skipped under SAN=1: the plain run builds and tests it)"; return 1
    fi
    if ! src=$("$ROOT/tests/wolfssl-src.sh" "$ROOT/build/src"); then
        fail "$1" "no wolfSSL source: $src"; return 1
    fi
}

# tls_cases_on BIN: the TLS cases again, on another build of mtlslb.
tls_cases_on() {
    local keep=$BIN
    BIN=$1
    t_client_certs
    t_allow
    t_tls_options
    t_resumption
    BIN=$keep
}

t_fast_build() {
    local src out keep=$BIN
    wolfssl_src "fast build" || return
    out=$(env -u MAKEFLAGS -u MAKELEVEL make -s -C "$ROOT" SAN=0 BIN="$W/mtlslb-fast" WOLFSSL_SRC="$src" 2>&1)
    if [ ! -x "$W/mtlslb-fast" ] || grep -qi "warning\|error" <<<"$out" || ldd "$W/mtlslb-fast" | grep -q libwolfssl; then
        fail "fast build" "$(head -5 <<<"$out")"; return
    fi
    pass "make WOLFSSL_SRC builds wolfSSL from source and links it in ($("$W/mtlslb-fast" -V))"
    tls_cases_on "$W/mtlslb-fast"
    BIN=$W/mtlslb-fast
    t_loadgen
    BIN=$keep
}

# The size-first build (issue 6: at most 1 MB, static, on x86_64 and
# aarch64): make static WOLFSSL_SRC=DIR SMALL=1 with musl (musl-gcc here,
# gcc with musl's specs file for aarch64).  The TLS cases run again on the
# x86_64 one; for aarch64 the small and the fast (SP assembly) WOLFSSL_SRC
# builds each answer -V, -t and one mTLS request under qemu-user.
t_small_build() {
    local src out sys=$ROOT/tests/work/sysroot why sz bp b flav cc
    wolfssl_src "small build" || return
    command -v musl-gcc >/dev/null || { fail "small build" "no musl-gcc (tests/deps.sh installs musl-tools)"; return; }
    out=$(env -u MAKEFLAGS -u MAKELEVEL make -s -C "$ROOT" static SAN=0 SMALL=1 CC=musl-gcc \
        BIN="$W/mtlslb-small" WOLFSSL_SRC="$src" 2>&1)
    if [ ! -x "$W/mtlslb-small" ] || grep -qi "warning\|error" <<<"$out" ||
       ! file "$W/mtlslb-small" | grep -q "statically linked"; then
        fail "small build" "$(head -5 <<<"$out") $(file "$W/mtlslb-small" 2>&1)"; return
    fi
    strip -o "$W/mtlslb-small.stripped" "$W/mtlslb-small"
    sz=$(stat -c %s "$W/mtlslb-small.stripped")
    if [ "$sz" -le 1048576 ]; then
        pass "make static WOLFSSL_SRC SMALL=1 CC=musl-gcc: x86_64, static, $sz bytes stripped (<= 1 MB)"
    else
        fail "small build" "x86_64: $sz bytes stripped, over 1 MB"
    fi
    TLS_FIRST=CHACHA20                  # no AES instructions in it
    tls_cases_on "$W/mtlslb-small"
    TLS_FIRST=
    SIZES=""
    why=$("$ROOT/tests/cross.sh" "$sys") || { pass "aarch64 small build (skipped: $why)"; return; }
    newport bp
    start_backend http "$bp" web1
    for flav in small fast; do
        b=$W/mtlslb-a64-$flav
        cc="aarch64-linux-gnu-gcc -specs=$sys/arm64-musl/musl.specs"
        [ $flav = fast ] && cc=aarch64-linux-gnu-gcc
        out=$(env -u MAKEFLAGS -u MAKELEVEL make -s -C "$ROOT" $([ $flav = small ] && echo "static SMALL=1") SAN=0 \
            CROSS_COMPILE=aarch64-linux-gnu- CC="$cc" BIN="$b" WOLFSSL_SRC="$src" 2>&1)
        if [ ! -x "$b" ] || grep -qi "warning\|error" <<<"$out"; then
            fail "aarch64 $flav WOLFSSL_SRC build" "$(head -5 <<<"$out")"
            continue
        fi
        if ! qemu_check "a64-$flav" "$b" qemu-aarch64 aarch64-linux-gnu /usr/aarch64-linux-gnu/lib "$bp"; then
            fail "aarch64 $flav WOLFSSL_SRC build" "$QERR"
            continue
        fi
        sz=$(stat -c %s "$b.stripped")
        if [ $flav = fast ]; then
            pass "aarch64 fast WOLFSSL_SRC build (SP assembly): -V, -t, an mTLS request under qemu-aarch64 ($sz bytes)"
        elif [ "$sz" -le 1048576 ] && file "$b" | grep -q "statically linked"; then
            pass "aarch64 small build (musl, static): $sz bytes stripped (<= 1 MB); -V, -t, an mTLS request under qemu-aarch64"
        else
            fail "aarch64 small build" "$sz bytes stripped; $(file "$b")"
        fi
    done
    echo "  stripped sizes (bytes):$SIZES"
    stop_backend "$bp"
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

# Hostile clients, TLS scanners, memory flatness (issue 7).
. "$ROOT/tests/hostile.sh"

ALL="t_version t_sample_conf t_check_errors t_client_certs t_verify_optional t_crl_expired t_crl_chain
t_sni t_roundrobin t_leastconn_source t_retries t_relay t_proxy t_garbage t_max_conns
t_sigterm t_sigterm_status t_timeouts t_fd_exhaustion t_tls_options t_readme_pki t_signals t_log_level
t_ipv6 t_backpressure t_no_spin t_resumption t_loadgen t_cold
t_http_keepalive t_http_headers t_http_evil_subject t_http_routes t_http_errors t_http_bodies
t_http_upgrade t_http_reuse
t_checks_failover t_checks_kinds t_backup_and_all_down t_https_backend t_stats t_checks_load
t_reload t_crl_rotation t_user t_syslog t_allow t_workers t_workers_again t_valgrind t_fuzz_regress t_build t_cross t_openwrt t_fast_build
t_small_build
$HOSTILE_TESTS t_sanitizers"

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
