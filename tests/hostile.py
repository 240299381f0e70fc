#!/usr/bin/env python3
"""hostile.py - hostile clients for tests/hostile.sh (stdlib only).

usage: hostile.py --port N --pki DIR SUBCOMMAND [options]

Every subcommand opens only its own sockets, closes only those, bounds
every wait, and prints one JSON object on stdout (what it saw).  The good
client certificate is DIR/client.crt + DIR/client.key unless --cert/--key
say otherwise; the server is verified against DIR/ca.crt.

subcommands
  slowloris --conns N --interval S --max-seconds S
        N mTLS connections that trickle a request head one byte per
        connection every S seconds, never finishing it.  Reports how many
        got an HTTP 408 and how many the server closed, and when.
  slowread --conns N --path P --hold S --peek B
        N mTLS connections each send "GET P" and read only B bytes, then
        read nothing for S seconds; afterwards each drains what is left
        (bounded) and reports the bytes it got and whether the server had
        closed (EOF before the whole body).
  flood --conns N --hold S
        N plain TCP connections: even ones send nothing, odd ones half a
        ClientHello.  Holds them S seconds and reports when the server
        closed each one.
  hold --conns N --seconds S --timeout S
        N threads: each connects, does the mTLS handshake (waiting up to
        --timeout), holds the connection S seconds, closes.  Reports how many
        handshakes succeeded and when.
  tlsprobe [--groups HEX,HEX]
        Raw ClientHellos (no TLS library): 150 / 151 / 400 cipher suites,
        DEFLATE compression offered, TLS 1.3 with only one group (each of
        --groups), an X25519 key share with its top bit set.  Reports the
        first record of each reply (ServerHello, HelloRetryRequest, alert).
  smuggle
        Request-smuggling vectors in http mode, each on its own connection,
        each followed by a good request on one keep-alive connection held
        open throughout.  Reports, per vector, the status lines received,
        whether the server closed the connection and how fast, and the
        good connection's statuses.
"""

import argparse
import json
import os
import select
import socket
import ssl
import struct
import sys
import threading
import time


def ready(a):
    """Tell the caller the attack is in place (--ready FILE)."""
    if a.ready:
        open(a.ready, "w").close()


def ctx_for(a, cert=None, key=None):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.load_verify_locations(os.path.join(a.pki, "ca.crt"))
    cert = cert or a.cert or os.path.join(a.pki, "client.crt")
    key = key or a.key or os.path.join(a.pki, "client.key")
    ctx.load_cert_chain(cert, key)
    return ctx


def tls_connect(a, ctx, timeout=10):
    raw = socket.create_connection(("127.0.0.1", a.port), timeout=timeout)
    try:
        s = ctx.wrap_socket(raw, server_hostname="localhost")
    except Exception:
        raw.close()
        raise
    return s


def read_all(s, deadline, limit=1 << 20):
    """Read until EOF, error or deadline; returns (bytes, eof_seen)."""
    data = b""
    while time.time() < deadline and len(data) < limit:
        s.settimeout(max(0.01, deadline - time.time()))
        try:
            d = s.recv(65536)
        except socket.timeout:
            return data, False
        except (ssl.SSLError, OSError):
            return data, True
        if not d:
            return data, True
        data += d
    return data, False


def statuses(data):
    out = []
    for line in data.split(b"\r\n"):
        if line.startswith(b"HTTP/1.") and len(line) >= 12:
            out.append(line[9:12].decode("ascii", "replace"))
    return out


# ---------------------------------------------------------------- slowloris

def cmd_slowloris(a):
    ctx = ctx_for(a)
    head = b"GET /slowloris HTTP/1.1\r\nHost: localhost\r\nX-Slow: " + b"a" * 4000
    conns, hs_fail = [], 0
    for _ in range(a.conns):
        try:
            s = tls_connect(a, ctx)
            s.setblocking(False)
            conns.append({"s": s, "pos": 0, "t0": None, "data": b"", "closed": None})
        except (ssl.SSLError, OSError):
            hs_fail += 1
    start = time.time()
    deadline = start + a.max_seconds
    nxt = start
    started = False
    while time.time() < deadline and any(c["closed"] is None for c in conns):
        now = time.time()
        if now >= nxt:
            for c in conns:
                if c["closed"] is not None or c["pos"] >= len(head):
                    continue
                try:
                    c["s"].send(head[c["pos"]:c["pos"] + 1])
                    if c["t0"] is None:
                        c["t0"] = now
                    c["pos"] += 1
                except (ssl.SSLWantWriteError, ssl.SSLWantReadError):
                    pass
                except (ssl.SSLError, OSError):
                    c["closed"] = now - (c["t0"] or now)
            nxt = now + a.interval
            if not started:
                started = True
                ready(a)
        live = [c for c in conns if c["closed"] is None]
        if not live:
            break
        r, _, _ = select.select([c["s"] for c in live], [], [], max(0.0, min(nxt, deadline) - time.time()))
        for c in live:
            if c["s"] not in r and not c["s"].pending():
                continue
            while True:
                try:
                    d = c["s"].recv(65536)
                except (ssl.SSLWantReadError, ssl.SSLWantWriteError, BlockingIOError):
                    break
                except (ssl.SSLError, OSError):
                    d = b""
                if not d:
                    c["closed"] = time.time() - (c["t0"] or start)
                    break
                c["data"] += d
    closed = [c["closed"] for c in conns if c["closed"] is not None]
    res = {
        "conns": len(conns), "handshake_failed": hs_fail,
        "got_408": sum(1 for c in conns if statuses(c["data"])[:1] == ["408"]),
        "other_status": sorted(set(x for c in conns for x in statuses(c["data"]) if x != "408")),
        "closed": len(closed),
        "max_bytes_sent": max([c["pos"] for c in conns] or [0]),
        "close_s_min": round(min(closed), 2) if closed else None,
        "close_s_max": round(max(closed), 2) if closed else None,
    }
    for c in conns:
        c["s"].close()
    print(json.dumps(res))


# ----------------------------------------------------------------- slowread

def cmd_slowread(a):
    ctx = ctx_for(a)
    conns = []
    req = ("GET %s HTTP/1.1\r\nHost: localhost\r\n\r\n" % a.path).encode()
    for _ in range(a.conns):
        s = tls_connect(a, ctx)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        s.sendall(req)
        got = b""
        s.settimeout(10)
        while len(got) < a.peek:
            d = s.recv(a.peek - len(got))
            if not d:
                break
            got += d
        conns.append({"s": s, "got": len(got), "head": got})
    ready(a)
    time.sleep(a.hold)
    res = []
    for c in conns:
        t0 = time.time()
        # drain, counting only (bodies are large)
        total, eof = c["got"], False
        s = c["s"]
        deadline = t0 + 15
        while time.time() < deadline:
            s.settimeout(max(0.01, deadline - time.time()))
            try:
                d = s.recv(1 << 20)
            except socket.timeout:
                break
            except (ssl.SSLError, OSError):
                eof = True
                break
            if not d:
                eof = True
                break
            total += len(d)
        res.append({"bytes": total, "eof": eof, "status": statuses(c["head"])[:1],
                    "drain_s": round(time.time() - t0, 2)})
        s.close()
    print(json.dumps({"conns": res}))


# -------------------------------------------------------------------- flood

def cmd_flood(a):
    hello = bytes.fromhex("16030100f4010000f00303") + os.urandom(32)  # half a ClientHello
    socks = []
    start = time.time()
    for i in range(a.conns):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setblocking(False)
        try:
            s.connect(("127.0.0.1", a.port))
        except BlockingIOError:
            pass
        socks.append({"s": s, "i": i, "sent": False, "closed": None})
    ready(a)
    deadline = start + a.hold
    while time.time() < deadline:
        live = [c for c in socks if c["closed"] is None]
        if not live:
            break
        w = [c["s"] for c in live if c["i"] % 2 and not c["sent"]]
        r, wr, _ = select.select([c["s"] for c in live], w, [], min(0.2, max(0.0, deadline - time.time())))
        for c in live:
            if c["s"] in wr:
                try:
                    c["s"].send(hello)
                except OSError:
                    pass
                c["sent"] = True
            if c["s"] in r:
                try:
                    d = c["s"].recv(4096)
                except BlockingIOError:
                    continue
                except OSError:
                    d = b""
                if not d:
                    c["closed"] = time.time() - start
    closed = sorted(c["closed"] for c in socks if c["closed"] is not None)
    print(json.dumps({"conns": len(socks), "closed_by_server": len(closed),
                      "first_close_s": round(closed[0], 2) if closed else None,
                      "last_close_s": round(closed[-1], 2) if closed else None}))
    for c in socks:
        c["s"].close()


# --------------------------------------------------------------------- hold

def cmd_hold(a):
    ctx = ctx_for(a)
    results = [None] * a.conns
    start = time.time()

    def one(i):
        try:
            s = tls_connect(a, ctx, timeout=a.timeout)
        except (ssl.SSLError, OSError) as e:
            results[i] = {"ok": False, "err": str(e)[:80]}
            return
        t = time.time() - start
        time.sleep(a.seconds)
        s.close()
        results[i] = {"ok": True, "t": t}

    th = [threading.Thread(target=one, args=(i,), daemon=True) for i in range(a.conns)]
    for t in th:
        t.start()
    ready(a)
    for t in th:
        t.join(a.timeout + a.seconds + 5)
    ok = [r for r in results if r and r["ok"]]
    errs = sorted(set(r["err"] for r in results if r and not r["ok"]))
    print(json.dumps({"conns": a.conns, "ok": len(ok),
                      "first_s": round(min(r["t"] for r in ok), 2) if ok else None,
                      "last_s": round(max(r["t"] for r in ok), 2) if ok else None,
                      "errors": errs[:5]}))


# ------------------------------------------------------------------ smuggle

H = "Host: localhost\r\n"
SMUGGLED = "GET /smuggled HTTP/1.1\r\n" + H + "\r\n"
# (name, request bytes, acceptable statuses, header-level: backend sees nothing)
VECTORS = [
    ("CL.TE", "POST /v-clte HTTP/1.1\r\n" + H + "Content-Length: 35\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + SMUGGLED,
     ["400"], True),
    ("TE.CL", "POST /v-tecl HTTP/1.1\r\n" + H + "Transfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n5c\r\n" + SMUGGLED + "\r\n0\r\n\r\n",
     ["400"], True),
    ("TE xchunked", "POST /v-xchunked HTTP/1.1\r\n" + H + "Transfer-Encoding: xchunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n" + SMUGGLED,
     ["400", "501"], True),
    ("TE xchunked alone", "POST /v-xchunked2 HTTP/1.1\r\n" + H + "Transfer-Encoding: xchunked\r\n\r\n0\r\n\r\n" + SMUGGLED,
     ["400", "501"], True),
    ("header line starting with a blank", "POST /v-lead HTTP/1.1\r\n" + H + "Content-Length: 0\r\n Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + SMUGGLED,
     ["400"], True),
    ("TE by obs-fold", "POST /v-fold HTTP/1.1\r\n" + H + "Transfer-Encoding:\r\n chunked\r\n\r\n0\r\n\r\n" + SMUGGLED,
     ["400"], True),
    ("blank before the colon", "POST /v-colon HTTP/1.1\r\n" + H + "Transfer-Encoding : chunked\r\nContent-Length: 0\r\n\r\n0\r\n\r\n" + SMUGGLED,
     ["400"], True),
    ("TE chunked, chunked", "POST /v-dup1 HTTP/1.1\r\n" + H + "Transfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n" + SMUGGLED,
     ["400"], True),
    ("TE twice on two lines", "POST /v-dup2 HTTP/1.1\r\n" + H + "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + SMUGGLED,
     ["400"], True),
    ("TE chunked then identity", "POST /v-notlast HTTP/1.1\r\n" + H + "Transfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n\r\n0\r\n\r\n" + SMUGGLED,
     ["400", "501"], True),
    ("CL +5", "POST /v-plus HTTP/1.1\r\n" + H + "Content-Length: +5\r\n\r\nhello" + SMUGGLED,
     ["400"], True),
    ("CL '5 5'", "POST /v-inner HTTP/1.1\r\n" + H + "Content-Length: 5 5\r\n\r\nhello" + SMUGGLED,
     ["400"], True),
    ("CL list 5, 5", "POST /v-list HTTP/1.1\r\n" + H + "Content-Length: 5, 5\r\n\r\nhello" + SMUGGLED,
     ["400"], True),
    ("CL twice, differing", "POST /v-cl2 HTTP/1.1\r\n" + H + "Content-Length: 0\r\nContent-Length: 43\r\n\r\n" + SMUGGLED,
     ["400"], True),
    ("CL -1", "POST /v-neg HTTP/1.1\r\n" + H + "Content-Length: -1\r\n\r\n" + SMUGGLED,
     ["400"], True),
    ("bare LF line endings", "POST /v-lf HTTP/1.1\n" + "Host: localhost\nContent-Length: 0\n\n" + SMUGGLED,
     ["400"], True),
    ("bare LF after the request line only", "GET /v-lf2 HTTP/1.1\n" + H + "\r\n" + SMUGGLED,
     ["400"], True),
    ("NUL in a header value", "POST /v-nul HTTP/1.1\r\n" + H + "X-A: a\x00b\r\nContent-Length: 0\r\n\r\n" + SMUGGLED,
     ["400"], True),
    ("NUL in a header name", "POST /v-nulname HTTP/1.1\r\n" + H + "Transfer-Encoding\x00: chunked\r\nContent-Length: 0\r\n\r\n" + SMUGGLED,
     ["400"], True),
    ("TE on HTTP/1.0", "POST /v-te10 HTTP/1.0\r\n" + H + "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + SMUGGLED,
     ["400"], True),
    # Body-level: the head is fine (the server may see POST /b-...), the body is not.
    ("chunk size overflowing 64 bits", "POST /b-overflow HTTP/1.1\r\n" + H + "Transfer-Encoding: chunked\r\n\r\n"
     "10000000000000001\r\nx\r\n0\r\n\r\n" + SMUGGLED, ["400"], False),
    ("chunk size 2^64-1", "POST /b-max HTTP/1.1\r\n" + H + "Transfer-Encoding: chunked\r\n\r\n"
     "ffffffffffffffff\r\nx\r\n0\r\n\r\n" + SMUGGLED, ["400"], False),
    ("bare LF in a chunk-size line", "POST /b-lfchunk HTTP/1.1\r\n" + H + "Transfer-Encoding: chunked\r\n\r\n"
     "3\nabc\r\n0\r\n\r\n" + SMUGGLED, ["400"], False),
    ("bare LF after the last chunk", "POST /b-lflast HTTP/1.1\r\n" + H + "Transfer-Encoding: chunked\r\n\r\n"
     "0\n\n" + SMUGGLED, ["400"], False),
]


def cmd_smuggle(a):
    ctx = ctx_for(a)
    good = tls_connect(a, ctx)
    good_statuses = []

    def good_get(n):
        try:
            good.settimeout(5)
            good.sendall(("GET /good-%d HTTP/1.1\r\n%s\r\n" % (n, H)).encode())
            data = b""
            while b"\r\n\r\n" not in data or not data.endswith(b"\n"):
                d = good.recv(65536)
                if not d:
                    break
                data += d
            good_statuses.append((statuses(data) or ["none"])[0])
        except (ssl.SSLError, OSError) as e:
            good_statuses.append("error:" + str(e)[:40])

    res = []
    good_get(0)
    for n, (name, req, want, head_level) in enumerate(VECTORS, 1):
        try:
            s = tls_connect(a, ctx)
        except (ssl.SSLError, OSError) as e:
            res.append({"name": name, "error": "connect: " + str(e)[:60]})
            continue
        t0 = time.time()
        try:
            s.sendall(req.encode("latin-1"))
        except (ssl.SSLError, OSError):
            pass
        data, eof = read_all(s, t0 + a.wait)
        s.close()
        st = statuses(data)
        res.append({"name": name, "statuses": st, "closed": eof,
                    "close_s": round(time.time() - t0, 2), "want": want,
                    "head_level": head_level,
                    "ok": len(st) == 1 and st[0] in want and eof})
        good_get(n)
    good.close()
    print(json.dumps({"vectors": res, "good": good_statuses}))


# ----------------------------------------------------------------- tlsprobe

HRR_RANDOM = bytes.fromhex("CF21AD74E59A6111BE1D8C021E65B891C2A211167ABB8C5E079E09E2C8A8339C")
KEY_LEN = {0x17: 65, 0x18: 97, 0x19: 133, 0x1d: 32, 0x1e: 56, 0x100: 256, 0x101: 384,
           0x102: 512, 0x103: 768, 0x104: 1024}


def _ext(t, b):
    return struct.pack(">HH", t, len(b)) + b


def _hello(suites, exts, comp=b"\x00", version=b"\x03\x03"):
    cs = b"".join(struct.pack(">H", x) for x in suites)
    e = b"".join(_ext(t, b) for t, b in exts)
    body = (version + os.urandom(32) + b"\x20" + os.urandom(32) + struct.pack(">H", len(cs)) + cs +
            bytes([len(comp)]) + comp + struct.pack(">H", len(e)) + e)
    hs = b"\x01" + struct.pack(">I", len(body))[1:] + body
    return b"\x16\x03\x01" + struct.pack(">H", len(hs)) + hs


def _tls12_exts():
    return [(10, struct.pack(">HH", 2, 0x17)), (11, b"\x01\x00"), (13, struct.pack(">HH", 2, 0x0403))]


def _tls13_exts(group, key):
    ks = struct.pack(">HH", group, len(key)) + key
    return [(43, b"\x02\x03\x04"), (10, struct.pack(">HH", 2, group)),
            (13, struct.pack(">HH", 2, 0x0403)), (51, struct.pack(">H", len(ks)) + ks)]


def _exchange(a, data):
    """Send one ClientHello; return a description of the first reply record."""
    s = socket.create_connection(("127.0.0.1", a.port), timeout=5)
    try:
        s.sendall(data)
        d = b""
        while len(d) < 5 or len(d) < 5 + struct.unpack(">H", d[3:5])[0]:
            x = s.recv(65536)
            if not x:
                break
            d += x
    except OSError:
        d = b""
    finally:
        s.close()
    if len(d) >= 7 and d[0] == 0x15:
        return {"kind": "alert", "alert": d[6]}
    if len(d) < 5 + 4 + 2 + 32 + 1 or d[0] != 0x16 or d[5] != 2:
        return {"kind": "closed" if not d else "other"}
    p = 5 + 4 + 2
    rnd = d[p:p + 32]
    p += 32
    p += 1 + d[p]
    suite = struct.unpack(">H", d[p:p + 2])[0]
    comp = d[p + 2]
    p += 3
    exts = {}
    if p + 2 <= len(d):
        end = p + 2 + struct.unpack(">H", d[p:p + 2])[0]
        p += 2
        while p + 4 <= end:
            t, n = struct.unpack(">HH", d[p:p + 4])
            exts[t] = d[p + 4:p + 4 + n]
            p += 4 + n
    r = {"kind": "hrr" if rnd == HRR_RANDOM else "serverhello", "suite": "%04x" % suite,
         "compression": comp}
    if 51 in exts and len(exts[51]) >= 2:
        r["group"] = "%04x" % struct.unpack(">H", exts[51][:2])[0]
    return r


def cmd_tlsprobe(a):
    out = {}
    good12 = [0xc02b, 0xcca9]
    # 1. how many cipher suites a TLS 1.2 ClientHello may offer
    for n in (150, 151, 400):
        suites = good12 + [0x1000 + i for i in range(n - len(good12))]
        out["suites_%d" % n] = _exchange(a, _hello(suites, _tls12_exts()))
    # 2. TLS compression offered (DEFLATE, then null): null must be chosen
    out["deflate_offered"] = _exchange(a, _hello(good12, _tls12_exts(), comp=b"\x01\x00"))
    out["deflate_only"] = _exchange(a, _hello(good12, _tls12_exts(), comp=b"\x01"))
    # 3. TLS 1.3 with one group only, for each group asked about
    for g in [int(x, 16) for x in a.groups.split(",") if x]:
        key = os.urandom(KEY_LEN.get(g, 64))
        if g == 0x1d:
            key = key[:31] + bytes([key[31] & 0x7f])
        out["group_%04x" % g] = _exchange(a, _hello([0x1301, 0x1303], _tls13_exts(g, key)))
    # 4. an X25519 share with the top bit set (RFC 7748: the receiver masks it)
    key = bytearray(os.urandom(32))
    key[31] |= 0x80
    out["x25519_top_bit"] = _exchange(a, _hello([0x1301, 0x1303], _tls13_exts(0x1d, bytes(key))))
    key[31] &= 0x7f
    out["x25519_top_bit_clear"] = _exchange(a, _hello([0x1301, 0x1303], _tls13_exts(0x1d, bytes(key))))
    print(json.dumps(out))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--pki", required=True)
    p.add_argument("--cert")
    p.add_argument("--key")
    p.add_argument("--ready", help="create this file once the attack is in place")
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("slowloris")
    s.add_argument("--conns", type=int, default=50)
    s.add_argument("--interval", type=float, default=0.1)
    s.add_argument("--max-seconds", type=float, default=10)
    s = sub.add_parser("slowread")
    s.add_argument("--conns", type=int, default=4)
    s.add_argument("--path", default="/bytes/50000000")
    s.add_argument("--hold", type=float, default=5)
    s.add_argument("--peek", type=int, default=1024)
    s = sub.add_parser("flood")
    s.add_argument("--conns", type=int, default=200)
    s.add_argument("--hold", type=float, default=15)
    s = sub.add_parser("hold")
    s.add_argument("--conns", type=int, default=60)
    s.add_argument("--seconds", type=float, default=2)
    s.add_argument("--timeout", type=float, default=20)
    s = sub.add_parser("smuggle")
    s.add_argument("--wait", type=float, default=4)
    s = sub.add_parser("tlsprobe")
    s.add_argument("--groups", default="", help="hex group ids, comma-separated")
    a = p.parse_args()
    {"slowloris": cmd_slowloris, "slowread": cmd_slowread, "flood": cmd_flood,
     "hold": cmd_hold, "smuggle": cmd_smuggle,
     "tlsprobe": cmd_tlsprobe}[a.cmd](a)


if __name__ == "__main__":
    main()
