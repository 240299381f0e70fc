#!/usr/bin/env python3
"""tlsclient.py - TLS test client for the mtlslb suite (stdlib only).

TLS runs over ssl.MemoryBIO + ssl.SSLObject on a plain socket, so the client
can half-close TCP (shutdown(SHUT_WR)) without sending close_notify and still
read TLS records afterwards -- something curl and openssl s_client cannot do.

usage: tlsclient.py --connect HOST:PORT [--cert F --key F] [--ca F]
                    [--servername NAME] [--timeout S] [--tls 1.2|1.3] [-v]
                    SUBCOMMAND ...
  (the common options may also follow the subcommand)

subcommands
  echo --bytes N        send N random bytes while reading the echo back;
                        prints "echo ok N" and exits 0 if the same N bytes
                        came back (sha256), else says what differed, exit 1.
  halfclose --bytes N   send N random bytes, shutdown(SHUT_WR) without
                        close_notify, read until EOF/close_notify.  Prints
                        "sent sha256=HEX" first, then what came back
                        (decoded, stripped); exit 0 if something came back.
  hold --seconds S      handshake, print "handshake ok", keep the connection
                        open S seconds without sending, then close (exit 0).
                        Exits 1 ("closed by server after T s") if the server
                        closes first.
  raw --send STRING     handshake, send STRING (\\r \\n \\t \\\\ \\xNN escapes),
                        half-close the write side (unless --keep-open), print
                        what comes back; exit 0 if something came back.
  resume --send STRING [--half-close]
                        two connections: the second resumes the first's TLS
                        session.  Each sends STRING (then half-closes with
                        --half-close) and reads until the server closes or
                        is silent for --timeout (so STRING should make the
                        server close, e.g. an HTTP request with
                        "Connection: close").  Prints "reused yes|no" and
                        then the second response; exit 0 if the session was
                        reused, 1 if not.  --with-finished: STRING goes in
                        the same segment as the client's Finished (as a
                        browser's first request often does), so a TLS 1.3
                        server has the request before it sends its ticket.

--ca F verifies the server chain against F; the host name is checked only
when --servername is given (which also sets SNI; no --servername = no SNI).
Without --ca the server is not verified.  --timeout bounds the connect, the
handshake and every wait for the peer (default 10 s).

exit status: 0 ok, 1 test failed, 2 handshake failed ("handshake failed:
REASON" on stdout; a TLS alert that arrives before any application data,
as TLS 1.3 servers send when they reject the client certificate, counts as
a handshake failure), 3 cannot connect, 4 timeout, 64 usage error.
"""

import argparse
import hashlib
import os
import re
import select
import socket
import ssl
import sys
import time

VERBOSE = False


def diag(msg):
    if VERBOSE:
        print("tlsclient: " + msg, file=sys.stderr, flush=True)


def out(msg):
    print(msg, flush=True)


class HandshakeFailed(Exception):
    pass


class Timeout(Exception):
    pass


def ssl_reason(e):
    """A short text for an ssl error: drop the '(_ssl.c:NNN)' suffix."""
    if isinstance(e, ssl.SSLCertVerificationError) and e.verify_message:
        return "certificate verify failed: " + e.verify_message
    return re.sub(r"\s*\(_ssl\.c:\d+\)$", "", str(e))


class TLSConn:
    """TLS over a non-blocking socket, driven by select()."""

    def __init__(self, args, ctx, session=None):
        self.timeout = args.timeout
        self.ctx = ctx
        host, port = parse_hostport(args.connect)
        try:
            self.sock = socket.create_connection((host, port),
                                                 timeout=args.timeout)
        except OSError as e:
            out("connect failed: %s" % e)
            sys.exit(3)
        self.sock.setblocking(False)
        self.inc = ssl.MemoryBIO()          # network -> TLS
        self.outg = ssl.MemoryBIO()         # TLS -> network
        self.obj = ctx.wrap_bio(
            self.inc, self.outg, server_side=False,
            server_hostname=args.servername, session=session)
        self.outbuf = bytearray()           # ciphertext not yet sent
        self.tcp_eof = False                # peer closed / reset TCP
        self.closed = None                  # why the stream ended, once it has
        self.write_shut = False
        self.got_app_data = False

    # -- raw I/O -------------------------------------------------------
    def io(self, want_read=True, timeout=None):
        """One select() round: send pending ciphertext, feed what arrives.
        Raises Timeout if nothing could be done within timeout."""
        self.outbuf += self.outg.read()
        rl = [self.sock] if want_read and not self.tcp_eof else []
        wl = [self.sock] if self.outbuf and not self.write_shut else []
        if not rl and not wl:
            return
        r, w, _ = select.select(rl, wl, [],
                                self.timeout if timeout is None else timeout)
        if not r and not w:
            raise Timeout()
        if w:
            try:
                n = self.sock.send(self.outbuf)
                del self.outbuf[:n]
            except BlockingIOError:
                pass
            except OSError as e:            # EPIPE / ECONNRESET
                diag("send: %s" % e)
                self.outbuf.clear()
                self.write_shut = True
        if r:
            try:
                data = self.sock.recv(65536)
            except BlockingIOError:
                return
            except OSError as e:            # ECONNRESET
                diag("recv: %s" % e)
                data = b""
            if data:
                self.inc.write(data)
            else:
                self.tcp_eof = True
                self.inc.write_eof()

    def flush(self):
        """Send every pending byte of ciphertext (reading meanwhile)."""
        self.outbuf += self.outg.read()
        while self.outbuf and not self.write_shut:
            self.io(want_read=True)

    # -- TLS -----------------------------------------------------------
    def handshake(self, first=None):
        """first: application data sent with the Finished, one send()."""
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                self.obj.do_handshake()
                break
            except ssl.SSLWantReadError:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise HandshakeFailed("timeout")
                try:
                    self.io(timeout=left)
                except Timeout:
                    raise HandshakeFailed("timeout")
            except ssl.SSLError as e:
                self.send_pending_alert()
                raise HandshakeFailed(ssl_reason(e))
            except OSError as e:
                raise HandshakeFailed(str(e))
        if first:
            self.obj.write(first)
        self.flush()
        diag("handshake ok: %s %s, session reused: %s" % (
            self.obj.version(), self.obj.cipher()[0], self.obj.session_reused))

    def send_pending_alert(self):
        # Best effort: let our own alert reach the peer.
        try:
            self.outbuf += self.outg.read()
            if self.outbuf and not self.write_shut:
                self.sock.send(self.outbuf)
        except OSError:
            pass

    def read_available(self):
        """Decrypt what has arrived.  Returns bytes; sets self.closed at
        the end of the stream.  A TLS error before any application data is
        raised as HandshakeFailed."""
        chunks = []
        while self.closed is None:
            try:
                d = self.obj.read(65536)
            except ssl.SSLWantReadError:
                break
            except ssl.SSLZeroReturnError:
                self.closed = "close_notify"
                break
            except ssl.SSLEOFError:
                self.closed = "eof without close_notify"
                break
            except ssl.SSLError as e:
                if not self.got_app_data and not chunks:
                    raise HandshakeFailed(ssl_reason(e))
                diag("tls error: %s" % ssl_reason(e))
                self.closed = "error: " + ssl_reason(e)
                break
            if not d:
                # SSLObject.read() returns b"" (rather than raising
                # SSLZeroReturnError) once close_notify has arrived.
                self.closed = "close_notify"
                break
            chunks.append(d)
        if chunks:
            self.got_app_data = True
        if self.closed:
            diag("stream ended: " + self.closed)
        return b"".join(chunks)

    def write(self, data):
        self.obj.write(data)
        self.outbuf += self.outg.read()

    def shutdown_write(self):
        """TCP half-close, no close_notify."""
        self.flush()
        self.write_shut = True
        try:
            self.sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    def read_to_end(self, got=None):
        """Read until close_notify / EOF, appending to got (a bytearray,
        kept filled even if Timeout is raised because the peer went idle)."""
        if got is None:
            got = bytearray()
        while self.closed is None:
            got += self.read_available()
            if self.closed is not None:
                break
            if self.tcp_eof:                # defensive: EOF already fed
                self.closed = "eof"
                break
            self.io()
        return bytes(got)

    def close(self):
        """Send close_notify (unless write side is shut) and close."""
        if not self.write_shut and self.closed is None:
            try:
                self.obj.unwrap()
            except ssl.SSLError:
                pass
            try:
                self.flush()
            except (Timeout, OSError):
                pass
        self.sock.close()


def parse_hostport(s):
    host, sep, port = s.rpartition(":")
    if not sep or not port.isdigit():
        raise SystemExit("tlsclient: --connect wants HOST:PORT, got %r" % s)
    return host.strip("[]"), int(port)


def make_context(args):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if args.ca:
        ctx.load_verify_locations(args.ca)
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.check_hostname = bool(args.servername)
    else:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    if args.cert:
        ctx.load_cert_chain(args.cert, args.key)
    if args.tls:
        v = {"1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3}
        ctx.minimum_version = ctx.maximum_version = v[args.tls]
    return ctx


def unescape(s):
    """Interpret \\r \\n \\t \\0 \\\\ and \\xNN in s; return bytes."""
    def rep(m):
        e = m.group(1)
        if e.startswith("x"):
            return chr(int(e[1:], 16))
        return {"r": "\r", "n": "\n", "t": "\t", "0": "\0", "\\": "\\"}[e]
    return re.sub(r"\\(x[0-9a-fA-F]{2}|[rnt0\\])", rep, s).encode("latin-1")


def show(data):
    """Print received bytes as text (invalid UTF-8 replaced)."""
    sys.stdout.write(data.decode("utf-8", "replace"))
    sys.stdout.flush()


# -- subcommands -------------------------------------------------------

def send_all(c, data, chunk=16384):
    """Send data in chunks while reading whatever comes back.
    Returns the bytes received meanwhile."""
    got = bytearray()
    pos = 0
    while pos < len(data) or c.outbuf or c.outg.pending:
        # Keep at most ~64 KB of ciphertext queued: the rest waits in data.
        while pos < len(data) and len(c.outbuf) < 65536:
            c.write(data[pos:pos + chunk])
            pos += chunk
        if c.write_shut:
            break
        c.io()
        got += c.read_available()
    return bytes(got)


def cmd_echo(args, c):
    n = args.bytes
    data = os.urandom(n)
    got = bytearray(send_all(c, data))
    while len(got) < n and c.closed is None:
        c.io()
        got += c.read_available()
    want = hashlib.sha256(data).hexdigest()
    have = hashlib.sha256(bytes(got[:n])).hexdigest()
    if len(got) == n and want == have:
        out("echo ok %d" % n)
        c.close()
        return 0
    first = next((i for i in range(min(n, len(got))) if got[i] != data[i]),
                 None)
    out("echo FAILED: sent %d bytes sha256=%s, got %d bytes sha256=%s%s%s" % (
        n, want, len(got), hashlib.sha256(bytes(got)).hexdigest(),
        "" if first is None else ", first difference at byte %d" % first,
        "" if c.closed is None else ", stream ended (%s)" % c.closed))
    c.close()
    return 1


def cmd_halfclose(args, c):
    data = os.urandom(args.bytes)
    out("sent sha256=%s" % hashlib.sha256(data).hexdigest())
    got = send_all(c, data)
    c.shutdown_write()
    got += c.read_to_end()
    text = got.decode("utf-8", "replace").strip()
    if text:
        out(text)
    c.close()
    return 0 if got else 1


def cmd_hold(args, c):
    # With TLS 1.3 the client finishes its handshake before the server has
    # checked the client certificate: a rejection arrives as an alert just
    # after.  Wait briefly for it (an accepting server usually sends session
    # tickets at once) so that "handshake ok" means accepted.
    try:
        c.io(timeout=min(0.5, args.seconds) if args.seconds > 0 else 0.2)
        c.read_available()
    except Timeout:
        pass
    if c.closed is not None:
        raise HandshakeFailed("connection closed by server (%s)" % c.closed)
    out("handshake ok")
    start = time.monotonic()
    end = start + args.seconds
    while c.closed is None:
        left = end - time.monotonic()
        if left <= 0:
            break
        try:
            c.io(timeout=left)
        except Timeout:
            break
        c.read_available()
    if c.closed is not None:
        out("closed by server after %.1f s (%s)" % (
            time.monotonic() - start, c.closed))
        c.close()
        return 1
    c.close()
    return 0


def cmd_raw(args, c):
    got = bytearray(send_all(c, unescape(args.send)))
    if args.keep_open:
        # Read until the server closes or stays silent for --timeout.
        try:
            c.read_to_end(got)
        except Timeout:
            diag("idle timeout, giving up")
    else:
        c.shutdown_write()
        c.read_to_end(got)
    show(bytes(got))
    c.close()
    return 0 if got else 1


def exchange(args, c, msg, sent=False):
    """Send msg (unless sent with the Finished), then read until the server closes (or, with --half-close,
    after shutting our write side); if the server just goes quiet, stop
    after --timeout and keep what arrived."""
    got = bytearray(b"" if sent else send_all(c, msg))
    if args.half_close:
        c.shutdown_write()
    try:
        c.read_to_end(got)
    except Timeout:
        diag("idle timeout, giving up")
    return bytes(got)


def cmd_resume(args, c):
    msg = unescape(args.send)
    first = exchange(args, c, msg, args.with_finished)
    diag("first response: %d bytes" % len(first))
    # TLS 1.3 tickets arrive after the handshake; reading the response has
    # processed them, so the session is resumable now.
    sess = c.obj.session
    c.close()
    c2 = TLSConn(args, c.ctx, session=sess)   # same context: required
    c2.handshake(msg if args.with_finished else None)
    out("reused %s" % ("yes" if c2.obj.session_reused else "no"))
    show(exchange(args, c2, msg, args.with_finished))
    c2.close()
    return 0 if c2.obj.session_reused else 1


# -- main --------------------------------------------------------------

class Parser(argparse.ArgumentParser):
    def error(self, message):               # usage errors: exit 64, not 2
        self.print_usage(sys.stderr)
        print("%s: error: %s" % (self.prog, message), file=sys.stderr)
        sys.exit(64)


def add_common(p, suppress):
    d = (lambda v: argparse.SUPPRESS) if suppress else (lambda v: v)
    p.add_argument("--connect", metavar="HOST:PORT", default=d(None))
    p.add_argument("--cert", metavar="F", default=d(None),
                   help="client certificate (PEM)")
    p.add_argument("--key", metavar="F", default=d(None),
                   help="client key (PEM)")
    p.add_argument("--ca", metavar="F", default=d(None),
                   help="verify the server against this CA file")
    p.add_argument("--servername", metavar="NAME", default=d(None),
                   help="SNI and host name to check (default: no SNI)")
    p.add_argument("--timeout", type=float, default=d(10.0), metavar="S")
    p.add_argument("--tls", choices=["1.2", "1.3"], default=d(None),
                   help="use only this TLS version")
    p.add_argument("-v", "--verbose", action="store_true", default=d(False),
                   help="diagnostics on stderr")


def main():
    global VERBOSE
    p = Parser(description="TLS test client for the mtlslb suite.",
               epilog=__doc__.split("\n\n", 2)[2],
               formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common(p, False)
    sub = p.add_subparsers(dest="cmd", metavar="SUBCOMMAND", required=True,
                           parser_class=Parser)
    s = sub.add_parser("echo", help="round-trip N random bytes")
    s.add_argument("--bytes", type=int, required=True)
    s = sub.add_parser("halfclose", help="send N bytes, half-close, read")
    s.add_argument("--bytes", type=int, required=True)
    s = sub.add_parser("hold", help="hold the connection S seconds")
    s.add_argument("--seconds", type=float, required=True)
    s = sub.add_parser("raw", help="send STRING, half-close, print reply")
    s.add_argument("--send", required=True)
    s.add_argument("--keep-open", action="store_true",
                   help="do not half-close; read until the server closes "
                        "or is silent for --timeout")
    s = sub.add_parser("resume", help="check TLS session resumption")
    s.add_argument("--send", required=True)
    s.add_argument("--half-close", action="store_true",
                   help="shutdown(SHUT_WR) after sending (e.g. for echo)")
    s.add_argument("--with-finished", action="store_true",
                   help="send STRING in one segment with the Finished")
    for s in sub.choices.values():
        add_common(s, True)
    args = p.parse_args()
    VERBOSE = args.verbose
    if not args.connect:
        p.error("--connect HOST:PORT is required")
    if bool(args.cert) != bool(args.key):
        p.error("--cert and --key go together")

    handlers = {"echo": cmd_echo, "halfclose": cmd_halfclose,
                "hold": cmd_hold, "raw": cmd_raw, "resume": cmd_resume}
    try:
        c = TLSConn(args, make_context(args))
        c.handshake(unescape(args.send)
                    if getattr(args, "with_finished", False) else None)
        return handlers[args.cmd](args, c)
    except HandshakeFailed as e:
        out("handshake failed: %s" % e)
        return 2
    except Timeout:
        out("timeout: peer silent for %g s" % args.timeout)
        return 4


if __name__ == "__main__":
    try:
        rc = main()
    except BrokenPipeError:                 # stdout closed early (| head)
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        rc = 0
    sys.exit(rc)
