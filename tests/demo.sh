#!/usr/bin/env bash
# make demo: a demo PKI in demo/pki, two backends on 8081/8082, mtlslb on
# 8443 with sample.conf, and curl with a client certificate through it.
set -eu
cd "$(dirname "$0")/.."
PKI=demo/pki
tests/pki.sh "$PKI"
pids=()
stop() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap stop EXIT
for n in 1 2; do
    rm -f "demo/ready.$n"
    python3 tests/backend.py http --port 808$n --name "backend-rs$n" --ready "demo/ready.$n" \
        >"demo/backend$n.log" 2>&1 &
    pids+=($!)
done
for i in $(seq 50); do [ -e demo/ready.1 ] && [ -e demo/ready.2 ] && break; sleep 0.1; done
./mtlslb -t -c sample.conf
: >demo/mtlslb.log              # not the last run's log, before this one starts
./mtlslb -c sample.conf 2>demo/mtlslb.log &
pids+=($!)
for i in $(seq 50); do grep -q " started, pid" demo/mtlslb.log && break; sleep 0.1; done
run() { echo "\$ $*"; "$@"; }
echo
echo "== two requests with the client certificate: round-robin over rs1 and rs2"
for i in 1 2; do
    run curl -sS --cacert $PKI/ca.crt --cert $PKI/client.crt --key $PKI/client.key https://localhost:8443/
done
echo
echo "== what the backend learns about the client (X-Client-* headers)"
run curl -sS --cacert $PKI/ca.crt --cert $PKI/client.crt --key $PKI/client.key https://localhost:8443/headers
echo
echo "== the tcp listener relays the same servers after the handshake"
run curl -sS --cacert $PKI/ca.crt --cert $PKI/client.crt --key $PKI/client.key https://localhost:8444/
echo
echo "== the stats endpoint (plain HTTP on loopback)"
run curl -sS http://127.0.0.1:9000/health
echo
echo "== the revoked certificate (on the CRL) is refused"
run curl -sS --cacert $PKI/ca.crt --cert $PKI/revoked.crt --key $PKI/revoked.key https://localhost:8443/ || true
echo
echo "== mtlslb's log (demo/mtlslb.log)"
cat demo/mtlslb.log
if [ -t 0 ] && [ -z "${CI:-}" ]; then
    echo
    echo "mtlslb is running on https://localhost:8443/ (Enter stops it; try openssl s_client -connect"
    echo "localhost:8443 -servername app.example.com -cert $PKI/app-client.crt -key $PKI/app-client.key)"
    read -r _
fi
