#!/usr/bin/env python3
"""tests/fuzz/seeds.py - write the seed corpora, tests/fuzz/corpus/TARGET/.

A handful of good and bad inputs per target.  The certificates are made with
the openssl CLI (new keys each time, so rerunning changes those files).
Run from anywhere: python3 tests/fuzz/seeds.py
"""
import os
import shutil
import struct
import subprocess
import tempfile

FZ = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(FZ))
CORPUS = os.path.join(FZ, "corpus")


def put(target, name, data):
    d = os.path.join(CORPUS, target)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


# ---- config ----
MIN = """global
listener a
    bind 127.0.0.1:8443
    cert s.crt s.key
    default-backend b
backend b
    server s1 127.0.0.1:8081
"""

FULL = """global
    log-level debug
    log syslog
    max-conns 10
    workers 16
    user nobody
    stats [::1]:9000
    timeout handshake 250ms
    timeout connect 3s
    timeout idle 2m
    timeout request 1h
    grace 0
listener web
    bind *:8443
    bind [::]:8443
    bind :9443
    mode http
    cert "dir with space/s.crt" /abs/s.key
    ca ca.crt
    crl a.crl
    crl /b.crl
    verify optional
    tls-min 1.3
    ciphers ECDHE-ECDSA-AES128-GCM-SHA256:TLS13-AES128-GCM-SHA256
    sni App.Example.COM app.crt app.key ca app-ca.crt crl app.crl
    sni *.example.org wild.crt wild.key
    sni-strict on
    forward-cert on
    route host *.example.org path /api backend api
    route path / backend web
    route host x.example.com backend api
    default-backend web
listener raw
    bind 127.0.0.2:8444
    mode tcp
    cert s.crt s.key
    send-proxy v2
    default-backend api
backend web
    balance leastconn
    server w1 127.0.0.1:8081 weight 256
    server w2 [::1]:8082 backup
    server w3 10.0.0.9:443 tls ca backend-ca.crt sni RS3.internal cert c.crt c.key
    check http GET /healthz expect 3xx
    check-interval 1s
    check-timeout 500ms
    rise 1
    fall 100
    retries 0
backend api
    balance source
    server a1 192.0.2.1:80
    check tcp
"""

BAD = {
    "unknown": "global\n    frobnicate on\nlistener a\n",
    "quote": 'listener a\n    cert "unterminated s.key\n    cert "a"b c\n',
    "escapes": 'listener a\n    cert "a\\"b\\\\c" "" \n    bind "127.0.0.1:1"\n',
    "section": "bind 1.2.3.4:5\nlistener\nlistener a b\nbackend -\nlistener a\nlistener a\n",
    "args": "global\n    timeout\n    timeout handshake\n    timeout forever 1s\n"
            "    timeout idle 25h\n    timeout idle 0\n    grace 1d\n    max-conns 0\n"
            "    workers 17\n    log-level loud\n    log file\n",
    "addrs": "listener a\n    bind 1.2.3.4\n    bind ::1:80\n    bind [::1]80\n"
             "    bind 1.2.3.4:0\n    bind 1.2.3.4:65536\n    bind host.example:80\n"
             "    bind 127.0.0.1:80\n    bind 127.0.0.1:80\nbackend b\n"
             "    server s :80\n    server s 1.2.3.4:80\n    server s 1.2.3.4:80\n"
             "    server t name.invalid:80\n    server u [fe80::1%lo]:80\n",
    "routes": "listener a\n    mode tcp\n    route path api backend\n    route host bad_Host!"
              " backend b\n    route allow x\n    route host a host b backend c\n"
              "    route frob x backend b\n    send-proxy v3\n    forward-cert on\n",
    "checks": "backend b\n    check\n    check http GET\n    check http G@T /\n"
              "    check http GET / expect 600\n    check http GET / expect 2xx\n"
              "    check tcp x\n    rise 0\n    fall 101\n    retries 101\n"
              "    balance random\n    server s 1.2.3.4:1 weight 0\n"
              "    server t 1.2.3.4:1 ca x.crt\n    server u 1.2.3.4:1 tls cert a\n",
    "sni": "listener a\n    sni *. a b\n    sni .a a b\n    sni a.b a b ca\n"
           "    sni a.b a b\n    sni A.B a b\n    sni x a b crl c.crl\n    verify required\n",
    "tokens": "global\n" + "    user " + " ".join(["w"] * 40) + "\n",
    "crlf": MIN.replace("\n", "\r\n"),
    "nul": "global\n    user a\0b\n" + MIN,
    "longline": "global\n    user " + "x" * 5000 + "\n" + MIN,
    "maxline": "global\n    user " + "x" * 4090 + "\n",
    "empty": "",
    "comments": "# only a comment\n   \t\n#global\n",
    "allow": MIN.replace("    default-backend b\n", "    default-backend b\n    ca ca.crt\n"
                         "    allow cn client-1 \"client 2\"\n    allow ou ops\n"
                         "    allow fingerprint " + "ab:" * 31 + "ab\n    allow serial 0a:BC\n"
                         "    allow san-dns *.example.org\n    allow frob x\n"
                         "    route path /a backend b allow san-uri spiffe://x allow o Example\n"),
    "wrong-section": "global\n    bind 1.2.3.4:5\nbackend b\n    cert a b\n",
}


def config():
    with open(os.path.join(ROOT, "sample.conf"), "rb") as f:
        put("config", "sample.conf", f.read())
    put("config", "minimal.conf", MIN)
    put("config", "full.conf", FULL)
    for name, text in BAD.items():
        put("config", name + ".conf", text)


# ---- HTTP ----
REQUESTS = {
    "get": "GET / HTTP/1.1\r\nHost: example.com\r\n\r\n",
    "get10": "GET /x?y=1 HTTP/1.0\r\n\r\n",
    "post-cl": "POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello",
    "post-chunked": "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
                    "5\r\nhello\r\n0\r\n\r\n",
    "absolute": "GET http://example.com:8080/p?q HTTP/1.1\r\nHost: other\r\n\r\n",
    "absolute-noslash": "GET https://example.com HTTP/1.1\r\n\r\n",
    "options-star": "OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n",
    "connection": "GET / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, Upgrade\r\n"
                  "Upgrade: websocket\r\nExpect: 100-continue\r\n\r\n",
    "conn-close": "GET / HTTP/1.0\r\nConnection: close ,, keep-alive\r\n\r\n",
    "obs-fold": "GET / HTTP/1.1\r\nHost: a\r\nX-A: b\r\n c\r\n\r\n",
    "cl-te": "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n"
             "Transfer-Encoding: chunked\r\n\r\n",
    "te-gzip": "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
    "te-twice": "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n"
                "Transfer-Encoding: chunked\r\n\r\n",
    "te-empty": "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: ,chunked\r\n\r\n",
    "te-10": "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
    "cl-two": "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
    "cl-same": "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n",
    "cl-list": "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 5\r\n\r\n",
    "cl-big": "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 999999999999999999\r\n\r\n",
    "cl-sign": "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +5\r\n\r\n",
    "two-hosts": "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
    "no-host": "GET / HTTP/1.1\r\n\r\n",
    "space-colon": "GET / HTTP/1.1\r\nHost : a\r\n\r\n",
    "bare-lf": "GET / HTTP/1.1\nHost: a\n\n",
    "bare-cr": "GET / HTTP/1.1\rHost: a\r\n\r\n",
    "ctl": "GET / HTTP/1.1\r\nHost: a\r\nX: a\x01b\r\nY: \x7f\r\n\r\n",
    "nul": "GET / HTTP/1.1\r\nHost: a\0\r\n\r\n",
    "version": "GET / HTTP/2.0\r\nHost: a\r\n\r\n",
    "method": "G(T / HTTP/1.1\r\n\r\n",
    "partial": "GET / HTTP/1.1\r\nHost: a\r\n",
    "partial-cr": "GET / HTTP/1.1\r",
    "blank-values": "GET / HTTP/1.1\r\nHost:\t a \t\r\nX-Empty:\r\n\r\n",
    "obs-text": "GET / HTTP/1.1\r\nHost: a\r\nX: caf\xc3\xa9\r\n\r\n",
    "many-headers": "GET / HTTP/1.1\r\nHost: a\r\n" + "X: y\r\n" * 99 + "\r\n",
    "too-many-headers": "GET / HTTP/1.1\r\nHost: a\r\n" + "X: y\r\n" * 100 + "\r\n",
    # Boundaries: a request line of MTLSLB_HTTP_LINE_MAX (8192) bytes + 1; the
    # one of 8192 is regress/http_request/request-line-8192 (cut after its CR,
    # it was answered 414).
    "line-8193": "GET /" + "a" * (8193 - 14) + " HTTP/1.1\r\nHost: a\r\n\r\n",
    # A head of exactly MTLSLB_HTTP_HEAD_MAX (16384) bytes and one more.
    "head-16384": "GET / HTTP/1.1\r\nHost: a\r\nX: " + "b" * (16384 - 32) + "\r\n\r\n",
    "head-16385": "GET / HTTP/1.1\r\nHost: a\r\nX: " + "b" * (16385 - 32) + "\r\n\r\n",
    "pipelined": "GET /1 HTTP/1.1\r\nHost: a\r\n\r\nGET /2 HTTP/1.1\r\nHost: a\r\n\r\n",
}

RESPONSES = {
    "ok-cl": "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
    "ok-chunked": "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
    "close": "HTTP/1.0 200 OK\r\n\r\nbody until close",
    "no-reason": "HTTP/1.1 204\r\n\r\n",
    "empty-reason": "HTTP/1.1 304 \r\nContent-Length: 10\r\n\r\n",
    "continue": "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n\r\n",
    "switching": "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\n"
                 "Upgrade: websocket\r\n\r\n",
    "cl-te": "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
    "te-gzip": "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n",
    "te-chunked-gzip": "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
    "cl-two": "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
    "status-99": "HTTP/1.1 099 Low\r\n\r\n",
    "status-999": "HTTP/1.1 999 High\r\n\r\n",
    "status-short": "HTTP/1.1 20\r\n\r\n",
    "status-alpha": "HTTP/1.1 2x0 OK\r\n\r\n",
    "reason-ctl": "HTTP/1.1 200 O\x01K\r\n\r\n",
    "reason-tab": "HTTP/1.1 200 \tOK\r\n\r\n",
    "version": "HTTP/2 200 OK\r\n\r\n",
    "obs-fold": "HTTP/1.1 200 OK\r\nX: a\r\n\tb\r\n\r\n",
    "bare-lf": "HTTP/1.1 200 OK\nContent-Length: 0\n\n",
    "partial": "HTTP/1.1 200 OK\r\nContent-Len",
    "keep-alive-10": "HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n",
    "head-16384": "HTTP/1.1 200 OK\r\nX: " + "b" * (16384 - 24) + "\r\n\r\n",
}

CHUNKED = {
    # first byte: number of cuts (0..7), then each piece's length
    "simple": b"\x00" + b"5\r\nhello\r\n0\r\n\r\n",
    "split": b"\x03\x01\x04\x06" + b"5\r\nhello\r\n0\r\n\r\n",
    "ext": b"\x02\x02\x02" + b"a;name=value\r\n0123456789\r\n0;x\r\n\r\n",
    "trailers": b"\x01\x09" + b"3\r\nabc\r\n0\r\nX-T: 1\r\nY: 2\r\n\r\nnext request",
    "hex": b"\x00" + b"1F\r\n" + b"x" * 31 + b"\r\nff\r\n" + b"y" * 255 + b"\r\n0\r\n\r\n",
    "max-digits": b"\x00" + b"000000000000001\r\nz\r\n0\r\n\r\n",
    "overflow": b"\x00" + b"1000000000000000\r\n",
    "bare-lf": b"\x00" + b"5\nhello\n0\n\n",
    "no-crlf": b"\x00" + b"5\r\nhelloX\r\n",
    "no-size": b"\x00" + b"\r\n\r\n",
    "ext-ctl": b"\x00" + b"5;a\x01\r\nhello\r\n",
    "trailer-fold": b"\x00" + b"0\r\nX: a\r\n b\r\n\r\n",
    "trailer-lf": b"\x00" + b"0\r\nX: a\n\r\n",
    "partial": b"\x07\x01\x01\x01\x01\x01\x01\x01" + b"10\r\n0123456789",
    "byte-by-byte": b"\x07\x01\x01\x01\x01\x01\x01\x00" + b"1\r\na\r\n0\r\n\r\n",
}


def http():
    for name, text in REQUESTS.items():
        put("http_request", name, text.encode("latin-1"))
    for name, text in RESPONSES.items():
        put("http_response", name, text.encode("latin-1"))
    for name, data in CHUNKED.items():
        put("chunked", name, data)


# ---- proxy ----
def proxy_input(b0, b1, b2, cap, verify, src, sport, dst, dport, strs):
    data = bytes([b0, b1, b2]) + struct.pack(">HI", cap, verify)
    data += src.ljust(16, b"\0") + struct.pack(">H", sport)
    data += dst.ljust(16, b"\0") + struct.pack(">H", dport)
    for s in strs:
        data += struct.pack(">H", len(s)) + s
    return data


def proxy():
    v4a, v4b = bytes([192, 0, 2, 1]), bytes([10, 0, 0, 1])
    v6a = bytes.fromhex("20010db8000000000000000000000001")
    v6b = bytes.fromhex("fe800000000000000000000000000002")
    tls = [b"TLSv1.3", b"TLS_AES_128_GCM_SHA256", b"client-1", b"app.example.com"]
    # b0: 0 -> v1, 1 -> v2, 6 -> version 0; b1: families (bits 0-1 src, 2-3 dst:
    # 0 IPv4, 1 IPv6, 2 AF_UNIX), 0x10 no TLS info, 0x20 has_cert; b2: strings set
    put("proxy", "v1-tcp4", proxy_input(0, 0x00, 0, 200, 0, v4a, 51000, v4b, 443, []))
    put("proxy", "v1-tcp6", proxy_input(0, 0x05, 0, 200, 0, v6a, 1, v6b, 65535, []))
    put("proxy", "v1-unknown", proxy_input(0, 0x04, 0, 200, 0, v4a, 1, v6b, 2, []))
    put("proxy", "v1-small", proxy_input(0, 0x00, 0, 20, 0, v4a, 51000, v4b, 443, []))
    put("proxy", "v2-tcp4-tls", proxy_input(1, 0x20, 15, 400, 0, v4a, 51000, v4b, 443, tls))
    put("proxy", "v2-tcp6-tls", proxy_input(1, 0x25, 15, 500, 0x12345678, v6a, 1, v6b, 2, tls))
    put("proxy", "v2-local", proxy_input(1, 0x0a, 0, 100, 0, b"/tmp/a", 0, b"/tmp/b", 0, []))
    put("proxy", "v2-notls", proxy_input(1, 0x10, 15, 100, 0, v4a, 1, v4b, 2, tls))
    put("proxy", "v2-sni-only", proxy_input(1, 0x00, 8, 100, 0, v4a, 1, v4b, 2,
                                            [b"", b"", b"", b"a" * 200]))
    put("proxy", "v2-long", proxy_input(1, 0x25, 15, 799, 1, v6a, 1, v6b, 2,
                                        [b"TLSv1.2", b"C" * 60, b"N" * 150, b"s" * 150]))
    put("proxy", "v2-too-long", proxy_input(1, 0x00, 15, 799, 1, v4a, 1, v4b, 2,
                                            [b"V" * 65, b"", b"", b""]))
    put("proxy", "v2-small", proxy_input(1, 0x20, 15, 40, 0, v4a, 1, v4b, 2, tls))
    put("proxy", "bad-version", proxy_input(6, 0x00, 0, 200, 0, v4a, 1, v4b, 2, []))


# ---- cert ----
CERTS = [
    ("ec-p256", ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"],
     "/CN=client-1/O=Example/C=DE", [], "01"),
    ("long-subject", ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"],
     "/C=US/ST=" + "S" * 60 + "/L=" + "L" * 100 + "/O=" + "O" * 64 + "/OU=" + "U" * 64
     + "/CN=" + "c" * 64 + "/emailAddress=" + "e" * 60 + "@example.com"
     + "/serialNumber=12345/street=1 Main St/DC=example/DC=com/UID=u1", [],
     "7fffffffffffffffffffffffffffffffffffffff"),
    ("multi-rdn", ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-multivalue-rdn"],
     "/CN=a+OU=b+O=c/C=FR/O=x, \"quoted\" <y>; z\\=w/CN=#lead /CN= trail ", [], "00ff"),
    ("utf8", ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-utf8"],
     "/CN=J\u00fcrgen M\u00fcller \u65e5\u672c/O=Soci\u00e9t\u00e9", [], "80"),
    ("sans", ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-384"],
     "/CN=san.example.com",
     ["-addext", "subjectAltName=DNS:a.example.com,DNS:*.example.org,IP:192.0.2.1,"
      "IP:2001:db8::1,email:x@example.com,URI:spiffe://example/x"], "2a"),
    ("rsa", ["-newkey", "rsa:2048"], "/CN=rsa-client/OU=ops", [], "0102030405060708090a"),
    ("ed25519", ["-newkey", "ed25519"], "/CN=ed", [], "05"),
]


def cert():
    with tempfile.TemporaryDirectory() as tmp:
        for name, keyargs, subj, ext, serial in CERTS:
            out = os.path.join(tmp, name + ".der")
            cmd = (["openssl", "req", "-x509", "-nodes", "-keyout", os.path.join(tmp, "k"),
                    "-days", "3650", "-subj", subj, "-set_serial", "0x" + serial,
                    "-outform", "DER", "-out", out] + keyargs + ext)
            subprocess.run(cmd, check=True, capture_output=True)
            with open(out, "rb") as f:
                put("cert", name + ".der", f.read())
        # BMPString and T61String values, a GeneralizedTime after 2049: openssl
        # asn1parse -genconf builds what req does not.
        conf = os.path.join(tmp, "asn1.conf")
        with open(conf, "w") as f:
            f.write("""asn1=SEQUENCE:cert
[cert]
tbs=SEQUENCE:tbs
alg=SEQUENCE:alg
sig=FORMAT:HEX,BITSTRING:00
[alg]
oid=OID:ecdsa-with-SHA256
[tbs]
ver=EXPLICIT:0,INTEGER:2
serial=INTEGER:0x0102030405060708090a0b0c0d0e0f1011121314
alg=SEQUENCE:alg
issuer=SEQUENCE:issuer
validity=SEQUENCE:validity
subject=SEQUENCE:subject
[validity]
a=UTCTIME:250101000000Z
b=GENTIME:20991231235959Z
[issuer]
r1=SET:rdn_c
r2=SET:rdn_bmp
[subject]
r1=SET:rdn_t61
r2=SET:rdn_multi
r3=SET:rdn_other
r4=SET:rdn_cn
[rdn_c]
a=SEQUENCE:atv_c
[atv_c]
oid=OID:countryName
v=PRINTABLESTRING:NL
[rdn_bmp]
a=SEQUENCE:atv_bmp
[atv_bmp]
oid=OID:commonName
v=BMPSTRING:Issuer BMP
[rdn_t61]
a=SEQUENCE:atv_t61
[atv_t61]
oid=OID:organizationName
v=T61STRING:T61 Org
[rdn_multi]
a=SEQUENCE:atv_ou
b=SEQUENCE:atv_uid
[atv_ou]
oid=OID:organizationalUnitName
v=UTF8:unit\\,one
[atv_uid]
oid=OID:1.2.840.113549.1.9.1
v=IA5STRING:a@b.c
[rdn_other]
a=SEQUENCE:atv_other
[atv_other]
oid=OID:1.3.6.1.4.1.99999.12345678901.1
v=INTEGER:42
[rdn_cn]
a=SEQUENCE:atv_cn
[atv_cn]
oid=OID:commonName
v=UTF8:line\\nbreak
""")
        out = os.path.join(tmp, "gen.der")
        subprocess.run(["openssl", "asn1parse", "-genconf", conf, "-noout", "-out", out],
                       check=True, capture_output=True)
        with open(out, "rb") as f:
            gen = f.read()
        put("cert", "bmp-t61-gentime.der", gen)
    # Bad ones: truncated, a length past the end, empty.
    with open(os.path.join(CORPUS, "cert", "ec-p256.der"), "rb") as f:
        good = f.read()
    put("cert", "truncated.der", good[: len(good) // 2])
    put("cert", "length-past-end.der", b"\x30\x84\x7f\xff\xff\xff" + good[2:40])
    put("cert", "empty.der", b"")
    put("cert", "version-only.der", bytes.fromhex("3009300702020101a0020500"))


# ---- sni ----
SNI = [
    ("exact", b"app.example.com\0APP.example.com"),
    ("exact-dot", b"app.example.com\0app.example.com."),
    ("wild", b"*.example.org\0www.example.org"),
    ("wild-two-labels", b"*.example.org\0a.b.example.org"),
    ("wild-apex", b"*.example.org\0example.org"),
    ("wild-empty-label", b"*.example.org\0.example.org"),
    ("wild-dot", b"*.example.org\0x.example.org."),
    ("star-only", b"*\0anything"),
    ("star-dot", b"*.\0a."),
    ("empty", b"\0"),
    ("dots", b"a..\0a..."),
    ("no-nul", b"example.comexample.com"),
    ("high-bytes", b"\xc3\xa9.example\0\xc3\x89.EXAMPLE"),
]


def sni():
    for name, data in SNI:
        put("sni", name, data)


if __name__ == "__main__":
    if os.path.isdir(CORPUS):
        shutil.rmtree(CORPUS)
    config()
    http()
    proxy()
    cert()
    sni()
    for t in sorted(os.listdir(CORPUS)):
        print(t, len(os.listdir(os.path.join(CORPUS, t))))
