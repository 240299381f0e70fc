#!/usr/bin/env python3
"""backend.py - backend server stubs for the mtlslb test suite (stdlib only).

usage: backend.py MODE --port N [--host H] [--ready FILE] [--name NAME] [--log FILE]

MODE
  http    minimal HTTP/1.1 server with keep-alive.  Every request is answered
          200 text/plain with body "NAME\\n" and headers X-Backend: NAME,
          plus X-Body-Length / X-Body-Sha256 when the request had a body
          (Content-Length or chunked).  HTTP/1.0 requests and requests with
          "Connection: close" get "Connection: close" and the connection is
          closed after the response.  "Expect: 100-continue" gets a 100.
          Special paths (query strings are ignored):
            /headers      body = the request header lines exactly as received,
                          one per line ("Name: value\\n")
            /echo         body = the request body
            /status/CODE  answer with that status code (body "NAME\\n",
                          none for 1xx/204/304)
            /sleep/SECS   wait SECS (float) before answering
            /bytes/N      body = N bytes ("x"), for large-response tests
            /chunked      body "NAME\\n" sent with Transfer-Encoding: chunked
            /short/N      Content-Length: N, then N/2 bytes and the close
            /early413     413 and the close, before reading the request body
            /unasked101   101 Switching Protocols to a request without Upgrade,
                          then 1 s of silence
            /stopread     reads 64 KB of the request body, then nothing more,
                          and never answers (60 s)
          A request with "Connection: Upgrade" and an Upgrade header gets
          "101 Switching Protocols" and then the connection echoes raw bytes.
          Each request is logged as one line "NAME METHOD TARGET" to --log.
  echo    raw TCP: echo every byte back; on client half-close, shut down the
          write side and close.
  sink    raw TCP: read until the client half-closes, then send
          "got N sha256=HEX\\n" and close.
  proxy   expects a PROXY protocol v1 or v2 header, then reads up to the end of
          an HTTP request header ("\\r\\n\\r\\n", or EOF) and answers
          200 with Connection: close and a JSON body:
            {"version":1|2, "command":"PROXY"|"LOCAL"|"UNKNOWN",
             "src":ip, "sport":n, "dst":ip, "dport":n,
             "ssl":{"client":n,"verify":n,"version":s,"cn":s,"cipher":s,
                    "sig_alg":s,"key_alg":s} or null,
             "authority":s or null, "alpn":s or null,
             "tlvs":[[type, hex], ...]}
          A malformed header is answered 400 "bad proxy header: REASON".
          The JSON line is also appended to --log.  With --tls-cert F
          --tls-key F the header is followed by TLS (as haproxy's
          send-proxy to an ssl server): the request is read and the answer
          sent inside it, and the JSON has "tls": true.
  silent  accepts connections, reads nothing and never answers (504 tests).
  stall   listens with a full accept queue and never accepts, so a connect
          never completes (connect-timeout tests).

--ready FILE is created once the socket listens.  SIGTERM/SIGINT exit 0.
"""

import argparse
import hashlib
import ipaddress
import json
import signal
import socket
import socketserver
import ssl
import struct
import sys
import threading
import time

ARGS = None
LOG_LOCK = threading.Lock()


def log_line(line):
    if not ARGS.log:
        return
    with LOG_LOCK:
        with open(ARGS.log, "a") as f:
            f.write(line + "\n")
            f.flush()


class Server(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True          # do not wait for connection threads at exit
    request_queue_size = 1024

    def handle_error(self, request, client_address):
        # Peers resetting or vanishing is normal in these tests; anything
        # else gets a traceback on stderr.
        exc = sys.exc_info()[1]
        if isinstance(exc, (ConnectionError, TimeoutError, socket.timeout,
                            BrokenPipeError, OSError)):
            return
        super().handle_error(request, client_address)


class Server6(Server):
    address_family = socket.AF_INET6


def close_write_and_close(sock):
    try:
        sock.shutdown(socket.SHUT_WR)
    except OSError:
        pass


# ---------------------------------------------------------------- http ----

# Special paths answered at once, before the request body is read: the
# answer, then seconds of silence before the close.
CANNED = {
    # A body it will not take: 413 at once.
    "/early413": (b"HTTP/1.1 413 Content Too Large\r\nContent-Type: text/plain\r\n"
                  b"Content-Length: 10\r\nConnection: close\r\n\r\ntoo large\n", 0),
    # A protocol switch the request did not ask for (invalid).
    "/unasked101": (b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                    b"Connection: Upgrade\r\n\r\n", 1),
}

REASONS = {
    100: "Continue", 101: "Switching Protocols", 103: "Early Hints",
    200: "OK", 201: "Created",
    204: "No Content", 301: "Moved Permanently", 302: "Found",
    304: "Not Modified", 400: "Bad Request", 401: "Unauthorized",
    403: "Forbidden", 404: "Not Found", 408: "Request Timeout",
    421: "Misdirected Request", 500: "Internal Server Error",
    502: "Bad Gateway", 503: "Service Unavailable", 504: "Gateway Timeout",
}


class BadRequest(Exception):
    pass


class HttpHandler(socketserver.StreamRequestHandler):
    wbufsize = 0                   # unbuffered writes: sendall per write

    def send(self, data):
        self.wfile.write(data)

    def respond(self, code, body, close, head=False, extra=(), chunked=False):
        hdrs = ["HTTP/1.1 %d %s" % (code, REASONS.get(code, "Status")),
                "Content-Type: text/plain",
                "X-Backend: " + ARGS.name]
        no_body = head or code in (204, 304) or 100 <= code < 200
        if chunked and not no_body:
            hdrs.append("Transfer-Encoding: chunked")
        elif code not in (204, 304) and not 100 <= code < 200:
            hdrs.append("Content-Length: %d" % len(body))
        hdrs.extend(extra)
        if close:
            hdrs.append("Connection: close")
        out = ("\r\n".join(hdrs) + "\r\n\r\n").encode("latin-1")
        if not no_body:
            if chunked:
                out += b"%x\r\n" % len(body) + body + b"\r\n0\r\n\r\n"
            else:
                out += body
        self.send(out)

    def readline(self, limit=65536):
        line = self.rfile.readline(limit + 1)
        if len(line) > limit:
            raise BadRequest("line too long")
        return line

    def read_body(self, headers):
        """Read the request body; return (bytes or None if no body)."""
        te = headers.get("transfer-encoding")
        cl = headers.get("content-length")
        if te is not None:
            if te.strip().lower() != "chunked":
                raise BadRequest("unsupported transfer-encoding")
            parts = []
            while True:
                line = self.readline()
                if not line.endswith(b"\n"):
                    raise BadRequest("truncated chunk")
                size_s = line.split(b";", 1)[0].strip()
                try:
                    size = int(size_s, 16)
                except ValueError:
                    raise BadRequest("bad chunk size")
                if size == 0:
                    while True:            # trailers up to the empty line
                        t = self.readline()
                        if not t.endswith(b"\n"):
                            raise BadRequest("truncated trailer")
                        if t in (b"\r\n", b"\n"):
                            return b"".join(parts)
                data = self.rfile.read(size)
                if len(data) != size:
                    raise BadRequest("truncated chunk")
                parts.append(data)
                if self.readline() not in (b"\r\n", b"\n"):
                    raise BadRequest("missing CRLF after chunk")
        if cl is not None:
            try:
                n = int(cl.strip())
            except ValueError:
                raise BadRequest("bad content-length")
            if n < 0:
                raise BadRequest("bad content-length")
            data = self.rfile.read(n)
            if len(data) != n:
                raise BadRequest("truncated body")
            return data
        return None

    def handle(self):
        try:
            while self.one_request():
                pass
        except BadRequest as e:
            try:
                self.respond(400, ("bad request: %s\n" % e).encode(), True)
            except OSError:
                pass
        except (OSError, ValueError):
            pass

    def one_request(self):
        """Serve one request; return True to keep the connection open."""
        line = self.readline(16384)
        while line in (b"\r\n", b"\n"):        # tolerate stray CRLFs
            line = self.readline(16384)
        if not line:
            return False                        # clean EOF between requests
        if not line.endswith(b"\n"):
            raise BadRequest("truncated request line")
        try:
            method, target, version = line.decode("latin-1").split()
        except ValueError:
            raise BadRequest("malformed request line")
        raw_headers = []
        headers = {}
        total = 0
        while True:
            h = self.readline()
            if not h.endswith(b"\n"):
                raise BadRequest("truncated header")
            if h in (b"\r\n", b"\n"):
                break
            total += len(h)
            if total > 1 << 20:
                raise BadRequest("header too large")
            text = h.decode("latin-1").rstrip("\r\n")
            raw_headers.append(text)
            if ":" not in text:
                raise BadRequest("malformed header")
            name, value = text.split(":", 1)
            name = name.strip().lower()
            value = value.strip()
            if name in headers:
                headers[name] += ", " + value
            else:
                headers[name] = value

        conn_tokens = [t.strip().lower()
                       for t in headers.get("connection", "").split(",")]
        close = version != "HTTP/1.1" or "close" in conn_tokens
        if (headers.get("expect", "").lower() == "100-continue"
                and version == "HTTP/1.1"):
            self.send(b"HTTP/1.1 100 Continue\r\n\r\n")
        if target.split("?", 1)[0] == "/stopread":
            # Takes 64 KB of the body, then neither reads nor answers.
            log_line("%s %s %s" % (ARGS.name, method, target))
            self.rfile.read(min(65536, int(headers.get("content-length", "0") or 0)))
            time.sleep(60)
            return False
        if target.split("?", 1)[0] in CANNED:
            # An answer sent before the body is read, then a pause and the
            # close (with a body unread, the close is a RST).
            log_line("%s %s %s" % (ARGS.name, method, target))
            answer, pause = CANNED[target.split("?", 1)[0]]
            self.send(answer)
            time.sleep(pause)
            return False
        body = self.read_body(headers)
        log_line("%s %s %s" % (ARGS.name, method, target))

        if "upgrade" in conn_tokens and "upgrade" in headers:
            # e.g. WebSocket: 101, then echo raw bytes until EOF.
            self.send(("HTTP/1.1 101 Switching Protocols\r\nUpgrade: %s\r\n"
                       "Connection: Upgrade\r\nX-Backend: %s\r\n\r\n"
                       % (headers["upgrade"], ARGS.name)).encode("latin-1"))
            while True:
                data = self.rfile.read1(65536)   # buffered bytes first
                if not data:
                    break
                self.send(data)
            close_write_and_close(self.request)
            return False

        path = target.split("?", 1)[0]
        head = method == "HEAD"
        code = 200
        out = (ARGS.name + "\n").encode()
        extra = []
        chunked = False
        if body is not None:
            extra.append("X-Body-Length: %d" % len(body))
            extra.append("X-Body-Sha256: " + hashlib.sha256(body).hexdigest())
        try:
            if path == "/headers":
                out = "".join(l + "\n" for l in raw_headers).encode("latin-1")
            elif path == "/echo":
                out = body or b""
            elif path.startswith("/status/"):
                code = int(path[len("/status/"):])
                if not 100 <= code <= 999 or code == 101:
                    raise ValueError
            elif path.startswith("/sleep/"):
                time.sleep(float(path[len("/sleep/"):]))
            elif path.startswith("/bytes/"):
                out = b"x" * int(path[len("/bytes/"):])
            elif path == "/chunked":
                chunked = True
            elif path.startswith("/short/"):
                # Content-Length N, N/2 bytes, then close: a response cut short.
                n = int(path[len("/short/"):])
                self.send(("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
                           "Content-Length: %d\r\n\r\n" % n).encode() + b"x" * (n // 2))
                return False
        except ValueError:
            code, out = 400, b"bad parameter\n"
        if 100 <= code < 200:
            # An interim response, then the real one.
            self.respond(code, b"", False)
            code = 200
        self.respond(code, out, close, head=head, extra=extra, chunked=chunked)
        return not close


# -------------------------------------------------------- echo / sink ----

class EchoHandler(socketserver.BaseRequestHandler):
    def handle(self):
        s = self.request
        while True:
            data = s.recv(65536)
            if not data:
                break
            s.sendall(data)
        close_write_and_close(s)


class SinkHandler(socketserver.BaseRequestHandler):
    def handle(self):
        s = self.request
        h = hashlib.sha256()
        n = 0
        while True:
            data = s.recv(65536)
            if not data:
                break
            n += len(data)
            h.update(data)
        s.sendall(b"got %d sha256=%s\n" % (n, h.hexdigest().encode()))
        close_write_and_close(s)


# --------------------------------------------------------------- proxy ----

V2_SIG = b"\x0d\x0a\x0d\x0a\x00\x0d\x0a\x51\x55\x49\x54\x0a"

PP2_TYPE_ALPN = 0x01
PP2_TYPE_AUTHORITY = 0x02
PP2_TYPE_CRC32C = 0x03
PP2_TYPE_SSL = 0x20
PP2_SUBTYPES = {0x21: "version", 0x22: "cn", 0x23: "cipher",
                0x24: "sig_alg", 0x25: "key_alg"}


class BadProxy(Exception):
    pass


def _crc32c_table():
    t = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        t.append(c)
    return t


CRC32C_TABLE = _crc32c_table()


def crc32c(data):
    c = 0xFFFFFFFF
    for b in data:
        c = CRC32C_TABLE[(c ^ b) & 0xFF] ^ (c >> 8)
    return c ^ 0xFFFFFFFF


def parse_v1(line):
    """line: the header without its CRLF (bytes)."""
    try:
        text = line.decode("ascii")
    except UnicodeDecodeError:
        raise BadProxy("v1 header is not ASCII")
    parts = text.split(" ")
    res = {"version": 1, "command": "PROXY", "src": None, "sport": None,
           "dst": None, "dport": None, "ssl": None, "authority": None,
           "alpn": None, "tlvs": []}
    if parts[0] != "PROXY" or len(parts) < 2:
        raise BadProxy("v1 header does not start with 'PROXY '")
    if parts[1] == "UNKNOWN":
        res["command"] = "UNKNOWN"
        return res
    if parts[1] not in ("TCP4", "TCP6"):
        raise BadProxy("v1 unknown protocol %r" % parts[1])
    if len(parts) != 6:
        raise BadProxy("v1 expected 6 fields, got %d" % len(parts))
    want = ipaddress.IPv4Address if parts[1] == "TCP4" else ipaddress.IPv6Address
    for key, val in (("src", parts[2]), ("dst", parts[3])):
        try:
            res[key] = str(want(val))
        except ValueError:
            raise BadProxy("v1 bad %s address %r for %s" % (key, val, parts[1]))
    for key, val in (("sport", parts[4]), ("dport", parts[5])):
        if not val.isdigit() or (len(val) > 1 and val[0] == "0") \
                or int(val) > 65535:
            raise BadProxy("v1 bad %s %r" % (key, val))
        res[key] = int(val)
    return res


def parse_tlvs(data, what):
    """Split TLVs; return list of (type, value, offset of value in data)."""
    out = []
    i = 0
    while i < len(data):
        if len(data) - i < 3:
            raise BadProxy("%s: truncated TLV header" % what)
        t, ln = data[i], struct.unpack("!H", data[i + 1:i + 3])[0]
        if i + 3 + ln > len(data):
            raise BadProxy("%s: TLV 0x%02x length %d overruns" % (what, t, ln))
        out.append((t, data[i + 3:i + 3 + ln], i + 3))
        i += 3 + ln
    return out


def parse_v2(hdr):
    """hdr: the whole v2 header (16 bytes + length)."""
    ver_cmd, fam = hdr[12], hdr[13]
    length = struct.unpack("!H", hdr[14:16])[0]
    body = hdr[16:16 + length]
    if ver_cmd >> 4 != 2:
        raise BadProxy("v2 bad version %d" % (ver_cmd >> 4))
    cmd = ver_cmd & 0x0F
    if cmd not in (0, 1):
        raise BadProxy("v2 bad command %d" % cmd)
    res = {"version": 2, "command": "PROXY" if cmd == 1 else "LOCAL",
           "src": None, "sport": None, "dst": None, "dport": None,
           "ssl": None, "authority": None, "alpn": None, "tlvs": []}
    af, proto = fam >> 4, fam & 0x0F
    if af not in (0, 1, 2, 3) or proto not in (0, 1, 2):
        raise BadProxy("v2 bad family/protocol byte 0x%02x" % fam)
    if af == 1:
        alen = 12
        if length < alen:
            raise BadProxy("v2 length %d too short for IPv4" % length)
        res["src"] = str(ipaddress.IPv4Address(body[0:4]))
        res["dst"] = str(ipaddress.IPv4Address(body[4:8]))
        res["sport"], res["dport"] = struct.unpack("!HH", body[8:12])
    elif af == 2:
        alen = 36
        if length < alen:
            raise BadProxy("v2 length %d too short for IPv6" % length)
        res["src"] = str(ipaddress.IPv6Address(body[0:16]))
        res["dst"] = str(ipaddress.IPv6Address(body[16:32]))
        res["sport"], res["dport"] = struct.unpack("!HH", body[32:36])
    elif af == 3:
        alen = 216
        if length < alen:
            raise BadProxy("v2 length %d too short for UNIX" % length)
        res["src"] = body[0:108].split(b"\0", 1)[0].decode("latin-1")
        res["dst"] = body[108:216].split(b"\0", 1)[0].decode("latin-1")
    else:
        alen = 0
    for t, v, off in parse_tlvs(body[alen:], "v2"):
        res["tlvs"].append([t, v.hex()])
        if t == PP2_TYPE_AUTHORITY:
            res["authority"] = v.decode("utf-8", "replace")
        elif t == PP2_TYPE_ALPN:
            res["alpn"] = v.decode("latin-1")
        elif t == PP2_TYPE_CRC32C:
            if len(v) != 4:
                raise BadProxy("v2 CRC32C TLV length %d" % len(v))
            off += 16 + alen            # offset of the checksum in hdr;
            zeroed = hdr[:off] + b"\0\0\0\0" + hdr[off + 4:]  # zero, recompute
            if crc32c(zeroed) != struct.unpack("!I", v)[0]:
                raise BadProxy("v2 CRC32C mismatch")
        elif t == PP2_TYPE_SSL:
            if len(v) < 5:
                raise BadProxy("v2 SSL TLV too short (%d)" % len(v))
            ssl = {"client": v[0], "verify": struct.unpack("!I", v[1:5])[0],
                   "version": None, "cn": None, "cipher": None,
                   "sig_alg": None, "key_alg": None}
            for st, sv, _ in parse_tlvs(v[5:], "v2 SSL sub-TLV"):
                if st in PP2_SUBTYPES:
                    ssl[PP2_SUBTYPES[st]] = sv.decode("utf-8", "replace")
            res["ssl"] = ssl
    return res


class ProxyHandler(socketserver.BaseRequestHandler):
    def recv_more(self, buf):
        data = self.request.recv(65536)
        if not data:
            raise BadProxy("connection closed inside the header "
                           "(%d bytes)" % len(buf))
        return buf + data

    def read_header(self):
        """Return (parsed dict, bytes after the header)."""
        buf = b""
        try:
            while True:
                if buf.startswith(V2_SIG) and len(buf) >= 16:
                    length = struct.unpack("!H", buf[14:16])[0]
                    while len(buf) < 16 + length:
                        buf = self.recv_more(buf)
                    return parse_v2(buf[:16 + length]), buf[16 + length:]
                if buf.startswith(b"PROXY "):
                    # v1: at most 107 bytes including the CRLF.
                    while b"\r\n" not in buf[:107]:
                        if len(buf) >= 107:
                            raise BadProxy("v1 header longer than 107 bytes")
                        buf = self.recv_more(buf)
                    end = buf.index(b"\r\n")
                    return parse_v1(buf[:end]), buf[end + 2:]
                # Give up as soon as the bytes so far match neither signature.
                if not (V2_SIG.startswith(buf[:12])
                        or b"PROXY ".startswith(buf[:6])):
                    raise BadProxy("no PROXY signature")
                buf = self.recv_more(buf)
        except socket.timeout:
            raise BadProxy("timeout inside the header (%d bytes)" % len(buf))

    def reply(self, code, body):
        head = ("HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %d\r\n"
                "Connection: close\r\n\r\n" % (
                    code, REASONS.get(code, "Status"),
                    "application/json" if code == 200 else "text/plain",
                    len(body)))
        self.request.sendall(head.encode() + body)
        close_write_and_close(self.request)

    def tls_exchange(self, rest, info):
        """TLS after the header (rest: bytes already read past it): read
        the request head inside it, answer with the JSON."""
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(ARGS.tls_cert, ARGS.tls_key)
        inc, outg = ssl.MemoryBIO(), ssl.MemoryBIO()
        obj = ctx.wrap_bio(inc, outg, server_side=True)
        inc.write(rest)

        def pump():
            out = outg.read()
            if out:
                self.request.sendall(out)

        def more():
            data = self.request.recv(65536)
            if not data:
                raise OSError("closed during TLS")
            inc.write(data)

        while True:
            try:
                obj.do_handshake()
                break
            except ssl.SSLWantReadError:
                pump()
                more()
        pump()
        req = b""
        while b"\r\n\r\n" not in req:
            try:
                req += obj.read(65536)
            except ssl.SSLWantReadError:
                pump()
                more()
        info["tls"] = True
        out = json.dumps(info, sort_keys=True)
        log_line(out)
        body = (out + "\n").encode()
        obj.write(("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                   "Content-Length: %d\r\nConnection: close\r\n\r\n"
                   % len(body)).encode() + body)
        try:
            obj.unwrap()
        except ssl.SSLError:
            pass
        pump()
        close_write_and_close(self.request)

    def handle(self):
        self.request.settimeout(10)
        try:
            info, rest = self.read_header()
        except BadProxy as e:
            log_line("bad proxy header: %s" % e)
            try:
                self.reply(400, ("bad proxy header: %s\n" % e).encode())
            except OSError:
                pass
            return
        if ARGS.tls_cert:
            try:
                self.tls_exchange(rest, info)
            except (OSError, ssl.SSLError) as e:
                log_line("tls after the proxy header: %s" % e)
            return
        # The rest of the stream is normally an HTTP request: wait for the
        # end of its header (or EOF / timeout) before answering.
        try:
            while b"\r\n\r\n" not in rest:
                data = self.request.recv(65536)
                if not data:
                    break
                rest += data
        except socket.timeout:
            pass
        out = json.dumps(info, sort_keys=True)
        log_line(out)
        self.reply(200, (out + "\n").encode())


# ---------------------------------------------------------------- main ----

class SilentHandler(socketserver.BaseRequestHandler):
    def handle(self):
        # Hold the connection open, say nothing, until the peer goes away.
        try:
            while self.request.recv(65536):
                pass
        except OSError:
            pass


def run_stall():
    """Listen with backlog 0, fill the queue ourselves, never accept."""
    lsock = socket.socket(socket.AF_INET6 if ":" in ARGS.host else socket.AF_INET)
    lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    lsock.bind((ARGS.host, ARGS.port))
    lsock.listen(0)
    fill = []
    for _ in range(3):
        s = socket.socket(lsock.family)
        s.setblocking(False)
        s.connect_ex((ARGS.host, ARGS.port))
        fill.append(s)
    time.sleep(0.5)
    if ARGS.ready:
        with open(ARGS.ready, "a"):
            pass
    try:
        while True:
            time.sleep(3600)
    except SystemExit:
        pass
    return 0


HANDLERS = {"http": HttpHandler, "echo": EchoHandler, "sink": SinkHandler,
            "proxy": ProxyHandler, "silent": SilentHandler, "stall": None}


def main():
    global ARGS
    p = argparse.ArgumentParser(
        description="Backend stubs for the mtlslb tests.",
        epilog=__doc__.split("\n", 4)[4],
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("mode", choices=sorted(HANDLERS))
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--name", default="backend",
                   help="http mode: the name answered in every body")
    p.add_argument("--log", help="append one line per request to FILE")
    p.add_argument("--ready", help="create FILE once listening")
    p.add_argument("--tls-cert", help="proxy mode: TLS after the header, this certificate")
    p.add_argument("--tls-key", help="proxy mode: ... and this key")
    ARGS = p.parse_args()

    def stop(signum, frame):
        raise SystemExit(0)
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)

    if ARGS.mode == "stall":
        return run_stall()
    cls = Server6 if ":" in ARGS.host else Server
    try:
        srv = cls((ARGS.host, ARGS.port), HANDLERS[ARGS.mode])
    except OSError as e:
        print("backend.py: cannot listen on %s:%d: %s"
              % (ARGS.host, ARGS.port, e), file=sys.stderr)
        return 1
    if ARGS.ready:
        with open(ARGS.ready, "a"):
            pass
    try:
        srv.serve_forever(poll_interval=0.2)
    except SystemExit:
        pass
    finally:
        srv.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
