/*
 * tests/loadgen.c - a small load generator for (mutual-)TLS HTTP/1.1 servers,
 * used by `make bench` to compare mtlslb with haproxy and stunnel.
 *
 * usage: loadgen --connect HOST:PORT [--sni NAME] [--cert F --key F] [--ca F]
 *                [--concurrency N] [--duration SECS] [--requests-per-conn N]
 *                [--resume] [--path /x] [--host HEADER] [--max-requests N]
 *                [--tls 1.2|1.3] [--group p256|x25519] [--hold N] [--plain]
 *                [--rate N] [-v]
 *
 * One process, no threads, one poll() loop, every socket non-blocking, one
 * WOLFSSL_CTX.  N "slots" each run connect -> handshake -> GET -> response
 * (-> GET -> response ...) -> close -> connect ...  Responses are parsed
 * (status line, Content-Length, chunked, or read-until-close) but bodies are
 * only counted, never stored.
 *
 * Prints exactly one line on stdout:
 *   requests=N errors=N handshakes=N resumed=N seconds=S req_per_s=R
 *   hs_per_s=R mb_per_s=R p50_ms=L p99_ms=L held=N status_non2xx=N
 *   p90_ms=L p999_ms=L max_ms=L
 * requests     complete responses with a 2xx status
 * errors       failed connects/handshakes, bad or non-2xx responses,
 *              timeouts (10 s per request or per connect+handshake),
 *              connections lost, requests still unfinished at the end
 * handshakes   successful TLS handshakes (resumed ones included; a TLS 1.3
 *              handshake the server rejects right after the client's
 *              Finished, with an alert or a close before sending any data,
 *              is taken back and counted as an error)
 * mb_per_s     decrypted response bytes (headers + bodies), 10^6 bytes/s
 * p*_ms        latency of 2xx requests, first byte sent to last byte read
 *              (histogram, 10 us buckets up to 10 s)
 * held         --hold connections still open when the duration ended
 * --group      the TLS 1.3 key share the ClientHello carries: p256 (wolfSSL's
 *              default) or x25519 (what OpenSSL-based clients such as curl,
 *              and browsers, send).
 * --plain      plain HTTP over TCP, no TLS (a ceiling: straight to a
 *              backend); handshakes then counts TCP connections made,
 *              resumed stays 0 and the TLS options are not used.
 * --rate       paced load: request k (from 0, over all slots) begins no
 *              sooner than k / N s after the start (poll()'s 1 ms steps:
 *              N/1000 begin together), so servers are compared at the same
 *              load rather than each at its own pace.  A server that falls
 *              behind gets the missed ones as fast as slots allow; compare
 *              req_per_s with N.  0 (the default): each slot begins its next
 *              request as soon as the last one is done.
 * Diagnostics go to stderr with -v only.  Exit 0 when it ran, 2 on bad
 * usage, 1 when not a single TLS connection (--plain: TCP connection) could
 * be made.
 *
 * Build: cc -std=c99 -O2 -Wall -Wextra -o loadgen tests/loadgen.c -lwolfssl
 */
#define _POSIX_C_SOURCE 200809L

#include <wolfssl/options.h>
#include <wolfssl/ssl.h>
#include <wolfssl/error-ssl.h>

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define TIMEOUT_US    10000000LL    /* per request, per connect+handshake */
#define GRACE_US       2000000LL    /* wait for in-flight requests at the end */
#define BACKOFF_US       10000LL    /* before reconnecting after a failed connect */
#define HDR_MAX           16384     /* response header limit */
#define HIST_BUCKETS    1000000     /* 10 us each: up to 10 s */
#define MAX_VERBOSE_ERRORS  100

/* ------------------------------------------------------------------------ */
/* options and global counters                                              */

static struct {
    const char *connect, *sni, *cert, *key, *ca, *path, *host, *tls, *group;
    long concurrency;
    int concurrency_given;
    double duration;
    long rpc;                   /* requests per connection, 0 = keep-alive */
    int resume;
    int plain;                  /* --plain: no TLS */
    long long max_requests;
    long hold;
    long rate;                  /* --rate: requests begun per second, 0 = no pacing */
    int verbose;
} opt = { .path = "/", .concurrency = 16, .duration = 5.0, .rpc = 1 };

static struct {
    unsigned long long requests, errors, handshakes, resumed, non2xx, bytes;
    unsigned long long done;    /* complete responses, any status */
    unsigned long long begun;   /* requests begun (--rate paces these) */
    int64_t start;              /* when the run began, us */
    long inflight;
    int64_t last_done;
    int64_t max_lat;
    unsigned long verbose_errors;
} g;

static uint32_t hist[HIST_BUCKETS];
static unsigned long long hist_n;

static WOLFSSL_CTX *ctx;
static struct sockaddr_storage peer;
static socklen_t peer_len;
static char *req_keep, *req_close;
static size_t req_keep_len, req_close_len;
static int stopping;
static unsigned char rbuf[16384];

static int64_t now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static void vlog(const char *fmt, ...)
{
    va_list ap;
    if (!opt.verbose)
        return;
    va_start(ap, fmt);
    fputs("loadgen: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

/* ------------------------------------------------------------------------ */
/* slots                                                                    */

enum state {
    S_IDLE,         /* no connection; (re)connect at retry_at */
    S_CONNECTING,   /* TCP connect in progress */
    S_HANDSHAKE,    /* wolfSSL_connect in progress */
    S_READY,        /* connected, no request in flight */
    S_SEND,         /* writing a request */
    S_RECV,         /* reading its response */
    S_HELD,         /* --hold: connected, idle until the end */
    S_DONE          /* finished for good */
};

enum body { B_NONE, B_LENGTH, B_CHUNKED, B_EOF };
enum chunk { C_SIZE, C_EXT, C_DATA, C_DATA_END, C_TRAILER_BOL, C_TRAILER_LINE };

struct slot {
    int fd;
    WOLFSSL *ssl;
    enum state st;
    short events;
    int hold;               /* a --hold slot */
    int handshaked;         /* this connection completed its handshake */
    int resumed;            /* ... and it was a resumed one */
    int confirmed;          /* the server sent data after the handshake */
    int inflight;           /* a request is counted in g.inflight */
    long conn_reqs;         /* responses completed on this connection */
    int64_t deadline;       /* 0 = none */
    int64_t retry_at;
    int64_t req_start;
    const char *req;
    size_t req_len, req_off;
    int req_close;          /* the request carries Connection: close */
    WOLFSSL_SESSION *sess;  /* --resume */
    /* response parser */
    char *hdr;              /* HDR_MAX + 1, allocated on first request */
    size_t hlen;
    int in_body;
    int status;
    int close_after;        /* server will close after this response */
    enum body body;
    enum chunk cstate;
    unsigned long long remain;
    int cdigits;
};

static struct slot *slots;
static long nslots;

/* --rate: when the next request may begin, us (request k at start + k / rate) */
static int64_t pace_next(void)
{
    return g.start + (int64_t)((double)g.begun * 1e6 / (double)opt.rate);
}

static int can_start_request(void)
{
    return !stopping && (opt.max_requests == 0 ||
           g.done + (unsigned long long)g.inflight < (unsigned long long)opt.max_requests) &&
           (opt.rate == 0 || now_us() >= pace_next());
}

static void slot_close(struct slot *s, int graceful)
{
    if (s->ssl) {
        if (graceful)
            (void)wolfSSL_shutdown(s->ssl);     /* best effort close_notify */
        wolfSSL_free(s->ssl);
        s->ssl = NULL;
    }
    if (s->fd >= 0) {
        if (graceful) {
            /* Discard what has arrived (the server's close_notify) so that
             * close() sends a FIN rather than a reset. */
            char tmp[4096];
            while (recv(s->fd, tmp, sizeof tmp, 0) > 0)
                ;
        }
        close(s->fd);
        s->fd = -1;
    }
    s->events = 0;
    s->deadline = 0;
    s->conn_reqs = 0;
    s->handshaked = 0;
    s->resumed = 0;
    s->confirmed = 0;
}

static void slot_fail(struct slot *s, const char *why, int err)
{
    int had_conn = s->handshaked && s->confirmed;   /* else back off */
    g.errors++;
    if (opt.verbose && g.verbose_errors++ < MAX_VERBOSE_ERRORS) {
        if (err) {
            char eb[WOLFSSL_MAX_ERROR_SZ];
            wolfSSL_ERR_error_string_n((unsigned long)err, eb, sizeof eb);
            vlog("slot %ld: %s (%d: %s)", (long)(s - slots), why, err, eb);
        } else {
            vlog("slot %ld: %s", (long)(s - slots), why);
        }
        if (g.verbose_errors == MAX_VERBOSE_ERRORS)
            vlog("further errors not shown");
    }
    if (s->inflight) {
        s->inflight = 0;
        g.inflight--;
    }
    if (s->handshaked && !s->confirmed) {
        /* In TLS 1.3 the client finishes first; a server that then rejects
         * the certificate or the session sends an alert or closes.  That
         * handshake did not succeed: take it back. */
        g.handshakes--;
        if (s->resumed)
            g.resumed--;
    }
    if (s->resumed && s->conn_reqs == 0 && s->sess) {
        /* The server took the session and then dropped the connection
         * (a TLS 1.3 server can refuse a resumption only after the client
         * has finished): forget it, the next handshake is a full one. */
        wolfSSL_SESSION_free(s->sess);
        s->sess = NULL;
    }
    slot_close(s, 0);
    s->st = stopping ? S_DONE : S_IDLE;
    s->retry_at = now_us() + (had_conn ? 0 : BACKOFF_US);
}

/* ------------------------------------------------------------------------ */
/* response parser                                                          */

static int ci_prefix(const char *line, const char *name)
{
    size_t n = strlen(name);
    return strncasecmp(line, name, n) == 0;
}

static int ci_contains(const char *hay, const char *needle)
{
    size_t n = strlen(needle);
    for (; *hay; hay++)
        if (strncasecmp(hay, needle, n) == 0)
            return 1;
    return 0;
}

static void parser_reset(struct slot *s)
{
    s->hlen = 0;
    s->in_body = 0;
    s->status = 0;
    s->close_after = 0;
    s->body = B_NONE;
    s->cstate = C_SIZE;
    s->remain = 0;
    s->cdigits = 0;
}

/* Parse the header block in s->hdr.  0 ok, -1 malformed. */
static int parse_header(struct slot *s)
{
    char *p = s->hdr, *eol;
    int minor, keep_alive = 0, chunked = 0, have_len = 0;
    unsigned long long len = 0;

    s->hdr[s->hlen] = '\0';
    if (strncmp(p, "HTTP/1.", 7) != 0 || (p[7] != '0' && p[7] != '1') || p[8] != ' ')
        return -1;
    minor = p[7] - '0';
    if (p[9] < '1' || p[9] > '5' || p[10] < '0' || p[10] > '9' ||
        p[11] < '0' || p[11] > '9' || (p[12] != ' ' && p[12] != '\r' && p[12] != '\n'))
        return -1;
    s->status = (p[9] - '0') * 100 + (p[10] - '0') * 10 + (p[11] - '0');

    for (p = strchr(p, '\n'); p && *++p; p = eol) {
        char *v;
        eol = strchr(p, '\n');
        if (!eol)
            break;
        *eol = '\0';
        if (eol > p && eol[-1] == '\r')
            eol[-1] = '\0';
        v = strchr(p, ':');
        if (v) {
            v++;
            while (*v == ' ' || *v == '\t')
                v++;
            if (ci_prefix(p, "content-length:")) {
                char *end;
                if (*v < '0' || *v > '9')
                    return -1;
                errno = 0;
                len = strtoull(v, &end, 10);
                if (errno || (*end && *end != ' ' && *end != '\t'))
                    return -1;
                have_len = 1;
            } else if (ci_prefix(p, "transfer-encoding:")) {
                if (ci_contains(v, "chunked"))
                    chunked = 1;
            } else if (ci_prefix(p, "connection:")) {
                if (ci_contains(v, "close"))
                    s->close_after = 1;
                if (ci_contains(v, "keep-alive"))
                    keep_alive = 1;
            }
        }
        *eol = '\n';
    }
    if (minor == 0 && !keep_alive)
        s->close_after = 1;

    if ((s->status >= 100 && s->status < 200) || s->status == 204 || s->status == 304) {
        s->body = B_NONE;
    } else if (chunked) {
        s->body = B_CHUNKED;
        s->cstate = C_SIZE;
        s->remain = 0;
        s->cdigits = 0;
    } else if (have_len) {
        s->body = len ? B_LENGTH : B_NONE;
        s->remain = len;
    } else {
        s->body = B_EOF;
        s->close_after = 1;
    }
    return 0;
}

static int hexval(int c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/*
 * Feed response bytes.  Returns 0 = need more, 1 = response complete (and no
 * byte left over), -1 = malformed.
 */
static int parse_feed(struct slot *s, const unsigned char *p, size_t n)
{
    size_t i = 0;

    while (i < n) {
        if (!s->in_body) {
            /* Collect the header block up to an empty line. */
            int done = 0;
            while (i < n) {
                char c = (char)p[i++];
                if (s->hlen >= HDR_MAX)
                    return -1;
                s->hdr[s->hlen++] = c;
                if (c == '\n' && s->hlen >= 2 &&
                    (s->hdr[s->hlen - 2] == '\n' ||
                     (s->hlen >= 3 && s->hdr[s->hlen - 2] == '\r' &&
                      s->hdr[s->hlen - 3] == '\n'))) {
                    done = 1;
                    break;
                }
            }
            if (!done)
                return 0;
            if (parse_header(s) < 0)
                return -1;
            if (s->status >= 100 && s->status < 200) {
                if (s->status == 101)
                    return -1;              /* no upgrade was asked for */
                parser_reset(s);            /* interim response: skip it */
                continue;
            }
            s->in_body = 1;
            if (s->body == B_NONE)
                return i == n ? 1 : -1;
            continue;
        }

        switch (s->body) {
        case B_NONE:
            return -1;                      /* bytes after a complete response */
        case B_EOF:
            return 0;                       /* everything counts until EOF */
        case B_LENGTH: {
            size_t take = n - i;
            if ((unsigned long long)take > s->remain)
                return -1;
            s->remain -= take;
            return s->remain == 0 ? 1 : 0;
        }
        case B_CHUNKED:
            break;
        }

        /* chunked */
        if (s->cstate == C_DATA) {
            size_t take = n - i;
            if ((unsigned long long)take > s->remain)
                take = (size_t)s->remain;
            s->remain -= take;
            i += take;
            if (s->remain == 0)
                s->cstate = C_DATA_END;
            continue;
        }
        {
            int c = p[i++];
            switch (s->cstate) {
            case C_SIZE: {
                int h = hexval(c);
                if (h >= 0) {
                    if (s->remain >> 56)
                        return -1;          /* absurd chunk size */
                    s->remain = s->remain * 16 + (unsigned)h;
                    s->cdigits++;
                    break;
                }
                if (!s->cdigits)
                    return -1;
                if (c != '\n') {
                    s->cstate = C_EXT;      /* ";ext", "\r", spaces */
                    break;
                }
            }
            /* fall through: end of the size line */
            /* FALLTHROUGH */
            case C_EXT:
                if (c != '\n')
                    break;
                if (s->remain == 0) {
                    s->cstate = C_TRAILER_BOL;
                } else {
                    s->cstate = C_DATA;
                }
                break;
            case C_DATA_END:
                if (c == '\r')
                    break;
                if (c != '\n')
                    return -1;
                s->cstate = C_SIZE;
                s->remain = 0;
                s->cdigits = 0;
                break;
            case C_TRAILER_BOL:
                if (c == '\r')
                    break;
                if (c == '\n')
                    return i == n ? 1 : -1; /* end of the message */
                s->cstate = C_TRAILER_LINE;
                break;
            case C_TRAILER_LINE:
                if (c == '\n')
                    s->cstate = C_TRAILER_BOL;
                break;
            case C_DATA:
                break;
            }
        }
    }
    return 0;
}

/* ------------------------------------------------------------------------ */
/* the state machine                                                        */

static void begin_request(struct slot *s)
{
    int last = opt.rpc > 0 && s->conn_reqs + 1 >= opt.rpc;
    if (!s->hdr) {
        s->hdr = malloc(HDR_MAX + 1);
        if (!s->hdr) {
            fprintf(stderr, "loadgen: out of memory\n");
            exit(1);
        }
    }
    s->req = last ? req_close : req_keep;
    s->req_len = last ? req_close_len : req_keep_len;
    s->req_off = 0;
    s->req_close = last;
    parser_reset(s);
    s->inflight = 1;
    g.inflight++;
    g.begun++;
    s->req_start = now_us();
    s->deadline = s->req_start + TIMEOUT_US;
    s->st = S_SEND;
}

static void response_done(struct slot *s)
{
    int64_t t = now_us(), lat = t - s->req_start;

    s->inflight = 0;
    g.inflight--;
    g.done++;
    g.last_done = t;
    s->deadline = 0;
    s->conn_reqs++;
    if (s->status >= 200 && s->status < 300) {
        long b = (long)(lat / 10);
        g.requests++;
        if (b >= HIST_BUCKETS)
            b = HIST_BUCKETS - 1;
        if (b < 0)
            b = 0;
        hist[b]++;
        hist_n++;
        if (lat > g.max_lat)
            g.max_lat = lat;
    } else {
        g.non2xx++;
        g.errors++;
        if (opt.verbose && g.verbose_errors++ < MAX_VERBOSE_ERRORS)
            vlog("slot %ld: status %d", (long)(s - slots), s->status);
    }
    if (opt.resume && s->conn_reqs == 1) {
        /* TLS 1.3 tickets come after the handshake: take the session now. */
        WOLFSSL_SESSION *ns = wolfSSL_get1_session(s->ssl);
        if (ns) {
            if (s->sess)
                wolfSSL_SESSION_free(s->sess);
            s->sess = ns;
        }
    }
    if (s->close_after || s->req_close || (opt.rpc > 0 && s->conn_reqs >= opt.rpc)) {
        slot_close(s, 1);
        s->st = stopping ? S_DONE : S_IDLE;
        s->retry_at = 0;
    } else {
        s->st = S_READY;
    }
}

/* Set the poll events for a wolfSSL WANT_* error; 0 if it was another error. */
static int want(struct slot *s, int err)
{
    if (err == WOLFSSL_ERROR_WANT_READ) {
        s->events = POLLIN;
        return 1;
    }
    if (err == WOLFSSL_ERROR_WANT_WRITE) {
        s->events = POLLOUT;
        return 1;
    }
    return 0;
}

/* --plain: the socket calls, with wolfSSL's results: > 0 bytes, else <= 0
 * and io_error() says why (WANT_READ/WANT_WRITE, ZERO_RETURN on EOF). */
static int plain_err;

static int io_write(struct slot *s, const void *buf, int len)
{
    ssize_t r;
    if (!opt.plain)
        return wolfSSL_write(s->ssl, buf, len);
    r = send(s->fd, buf, (size_t)len, MSG_NOSIGNAL);
    if (r > 0)
        return (int)r;
    plain_err = r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
                ? WOLFSSL_ERROR_WANT_WRITE : SOCKET_ERROR_E;
    return -1;
}

static int io_read(struct slot *s, void *buf, int len)
{
    ssize_t r;
    if (!opt.plain)
        return wolfSSL_read(s->ssl, buf, len);
    r = recv(s->fd, buf, (size_t)len, 0);
    if (r > 0)
        return (int)r;
    if (r == 0)
        plain_err = WOLFSSL_ERROR_ZERO_RETURN;
    else
        plain_err = errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR
                    ? WOLFSSL_ERROR_WANT_READ : SOCKET_ERROR_E;
    return (int)r;
}

static int io_error(struct slot *s, int r)
{
    return opt.plain ? plain_err : wolfSSL_get_error(s->ssl, r);
}

/* The TCP connection is up: make its WOLFSSL.  0 ok, -1 failed (counted). */
static int ssl_attach(struct slot *s)
{
    if (opt.plain) {
        s->st = S_HANDSHAKE;        /* nothing to do there */
        return 0;
    }
    s->ssl = wolfSSL_new(ctx);
    if (!s->ssl) {
        slot_fail(s, "wolfSSL_new failed", 0);
        return -1;
    }
    if (wolfSSL_set_fd(s->ssl, s->fd) != WOLFSSL_SUCCESS) {
        slot_fail(s, "wolfSSL_set_fd failed", 0);
        return -1;
    }
    if (opt.ca && opt.sni)
        (void)wolfSSL_check_domain_name(s->ssl, opt.sni);
    if (opt.resume && s->sess)
        (void)wolfSSL_set_session(s->ssl, s->sess);
    if (opt.group && wolfSSL_UseKeyShare(s->ssl, strcmp(opt.group, "x25519") == 0 ?
                                         WOLFSSL_ECC_X25519 : WOLFSSL_ECC_SECP256R1) !=
                     WOLFSSL_SUCCESS) {
        slot_fail(s, "wolfSSL_UseKeyShare failed", 0);
        return -1;
    }
    s->st = S_HANDSHAKE;
    return 0;
}

/* Run a slot as far as it goes without blocking. */
static void step(struct slot *s, short revents)
{
    for (;;) {
        switch (s->st) {
        case S_IDLE:
        case S_DONE:
            return;

        case S_CONNECTING: {
            int soerr = 0;
            socklen_t sl = sizeof soerr;
            if (!revents)
                return;
            if (getsockopt(s->fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) < 0)
                soerr = errno;
            if (soerr) {
                if (soerr == EINPROGRESS || soerr == EALREADY)
                    return;
                slot_fail(s, strerror(soerr), 0);
                return;
            }
            if (ssl_attach(s) < 0)
                return;
            break;
        }

        case S_HANDSHAKE: {
            int r = opt.plain ? WOLFSSL_SUCCESS : wolfSSL_connect(s->ssl);
            if (r != WOLFSSL_SUCCESS) {
                int err = wolfSSL_get_error(s->ssl, r);
                if (!want(s, err))
                    slot_fail(s, "handshake failed", err);
                return;
            }
            g.handshakes++;
            if (g.handshakes == 1 && !opt.plain) {
                const char *kx = wolfSSL_get_curve_name(s->ssl);
                vlog("first handshake: %s, %s, key exchange %s", wolfSSL_get_version(s->ssl),
                     wolfSSL_get_cipher(s->ssl), kx ? kx : "none");
            }
            if (!opt.plain && wolfSSL_session_reused(s->ssl)) {
                g.resumed++;
                s->resumed = 1;
            }
            s->handshaked = 1;
            if (opt.plain)
                s->confirmed = 1;   /* no handshake a server could refuse */
            s->deadline = 0;
            if (s->hold) {
                s->st = S_HELD;
                s->events = POLLIN;
                break;      /* read whatever came with the handshake */
            }
            s->st = S_READY;
            break;
        }

        case S_READY:
            if (can_start_request()) {
                begin_request(s);
                break;
            }
            if (stopping) {
                slot_close(s, 1);
                s->st = S_DONE;
            }
            s->events = 0;
            return;

        case S_SEND: {
            int r = io_write(s, s->req + s->req_off, (int)(s->req_len - s->req_off));
            if (r > 0) {
                s->req_off += (size_t)r;
                if (s->req_off >= s->req_len)
                    s->st = S_RECV;
                break;
            }
            r = io_error(s, r);
            if (!want(s, r))
                slot_fail(s, "write failed", r);
            return;
        }

        case S_RECV: {
            /* Read until WANT_READ: that also drains wolfSSL_pending(). */
            int r = io_read(s, rbuf, (int)sizeof rbuf);
            if (r > 0) {
                int pr;
                g.bytes += (unsigned long long)r;
                s->confirmed = 1;
                pr = parse_feed(s, rbuf, (size_t)r);
                if (pr < 0) {
                    slot_fail(s, "bad response", 0);
                    return;
                }
                if (pr > 0)
                    response_done(s);
                break;
            }
            r = io_error(s, r);
            if (want(s, r))
                return;
            if ((r == WOLFSSL_ERROR_ZERO_RETURN || r == SOCKET_PEER_CLOSED_E) &&
                s->in_body && s->body == B_EOF) {
                response_done(s);
                break;
            }
            slot_fail(s, r == WOLFSSL_ERROR_ZERO_RETURN || r == SOCKET_PEER_CLOSED_E
                         ? "connection closed before the response ended"
                         : "read failed", r);
            return;
        }

        case S_HELD: {
            int r = io_read(s, rbuf, (int)sizeof rbuf);
            if (r > 0) {
                s->confirmed = 1;
                break;              /* unexpected, ignored */
            }
            r = io_error(s, r);
            if (!want(s, r))
                slot_fail(s, "held connection lost", r);
            return;
        }
        }
    }
}

static void start_connect(struct slot *s)
{
    int fd, one = 1, r;

    s->deadline = now_us() + TIMEOUT_US;
    fd = socket(peer.ss_family, SOCK_STREAM, 0);
    if (fd < 0) {
        slot_fail(s, strerror(errno), 0);
        return;
    }
    s->fd = fd;
    if (fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK) < 0) {
        slot_fail(s, strerror(errno), 0);
        return;
    }
    (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    r = connect(fd, (struct sockaddr *)&peer, peer_len);
    if (r < 0 && errno != EINPROGRESS && errno != EINTR) {
        slot_fail(s, strerror(errno), 0);
        return;
    }
    s->st = S_CONNECTING;
    s->events = POLLOUT;
    if (r == 0)
        step(s, POLLOUT);
}

/* ------------------------------------------------------------------------ */
/* setup, main loop, report                                                 */

static void usage(FILE *f)
{
    fputs("usage: loadgen --connect HOST:PORT [--sni NAME] [--cert F --key F] [--ca F]\n"
          "               [--concurrency N (16)] [--duration SECS (5)]\n"
          "               [--requests-per-conn N (1; 0 = keep-alive)] [--resume]\n"
          "               [--path /x] [--host HEADER] [--max-requests N]\n"
          "               [--tls 1.2|1.3] [--group p256|x25519] [--hold N] [--plain]\n"
          "               [--rate N (requests begun per second; 0 = unpaced)] [-v]\n", f);
}

static void bad_usage(const char *fmt, const char *arg)
{
    fputs("loadgen: ", stderr);
    fprintf(stderr, fmt, arg);
    fputc('\n', stderr);
    usage(stderr);
    exit(2);
}

static long long num_arg(const char *name, const char *v, long long min, long long max)
{
    char *end;
    long long x;
    errno = 0;
    x = strtoll(v, &end, 10);
    if (errno || end == v || *end || x < min || x > max)
        bad_usage("bad number for %s", name);
    return x;
}

static int is_value_option(const char *name)
{
    static const char *const names[] = {
        "--connect", "--sni", "--cert", "--key", "--ca", "--path", "--host",
        "--tls", "--group", "--concurrency", "--requests-per-conn", "--max-requests",
        "--hold", "--duration", "--rate"
    };
    size_t i;
    for (i = 0; i < sizeof names / sizeof names[0]; i++)
        if (strcmp(name, names[i]) == 0)
            return 1;
    return 0;
}

static void parse_args(int argc, char **argv)
{
    int i;
    for (i = 1; i < argc; i++) {
        char *a = argv[i], *val = NULL, *eq;
        char name[64];
        int flag;

        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            usage(stdout);
            exit(0);
        }
        if (strcmp(a, "-v") == 0 || strcmp(a, "--verbose") == 0) {
            opt.verbose = 1;
            continue;
        }
        if (strncmp(a, "--", 2) != 0)
            bad_usage("unexpected argument %s", a);
        eq = strchr(a, '=');
        if (eq) {
            if ((size_t)(eq - a) >= sizeof name)
                bad_usage("unknown option %s", a);
            memcpy(name, a, (size_t)(eq - a));
            name[eq - a] = '\0';
            val = eq + 1;
        } else {
            if (strlen(a) >= sizeof name)
                bad_usage("unknown option %s", a);
            strcpy(name, a);
        }
        flag = strcmp(name, "--resume") == 0 || strcmp(name, "--plain") == 0;
        if (flag) {
            if (val)
                bad_usage("%s takes no value", name);
            if (strcmp(name, "--plain") == 0)
                opt.plain = 1;
            else
                opt.resume = 1;
            continue;
        }
        if (!is_value_option(name))
            bad_usage("unknown option %s", name);
        if (!val) {
            if (i + 1 >= argc)
                bad_usage("%s needs a value", name);
            val = argv[++i];
        }
        if (strcmp(name, "--connect") == 0) opt.connect = val;
        else if (strcmp(name, "--sni") == 0) opt.sni = val;
        else if (strcmp(name, "--cert") == 0) opt.cert = val;
        else if (strcmp(name, "--key") == 0) opt.key = val;
        else if (strcmp(name, "--ca") == 0) opt.ca = val;
        else if (strcmp(name, "--path") == 0) opt.path = val;
        else if (strcmp(name, "--host") == 0) opt.host = val;
        else if (strcmp(name, "--tls") == 0) opt.tls = val;
        else if (strcmp(name, "--group") == 0) opt.group = val;
        else if (strcmp(name, "--concurrency") == 0) {
            opt.concurrency = (long)num_arg(name, val, 0, 1000000);
            opt.concurrency_given = 1;
        } else if (strcmp(name, "--requests-per-conn") == 0)
            opt.rpc = (long)num_arg(name, val, 0, 1000000000);
        else if (strcmp(name, "--max-requests") == 0)
            opt.max_requests = num_arg(name, val, 0, (long long)1 << 60);
        else if (strcmp(name, "--hold") == 0)
            opt.hold = (long)num_arg(name, val, 0, 1000000);
        else if (strcmp(name, "--rate") == 0)
            opt.rate = (long)num_arg(name, val, 0, 100000000);
        else if (strcmp(name, "--duration") == 0) {
            char *end;
            opt.duration = strtod(val, &end);
            if (end == val || *end || !(opt.duration > 0) || opt.duration > 1e7)
                bad_usage("bad number for %s", name);
        } else
            bad_usage("unknown option %s", name);
    }
    if (!opt.connect)
        bad_usage("%s is required", "--connect");
    if (!opt.cert != !opt.key)
        bad_usage("%s", "--cert and --key go together");
    if (opt.tls && strcmp(opt.tls, "1.2") != 0 && strcmp(opt.tls, "1.3") != 0)
        bad_usage("--tls must be 1.2 or 1.3, not %s", opt.tls);
    if (opt.group && strcmp(opt.group, "p256") != 0 && strcmp(opt.group, "x25519") != 0)
        bad_usage("--group must be p256 or x25519, not %s", opt.group);
    if (opt.plain)
        opt.resume = 0;
    if (opt.hold && !opt.concurrency_given)
        opt.concurrency = 0;
    if (opt.concurrency == 0 && opt.hold == 0)
        bad_usage("%s", "nothing to do: --concurrency 0 without --hold");
    if (opt.path[0] != '/' && opt.path[0] != '*')
        bad_usage("--path must start with '/': %s", opt.path);
    if (!opt.host)
        opt.host = opt.sni ? opt.sni : "localhost";
}

static void resolve(void)
{
    char host[256];
    const char *h = opt.connect, *port, *colon;
    size_t hl;
    struct addrinfo hints, *res;
    int r;

    if (*h == '[') {
        const char *rb = strchr(h, ']');
        if (!rb || rb[1] != ':')
            bad_usage("bad --connect %s (want HOST:PORT or [IPV6]:PORT)", opt.connect);
        hl = (size_t)(rb - h - 1);
        h++;
        port = rb + 2;
    } else {
        colon = strrchr(h, ':');
        if (!colon)
            bad_usage("bad --connect %s (want HOST:PORT or [IPV6]:PORT)", opt.connect);
        hl = (size_t)(colon - h);
        port = colon + 1;
    }
    if (hl == 0 || hl >= sizeof host || !*port)
        bad_usage("bad --connect %s (want HOST:PORT or [IPV6]:PORT)", opt.connect);
    memcpy(host, h, hl);
    host[hl] = '\0';
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    r = getaddrinfo(host, port, &hints, &res);
    if (r != 0) {
        fprintf(stderr, "loadgen: %s: %s\n", opt.connect, gai_strerror(r));
        exit(2);
    }
    memcpy(&peer, res->ai_addr, res->ai_addrlen);
    peer_len = (socklen_t)res->ai_addrlen;
    freeaddrinfo(res);
}

static void setup_tls(void)
{
    WOLFSSL_METHOD *m;

    if (wolfSSL_Init() != WOLFSSL_SUCCESS) {
        fprintf(stderr, "loadgen: wolfSSL_Init failed\n");
        exit(1);
    }
    if (opt.tls && strcmp(opt.tls, "1.2") == 0)
        m = wolfTLSv1_2_client_method();
    else if (opt.tls && strcmp(opt.tls, "1.3") == 0)
        m = wolfTLSv1_3_client_method();
    else
        m = wolfSSLv23_client_method();
    ctx = m ? wolfSSL_CTX_new(m) : NULL;
    if (!ctx) {
        fprintf(stderr, "loadgen: wolfSSL_CTX_new failed\n");
        exit(1);
    }
    if (!opt.tls)
        (void)wolfSSL_CTX_SetMinVersion(ctx, WOLFSSL_TLSV1_2);
    /* Each flight in one write (certificate, CertificateVerify, Finished),
     * as OpenSSL-based clients such as curl send it (a buffering BIO during
     * the handshake), not one segment per message: each segment more can
     * wake the server under test once more. */
    (void)wolfSSL_CTX_set_group_messages(ctx);
    if (opt.cert) {
        if (wolfSSL_CTX_use_certificate_chain_file(ctx, opt.cert) != WOLFSSL_SUCCESS) {
            fprintf(stderr, "loadgen: cannot load certificate %s\n", opt.cert);
            exit(2);
        }
        if (wolfSSL_CTX_use_PrivateKey_file(ctx, opt.key, WOLFSSL_FILETYPE_PEM)
                != WOLFSSL_SUCCESS) {
            fprintf(stderr, "loadgen: cannot load key %s\n", opt.key);
            exit(2);
        }
    }
    if (opt.ca) {
        if (wolfSSL_CTX_load_verify_locations(ctx, opt.ca, NULL) != WOLFSSL_SUCCESS) {
            fprintf(stderr, "loadgen: cannot load CA %s\n", opt.ca);
            exit(2);
        }
        wolfSSL_CTX_set_verify(ctx, WOLFSSL_VERIFY_PEER, NULL);
    } else {
        wolfSSL_CTX_set_verify(ctx, WOLFSSL_VERIFY_NONE, NULL);
    }
#ifdef HAVE_SNI
    if (opt.sni && wolfSSL_CTX_UseSNI(ctx, WOLFSSL_SNI_HOST_NAME, opt.sni,
                                      (unsigned short)strlen(opt.sni)) != WOLFSSL_SUCCESS) {
        fprintf(stderr, "loadgen: cannot set SNI %s\n", opt.sni);
        exit(2);
    }
#else
    if (opt.sni) {
        fprintf(stderr, "loadgen: this wolfSSL has no SNI (--enable-sni)\n");
        exit(2);
    }
#endif
#ifdef HAVE_SESSION_TICKET
    if (opt.resume)
        (void)wolfSSL_CTX_UseSessionTicket(ctx);
#endif
}

static char *make_request(int close_it, size_t *len)
{
    size_t n = strlen(opt.path) + strlen(opt.host) + 64;
    char *r = malloc(n);
    int k;
    if (!r) {
        fprintf(stderr, "loadgen: out of memory\n");
        exit(1);
    }
    k = snprintf(r, n, "GET %s HTTP/1.1\r\nHost: %s\r\n%s\r\n", opt.path, opt.host,
                 close_it ? "Connection: close\r\n" : "");
    *len = (size_t)k;
    return r;
}

static void raise_nofile(rlim_t need)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur >= need)
        return;
    rl.rlim_cur = (rl.rlim_max == RLIM_INFINITY || rl.rlim_max >= need) ? need : rl.rlim_max;
    (void)setrlimit(RLIMIT_NOFILE, &rl);
    if (rl.rlim_cur < need)
        vlog("open files limited to %lu, %lu wanted",
             (unsigned long)rl.rlim_cur, (unsigned long)need);
}

static double percentile(double p)
{
    unsigned long long target, cum = 0;
    long i;
    if (!hist_n)
        return 0.0;
    target = (unsigned long long)(p * (double)hist_n);
    if ((double)target < p * (double)hist_n)
        target++;
    if (target == 0)
        target = 1;
    for (i = 0; i < HIST_BUCKETS; i++) {
        cum += hist[i];
        if (cum >= target)
            return (double)(i + 1) * 0.01;  /* bucket upper edge, ms */
    }
    return (double)HIST_BUCKETS * 0.01;
}

int main(int argc, char **argv)
{
    struct pollfd *pfd;
    long *pidx;
    int64_t start, end, stop_time = 0, grace_end = 0;
    long i, held = 0;
    struct sigaction sa;
    double secs;

    parse_args(argc, argv);
    resolve();

    memset(&sa, 0, sizeof sa);
    sa.sa_handler = SIG_IGN;
    sigaction(SIGPIPE, &sa, NULL);

    setup_tls();
    req_keep = make_request(0, &req_keep_len);
    req_close = make_request(1, &req_close_len);

    nslots = opt.hold + opt.concurrency;
    raise_nofile((rlim_t)nslots + 32);
    slots = calloc((size_t)nslots, sizeof *slots);
    pfd = calloc((size_t)nslots, sizeof *pfd);
    pidx = calloc((size_t)nslots, sizeof *pidx);
    if (!slots || !pfd || !pidx) {
        fprintf(stderr, "loadgen: out of memory\n");
        return 1;
    }
    for (i = 0; i < nslots; i++) {
        slots[i].fd = -1;
        slots[i].st = S_IDLE;
        slots[i].hold = i < opt.hold;
    }
    vlog("%s: %ld slots (%ld held), %.2f s, %ld requests per connection%s",
         opt.connect, nslots, opt.hold, opt.duration, opt.rpc,
         opt.resume ? ", resume" : "");

    start = g.start = now_us();
    end = start + (int64_t)(opt.duration * 1e6);

    for (;;) {
        int64_t now = now_us(), tmo;
        int nfds = 0, n, ms;

        if (!stopping && (now >= end ||
                          (opt.max_requests && g.done >= (unsigned long long)opt.max_requests))) {
            long pending = 0;
            stopping = 1;
            stop_time = now;
            grace_end = now + GRACE_US;
            for (i = 0; i < nslots; i++) {
                struct slot *s = &slots[i];
                if (s->st == S_HELD)
                    held++;
                if (s->st == S_CONNECTING || s->st == S_HANDSHAKE)
                    pending++;
                if (s->inflight)
                    continue;       /* finishes, then closes (S_READY) */
                slot_close(s, s->st == S_HELD || s->st == S_READY);
                s->st = S_DONE;
            }
            if (pending)
                vlog("%ld connections were still connecting or in their handshake", pending);
        }
        if (stopping && g.inflight == 0)
            break;
        if (stopping && now >= grace_end) {
            vlog("%ld requests unfinished after the grace period", g.inflight);
            g.errors += (unsigned long long)g.inflight;
            break;
        }

        tmo = stopping ? grace_end : end;
        for (i = 0; i < nslots; i++) {
            struct slot *s = &slots[i];
            if (s->deadline && now >= s->deadline) {
                s->confirmed = 1;   /* a timeout is not a refusal */
                slot_fail(s, s->inflight ? "request timed out" : "connect/handshake timed out", 0);
            }
            if (s->st == S_IDLE && !stopping) {
                if (now >= s->retry_at)
                    start_connect(s);
                else if (s->retry_at < tmo)
                    tmo = s->retry_at;
            }
            if (s->st == S_READY) {
                step(s, 0);
                if (s->st == S_READY && opt.rate && !stopping) {
                    int64_t next = pace_next();
                    if (next < tmo)
                        tmo = next;         /* paced: wake when the next may begin */
                }
            }
            if (s->st == S_IDLE && !stopping && s->retry_at < tmo)
                tmo = s->retry_at;
            if (s->fd >= 0 && s->events) {
                pfd[nfds].fd = s->fd;
                pfd[nfds].events = s->events;
                pfd[nfds].revents = 0;
                pidx[nfds] = i;
                nfds++;
                if (s->deadline && s->deadline < tmo)
                    tmo = s->deadline;
            }
        }
        now = now_us();
        if (tmo <= now)
            ms = 0;
        else if (tmo - now > 1000000)
            ms = 1000;
        else
            ms = (int)((tmo - now + 999) / 1000);
        n = poll(pfd, (nfds_t)nfds, ms);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            perror("loadgen: poll");
            return 1;
        }
        for (i = 0; n > 0 && i < nfds; i++) {
            if (pfd[i].revents) {
                n--;
                step(&slots[pidx[i]], pfd[i].revents);
            }
        }
    }

    for (i = 0; i < nslots; i++) {
        slot_close(&slots[i], 0);
        if (slots[i].sess)
            wolfSSL_SESSION_free(slots[i].sess);
        free(slots[i].hdr);
    }
    {
        int64_t last = g.last_done > stop_time ? g.last_done : stop_time;
        secs = (double)(last - start) / 1e6;
        if (secs <= 0)
            secs = 1e-6;
    }
    if (opt.hold)
        vlog("held %ld", held);
    printf("requests=%llu errors=%llu handshakes=%llu resumed=%llu seconds=%.2f "
           "req_per_s=%.1f hs_per_s=%.1f mb_per_s=%.2f p50_ms=%.2f p99_ms=%.2f "
           "held=%ld status_non2xx=%llu p90_ms=%.2f p999_ms=%.2f max_ms=%.2f\n",
           g.requests, g.errors, g.handshakes, g.resumed, secs,
           (double)g.requests / secs, (double)g.handshakes / secs,
           (double)g.bytes / 1e6 / secs, percentile(0.50), percentile(0.99),
           held, g.non2xx, percentile(0.90), percentile(0.999),
           (double)g.max_lat / 1000.0);
    fflush(stdout);
    free(slots);
    free(pfd);
    free(pidx);
    free(req_keep);
    free(req_close);
    wolfSSL_CTX_free(ctx);
    wolfSSL_Cleanup();
    return g.handshakes == 0 ? 1 : 0;
}
