/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * mtlslb - a mutual-TLS load balancer for edge boxes.
 *
 * One file, one dependency (wolfSSL), one poll() loop, no threads.  The
 * sections below follow the flow of a byte, top to bottom; a section may call
 * the ones above it, never the ones below:
 *
 *   util & logging            log_, now_ms, small helpers
 *   config model & parser     cfg_: text -> struct mtlslb_config (mtlslb.h)
 *   TLS                       tls_: contexts, SNI, CA/CRL, client identity
 *   upstreams                 up_: server choice, back-off
 *   connections               conn_, relay_: accept, handshake, connect, relay
 *   stats                     stats_: counters to the log (SIGUSR1)
 *   event loop                loop_: pollfd slots, timer heap, dispatch
 *   main & signals
 */
#define _POSIX_C_SOURCE 200809L
#define _DEFAULT_SOURCE                 /* setgroups() */

#include <wolfssl/options.h>
#include <wolfssl/ssl.h>
#include <wolfssl/error-ssl.h>
#include <wolfssl/wolfcrypt/error-crypt.h>
#include <wolfssl/wolfcrypt/sha256.h>
#include <wolfssl/wolfcrypt/aes.h>
#if defined(HAVE_CHACHA) && defined(HAVE_POLY1305)
#include <wolfssl/wolfcrypt/chacha20_poly1305.h>
#endif
#include <wolfssl/openssl/ec.h>
#include <wolfssl/openssl/evp.h>
#include <wolfssl/openssl/pem.h>
#include <wolfssl/openssl/rsa.h>

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pwd.h>
#include <grp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <sys/types.h>
#include <sys/wait.h>
#ifdef __linux__
#include <sys/prctl.h>
#endif
#include <syslog.h>
#include <time.h>
#include <unistd.h>

#include "mtlslb.h"

/* What mtlslb needs from wolfSSL, each with the configure flag that gives it. */
#if !defined(HAVE_SNI)
#error "mtlslb needs a wolfSSL built with --enable-sni"
#endif
#if !defined(OPENSSL_EXTRA)
#error "mtlslb needs a wolfSSL built with --enable-opensslextra (or --enable-opensslall)"
#endif
#if !defined(HAVE_CRL)
#error "mtlslb needs a wolfSSL built with --enable-crl"
#endif
#if !defined(HAVE_SESSION_TICKET)
#error "mtlslb needs a wolfSSL built with --enable-session-ticket"
#endif
#if !defined(OPENSSL_ALL) && !defined(HAVE_STUNNEL) && !defined(WOLFSSL_NGINX) && \
    !defined(WOLFSSL_HAPROXY) && !defined(HAVE_LIGHTY)
#error "mtlslb needs wolfSSL's servername callback: --enable-opensslall, or --enable-opensslextra with -DHAVE_STUNNEL"
#endif

/* ======================================================================
 * util & logging
 *
 * Owns the log level and the clock.  Everything below may call it.
 * ====================================================================== */

static enum mtlslb_level log_level = MTLSLB_LOG_INFO;
static unsigned worker_index;           /* `workers N`: this process's number, 0.. */
static int bind_reuseport;              /* `workers N`: every worker binds every address */
static int log_syslog;                  /* `log syslog`: daemon facility, ident mtlslb */
static const char *const log_names[] = { "error", "warn", "info", "debug" };

static void log_to_syslog(int on)
{
    if (on && !log_syslog)
        openlog("mtlslb", LOG_PID | LOG_NDELAY, LOG_DAEMON);
    else if (!on && log_syslog)
        closelog();
    log_syslog = on;
}

static void log_msg(enum mtlslb_level lvl, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;

static void log_msg(enum mtlslb_level lvl, const char *fmt, ...)
{
    char buf[2048];
    struct timespec ts;
    struct tm tm;
    size_t n, off = 0;
    va_list ap;

    if (lvl > log_level)
        return;
    if (log_syslog) {
        static const int prio[] = { LOG_ERR, LOG_WARNING, LOG_INFO, LOG_DEBUG };
        va_start(ap, fmt);
        vsnprintf(buf, sizeof buf, fmt, ap);
        va_end(ap);
        syslog(prio[lvl], "%s", buf);
        return;
    }
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    n = strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%S", &tm);
    n += (size_t)snprintf(buf + n, sizeof buf - n, ".%03ldZ %s ",
                          (long)(ts.tv_nsec / 1000000), log_names[lvl]);
    va_start(ap, fmt);
    vsnprintf(buf + n, sizeof buf - n, fmt, ap);
    va_end(ap);
    n = strlen(buf);
    if (n > sizeof buf - 2)
        n = sizeof buf - 2;
    buf[n++] = '\n';
    while (off < n) {
        ssize_t w = write(STDERR_FILENO, buf + off, n - off);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            break;
        off += (size_t)w;
    }
}

static uint64_t now_us(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

static uint64_t now_ms(void)
{
    return now_us() / 1000u;
}

static int fd_nonblock(int fd)
{
    int fl = fcntl(fd, F_GETFL);

    if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0)
        return -1;
    return fcntl(fd, F_SETFD, FD_CLOEXEC);
}

/*
 * Sockets born non-blocking and close-on-exec where socket() and accept4()
 * take SOCK_NONBLOCK | SOCK_CLOEXEC (Linux, the BSDs, POSIX.1-2024): three
 * fcntl() calls less per socket.  glibc declares accept4() only for
 * _GNU_SOURCE, hence the declaration.  Elsewhere fd_nonblock() after.
 */
#if defined(SOCK_NONBLOCK) && defined(SOCK_CLOEXEC)
#define FD_SOCK_FLAGS (SOCK_NONBLOCK | SOCK_CLOEXEC)
int accept4(int fd, struct sockaddr *addr, socklen_t *len, int flags);
#endif

#ifndef FD_SOCK_FLAGS
static int fd_fixup(int fd)
{
    if (fd >= 0 && fd_nonblock(fd) < 0) {
        int e = errno;
        close(fd);
        errno = e;
        return -1;
    }
    return fd;
}
#endif

/* A TCP socket, non-blocking; -1 with errno set. */
static int fd_socket(int family)
{
#ifdef FD_SOCK_FLAGS
    return socket(family, SOCK_STREAM | FD_SOCK_FLAGS, 0);
#else
    return fd_fixup(socket(family, SOCK_STREAM, 0));
#endif
}

/* accept(), the connection non-blocking; -1 with errno set. */
static int fd_accept(int lfd, struct sockaddr *sa, socklen_t *len)
{
#ifdef FD_SOCK_FLAGS
    return accept4(lfd, sa, len, FD_SOCK_FLAGS);
#else
    return fd_fixup(accept(lfd, sa, len));
#endif
}

/* "1.2.3.4:80" or "[::1]:80". */
static void addr_text(const struct sockaddr *sa, char *out, size_t len)
{
    char host[INET6_ADDRSTRLEN] = "?";
    unsigned port = 0;

    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)(const void *)sa;
        inet_ntop(AF_INET, &in->sin_addr, host, sizeof host);
        port = ntohs(in->sin_port);
        snprintf(out, len, "%s:%u", host, port);
    } else if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)(const void *)sa;
        inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof host);
        port = ntohs(in6->sin6_port);
        snprintf(out, len, "[%s]:%u", host, port);
    } else {
        snprintf(out, len, "unknown");
    }
}

/* An IPv4-mapped IPv6 address (a [::] listener accepting IPv4) becomes the
 * plain IPv4 address it stands for, in logs and in PROXY headers. */
static void addr_unmap(struct sockaddr_storage *ss)
{
    struct sockaddr_in6 in6;
    struct sockaddr_in in;

    if (ss->ss_family != AF_INET6)
        return;
    memcpy(&in6, ss, sizeof in6);
    if (!IN6_IS_ADDR_V4MAPPED(&in6.sin6_addr))
        return;
    memset(&in, 0, sizeof in);
    in.sin_family = AF_INET;
    in.sin_port = in6.sin6_port;
    memcpy(&in.sin_addr, &in6.sin6_addr.s6_addr[12], 4);
    memset(ss, 0, sizeof *ss);
    memcpy(ss, &in, sizeof in);
}

/* Copy a string for a log line or a header: printable ASCII only, so a
 * certificate field can never split a line. */
static void str_clean(char *dst, size_t len, const char *src)
{
    size_t i;

    for (i = 0; src[i] && i + 1 < len; i++)
        dst[i] = (src[i] >= 0x20 && src[i] < 0x7f) ? src[i] : '?';
    dst[i] = 0;
}

/*
 * Log values a client chooses (SNI, certificate CN, path) must not forge
 * fields: control bytes are '?' already (str_clean), and log_escape puts a
 * backslash before '"' and '\\'.  log_word gives a value as it is when it
 * has no blank, '"' or '\\' (every host name, most CNs), else quoted and
 * escaped; "-" when empty.  Cut to fit len.
 */
static void log_escape(char *out, size_t len, const char *s)
{
    size_t o = 0;

    for (; *s && o + 2 < len; s++) {
        if (*s == '"' || *s == '\\')
            out[o++] = '\\';
        out[o++] = (*s >= 0x20 && *s < 0x7f) ? *s : '?';
    }
    out[o] = 0;
}

static const char *log_word(char *out, size_t len, const char *s)
{
    size_t n;

    if (!*s)
        return "-";
    if (!strpbrk(s, " \"\\"))
        return s;
    out[0] = '"';
    log_escape(out + 1, len - 2, s);
    n = strlen(out);
    out[n] = '"';
    out[n + 1] = 0;
    return out;
}

/* Where configuration errors go, each as "FILE:LINE: message". */
struct report {
    mtlslb_report_fn *fn;
    void *arg;
    const char *file;
    int errors;
};

static void report_at(struct report *r, int line, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;

static void report_at(struct report *r, int line, const char *fmt, ...)
{
    char msg[1200], out[sizeof msg];
    const unsigned char *p;
    size_t o = 0;
    int n;
    va_list ap;

    n = snprintf(msg, sizeof msg, "%s:%d: ", r->file, line);
    if (n < 0 || (size_t)n >= sizeof msg)
        n = 0;
    va_start(ap, fmt);
    vsnprintf(msg + n, sizeof msg - (size_t)n, fmt, ap);
    va_end(ap);
    /* A token from a file that is not text must not put raw bytes in the
     * log: control and non-ASCII bytes as \xHH, the message cut to fit. */
    for (p = (const unsigned char *)msg; *p && o + 5 < sizeof out; p++) {
        if (*p >= 0x20 && *p < 0x7f)
            out[o++] = (char)*p;
        else
            o += (size_t)snprintf(out + o, sizeof out - o, "\\x%02x", *p);
    }
    out[o] = 0;
    r->errors++;
    if (r->fn)
        r->fn(r->arg, out);
}

/* 2026-11-22T13:21:23Z, or "-" for 0 (never). */
static void fmt_iso(time_t t, char *out, size_t len)
{
    struct tm tm;

    if (!t) {
        snprintf(out, len, "-");
        return;
    }
    gmtime_r(&t, &tm);
    strftime(out, len, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

static char *xstrdup(const char *s)
{
    size_t n = strlen(s) + 1;
    char *p = malloc(n);

    if (p)
        memcpy(p, s, n);
    return p;
}

struct buf {
    uint8_t *data;                  /* MTLSLB_BUF_SIZE bytes while any wait in it */
    size_t off, len;
};

/*
 * A side holds a relay buffer only while bytes wait in it, so an idle
 * connection costs no buffer; a few free ones are kept for the next reader,
 * so keep-alive traffic does not go through malloc for each read.
 */
#define BUF_SPARES 16
static uint8_t *buf_spare[BUF_SPARES];
static int buf_nspare;

static int buf_take(struct buf *b)
{
    if (b->data)
        return 0;
    b->data = buf_nspare ? buf_spare[--buf_nspare] : malloc(MTLSLB_BUF_SIZE);
    b->off = b->len = 0;
    return b->data ? 0 : -1;
}

static void buf_give(struct buf *b)
{
    if (b->data && buf_nspare < BUF_SPARES)
        buf_spare[buf_nspare++] = b->data;
    else
        free(b->data);
    b->data = NULL;
    b->off = b->len = 0;
}

static void buf_spares_free(void)
{
    while (buf_nspare)
        free(buf_spare[--buf_nspare]);
}

/* ======================================================================
 * config model & parser
 *
 * Turns configuration text into the model declared in mtlslb.h.  Reports
 * every error as "FILE:LINE: message" and keeps going, so `mtlslb -t`
 * shows them all at once.  Files named by the configuration are not opened
 * here: the TLS section loads them.
 * ====================================================================== */

enum cfg_section { SEC_NONE = 0, SEC_GLOBAL = 1, SEC_LISTENER = 2, SEC_BACKEND = 4 };

struct cfg_parser {
    struct mtlslb_config *cfg;
    struct report rep;
    char *dir;
    int line;
    enum cfg_section sec;
    size_t cur;                     /* index of the open listener or backend */
    int seen[32];                   /* cfg_table index: its line in this section */
};

#define cfg_error(p, ...) report_at(&(p)->rep, __VA_ARGS__)

/* Append one zeroed element to a dynamic array; NULL when out of memory. */
static void *cfg_push(void *arrp, size_t *n, size_t size)
{
    void **arr = arrp;
    char *na = realloc(*arr, (*n + 1) * size);

    if (!na)
        return NULL;
    *arr = na;
    memset(na + *n * size, 0, size);
    return na + (*n)++ * size;
}

static struct mtlslb_listener *cfg_lst(struct cfg_parser *p)
{
    return &p->cfg->listeners[p->cur];
}

static struct mtlslb_backend *cfg_be(struct cfg_parser *p)
{
    return &p->cfg->backends[p->cur];
}

int mtlslb_parse_duration(const char *s, unsigned *ms)
{
    unsigned long long v = 0, mul;
    const char *q = s;

    if (*q < '0' || *q > '9')
        return -1;
    while (*q >= '0' && *q <= '9') {
        v = v * 10 + (unsigned)(*q++ - '0');
        if (v > 86400000ull)
            return -1;
    }
    if (*q == 0 || strcmp(q, "s") == 0)
        mul = 1000;
    else if (strcmp(q, "ms") == 0)
        mul = 1;
    else if (strcmp(q, "m") == 0)
        mul = 60000;
    else if (strcmp(q, "h") == 0)
        mul = 3600000;
    else
        return -1;
    v *= mul;
    if (v > 86400000ull)
        return -1;
    *ms = (unsigned)v;
    return 0;
}

static int cfg_uint(const char *s, unsigned min, unsigned max, unsigned *out)
{
    unsigned long v = 0;

    if (!*s)
        return -1;
    for (; *s; s++) {
        if (*s < '0' || *s > '9')
            return -1;
        v = v * 10 + (unsigned)(*s - '0');
        if (v > max)
            return -1;
    }
    if (v < min)
        return -1;
    *out = (unsigned)v;
    return 0;
}

/* One word of a fixed list: its index, or -1 after an error naming the choices. */
static int cfg_choice(struct cfg_parser *p, const char *what, const char *s,
                      const char *const *names)
{
    char list[256];
    size_t i, off = 0;

    for (i = 0; names[i]; i++)
        if (strcmp(s, names[i]) == 0)
            return (int)i;
    list[0] = 0;
    for (i = 0; names[i] && off < sizeof list; i++)
        off += (size_t)snprintf(list + off, sizeof list - off, "%s%s",
                                i == 0 ? "" : names[i + 1] ? ", " : " or ", names[i]);
    cfg_error(p, p->line, "%s takes %s, not '%s'", what, list, s);
    return -1;
}

static int cfg_onoff(struct cfg_parser *p, const char *what, const char *s, int *out)
{
    static const char *const names[] = { "off", "on", NULL };
    int i = cfg_choice(p, what, s, names);

    if (i < 0)
        return -1;
    *out = i;
    return 0;
}

static char *cfg_path(struct cfg_parser *p, const char *s)
{
    size_t dl, sl;
    char *r;

    if (s[0] == '/' || !p->dir)
        return xstrdup(s);
    dl = strlen(p->dir);
    sl = strlen(s);
    r = malloc(dl + sl + 2);
    if (!r)
        return NULL;
    memcpy(r, p->dir, dl);
    r[dl] = '/';
    memcpy(r + dl + 1, s, sl + 1);
    return r;
}

static int cfg_file(struct cfg_parser *p, struct mtlslb_file *f, const char *s)
{
    free(f->path);
    f->path = cfg_path(p, s);
    f->line = p->line;
    if (!f->path) {
        cfg_error(p, p->line, "out of memory");
        return -1;
    }
    return 0;
}

static int cfg_crl(struct cfg_parser *p, struct mtlslb_file **crls, size_t *n, const char *s)
{
    struct mtlslb_file *f = cfg_push(crls, n, sizeof *f);

    if (!f) {
        cfg_error(p, p->line, "out of memory");
        return -1;
    }
    return cfg_file(p, f, s);
}

/*
 * "HOST:PORT", "[V6]:PORT", "*:PORT".  passive: a local address to bind,
 * numeric only; otherwise a server, which may be a name resolved now.
 */
static int cfg_numeric_only;

void mtlslb_config_numeric(int on)
{
    cfg_numeric_only = on != 0;
}

static int cfg_addr(struct cfg_parser *p, const char *text, int passive,
                    struct sockaddr_storage *ss, socklen_t *len)
{
    char host[256];
    const char *port, *h = text, *colon;
    size_t hl;
    struct addrinfo hints, *res = NULL;
    unsigned pn;
    int rc;

    if (*h == '[') {
        const char *end = strchr(h, ']');
        if (!end || end[1] != ':')
            goto bad;
        hl = (size_t)(end - h - 1);
        h++;
        port = end + 2;
    } else {
        colon = strrchr(h, ':');
        if (!colon)
            goto bad;
        if (memchr(h, ':', (size_t)(colon - h))) {
            cfg_error(p, p->line, "'%s': an IPv6 address goes in brackets, as [::1]:443", text);
            return -1;
        }
        hl = (size_t)(colon - h);
        port = colon + 1;
    }
    if (hl >= sizeof host || cfg_uint(port, 1, 65535, &pn) < 0)
        goto bad;
    memcpy(host, h, hl);
    host[hl] = 0;
    memset(&hints, 0, sizeof hints);
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_NUMERICSERV;
    if (passive) {
        hints.ai_flags |= AI_PASSIVE | AI_NUMERICHOST;
        if (hl == 0 || strcmp(host, "*") == 0) {
            strcpy(host, "0.0.0.0");
            hints.ai_family = AF_INET;
        }
    } else if (hl == 0) {
        goto bad;
    } else if (cfg_numeric_only) {
        hints.ai_flags |= AI_NUMERICHOST;
    }
    rc = getaddrinfo(host, port, &hints, &res);
    if (rc != 0 || !res) {
        if (passive && rc == EAI_NONAME)
            cfg_error(p, p->line, "'%s': bind takes a numeric address (0.0.0.0:8443, "
                      "[::]:8443, 127.0.0.1:8443), not a host name", text);
        else
            cfg_error(p, p->line, "cannot resolve '%s': %s", text,
                      rc ? gai_strerror(rc) : "no address");
        return -1;
    }
    memset(ss, 0, sizeof *ss);
    memcpy(ss, res->ai_addr, res->ai_addrlen);
    *len = (socklen_t)res->ai_addrlen;
    freeaddrinfo(res);
    return 0;
bad:
    cfg_error(p, p->line, "'%s' is not an address (HOST:PORT or [IPV6]:PORT)", text);
    return -1;
}

typedef int cfg_fn(struct cfg_parser *p, int argc, char **argv);

static int cfg_log_level(struct cfg_parser *p, int argc, char **argv)
{
    static const char *const names[] = { "error", "warn", "info", "debug", NULL };
    int i = cfg_choice(p, argv[0], argv[1], names);

    (void)argc;
    if (i < 0)
        return -1;
    p->cfg->global.log_level = (enum mtlslb_level)i;
    return 0;
}

static int cfg_log(struct cfg_parser *p, int argc, char **argv)
{
    static const char *const names[] = { "stderr", "syslog", NULL };
    int i = cfg_choice(p, argv[0], argv[1], names);

    (void)argc;
    if (i < 0)
        return -1;
    p->cfg->global.log_syslog = i == 1;
    return 0;
}

static int cfg_max_conns(struct cfg_parser *p, int argc, char **argv)
{
    (void)argc;
    if (cfg_uint(argv[1], 1, 1000000, &p->cfg->global.max_conns) < 0) {
        cfg_error(p, p->line, "max-conns takes a number from 1 to 1000000, not '%s'", argv[1]);
        return -1;
    }
    return 0;
}

static int cfg_workers(struct cfg_parser *p, int argc, char **argv)
{
    (void)argc;
    if (cfg_uint(argv[1], 1, MTLSLB_MAX_WORKERS, &p->cfg->global.workers) < 0) {
        cfg_error(p, p->line, "workers takes a number from 1 to %d, not '%s'", MTLSLB_MAX_WORKERS,
                  argv[1]);
        return -1;
    }
    return 0;
}

static int cfg_duration(struct cfg_parser *p, const char *what, const char *s,
                        unsigned min, unsigned *out)
{
    if (mtlslb_parse_duration(s, out) < 0 || *out < min) {
        cfg_error(p, p->line, "%s: bad duration '%s' (a number with ms, s, m or h, at most 24h%s)",
                  what, s, min ? ", above 0" : "");
        return -1;
    }
    return 0;
}

static int cfg_timeout(struct cfg_parser *p, int argc, char **argv)
{
    struct mtlslb_global *g = &p->cfg->global;
    unsigned *t;

    (void)argc;
    if (strcmp(argv[1], "handshake") == 0)
        t = &g->tmo_handshake;
    else if (strcmp(argv[1], "connect") == 0)
        t = &g->tmo_connect;
    else if (strcmp(argv[1], "idle") == 0)
        t = &g->tmo_idle;
    else if (strcmp(argv[1], "request") == 0)
        t = &g->tmo_request;
    else {
        cfg_error(p, p->line, "unknown timeout '%s' (handshake, connect, idle, request)", argv[1]);
        return -1;
    }
    return cfg_duration(p, "timeout", argv[2], 1, t);
}

static int cfg_grace(struct cfg_parser *p, int argc, char **argv)
{
    (void)argc;
    return cfg_duration(p, "grace", argv[1], 0, &p->cfg->global.grace);
}

static int cfg_bind(struct cfg_parser *p, int argc, char **argv)
{
    struct mtlslb_bind b, *nb;
    size_t i, j;

    (void)argc;
    memset(&b, 0, sizeof b);
    if (cfg_addr(p, argv[1], 1, &b.addr, &b.addrlen) < 0)
        return -1;
    for (i = 0; i < p->cfg->nlisteners; i++)
        for (j = 0; j < p->cfg->listeners[i].nbinds; j++) {
            const struct mtlslb_bind *o = &p->cfg->listeners[i].binds[j];
            if (o->addrlen == b.addrlen && memcmp(&o->addr, &b.addr, b.addrlen) == 0) {
                cfg_error(p, p->line, "bind %s is already used at line %d", argv[1], o->line);
                return -1;
            }
        }
    nb = cfg_push(&cfg_lst(p)->binds, &cfg_lst(p)->nbinds, sizeof *nb);
    if (!nb || !(b.text = xstrdup(argv[1]))) {
        if (nb)
            cfg_lst(p)->nbinds--;
        cfg_error(p, p->line, "out of memory");
        return -1;
    }
    b.line = p->line;
    *nb = b;
    return 0;
}

static int cfg_mode(struct cfg_parser *p, int argc, char **argv)
{
    static const char *const names[] = { "http", "tcp", NULL };   /* enum mtlslb_mode */
    int i = cfg_choice(p, argv[0], argv[1], names);

    (void)argc;
    if (i < 0)
        return -1;
    cfg_lst(p)->mode = (enum mtlslb_mode)i;
    cfg_lst(p)->mode_line = p->line;
    return 0;
}

static int cfg_cert(struct cfg_parser *p, int argc, char **argv)
{
    (void)argc;
    if (cfg_file(p, &cfg_lst(p)->cert, argv[1]) < 0)
        return -1;
    return cfg_file(p, &cfg_lst(p)->key, argv[2]);
}

static int cfg_ca(struct cfg_parser *p, int argc, char **argv)
{
    (void)argc;
    return cfg_file(p, &cfg_lst(p)->ca, argv[1]);
}

static int cfg_crl_l(struct cfg_parser *p, int argc, char **argv)
{
    (void)argc;
    return cfg_crl(p, &cfg_lst(p)->crls, &cfg_lst(p)->ncrls, argv[1]);
}

static int cfg_verify(struct cfg_parser *p, int argc, char **argv)
{
    static const char *const names[] = { "none", "optional", "required", NULL };
    int i = cfg_choice(p, argv[0], argv[1], names);

    (void)argc;
    if (i < 0)
        return -1;
    cfg_lst(p)->verify = (enum mtlslb_verify)(MTLSLB_VERIFY_NONE + i);
    return 0;
}

static int cfg_tls_min(struct cfg_parser *p, int argc, char **argv)
{
    static const char *const names[] = { "1.2", "1.3", NULL };
    int i = cfg_choice(p, argv[0], argv[1], names);

    (void)argc;
    if (i < 0)
        return -1;
    cfg_lst(p)->tls_min = 12 + i;
    return 0;
}

/*
 * Can a cipher list give TLS 1.3?  A TLS 1.3 suite's name (TLS13-..., or
 * the standard TLS_...), or a keyword (ALL, DEFAULT: no '-' or '_') that
 * may bring some.  wolfSSL builds differ in what they can list of a
 * context's suites, so the names are read here.
 */
static int cfg_ciphers_have13(const char *list)
{
    const char *p = list;

    while (*p) {
        size_t n = strcspn(p, ":");
        if ((n > 6 && strncmp(p, "TLS13-", 6) == 0) || (n > 4 && strncmp(p, "TLS_", 4) == 0))
            return 1;
        if (n && !memchr(p, '-', n) && !memchr(p, '_', n))
            return 1;
        p += n + (p[n] == ':');
    }
    return 0;
}

static int cfg_ciphers(struct cfg_parser *p, int argc, char **argv)
{
    (void)argc;
    free(cfg_lst(p)->ciphers);
    cfg_lst(p)->ciphers = xstrdup(argv[1]);
    cfg_lst(p)->ciphers_line = p->line;
    if (!cfg_lst(p)->ciphers) {
        cfg_error(p, p->line, "out of memory");
        return -1;
    }
    return 0;
}

static int cfg_sni_name_ok(const char *s)
{
    const char *q = s;

    if (q[0] == '*') {
        if (q[1] != '.' || !q[2])
            return 0;
        q += 2;
    }
    for (; *q; q++)
        if (!((*q >= 'a' && *q <= 'z') || (*q >= '0' && *q <= '9') || *q == '-' ||
              *q == '.' || *q == '_'))
            return 0;
    return s[0] != '.';
}

/* sni NAME CERT KEY [ca FILE] [crl FILE]... */
static int cfg_sni(struct cfg_parser *p, int argc, char **argv)
{
    struct mtlslb_listener *l = cfg_lst(p);
    struct mtlslb_sni *s;
    size_t i;
    int a;
    char *name = xstrdup(argv[1]);

    if (!name) {
        cfg_error(p, p->line, "out of memory");
        return -1;
    }
    for (i = 0; name[i]; i++)
        name[i] = (char)((name[i] >= 'A' && name[i] <= 'Z') ? name[i] - 'A' + 'a' : name[i]);
    if (i > 253 || !cfg_sni_name_ok(name)) {
        cfg_error(p, p->line, "'%s' is not a host name or a one-label wildcard (*.example.org)",
                  argv[1]);
        free(name);
        return -1;
    }
    for (i = 0; i < l->nsnis; i++)
        if (strcmp(l->snis[i].name, name) == 0) {
            cfg_error(p, p->line, "sni %s is already defined at line %d", name, l->snis[i].line);
            free(name);
            return -1;
        }
    s = cfg_push(&l->snis, &l->nsnis, sizeof *s);
    if (!s) {
        free(name);
        cfg_error(p, p->line, "out of memory");
        return -1;
    }
    s->name = name;
    s->line = p->line;
    if (cfg_file(p, &s->cert, argv[2]) < 0 || cfg_file(p, &s->key, argv[3]) < 0)
        return -1;
    for (a = 4; a < argc; a += 2) {
        if (a + 1 >= argc) {
            cfg_error(p, p->line, "sni: '%s' needs a file", argv[a]);
            return -1;
        }
        if (strcmp(argv[a], "ca") == 0) {
            if (s->ca.path) {
                cfg_error(p, p->line, "sni: ca given twice (one bundle file holds several CAs)");
                return -1;
            }
            if (cfg_file(p, &s->ca, argv[a + 1]) < 0)
                return -1;
        } else if (strcmp(argv[a], "crl") == 0) {
            if (cfg_crl(p, &s->crls, &s->ncrls, argv[a + 1]) < 0)
                return -1;
        } else {
            cfg_error(p, p->line, "sni: unknown option '%s' (ca, crl)", argv[a]);
            return -1;
        }
    }
    return 0;
}

static int cfg_sni_strict(struct cfg_parser *p, int argc, char **argv)
{
    (void)argc;
    return cfg_onoff(p, "sni-strict", argv[1], &cfg_lst(p)->sni_strict);
}

static int cfg_default_backend(struct cfg_parser *p, int argc, char **argv)
{
    (void)argc;
    free(cfg_lst(p)->default_backend);
    cfg_lst(p)->default_backend = xstrdup(argv[1]);
    cfg_lst(p)->default_backend_line = p->line;
    if (!cfg_lst(p)->default_backend) {
        cfg_error(p, p->line, "out of memory");
        return -1;
    }
    return 0;
}

static int cfg_send_proxy(struct cfg_parser *p, int argc, char **argv)
{
    static const char *const names[] = { "off", "v1", "v2", NULL };
    int i = cfg_choice(p, argv[0], argv[1], names);

    (void)argc;
    if (i < 0)
        return -1;
    cfg_lst(p)->send_proxy = i;
    return 0;
}

static int cfg_forward_cert(struct cfg_parser *p, int argc, char **argv)
{
    (void)argc;
    return cfg_onoff(p, argv[0], argv[1], &cfg_lst(p)->forward_cert);
}

static char *cfg_lower(const char *s)
{
    char *r = xstrdup(s), *q;

    for (q = r; q && *q; q++)
        if (*q >= 'A' && *q <= 'Z')
            *q = (char)(*q - 'A' + 'a');
    return r;
}

/* route [host PATTERN] [path PREFIX] backend NAME */
/* ---- allow FIELD PATTERN... (listeners and routes) ---- */

static const char *const cfg_allow_fields[MTLSLB_ALLOW_FIELDS] = {
    "cn", "ou", "o", "san-dns", "san-uri", "san-email", "fingerprint", "serial"
};

/* A fingerprint or serial pattern, as compared: colons dropped, hex only
 * (a serial also without leading zeros).  NULL if it is not that. */
static char *cfg_allow_hex(const char *s, int fingerprint)
{
    size_t n = 0, i;
    int glob = 0;
    char *o = malloc(strlen(s) + 2);

    if (!o)
        return NULL;
    for (i = 0; s[i]; i++) {
        if (s[i] == ':')
            continue;
        if (s[i] == '*')
            glob = 1;
        else if (!isxdigit((unsigned char)s[i])) {
            free(o);
            return NULL;
        }
        o[n++] = (char)toupper((unsigned char)s[i]);
    }
    o[n] = 0;
    /* A glob ("AB12*") matches the value as written: no length rule, no
     * leading zeros dropped. */
    if (glob ? n > 128 : fingerprint ? n != 64 : n == 0 || n > 128) {
        free(o);
        return NULL;
    }
    if (!fingerprint && !glob) {         /* as the DER's bytes: even length, no leading zero byte */
        if (n % 2) {
            memmove(o + 1, o, n + 1);
            o[0] = '0';
            n++;
        }
        for (i = 0; i + 2 < n && o[i] == '0' && o[i + 1] == '0'; i += 2)
            ;
        memmove(o, o + i, n - i + 1);
    }
    return o;
}

static void cfg_free_allows(struct mtlslb_allow *a, size_t n)
{
    size_t i, j;

    for (i = 0; i < n; i++) {
        for (j = 0; j < a[i].npatterns; j++)
            free(a[i].patterns[j]);
        free(a[i].patterns);
        free(a[i].text);
    }
    free(a);
}

/* One rule from argv[0] (the field) and argv[1..argc-1] (its patterns). */
static int cfg_allow_add(struct cfg_parser *p, struct mtlslb_allow **v, size_t *n, int argc,
                         char **argv)
{
    struct mtlslb_allow *a;
    size_t len = 0;
    int f, i;

    for (f = 0; f < MTLSLB_ALLOW_FIELDS; f++)
        if (strcmp(argv[0], cfg_allow_fields[f]) == 0)
            break;
    if (f == MTLSLB_ALLOW_FIELDS) {
        cfg_error(p, p->line, "allow: unknown field '%s' (cn, ou, o, san-dns, san-uri, "
                  "san-email, fingerprint, serial)", argv[0]);
        return -1;
    }
    if (argc < 2) {
        cfg_error(p, p->line, "allow %s: needs a pattern", argv[0]);
        return -1;
    }
    if (!(a = cfg_push(v, n, sizeof *a)) || !(a->patterns = calloc((size_t)argc, sizeof *a->patterns))) {
        cfg_error(p, p->line, "out of memory");
        return -1;
    }
    a->field = (enum mtlslb_allow_field)f;
    a->line = p->line;
    for (i = 1; i < argc; i++) {
        char *pat;
        if (!argv[i][0]) {
            cfg_error(p, p->line, "allow %s: an empty pattern", argv[0]);
            return -1;
        }
        if (f == MTLSLB_ALLOW_FINGERPRINT || f == MTLSLB_ALLOW_SERIAL) {
            pat = cfg_allow_hex(argv[i], f == MTLSLB_ALLOW_FINGERPRINT);
            if (!pat) {
                cfg_error(p, p->line, f == MTLSLB_ALLOW_FINGERPRINT ?
                          "allow fingerprint: '%s' is not a SHA-256 in hex (64 digits, colons optional, or a * glob)" :
                          "allow serial: '%s' is not a serial number in hex (or a * glob)", argv[i]);
                return -1;
            }
        } else if (!(pat = xstrdup(argv[i]))) {
            cfg_error(p, p->line, "out of memory");
            return -1;
        }
        a->patterns[a->npatterns++] = pat;
    }
    for (i = 0; i < argc; i++)
        len += strlen(argv[i]) + 1;
    if (!(a->text = malloc(len))) {
        cfg_error(p, p->line, "out of memory");
        return -1;
    }
    a->text[0] = 0;
    for (i = 0; i < argc; i++) {
        if (i)
            strcat(a->text, " ");
        strcat(a->text, argv[i]);
    }
    return 0;
}

static int cfg_allow_l(struct cfg_parser *p, int argc, char **argv)
{
    struct mtlslb_listener *l = cfg_lst(p);

    return cfg_allow_add(p, &l->allows, &l->nallows, argc - 1, argv + 1);
}

static int cfg_route(struct cfg_parser *p, int argc, char **argv)
{
    struct mtlslb_listener *l = cfg_lst(p);
    struct mtlslb_route *r = cfg_push(&l->routes, &l->nroutes, sizeof *r);
    int a;

    if (!r) {
        cfg_error(p, p->line, "out of memory");
        return -1;
    }
    r->line = p->line;
    for (a = 1; a < argc; a += 2) {
        char **field;
        if (strcmp(argv[a], "allow") == 0) {
            /* allow FIELD PATTERN... up to the next "allow": the rest of the line */
            int b = a + 1, e;
            if (b >= argc) {
                cfg_error(p, p->line, "route: 'allow' needs a field and a pattern");
                return -1;
            }
            for (e = b + 1; e < argc && strcmp(argv[e], "allow") != 0; e++)
                ;
            if (cfg_allow_add(p, &r->allows, &r->nallows, e - b, argv + b) < 0)
                return -1;
            a = e - 2;              /* the loop's += 2 lands on the next "allow" */
            continue;
        }
        if (a + 1 >= argc) {
            cfg_error(p, p->line, "route: '%s' needs a value", argv[a]);
            return -1;
        }
        field = strcmp(argv[a], "host") == 0 ? &r->host : strcmp(argv[a], "path") == 0 ? &r->path :
                strcmp(argv[a], "backend") == 0 ? &r->backend_name : NULL;
        if (!field) {
            cfg_error(p, p->line, "route: unknown word '%s' (host, path, backend)", argv[a]);
            return -1;
        }
        if (*field) {
            cfg_error(p, p->line, "route: '%s' given twice", argv[a]);
            return -1;
        }
        *field = field == &r->host ? cfg_lower(argv[a + 1]) : xstrdup(argv[a + 1]);
        if (!*field) {
            cfg_error(p, p->line, "out of memory");
            return -1;
        }
        if (field == &r->host && !cfg_sni_name_ok(r->host)) {
            cfg_error(p, p->line, "route: '%s' is not a host name or a one-label wildcard",
                      argv[a + 1]);
            return -1;
        }
        if (field == &r->path && argv[a + 1][0] != '/') {
            cfg_error(p, p->line, "route: a path prefix starts with '/', not '%s'", argv[a + 1]);
            return -1;
        }
    }
    if (!r->backend_name) {
        cfg_error(p, p->line, "route needs 'backend NAME'");
        return -1;
    }
    return 0;
}

static int http_tchar_str(const char *s)
{
    const char *q;

    for (q = s; *q; q++)
        if (!((*q >= 'A' && *q <= 'Z') || (*q >= 'a' && *q <= 'z') || *q == '-'))
            return 0;
    return q != s;
}

/* check tcp | check http METHOD PATH [expect CODE|2xx|3xx] */
static int cfg_check(struct cfg_parser *p, int argc, char **argv)
{
    struct mtlslb_backend *b = cfg_be(p);
    unsigned code;

    b->check_line = p->line;
    if (strcmp(argv[1], "tcp") == 0 && argc == 2) {
        b->check = MTLSLB_CHECK_TCP;
        return 0;
    }
    if (strcmp(argv[1], "none") == 0 && argc == 2) {   /* as without a check line */
        b->check = MTLSLB_CHECK_NONE;
        return 0;
    }
    if (strcmp(argv[1], "http") != 0 || (argc != 4 && argc != 6) ||
        (argc == 6 && strcmp(argv[4], "expect") != 0)) {
        cfg_error(p, p->line, "check takes 'tcp', 'none' or 'http METHOD PATH [expect CODE|2xx|3xx]'");
        return -1;
    }
    if (!http_tchar_str(argv[2]) || argv[3][0] != '/' || strpbrk(argv[3], " \t\r\n")) {
        cfg_error(p, p->line, "check http: bad method '%s' or path '%s'", argv[2], argv[3]);
        return -1;
    }
    b->check = MTLSLB_CHECK_HTTP;
    free(b->check_method);
    free(b->check_path);
    b->check_method = xstrdup(argv[2]);
    b->check_path = xstrdup(argv[3]);
    if (!b->check_method || !b->check_path) {
        cfg_error(p, p->line, "out of memory");
        return -1;
    }
    b->check_expect = 0;
    if (argc == 6) {
        if (strcmp(argv[5], "2xx") == 0)
            b->check_expect = 2;
        else if (strcmp(argv[5], "3xx") == 0)
            b->check_expect = 3;
        else if (cfg_uint(argv[5], 100, 599, &code) == 0)
            b->check_expect = (int)code;
        else {
            cfg_error(p, p->line, "check: expect takes a status code, 2xx or 3xx, not '%s'",
                      argv[5]);
            return -1;
        }
    }
    return 0;
}

static int cfg_check_time(struct cfg_parser *p, int argc, char **argv)
{
    struct mtlslb_backend *b = cfg_be(p);

    (void)argc;
    return cfg_duration(p, argv[0], argv[1], 1,
                        strcmp(argv[0], "check-interval") == 0 ? &b->check_interval
                                                               : &b->check_timeout);
}

static int cfg_rise_fall(struct cfg_parser *p, int argc, char **argv)
{
    struct mtlslb_backend *b = cfg_be(p);

    (void)argc;
    if (cfg_uint(argv[1], 1, 100, strcmp(argv[0], "rise") == 0 ? &b->rise : &b->fall) < 0) {
        cfg_error(p, p->line, "%s takes a number from 1 to 100, not '%s'", argv[0], argv[1]);
        return -1;
    }
    return 0;
}

static int cfg_user(struct cfg_parser *p, int argc, char **argv)
{
    (void)argc;
    errno = 0;
    if (!getpwnam(argv[1])) {       /* -t says so, not the start */
        cfg_error(p, p->line, "user %s: %s", argv[1], errno ? strerror(errno) : "no such user");
        return -1;
    }
    free(p->cfg->global.user);
    if (!(p->cfg->global.user = xstrdup(argv[1]))) {
        cfg_error(p, p->line, "out of memory");
        return -1;
    }
    return 0;
}

static int cfg_stats(struct cfg_parser *p, int argc, char **argv)
{
    struct mtlslb_bind *b = &p->cfg->global.stats;

    (void)argc;
    if (cfg_addr(p, argv[1], 1, &b->addr, &b->addrlen) < 0)
        return -1;
    free(b->text);
    b->line = p->line;
    if (!(b->text = xstrdup(argv[1]))) {
        cfg_error(p, p->line, "out of memory");
        return -1;
    }
    return 0;
}

static int cfg_balance(struct cfg_parser *p, int argc, char **argv)
{
    static const char *const names[] = { "roundrobin", "leastconn", "source", NULL };
    int i = cfg_choice(p, argv[0], argv[1], names);     /* enum mtlslb_balance */

    (void)argc;
    if (i < 0)
        return -1;
    cfg_be(p)->balance = (enum mtlslb_balance)i;
    return 0;
}

static int cfg_retries(struct cfg_parser *p, int argc, char **argv)
{
    (void)argc;
    if (cfg_uint(argv[1], 0, 100, &cfg_be(p)->retries) < 0) {
        cfg_error(p, p->line, "retries takes a number from 0 to 100, not '%s'", argv[1]);
        return -1;
    }
    return 0;
}

static int cfg_name_ok(struct cfg_parser *p, const char *what, const char *s)
{
    const char *q;

    for (q = s; *q; q++)
        if (!((*q >= 'a' && *q <= 'z') || (*q >= 'A' && *q <= 'Z') ||
              (*q >= '0' && *q <= '9') || *q == '-' || *q == '_' || *q == '.'))
            break;
    if (*q || q == s || q - s >= MTLSLB_MAX_NAME) {
        cfg_error(p, p->line, "%s name '%s': use letters, digits, '-', '_', '.' (at most %d)",
                  what, s, MTLSLB_MAX_NAME - 1);
        return -1;
    }
    return 0;
}

static char *cfg_lower(const char *s);

/* server NAME ADDR [weight N] [backup] [tls [ca FILE] [sni NAME] [cert CRT KEY]] */
static int cfg_server(struct cfg_parser *p, int argc, char **argv)
{
    struct mtlslb_backend *b = cfg_be(p);
    struct mtlslb_server *s;
    size_t i;
    int a;

    if (cfg_name_ok(p, "server", argv[1]) < 0)
        return -1;
    for (i = 0; i < b->nservers; i++)
        if (strcmp(b->servers[i].name, argv[1]) == 0) {
            cfg_error(p, p->line, "server %s is already defined at line %d", argv[1],
                      b->servers[i].line);
            return -1;
        }
    s = cfg_push(&b->servers, &b->nservers, sizeof *s);
    if (!s || !(s->name = xstrdup(argv[1])) || !(s->addr_text = xstrdup(argv[2]))) {
        cfg_error(p, p->line, "out of memory");
        return -1;
    }
    s->line = p->line;
    s->weight = 1;
    if (cfg_addr(p, argv[2], 0, &s->addr, &s->addrlen) < 0)
        return -1;
    for (a = 3; a < argc; a++) {
        if (strcmp(argv[a], "weight") == 0 && a + 1 < argc) {
            if (cfg_uint(argv[++a], 1, 256, &s->weight) < 0) {
                cfg_error(p, p->line, "weight takes a number from 1 to 256, not '%s'", argv[a]);
                return -1;
            }
        } else if (strcmp(argv[a], "backup") == 0) {
            s->backup = 1;
        } else if (strcmp(argv[a], "tls") == 0) {
            s->tls = 1;
        } else if (s->tls && strcmp(argv[a], "ca") == 0 && a + 1 < argc) {
            if (cfg_file(p, &s->tls_ca, argv[++a]) < 0)
                return -1;
        } else if (s->tls && strcmp(argv[a], "sni") == 0 && a + 1 < argc) {
            free(s->tls_sni);
            if (!(s->tls_sni = cfg_lower(argv[++a]))) {
                cfg_error(p, p->line, "out of memory");
                return -1;
            }
        } else if (s->tls && strcmp(argv[a], "cert") == 0 && a + 2 < argc) {
            if (cfg_file(p, &s->tls_cert, argv[a + 1]) < 0 ||
                cfg_file(p, &s->tls_key, argv[a + 2]) < 0)
                return -1;
            a += 2;
        } else if (strcmp(argv[a], "weight") == 0 ||
                   (s->tls && (strcmp(argv[a], "ca") == 0 || strcmp(argv[a], "sni") == 0 ||
                               strcmp(argv[a], "cert") == 0))) {
            cfg_error(p, p->line, "server: '%s' needs %s", argv[a],
                      strcmp(argv[a], "weight") == 0 ? "a number" :
                      strcmp(argv[a], "ca") == 0 ? "a file" :
                      strcmp(argv[a], "sni") == 0 ? "a name" : "a certificate and a key file");
            return -1;
        } else {
            cfg_error(p, p->line, "server: unknown option '%s' (weight N, backup, tls [ca FILE] "
                      "[sni NAME] [cert CRT KEY])", argv[a]);
            return -1;
        }
    }
    return 0;
}

struct cfg_directive {
    const char *name;
    unsigned sections;
    int min, max;                   /* arguments after the keyword */
    cfg_fn *fn;
    int many;                       /* may appear more than once in a section */
};

/* Sorted by name: looked up with bsearch. */
static const struct cfg_directive cfg_table[] = {
    { "allow",           SEC_LISTENER, 2, 64, cfg_allow_l,         1 },
    { "balance",         SEC_BACKEND,  1, 1,  cfg_balance,         0 },
    { "bind",            SEC_LISTENER, 1, 1,  cfg_bind,            1 },
    { "ca",              SEC_LISTENER, 1, 1,  cfg_ca,              0 },
    { "cert",            SEC_LISTENER, 2, 2,  cfg_cert,            0 },
    { "check",           SEC_BACKEND,  1, 5,  cfg_check,           0 },
    { "check-interval",  SEC_BACKEND,  1, 1,  cfg_check_time,      0 },
    { "check-timeout",   SEC_BACKEND,  1, 1,  cfg_check_time,      0 },
    { "ciphers",         SEC_LISTENER, 1, 1,  cfg_ciphers,         0 },
    { "crl",             SEC_LISTENER, 1, 1,  cfg_crl_l,           1 },
    { "default-backend", SEC_LISTENER, 1, 1,  cfg_default_backend, 0 },
    { "fall",            SEC_BACKEND,  1, 1,  cfg_rise_fall,       0 },
    { "forward-cert",    SEC_LISTENER, 1, 1,  cfg_forward_cert,    0 },
    { "grace",           SEC_GLOBAL,   1, 1,  cfg_grace,           0 },
    { "log",             SEC_GLOBAL,   1, 1,  cfg_log,             0 },
    { "log-level",       SEC_GLOBAL,   1, 1,  cfg_log_level,       0 },
    { "max-conns",       SEC_GLOBAL,   1, 1,  cfg_max_conns,       0 },
    { "mode",            SEC_LISTENER, 1, 1,  cfg_mode,            0 },
    { "retries",         SEC_BACKEND,  1, 1,  cfg_retries,         0 },
    { "rise",            SEC_BACKEND,  1, 1,  cfg_rise_fall,       0 },
    { "route",           SEC_LISTENER, 2, 31, cfg_route,           1 },
    { "send-proxy",      SEC_LISTENER, 1, 1,  cfg_send_proxy,      0 },
    { "server",          SEC_BACKEND,  2, 16, cfg_server,          1 },
    { "sni",             SEC_LISTENER, 3, 9,  cfg_sni,             1 },
    { "sni-strict",      SEC_LISTENER, 1, 1,  cfg_sni_strict,      0 },
    { "stats",           SEC_GLOBAL,   1, 1,  cfg_stats,           0 },
    { "timeout",         SEC_GLOBAL,   2, 2,  cfg_timeout,         1 },
    { "tls-min",         SEC_LISTENER, 1, 1,  cfg_tls_min,         0 },
    { "user",            SEC_GLOBAL,   1, 1,  cfg_user,            0 },
    { "verify",          SEC_LISTENER, 1, 1,  cfg_verify,          0 },
    { "workers",         SEC_GLOBAL,   1, 1,  cfg_workers,         0 },
};

static int cfg_cmp(const void *key, const void *elem)
{
    return strcmp(key, ((const struct cfg_directive *)elem)->name);
}

typedef char cfg_seen_fits[sizeof cfg_table / sizeof cfg_table[0] <=
                           sizeof ((struct cfg_parser *)0)->seen / sizeof(int) ? 1 : -1];

static const char *cfg_section_name(unsigned sec)
{
    return sec == SEC_GLOBAL ? "global" : sec == SEC_LISTENER ? "listener" : "backend";
}

/* Split a line into tokens in place.  Returns the count, or -1 on error. */
static int cfg_tokenize(struct cfg_parser *p, char *s, char **tok)
{
    int n = 0;
    char *w;

    for (;;) {
        while (*s == ' ' || *s == '\t' || *s == '\r')
            s++;
        if (*s == 0 || *s == '#')
            return n;
        if (n == MTLSLB_MAX_TOKENS) {
            cfg_error(p, p->line, "too many words on one line");
            return -1;
        }
        if (*s == '"') {
            tok[n++] = w = ++s;
            while (*s != '"') {
                if (*s == 0) {
                    cfg_error(p, p->line, "unterminated quote");
                    return -1;
                }
                if (*s == '\\' && (s[1] == '"' || s[1] == '\\'))
                    s++;
                *w++ = *s++;
            }
            s++;
            if (*s && *s != ' ' && *s != '\t' && *s != '\r') {
                *w = 0;
                cfg_error(p, p->line, "a blank must follow a closing quote");
                return -1;
            }
            *w = 0;
            if (*s)
                s++;
        } else {
            tok[n++] = s;
            while (*s && *s != ' ' && *s != '\t' && *s != '\r')
                s++;
            if (*s)
                *s++ = 0;
        }
    }
}

static int cfg_section(struct cfg_parser *p, int argc, char **argv)
{
    struct mtlslb_config *c = p->cfg;
    size_t i;

    if (strcmp(argv[0], "global") == 0) {
        if (argc != 1) {
            cfg_error(p, p->line, "global takes no argument");
            return -1;
        }
        p->sec = SEC_GLOBAL;
        return 0;
    }
    if (argc != 2) {
        cfg_error(p, p->line, "%s takes one name", argv[0]);
        p->sec = SEC_NONE;
        return -1;
    }
    if (cfg_name_ok(p, argv[0], argv[1]) < 0) {
        p->sec = SEC_NONE;
        return -1;
    }
    if (strcmp(argv[0], "listener") == 0) {
        struct mtlslb_listener *l;
        for (i = 0; i < c->nlisteners; i++)
            if (strcmp(c->listeners[i].name, argv[1]) == 0)
                cfg_error(p, p->line, "listener %s is already defined at line %d", argv[1],
                          c->listeners[i].line);
        l = cfg_push(&c->listeners, &c->nlisteners, sizeof *l);
        if (!l || !(l->name = xstrdup(argv[1])))
            goto oom;
        l->line = p->line;
        l->tls_min = 12;
        p->sec = SEC_LISTENER;
        p->cur = c->nlisteners - 1;
    } else {
        struct mtlslb_backend *b;
        for (i = 0; i < c->nbackends; i++)
            if (strcmp(c->backends[i].name, argv[1]) == 0)
                cfg_error(p, p->line, "backend %s is already defined at line %d", argv[1],
                          c->backends[i].line);
        b = cfg_push(&c->backends, &c->nbackends, sizeof *b);
        if (!b || !(b->name = xstrdup(argv[1])))
            goto oom;
        b->line = p->line;
        b->retries = 1;
        b->check_interval = 2000;
        b->check_timeout = 1000;
        b->rise = 2;
        b->fall = 3;
        p->sec = SEC_BACKEND;
        p->cur = c->nbackends - 1;
    }
    return 0;
oom:
    cfg_error(p, p->line, "out of memory");
    p->sec = SEC_NONE;
    return -1;
}

static void cfg_line(struct cfg_parser *p, char *line)
{
    char *argv[MTLSLB_MAX_TOKENS];
    const struct cfg_directive *d;
    int argc = cfg_tokenize(p, line, argv);

    if (argc <= 0)
        return;
    if (strcmp(argv[0], "global") == 0 || strcmp(argv[0], "listener") == 0 ||
        strcmp(argv[0], "backend") == 0) {
        memset(p->seen, 0, sizeof p->seen);
        cfg_section(p, argc, argv);
        return;
    }
    d = bsearch(argv[0], cfg_table, sizeof cfg_table / sizeof cfg_table[0],
                sizeof cfg_table[0], cfg_cmp);
    if (!d) {
        cfg_error(p, p->line, "unknown directive '%s'", argv[0]);
        return;
    }
    if (p->sec == SEC_NONE) {
        cfg_error(p, p->line, "'%s' must follow a global, listener or backend line", argv[0]);
        return;
    }
    if (!(d->sections & p->sec)) {
        cfg_error(p, p->line, "'%s' belongs in a %s section, not in %s", argv[0],
                  cfg_section_name(d->sections), cfg_section_name(p->sec));
        return;
    }
    if (argc - 1 < d->min || argc - 1 > d->max) {
        if (d->min == d->max)
            cfg_error(p, p->line, "'%s' takes %d argument%s", argv[0], d->min,
                      d->min == 1 ? "" : "s");
        else
            cfg_error(p, p->line, "'%s' takes %d to %d arguments", argv[0], d->min, d->max);
        return;
    }
    if (!d->many) {
        int *seen = &p->seen[d - cfg_table];
        if (*seen) {
            cfg_error(p, p->line, "'%s' is already set at line %d", argv[0], *seen);
            return;
        }
        *seen = p->line;
    }
    d->fn(p, argc, argv);
}

static void cfg_resolve(struct cfg_parser *p, const char *name, int line, size_t *out)
{
    size_t j;

    for (j = 0; j < p->cfg->nbackends; j++)
        if (strcmp(p->cfg->backends[j].name, name) == 0) {
            *out = j;
            return;
        }
    cfg_error(p, line, "undefined backend '%s'", name);
}

/* Whole-model checks, once every line is read. */
static void cfg_finish(struct cfg_parser *p)
{
    struct mtlslb_config *c = p->cfg;
    size_t i, j;

    for (i = 0; i < c->nlisteners; i++) {
        struct mtlslb_listener *l = &c->listeners[i];
        const struct mtlslb_bind *st = &c->global.stats;
        for (j = 0; j < l->nbinds; j++)
            if (st->addrlen && st->addrlen == l->binds[j].addrlen &&
                memcmp(&st->addr, &l->binds[j].addr, st->addrlen) == 0)
                cfg_error(p, st->line, "stats %s is already used by bind at line %d", st->text,
                          l->binds[j].line);
        if (l->mode == MTLSLB_MODE_TCP && (l->nroutes || l->forward_cert))
            cfg_error(p, l->nroutes ? l->routes[0].line : l->line,
                      "listener %s: %s is for mode http", l->name,
                      l->nroutes ? "route" : "forward-cert");
        for (j = 0; j < l->nroutes; j++)
            if (l->routes[j].backend_name)
                cfg_resolve(p, l->routes[j].backend_name, l->routes[j].line,
                            &l->routes[j].backend);
        if (l->nbinds == 0)
            cfg_error(p, l->line, "listener %s has no bind", l->name);
        if (!l->cert.path)
            cfg_error(p, l->line, "listener %s has no cert", l->name);
        if (l->ncrls && !l->ca.path)
            cfg_error(p, l->crls[0].line, "listener %s: crl needs a ca", l->name);
        if (l->tls_min == 13 && l->ciphers && !cfg_ciphers_have13(l->ciphers))
            cfg_error(p, l->ciphers_line, "no TLS 1.3 cipher in '%s', and tls-min is 1.3", l->ciphers);
        /* An sni line's own ca replaces the listener's (SPEC 4), the
         * default verify required with it: a listener without a ca still
         * verifies the clients of that name. */
        for (j = 0; j < l->nsnis; j++) {
            struct mtlslb_sni *sn = &l->snis[j];
            if (sn->ncrls && !sn->ca.path && !l->ca.path)
                cfg_error(p, sn->line, "sni %s: crl needs a ca", sn->name);
            sn->verify = l->verify == MTLSLB_VERIFY_UNSET && sn->ca.path ?
                         MTLSLB_VERIFY_REQUIRED : l->verify;
        }
        if (l->verify == MTLSLB_VERIFY_UNSET)
            l->verify = l->ca.path ? MTLSLB_VERIFY_REQUIRED : MTLSLB_VERIFY_NONE;
        else if (l->verify != MTLSLB_VERIFY_NONE && !l->ca.path)
            cfg_error(p, l->line, "listener %s: verify %s needs a ca (the default "
                      "certificate's clients are verified against it)", l->name,
                      l->verify == MTLSLB_VERIFY_REQUIRED ? "required" : "optional");
        for (j = 0; j < l->nsnis; j++)
            if (l->snis[j].verify == MTLSLB_VERIFY_UNSET)
                l->snis[j].verify = l->verify;
        if (!l->default_backend) {
            cfg_error(p, l->line, "listener %s has no default-backend", l->name);
            continue;
        }
        cfg_resolve(p, l->default_backend, l->default_backend_line, &l->backend);
    }
    for (i = 0; i < c->nbackends; i++)
        if (c->backends[i].nservers == 0)
            cfg_error(p, c->backends[i].line, "backend %s has no server", c->backends[i].name);
    if (c->nlisteners == 0)
        cfg_error(p, p->line, "no listener defined");
}

int mtlslb_config_parse_text(const char *name, const char *text, size_t len,
                             struct mtlslb_config **out,
                             mtlslb_report_fn *report, void *arg)
{
    struct cfg_parser p;
    struct mtlslb_config *c;
    char line[MTLSLB_MAX_LINE];
    const char *slash;
    size_t pos = 0;

    *out = NULL;
    memset(&p, 0, sizeof p);
    p.rep.file = name;
    p.rep.fn = report;
    p.rep.arg = arg;
    c = calloc(1, sizeof *c);
    if (!c || !(c->file = xstrdup(name))) {
        free(c);
        cfg_error(&p, 0, "out of memory");
        return 1;
    }
    p.cfg = c;
    c->global.log_level = MTLSLB_LOG_INFO;
    c->global.max_conns = 1024;
    c->global.workers = 1;
    c->global.tmo_handshake = 10000;
    c->global.tmo_connect = 3000;
    c->global.tmo_idle = 60000;
    c->global.tmo_request = 10000;
    c->global.grace = 10000;
    slash = strrchr(name, '/');
    p.dir = slash ? malloc((size_t)(slash - name) + 1) : NULL;
    if (p.dir) {
        memcpy(p.dir, name, (size_t)(slash - name));
        p.dir[slash - name] = 0;
        if (slash == name)
            strcpy(p.dir, "");       /* "/x.conf": paths join as "/path" */
    }
    while (pos < len) {
        const char *nl = memchr(text + pos, '\n', len - pos);
        size_t ll = nl ? (size_t)(nl - (text + pos)) : len - pos;
        p.line++;
        if (ll >= sizeof line)
            cfg_error(&p, p.line, "line longer than %d bytes", MTLSLB_MAX_LINE - 1);
        else if (memchr(text + pos, 0, ll))
            cfg_error(&p, p.line, "NUL byte in line");
        else {
            memcpy(line, text + pos, ll);
            line[ll] = 0;
            cfg_line(&p, line);
        }
        pos += ll + 1;
    }
    cfg_finish(&p);
    free(p.dir);
    if (p.rep.errors) {
        mtlslb_config_free(c);
        return p.rep.errors;
    }
    *out = c;
    return 0;
}

int mtlslb_config_parse(const char *path, struct mtlslb_config **out,
                        mtlslb_report_fn *report, void *arg)
{
    char msg[1200];
    FILE *f = fopen(path, "r");
    char *buf = NULL;
    size_t len = 0, cap = 0;
    int rc;

    *out = NULL;
    if (!f) {
        snprintf(msg, sizeof msg, "%s:0: cannot open: %s", path, strerror(errno));
        if (report)
            report(arg, msg);
        return 1;
    }
    for (;;) {
        size_t n;
        if (len == cap) {
            char *nb;
            if (cap >= (1u << 24))
                break;
            cap = cap ? cap * 2 : 8192;
            nb = realloc(buf, cap);
            if (!nb)
                break;
            buf = nb;
        }
        n = fread(buf + len, 1, cap - len, f);
        len += n;
        if (n == 0)
            break;
    }
    rc = ferror(f) || !feof(f);
    fclose(f);
    if (rc) {
        snprintf(msg, sizeof msg, "%s:0: cannot read (too large, or a read error)", path);
        if (report)
            report(arg, msg);
        free(buf);
        return 1;
    }
    rc = mtlslb_config_parse_text(path, buf ? buf : "", len, out, report, arg);
    free(buf);
    return rc;
}

static void cfg_free_crls(struct mtlslb_file *crls, size_t n)
{
    size_t i;

    for (i = 0; i < n; i++)
        free(crls[i].path);
    free(crls);
}

void mtlslb_config_free(struct mtlslb_config *c)
{
    size_t i, j;

    if (!c)
        return;
    for (i = 0; i < c->nlisteners; i++) {
        struct mtlslb_listener *l = &c->listeners[i];
        for (j = 0; j < l->nbinds; j++)
            free(l->binds[j].text);
        free(l->binds);
        for (j = 0; j < l->nsnis; j++) {
            struct mtlslb_sni *s = &l->snis[j];
            free(s->name);
            free(s->cert.path);
            free(s->key.path);
            free(s->ca.path);
            cfg_free_crls(s->crls, s->ncrls);
        }
        free(l->snis);
        free(l->name);
        free(l->cert.path);
        free(l->key.path);
        free(l->ca.path);
        cfg_free_crls(l->crls, l->ncrls);
        free(l->ciphers);
        free(l->default_backend);
        for (j = 0; j < l->nroutes; j++) {
            free(l->routes[j].host);
            free(l->routes[j].path);
            free(l->routes[j].backend_name);
            cfg_free_allows(l->routes[j].allows, l->routes[j].nallows);
        }
        free(l->routes);
        cfg_free_allows(l->allows, l->nallows);
    }
    free(c->listeners);
    for (i = 0; i < c->nbackends; i++) {
        struct mtlslb_backend *b = &c->backends[i];
        for (j = 0; j < b->nservers; j++) {
            free(b->servers[j].name);
            free(b->servers[j].addr_text);
            free(b->servers[j].tls_ca.path);
            free(b->servers[j].tls_cert.path);
            free(b->servers[j].tls_key.path);
            free(b->servers[j].tls_sni);
        }
        free(b->check_method);
        free(b->check_path);
        free(b->servers);
        free(b->name);
    }
    free(c->backends);
    free(c->global.stats.text);
    free(c->global.user);
    free(c->file);
    free(c);
}

/* ======================================================================
 * TLS (contexts, SNI, CA/CRL, identity)
 *
 * One WOLFSSL_CTX for a listener's default certificate and one per sni
 * line.  The servername callback moves a handshake to the sni context, whose
 * client CA and CRLs then apply.  Handshake errors become one of a few
 * reasons an operator can act on.
 * ====================================================================== */

/*
 * ECDHE with AEAD only, in the server's order of preference: AES-GCM first
 * where the linked wolfSSL has AES instructions, else ChaCha20-Poly1305,
 * which is two to three times faster than table AES (Debian's build has no
 * AES-NI: AES-128-GCM ~140 MB/s, ChaCha20-Poly1305 ~300 MB/s on one core).
 */
#define TLS_AES_CIPHERS                                                         \
    "TLS13-AES128-GCM-SHA256:TLS13-AES256-GCM-SHA384:"                          \
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"                \
    "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384"
#define TLS_CHACHA_CIPHERS                                                      \
    "TLS13-CHACHA20-POLY1305-SHA256:"                                           \
    "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305"
#if defined(WOLFSSL_AESNI) || defined(WOLFSSL_ARMASM)
#define TLS_DEFAULT_CIPHERS TLS_AES_CIPHERS ":" TLS_CHACHA_CIPHERS
#else
#define TLS_DEFAULT_CIPHERS TLS_CHACHA_CIPHERS ":" TLS_AES_CIPHERS
#endif

enum tls_reason {
    R_NO_CERT, R_UNKNOWN_CA, R_EXPIRED, R_NOT_YET_VALID, R_REVOKED, R_CRL_EXPIRED,
    R_CRL_MISSING, R_BAD_CERT, R_SNI, R_SESSION, R_TIMEOUT, R_CLOSED, R_PROTOCOL, R_DENIED, R_COUNT
};

static const char *const tls_reason_names[R_COUNT] = {
    "no certificate", "unknown CA", "expired", "not yet valid", "revoked",
    "CRL expired", "CRL missing", "bad certificate", "unknown SNI name",
    "resumed session refused", "handshake timeout", "closed by client", "protocol error",
    "access denied"
};

struct tls_crl {
    const struct mtlslb_file *file;
    time_t next_update;             /* 0 = not known */
    int warned;                     /* the 24 h warning is out */
    int expired_logged;
    int gone_logged;                /* the file cannot be read: said so */
    struct timespec mtime;          /* of the file as loaded: a change reloads it */
    off_t size;
};

static void tls_crl_stamp(struct tls_crl *c)
{
    struct stat st;

    if (stat(c->file->path, &st) == 0) {
        c->mtime = st.st_mtim;
        c->size = st.st_size;
    }
}

/* Has the file changed since it was loaded?  A file gone (deleted, moved
 * away, unreadable) is said once: the CRL loaded from it stays in force. */
static int tls_crl_changed(struct tls_crl *c, const char *listener)
{
    struct stat st;

    if (stat(c->file->path, &st) != 0) {
        if (!c->gone_logged)
            log_msg(MTLSLB_LOG_WARN, "listener %s: CRL %s: %s; the CRL loaded from it stays in "
                    "force until the file is back", listener, c->file->path, strerror(errno));
        c->gone_logged = 1;
        return 0;
    }
    c->gone_logged = 0;
    return st.st_mtim.tv_sec != c->mtime.tv_sec || st.st_mtim.tv_nsec != c->mtime.tv_nsec ||
           st.st_size != c->size;
}

struct tls_ctx {
    WOLFSSL_CTX *ctx;
    uint8_t *ca_names;              /* subject Names (DER) of the ca file, one after another */
    size_t ca_names_len;
    uint8_t *ints;                  /* its intermediate CAs (DER), one after another */
    size_t ints_len;
    const struct mtlslb_sni *sni;   /* NULL for the default certificate */
    int verify;                     /* wolfSSL verify mode */
    struct tls_crl *crls;
    size_t ncrls;
    int reload_failed;              /* tls_ctx_reload: failed, said so, retries quietly */
};

struct tls_listener {
    const struct mtlslb_listener *cfg;
    const char *file;               /* the configuration's, for CRL reload errors */
    struct tls_ctx def;
    struct tls_ctx *sni;
    size_t nsni;
    uint32_t serial;                /* binds tickets to this build of the listener */
    int rng;                        /* def.ctx has the connections' shared generator */
};

/* What a session ticket brought to one handshake (see tls_ticket_cb). */
struct tls_resume {
    uint8_t *der;                   /* the client certificate of the full handshake */
    size_t len;                     /* 0: it had none */
    uint8_t fp[32];                 /* SHA-256 of der, zero without one */
    unsigned sni;                   /* the context it was made under: 0 default, i+1 sni[i] */
    unsigned ok : 1;                /* a ticket of ours was opened and accepted */
    unsigned fetched : 1;           /* a full handshake: der/len/fp are its peer's */
    unsigned sid : 1;               /* resumed by a session id tk_sids knows for this
                                       listener build and name (conn_peer_der) */
    /* not about resumption, but per handshake too: */
    struct tls_listener *tl;        /* the listener of the handshake */
    unsigned denied : 1;            /* tls_verify_cb refused the certificate (allow) */
    unsigned no_sign : 1;           /* ... (a keyUsage without digitalSignature) */
    unsigned int_bad : 1;           /* ... (a ca file intermediate a CRL refuses: int_why) */
    unsigned char int_why;
    unsigned chain_bad : 1;         /* ... or its chain (tls_chain_own) */
    char denied_cn[64];
};

static int tls_peer_keep(struct tls_resume *tr, const unsigned char *der, int len);

/* Forget what a ticket or a fetch brought (not the listener, nor a refusal). */
static void tr_reset(struct tls_resume *tr)
{
    free(tr->der);
    tr->der = NULL;
    tr->len = 0;
    memset(tr->fp, 0, sizeof tr->fp);
    tr->sni = 0;
    tr->ok = 0;
    tr->fetched = 0;
}



/* A file must exist and be readable before wolfSSL is asked to parse it, so
 * the error says which of the two went wrong. */
static int tls_readable(struct report *r, const struct mtlslb_file *f, const char *what)
{
    FILE *fp = fopen(f->path, "r");

    if (!fp) {
        report_at(r, f->line, "cannot open %s %s: %s", what, f->path, strerror(errno));
        return -1;
    }
    fclose(fp);
    return 0;
}

static int b64_val(int c)
{
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+') return 62;
    if (c == '/') return 63;
    return -1;
}

static size_t b64_decode(const char *s, size_t len, uint8_t *out)
{
    uint32_t acc = 0;
    int bits = 0;
    size_t i, n = 0;

    for (i = 0; i < len; i++) {
        int v = b64_val((unsigned char)s[i]);
        if (v < 0)
            continue;
        acc = (acc << 6) | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[n++] = (uint8_t)(acc >> bits);
        }
    }
    return n;
}

/* One DER header: tag and content length; *pos moves to the content. */
static int der_hdr(const uint8_t *d, size_t len, size_t *pos, uint8_t *tag, size_t *clen)
{
    size_t p = *pos, l;
    unsigned nb;

    if (p + 2 > len)
        return -1;
    *tag = d[p++];
    l = d[p++];
    if (l & 0x80) {
        nb = l & 0x7f;
        if (nb == 0 || nb > 4 || p + nb > len)
            return -1;
        for (l = 0; nb--; )
            l = (l << 8) | d[p++];
    }
    if (l > len - p)
        return -1;
    *pos = p;
    *clen = l;
    return 0;
}

/* Days since 1970-01-01 of a civil date (proleptic Gregorian). */
static long days_from_civil(long y, unsigned m, unsigned d)
{
    long era;
    unsigned yoe, doy, doe;

    y -= m <= 2;
    era = (y >= 0 ? y : y - 399) / 400;
    yoe = (unsigned)(y - era * 400);
    doy = (153 * (m + (m > 2 ? (unsigned)-3 : 9)) + 2) / 5 + d - 1;
    doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + (long)doe - 719468;
}

static int der_time(uint8_t tag, const uint8_t *s, size_t len, time_t *out)
{
    unsigned v[6], i, k = 0;
    long year;

    if (!((tag == 0x17 && len == 13) || (tag == 0x18 && len == 15)) || s[len - 1] != 'Z')
        return -1;
    for (i = 0; i < len - 1; i++)
        if (s[i] < '0' || s[i] > '9')
            return -1;
    if (tag == 0x17) {
        year = (s[0] - '0') * 10 + (s[1] - '0');
        year += year < 50 ? 2000 : 1900;
        k = 2;
    } else {
        year = (s[0] - '0') * 1000 + (s[1] - '0') * 100 + (s[2] - '0') * 10 + (s[3] - '0');
        k = 4;
    }
    for (i = 0; i < 5; i++, k += 2)
        v[i] = (unsigned)((s[k] - '0') * 10 + (s[k + 1] - '0'));
    if (v[0] < 1 || v[0] > 12 || v[1] < 1 || v[1] > 31)
        return -1;
    *out = (time_t)(days_from_civil(year, v[0], v[1]) * 86400L +
                    (long)v[2] * 3600 + (long)v[3] * 60 + (long)v[4]);
    return 0;
}

/* nextUpdate of one DER CRL (RFC 5280 5.1): 0 when absent. */
static int crl_der_next(const uint8_t *d, size_t len, time_t *out)
{
    size_t pos = 0, l;
    uint8_t tag;

    *out = 0;
    if (der_hdr(d, len, &pos, &tag, &l) < 0 || tag != 0x30)    /* CertificateList */
        return -1;
    if (der_hdr(d, len, &pos, &tag, &l) < 0 || tag != 0x30)    /* TBSCertList */
        return -1;
    len = pos + l;
    if (der_hdr(d, len, &pos, &tag, &l) < 0)
        return -1;
    if (tag == 0x02) {                                          /* version */
        pos += l;
        if (der_hdr(d, len, &pos, &tag, &l) < 0)
            return -1;
    }
    pos += l;                                                   /* signature */
    if (der_hdr(d, len, &pos, &tag, &l) < 0 || tag != 0x30)    /* issuer */
        return -1;
    pos += l;
    if (der_hdr(d, len, &pos, &tag, &l) < 0)                   /* thisUpdate */
        return -1;
    pos += l;
    if (pos >= len || der_hdr(d, len, &pos, &tag, &l) < 0)
        return 0;
    if (tag != 0x17 && tag != 0x18)
        return 0;
    return der_time(tag, d + pos, l, out);
}

/*
 * Call fn on each DER object of a PEM file under "-----BEGIN <label>-----"
 * (or on the whole file if it is DER).  Returns how many were found, or -1
 * if the file cannot be read.
 */
static int pem_each(const char *path, const char *label,
                    void (*fn)(const uint8_t *der, size_t len, void *arg), void *arg)
{
    char begin[64], end[64];
    FILE *f = fopen(path, "rb");
    char *buf;
    uint8_t *der;
    size_t len;
    const char *p;
    int found = 0;

    if (!f)
        return -1;
    buf = malloc(1u << 22);
    der = malloc(1u << 22);
    if (!buf || !der) {
        free(buf);
        free(der);
        fclose(f);
        return -1;
    }
    len = fread(buf, 1, (1u << 22) - 1, f);
    fclose(f);
    buf[len] = 0;
    snprintf(begin, sizeof begin, "-----BEGIN %s-----", label);
    snprintf(end, sizeof end, "-----END %s-----", label);
    if (len && (uint8_t)buf[0] == 0x30) {
        fn((uint8_t *)buf, len, arg);
        found = 1;
    } else {
        for (p = strstr(buf, begin); p; p = strstr(p, begin)) {
            const char *e = strstr(p, end);
            if (!e)
                break;
            p += strlen(begin);
            fn(der, b64_decode(p, (size_t)(e - p), der), arg);
            found++;
            p = e;
        }
    }
    free(buf);
    free(der);
    return found;
}

static void crl_next_one(const uint8_t *der, size_t len, void *arg)
{
    time_t *out = arg, t;

    if (crl_der_next(der, len, &t) == 0 && t && (!*out || t < *out))
        *out = t;
}

/*
 * The earliest nextUpdate among the CRLs in a PEM (or DER) file.  wolfSSL
 * 5.5 refuses to load an expired CRL with a parse error; reading the date
 * here lets the log say "CRL expired" instead.
 */
static int crl_next_update(const char *path, time_t *out)
{
    *out = 0;
    return pem_each(path, "X509 CRL", crl_next_one, out) > 0 ? 0 : -1;
}

/* Where a certificate's TBS fields are: each a whole DER TLV (tag, length,
 * content), through the subjectPublicKeyInfo; end is the TBS's end (the
 * optional unique IDs and [3] extensions lie between spki's end and it). */
struct der_span {
    const uint8_t *p;
    size_t len;
};

struct cert_tbs {
    struct der_span serial, issuer, validity, subject, spki;
    size_t end;                     /* offset of the TBS's end in the DER */
    size_t next;                    /* offset just after spki */
};

static int cert_tbs(const uint8_t *der, size_t len, struct cert_tbs *t)
{
    struct der_span *span;
    size_t pos = 0, l, start;
    uint8_t tag;
    int i;

    if (der_hdr(der, len, &pos, &tag, &l) < 0 || tag != 0x30 ||
        der_hdr(der, len, &pos, &tag, &l) < 0 || tag != 0x30)
        return -1;
    t->end = pos + l;
    for (i = 0; i < 7; i++) {       /* [0] version, serial, signature, issuer, validity, subject, spki */
        start = pos;
        if (der_hdr(der, t->end, &pos, &tag, &l) < 0)
            return -1;
        if (i == 0 && tag != 0xa0)
            i++;                    /* no version: that was the serial */
        pos += l;
        span = i == 1 ? &t->serial : i == 3 ? &t->issuer : i == 4 ? &t->validity :
               i == 5 ? &t->subject : i == 6 ? &t->spki : NULL;
        if (span) {
            span->p = der + start;
            span->len = pos - start;
        }
    }
    t->next = pos;
    return 0;
}

/* A certificate's issuer and subject Names, as whole DER TLVs. */
static int cert_names(const uint8_t *der, size_t len, const uint8_t **iss, size_t *iss_len,
                      const uint8_t **sub, size_t *sub_len)
{
    struct cert_tbs t;

    if (cert_tbs(der, len, &t) < 0)
        return -1;
    *iss = t.issuer.p;
    *iss_len = t.issuer.len;
    *sub = t.subject.p;
    *sub_len = t.subject.len;
    return 0;
}

static void tls_fmt_time(time_t t, char *out, size_t len)
{
    struct tm tm;

    gmtime_r(&t, &tm);
    strftime(out, len, "%Y-%m-%d %H:%M:%S UTC", &tm);
}

/* ---- client identity, decoded from the certificate's DER ---- */

struct id_out {
    char *p;
    size_t len, cap;                /* cap includes the terminating NUL */
};

static void id_put(struct id_out *o, const char *s, size_t n)
{
    if (o->len + n >= o->cap)
        n = o->len + 1 < o->cap ? o->cap - 1 - o->len : 0;
    memcpy(o->p + o->len, s, n);
    o->len += n;
    o->p[o->len] = 0;
}

static void id_hex(struct id_out *o, const uint8_t *d, size_t n, const char *digits)
{
    char h[2];
    size_t i;

    for (i = 0; i < n; i++) {
        h[0] = digits[d[i] >> 4];
        h[1] = digits[d[i] & 15];
        id_put(o, h, 2);
    }
}

/* Attribute types by their DER OID content; others print as dotted OIDs. */
static const struct { const char *name; uint8_t len; uint8_t oid[10]; } id_attrs[] = {
    { "CN", 3, { 0x55, 0x04, 0x03 } },
    { "C", 3, { 0x55, 0x04, 0x06 } },
    { "L", 3, { 0x55, 0x04, 0x07 } },
    { "ST", 3, { 0x55, 0x04, 0x08 } },
    { "STREET", 3, { 0x55, 0x04, 0x09 } },
    { "O", 3, { 0x55, 0x04, 0x0a } },
    { "OU", 3, { 0x55, 0x04, 0x0b } },
    { "serialNumber", 3, { 0x55, 0x04, 0x05 } },
    { "DC", 10, { 0x09, 0x92, 0x26, 0x89, 0x93, 0xf2, 0x2c, 0x64, 0x01, 0x19 } },
    { "UID", 10, { 0x09, 0x92, 0x26, 0x89, 0x93, 0xf2, 0x2c, 0x64, 0x01, 0x01 } },
    { "emailAddress", 9, { 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x09, 0x01 } },
};

static void id_oid(struct id_out *o, const uint8_t *d, size_t n)
{
    char num[24];
    unsigned long v = 0;
    size_t i;

    for (i = 0; i < sizeof id_attrs / sizeof id_attrs[0]; i++)
        if (id_attrs[i].len == n && memcmp(id_attrs[i].oid, d, n) == 0) {
            id_put(o, id_attrs[i].name, strlen(id_attrs[i].name));
            return;
        }
    for (i = 0; i < n; i++) {
        v = (v << 7) | (d[i] & 0x7f);
        if (d[i] & 0x80 && v < (1ul << 24))
            continue;
        if (o->len == 0 || o->p[o->len - 1] == ',' || o->p[o->len - 1] == '+' ||
            o->p[o->len - 1] == ' ')
            snprintf(num, sizeof num, "%lu.%lu", v < 80 ? v / 40 : 2, v < 80 ? v % 40 : v - 80);
        else
            snprintf(num, sizeof num, ".%lu", v);
        id_put(o, num, strlen(num));
        v = 0;
    }
}

/* RFC 4514 2.4 as OpenSSL's RFC 2253 output has it: the specials
 * ,+"\<>; (not '='), a leading '#' or blank and a trailing blank escaped
 * with '\', and every byte outside printable ASCII as \HH: no CR, LF or
 * NUL can ever reach a header or a log line. */
static void id_value(struct id_out *o, const uint8_t *d, size_t n)
{
    size_t i;

    for (i = 0; i < n; i++) {
        uint8_t ch = d[i];
        char e[4];
        if (ch < 0x20 || ch >= 0x7f) {
            snprintf(e, sizeof e, "\\%02X", ch);
            id_put(o, e, 3);
            continue;
        }
        if (strchr(",+\"\\<>;", ch) || (i == 0 && (ch == '#' || ch == ' ')) ||
            (i == n - 1 && ch == ' '))
            id_put(o, "\\", 1);
        id_put(o, (const char *)&ch, 1);
    }
}

/* One AttributeTypeAndValue at *p (up to end) as TYPE=VALUE; *p moves past
 * it.  The first CN it meets goes to cn when asked. */
static int id_ava(const uint8_t *d, size_t end, size_t *p, struct id_out *o, char *cn,
                  size_t cncap)
{
    size_t al, ol, vl, atv_end, vstart;
    const uint8_t *oid, *val;
    uint8_t tag, vtag;

    if (der_hdr(d, end, p, &tag, &al) < 0 || tag != 0x30)
        return -1;
    atv_end = *p + al;
    if (der_hdr(d, atv_end, p, &tag, &ol) < 0 || tag != 0x06)
        return -1;
    oid = d + *p;
    *p += ol;
    vstart = *p;
    if (der_hdr(d, atv_end, p, &vtag, &vl) < 0)
        return -1;
    val = d + *p;
    *p = atv_end;
    id_oid(o, oid, ol);
    id_put(o, "=", 1);
    if (vtag == 0x0c || vtag == 0x13 || vtag == 0x16 || vtag == 0x14 || vtag == 0x1a) {
        id_value(o, val, vl);
        if (cn && !cn[0] && ol == 3 && memcmp(oid, "\x55\x04\x03", 3) == 0) {
            size_t k, m = vl < cncap - 1 ? vl : cncap - 1;
            for (k = 0; k < m; k++)
                cn[k] = (val[k] >= 0x20 && val[k] < 0x7f) ? (char)val[k] : '?';
            cn[m] = 0;
        }
    } else {
        id_put(o, "#", 1);          /* not a string: its DER, in hex */
        id_hex(o, d + vstart, (size_t)(val - (d + vstart)) + vl, "0123456789ABCDEF");
    }
    return 0;
}

/* A Name (RFC 5280 4.1.2.4) as an RFC 4514 string, in OpenSSL's order: its
 * attributes from last to first in DER order, RDN by RDN and within a
 * multi-valued RDN too (CN=a+UID=1 prints UID=1+CN=a).  The first CN so
 * printed (the last in DER order) goes to cn when asked. */
static int id_name(const uint8_t *d, size_t len, struct id_out *o, char *cn, size_t cncap)
{
    size_t rdn[64], nrdn = 0, pos = 0, l;
    uint8_t tag;

    while (pos < len) {
        if (nrdn == 64)
            return -1;
        rdn[nrdn++] = pos;
        if (der_hdr(d, len, &pos, &tag, &l) < 0 || tag != 0x31)
            return -1;
        pos += l;
    }
    while (nrdn-- > 0) {
        size_t p = rdn[nrdn], end, ava[16], n = 0, k;
        if (der_hdr(d, len, &p, &tag, &l) < 0)
            return -1;
        for (end = p + l; p < end; p += l) {       /* its AVAs, printed last first */
            if (n == 16)
                return -1;
            ava[n++] = p;
            if (der_hdr(d, end, &p, &tag, &l) < 0)
                return -1;
        }
        for (k = n; k-- > 0;) {
            if (o->len)
                id_put(o, k == n - 1 ? "," : "+", 1);
            if (id_ava(d, end, &ava[k], o, cn, cncap) < 0)
                return -1;
        }
    }
    return 0;
}

/* The content of a TBS field: where it starts in its span, and its length;
 * -1 if the field is not of tag want. */
static int cert_field(const struct der_span *f, uint8_t want, size_t *pos, size_t *len)
{
    uint8_t tag;

    *pos = 0;
    return der_hdr(f->p, f->len, pos, &tag, len) < 0 || tag != want ? -1 : 0;
}

/* notAfter, from the TBS's validity. */
static int cert_not_after(const struct cert_tbs *t, time_t *out)
{
    size_t pos, l, end;
    uint8_t tag;

    if (cert_field(&t->validity, 0x30, &pos, &l) < 0)
        return -1;
    end = pos + l;
    if (der_hdr(t->validity.p, end, &pos, &tag, &l) < 0)                /* notBefore */
        return -1;
    pos += l;
    if (der_hdr(t->validity.p, end, &pos, &tag, &l) < 0)                /* notAfter */
        return -1;
    return der_time(tag, t->validity.p + pos, l, out);
}

/* The serial (upper-case hex, no leading zero bytes) and the SHA-256 of the
 * DER (lower-case hex): X-Client-Serial and -Fingerprint, and what allow
 * serial / fingerprint compare with. */
static int cert_serial_fp(const uint8_t *der, size_t len, const struct cert_tbs *t,
                          char *serial, size_t scap, char *fp, size_t fcap)
{
    struct id_out o;
    size_t pos, l, skip = 0;
    uint8_t md[32];

    if (cert_field(&t->serial, 0x02, &pos, &l) < 0 || l == 0 || l > 64 ||
        wc_Sha256Hash(der, (word32)len, md) != 0)
        return -1;
    while (skip + 1 < l && t->serial.p[pos + skip] == 0)
        skip++;
    o.p = serial;
    o.len = 0;
    o.cap = scap;
    id_hex(&o, t->serial.p + pos + skip, l - skip, "0123456789ABCDEF");
    o.p = fp;
    o.len = 0;
    o.cap = fcap;
    id_hex(&o, md, sizeof md, "0123456789abcdef");
    return 0;
}

int mtlslb_cert_identity(const uint8_t *der, size_t len, struct mtlslb_identity *id)
{
    struct cert_tbs t;
    struct id_out o;
    size_t pos, l;
    time_t na;

    memset(id, 0, sizeof *id);
    if (cert_tbs(der, len, &t) < 0 ||
        cert_serial_fp(der, len, &t, id->serial, sizeof id->serial, id->fingerprint,
                       sizeof id->fingerprint) < 0 ||
        cert_not_after(&t, &na) < 0)
        return -1;
    fmt_iso(na, id->not_after, sizeof id->not_after);
    o.p = id->issuer;
    o.len = 0;
    o.cap = sizeof id->issuer;
    if (cert_field(&t.issuer, 0x30, &pos, &l) < 0 || id_name(t.issuer.p + pos, l, &o, NULL, 0) < 0)
        return -1;
    o.p = id->subject;
    o.len = 0;
    o.cap = sizeof id->subject;
    if (cert_field(&t.subject, 0x30, &pos, &l) < 0 ||
        id_name(t.subject.p + pos, l, &o, id->cn, sizeof id->cn) < 0)
        return -1;
    return 0;
}

/* ---- access control: the certificate's values, and matching them ---- */

static void peer_add(struct mtlslb_peer *pe, enum mtlslb_allow_field f, const uint8_t *p, size_t len)
{
    if (pe->n < MTLSLB_PEER_VALUES) {
        pe->v[pe->n].field = f;
        pe->v[pe->n].p = p;
        pe->v[pe->n].len = len;
        pe->n++;
    }
}

/* CN, OU and O of a Name (any RDN, any order). */
static int peer_name(const uint8_t *d, size_t len, struct mtlslb_peer *pe)
{
    size_t pos = 0, l;
    uint8_t tag;

    while (pos < len) {
        size_t end;
        if (der_hdr(d, len, &pos, &tag, &l) < 0 || tag != 0x31)
            return -1;
        for (end = pos + l; pos < end; ) {
            size_t al, ol, vl, atv_end;
            const uint8_t *oid;
            uint8_t vtag;
            if (der_hdr(d, end, &pos, &tag, &al) < 0 || tag != 0x30)
                return -1;
            atv_end = pos + al;
            if (der_hdr(d, atv_end, &pos, &tag, &ol) < 0 || tag != 0x06)
                return -1;
            oid = d + pos;
            pos += ol;
            if (der_hdr(d, atv_end, &pos, &vtag, &vl) < 0)
                return -1;
            if (ol == 3 && oid[0] == 0x55 && oid[1] == 0x04 &&
                (vtag == 0x0c || vtag == 0x13 || vtag == 0x16 || vtag == 0x14)) {
                if (oid[2] == 3)
                    peer_add(pe, MTLSLB_ALLOW_CN, d + pos, vl);
                else if (oid[2] == 11)
                    peer_add(pe, MTLSLB_ALLOW_OU, d + pos, vl);
                else if (oid[2] == 10)
                    peer_add(pe, MTLSLB_ALLOW_O, d + pos, vl);
            }
            pos = atv_end;
        }
    }
    return 0;
}

/* The DNS, URI and e-mail names of a subjectAltName extension's value. */
static int peer_san(const uint8_t *d, size_t len, struct mtlslb_peer *pe)
{
    size_t pos = 0, l, end;
    uint8_t tag;

    if (der_hdr(d, len, &pos, &tag, &l) < 0 || tag != 0x30)
        return -1;
    for (end = pos + l; pos < end; pos += l) {
        if (der_hdr(d, end, &pos, &tag, &l) < 0)
            return -1;
        if (tag == 0x82)
            peer_add(pe, MTLSLB_ALLOW_SAN_DNS, d + pos, l);
        else if (tag == 0x86)
            peer_add(pe, MTLSLB_ALLOW_SAN_URI, d + pos, l);
        else if (tag == 0x81)
            peer_add(pe, MTLSLB_ALLOW_SAN_EMAIL, d + pos, l);
    }
    return 0;
}

/*
 * The value (the OCTET STRING's content) of a certificate's extension
 * 2.5.29.ID: 1 with *v, *vl set, 0 if it has none, -1 if the extensions do
 * not parse.
 */
static int cert_ext(const uint8_t *der, const struct cert_tbs *t, uint8_t id,
                    const uint8_t **v, size_t *vl)
{
    size_t pos = t->next, l, tbs_end = t->end;
    uint8_t tag;

    while (pos < tbs_end) {         /* [1] issuerUID, [2] subjectUID, [3] extensions */
        size_t end, e;
        if (der_hdr(der, tbs_end, &pos, &tag, &l) < 0)
            return -1;
        if (tag != 0xa3) {
            pos += l;
            continue;
        }
        end = pos + l;
        if (der_hdr(der, end, &pos, &tag, &l) < 0 || tag != 0x30)
            return -1;
        for (end = pos + l; pos < end; pos = e) {
            size_t ol;
            const uint8_t *oid;
            if (der_hdr(der, end, &pos, &tag, &l) < 0 || tag != 0x30)
                return -1;
            e = pos + l;
            if (der_hdr(der, e, &pos, &tag, &ol) < 0 || tag != 0x06)
                return -1;
            oid = der + pos;
            pos += ol;
            if (der_hdr(der, e, &pos, &tag, vl) < 0)
                return -1;
            if (tag == 0x01) {      /* critical */
                pos += *vl;
                if (der_hdr(der, e, &pos, &tag, vl) < 0)
                    return -1;
            }
            if (tag != 0x04)
                return -1;
            if (ol == 3 && oid[0] == 0x55 && oid[1] == 0x1d && oid[2] == id) {
                *v = der + pos;
                return 1;
            }
        }
    }
    return 0;
}

int mtlslb_cert_peer(const uint8_t *der, size_t len, struct mtlslb_peer *pe)
{
    struct cert_tbs t;
    size_t pos, l, vl;
    const uint8_t *v;
    int rc;

    memset(pe, 0, sizeof *pe);
    if (cert_tbs(der, len, &t) < 0 ||
        cert_serial_fp(der, len, &t, pe->serial, sizeof pe->serial, pe->fingerprint,
                       sizeof pe->fingerprint) < 0 ||
        cert_field(&t.subject, 0x30, &pos, &l) < 0 || peer_name(t.subject.p + pos, l, pe) < 0)
        return -1;
    rc = cert_ext(der, &t, 0x11, &v, &vl);                             /* subjectAltName */
    return rc < 0 || (rc > 0 && peer_san(v, vl, pe) < 0) ? -1 : 0;
}

/*
 * May the certificate sign, as a TLS client certificate must (RFC 5280
 * 4.2.1.3; OpenSSL's ssl_client purpose asks the same)?  0 if it has a
 * keyUsage without digitalSignature (a CA certificate: keyCertSign,
 * cRLSign), 1 if it may, -1 if it does not parse.
 */
int mtlslb_cert_may_sign(const uint8_t *der, size_t len)
{
    struct cert_tbs t;
    size_t pos = 0, l, vl;
    const uint8_t *v;
    uint8_t tag;
    int rc;

    if (cert_tbs(der, len, &t) < 0 || (rc = cert_ext(der, &t, 0x0f, &v, &vl)) < 0)
        return -1;
    if (rc == 0)
        return 1;                   /* no keyUsage: any use */
    if (der_hdr(v, vl, &pos, &tag, &l) < 0 || tag != 0x03 || l < 1)
        return -1;
    return l >= 2 && (v[pos + 1] & 0x80);                   /* bit 0: digitalSignature */
}

/* Glob match of bytes: `*` takes any run of bytes but control bytes (so
 * UTF-8 too: "J*" matches a CN of "J\xC3\xBCrgen"), so a value with a
 * control byte (or NUL) can match only where the pattern has it. */
int mtlslb_allow_match(const char *pat, const uint8_t *v, size_t len, int icase)
{
    const char *star = NULL;
    size_t i = 0, mark = 0;

    while (i < len || *pat) {
        if (*pat == '*') {
            star = pat++;
            mark = i;
            continue;
        }
        if (i < len && *pat &&
            (icase ? tolower((unsigned char)*pat) == tolower(v[i]) : (uint8_t)*pat == v[i])) {
            pat++;
            i++;
            continue;
        }
        /* back to the last star, which takes one more byte, not a control one */
        if (!star || mark >= len || v[mark] < 0x20 || v[mark] == 0x7f)
            return 0;
        pat = star + 1;
        i = ++mark;
    }
    return 1;
}

int mtlslb_identity_allowed(const struct mtlslb_allow *rules, size_t n,
                            const struct mtlslb_peer *pe)
{
    size_t r, k, j;

    if (n == 0)
        return 1;
    if (!pe)
        return 0;                   /* no certificate matches no rule */
    for (r = 0; r < n; r++) {
        const struct mtlslb_allow *a = &rules[r];
        for (k = 0; k < a->npatterns; k++) {
            const char *pat = a->patterns[k];
            if (a->field == MTLSLB_ALLOW_FINGERPRINT || a->field == MTLSLB_ALLOW_SERIAL) {
                const char *have = a->field == MTLSLB_ALLOW_FINGERPRINT ? pe->fingerprint : pe->serial;
                if (*have && (strchr(pat, '*') ?
                              mtlslb_allow_match(pat, (const uint8_t *)have, strlen(have), 1) :
                              strcasecmp(pat, have) == 0))
                    return 1;
                continue;
            }
            for (j = 0; j < pe->n; j++)
                if (pe->v[j].field == a->field &&
                    mtlslb_allow_match(pat, pe->v[j].p, pe->v[j].len,
                                       a->field == MTLSLB_ALLOW_SAN_DNS))
                    return 1;
        }
    }
    return 0;
}

/*
 * SPEC 4 wants the alert access_denied after the handshake; wolfSSL 5.5 has
 * no public call to send an alert of the application's choosing.  Its own
 * sender is internal: hidden in a shared libwolfssl (the weak reference
 * below is then NULL), but linked in from a static one (WOLFSSL_SRC
 * builds).  Without it, tls_seal_alert below; where neither can, a refused
 * certificate fails verification with bad_certificate.
 */
#if defined(__GNUC__) || defined(__clang__)
int SendAlert(WOLFSSL *ssl, int severity, int type) __attribute__((weak));
#define TLS_HAS_SENDALERT() (SendAlert != NULL)
#else
#define TLS_HAS_SENDALERT() 0
#endif

/*
 * Without SendAlert, a libwolfssl built with ATOMIC_USER (Debian's is)
 * still hands out the write key, IV and sequence number of a connection,
 * so the one alert record is sealed here: AES-GCM or ChaCha20-Poly1305,
 * TLS 1.3 (RFC 8446 5.2: inner type 21, outer 23, nonce = IV ^ seq) or
 * TLS 1.2 (RFC 5288: 4-byte salt and 8-byte explicit nonce; RFC 7905: IV ^
 * seq; additional data seq, type, version, length).  The connection is
 * closed right after it: wolfSSL's own sequence number never matters again.
 */
#if defined(ATOMIC_USER) && defined(HAVE_AESGCM)
#define TLS_SEAL 1
#endif

#ifdef TLS_SEAL
/* Can tls_seal_alert seal for this connection's cipher? */
static int tls_seal_ok(WOLFSSL *ssl)
{
    const char *v = wolfSSL_get_version(ssl);
    int bulk = wolfSSL_GetBulkCipher(ssl);

    return wolfSSL_GetSide(ssl) == WOLFSSL_SERVER_END && v &&
           (strcmp(v, "TLSv1.3") == 0 || strcmp(v, "TLSv1.2") == 0) &&
           (bulk == wolfssl_aes_gcm
#if defined(HAVE_CHACHA) && defined(HAVE_POLY1305)
            || bulk == wolfssl_chacha
#endif
           ) && wolfSSL_GetAeadMacSize(ssl) == 16;
}

static int tls_seal_alert(WOLFSSL *ssl, int fd, uint8_t desc)
{
    const uint8_t *key = wolfSSL_GetServerWriteKey(ssl), *iv = wolfSSL_GetServerWriteIV(ssl);
    int ksz = wolfSSL_GetKeySize(ssl), tls13 = strcmp(wolfSSL_get_version(ssl), "TLSv1.3") == 0;
    int chacha = wolfSSL_GetBulkCipher(ssl) != wolfssl_aes_gcm;
    uint8_t rec[5 + 8 + 3 + 16], pt[3], nonce[12], aad[13], *body, *tag;
    word64 seq = 0;
    size_t ptlen = tls13 ? 3 : 2, n, i, aadlen;
    int r = -1;

    if (!key || !iv || (ksz != 16 && ksz != 32))
        return -1;
    (void)wolfSSL_GetSequenceNumber(ssl, &seq);     /* "fails" when seq is 0 */
    pt[0] = alert_fatal;
    pt[1] = desc;
    pt[2] = 21;                                     /* TLS 1.3: the inner content type */
    if (tls13 || chacha) {
        memcpy(nonce, iv, 12);
        for (i = 0; i < 8; i++)
            nonce[4 + i] ^= (uint8_t)(seq >> (56 - 8 * i));
    } else {
        memcpy(nonce, iv, 4);
        for (i = 0; i < 8; i++)
            nonce[4 + i] = (uint8_t)(seq >> (56 - 8 * i));
    }
    n = (tls13 || chacha ? 0 : 8) + ptlen + 16;
    rec[0] = tls13 ? 23 : 21;
    rec[1] = 3;
    rec[2] = 3;
    rec[3] = 0;
    rec[4] = (uint8_t)n;
    body = rec + 5;
    if (!tls13 && !chacha) {
        memcpy(body, nonce + 4, 8);                 /* the explicit nonce */
        body += 8;
    }
    tag = body + ptlen;
    if (tls13) {
        memcpy(aad, rec, 5);
        aadlen = 5;
    } else {
        for (i = 0; i < 8; i++)
            aad[i] = (uint8_t)(seq >> (56 - 8 * i));
        aad[8] = 21;
        aad[9] = 3;
        aad[10] = 3;
        aad[11] = 0;
        aad[12] = (uint8_t)ptlen;
        aadlen = 13;
    }
    if (chacha) {
#if defined(HAVE_CHACHA) && defined(HAVE_POLY1305)
        if (ksz == 32)
            r = wc_ChaCha20Poly1305_Encrypt(key, nonce, aad, (word32)aadlen, pt, (word32)ptlen,
                                            body, tag);
#endif
    } else {
        Aes aes;
        if (wc_AesInit(&aes, NULL, INVALID_DEVID) == 0) {
            if (wc_AesGcmSetKey(&aes, key, (word32)ksz) == 0)
                r = wc_AesGcmEncrypt(&aes, body, pt, (word32)ptlen, nonce, 12, tag, 16, aad,
                                     (word32)aadlen);
            wc_AesFree(&aes);
        }
    }
    if (r != 0)
        return -1;
    n += 5;
    return send(fd, rec, n, MSG_NOSIGNAL) == (ssize_t)n ? 0 : -1;
}
#endif

/* Can access_denied follow this connection's handshake? */
static int tls_can_alert(WOLFSSL *ssl)
{
#ifdef TLS_SEAL
    if (tls_seal_ok(ssl))
        return 1;
#endif
    (void)ssl;
    return TLS_HAS_SENDALERT();
}

/* Send the alert access_denied on an established connection, where it can. */
static int tls_alert_denied(WOLFSSL *ssl, int fd)
{
#if defined(__GNUC__) || defined(__clang__)
    if (TLS_HAS_SENDALERT())
        return SendAlert(ssl, alert_fatal, access_denied) == 0 ? 0 : -1;
#endif
#ifdef TLS_SEAL
    if (tls_seal_ok(ssl))
        return tls_seal_alert(ssl, fd, access_denied);
#endif
    (void)ssl;
    (void)fd;
    return -1;
}

/* Is this Name (a DER TLV) the subject of a certificate of the ca file? */
static int tls_ca_has(const struct tls_ctx *x, const uint8_t *name, size_t len)
{
    size_t pos = 0, start, l;
    uint8_t tag;

    while (pos < x->ca_names_len) {
        start = pos;
        if (der_hdr(x->ca_names, x->ca_names_len, &pos, &tag, &l) < 0)
            return 0;
        pos += l;
        if (pos - start == len && memcmp(x->ca_names + start, name, len) == 0)
            return 1;
    }
    return 0;
}

static void tls_ca_name_add(const uint8_t *der, size_t len, void *arg)
{
    struct tls_ctx *x = arg;
    const uint8_t *iss, *sub;
    size_t il, sl;
    uint8_t *p;

    if (cert_names(der, len, &iss, &il, &sub, &sl) < 0 ||
        !(p = realloc(x->ca_names, x->ca_names_len + sl)))
        return;                     /* wolfSSL refuses such a file anyway */
    memcpy(p + x->ca_names_len, sub, sl);
    x->ca_names = p;
    x->ca_names_len += sl;
    if ((il == sl && memcmp(iss, sub, il) == 0) || !(p = realloc(x->ints, x->ints_len + len)))
        return;                     /* a root (or no memory: the CRL check below misses it) */
    memcpy(p + x->ints_len, der, len);
    x->ints = p;
    x->ints_len += len;
}

static int tls_crl_expired(const struct tls_ctx *x, time_t now)
{
    size_t i;

    for (i = 0; i < x->ncrls; i++)
        if (x->crls[i].next_update && x->crls[i].next_update <= now)
            return 1;
    return 0;
}

/* Why wolfSSL_CertManagerCheckCRL refused a certificate, as a full
 * handshake would log it. */
static enum tls_reason tls_crl_reason(const struct tls_ctx *x, int rc)
{
    return rc == CRL_CERT_REVOKED ? R_REVOKED : tls_crl_expired(x, time(NULL)) ? R_CRL_EXPIRED :
           R_CRL_MISSING;
}

/*
 * The ca file's intermediate CAs above a certificate, by issuer name, each
 * checked against the CRLs.  wolfSSL (CRL_CHECKALL) checks the CA
 * certificates a client sends, not those it takes from the ca file: a
 * client sending only its own certificate would pass a revoked
 * intermediate.  0, or -1 with *why.
 */
static int tls_ints_crl_ok(const struct tls_ctx *x, const uint8_t *der, size_t len,
                           enum tls_reason *why)
{
    int depth, rc;

    for (depth = 0; depth < 8 && x->ncrls; depth++) {
        const uint8_t *iss, *sub;
        uint8_t *c = NULL;
        size_t il, sl, pos = 0, start = 0, l;
        uint8_t tag;
        if (cert_names(der, len, &iss, &il, &sub, &sl) < 0)
            return 0;
        while (!c && pos < x->ints_len) {
            const uint8_t *ci, *cs;
            size_t cil, csl;
            start = pos;
            if (der_hdr(x->ints, x->ints_len, &pos, &tag, &l) < 0)
                return 0;
            pos += l;
            if (cert_names(x->ints + start, pos - start, &ci, &cil, &cs, &csl) == 0 &&
                csl == il && memcmp(cs, iss, il) == 0)
                c = x->ints + start;
        }
        if (!c)
            return 0;               /* its issuer is a root, or not of the ca file */
        rc = wolfSSL_CertManagerCheckCRL(wolfSSL_CTX_GetCertManager(x->ctx), c, (int)(pos - start));
        if (rc != WOLFSSL_SUCCESS) {
            *why = tls_crl_reason(x, rc);
            return -1;
        }
        der = c;
        len = pos - start;
    }
    return 0;
}

/*
 * Does the chain this client sent lead, by issuer and subject names, from
 * its leaf through certificates it sent itself to one of the ca file?
 * wolfSSL 5.5 keeps every intermediate CA certificate a client sends in
 * the context's store and trusts it for later clients (found by
 * t_evil_certs: a leaf sent alone was admitted once another client had
 * sent its intermediates).  wolfSSL has checked the signatures; this makes
 * each client's chain stand on its own, as SPEC 4 reads.
 */
static int tls_chain_own(const struct tls_ctx *x, const WOLFSSL_BUFFER_INFO *certs, int n)
{
    const uint8_t *iss, *sub;
    size_t il, sl;
    int cur = 0, step, j;

    for (step = 0; step < n; step++) {
        if (cert_names(certs[cur].buffer, certs[cur].length, &iss, &il, &sub, &sl) < 0)
            return 0;
        if (tls_ca_has(x, iss, il))
            return 1;
        for (j = 0; j < n; j++) {
            const uint8_t *ji, *js;
            size_t jil, jsl;
            if (j != cur && cert_names(certs[j].buffer, certs[j].length, &ji, &jil, &js, &jsl) == 0 &&
                jsl == il && memcmp(js, iss, il) == 0)
                break;
        }
        if (j == n)
            return 0;               /* its issuer is neither sent nor in the ca file */
        cur = j;
    }
    return 0;
}

static struct tls_ctx *tls_ctx_of(struct tls_listener *t, WOLFSSL *ssl);

/*
 * Called by wolfSSL for the client's leaf certificate once its chain
 * verified.  The chain must be the client's own (tls_chain_own).  A tcp
 * listener's allow lines are checked here too where no access_denied
 * alert can follow the handshake (tls_can_alert): a refused certificate
 * fails the handshake with a TLS alert, so nothing is ever relayed.  (An
 * http listener answers 403 instead.)  tr->denied and tr->chain_bad tell
 * these failures from wolfSSL's own.
 */
static int tls_verify_cb(int ok, WOLFSSL_X509_STORE_CTX *st)
{
    WOLFSSL *ssl;
    struct tls_resume *tr;
    const struct mtlslb_listener *l;
    struct mtlslb_peer pe;
    size_t i;

    if (!ok || wolfSSL_X509_STORE_CTX_get_error_depth(st) != 0 || !st->certs || st->totalCerts < 1)
        return ok;
    ssl = wolfSSL_X509_STORE_CTX_get_ex_data(st, wolfSSL_get_ex_data_X509_STORE_CTX_idx());
    tr = ssl ? wolfSSL_get_app_data(ssl) : NULL;
    if (!tr || !tr->tl)
        return ok;
    if (!tls_chain_own(tls_ctx_of(tr->tl, ssl), st->certs, st->totalCerts)) {
        tr->chain_bad = 1;
        return 0;
    }
    if (mtlslb_cert_may_sign(st->certs[0].buffer, st->certs[0].length) == 0) {
        tr->no_sign = 1;            /* a CA's certificate, say: not a client's */
        return 0;
    }
    {
        enum tls_reason why;
        if (tls_ints_crl_ok(tls_ctx_of(tr->tl, ssl), st->certs[0].buffer, st->certs[0].length,
                            &why) < 0) {
            tr->int_bad = 1;
            tr->int_why = (unsigned char)why;
            return 0;
        }
    }
    if (tls_peer_keep(tr, st->certs[0].buffer, (int)st->certs[0].length) < 0)
        return 0;                   /* memory ran out: refused */
    l = tr->tl->cfg;
    if (l->mode != MTLSLB_MODE_TCP || !l->nallows || tls_can_alert(ssl))
        return ok;
    if (mtlslb_cert_peer(st->certs[0].buffer, st->certs[0].length, &pe) == 0 &&
        mtlslb_identity_allowed(l->allows, l->nallows, &pe))
        return ok;
    tr->denied = 1;
    for (i = 0; i < pe.n; i++)
        if (pe.v[i].field == MTLSLB_ALLOW_CN) {
            size_t k, m = pe.v[i].len < sizeof tr->denied_cn - 1 ? pe.v[i].len : sizeof tr->denied_cn - 1;
            for (k = 0; k < m; k++)
                tr->denied_cn[k] = pe.v[i].p[k] >= 0x20 && pe.v[i].p[k] < 0x7f ? (char)pe.v[i].p[k] : '?';
            tr->denied_cn[m] = 0;
            break;
        }
    return 0;
}

/*
 * ---- reading clients' records: one recv() for many ----
 *
 * wolfSSL asks the socket for a record's 5-byte header, then for its body:
 * two recv() calls per record, and one more that finds the socket empty.
 * A client's records are read ahead instead: one recv() of up to
 * MTLSLB_BUF_SIZE bytes into a relay-sized buffer, held only while bytes
 * wait in it, from which wolfSSL's requests are served (a request as large
 * as the buffer goes straight to the socket).  A recv() that returns less
 * than it asked for finds the socket empty: it is not read again until
 * poll() reports it (drained, cleared by the connection on any event).
 */
struct tls_rd {
    int fd;
    struct buf ra;                  /* read ahead, not yet given to wolfSSL */
    int drained;                    /* the socket had no more: wait for poll() */
    struct buf wb;                  /* records held back by tls_send, not yet sent */
    unsigned more : 1;              /* tls_send: more follows at once (MSG_MORE) */
    unsigned hold_ticket : 1;       /* tls_send: see there */
    unsigned wb_more : 1;           /* rd->wb holds bytes held for rd->more */
    unsigned alerted : 1;           /* tls_send wrote an alert record */
};

static int tls_recv(WOLFSSL *ssl, char *out, int sz, void *ctx)
{
    struct tls_rd *rd = ctx;
    ssize_t r;
    size_t n;

    (void)ssl;
    if (sz <= 0)
        return 0;
    if (rd->ra.len == 0) {
        uint8_t *to;
        size_t cap;
        if (rd->drained)
            return WOLFSSL_CBIO_ERR_WANT_READ;
        if ((size_t)sz >= MTLSLB_BUF_SIZE) {
            to = (uint8_t *)out;
            cap = (size_t)sz;
        } else {
            if (buf_take(&rd->ra) < 0)
                return WOLFSSL_CBIO_ERR_GENERAL;
            to = rd->ra.data;
            cap = MTLSLB_BUF_SIZE;
        }
        do
            r = recv(rd->fd, to, cap, 0);
        while (r < 0 && errno == EINTR);
        if (r <= 0) {
            buf_give(&rd->ra);
            if (r == 0)
                return WOLFSSL_CBIO_ERR_CONN_CLOSE;
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                rd->drained = 1;
                return WOLFSSL_CBIO_ERR_WANT_READ;
            }
            return errno == ECONNRESET ? WOLFSSL_CBIO_ERR_CONN_RST : WOLFSSL_CBIO_ERR_GENERAL;
        }
        rd->drained = (size_t)r < cap;
        if (to == (uint8_t *)out)
            return (int)r;
        rd->ra.off = 0;
        rd->ra.len = (size_t)r;
    }
    n = rd->ra.len < (size_t)sz ? rd->ra.len : (size_t)sz;
    memcpy(out, rd->ra.data + rd->ra.off, n);
    rd->ra.off += n;
    rd->ra.len -= n;
    if (rd->ra.len == 0)
        buf_give(&rd->ra);
    return (int)n;
}

/*
 * ---- writing to clients: fewer segments, fewer calls ----
 *
 * On loopback or a LAN each segment sent costs the sender the receiver's
 * network stack too (~8 us here), and each send() a system call.  Records
 * known to be followed at once by more are therefore held back in rd->wb (a
 * relay-sized buffer, taken only while it holds bytes) and go out with the
 * next record, in one sendmsg().  Two cases, both certain to end in a send
 * that is not held:
 *  - rd->more: the last bytes of an http response on a connection that
 *    closes after it (relay_step); the close_notify follows (side_shut),
 *    which sends all that is held with MSG_MORE, and the FIN of shutdown()
 *    or close() leaves with it: response, close_notify and FIN in one
 *    segment and one call.
 *  - rd->hold_ticket (http listeners during the handshake): TLS 1.3 sends
 *    its session ticket just after the client's Finished.  If the
 *    client's request already came with its Finished, the response (or an
 *    error answer, or a 408 at the request timeout) follows it; the ticket
 *    rides with the response.  A client that has sent no request yet gets
 *    its ticket at once, as before.
 * What does not fit in rd->wb is sent with what is held, with MSG_MORE.
 */
static int tls_send_error(void)
{
    if (errno == EAGAIN || errno == EWOULDBLOCK)
        return WOLFSSL_CBIO_ERR_WANT_WRITE;
    if (errno == ECONNRESET)
        return WOLFSSL_CBIO_ERR_CONN_RST;
    if (errno == EPIPE)
        return WOLFSSL_CBIO_ERR_CONN_CLOSE;
    return WOLFSSL_CBIO_ERR_GENERAL;
}

/*
 * Writes to a TLS server (wolfSSL's own socket callback otherwise).  A
 * server gone (EPIPE, ECONNRESET) is noted in up_write_gone and the bytes
 * taken as sent: a write error would leave wolfSSL refusing every later
 * read, and an answer the server sent before it went (a 413 for a body it
 * would not take) must still be read.  side_write turns it into the write
 * error it is.
 */
static int up_write_gone;

static int up_tls_send(WOLFSSL *ssl, char *out, int sz, void *ctx)
{
    (void)ssl;
    for (;;) {
        ssize_t r = send(*(int *)ctx, out, (size_t)sz, MSG_NOSIGNAL);
        if (r >= 0)
            return (int)r;
        if (errno == EINTR)
            continue;
        if (errno == EPIPE || errno == ECONNRESET) {
            up_write_gone = errno;
            return sz;
        }
        return tls_send_error();
    }
}

static int tls_send(WOLFSSL *ssl, char *out, int sz, void *ctx)
{
    struct tls_rd *rd = ctx;
    struct msghdr mh;
    struct iovec iov[2];
    int hold = rd->more || (rd->hold_ticket && rd->ra.len > 0 && wolfSSL_is_init_finished(ssl));
    int flags = MSG_NOSIGNAL;
    size_t held = rd->wb.len;
    ssize_t r;

    if (sz > 0 && (unsigned char)out[0] == 21)
        rd->alerted = 1;            /* content type alert (a record starts each write) */
    if (hold && rd->wb.off + held + (size_t)sz <= MTLSLB_BUF_SIZE && buf_take(&rd->wb) == 0) {
        memcpy(rd->wb.data + rd->wb.off + held, out, (size_t)sz);
        rd->wb.len += (size_t)sz;
        rd->wb_more |= rd->more;
        return sz;
    }
#ifdef MSG_MORE
    if (hold)
        flags |= MSG_MORE;
#endif
    if (held) {
        memset(&mh, 0, sizeof mh);
        iov[0].iov_base = rd->wb.data + rd->wb.off;
        iov[0].iov_len = held;
        iov[1].iov_base = out;
        iov[1].iov_len = (size_t)sz;
        mh.msg_iov = iov;
        mh.msg_iovlen = 2;
    }
    do
        r = held ? sendmsg(rd->fd, &mh, flags) : send(rd->fd, out, (size_t)sz, flags);
    while (r < 0 && errno == EINTR);
    if (r < 0)
        return tls_send_error();
    if ((size_t)r < held) {
        rd->wb.off += (size_t)r;
        rd->wb.len -= (size_t)r;
        return WOLFSSL_CBIO_ERR_WANT_WRITE;     /* out is offered again */
    }
    buf_give(&rd->wb);
    rd->wb_more = 0;
    return (size_t)r > held ? (int)((size_t)r - held) : WOLFSSL_CBIO_ERR_WANT_WRITE;
}

/* Send what tls_send holds, with MSG_MORE: a FIN follows (side_shut), or
 * the bytes were held for one that did not come at once (http_pump).  0
 * when all is gone, 1 if the socket is full, -1 on an error (what is held is
 * dropped: the next write or read meets the error too). */
static int tls_flush(struct tls_rd *rd)
{
    int flags = MSG_NOSIGNAL;
    ssize_t r;

#ifdef MSG_MORE
    flags |= MSG_MORE;
#endif
    while (rd->wb.len > 0) {
        r = send(rd->fd, rd->wb.data + rd->wb.off, rd->wb.len, flags);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return 1;
        if (r < 0) {
            buf_give(&rd->wb);
            rd->wb_more = 0;
            return -1;
        }
        rd->wb.off += (size_t)r;
        rd->wb.len -= (size_t)r;
    }
    buf_give(&rd->wb);
    rd->wb_more = 0;
    return 0;
}

static int tls_sni_cb(WOLFSSL *ssl, int *ad, void *arg);
static int tls_verify_cb(int ok, WOLFSSL_X509_STORE_CTX *st);
static int tls_ticket_cb(WOLFSSL *ssl, unsigned char name[WOLFSSL_TICKET_NAME_SZ],
                         unsigned char iv[WOLFSSL_TICKET_IV_SZ],
                         unsigned char mac[WOLFSSL_TICKET_MAC_SZ], int enc, unsigned char *buf,
                         int len, int *outlen, void *arg);
#define TK_LIFETIME 300             /* s: a session ticket is good this long */

static int tls_same_ec(WOLFSSL_EVP_PKEY *a, WOLFSSL_EVP_PKEY *b)
{
    WOLFSSL_EC_KEY *x = wolfSSL_EVP_PKEY_get1_EC_KEY(a), *y = wolfSSL_EVP_PKEY_get1_EC_KEY(b);
    int same = 0;

    if (x && y) {
        const WOLFSSL_EC_GROUP *g = wolfSSL_EC_KEY_get0_group(x);
        const WOLFSSL_EC_POINT *p = wolfSSL_EC_KEY_get0_public_key(x);
        const WOLFSSL_EC_POINT *q = wolfSSL_EC_KEY_get0_public_key(y);
        same = g && p && q && wolfSSL_EC_POINT_cmp(g, p, q, NULL) == 0;
    }
    if (x)
        wolfSSL_EC_KEY_free(x);
    if (y)
        wolfSSL_EC_KEY_free(y);
    return same;
}

static int tls_same_rsa(WOLFSSL_EVP_PKEY *a, WOLFSSL_EVP_PKEY *b)
{
    WOLFSSL_RSA *x = wolfSSL_EVP_PKEY_get1_RSA(a), *y = wolfSSL_EVP_PKEY_get1_RSA(b);
    const WOLFSSL_BIGNUM *n1 = NULL, *n2 = NULL, *e1 = NULL, *e2 = NULL;
    int same = 0;

    if (x && y) {
        wolfSSL_RSA_get0_key(x, &n1, &e1, NULL);
        wolfSSL_RSA_get0_key(y, &n2, &e2, NULL);
        same = n1 && n2 && e1 && e2 && wolfSSL_BN_cmp(n1, n2) == 0 && wolfSSL_BN_cmp(e1, e2) == 0;
    }
    if (x)
        wolfSSL_RSA_free(x);
    if (y)
        wolfSSL_RSA_free(y);
    return same;
}

/*
 * Does the private key belong to the certificate?  wolfSSL 5.5's
 * wolfSSL_CTX_check_private_key() accepts any EC key of the right curve
 * (seen here), so the public halves are compared directly.
 */
static int tls_key_matches(const char *cert, const char *key)
{
    WOLFSSL_X509 *x = wolfSSL_X509_load_certificate_file(cert, WOLFSSL_FILETYPE_PEM);
    WOLFSSL_EVP_PKEY *pub = x ? wolfSSL_X509_get_pubkey(x) : NULL, *priv = NULL;
    WOLFSSL_BIO *b = wolfSSL_BIO_new_file(key, "r");
    int same = 0;

    if (b)
        priv = wolfSSL_PEM_read_bio_PrivateKey(b, NULL, NULL, NULL);
    if (pub && priv && wolfSSL_EVP_PKEY_base_id(pub) == wolfSSL_EVP_PKEY_base_id(priv)) {
        if (wolfSSL_EVP_PKEY_base_id(pub) == EVP_PKEY_EC)
            same = tls_same_ec(pub, priv);
        else if (wolfSSL_EVP_PKEY_base_id(pub) == EVP_PKEY_RSA)
            same = tls_same_rsa(pub, priv);
    }
    if (priv)
        wolfSSL_EVP_PKEY_free(priv);
    if (pub)
        wolfSSL_EVP_PKEY_free(pub);
    if (b)
        wolfSSL_BIO_free(b);
    if (x)
        wolfSSL_X509_free(x);
    return same;
}

static void tls_cert_first_end(const uint8_t *der, size_t len, void *arg)
{
    time_t *end = arg;
    struct cert_tbs t;

    if (!*end && cert_tbs(der, len, &t) == 0 && cert_not_after(&t, end) < 0)
        *end = 0;
}

/* A server certificate that has expired, or will within 14 days: loaded
 * (the operator may be replacing it), but said at -t, start and reload. */
static void tls_cert_warn(const struct report *r, const struct mtlslb_file *cert)
{
    time_t end = 0, now = time(NULL);
    char when[64];

    if (pem_each(cert->path, "CERTIFICATE", tls_cert_first_end, &end) <= 0 || !end ||
        end > now + 14 * 86400)
        return;
    tls_fmt_time(end, when, sizeof when);
    log_msg(MTLSLB_LOG_WARN, "%s:%d: certificate %s %s %s%s", r->file, cert->line, cert->path,
            end <= now ? "expired at" : "expires at", when,
            end <= now ? ": clients will refuse it" : "; renew it");
}

struct crl_load {
    WOLFSSL_CTX *ctx;
    int bad;
};

static void tls_crl_load_one(const uint8_t *der, size_t len, void *arg)
{
    struct crl_load *a = arg;

    if (wolfSSL_CTX_LoadCRLBuffer(a->ctx, der, (long)len, WOLFSSL_FILETYPE_ASN1) !=
        WOLFSSL_SUCCESS)
        a->bad = 1;
}

/* Every CRL of a PEM file (several CAs' CRLs in one file, as nginx's
 * ssl_crl and HAProxy's crl-file take them), or one DER CRL;
 * wolfSSL_CTX_LoadCRLFile loads only the first PEM one. */
static int tls_load_crl_file(WOLFSSL_CTX *ctx, const char *path)
{
    struct crl_load a = { ctx, 0 };

    return pem_each(path, "X509 CRL", tls_crl_load_one, &a) > 0 && !a.bad ? 0 : -1;
}

static int tls_load_crls(struct report *r, struct tls_ctx *t,
                         const struct mtlslb_file *crls, size_t n)
{
    size_t i;
    time_t now = time(NULL);
    char when[64];

    if (n == 0)
        return 0;
    t->crls = calloc(n, sizeof *t->crls);
    if (!t->crls) {
        report_at(r, crls[0].line, "out of memory");
        return -1;
    }
    t->ncrls = n;
    /* Every certificate of the client's chain, as nginx and HAProxy check
     * (OpenSSL's CRL_CHECK_ALL): an intermediate CA a loaded CRL revokes
     * takes its leaves with it. */
    if (wolfSSL_CTX_EnableCRL(t->ctx, WOLFSSL_CRL_CHECK | WOLFSSL_CRL_CHECKALL) !=
        WOLFSSL_SUCCESS) {
        report_at(r, crls[0].line, "cannot enable CRL checking");
        return -1;
    }
    for (i = 0; i < n; i++) {
        struct tls_crl *c = &t->crls[i];
        c->file = &crls[i];
        tls_crl_stamp(c);
        if (tls_readable(r, &crls[i], "CRL") < 0)
            return -1;
        crl_next_update(crls[i].path, &c->next_update);
        if (c->next_update && c->next_update <= now) {
            /* Not loaded: every client it covers now fails (fail closed). */
            tls_fmt_time(c->next_update, when, sizeof when);
            log_msg(MTLSLB_LOG_WARN, "%s:%d: CRL %s expired at %s: its clients are refused "
                    "until a current CRL replaces it", r->file, crls[i].line, crls[i].path, when);
            c->expired_logged = 1;
            continue;
        }
        if (tls_load_crl_file(t->ctx, crls[i].path) < 0) {
            report_at(r, crls[i].line, "cannot load CRL %s (not a PEM CRL, or not signed by the ca)",
                      crls[i].path);
            return -1;
        }
    }
    return 0;
}

static int tls_ctx_build(struct report *r, struct tls_ctx *t, const struct mtlslb_listener *l,
                         const struct mtlslb_file *cert, const struct mtlslb_file *key,
                         const struct mtlslb_file *ca, const struct mtlslb_file *crls,
                         size_t ncrls, enum mtlslb_verify verify, void *cb_arg)
{
    int bad = 0, ca_bad = 0;

    t->ctx = wolfSSL_CTX_new(wolfSSLv23_server_method());
    if (!t->ctx) {
        report_at(r, cert->line, "cannot create a TLS context (out of memory)");
        return -1;
    }
    if (wolfSSL_CTX_SetMinVersion(t->ctx, l->tls_min == 13 ? WOLFSSL_TLSV1_3 : WOLFSSL_TLSV1_2)
        != WOLFSSL_SUCCESS) {
        report_at(r, l->line, "this wolfSSL cannot set the minimum TLS version");
        return -1;
    }
    if (wolfSSL_CTX_set_cipher_list(t->ctx, l->ciphers ? l->ciphers : TLS_DEFAULT_CIPHERS)
        != WOLFSSL_SUCCESS) {
        report_at(r, l->ciphers ? l->ciphers_line : l->line,
                  "no usable cipher in '%s'", l->ciphers ? l->ciphers : TLS_DEFAULT_CIPHERS);
        return -1;
    }
    /* Each file is tried whatever came before, so that -t names every bad
     * one (SPEC 2); a CRL is only checked for being readable when the CA it
     * is verified against did not load. */
    if ((tls_readable(r, cert, "certificate") < 0) + (tls_readable(r, key, "key") < 0)) {
        bad = 1;
    } else if (wolfSSL_CTX_use_certificate_chain_file(t->ctx, cert->path) != WOLFSSL_SUCCESS) {
        report_at(r, cert->line, "cannot load certificate %s (not a PEM certificate chain)",
                  cert->path);
        bad = 1;
    } else if (wolfSSL_CTX_use_PrivateKey_file(t->ctx, key->path, WOLFSSL_FILETYPE_PEM) !=
               WOLFSSL_SUCCESS) {
        report_at(r, key->line, "cannot load key %s (not a PEM private key)", key->path);
        bad = 1;
    } else if (wolfSSL_CTX_check_private_key(t->ctx) != WOLFSSL_SUCCESS ||
               !tls_key_matches(cert->path, key->path)) {
        report_at(r, key->line, "key %s does not match certificate %s", key->path, cert->path);
        bad = 1;
    } else {
        tls_cert_warn(r, cert);
    }
    if (ca && ca->path) {
        if (tls_readable(r, ca, "ca") < 0) {
            ca_bad = 1;
        } else if (wolfSSL_CTX_load_verify_locations(t->ctx, ca->path, NULL) != WOLFSSL_SUCCESS ||
                   pem_each(ca->path, "CERTIFICATE", tls_ca_name_add, t) <= 0 || !t->ca_names_len) {
            report_at(r, ca->line, "cannot load ca %s (not PEM CA certificates)", ca->path);
            ca_bad = 1;
        }
    }
    switch (verify) {
    case MTLSLB_VERIFY_REQUIRED:
        t->verify = WOLFSSL_VERIFY_PEER | WOLFSSL_VERIFY_FAIL_IF_NO_PEER_CERT;
        break;
    case MTLSLB_VERIFY_OPTIONAL:
        t->verify = WOLFSSL_VERIFY_PEER;
        break;
    default:
        t->verify = WOLFSSL_VERIFY_NONE;
        break;
    }
    if (!ca || !ca->path)
        t->verify = WOLFSSL_VERIFY_NONE;
    wolfSSL_CTX_set_verify(t->ctx, t->verify, tls_verify_cb);
    if (t->verify != WOLFSSL_VERIFY_NONE) {
        size_t i;
        if (ca_bad) {
            for (i = 0; i < ncrls; i++)
                (void)tls_readable(r, &crls[i], "CRL");
        } else if (tls_load_crls(r, t, crls, ncrls) < 0) {
            bad = 1;
        }
    }
    if (bad || ca_bad)
        return -1;
    wolfSSL_CTX_set_servername_callback(t->ctx, tls_sni_cb);
    wolfSSL_CTX_SetIORecv(t->ctx, tls_recv);   /* set per context: an SNI switch keeps them */
    wolfSSL_CTX_SetIOSend(t->ctx, tls_send);
    /* A flight of handshake messages in one write, not one each (the
     * server's TLS 1.3 flight was six sends). */
    wolfSSL_CTX_set_group_messages(t->ctx);
    wolfSSL_CTX_set_servername_arg(t->ctx, cb_arg);
    /*
     * wolfSSL 5.5's own tickets do not carry the client certificate (a
     * resumed session would find it only in the 33-entry session cache);
     * ours do, by reference (tls_ticket_cb).
     */
    wolfSSL_CTX_set_TicketEncCb(t->ctx, tls_ticket_cb);
    wolfSSL_CTX_set_TicketEncCtx(t->ctx, cb_arg);
    wolfSSL_CTX_set_TicketHint(t->ctx, TK_LIFETIME);
    wolfSSL_CTX_set_timeout(t->ctx, TK_LIFETIME);
    {
        /* wolfSSL's session cache is process-wide: a session resumes only
         * under the listener build it was made under. */
        uint32_t serial = ((const struct tls_listener *)cb_arg)->serial;
        if (wolfSSL_CTX_set_session_id_context(t->ctx, (const unsigned char *)&serial,
                                               sizeof serial) != WOLFSSL_SUCCESS) {
            report_at(r, l->line, "cannot set the session id context");
            return -1;
        }
    }
    return 0;
}

static void tls_ctx_free(struct tls_ctx *t)
{
    if (t->ctx)
        wolfSSL_CTX_free(t->ctx);
    free(t->crls);
    free(t->ca_names);
    free(t->ints);
    t->ctx = NULL;
    t->crls = NULL;
    t->ca_names = NULL;
    t->ca_names_len = 0;
    t->ints = NULL;
    t->ints_len = 0;
}

static void tls_listener_free(struct tls_listener *t)
{
    size_t i;

    tls_ctx_free(&t->def);
    for (i = 0; i < t->nsni; i++)
        tls_ctx_free(&t->sni[i]);
    free(t->sni);
    t->sni = NULL;
    t->nsni = 0;
}

/* Build every context of a listener; errors go to the report. */
/* Build one context of a listener: its default certificate (x->sni NULL)
 * or an sni line's.  An sni line's own ca or crl replaces the listener's;
 * its own ca without a crl means no CRL (the listener's is another CA's). */
static int tls_ctx_make(struct report *r, struct tls_listener *t, struct tls_ctx *x)
{
    const struct mtlslb_listener *l = t->cfg;
    const struct mtlslb_sni *s = x->sni;

    if (!s)
        return tls_ctx_build(r, x, l, &l->cert, &l->key, &l->ca, l->crls, l->ncrls,
                             l->verify, t);
    return tls_ctx_build(r, x, l, &s->cert, &s->key, s->ca.path ? &s->ca : &l->ca,
                         s->ncrls ? s->crls : s->ca.path ? NULL : l->crls,
                         s->ncrls ? s->ncrls : s->ca.path ? 0 : l->ncrls, s->verify, t);
}

static int tls_listener_build(struct tls_listener *t, const struct mtlslb_listener *l,
                              struct report *r)
{
    size_t i;
    int rc = 0;

    static uint32_t serials;

    memset(t, 0, sizeof *t);
    t->cfg = l;
    t->file = r->file;
    t->serial = ++serials;
    if (tls_ctx_make(r, t, &t->def) < 0)
        rc = -1;
    t->sni = calloc(l->nsnis ? l->nsnis : 1, sizeof *t->sni);
    if (!t->sni) {
        report_at(r, l->line, "out of memory");
        return -1;
    }
    t->nsni = l->nsnis;
    for (i = 0; i < l->nsnis; i++) {
        t->sni[i].sni = &l->snis[i];
        if (tls_ctx_make(r, t, &t->sni[i]) < 0)
            rc = -1;
    }
    return rc;
}

static void tls_log_report(void *arg, const char *msg)
{
    log_msg(MTLSLB_LOG_ERROR, "%s%s", (const char *)arg, msg);
}

/*
 * A CRL file of this context changed on disk: build the context anew and
 * use it for new handshakes (SSL objects hold a reference to the context
 * they started with).  A CRL that does not load leaves the old one in use.
 */
static void tls_ctx_reload(struct tls_listener *t, struct tls_ctx *x)
{
    struct tls_ctx n;
    struct report r;

    memset(&n, 0, sizeof n);
    memset(&r, 0, sizeof r);
    n.sni = x->sni;
    r.fn = tls_log_report;
    r.arg = "CRL reload: ";
    r.file = t->file;
    /*
     * A failure (a CRL half written, a certificate renewed before its key)
     * is tried again at every watch until it loads: a new CRL must not be
     * lost because something else was briefly wrong.  Said once.
     */
    if (x->reload_failed)
        r.fn = NULL;
    if (tls_ctx_make(&r, t, &n) < 0) {
        tls_ctx_free(&n);
        if (!x->reload_failed)
            log_msg(MTLSLB_LOG_ERROR, "listener %s%s%s: the new CRL was not loaded; the previous "
                    "one stays in use until it loads (tried again every 10 s)", t->cfg->name,
                    x->sni ? " sni " : "", x->sni ? x->sni->name : "");
        x->reload_failed = 1;
        return;
    }
    tls_ctx_free(x);
    *x = n;
    log_msg(MTLSLB_LOG_INFO, "listener %s%s%s: CRL reloaded; new handshakes use it", t->cfg->name,
            x->sni ? " sni " : "", x->sni ? x->sni->name : "");
}

int mtlslb_sni_match(const char *pattern, const char *host)
{
    size_t hl = strlen(host);

    if (hl && host[hl - 1] == '.')
        hl--;                       /* a fully qualified "name." */
    if (pattern[0] == '*' && pattern[1] == '.') {
        const char *dot = memchr(host, '.', hl);
        size_t rest;
        if (!dot || dot == host)
            return 0;
        rest = hl - (size_t)(dot - host);
        return strlen(pattern + 1) == rest && strncasecmp(pattern + 1, dot, rest) == 0;
    }
    return strlen(pattern) == hl && strncasecmp(pattern, host, hl) == 0;
}

/* Exact names before wildcards. */
static struct tls_ctx *tls_sni_find(struct tls_listener *t, const char *host)
{
    size_t i;
    int pass;

    for (pass = 0; pass < 2; pass++)
        for (i = 0; i < t->nsni; i++) {
            const char *pat = t->sni[i].sni->name;
            if ((pat[0] == '*') == (pass == 1) && mtlslb_sni_match(pat, host))
                return &t->sni[i];
        }
    return NULL;
}

/*
 * In a wolfSSL built SINGLE_THREADED (OpenWrt's may be; 5.5.4 checked), an
 * SSL shares its context's cipher-suite list instead of copying it, and a
 * TLS 1.3 resumption narrows that list to the suites the client offered:
 * the listener's context then refuses TLS 1.2 ("can't match cipher suite",
 * seen after one TLS 1.3 resumption).  Setting the list on the SSL itself
 * gives it its own copy.
 */
static int tls_own_suites(WOLFSSL *ssl, const struct mtlslb_listener *l)
{
#ifdef SINGLE_THREADED
    return wolfSSL_set_cipher_list(ssl, l->ciphers ? l->ciphers : TLS_DEFAULT_CIPHERS) ==
           WOLFSSL_SUCCESS ? 0 : -1;
#else
    (void)ssl;
    (void)l;
    return 0;
#endif
}

static int tls_sni_cb(WOLFSSL *ssl, int *ad, void *arg)
{
    struct tls_listener *t = arg;
    const char *host = wolfSSL_get_servername(ssl, WOLFSSL_SNI_HOST_NAME);
    struct tls_ctx *x = host && *host ? tls_sni_find(t, host) : NULL;

    if (x) {
        if (!wolfSSL_set_SSL_CTX(ssl, x->ctx) || tls_own_suites(ssl, t->cfg) < 0) {
            *ad = internal_error;
            return SSL_TLSEXT_ERR_ALERT_FATAL;
        }
        /* The verify mode does not follow the context switch. */
        wolfSSL_set_verify(ssl, x->verify, tls_verify_cb);
        return SSL_TLSEXT_ERR_OK;
    }
    if (t->cfg->sni_strict) {
        *ad = unrecognized_name;
        return SSL_TLSEXT_ERR_ALERT_FATAL;
    }
    return SSL_TLSEXT_ERR_OK;
}

/* Would sni-strict refuse this handshake (no SNI, or a name no sni line
 * has)?  Decided from the handshake itself, so no per-SSL data is needed. */
static int tls_sni_refused(struct tls_listener *t, WOLFSSL *ssl)
{
    const char *host = wolfSSL_get_servername(ssl, WOLFSSL_SNI_HOST_NAME);

    return t->cfg->sni_strict && (!host || !*host || !tls_sni_find(t, host));
}

static struct tls_ctx *tls_ctx_of(struct tls_listener *t, WOLFSSL *ssl)
{
    WOLFSSL_CTX *ctx = wolfSSL_get_SSL_CTX(ssl);
    size_t i;

    for (i = 0; i < t->nsni; i++)
        if (t->sni[i].ctx == ctx)
            return &t->sni[i];
    return &t->def;
}

static unsigned tls_ctx_index(const struct tls_listener *t, const struct tls_ctx *x)
{
    return x == &t->def ? 0 : (unsigned)(x - t->sni) + 1;
}

/*
 * What is wrong with a resumed session, or NULL.  It must not cross from one
 * sni name to another (a ticket is bound to its name; the session cache is
 * off where there are sni lines, see tls_ctx_build; should wolfSSL resume
 * such a session anyway, it is refused here), and where a certificate is
 * required it must still carry the identity.
 */
static const char *tls_resume_problem(struct tls_listener *t, WOLFSSL *ssl,
                                      const struct tls_resume *tr, int has_cert)
{
    if (!wolfSSL_session_reused(ssl))
        return NULL;
    if (tr->ok && tr->sni != tls_ctx_index(t, tls_ctx_of(t, ssl)))
        return "session ticket of another sni name";
    /* wolfSSL's TLS 1.2 session cache is looked up before the SNI switch,
     * so a session id made under one name could resume under another and
     * skip its CA: one resumes only where tk_sids saw it made */
    if (!tr->ok && t->nsni > 0 && wolfSSL_version(ssl) == TLS1_2_VERSION && !tr->sid)
        return "TLS 1.2 session of another sni name";
    if (!has_cert && (tls_ctx_of(t, ssl)->verify & WOLFSSL_VERIFY_FAIL_IF_NO_PEER_CERT))
        return "session without the client certificate";
    return NULL;
}

/*
 * ---- session tickets that keep the client's identity ----
 *
 * wolfSSL 5.5 seals the session in a ticket but not the client certificate,
 * so a resumed session would have no identity once its small session cache
 * forgot it.  mtlslb seals the tickets itself (AES-256-GCM, a process key
 * replaced every hour, the previous one still opening) and appends the
 * SHA-256 of the client certificate inside the sealed part, in the padding
 * wolfSSL leaves for this (WOLFSSL_TICKET_EXTRA_PADDING_SZ, 32 bytes).  The
 * certificates themselves stay here, one copy per distinct certificate
 * (tk_certs: up to TK_CERTS, least recently used goes first), so thousands
 * of sessions of the same few clients cost a few kilobytes.  A ticket opens
 * only for the listener build and sni name it was made under (both are in
 * the sealed data's associated data), within TK_LIFETIME, while its
 * certificate is still known, not expired and not revoked by the CRL in
 * force now; any other ticket is declined and the client does a full
 * handshake.
 *
 *   key_name  key id (4) | issued, s since the epoch (4) | flags (1) | 0 (7)
 *   iv        nonce: counter (8) | issued (4), then 0 0 0 1
 *   mac       GCM tag (16) | 0 (16)
 *   sealed    wolfSSL's InternalTicket | certificate SHA-256 (32, zero: none)
 */
#define TK_ROTATE 3600              /* s: a new ticket key this often */
#define TK_CERTS 1024               /* client certificates remembered for tickets */
#define TK_BUCKETS 2048
#define TK_FP 32
#define TK_NOID 1                   /* flags: no identity carried (no room) */

struct tk_key {
    uint32_t id;                    /* its period (time / TK_ROTATE + 1); 0: not set */
    Aes aes;
};

struct tk_cert {
    uint8_t fp[TK_FP];
    uint8_t *der;
    size_t len;
    time_t expires;
    uint64_t used;
    int next;                       /* in its bucket; -1 ends */
};

static struct {
    uint8_t secret[32];             /* made once, before workers start: shared */
    int secret_set;
    struct tk_key key[2];           /* current, previous */
    uint64_t counter;               /* nonces; the top byte is the worker's number */
    struct tk_cert *certs;
    int ncerts;
    int head[TK_BUCKETS];
    uint64_t clock;
} TK;

/*
 * With `workers N`, a ticket sealed by one worker may come back to another:
 * each worker also copies the client certificates it learns into its own
 * ring of a shared mapping (tk_shared, made before the workers start), and
 * a worker that does not know a ticket's certificate looks there.  Only the
 * owner writes a ring; a reader copies an entry out and takes it only if
 * the copy's SHA-256 is the fingerprint it looked for, so an entry being
 * rewritten meanwhile reads as absent, without locks.
 */
#define TK_SHARED_CERTS 64          /* per worker */
#define TK_SHARED_DER 2048          /* larger certificates are not shared */

struct tk_shared_cert {
    uint8_t fp[TK_FP];
    uint32_t len;
    uint8_t der[TK_SHARED_DER];
};

struct tk_shared {
    unsigned next[MTLSLB_MAX_WORKERS];
    struct tk_shared_cert ring[MTLSLB_MAX_WORKERS][TK_SHARED_CERTS];
};

static volatile struct tk_shared *tk_shared;
static unsigned tk_nworkers;

static void tk_shared_put(const uint8_t *fp, const uint8_t *der, size_t len)
{
    volatile struct tk_shared_cert *e;
    unsigned w = worker_index;

    if (!tk_shared || len > TK_SHARED_DER)
        return;
    e = &tk_shared->ring[w][tk_shared->next[w]++ % TK_SHARED_CERTS];
    e->len = 0;
    memcpy((uint8_t *)e->fp, fp, TK_FP);
    memcpy((uint8_t *)e->der, der, len);
    e->len = (uint32_t)len;
}

static int tk_cert_put(const uint8_t *fp, const uint8_t *der, size_t len);
static struct tk_cert *tk_cert_find(const uint8_t *fp);

/* Another worker's copy of a certificate, now also ours; NULL if none. */
static struct tk_cert *tk_shared_find(const uint8_t *fp)
{
    uint8_t der[TK_SHARED_DER], md[TK_FP];
    unsigned w, i;

    for (w = 0; tk_shared && w < tk_nworkers; w++)
        for (i = 0; i < TK_SHARED_CERTS; i++) {
            volatile struct tk_shared_cert *e = &tk_shared->ring[w][i];
            uint32_t len = e->len;
            if (w == worker_index || len == 0 || len > TK_SHARED_DER ||
                memcmp((const uint8_t *)e->fp, fp, TK_FP) != 0)
                continue;
            memcpy(der, (const uint8_t *)e->der, len);
            if (wc_Sha256Hash(der, len, md) == 0 && memcmp(md, fp, TK_FP) == 0 &&
                tk_cert_put(fp, der, len) == 0)
                return tk_cert_find(fp);
        }
    return NULL;
}

static int random_bytes(void *p, size_t n)
{
    int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
    ssize_t k = -1;

    if (fd >= 0) {
        k = read(fd, p, n);
        close(fd);
    }
    return k == (ssize_t)n ? 0 : -1;
}

/* The key of one TK_ROTATE period: SHA-256 of the secret and the period, so
 * every worker (they share the secret) has the same keys without talking. */
static int tk_key_make(struct tk_key *k, uint32_t period)
{
    uint8_t in[36], key[32];
    int rc;

    memset(k, 0, sizeof *k);
    memcpy(in, TK.secret, 32);
    memcpy(in + 32, &period, 4);
    rc = wc_Sha256Hash(in, sizeof in, key) != 0 || wc_AesInit(&k->aes, NULL, INVALID_DEVID) != 0 ||
         wc_AesGcmSetKey(&k->aes, key, sizeof key) != 0 ? -1 : 0;
    memset(in, 0, sizeof in);
    memset(key, 0, sizeof key);
    if (rc == 0)
        k->id = period;
    return rc;
}

/* The current period's key, and the previous one's (it still opens the
 * tickets it sealed).  -1 if there is no usable key. */
static int tk_key_ready(time_t now)
{
    uint32_t period = (uint32_t)(now / TK_ROTATE) + 1;     /* never 0: 0 is "no key" */
    int i;

    if (!TK.secret_set) {
        if (random_bytes(TK.secret, sizeof TK.secret) < 0)
            return -1;
        TK.secret_set = 1;
    }
    if (TK.key[0].id == period && TK.key[1].id == period - 1)
        return 0;
    for (i = 0; i < 2; i++) {
        if (TK.key[i].id)
            wc_AesFree(&TK.key[i].aes);
        if (tk_key_make(&TK.key[i], period - (uint32_t)i) < 0) {
            memset(&TK.key[i], 0, sizeof TK.key[i]);
            return -1;
        }
    }
    return 0;
}

static unsigned tk_bucket(const uint8_t *fp)
{
    return ((unsigned)fp[0] | (unsigned)fp[1] << 8) % TK_BUCKETS;
}

static struct tk_cert *tk_cert_find(const uint8_t *fp)
{
    int i;

    if (!TK.certs)
        return NULL;
    for (i = TK.head[tk_bucket(fp)]; i >= 0; i = TK.certs[i].next)
        if (memcmp(TK.certs[i].fp, fp, TK_FP) == 0) {
            TK.certs[i].used = ++TK.clock;
            return &TK.certs[i];
        }
    return NULL;
}

/* notAfter of a DER certificate; -1 if it does not parse. */
static int cert_expiry(const uint8_t *der, size_t len, time_t *out)
{
    struct cert_tbs t;

    return cert_tbs(der, len, &t) < 0 ? -1 : cert_not_after(&t, out);
}

/* Remember a client certificate (its fp is its SHA-256).  -1: out of memory
 * or it does not parse; tickets then carry no identity for it. */
static int tk_cert_put(const uint8_t *fp, const uint8_t *der, size_t len)
{
    struct tk_cert *e;
    time_t expires;
    int i, *pp;

    if (tk_cert_find(fp))
        return 0;
    if (cert_expiry(der, len, &expires) < 0)
        return -1;
    if (!TK.certs) {
        TK.certs = calloc(TK_CERTS, sizeof *TK.certs);
        if (!TK.certs)
            return -1;
        for (i = 0; i < TK_BUCKETS; i++)
            TK.head[i] = -1;
    }
    if (TK.ncerts < TK_CERTS) {
        i = TK.ncerts++;
    } else {
        int k;
        for (i = 0, k = 1; k < TK_CERTS; k++)   /* the least recently used goes */
            if (TK.certs[k].used < TK.certs[i].used)
                i = k;
        for (pp = &TK.head[tk_bucket(TK.certs[i].fp)]; *pp != i; pp = &TK.certs[*pp].next)
            ;
        *pp = TK.certs[i].next;
        free(TK.certs[i].der);
    }
    e = &TK.certs[i];
    e->der = malloc(len);
    if (!e->der) {
        TK.certs[i] = TK.certs[--TK.ncerts];        /* the last slot moves here */
        if (i != TK.ncerts) {
            for (pp = &TK.head[tk_bucket(e->fp)]; *pp != TK.ncerts; pp = &TK.certs[*pp].next)
                ;
            *pp = i;
        }
        return -1;
    }
    memcpy(e->der, der, len);
    memcpy(e->fp, fp, TK_FP);
    e->len = len;
    e->expires = expires;
    e->used = ++TK.clock;
    e->next = TK.head[tk_bucket(fp)];
    TK.head[tk_bucket(fp)] = i;
    tk_shared_put(fp, der, len);
    return 0;
}

static void tk_free(void)
{
    int i;

    for (i = 0; i < TK.ncerts; i++)
        free(TK.certs[i].der);
    free(TK.certs);
    for (i = 0; i < 2; i++)
        if (TK.key[i].id)
            wc_AesFree(&TK.key[i].aes);
    memset(&TK, 0, sizeof TK);
}

static void tk_aad(uint8_t aad[40], const unsigned char *name, const unsigned char *iv,
                   uint32_t serial, unsigned sni, int len)
{
    memcpy(aad, name, 16);
    memcpy(aad + 16, iv, 16);
    aad[32] = (uint8_t)(serial >> 24);
    aad[33] = (uint8_t)(serial >> 16);
    aad[34] = (uint8_t)(serial >> 8);
    aad[35] = (uint8_t)serial;
    aad[36] = (uint8_t)(sni >> 8);
    aad[37] = (uint8_t)sni;
    aad[38] = (uint8_t)(len >> 8);
    aad[39] = (uint8_t)len;
}

/*
 * TLS 1.2 session ids of full handshakes, with the listener build, sni
 * name and client certificate they were made under.  A session wolfSSL
 * resumes from its session cache takes its identity from here, so mtlslb
 * needs no certificate copies in wolfSSL's sessions (SESSION_CERTS), and
 * the certificate is checked again (expiry, the CRL in force now).  The
 * newest TK_SIDS are kept; wolfSSL's own cache is smaller.
 */
#define TK_SIDS 1024

struct tk_sid {
    uint8_t id[32];                 /* TLS session ids are at most 32 bytes */
    uint8_t len;                    /* 0: a free slot */
    unsigned sni;
    uint32_t serial;
    time_t born;
    uint8_t fp[TK_FP];              /* zero: no client certificate */
};

static struct tk_sid *tk_sids;
static unsigned tk_sid_next;

static const uint8_t *tk_session_id(WOLFSSL *ssl, unsigned *len)
{
    WOLFSSL_SESSION *sess = wolfSSL_get_session(ssl);
    const uint8_t *id;

    *len = 0;
    if (!sess || !(id = wolfSSL_SESSION_get_id(sess, len)) || *len == 0 || *len > 32)
        return NULL;
    return id;
}

static void tk_sid_put(struct tls_listener *t, WOLFSSL *ssl, const uint8_t fp[TK_FP])
{
    unsigned len;
    const uint8_t *id = tk_session_id(ssl, &len);
    struct tk_sid *e;

    if (!id || (!tk_sids && !(tk_sids = calloc(TK_SIDS, sizeof *tk_sids))))
        return;                     /* the session cannot resume with an identity */
    e = &tk_sids[tk_sid_next++ % TK_SIDS];
    memcpy(e->id, id, len);
    e->len = (uint8_t)len;
    e->serial = t->serial;
    e->sni = tls_ctx_index(t, tls_ctx_of(t, ssl));
    e->born = time(NULL);
    memcpy(e->fp, fp, TK_FP);
}

static const struct tk_sid *tk_sid_find(struct tls_listener *t, WOLFSSL *ssl)
{
    unsigned len, i;
    const uint8_t *id = tk_session_id(ssl, &len);
    time_t now = time(NULL);

    for (i = 0; id && tk_sids && i < TK_SIDS; i++) {
        const struct tk_sid *e = &tk_sids[i];
        if (e->len == len && memcmp(e->id, id, len) == 0)
            return e->serial == t->serial && e->sni == tls_ctx_index(t, tls_ctx_of(t, ssl)) &&
                   now - e->born <= TK_LIFETIME ? e : NULL;
    }
    return NULL;
}

/*
 * The client certificate of a full handshake: its DER and SHA-256 stay in
 * tr until the identity is decoded.  tls_verify_cb keeps the leaf as it is
 * verified (tls_peer_keep), so wolfSSL need not keep a decoded copy of it
 * for the connection's life (the WOLFSSL_SRC build has no KEEP_PEER_CERT);
 * where it does, a client certificate that reached no verification is asked
 * for once here (each wolfSSL_get_peer_certificate decodes a fresh copy).
 * tr->len 0: none.  -1: it did not come out (or memory ran out).
 */
static int tls_peer_keep(struct tls_resume *tr, const unsigned char *der, int len)
{
    tr_reset(tr);                   /* a ticket opened, then not resumed: not this one */
    if (len <= 0 || !(tr->der = malloc((size_t)len)) ||
        wc_Sha256Hash(der, (word32)len, tr->fp) != 0) {
        free(tr->der);
        tr->der = NULL;
        return -1;
    }
    memcpy(tr->der, der, (size_t)len);
    tr->len = (size_t)len;
    tr->fetched = 1;
    return 0;
}

static int tls_peer_cert(WOLFSSL *ssl, struct tls_resume *tr)
{
#ifdef KEEP_PEER_CERT
    WOLFSSL_X509 *x;
    const unsigned char *der;
    int len, rc = 0;

    if (tr->fetched)
        return 0;
    tr_reset(tr);
    x = wolfSSL_get_peer_certificate(ssl);
    if (!x) {
        tr->fetched = 1;
        return 0;
    }
    der = wolfSSL_X509_get_der(x, &len);
    if (!der || tls_peer_keep(tr, der, len) < 0)
        rc = -1;
    wolfSSL_X509_free(x);
    return rc;
#else
    (void)ssl;
    if (!tr->fetched) {
        tr_reset(tr);
        tr->fetched = 1;
    }
    return 0;
#endif
}

/* The client certificate of this handshake: its SHA-256 into fp (zero if
 * none); it is remembered for resumption.  -1 if it cannot be carried. */
static int tk_identity(struct tls_listener *t, WOLFSSL *ssl, struct tls_resume *tr,
                       uint8_t fp[TK_FP])
{
    memset(fp, 0, TK_FP);
    if (!tr)
        return -1;
    if (wolfSSL_session_reused(ssl)) {
        const struct tk_sid *sid;
        if (tr->ok) {
            memcpy(fp, tr->fp, TK_FP);  /* renewed: the identity of the first handshake */
            return 0;
        }
        /* resumed by session id (wolfSSL's cache): its identity, if known;
         * else the ticket carries none and opens only where none matters */
        if (!(sid = tk_sid_find(t, ssl)))
            return -1;
        memcpy(fp, sid->fp, TK_FP);
        return 0;
    }
    if (tls_peer_cert(ssl, tr) < 0)
        return -1;
    if (!tr->len)
        return 0;
    memcpy(fp, tr->fp, TK_FP);
    return tr->der ? tk_cert_put(fp, tr->der, tr->len) : 0;    /* no DER: remembered already */
}

static int tk_seal(struct tls_listener *t, WOLFSSL *ssl, unsigned char *name, unsigned char *iv,
                   unsigned char *mac, unsigned char *buf, int len, int *outlen)
{
    struct tls_resume *tr = wolfSSL_get_app_data(ssl);
    time_t now = time(NULL);
    uint32_t issued = (uint32_t)now;
    uint8_t aad[40], fp[TK_FP];
    int n = len;
    uint64_t ctr;

    if (tk_key_ready(now) < 0 || !TK.key[0].id)
        return WOLFSSL_TICKET_RET_FATAL;
    memset(name, 0, WOLFSSL_TICKET_NAME_SZ);
    memcpy(name, &TK.key[0].id, 4);
    memcpy(name + 4, &issued, 4);
    if (*outlen - len >= TK_FP && tk_identity(t, ssl, tr, fp) == 0) {
        memcpy(buf + len, fp, TK_FP);
        n += TK_FP;
    } else {
        name[8] = TK_NOID;          /* opens only where no identity matters */
    }
    ctr = (uint64_t)worker_index << 56 | (++TK.counter & 0x00ffffffffffffffULL);
    memset(iv, 0, WOLFSSL_TICKET_IV_SZ);
    memcpy(iv, &ctr, 8);
    memcpy(iv + 8, &issued, 4);
    iv[15] = 1;
    memset(mac, 0, WOLFSSL_TICKET_MAC_SZ);
    tk_aad(aad, name, iv, t->serial, tls_ctx_index(t, tls_ctx_of(t, ssl)), n);
    if (wc_AesGcmEncrypt(&TK.key[0].aes, buf, buf, (word32)n, iv, 12, mac, 16, aad,
                         sizeof aad) != 0)
        return WOLFSSL_TICKET_RET_FATAL;
    *outlen = n;
    return WOLFSSL_TICKET_RET_OK;
}

static int tk_cert_check(const struct tls_ctx *x, const struct tk_cert *e, enum tls_reason *why);

/* Open a ticket, or decline it (the client then does a full handshake). */
static int tk_open(struct tls_listener *t, WOLFSSL *ssl, const unsigned char *name,
                   const unsigned char *iv, const unsigned char *mac, unsigned char *buf,
                   int len, int *outlen)
{
    struct tls_resume *tr = wolfSSL_get_app_data(ssl);
    const char *host = wolfSSL_get_servername(ssl, WOLFSSL_SNI_HOST_NAME);
    struct tls_ctx *x = host && *host ? tls_sni_find(t, host) : NULL;
    time_t now = time(NULL);
    uint32_t id, issued;
    struct tk_key *k = NULL;
    struct tk_cert *e = NULL;
    uint8_t aad[40], fp[TK_FP], zero[TK_FP];
    enum tls_reason why;
    int i;

    if (!x)
        x = &t->def;
    memcpy(&id, name, 4);
    memcpy(&issued, name + 4, 4);
    for (i = 0; i < 2; i++)
        if (id && TK.key[i].id == id)
            k = &TK.key[i];
    if (!tr || !k || now - (time_t)issued > TK_LIFETIME || (time_t)issued > now + 60)
        return WOLFSSL_TICKET_RET_REJECT;
    tk_aad(aad, name, iv, t->serial, tls_ctx_index(t, x), len);
    if (wc_AesGcmDecrypt(&k->aes, buf, buf, (word32)len, iv, 12, mac, 16, aad, sizeof aad) != 0)
        return WOLFSSL_TICKET_RET_REJECT;
    if (name[8] & TK_NOID) {
        if (x->verify != WOLFSSL_VERIFY_NONE)
            return WOLFSSL_TICKET_RET_REJECT;
        memset(fp, 0, TK_FP);
    } else {
        if (len < TK_FP)
            return WOLFSSL_TICKET_RET_REJECT;
        len -= TK_FP;
        memcpy(fp, buf + len, TK_FP);
    }
    memset(zero, 0, sizeof zero);
    if (memcmp(fp, zero, TK_FP) != 0) {
        e = tk_cert_find(fp);
        if (!e)
            e = tk_shared_find(fp);     /* sealed by another worker */
        if (!e || tk_cert_check(x, e, &why) < 0)
            return WOLFSSL_TICKET_RET_REJECT;   /* the full handshake says why */
    }
    tr_reset(tr);
    if (e) {
        tr->der = malloc(e->len);
        if (!tr->der)
            return WOLFSSL_TICKET_RET_REJECT;
        memcpy(tr->der, e->der, e->len);
        tr->len = e->len;
    }
    memcpy(tr->fp, fp, TK_FP);
    tr->sni = tls_ctx_index(t, x);
    tr->ok = 1;
    *outlen = len;
    return WOLFSSL_TICKET_RET_OK;
}

static int tls_ticket_cb(WOLFSSL *ssl, unsigned char name[WOLFSSL_TICKET_NAME_SZ],
                         unsigned char iv[WOLFSSL_TICKET_IV_SZ],
                         unsigned char mac[WOLFSSL_TICKET_MAC_SZ], int enc, unsigned char *buf,
                         int len, int *outlen, void *arg)
{
    if (enc)
        return tk_seal(arg, ssl, name, iv, mac, buf, len, outlen);
    return tk_open(arg, ssl, name, iv, mac, buf, len, outlen);
}

/* Is a remembered certificate still good for a resumed session under this
 * context: not expired, not revoked by the CRL in force now, and that CRL
 * current?  why: as a full handshake would log it. */
static int tk_cert_check(const struct tls_ctx *x, const struct tk_cert *e, enum tls_reason *why)
{
    time_t now = time(NULL);
    int rc;

    *why = R_EXPIRED;
    if (e->expires <= now)
        return -1;
    if (!x->ncrls)
        return 0;
    rc = wolfSSL_CertManagerCheckCRL(wolfSSL_CTX_GetCertManager(x->ctx), e->der, (long)e->len);
    if (rc != WOLFSSL_SUCCESS) {
        *why = tls_crl_reason(x, rc);
        return -1;
    }
    return tls_ints_crl_ok(x, e->der, e->len, why);
}

/* Why a handshake failed, from wolfSSL's error and what we know of the CRLs. */
static enum tls_reason tls_reason_of(struct tls_listener *t, WOLFSSL *ssl, int err)
{
    struct tls_ctx *x = tls_ctx_of(t, ssl);
    int crl_old = tls_crl_expired(x, time(NULL));

    switch (err) {
    case NO_PEER_CERT:
        return R_NO_CERT;
    case ASN_NO_SIGNER_E:
        return R_UNKNOWN_CA;
    case ASN_AFTER_DATE_E:
        return crl_old ? R_CRL_EXPIRED : R_EXPIRED;
    case ASN_BEFORE_DATE_E:
        return R_NOT_YET_VALID;
    case CRL_CERT_REVOKED:
        return R_REVOKED;
    case CRL_MISSING:
    case CRL_CERT_DATE_ERR:
        return crl_old ? R_CRL_EXPIRED : R_CRL_MISSING;
    case SOCKET_PEER_CLOSED_E:
    case SOCKET_ERROR_E:
        return R_CLOSED;
    case VERIFY_CERT_ERROR:
    case ASN_SIG_CONFIRM_E:
    case KEYUSE_SIGNATURE_E:        /* a certificate not made for client auth */
    case KEYUSE_ENCIPHER_E:
    case EXTKEYUSE_AUTH_E:
        return R_BAD_CERT;
    default:
        return R_PROTOCOL;
    }
}

/* The CRLs, checked on a timer (every 10 s): a changed file is loaded, a
 * warning goes out from 24 h before a CRL expires, an error once it has. */
static void tls_crl_watch(struct tls_listener *t, time_t now)
{
    size_t i, k;
    char when[64];

    for (i = 0; i <= t->nsni; i++) {
        struct tls_ctx *x = i < t->nsni ? &t->sni[i] : &t->def;
        for (k = 0; k < x->ncrls; k++)
            if (tls_crl_changed(&x->crls[k], t->cfg->name)) {
                tls_ctx_reload(t, x);
                break;
            }
        for (k = 0; k < x->ncrls; k++) {
            struct tls_crl *c = &x->crls[k];
            if (!c->next_update)
                continue;
            tls_fmt_time(c->next_update, when, sizeof when);
            if (c->next_update <= now && !c->expired_logged) {
                c->expired_logged = 1;
                log_msg(MTLSLB_LOG_ERROR, "listener %s: CRL %s expired at %s: its clients are "
                        "refused until a current CRL replaces it", t->cfg->name,
                        c->file->path, when);
            } else if (c->next_update > now && c->next_update - now <= 86400 && !c->warned) {
                c->warned = 1;
                log_msg(MTLSLB_LOG_WARN, "listener %s: CRL %s expires at %s; replace it before "
                        "then or its clients will be refused", t->cfg->name, c->file->path, when);
            }
        }
    }
}

/* ======================================================================
 * upstreams (selection, health checks)
 *
 * Runtime state of each backend server beside its model entry.  Chooses a
 * server for a connection or request among those up; a server whose connect
 * failed is skipped for MTLSLB_BACKOFF_MS.  Backup servers are chosen only
 * when no other is.  Health checks and the TLS contexts for servers live
 * here too.
 * ====================================================================== */

struct loop;
struct mtlslb;

/* Anything with a pollfd slot starts with this. */
enum pollable_kind { PK_LISTEN, PK_SIGNAL, PK_SIDE, PK_CHECK, PK_STATS_LISTEN,
                     PK_STATS };

struct pollable {
    int fd;
    int slot;                       /* index in the pollfd array, -1 = none */
    enum pollable_kind kind;
};

enum timer_kind { TM_CONN, TM_ACCEPT, TM_TICK, TM_GRACE, TM_POOL, TM_CHECK, TM_STATS };

struct timer {
    uint64_t when;
    size_t idx;                     /* heap position + 1; 0 = not armed */
    enum timer_kind kind;
};

/* The event loop's interface (defined in its section, below). */
static int loop_add(struct loop *L, struct pollable *p, short events);
static void loop_del(struct loop *L, struct pollable *p);
static void loop_events(struct loop *L, const struct pollable *p, short events);
static void timer_set(struct loop *L, struct timer *t, uint64_t when);
static void timer_del(struct loop *L, struct timer *t);

struct pconn;
struct up_backend;

enum hc_state { HC_IDLE, HC_CONNECT, HC_HANDSHAKE, HC_SEND, HC_RECV };

/* A server's health check: one at a time, see hc_event. */
struct hc {
    struct pollable pl;
    struct timer tm;                /* idle: the next start; running: its deadline */
    enum hc_state st;
    WOLFSSL *ssl;
    uint64_t started;
    unsigned oks, fails;            /* consecutive results */
    char req[512];
    size_t req_len, req_off;
    char resp[256];
    size_t resp_len;
    char last[120];                 /* "ok", "timeout", "status 500", ... */
    time_t last_time;               /* 0 = never checked */
    unsigned last_ms;
};

struct up_server {
    const struct mtlslb_server *cfg;
    const struct mtlslb_backend *be;
    struct up_backend *ub;
    int up;                         /* by the health checks; always 1 without */
    int cur;                        /* smooth weighted round-robin state */
    unsigned active;
    uint64_t total, fails, bytes_in, bytes_out;
    uint64_t backoff_until;         /* monotonic ms */
    struct pconn *idle;             /* http: idle connections, newest first */
    unsigned nidle;
    WOLFSSL_CTX *tls_ctx;           /* `server ... tls` */
    struct hc hc;
    int slot;                       /* `workers`: its place in the shared figures; -1 none */
};

struct up_backend {
    const struct mtlslb_backend *cfg;
    struct up_server *srv;
    size_t n;
    unsigned next;                  /* rotation start for leastconn ties */
};

/* level 0: primary, not backing off; 1: backup, not backing off;
 * 2: primary regardless; 3: backup regardless (better a try than nothing). */
static int up_eligible(const struct up_server *s, int level, uint64_t now)
{
    if (!s->up || s->cfg->backup != (level & 1))
        return 0;
    return level >= 2 || s->backoff_until <= now;
}

/* nginx's smooth weighted round-robin: even spread, weights honoured. */
static struct up_server *up_pick_rr(struct up_backend *b, int level, uint64_t now)
{
    struct up_server *best = NULL;
    int total = 0;
    size_t i;

    for (i = 0; i < b->n; i++) {
        struct up_server *s = &b->srv[i];
        if (!up_eligible(s, level, now))
            continue;
        s->cur += (int)s->cfg->weight;
        total += (int)s->cfg->weight;
        if (!best || s->cur > best->cur)
            best = s;
    }
    if (best)
        best->cur -= total;
    return best;
}

/* Fewest active connections relative to weight; ties rotate. */
static struct up_server *up_pick_lc(struct up_backend *b, int level, uint64_t now)
{
    struct up_server *best = NULL;
    size_t k;

    for (k = 0; k < b->n; k++) {
        struct up_server *s = &b->srv[(b->next + k) % b->n];
        if (!up_eligible(s, level, now))
            continue;
        if (!best || (uint64_t)s->active * best->cfg->weight <
                     (uint64_t)best->active * s->cfg->weight)
            best = s;
    }
    if (best)
        b->next = (unsigned)((best - b->srv + 1) % (long)b->n);
    return best;
}

/* The client's address (not its port) hashed onto the weighted servers. */
static struct up_server *up_pick_src(struct up_backend *b, int level, uint64_t now,
                                     const struct sockaddr_storage *client)
{
    const uint8_t *a;
    size_t al, i;
    uint32_t h = 2166136261u, total = 0, pick;

    if (client->ss_family == AF_INET) {
        a = (const uint8_t *)&((const struct sockaddr_in *)(const void *)client)->sin_addr;
        al = 4;
    } else {
        a = (const uint8_t *)&((const struct sockaddr_in6 *)(const void *)client)->sin6_addr;
        al = 16;
    }
    for (i = 0; i < al; i++)
        h = (h ^ a[i]) * 16777619u;
    for (i = 0; i < b->n; i++)
        if (up_eligible(&b->srv[i], level, now))
            total += b->srv[i].cfg->weight;
    if (total == 0)
        return NULL;
    pick = h % total;
    for (i = 0; i < b->n; i++) {
        if (!up_eligible(&b->srv[i], level, now))
            continue;
        if (pick < b->srv[i].cfg->weight)
            return &b->srv[i];
        pick -= b->srv[i].cfg->weight;
    }
    return NULL;
}

static struct up_server *up_pick(struct up_backend *b, const struct sockaddr_storage *client,
                                 uint64_t now)
{
    struct up_server *s = NULL;
    int level;

    for (level = 0; level < 4 && !s; level++) {
        switch (b->cfg->balance) {
        case MTLSLB_BAL_LEASTCONN:
            s = up_pick_lc(b, level, now);
            break;
        case MTLSLB_BAL_SOURCE:
            s = up_pick_src(b, level, now, client);
            break;
        default:
            s = up_pick_rr(b, level, now);
            break;
        }
    }
    return s;
}

static int up_init(struct up_backend *b, const struct mtlslb_backend *cfg)
{
    size_t i;

    memset(b, 0, sizeof *b);
    b->cfg = cfg;
    b->srv = calloc(cfg->nservers, sizeof *b->srv);
    if (!b->srv)
        return -1;
    b->n = cfg->nservers;
    for (i = 0; i < b->n; i++) {
        struct up_server *s = &b->srv[i];
        s->cfg = &cfg->servers[i];
        s->be = cfg;
        s->ub = b;
        s->up = 1;
        s->hc.pl.fd = -1;
        s->hc.pl.slot = -1;
        s->hc.pl.kind = PK_CHECK;
        s->hc.tm.kind = TM_CHECK;
    }
    return 0;
}

/* ---- TLS to servers ---- */

/* The client context for a `server ... tls` line: verify against its ca
 * when given, present mtlslb's own certificate when given. */
static int up_tls_build(struct report *r, struct up_server *s)
{
    const struct mtlslb_server *sc = s->cfg;

    if (!sc->tls)
        return 0;
    s->tls_ctx = wolfSSL_CTX_new(wolfSSLv23_client_method());
    if (!s->tls_ctx) {
        report_at(r, sc->line, "cannot create a TLS context (out of memory)");
        return -1;
    }
    wolfSSL_CTX_SetMinVersion(s->tls_ctx, WOLFSSL_TLSV1_2);
    wolfSSL_CTX_SetIOSend(s->tls_ctx, up_tls_send);
    if (wolfSSL_CTX_set_cipher_list(s->tls_ctx, TLS_DEFAULT_CIPHERS) != WOLFSSL_SUCCESS) {
        report_at(r, sc->line, "no usable cipher for server %s", sc->name);
        return -1;
    }
    if (sc->tls_ca.path) {
        if (tls_readable(r, &sc->tls_ca, "ca") < 0)
            return -1;
        if (wolfSSL_CTX_load_verify_locations(s->tls_ctx, sc->tls_ca.path, NULL) !=
            WOLFSSL_SUCCESS) {
            report_at(r, sc->line, "cannot load ca %s (not PEM CA certificates)", sc->tls_ca.path);
            return -1;
        }
        wolfSSL_CTX_set_verify(s->tls_ctx, WOLFSSL_VERIFY_PEER, NULL);
    } else {
        wolfSSL_CTX_set_verify(s->tls_ctx, WOLFSSL_VERIFY_NONE, NULL);
    }
    if (sc->tls_cert.path) {
        if (tls_readable(r, &sc->tls_cert, "certificate") < 0 ||
            tls_readable(r, &sc->tls_key, "key") < 0)
            return -1;
        if (wolfSSL_CTX_use_certificate_chain_file(s->tls_ctx, sc->tls_cert.path) !=
                WOLFSSL_SUCCESS ||
            wolfSSL_CTX_use_PrivateKey_file(s->tls_ctx, sc->tls_key.path, WOLFSSL_FILETYPE_PEM) !=
                WOLFSSL_SUCCESS) {
            report_at(r, sc->line, "cannot load certificate %s or key %s", sc->tls_cert.path,
                      sc->tls_key.path);
            return -1;
        }
        if (!tls_key_matches(sc->tls_cert.path, sc->tls_key.path)) {
            report_at(r, sc->line, "key %s does not match certificate %s", sc->tls_key.path,
                      sc->tls_cert.path);
            return -1;
        }
    }
    return 0;
}

/* A client TLS object for server s on fd, with SNI and name check. */
static WOLFSSL *up_tls_new(struct up_server *s, int fd)
{
    WOLFSSL *ssl = wolfSSL_new(s->tls_ctx);
    const char *sni = s->cfg->tls_sni;

    if (!ssl)
        return NULL;
    if (wolfSSL_set_fd(ssl, fd) != WOLFSSL_SUCCESS ||
        (sni && (wolfSSL_UseSNI(ssl, WOLFSSL_SNI_HOST_NAME, sni, (word16)strlen(sni)) !=
                     WOLFSSL_SUCCESS ||
                 (s->cfg->tls_ca.path && wolfSSL_check_domain_name(ssl, sni) != WOLFSSL_SUCCESS)))) {
        wolfSSL_free(ssl);
        return NULL;
    }
    return ssl;
}

/* ---- health checks ----
 *
 * Each checked server has one check at a time, a small state machine in
 * the same poll loop: connect, TLS handshake for tls servers, send the
 * request, read the status line.  Every outcome goes through hc_done, which
 * counts rise/fall, writes the one log line of a state change and sets the
 * next start.  Checks never block and never touch client traffic.
 */

static unsigned up_count_up(const struct up_backend *b)
{
    unsigned n = 0;
    size_t i;

    for (i = 0; i < b->n; i++)
        n += b->srv[i].up;
    return n;
}

static void hc_close(struct loop *L, struct up_server *s)
{
    struct hc *h = &s->hc;

    if (h->pl.slot >= 0)
        loop_del(L, &h->pl);
    if (h->ssl) {
        wolfSSL_free(h->ssl);
        h->ssl = NULL;
    }
    if (h->pl.fd >= 0) {
        close(h->pl.fd);
        h->pl.fd = -1;
    }
    h->st = HC_IDLE;
}

static void hc_done(struct loop *L, uint64_t now, struct up_server *s, int ok, const char *why)
{
    struct hc *h = &s->hc;
    const struct mtlslb_backend *be = s->be;
    uint64_t next = h->started + be->check_interval;

    hc_close(L, s);
    snprintf(h->last, sizeof h->last, "%s", ok ? "ok" : why);
    /* strerror()'s "Connection refused" reads "connection refused" here, as
     * in SPEC 7's example; "TLS: ..." keeps its capitals. */
    if (isupper((unsigned char)h->last[0]) && islower((unsigned char)h->last[1]))
        h->last[0] = (char)tolower((unsigned char)h->last[0]);
    h->last_time = time(NULL);
    h->last_ms = (unsigned)(now - h->started);
    if (ok) {
        h->fails = 0;
        if (++h->oks >= be->rise && !s->up) {
            s->up = 1;
            log_msg(MTLSLB_LOG_WARN, "backend %s server %s UP: check passed (%u/%zu up)",
                    be->name, s->cfg->name, up_count_up(s->ub), s->ub->n);
        }
    } else {
        h->oks = 0;
        if (++h->fails >= be->fall && s->up) {
            s->up = 0;
            log_msg(MTLSLB_LOG_WARN, "backend %s server %s DOWN: %s (%u/%zu up)", be->name,
                    s->cfg->name, h->last, up_count_up(s->ub), s->ub->n);
        }
    }
    timer_set(L, &h->tm, next > now ? next : now + be->check_interval);
}

static void hc_fail_tls(struct loop *L, uint64_t now, struct up_server *s, int err)
{
    char why[120], tmp[96];

    wolfSSL_ERR_error_string_n((unsigned long)err, tmp, sizeof tmp);
    snprintf(why, sizeof why, "TLS: %s (%d)", tmp, err);
    hc_done(L, now, s, 0, why);
}

static void hc_start(struct loop *L, uint64_t now, struct up_server *s)
{
    struct hc *h = &s->hc;
    const struct mtlslb_server *sc = s->cfg;
    int fd;

    h->started = now;
    h->resp_len = h->req_off = 0;
    fd = fd_socket(sc->addr.ss_family);
    if (fd < 0) {
        /* Out of descriptors is mtlslb's trouble, not the server's: skip. */
        log_msg(MTLSLB_LOG_DEBUG, "backend %s server %s: check skipped: %s", s->be->name,
                sc->name, strerror(errno));
        timer_set(L, &h->tm, now + s->be->check_interval);
        return;
    }
    h->pl.fd = fd;
    if (loop_add(L, &h->pl, POLLOUT) < 0) {
        hc_done(L, now, s, 0, "cannot set up the check socket");
        return;
    }
    h->st = HC_CONNECT;
    timer_set(L, &h->tm, now + s->be->check_timeout);
    if (connect(fd, (const struct sockaddr *)&sc->addr, sc->addrlen) < 0 &&
        errno != EINPROGRESS && errno != EINTR)
        hc_done(L, now, s, 0, strerror(errno));
}

/* The check request: Host is the server's address (SPEC 7). */
static void hc_request(struct up_server *s)
{
    struct hc *h = &s->hc;
    const struct mtlslb_backend *be = s->be;
    int n = snprintf(h->req, sizeof h->req, "%s %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: mtlslb-check"
                     "\r\nConnection: close\r\n\r\n", be->check_method, be->check_path,
                     s->cfg->tls_sni ? s->cfg->tls_sni : s->cfg->addr_text);

    h->req_len = n > 0 && (size_t)n < sizeof h->req ? (size_t)n : 0;
    h->req_off = 0;
}

static int hc_expected(int expect, int status)
{
    if (expect >= 100)
        return status == expect;
    if (expect == 2 || expect == 3)
        return status / 100 == expect;
    return status >= 200 && status < 400;
}

/* Connected, or TLS done: a tcp check has passed, an http check sends. */
static void hc_connected(struct loop *L, uint64_t now, struct up_server *s)
{
    struct hc *h = &s->hc;

    if (s->be->check == MTLSLB_CHECK_TCP) {
        hc_done(L, now, s, 1, NULL);
        return;
    }
    hc_request(s);
    h->st = HC_SEND;
    loop_events(L, &h->pl, POLLOUT);
}

/* Send the request / read the status line; 1 = wait for the socket. */
static int hc_io(struct loop *L, uint64_t now, struct up_server *s)
{
    struct hc *h = &s->hc;
    ssize_t n;
    int err;

    if (h->st == HC_SEND) {
        if (h->ssl)
            n = wolfSSL_write(h->ssl, h->req + h->req_off, (int)(h->req_len - h->req_off));
        else
            n = send(h->pl.fd, h->req + h->req_off, h->req_len - h->req_off, MSG_NOSIGNAL);
        if (n > 0) {
            h->req_off += (size_t)n;
            if (h->req_off == h->req_len) {
                h->st = HC_RECV;
                loop_events(L, &h->pl, POLLIN);
            }
            return 0;
        }
    } else {
        if (h->ssl)
            n = wolfSSL_read(h->ssl, h->resp + h->resp_len, (int)(sizeof h->resp - 1 - h->resp_len));
        else
            n = recv(h->pl.fd, h->resp + h->resp_len, sizeof h->resp - 1 - h->resp_len, 0);
        if (n > 0) {
            const char *eol;
            h->resp_len += (size_t)n;
            h->resp[h->resp_len] = 0;
            eol = strstr(h->resp, "\r\n");
            if (!eol && h->resp_len < sizeof h->resp - 1)
                return 0;
            if (!eol || h->resp_len < 12 || strncmp(h->resp, "HTTP/1.", 7) != 0 ||
                h->resp[8] != ' ') {
                hc_done(L, now, s, 0, "invalid response");
            } else {
                int status = atoi(h->resp + 9);
                char why[40];
                snprintf(why, sizeof why, "status %d", status);
                hc_done(L, now, s, hc_expected(s->be->check_expect, status), why);
            }
            return 0;
        }
        if (n == 0 && !h->ssl) {
            hc_done(L, now, s, 0, "closed without a response");
            return 0;
        }
    }
    if (h->ssl) {
        err = wolfSSL_get_error(h->ssl, (int)n);
        if (err == WOLFSSL_ERROR_WANT_READ || err == WOLFSSL_ERROR_WANT_WRITE) {
            loop_events(L, &h->pl, err == WOLFSSL_ERROR_WANT_READ ? POLLIN : POLLOUT);
            return 1;
        }
        if (err == WOLFSSL_ERROR_ZERO_RETURN || err == SOCKET_PEER_CLOSED_E)
            hc_done(L, now, s, 0, "closed without a response");
        else
            hc_fail_tls(L, now, s, err);
        return 0;
    }
    if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
        return 1;
    hc_done(L, now, s, 0, strerror(errno));
    return 0;
}

static void hc_event(struct loop *L, uint64_t now, struct up_server *s)
{
    struct hc *h = &s->hc;
    int err = 0, r;
    socklen_t l = sizeof err;

    switch (h->st) {
    case HC_CONNECT:
        if (getsockopt(h->pl.fd, SOL_SOCKET, SO_ERROR, &err, &l) < 0)
            err = errno;
        if (err == EINPROGRESS || err == EALREADY)
            return;
        if (err) {
            hc_done(L, now, s, 0, strerror(err));
            return;
        }
        if (!s->cfg->tls) {
            hc_connected(L, now, s);
            return;
        }
        if (!(h->ssl = up_tls_new(s, h->pl.fd))) {
            hc_done(L, now, s, 0, "TLS: cannot set up");
            return;
        }
        h->st = HC_HANDSHAKE;
        /* fall through */
    case HC_HANDSHAKE:
        r = wolfSSL_connect(h->ssl);
        if (r == WOLFSSL_SUCCESS) {
            hc_connected(L, now, s);
            return;
        }
        err = wolfSSL_get_error(h->ssl, r);
        if (err == WOLFSSL_ERROR_WANT_READ || err == WOLFSSL_ERROR_WANT_WRITE)
            loop_events(L, &h->pl, err == WOLFSSL_ERROR_WANT_READ ? POLLIN : POLLOUT);
        else
            hc_fail_tls(L, now, s, err);
        return;
    case HC_SEND:
    case HC_RECV:
        while (h->st == HC_SEND || h->st == HC_RECV)
            if (hc_io(L, now, s))
                return;
        return;
    case HC_IDLE:
        return;
    }
}

static void hc_timer(struct loop *L, uint64_t now, struct up_server *s)
{
    if (s->hc.st == HC_IDLE)
        hc_start(L, now, s);
    else
        hc_done(L, now, s, 0, "timeout");
}

/* First checks spread over one interval, not all at once. */
static void hc_schedule(struct loop *L, uint64_t now, struct up_backend *b)
{
    size_t i;

    if (b->cfg->check == MTLSLB_CHECK_NONE)
        return;
    for (i = 0; i < b->n; i++)
        timer_set(L, &b->srv[i].hc.tm, now + 1 + b->cfg->check_interval * i / b->n);
}



/* ======================================================================
 * connections (tcp relay, http proxy)
 *
 * A connection is two sides of one shape.  The client side speaks TLS, the
 * server side plain TCP.  Bytes read from a side wait in that side's buffer
 * until the other side takes them; a full buffer stops reading (POLLIN is
 * dropped), which is the whole of back-pressure.  relay_pump() moves bytes
 * both ways and is the only code that does.
 * ====================================================================== */


/* Bytes we generate for a side (rewritten heads, error answers); they go
 * out before anything relayed from the other side. */
struct obuf {
    char *p;
    size_t len, off, cap;
};

static int obuf_add(struct obuf *o, const char *s, size_t n)
{
    if (o->len + n > o->cap) {
        size_t cap = o->cap ? o->cap : 512;
        char *p;
        while (cap < o->len + n)
            cap *= 2;
        if (!(p = realloc(o->p, cap)))
            return -1;
        o->p = p;
        o->cap = cap;
    }
    memcpy(o->p + o->len, s, n);
    o->len += n;
    return 0;
}

/* A block kept for the connection's life holds no spare room. */
static void obuf_fit(struct obuf *o)
{
    char *p;

    if (o->len && o->len < o->cap && (p = realloc(o->p, o->len))) {
        o->p = p;
        o->cap = o->len;
    }
}

/* The framing of what is read from a side: how much of its buffer may be
 * passed on.  tcp mode and upgraded connections are tunnels. */
enum body_kind { BK_NONE, BK_LENGTH, BK_CHUNKED, BK_CLOSE, BK_TUNNEL };

struct body {
    enum body_kind kind;
    uint64_t left;                  /* BK_LENGTH: bytes still to pass */
    struct mtlslb_http_chunk ch;    /* BK_CHUNKED: the scanner ... */
    size_t ready;                   /* ... bytes scanned, not yet passed */
    int end;                        /* ... the last chunk was seen */
    int strip;                      /* ... passed without the framing (an HTTP/1.0 client) */
};

struct side {
    struct pollable pl;
    WOLFSSL *ssl;                   /* NULL = plain TCP */
    struct tls_rd rd;               /* client: read-ahead (tls_recv); all: drained */
    struct buf buf;                 /* read from this side, for the other */
    struct obuf out;                /* generated, for this side */
    struct body body;               /* framing of buf */
    struct conn *conn;
    size_t wpending;                /* TLS write to retry with this length */
    unsigned eof : 1;               /* this side will send nothing more */
    unsigned shut : 1;              /* we send this side nothing more */
    unsigned shut_done : 1;         /* ... and told it so (close_notify/FIN) */
    unsigned rd_want_wr : 1;        /* TLS read needs the socket writable */
    unsigned wr_want_rd : 1;        /* TLS write needs the socket readable */
};

enum conn_state { CONN_HANDSHAKE, CONN_CONNECTING, CONN_SRV_TLS, CONN_RELAY, CONN_HTTP, CONN_LINGER };

enum http_req { HQ_HEAD, HQ_BODY, HQ_DONE };
enum http_resp { HS_NONE, HS_HEAD, HS_BODY, HS_DONE };

/* A connection's copy of a request head (for a retry) keeps a buffer up to
 * this size for its next requests; a larger one is freed after its request. */
#define HEAD_KEEP_MAX 2048

/* The request/response exchange in flight on an http connection. */
struct http_tx {
    enum http_req rq;
    enum http_resp rs;
    int version;                    /* the request's, 10 or 11 */
    int status;                     /* for the log */
    uint64_t start, head_start;     /* monotonic ms */
    uint64_t in0, out0;             /* connection byte counts at the start */
    uint64_t head_in;               /* the request head's bytes (in bytes_in) */
    struct up_backend *up;
    struct up_server *server;       /* for the log, once chosen */
    char method[24];
    char path[256];
    unsigned head_req : 1;          /* HEAD: the response has no body */
    unsigned keep : 1;              /* the client wants keep-alive */
    unsigned upgrade : 1;
    unsigned retryable : 1;         /* idempotent, no body: may go again */
    unsigned resp_started : 1;      /* the client has (or will get) a head */
    unsigned close_client : 1;
    unsigned head_seen : 1;         /* a byte of the request head has come */
    unsigned srv_keep : 1;          /* the server connection may be reused */
    unsigned logged : 1;            /* its req line is out */
};

struct lst_fd {
    struct pollable pl;
    struct lst *ls;
};

/* A listener at run time. */
struct lst {
    const struct mtlslb_listener *cfg;
    struct tls_listener tls;
    struct up_backend *up;
    struct lst_fd *fds;
    size_t nfds;
    uint64_t active, total, hs_fail[R_COUNT];
    int slot;                       /* `workers`: its place in the shared figures; -1 none */
};

struct conn {
    struct side cli, srv;
    enum conn_state st;
    struct gen *gen;                /* the configuration it started under */
    struct lst *ls;
    struct up_backend *up;          /* tcp: the listener's; http: the request's */
    struct up_server *server;
    uint64_t srv_in0, srv_out0;     /* byte counts when the server was taken */
    struct http_tx tx;
    struct obuf xhdrs;              /* http: who the client is, as header lines */
    struct obuf req_head;           /* http: the request's head as sent, for a retry;
                                     * len 0 = none; its buffer serves the next
                                     * requests up to HEAD_KEEP_MAX */
    struct mtlslb *S;
    struct timer tm;
    const struct mtlslb_sni *hs_sni;    /* the sni entry of the handshake; NULL = default */
    unsigned tries;                 /* connect attempts made */
    uint64_t start;                 /* monotonic ms */
    uint64_t bytes_in, bytes_out;   /* from the client, to the client */
    struct sockaddr_storage caddr;
    char peer[INET6_ADDRSTRLEN + 8];
    char *sni, *cn;                 /* conn_noname until known (conn_name) */
    int has_cert;
    struct tls_resume tr;           /* what a session ticket brought */
    unsigned char *route_ok;        /* http: per route, do its allow lines admit the client */
    unsigned denied : 1;            /* the listener's allow lines refuse the client */
    unsigned dead : 1;
    unsigned established : 1;       /* handshake done: log a connection line */
    unsigned http : 1;
    unsigned closing : 1;           /* http: close once the client has it all */
    unsigned srv_reused : 1;        /* the server connection came from the pool */
    struct conn *next, *prev;
};

static char conn_noname[1];         /* "": a connection's sni or cn not known */
static int conn_name(char **dst, const char *src);
static void conn_rsv_put(struct mtlslb *S, int fd);


/* The one object that owns the running process. */
/*
 * A generation: one configuration with everything built from it.  SIGHUP
 * builds a new one beside the running one and swaps; a connection keeps the
 * generation it started under (refs) until it ends.
 */
struct gen {
    struct mtlslb_config *cfg;
    struct lst *ls;
    size_t nls;
    struct up_backend *ups;
    size_t nups;
    unsigned refs;                  /* connections made under it */
    struct gen *next;               /* retired generations still in use */
};

struct shm;

struct mtlslb {
    struct gen *gen;                /* the running configuration */
    volatile struct shm *shm;       /* `workers N`: the figures all workers share */
    struct gen *retired;
    const char *file;               /* the configuration file, for reloads */
    struct loop *loop;
    struct conn *conns, *dead;
    unsigned active;                /* client connections open */
    int paused_full;                /* accepting paused at max-conns */
    int paused_fds;                 /* accepting paused by EMFILE/ENFILE */
    int fd_warned;                  /* a warning went out at fd_warned_at */
    uint64_t fd_warned_at;
    unsigned long fd_suppressed;    /* pauses since, not logged */
    struct pollable stats_pl;       /* the stats endpoint's listening socket */
    struct stats_conn *stats_conns;
    unsigned nstats;
    struct pconn *pc_free;          /* pool entries to reuse (pool_put, pool_take) */
    uint64_t started;
    int spare_fd;                   /* held back for wolfSSL (conn_spare_*) */
    int next_fd;                    /* the next client's server-side socket */
    int rsv[8];                     /* more such, unused by http clients (conn_rsv_*) */
    unsigned nrsv;
    struct timer accept_tm, tick_tm, grace_tm;
    int stopping;
    uint64_t now;
};

static void conn_accepting(struct mtlslb *S);
static void conn_spare_release(struct mtlslb *S);
static int conn_spare_take(struct mtlslb *S);

static const char *side_name(const struct conn *c, const struct side *s)
{
    return s == &c->cli ? "client" : "server";
}

/* The rules that refused a client, for the log: "allow cn a*; allow o x". */
static void conn_rules_text(const struct mtlslb_allow *a, size_t n, char *out, size_t cap)
{
    size_t i, off = 0;

    out[0] = 0;
    for (i = 0; i < n && off < cap; i++) {
        int k = snprintf(out + off, cap - off, "%sallow %s", i ? "; " : "", a[i].text);
        if (k < 0)
            break;
        off += (size_t)k;
    }
}

static void conn_denied_log(struct conn *c, const struct mtlslb_allow *a, size_t n,
                            const char *where)
{
    char rules[512], cn[520];

    conn_rules_text(a, n, rules, sizeof rules);
    log_msg(MTLSLB_LOG_INFO, "access denied %s listener=%s%s cn=%s rule=\"%s\"", c->peer,
            c->ls->cfg->name, where, log_word(cn, sizeof cn, c->cn), rules);
}

static void conn_log(struct conn *c, const char *end)
{
    const struct up_server *s = c->server;
    char sni[520], cn[520];

    log_msg(MTLSLB_LOG_INFO, "conn %s listener=%s sni=%s cn=%s backend=%s/%s bytes_in=%llu "
            "bytes_out=%llu ms=%llu end=\"%s\"", c->peer, c->ls->cfg->name,
            log_word(sni, sizeof sni, c->sni), log_word(cn, sizeof cn, c->cn),
            c->ls->up->cfg->name, s ? s->cfg->name : "-",
            (unsigned long long)c->bytes_in, (unsigned long long)c->bytes_out,
            (unsigned long long)(c->S->now - c->start), end);
}

static void side_close(struct mtlslb *S, struct side *s)
{
    if (s->pl.slot >= 0)
        loop_del(S->loop, &s->pl);
    if (s->ssl) {
        wolfSSL_free(s->ssl);
        s->ssl = NULL;
    }
    if (s->pl.fd >= 0) {
        close(s->pl.fd);
        s->pl.fd = -1;
    }
}

/* The single exit of a connection.  Memory is freed after the current loop
 * iteration, so pointers the loop still holds stay valid. */
/*
 * A connection made under an earlier generation (before a SIGHUP) counts
 * on that generation's objects, which go when its last connection does,
 * and /stats shows the running one only.  So what such a connection adds
 * or takes away goes to the running generation's same server or listener
 * too (srv_same, as gen_carry matches); NULL when there is none.
 */
/* The same server in two generations: same name, same address. */
static int srv_same(const struct up_server *a, const struct up_server *b)
{
    return strcmp(a->cfg->name, b->cfg->name) == 0 &&
           strcmp(a->cfg->addr_text, b->cfg->addr_text) == 0;
}

static struct up_server *srv_running(const struct conn *c, const struct up_server *s)
{
    const struct gen *g = c->S->gen;
    size_t i, j;

    if (c->gen == g)
        return NULL;
    for (i = 0; i < g->nups; i++)
        if (strcmp(g->ups[i].cfg->name, s->be->name) == 0)
            for (j = 0; j < g->ups[i].n; j++) {
                if (srv_same(&g->ups[i].srv[j], s))
                    return &g->ups[i].srv[j];
            }
    return NULL;
}

static struct lst *lst_running(const struct conn *c)
{
    const struct gen *g = c->S->gen;
    size_t i;

    if (c->gen == g)
        return NULL;
    for (i = 0; i < g->nls; i++)
        if (strcmp(g->ls[i].cfg->name, c->ls->cfg->name) == 0)
            return &g->ls[i];
    return NULL;
}

/* Take a server for this connection (tcp) or request (http). */
static void conn_use_server(struct conn *c, struct up_server *s)
{
    struct up_server *o = srv_running(c, s);

    c->server = s;
    c->tx.server = s;
    /* A server connection just taken has nothing for us before poll() says
     * so: a new one has not been asked anything, a pooled one was idle. */
    c->srv.rd.drained = 1;
    c->srv_in0 = c->bytes_in - (c->http ? c->tx.head_in : 0);   /* http: its head goes there */
    c->srv_out0 = c->bytes_out;
    s->active++;
    s->total++;
    if (o) {
        o->active++;
        o->total++;
    }
}

/* Add the bytes carried since the last call to the server's counters, so
 * that /stats shows a long tunnel's traffic while it flows (as haproxy's
 * do), not in one jump at its end. */
static void conn_server_bytes(struct conn *c)
{
    struct up_server *s = c->server, *o;
    uint64_t in = c->bytes_in - c->srv_in0, out = c->bytes_out - c->srv_out0;

    if (!s || (!in && !out))
        return;
    s->bytes_in += in;
    s->bytes_out += out;
    if ((o = srv_running(c, s)) != NULL) {
        o->bytes_in += in;
        o->bytes_out += out;
    }
    c->srv_in0 = c->bytes_in;
    c->srv_out0 = c->bytes_out;
}

/* Give it back, with the bytes it carried. */
static void conn_release_server(struct conn *c)
{
    struct up_server *s = c->server, *o;

    if (!s)
        return;
    conn_server_bytes(c);
    s->active--;
    if ((o = srv_running(c, s)) != NULL && o->active)  /* 0: it came back in a later reload */
        o->active--;
    c->server = NULL;
}

static void http_log_end(struct conn *c, const char *end);

static void conn_close(struct conn *c, const char *why)
{
    struct mtlslb *S = c->S;

    if (c->dead)
        return;
    c->dead = 1;
    if (c->established && !c->http)
        conn_log(c, why);
    else if (c->http && c->tx.method[0] && !c->tx.logged)   /* cut off, or upgraded */
        http_log_end(c, c->st == CONN_RELAY && strcmp(why, "done") == 0 ? NULL : why);
    else if (c->http)
        log_msg(MTLSLB_LOG_DEBUG, "conn %s listener=%s closed: %s", c->peer, c->ls->cfg->name, why);
    side_close(S, &c->cli);
    side_close(S, &c->srv);
    timer_del(S->loop, &c->tm);
    conn_release_server(c);
    c->ls->active--;
    {
        struct lst *l = lst_running(c);
        if (l && l->active)
            l->active--;
    }
    S->active--;
    if (c->prev)
        c->prev->next = c->next;
    else
        S->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    c->next = S->dead;
    S->dead = c;
    if (S->paused_full)
        conn_accepting(S);
}

static void gen_unref(struct mtlslb *S, struct gen *g);

static void conn_free(struct conn *c)
{
    gen_unref(c->S, c->gen);
    buf_give(&c->cli.buf);
    buf_give(&c->srv.buf);
    buf_give(&c->cli.rd.ra);
    buf_give(&c->cli.rd.wb);
    free(c->cli.out.p);
    free(c->srv.out.p);
    free(c->req_head.p);
    free(c->xhdrs.p);
    free(c->tr.der);
    free(c->route_ok);
    if (c->sni != conn_noname)
        free(c->sni);
    if (c->cn != conn_noname)
        free(c->cn);
    free(c);
}

/* *dst = src with control bytes as '?', cut at 255 bytes: the SNI name or
 * CN of a connection, allocated to fit (most are far shorter than the
 * 255-byte limit a fixed array would hold for every connection).  -1 if
 * memory ran out (*dst unchanged). */
static int conn_name(char **dst, const char *src)
{
    size_t n = 0;
    char *p;

    while (src[n] && n < 255)
        n++;
    if (!(p = malloc(n + 1)))
        return -1;
    str_clean(p, n + 1, src);
    if (*dst != conn_noname)
        free(*dst);
    *dst = p;
    return 0;
}

/*
 * Read and drop what a peer sent, at most `reads` reads: 1 once it has
 * ended (EOF, or an error), 0 when nothing more waits or the reads ran out.
 * Closing a socket with unread bytes sends a RST, which can overtake what
 * was written last (an alert, an answer) and leave the peer with a reset.
 */
static int fd_discard(int fd, int reads)
{
    uint8_t junk[16384];
    ssize_t n = 1;

    while (reads-- > 0 && (n = recv(fd, junk, sizeof junk, MSG_DONTWAIT)) > 0)
        ;
    return n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR);
}

/* Before closing a refused client, read what it already sent (fd_discard):
 * the TLS alert wolfSSL just wrote then reaches it. */
static void conn_linger(struct conn *c)
{
    if (c->cli.pl.fd < 0)
        return;
    shutdown(c->cli.pl.fd, SHUT_WR);
    (void)fd_discard(c->cli.pl.fd, 4);
}

/*
 * A TLS 1.2 client that sent no certificate where one is required gets no
 * alert from wolfSSL 5.5 (TLS 1.3 gets certificate_required): only the
 * close.  RFC 5246 7.4.6 wants a fatal handshake_failure; the server has
 * not sent its ChangeCipherSpec yet, so the alert goes in clear, as this
 * 7-byte record.  Not when wolfSSL did send one.
 */
static void conn_alert_no_cert(struct conn *c)
{
    static const uint8_t alert[7] = { 21, 3, 3, 0, 2, 2, 40 };   /* fatal handshake_failure */
    const char *v = wolfSSL_get_version(c->cli.ssl);

    if (!c->cli.rd.alerted && v && strcmp(v, "TLSv1.2") == 0 && c->cli.pl.fd >= 0 &&
        send(c->cli.pl.fd, alert, sizeof alert, MSG_NOSIGNAL) == (ssize_t)sizeof alert)
        c->cli.rd.alerted = 1;
}

/* A refused handshake: counted, logged with its reason and (NULL: none) a
 * detail, which the line quotes, and closed. */
static void conn_hs_fail(struct conn *c, enum tls_reason r, const char *detail)
{
    const char *sni = c->cli.ssl ? wolfSSL_get_servername(c->cli.ssl, WOLFSSL_SNI_HOST_NAME) : NULL;
    char word[520];

    if (r == R_NO_CERT && c->cli.ssl)
        conn_alert_no_cert(c);
    if (sni && !c->sni[0])
        (void)conn_name(&c->sni, sni);  /* for the log only: "-" if memory ran out */
    c->ls->hs_fail[r]++;
    {
        struct lst *l = lst_running(c);
        if (l)
            l->hs_fail[r]++;
    }
    conn_linger(c);
    log_msg(MTLSLB_LOG_INFO, "handshake failed %s listener=%s sni=%s reason=\"%s\"%s%s%s",
            c->peer, c->ls->cfg->name, log_word(word, sizeof word, c->sni), tls_reason_names[r],
            detail ? " detail=\"" : "", detail ? detail : "", detail ? "\"" : "");
    conn_close(c, tls_reason_names[r]);
}

/* ---- reading and writing one side ---- */

enum io_status { IO_AGAIN, IO_EOF, IO_ERR };

static const char *tls_err_text(int err, char *buf, size_t len)
{
    wolfSSL_ERR_error_string_n((unsigned long)err, buf, len);
    return buf;
}

/* >0 bytes read; 0 with *st set otherwise. */
/*
 * Read from a side.  A socket found empty (EAGAIN, or a short read of plain
 * TCP: a stream socket hands over all it has) is not read again until poll()
 * reports it, so a busy connection makes no read that can only fail; bytes
 * wolfSSL has already decrypted (wolfSSL_pending) are always read.
 */
static size_t side_read(struct side *s, uint8_t *p, size_t n, enum io_status *st, int *err)
{
    s->rd_want_wr = 0;
    if (s->rd.drained && s->rd.ra.len == 0 && !(s->ssl && wolfSSL_pending(s->ssl) > 0)) {
        *st = IO_AGAIN;
        return 0;
    }
    if (s->ssl) {
        int r = wolfSSL_read(s->ssl, p, (int)n);
        if (r > 0)
            return (size_t)r;
        *err = wolfSSL_get_error(s->ssl, r);
        switch (*err) {
        case WOLFSSL_ERROR_WANT_READ:
            s->rd.drained = 1;
            *st = IO_AGAIN;
            break;
        case WOLFSSL_ERROR_WANT_WRITE:
            s->rd_want_wr = 1;
            *st = IO_AGAIN;
            break;
        case WOLFSSL_ERROR_ZERO_RETURN:
        case SOCKET_PEER_CLOSED_E:
            *st = IO_EOF;       /* close_notify, or a TCP FIN without one */
            break;
        default:
            *st = IO_ERR;
        }
        return 0;
    }
    for (;;) {
        ssize_t r = read(s->pl.fd, p, n);
        if (r > 0) {
            s->rd.drained = (size_t)r < n;
            return (size_t)r;
        }
        if (r == 0) {
            *st = IO_EOF;
        } else if (errno == EINTR) {
            continue;
        } else if (errno == EAGAIN || errno == EWOULDBLOCK) {
            s->rd.drained = 1;
            *st = IO_AGAIN;
        } else {
            *err = errno;
            *st = IO_ERR;
        }
        return 0;
    }
}

static size_t side_write(struct side *s, const uint8_t *p, size_t n, enum io_status *st, int *err)
{
    s->wr_want_rd = 0;
    if (s->ssl) {
        int r;
        /* A write that wanted I/O is retried with the same length. */
        if (s->wpending)
            n = s->wpending;
        up_write_gone = 0;
        r = wolfSSL_write(s->ssl, p, (int)n);
        if (up_write_gone) {            /* a TLS server gone: up_tls_send */
            s->wpending = 0;
            *err = up_write_gone;
            *st = IO_ERR;
            return 0;
        }
        if (r > 0) {
            s->wpending = 0;
            return (size_t)r;
        }
        *err = wolfSSL_get_error(s->ssl, r);
        if (*err == WOLFSSL_ERROR_WANT_WRITE || *err == WOLFSSL_ERROR_WANT_READ) {
            s->wpending = n;
            s->wr_want_rd = *err == WOLFSSL_ERROR_WANT_READ;
            *st = IO_AGAIN;
        } else {
            *st = IO_ERR;
        }
        return 0;
    }
    for (;;) {
        ssize_t r = send(s->pl.fd, p, n, MSG_NOSIGNAL);
        if (r >= 0)
            return (size_t)r;
        if (errno == EINTR)
            continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK) {
            *st = IO_AGAIN;
        } else {
            *err = errno;
            *st = IO_ERR;
        }
        return 0;
    }
}

/*
 * Tell a side it will get nothing more: close_notify for TLS, then FIN.
 * Always shutdown(), even just before close(): a close() with unread bytes
 * (a client still sending) sends RST, and drops what is queued unsent.
 */
static void side_shut(struct side *s)
{
    if (s->ssl) {
        int r;
        s->rd.more = 1;             /* tls_send: the FIN follows (client side) */
        r = wolfSSL_shutdown(s->ssl);
        s->rd.more = 0;
        if (r != WOLFSSL_SUCCESS && r != WOLFSSL_SHUTDOWN_NOT_DONE &&
            wolfSSL_get_error(s->ssl, r) == WOLFSSL_ERROR_WANT_WRITE)
            return;             /* retried when the socket is writable */
        if (tls_flush(&s->rd) > 0)
            return;
    }
    shutdown(s->pl.fd, SHUT_WR);
    s->shut_done = 1;
}

static void http_server_gone(struct conn *c, const char *why);

/*
 * A side's read or write failed: 0 if the connection goes on, -1 if it was
 * closed (or answered with an error, http).
 */
static int side_fail(struct conn *c, struct side *s, enum io_status st, int err, int writing)
{
    char why[200], tmp[120];
    /* wolfSSL's codes are negative, errno (up_tls_send too) not */
    const char *what = s->ssl && err < 0 ? tls_err_text(err, tmp, sizeof tmp) : strerror(err);

    (void)st;
    if (c->http && s == &c->srv && c->st == CONN_HTTP) {
        snprintf(why, sizeof why, "%s error: %s", writing ? "write" : "read", what);
        /* A server may answer before it has read the whole request (a 413
         * for a body it will not take) and close: the write fails, but
         * the answer waits to be read (or is on its way to the client).
         * Write no more and read on; an end without a response is the
         * retry or 502 it always was.  A read that fails once the response
         * is under way ends it as a close would: what came is passed on. */
        if (writing || c->tx.resp_started) {
            log_msg(MTLSLB_LOG_DEBUG, "%s: %s/%s: %s: %s", c->peer, c->server->be->name,
                    c->server->cfg->name, why, writing ? "reading its answer" : "its end");
            if (writing) {
                s->shut = s->shut_done = 1;
                s->rd.drained = 0;
            } else {
                s->eof = 1;
            }
            return 0;
        }
        http_server_gone(c, why);
        return -1;
    }
    snprintf(why, sizeof why, "%s %s error: %s", side_name(c, s), writing ? "write" : "read", what);
    conn_close(c, why);
    return -1;
}

/*
 * Move bytes from one side to the other: read while there is room, write
 * what is buffered, pass an end of stream on once the buffer is empty.
 * Returns 1 if anything moved, 0 if nothing could, -1 if the connection
 * was closed.
 */
/*
 * Is there room to read from a side?  A buffer whose end is reached is
 * compacted first, unless a TLS write of its head is pending: wolfSSL wants
 * that retried with the same bytes.  side_interest asks the same question.
 */
static int relay_room(const struct side *from, const struct side *to)
{
    const struct buf *b = &from->buf;

    return b->len == 0 || b->off + b->len < MTLSLB_BUF_SIZE || (b->off && !to->wpending);
}

static long relay_dechunk(struct side *s);

/* How many bytes at the head of a side's buffer belong to the message being
 * passed on (all of them in a tunnel); -1 if its chunked framing is bad. */
static long relay_allow(struct side *s)
{
    struct body *bd = &s->body;

    switch (bd->kind) {
    case BK_TUNNEL:
    case BK_CLOSE:
        return (long)s->buf.len;
    case BK_LENGTH:
        return (long)(s->buf.len < bd->left ? s->buf.len : bd->left);
    case BK_CHUNKED:
        if (bd->strip)
            return relay_dechunk(s);
        if (!bd->end && bd->ready < s->buf.len) {
            int done;
            long r = mtlslb_http_chunk_scan(&bd->ch, (const char *)s->buf.data + s->buf.off +
                                            bd->ready, s->buf.len - bd->ready, &done);
            if (r < 0)
                return -1;
            bd->ready += (size_t)r;
            bd->end = done;
        }
        return (long)bd->ready;
    default:
        return 0;
    }
}

/* Bytes that relay_allow would pass now, without scanning further. */
static size_t relay_pending(const struct side *s)
{
    switch (s->body.kind) {
    case BK_TUNNEL:
    case BK_CLOSE:
        return s->buf.len;
    case BK_LENGTH:
        return s->buf.len < s->body.left ? s->buf.len : (size_t)s->body.left;
    case BK_CHUNKED:
        return s->body.ready;
    default:
        return 0;
    }
}

static void relay_sent(struct side *s, size_t n)
{
    if (s->body.kind == BK_LENGTH)
        s->body.left -= n;
    else if (s->body.kind == BK_CHUNKED)
        s->body.ready -= n;
}

/* Has all of the message read from this side been passed on? */
static int relay_body_done(const struct side *s)
{
    switch (s->body.kind) {
    case BK_NONE:
        return 1;
    case BK_LENGTH:
        return s->body.left == 0;
    case BK_CHUNKED:
        return s->body.end && s->body.ready == 0;
    case BK_CLOSE:
        return s->eof && s->buf.len == 0;
    default:
        return 0;
    }
}

static void http_bad_framing(struct conn *c, struct side *s);

/*
 * A generated head (to->out) takes the body bytes already read behind it,
 * up to one record's worth: head and body leave in one write, one TLS
 * record, instead of two.  Not while a TLS write waits to be retried with
 * the same bytes.
 */
static void relay_coalesce(struct side *from, struct side *to)
{
    size_t have = to->out.len - to->out.off, n;
    long allow;

    if (to->wpending || have >= MTLSLB_BUF_SIZE || !from->buf.len)
        return;
    allow = relay_allow(from);
    if (allow <= 0)
        return;                     /* nothing of this message, or bad framing: later */
    n = (size_t)allow < MTLSLB_BUF_SIZE - have ? (size_t)allow : MTLSLB_BUF_SIZE - have;
    if (obuf_add(&to->out, (const char *)from->buf.data + from->buf.off, n) < 0)
        return;
    from->buf.off += n;
    from->buf.len -= n;
    relay_sent(from, n);
    if (from == &from->conn->cli)
        from->conn->bytes_in += n;  /* the client's bytes, counted as taken */
}

/*
 * Are these the last bytes for the client before the connection closes
 * (http_advance closes it as soon as they are out)?  n bytes of the body
 * in from->buf go with them (0: the generated head and what it took).
 * Then tls_send may hold them for the close_notify and FIN.
 */
static int http_last_write(const struct conn *c, const struct side *from,
                           const struct side *to, size_t n)
{
    const struct body *b = &from->body;

    if (!c->http || to != &c->cli || c->st != CONN_HTTP)
        return 0;
    if (c->closing)
        return 1;                   /* a generated response, then close */
    if (c->tx.rs != HS_BODY ||
        !(c->tx.close_client || (c->cli.eof && c->cli.buf.len == 0) || c->S->stopping))
        return 0;                   /* as http_finish decides */
    switch (b->kind) {
    case BK_NONE:
        return 1;
    case BK_LENGTH:
        return b->left == n;
    case BK_CHUNKED:
        return b->end && b->ready == n;
    default:
        return 0;                   /* BK_CLOSE: the end is the server's FIN, not yet seen */
    }
}

static int relay_step(struct conn *c, struct side *from, struct side *to)
{
    struct buf *b = &from->buf;
    enum io_status st = IO_AGAIN;
    int err = 0, moved = 0;
    size_t n;

    long allow;

    if (from->pl.slot >= 0 && !from->eof && relay_room(from, to)) {
        if (buf_take(b) < 0) {
            conn_close(c, "out of memory");
            return -1;
        }
        if (b->len == 0)
            b->off = 0;
        else if (b->off + b->len == MTLSLB_BUF_SIZE) {
            memmove(b->data, b->data + b->off, b->len);
            b->off = 0;
        }
        n = side_read(from, b->data + b->off + b->len, MTLSLB_BUF_SIZE - b->off - b->len,
                      &st, &err);
        if (n > 0) {
            b->len += n;
            moved = 1;
        } else if (st == IO_EOF) {
            from->eof = 1;
            moved = 1;
        } else if (st == IO_ERR) {
            if (side_fail(c, from, st, err, 0) < 0)
                return -1;
            moved = 1;
        }
    }
    if (to->pl.slot < 0)
        return moved;                   /* http: no server connection (yet) */
    if (to->out.len > to->out.off && !to->shut) {
        relay_coalesce(from, to);
        to->rd.more = http_last_write(c, from, to, 0);
        n = side_write(to, (const uint8_t *)to->out.p + to->out.off, to->out.len - to->out.off,
                       &st, &err);
        to->rd.more = 0;
        if (n > 0) {
            to->out.off += n;
            if (to->out.off == to->out.len)
                to->out.off = to->out.len = 0;
            if (to == &c->cli)
                c->bytes_out += n;      /* what the client gets, our head included */
            moved = 1;              /* to the server: counted as taken from the client */
        } else if (st == IO_ERR) {
            if (side_fail(c, to, st, err, 1) < 0)
                return -1;
            return 1;
        }
        if (to->out.len)
            return moved;               /* the head goes before any body byte */
    }
    allow = relay_allow(from);
    if (allow < 0) {
        http_bad_framing(c, from);
        return -1;
    }
    if (allow > 0 && !to->shut) {
        to->rd.more = http_last_write(c, from, to, (size_t)allow);
        n = side_write(to, b->data + b->off, (size_t)allow, &st, &err);
        to->rd.more = 0;
        if (n > 0) {
            b->off += n;
            b->len -= n;
            relay_sent(from, n);
            if (from == &c->cli)
                c->bytes_in += n;
            else
                c->bytes_out += n;
            moved = 1;
        } else if (st == IO_ERR) {
            if (side_fail(c, to, st, err, 1) < 0)
                return -1;
            moved = 1;
        }
    }
    if (from->body.kind == BK_TUNNEL && from->eof && b->len == 0 && !to->shut) {
        to->shut = 1;
        moved = 1;
    }
    if (to->shut && !to->shut_done) {
        side_shut(to);
        if (to->shut_done)
            moved = 1;
    }
    return moved;
}

/* One step of relaying; a buffer left empty goes back to the spares. */
static int relay_move(struct conn *c, struct side *from, struct side *to)
{
    int r = relay_step(c, from, to);

    if (r >= 0 && from->buf.len == 0 && from->buf.data)
        buf_give(&from->buf);
    return r;
}

static short side_interest(const struct side *s, const struct side *peer)
{
    short ev = 0;

    if ((!s->eof && relay_room(s, peer) && !s->rd_want_wr) || s->wr_want_rd)
        ev |= POLLIN;
    if (((s->out.len || relay_pending(peer)) && !s->shut && !s->wr_want_rd) || s->rd_want_wr ||
        (s->shut && !s->shut_done) || s->rd.wb_more)
        ev |= POLLOUT;
    return ev;
}

static void relay_pump(struct conn *c)
{
    struct mtlslb *S = c->S;
    int up, down, any = 0;

    do {
        up = relay_move(c, &c->cli, &c->srv);
        if (up < 0)
            return;
        down = relay_move(c, &c->srv, &c->cli);
        if (down < 0)
            return;
        any |= up | down;
    } while (up || down);
    if (c->cli.eof && c->srv.eof && c->cli.shut_done && c->srv.shut_done) {
        conn_close(c, "done");
        return;
    }
    if (any) {
        timer_set(S->loop, &c->tm, S->now + S->gen->cfg->global.tmo_idle);
        conn_server_bytes(c);
    }
    loop_events(S->loop, &c->cli.pl, side_interest(&c->cli, &c->srv));
    loop_events(S->loop, &c->srv.pl, side_interest(&c->srv, &c->cli));
}

/* ---- PROXY protocol (haproxy's proxy-protocol.txt) ---- */

static void proxy_put16(uint8_t *p, unsigned v)
{
    p[0] = (uint8_t)(v >> 8);
    p[1] = (uint8_t)v;
}

/* The longest v2 header: signature, version, family, length (16), IPv6
 * addresses and ports (36), then the TLVs at their largest: authority
 * (3 + 255), SSL (3 + 5) with version (3 + 64), CN (3 + 255), cipher
 * (3 + 64).  The header file's MTLSLB_PROXY_MAX must hold it (found by the
 * proxy fuzz target: it did not, and the TLVs ran past the buffer). */
#define PROXY_V2_MAX (16 + 36 + 3 + 255 + 3 + 5 + 3 + 64 + 3 + 255 + 3 + 64)
typedef char proxy_max_holds_v2[MTLSLB_PROXY_MAX >= PROXY_V2_MAX ? 1 : -1];

static size_t proxy_tlv(uint8_t *p, uint8_t type, const void *v, size_t len)
{
    p[0] = type;
    proxy_put16(p + 1, (unsigned)len);
    memcpy(p + 3, v, len);
    return 3 + len;
}

int mtlslb_proxy_header(int version, const struct sockaddr *src, const struct sockaddr *dst,
                        const struct mtlslb_tls_info *tls, uint8_t *out, size_t cap)
{
    static const uint8_t sig[12] = { 0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A,
                                     0x51, 0x55, 0x49, 0x54, 0x0A };
    int fam = src->sa_family == dst->sa_family ? src->sa_family : AF_UNSPEC;
    uint8_t tmp[MTLSLB_PROXY_MAX], *p = tmp, *ssl_len;
    size_t n;

    if (fam != AF_INET && fam != AF_INET6)
        fam = AF_UNSPEC;
    if (version == 1) {
        char s[INET6_ADDRSTRLEN], d[INET6_ADDRSTRLEN];
        int w;
        if (fam == AF_INET) {
            const struct sockaddr_in *a = (const void *)src, *b = (const void *)dst;
            inet_ntop(AF_INET, &a->sin_addr, s, sizeof s);
            inet_ntop(AF_INET, &b->sin_addr, d, sizeof d);
            w = snprintf((char *)tmp, sizeof tmp, "PROXY TCP4 %s %s %u %u\r\n", s, d,
                         ntohs(a->sin_port), ntohs(b->sin_port));
        } else if (fam == AF_INET6) {
            const struct sockaddr_in6 *a = (const void *)src, *b = (const void *)dst;
            inet_ntop(AF_INET6, &a->sin6_addr, s, sizeof s);
            inet_ntop(AF_INET6, &b->sin6_addr, d, sizeof d);
            w = snprintf((char *)tmp, sizeof tmp, "PROXY TCP6 %s %s %u %u\r\n", s, d,
                         ntohs(a->sin6_port), ntohs(b->sin6_port));
        } else {
            w = snprintf((char *)tmp, sizeof tmp, "PROXY UNKNOWN\r\n");
        }
        if (w < 0 || (size_t)w > cap)
            return -1;
        memcpy(out, tmp, (size_t)w);
        return w;
    }
    if (version != 2)
        return -1;
    memcpy(p, sig, sizeof sig);
    p += sizeof sig;
    *p++ = fam == AF_UNSPEC ? 0x20 : 0x21;          /* v2, LOCAL or PROXY */
    *p++ = fam == AF_INET ? 0x11 : fam == AF_INET6 ? 0x21 : 0x00;
    p += 2;                                         /* length, below */
    if (fam == AF_INET) {
        const struct sockaddr_in *a = (const void *)src, *b = (const void *)dst;
        memcpy(p, &a->sin_addr, 4);
        memcpy(p + 4, &b->sin_addr, 4);
        memcpy(p + 8, &a->sin_port, 2);
        memcpy(p + 10, &b->sin_port, 2);
        p += 12;
    } else if (fam == AF_INET6) {
        const struct sockaddr_in6 *a = (const void *)src, *b = (const void *)dst;
        memcpy(p, &a->sin6_addr, 16);
        memcpy(p + 16, &b->sin6_addr, 16);
        memcpy(p + 32, &a->sin6_port, 2);
        memcpy(p + 34, &b->sin6_port, 2);
        p += 36;
    }
    if (tls && tls->sni) {
        n = strlen(tls->sni);
        if (n > 255)
            return -1;
        p += proxy_tlv(p, 0x02, tls->sni, n);       /* PP2_TYPE_AUTHORITY */
    }
    if (tls && tls->version) {
        size_t vl = strlen(tls->version), cl = tls->cn ? strlen(tls->cn) : 0,
               pl = tls->cipher ? strlen(tls->cipher) : 0;
        if (vl > 64 || cl > 255 || pl > 64)
            return -1;
        *p++ = 0x20;                                /* PP2_TYPE_SSL */
        ssl_len = p;
        p += 2;
        /* CLIENT_SSL, CERT_SESS; CERT_CONN only when this connection's
         * handshake carried the certificate (not on a resumption) */
        *p++ = (uint8_t)(0x01 | (tls->has_cert ? (tls->resumed ? 0x04 : 0x06) : 0));
        *p++ = (uint8_t)(tls->verify >> 24);
        *p++ = (uint8_t)(tls->verify >> 16);
        *p++ = (uint8_t)(tls->verify >> 8);
        *p++ = (uint8_t)tls->verify;
        p += proxy_tlv(p, 0x21, tls->version, vl);  /* PP2_SUBTYPE_SSL_VERSION */
        if (cl)
            p += proxy_tlv(p, 0x22, tls->cn, cl);   /* PP2_SUBTYPE_SSL_CN */
        if (pl)
            p += proxy_tlv(p, 0x23, tls->cipher, pl); /* PP2_SUBTYPE_SSL_CIPHER */
        proxy_put16(ssl_len, (unsigned)(p - ssl_len - 2));
    }
    n = (size_t)(p - tmp);
    proxy_put16(tmp + 14, (unsigned)(n - 16));
    if (n > cap)
        return -1;
    memcpy(out, tmp, n);
    return (int)n;
}

/* ---- HTTP/1.x heads and chunked framing (RFC 9110, 9112) ---- */

/* The length of a host[:port]'s name ("[v6]" with its brackets). */
static size_t http_host_name(const char *h, size_t n)
{
    const char *e;

    if (n && h[0] == '[')
        return (e = memchr(h, ']', n)) != NULL ? (size_t)(e - h) + 1 : n;
    return (e = memchr(h, ':', n)) != NULL ? (size_t)(e - h) : n;
}

/* tchar (RFC 9110 5.6.2) */
static int http_tchar(unsigned char ch)
{
    return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
           (ch && strchr("!#$%&'*+-.^_`|~", ch));
}

static int http_is(const char *s, size_t n, const char *word)
{
    return strlen(word) == n && strncasecmp(s, word, n) == 0;
}

/* One line from pos: 1 with *eol at its CR, 0 if incomplete, -1 on a bare
 * LF or a CR not followed by LF. */
static int http_line(const char *b, size_t len, size_t pos, size_t *eol)
{
    size_t i;

    for (i = pos; i < len; i++) {
        if (b[i] == '\n')
            return -1;
        if (b[i] == '\r') {
            if (i + 1 >= len)
                return 0;
            if (b[i + 1] != '\n')
                return -1;
            *eol = i;
            return 1;
        }
    }
    return 0;
}

/* Next element of a comma list; NULL at the end, an empty element is "". */
static const char *http_list(const char **s, const char *end, size_t *n)
{
    const char *p = *s, *e;

    if (p > end)
        return NULL;
    while (p < end && (*p == ' ' || *p == '\t'))
        p++;
    for (e = p; e < end && *e != ','; e++)
        ;
    *s = e + 1;
    *n = (size_t)(e - p);
    while (*n && (p[*n - 1] == ' ' || p[*n - 1] == '\t'))
        (*n)--;
    return p;
}

static int http_content_length(const char *v, size_t n, uint64_t *out)
{
    uint64_t x = 0;
    size_t i;

    if (n == 0 || n > 18)
        return -1;                  /* also keeps x below 10^18 */
    for (i = 0; i < n; i++) {
        if (v[i] < '0' || v[i] > '9')
            return -1;              /* sign, inner blank, list: all refused */
        x = x * 10 + (uint64_t)(v[i] - '0');
    }
    *out = x;
    return 0;
}

/*
 * A Host value (or an absolute-form authority) as an edge proxy takes it:
 * uri-host [":" port] (RFC 9110 7.2), the host a DNS name or IPv4 address
 * of unreserved characters with no empty label (one trailing dot allowed),
 * or an IPv6 literal in brackets; the port digits.  No userinfo, path,
 * blank, comma or %-escape: each is something a server may read as another
 * host than the one routes and the 421 check saw (SPEC 4).  Empty is valid.
 */
static int http_host_ok(const char *h, size_t n)
{
    size_t i = 0;

    if (n && h[0] == '[') {
        for (i = 1; i < n && (isxdigit((unsigned char)h[i]) || h[i] == ':' || h[i] == '.'); i++)
            ;
        if (i == 1 || i == n || h[i] != ']')
            return 0;
        i++;
    } else {
        for (; i < n && h[i] != ':'; i++) {
            unsigned char ch = (unsigned char)h[i];
            if (ch == '.' ? i == 0 || h[i - 1] == '.' :
                !(isalnum(ch) || ch == '-' || ch == '_' || ch == '~'))
                return 0;
        }
        if (i == 0 && n)
            return 0;                   /* a port without a host */
    }
    if (i < n && h[i++] != ':')
        return 0;
    for (; i < n; i++)
        if (!isdigit((unsigned char)h[i]))
            return 0;
    return 1;
}

/*
 * The header lines from pos to the blank line.  Fills m->headers and the
 * framing fields.  Returns the head length, 0 if incomplete, or -status.
 */
static int http_headers(const char *b, size_t len, size_t pos, int request,
                        struct mtlslb_http_msg *m)
{
    int cl_seen = 0, te_seen = 0, chunked = 0, te_other = 0, hosts = 0, rc;
    int conn_ka = 0, conn_cl = 0, conn_up = 0, upgrade_hdr = 0;
    int absolute = request && m->host;     /* absolute-form: the target names the host */
    uint64_t cl = 0;
    size_t eol;

    for (;;) {
        const char *name, *v, *ve;
        size_t i, nl;
        rc = http_line(b, len, pos, &eol);
        if (rc < 0)
            return -400;
        if (rc == 0)
            return len >= MTLSLB_HTTP_HEAD_MAX ? -431 : 0;
        if (eol + 2 > MTLSLB_HTTP_HEAD_MAX)
            return -431;
        if (eol == pos)
            break;                                  /* the blank line */
        if (b[pos] == ' ' || b[pos] == '\t')
            return -400;                            /* obs-fold */
        if (m->nheaders == MTLSLB_HTTP_HEADERS)
            return -431;
        name = b + pos;
        for (i = pos; i < eol && http_tchar((unsigned char)b[i]); i++)
            ;
        if (i == pos || i == eol || b[i] != ':')
            return -400;                            /* no name, blank before ':' */
        nl = i - pos;
        for (v = b + i + 1; v < b + eol && (*v == ' ' || *v == '\t'); v++)
            ;
        for (ve = v; ve < b + eol; ve++)
            if (((unsigned char)*ve < 0x20 && *ve != '\t') || *ve == 0x7f)
                return -400;                        /* NUL or other control byte */
        while (ve > v && (ve[-1] == ' ' || ve[-1] == '\t'))
            ve--;
        m->headers[m->nheaders].name = name;
        m->headers[m->nheaders].name_len = nl;
        m->headers[m->nheaders].value = v;
        m->headers[m->nheaders].value_len = (size_t)(ve - v);
        m->nheaders++;
        if (http_is(name, nl, "content-length")) {
            uint64_t x;
            if (http_content_length(v, (size_t)(ve - v), &x) < 0 || (cl_seen && x != cl))
                return request ? -400 : -502;
            cl = x;
            cl_seen = 1;
        } else if (http_is(name, nl, "transfer-encoding")) {
            const char *s = v, *e;
            size_t n;
            te_seen = 1;
            while ((e = http_list(&s, ve, &n)) != NULL) {
                if (n == 0)
                    return request ? -400 : -502;
                if (chunked)
                    return request ? -400 : -502;   /* chunked twice, or not last */
                if (http_is(e, n, "chunked"))
                    chunked = 1;
                else
                    te_other = 1;
            }
        } else if (http_is(name, nl, "host")) {
            size_t hn;
            if (request && !http_host_ok(v, (size_t)(ve - v)))
                return -400;
            hosts++;
            if (!absolute) {
                m->host = v;
                m->host_len = (size_t)(ve - v);
            } else if ((hn = http_host_name(v, (size_t)(ve - v))) != http_host_name(m->host, m->host_len) ||
                       strncasecmp(v, m->host, hn) != 0) {
                /* The target's host routes the request, and a server
                 * reading Host would take it for another: 400, as
                 * haproxy answers (RFC 9112 3.2.2). */
                return -400;
            }
        } else if (http_is(name, nl, "connection")) {
            const char *s = v, *e;
            size_t n;
            m->has_connection = 1;
            while ((e = http_list(&s, ve, &n)) != NULL) {
                conn_cl |= http_is(e, n, "close");
                conn_ka |= http_is(e, n, "keep-alive");
                conn_up |= http_is(e, n, "upgrade");
            }
        } else if (http_is(name, nl, "upgrade")) {
            upgrade_hdr = 1;
        } else if (http_is(name, nl, "expect")) {
            m->expect_continue = http_is(v, (size_t)(ve - v), "100-continue");
        }
        pos = eol + 2;
    }
    m->head_len = eol + 2;
    m->conn_close = m->version == 11 ? conn_cl : !conn_ka;
    m->conn_upgrade = conn_up && upgrade_hdr;
    if (request) {
        if (te_seen && (cl_seen || m->version == 10))
            return -400;                            /* CL.TE / TE.CL smuggling */
        if (te_other)
            return -501;
        if (te_seen && !chunked)
            return -400;
        if (hosts > 1 || (m->version == 11 && hosts == 0 && !m->host))
            return -400;
        m->body = chunked ? MTLSLB_BODY_CHUNKED : cl_seen && cl ? MTLSLB_BODY_LENGTH
                                                               : MTLSLB_BODY_NONE;
    } else if (m->body != MTLSLB_BODY_NONE) {
        if (te_seen && cl_seen)
            return -502;
        m->body = chunked ? MTLSLB_BODY_CHUNKED : te_seen ? MTLSLB_BODY_CLOSE :
                  cl_seen ? MTLSLB_BODY_LENGTH : MTLSLB_BODY_CLOSE;
    }
    m->content_length = cl;
    if (m->body == MTLSLB_BODY_LENGTH && cl == 0)
        m->body = MTLSLB_BODY_NONE;
    return (int)m->head_len;
}

static int http_version(const char *s, size_t n)
{
    if (n != 8 || memcmp(s, "HTTP/1.", 7) != 0)
        return 0;
    return s[7] == '1' ? 11 : s[7] == '0' ? 10 : 0;
}

int mtlslb_http_parse_request(const char *b, size_t len, struct mtlslb_http_msg *m)
{
    size_t eol, i, sp1, sp2;
    int rc;

    memset(m, 0, offsetof(struct mtlslb_http_msg, headers));
    rc = http_line(b, len, 0, &eol);
    if (rc < 0)
        return -400;
    if (rc == 0)                    /* incomplete: too long already?  (a last CR is not content) */
        return len - (len && b[len - 1] == '\r') > MTLSLB_HTTP_LINE_MAX ? -414 : 0;
    if (eol > MTLSLB_HTTP_LINE_MAX)
        return -414;
    for (i = 0; i < eol && http_tchar((unsigned char)b[i]); i++)
        ;
    if (i == 0 || i == eol || b[i] != ' ')
        return -400;
    sp1 = i;
    for (i = sp1 + 1; i < eol && (unsigned char)b[i] > 0x20 && (unsigned char)b[i] < 0x7f; i++)
        ;
    if (i == sp1 + 1 || i == eol || b[i] != ' ')
        return -400;
    sp2 = i;
    m->version = http_version(b + sp2 + 1, eol - sp2 - 1);
    if (!m->version)
        return -400;
    m->method = b;
    m->method_len = sp1;
    m->target = b + sp1 + 1;
    m->target_len = sp2 - sp1 - 1;
    m->path = m->target;
    m->path_len = m->target_len;
    if (m->target[0] != '/' && !(m->target_len == 1 && m->target[0] == '*')) {
        /* absolute-form: its authority is the host (RFC 9112 3.2.2) */
        const char *a = memchr(m->target, ':', m->target_len), *end = m->target + m->target_len;
        const char *p;
        if (!a || a + 3 > end || a[1] != '/' || a[2] != '/')
            return -400;
        a += 3;
        for (p = a; p < end && *p != '/' && *p != '?'; p++)
            ;
        if (p == a || !http_host_ok(a, (size_t)(p - a)))
            return -400;
        m->host = a;
        m->host_len = (size_t)(p - a);
        m->path = p < end ? p : "/";
        m->path_len = p < end ? (size_t)(end - p) : 1;
    }
    return http_headers(b, len, eol + 2, 1, m);
}

int mtlslb_http_parse_response(const char *b, size_t len, int request_was_head,
                               struct mtlslb_http_msg *m)
{
    size_t eol, i;
    int rc;

    memset(m, 0, offsetof(struct mtlslb_http_msg, headers));
    rc = http_line(b, len, 0, &eol);
    if (rc < 0)
        return -502;
    if (rc == 0)
        return len >= MTLSLB_HTTP_HEAD_MAX ? -502 : 0;
    if (eol < 12 || b[8] != ' ' || !(m->version = http_version(b, 8)))
        return -502;
    for (i = 9; i < 12; i++)
        if (b[i] < '0' || b[i] > '9')
            return -502;
    if (eol > 12 && b[12] != ' ')
        return -502;
    for (i = 12; i < eol; i++)
        if (((unsigned char)b[i] < 0x20 && b[i] != '\t') || b[i] == 0x7f)
            return -502;
    m->status = (b[9] - '0') * 100 + (b[10] - '0') * 10 + (b[11] - '0');
    if (m->status < 100)
        return -502;
    m->body = (request_was_head || m->status < 200 || m->status == 204 || m->status == 304)
                  ? MTLSLB_BODY_NONE : MTLSLB_BODY_CLOSE;
    rc = http_headers(b, len, eol + 2, 0, m);
    return rc == -400 || rc == -431 ? -502 : rc;
}

enum { CH_SIZE0, CH_SIZE, CH_EXT, CH_SIZE_LF, CH_DATA, CH_DATA_CR, CH_DATA_LF,
       CH_TRAILER0, CH_TRAILER, CH_TVALUE, CH_TRAILER_LF, CH_END_LF, CH_DONE };

static int http_hex(unsigned char ch)
{
    if (ch >= '0' && ch <= '9') return ch - '0';
    if (ch >= 'a' && ch <= 'f') return ch - 'a' + 10;
    if (ch >= 'A' && ch <= 'F') return ch - 'A' + 10;
    return -1;
}

static int http_dropped(const char *n, size_t l, int upgrade, int request);

long mtlslb_http_chunk_scan(struct mtlslb_http_chunk *c, const char *buf, size_t len,
                            int *done)
{
    size_t i = 0;

    *done = c->state == CH_DONE;
    while (i < len && c->state != CH_DONE) {
        unsigned char ch = (unsigned char)buf[i];
        int h;
        /* the trailer section: a head's size limit */
        if (c->state >= CH_TRAILER0 && ++c->tlen > MTLSLB_HTTP_HEAD_MAX)
            return -1;
        switch (c->state) {
        case CH_SIZE0:
        case CH_SIZE:
            h = http_hex(ch);
            if (h >= 0) {
                if ((c->left || h) && ++c->digits > 15)
                    return -1;              /* a size that would overflow */
                c->left = c->left * 16 + (unsigned)h;
                c->state = CH_SIZE;
            } else if (c->state == CH_SIZE && ch == ';') {
                c->state = CH_EXT;
            } else if (c->state == CH_SIZE && ch == '\r') {
                c->state = CH_SIZE_LF;
            } else {
                return -1;
            }
            break;
        case CH_EXT:
            if (ch == '\r')
                c->state = CH_SIZE_LF;
            else if ((ch < 0x20 && ch != '\t') || ch == 0x7f)
                return -1;
            break;
        case CH_SIZE_LF:
            if (ch != '\n')
                return -1;
            c->digits = 0;
            c->state = c->left ? CH_DATA : CH_TRAILER0;
            break;
        case CH_DATA: {
            size_t n = len - i < c->left ? len - i : (size_t)c->left;
            c->left -= n;
            i += n;
            if (c->left == 0)
                c->state = CH_DATA_CR;
            continue;
        }
        case CH_DATA_CR:
            if (ch != '\r')
                return -1;
            c->state = CH_DATA_LF;
            break;
        case CH_DATA_LF:
            if (ch != '\n')
                return -1;
            c->state = CH_SIZE0;
            break;
        case CH_TRAILER0:
            if (ch == '\r') {
                c->state = CH_END_LF;
            } else if (!http_tchar(ch)) {
                return -1;                  /* obs-fold, an empty name, ... */
            } else {
                c->state = CH_TRAILER;
                c->name[0] = (char)ch;
                c->nlen = 1;
            }
            break;
        case CH_TRAILER:
            /* A trailer field is a header line (RFC 9112 7.1.2), held to
             * the same rules: a name of tchars, the colon right after it.
             * A request may not send the headers that are ours to set or
             * hop-by-hop there either (no spoofing after the body). */
            if (ch == ':') {
                if (c->request && c->nlen <= sizeof c->name && http_dropped(c->name, c->nlen, 0, 1))
                    return -1;
                c->state = CH_TVALUE;
            } else if (!http_tchar(ch)) {
                return -1;
            } else if (c->nlen < sizeof c->name) {
                c->name[c->nlen++] = (char)ch;
            } else {
                c->nlen = sizeof c->name + 1;   /* longer than any of ours */
            }
            break;
        case CH_TVALUE:
            if (ch == '\r')
                c->state = CH_TRAILER_LF;
            else if (ch == '\n' || (ch < 0x20 && ch != '\t') || ch == 0x7f)
                return -1;
            break;
        case CH_TRAILER_LF:
            if (ch != '\n')
                return -1;
            c->state = CH_TRAILER0;
            break;
        case CH_END_LF:
            if (ch != '\n')
                return -1;
            c->state = CH_DONE;
            break;
        }
        i++;
    }
    *done = c->state == CH_DONE;
    return (long)i;
}

/*
 * A chunked response for a client that cannot take chunked framing (HTTP/1.0,
 * RFC 9112 6.1): the framing (and trailer) is scanned and dropped in place,
 * so that the buffer's first body.ready bytes are the data alone; the
 * response then ends with the connection, as nginx passes it.
 */
static long relay_dechunk(struct side *s)
{
    struct body *bd = &s->body;
    char *p = (char *)s->buf.data + s->buf.off;
    size_t i = bd->ready, w = bd->ready;
    int done = bd->end;

    while (i < s->buf.len && !done) {
        int data = bd->ch.state == CH_DATA;
        size_t n = !data ? 1 : s->buf.len - i < bd->ch.left ? s->buf.len - i : (size_t)bd->ch.left;
        long r = mtlslb_http_chunk_scan(&bd->ch, p + i, n, &done);
        if (r < 0)
            return -1;
        if (data) {
            memmove(p + w, p + i, (size_t)r);
            w += (size_t)r;
        }
        i += (size_t)r;
    }
    memmove(p + w, p + i, s->buf.len - i);
    s->buf.len -= i - w;
    bd->ready = w;
    bd->end = done;
    return (long)bd->ready;
}

/* ---- connecting to a server ---- */

static void conn_connect(struct conn *c);

static void http_error(struct conn *c, int status);
static void http_pump(struct conn *c);

/* No server could be reached: tcp closes, http answers 502 (or 503 when
 * the backend has no server to try). */
static void conn_no_server(struct conn *c, int status)
{
    struct mtlslb *S = c->S;

    if (!c->http) {
        conn_close(c, status == 503 ? "no server up" : "no server reachable");
        return;
    }
    c->st = CONN_HTTP;
    http_error(c, status);
    if (!c->dead) {
        loop_events(S->loop, &c->cli.pl, POLLOUT);
        http_pump(c);
    }
}

/* Connecting (or the TLS handshake with) the server failed: back it off,
 * try the next one while retries last. */
static void conn_server_failed(struct conn *c, const char *why)
{
    struct mtlslb *S = c->S;
    struct up_server *s = c->server, *o = srv_running(c, s);

    s->fails++;
    s->total--;                     /* counted by conn_use_server: it never got there */
    if (o) {
        o->fails++;
        if (o->total)
            o->total--;
    }
    s->backoff_until = S->now + MTLSLB_BACKOFF_MS;
    log_msg(MTLSLB_LOG_WARN, "backend %s server %s (%s): connect failed: %s", s->be->name,
            s->cfg->name, s->cfg->addr_text, why);
    side_close(S, &c->srv);
    c->srv_in0 = c->bytes_in;       /* no byte of it counts on this server */
    c->srv_out0 = c->bytes_out;
    conn_release_server(c);
    if (c->tries > c->up->cfg->retries) {
        conn_no_server(c, 502);
        return;
    }
    conn_connect(c);
}

static void conn_connect_failed(struct conn *c, int err)
{
    conn_server_failed(c, strerror(err));
}

static void conn_ready(struct conn *c);

/* TLS with the server (`server ... tls`), within timeout connect. */
static void conn_srv_handshake(struct conn *c)
{
    struct mtlslb *S = c->S;
    char why[160], tmp[120];
    int r, err;

    conn_spare_release(S);
    r = wolfSSL_connect(c->srv.ssl);
    err = r == WOLFSSL_SUCCESS ? 0 : wolfSSL_get_error(c->srv.ssl, r);
    conn_spare_take(S);
    if (r == WOLFSSL_SUCCESS) {
        conn_ready(c);
        return;
    }
    if (err == WOLFSSL_ERROR_WANT_READ || err == WOLFSSL_ERROR_WANT_WRITE) {
        loop_events(S->loop, &c->srv.pl, err == WOLFSSL_ERROR_WANT_READ ? POLLIN : POLLOUT);
        return;
    }
    snprintf(why, sizeof why, "TLS: %s (%d)", tls_err_text(err, tmp, sizeof tmp), err);
    conn_server_failed(c, why);
}

/*
 * A cipher's name as haproxy sends it (OpenSSL's): for TLS 1.3 the
 * standard one (TLS_AES_128_GCM_SHA256), which some wolfSSL builds give
 * as TLS13-AES128-GCM-SHA256; TLS 1.2 names are OpenSSL's in both.
 */
static const char *proxy_cipher_name(const char *name)
{
    static const char *const tls13[][2] = {
        { "TLS13-AES128-GCM-SHA256", "TLS_AES_128_GCM_SHA256" },
        { "TLS13-AES256-GCM-SHA384", "TLS_AES_256_GCM_SHA384" },
        { "TLS13-CHACHA20-POLY1305-SHA256", "TLS_CHACHA20_POLY1305_SHA256" },
        { "TLS13-AES128-CCM-SHA256", "TLS_AES_128_CCM_SHA256" },
        { "TLS13-AES128-CCM-8-SHA256", "TLS_AES_128_CCM_8_SHA256" },
    };
    size_t i;

    for (i = 0; name && i < sizeof tls13 / sizeof tls13[0]; i++)
        if (strcmp(name, tls13[i][0]) == 0)
            return tls13[i][1];
    return name;
}

/*
 * send-proxy: the PROXY protocol header opens every connection made to a
 * server, ahead of its TLS if it has any (as haproxy's send-proxy; a
 * header inside the TLS stream would reach no PROXY-aware server).  A
 * connection just made has an empty send buffer: one send() takes it all.
 */
static int conn_send_proxy(struct conn *c)
{
    struct mtlslb_tls_info ti;
    struct sockaddr_storage laddr;      /* the address the client reached */
    socklen_t sl = sizeof laddr;
    uint8_t hdr[MTLSLB_PROXY_MAX];
    ssize_t n;
    int len;

    memset(&laddr, 0, sizeof laddr);
    if (getsockname(c->cli.pl.fd, (struct sockaddr *)&laddr, &sl) == 0)
        addr_unmap(&laddr);
    memset(&ti, 0, sizeof ti);
    ti.version = wolfSSL_get_version(c->cli.ssl);
    ti.cipher = proxy_cipher_name(wolfSSL_get_cipher(c->cli.ssl));
    ti.cn = c->cn[0] ? c->cn : NULL;
    ti.sni = c->sni[0] ? c->sni : NULL;
    ti.has_cert = c->has_cert;
    ti.resumed = wolfSSL_session_reused(c->cli.ssl);
    /* PROXY v2: "zero if the client presented a certificate and it was
     * successfully verified, and non-zero otherwise" (a client without one
     * under verify optional).  A presented certificate that failed never
     * gets here: the handshake was refused. */
    ti.verify = c->has_cert ? 0 : 1;
    len = mtlslb_proxy_header(c->ls->cfg->send_proxy, (struct sockaddr *)&c->caddr,
                              (struct sockaddr *)&laddr, &ti, hdr, sizeof hdr);
    if (len < 0) {
        conn_close(c, "cannot build the PROXY header");
        return -1;
    }
    do
        n = send(c->srv.pl.fd, hdr, (size_t)len, MSG_NOSIGNAL);
    while (n < 0 && errno == EINTR);
    if (n != len) {
        conn_server_failed(c, n < 0 ? strerror(errno) : "PROXY header: short write");
        return -1;
    }
    return 0;
}

static void conn_connected(struct conn *c)
{
    struct mtlslb *S = c->S;

    if (c->ls->cfg->send_proxy && conn_send_proxy(c) < 0)
        return;

    if (c->server->cfg->tls) {
        conn_spare_release(S);
        c->srv.ssl = up_tls_new(c->server, c->srv.pl.fd);
        conn_spare_take(S);
        if (!c->srv.ssl) {
            conn_server_failed(c, "TLS: cannot set up");
            return;
        }
        c->st = CONN_SRV_TLS;
        conn_srv_handshake(c);
        return;
    }
    conn_ready(c);
}

/* The server connection is usable: relay (tcp) or speak http. */
static void conn_ready(struct conn *c)
{
    struct mtlslb *S = c->S;

    timer_set(S->loop, &c->tm, S->now + S->gen->cfg->global.tmo_idle);
    if (c->http) {
        c->st = CONN_HTTP;
        c->srv_reused = 0;
        http_pump(c);
        return;
    }
    c->st = CONN_RELAY;
    relay_pump(c);
}

/* Connect to server s: the connection's reserved socket when it fits. */
static void conn_connect_to(struct conn *c, struct up_server *s)
{
    struct mtlslb *S = c->S;
    const struct mtlslb_server *sc = s->cfg;
    int fd, one = 1;

    c->tries++;
    conn_use_server(c, s);
    if (c->srv.pl.fd >= 0 && sc->addr.ss_family != AF_INET) {
        close(c->srv.pl.fd);            /* reserved as IPv4 at accept */
        c->srv.pl.fd = -1;
    }
    if (c->srv.pl.fd < 0)
        c->srv.pl.fd = fd_socket(sc->addr.ss_family);
    fd = c->srv.pl.fd;
    if (fd < 0) {
        int e = errno;
        conn_close(c, e == EMFILE || e == ENFILE ? "out of file descriptors" : "socket failed");
        return;
    }
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (loop_add(S->loop, &c->srv.pl, POLLOUT) < 0) {
        conn_close(c, "out of memory");
        return;
    }
    if (connect(fd, (const struct sockaddr *)&sc->addr, sc->addrlen) == 0) {
        conn_connected(c);
        return;
    }
    if (errno != EINPROGRESS && errno != EINTR) {
        conn_connect_failed(c, errno);
        return;
    }
    c->st = CONN_CONNECTING;
    loop_events(S->loop, &c->cli.pl, 0);
    timer_set(S->loop, &c->tm, S->now + S->gen->cfg->global.tmo_connect);
}

/* Connect to the next server of the connection's backend. */
static void conn_connect(struct conn *c)
{
    struct up_server *s = up_pick(c->up, &c->caddr, c->S->now);

    if (!s) {
        conn_no_server(c, 503);
        return;
    }
    conn_connect_to(c, s);
}

static void conn_connect_event(struct conn *c)
{
    int err = 0;
    socklen_t l = sizeof err;

    if (getsockopt(c->srv.pl.fd, SOL_SOCKET, SO_ERROR, &err, &l) < 0)
        err = errno;
    if (err == EINPROGRESS || err == EALREADY)
        return;
    if (err) {
        conn_connect_failed(c, err);
        return;
    }
    conn_connected(c);
}

/* ---- idle server connections (http) ----
 *
 * A server connection that finished a response in keep-alive waits in its
 * server's pool for the next request, newest first, at most
 * MTLSLB_POOL_MAX per server and MTLSLB_POOL_IDLE_MS long.  It is not in
 * the poll set: each descriptor there costs every sleeping poll() a
 * wait-queue entry set up and torn down, and idle ones are as many as the
 * busy clients (with 32 keep-alive clients, 31 of the 64 descriptors; poll()
 * was half of mtlslb's CPU at 15,000 requests/s).  Nothing is lost by not
 * watching them: pool_get looks at one before it is used (MSG_PEEK), and
 * one that the server closed, or that holds anything (a server speaks only
 * when asked; a TLS server's close_notify or late ticket counts too), is
 * closed and the next one tried.  A server that closes between that look
 * and the request is the race every pool has; http_server_gone retries such
 * a request once on a fresh connection.  One the server closed otherwise
 * waits (in CLOSE_WAIT) for its MTLSLB_POOL_IDLE_MS or the next request.
 */

struct pconn {
    int fd;
    WOLFSSL *ssl;                   /* tls servers */
    struct up_server *srv;
    struct timer tm;
    struct pconn *next, *prev;
};

static int pool_put(struct mtlslb *S, struct up_server *s, int fd, WOLFSSL *ssl)
{
    struct pconn *p;

    if (s->nidle >= MTLSLB_POOL_MAX || S->stopping)
        return -1;
    if ((p = S->pc_free) != NULL) {         /* no allocation per request */
        S->pc_free = p->next;
        memset(p, 0, sizeof *p);
    } else if (!(p = calloc(1, sizeof *p))) {
        return -1;
    }
    p->fd = fd;
    p->ssl = ssl;
    p->srv = s;
    p->tm.kind = TM_POOL;
    p->next = s->idle;
    if (s->idle)
        s->idle->prev = p;
    s->idle = p;
    s->nidle++;
    timer_set(S->loop, &p->tm, S->now + MTLSLB_POOL_IDLE_MS);
    return 0;
}

/* Out of the pool; returns its descriptor (and TLS object). */
static int pool_take(struct mtlslb *S, struct pconn *p, WOLFSSL **ssl)
{
    int fd = p->fd;

    *ssl = p->ssl;
    timer_del(S->loop, &p->tm);
    if (p->prev)
        p->prev->next = p->next;
    else
        p->srv->idle = p->next;
    if (p->next)
        p->next->prev = p->prev;
    p->srv->nidle--;
    p->next = S->pc_free;
    S->pc_free = p;
    return fd;
}

static void pool_drop(struct mtlslb *S, struct pconn *p)
{
    WOLFSSL *ssl;
    int fd = pool_take(S, p, &ssl);

    if (ssl)
        wolfSSL_free(ssl);
    close(fd);
}

/* The newest idle connection of server s that is still open and quiet, or -1. */
static int pool_get(struct mtlslb *S, struct up_server *s, WOLFSSL **ssl)
{
    while (s->idle) {
        char b;
        ssize_t r = recv(s->idle->fd, &b, 1, MSG_PEEK);
        if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return pool_take(S, s->idle, ssl);
        log_msg(MTLSLB_LOG_DEBUG, "backend %s server %s: pooled connection %s", s->be->name,
                s->cfg->name, r == 0 ? "closed by the server" : r > 0 ? "not quiet" : strerror(errno));
        pool_drop(S, s->idle);
    }
    return -1;
}

/* Every idle connection closed, the spare entries freed (stopping). */
static void pool_clear(struct mtlslb *S)
{
    size_t i, j;

    for (i = 0; i < S->gen->nups; i++)
        for (j = 0; j < S->gen->ups[i].n; j++)
            while (S->gen->ups[i].srv[j].idle)
                pool_drop(S, S->gen->ups[i].srv[j].idle);
    while (S->pc_free) {
        struct pconn *p = S->pc_free;
        S->pc_free = p->next;
        free(p);
    }
}

/* Send the request over an idle connection of server s, if it has one. */
static int http_attach_pooled(struct conn *c, struct up_server *s)
{
    WOLFSSL *ssl = NULL;
    int fd;

    if (c->ls->cfg->send_proxy)
        return -1;                  /* its PROXY header names another client */
    fd = pool_get(c->S, s, &ssl);
    if (fd < 0)
        return -1;
    if (c->srv.pl.fd >= 0)
        conn_rsv_put(c->S, c->srv.pl.fd);   /* the socket reserved at accept, unused */
    c->srv.pl.fd = fd;
    c->srv.ssl = ssl;
    if (loop_add(c->S->loop, &c->srv.pl, POLLIN | POLLOUT) < 0) {
        side_close(c->S, &c->srv);
        return -1;
    }
    conn_use_server(c, s);
    c->srv_reused = 1;
    return 0;
}

/* ---- http mode: one request at a time, each balanced on its own ----
 *
 * The request head is read from the client, checked, routed and rewritten
 * into the server side's out buffer; the body follows through relay_move
 * under its framing (cli.body).  The response head is read into the server
 * side's buffer, rewritten into the client side's out buffer, and its body
 * follows the same way (srv.body).  When both messages are complete the
 * server connection goes back to its server's pool and the next request
 * (perhaps already buffered: pipelining) is taken.
 */

static int obuf_str(struct obuf *o, const char *s)
{
    return obuf_add(o, s, strlen(s));
}

static int obuf_header(struct obuf *o, const char *name, const char *value)
{
    return obuf_str(o, name) | obuf_add(o, ": ", 2) | obuf_str(o, value) | obuf_add(o, "\r\n", 2);
}

static void obuf_reset(struct obuf *o)
{
    o->len = o->off = 0;
}

static const char *http_reason(int status)
{
    switch (status) {
    case 400: return "Bad Request";
    case 403: return "Forbidden";
    case 408: return "Request Timeout";
    case 414: return "URI Too Long";
    case 421: return "Misdirected Request";
    case 431: return "Request Header Fields Too Large";
    case 501: return "Not Implemented";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    default: return "Error";
    }
}

/* A header name is one of ours, '_' taken as '-': CGI, PHP and WSGI
 * servers read X_Client_Verify as X-Client-Verify (both become
 * HTTP_X_CLIENT_VERIFY), so the underscore spelling would spoof it. */
static int http_is_ours(const char *s, size_t n, const char *word)
{
    size_t i;

    if (strlen(word) != n)
        return 0;
    for (i = 0; i < n; i++)
        if (s[i] == '_' ? word[i] != '-' : tolower((unsigned char)s[i]) != word[i])
            return 0;
    return 1;
}

/* The hop-by-hop headers (RFC 9110 7.6.1), and in requests the ones a
 * client may not send on because they are ours to set (SPEC 5), with
 * RFC 9440's Client-Cert-Chain, which we never set and a server trusts
 * as ours. */
static int http_dropped(const char *n, size_t l, int upgrade, int request)
{
    static const char *const hop[] = {
        "connection", "keep-alive", "proxy-connection", "te", NULL
    };
    static const char *const ours[] = {
        "x-forwarded-for", "x-forwarded-proto", "x-real-ip", "x-client-verify",
        "x-client-subject", "x-client-issuer", "x-client-serial", "x-client-fingerprint",
        "x-client-not-after", "client-cert", "client-cert-chain", NULL
    };
    size_t i;

    for (i = 0; hop[i]; i++)
        if (http_is(n, l, hop[i]))
            return 1;
    for (i = 0; request && ours[i]; i++)
        if (http_is_ours(n, l, ours[i]))
            return 1;
    return !upgrade && http_is(n, l, "upgrade");
}

/* Is a header named in the message's Connection header (so hop-by-hop)? */
static int http_conn_listed(const struct mtlslb_http_msg *m, const char *n, size_t l)
{
    size_t i;

    for (i = 0; i < m->nheaders; i++) {
        const struct mtlslb_http_header *h = &m->headers[i];
        const char *s = h->value, *e;
        size_t el;
        if (!http_is(h->name, h->name_len, "connection"))
            continue;
        while ((e = http_list(&s, h->value + h->value_len, &el)) != NULL)
            if (el == l && strncasecmp(e, n, l) == 0 && !http_is(e, el, "upgrade"))
                return 1;
    }
    return 0;
}

/* Copy the headers that pass, as they came. */
static int http_copy_headers(struct obuf *o, const struct mtlslb_http_msg *m, int upgrade,
                             int request, int dechunk)
{
    size_t i;
    int rc = 0, cl = 0;

    for (i = 0; i < m->nheaders; i++) {
        const struct mtlslb_http_header *h = &m->headers[i];
        if (http_dropped(h->name, h->name_len, upgrade, request) ||
            (m->has_connection && http_conn_listed(m, h->name, h->name_len)))
            continue;
        /* Content-Length lines the parser let through agree: one goes on
         * (RFC 9110 8.6), not a list a server might read otherwise. */
        if (h->name_len == 14 && http_is(h->name, 14, "content-length") && cl++)
            continue;
        if (dechunk && http_is(h->name, h->name_len, "transfer-encoding"))
            continue;
        rc |= obuf_add(o, h->name, h->name_len) | obuf_add(o, ": ", 2) |
              obuf_add(o, h->value, h->value_len) | obuf_add(o, "\r\n", 2);
    }
    return rc;
}

static void b64_encode(const uint8_t *in, size_t n, char *out)
{
    static const char t[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    size_t i;

    for (i = 0; i + 2 < n; i += 3) {
        *out++ = t[in[i] >> 2];
        *out++ = t[((in[i] & 3) << 4) | (in[i + 1] >> 4)];
        *out++ = t[((in[i + 1] & 15) << 2) | (in[i + 2] >> 6)];
        *out++ = t[in[i + 2] & 63];
    }
    if (i < n) {
        *out++ = t[in[i] >> 2];
        *out++ = t[((in[i] & 3) << 4) | (i + 1 < n ? in[i + 1] >> 4 : 0)];
        *out++ = i + 1 < n ? t[(in[i + 1] & 15) << 2] : '=';
        *out++ = '=';
    }
    *out = 0;
}

/*
 * Who the client is, as the header lines every request of the connection
 * carries (SPEC 5).  Built once at the handshake: neither the address nor
 * the certificate changes, and a request then only copies the block.
 */
static int http_client_headers(struct conn *c, const struct mtlslb_identity *id,
                               const uint8_t *der, size_t len)
{
    struct obuf *o = &c->xhdrs;
    char ip[INET6_ADDRSTRLEN] = "", *b64;
    int rc;

    if (c->caddr.ss_family == AF_INET)
        inet_ntop(AF_INET, &((struct sockaddr_in *)(void *)&c->caddr)->sin_addr, ip, sizeof ip);
    else
        inet_ntop(AF_INET6, &((struct sockaddr_in6 *)(void *)&c->caddr)->sin6_addr, ip, sizeof ip);
    rc = obuf_header(o, "X-Forwarded-For", ip) | obuf_header(o, "X-Forwarded-Proto", "https") |
         obuf_header(o, "X-Real-IP", ip) |
         obuf_header(o, "X-Client-Verify", id ? "SUCCESS" : "NONE");
    if (!id)
        return rc;
    rc |= obuf_header(o, "X-Client-Subject", id->subject) |
          obuf_header(o, "X-Client-Issuer", id->issuer) |
          obuf_header(o, "X-Client-Serial", id->serial) |
          obuf_header(o, "X-Client-Fingerprint", id->fingerprint) |
          obuf_header(o, "X-Client-Not-After", id->not_after);
    if (!c->ls->cfg->forward_cert)
        return rc;
    if (!(b64 = malloc((len + 2) / 3 * 4 + 1)))
        return -1;
    b64_encode(der, len, b64);
    rc |= obuf_str(o, "Client-Cert: :") | obuf_str(o, b64) | obuf_str(o, ":\r\n");
    free(b64);
    return rc;
}

/* The request head as the server gets it: the client's headers minus the
 * ones that are ours to set, then the connection's identity block.  An
 * HTTP/1.0 request goes as 1.0 (so no chunked answer comes back to a 1.0
 * client) with Connection: keep-alive, as HAProxy sends it: the server
 * connection is kept for reuse whatever the client does with its own. */
static int http_server_head(struct conn *c, const struct mtlslb_http_msg *m, struct obuf *o)
{
    int rc = obuf_add(o, m->method, m->method_len) | obuf_add(o, " ", 1) |
             obuf_add(o, m->target, m->target_len) |
             obuf_str(o, m->version == 11 ? " HTTP/1.1\r\n" : " HTTP/1.0\r\n");

    rc |= http_copy_headers(o, m, c->tx.upgrade, 1, 0);
    if (c->tx.upgrade)
        rc |= obuf_str(o, "Connection: upgrade\r\n");
    else if (m->version == 10)
        rc |= obuf_str(o, "Connection: keep-alive\r\n");
    return rc | obuf_add(o, c->xhdrs.p, c->xhdrs.len) | obuf_add(o, "\r\n", 2);
}

/* Host without its port, for SNI and route matching. */
static void http_host(const struct mtlslb_http_msg *m, char *out, size_t cap)
{
    size_t n = m->host_len, i;
    const char *h = m->host;

    if (!h || n == 0) {
        out[0] = 0;
        return;
    }
    n = http_host_name(h, n);
    if (n >= cap)
        n = cap - 1;
    for (i = 0; i < n; i++)
        out[i] = (char)((h[i] >= 'A' && h[i] <= 'Z') ? h[i] - 'A' + 'a' : h[i]);
    out[n] = 0;
}

/*
 * The path a route is matched against: what a server would make of it, so
 * that "/%61dmin", "//admin" or "/x/../admin" cannot pass a route's allow
 * rule for "/admin".  Octets of unreserved characters are decoded (RFC 3986
 * 6.2.2.2), dot segments removed (5.2.4), runs of slashes merged (as nginx
 * does); other escapes and the query stay as they came.  out holds n + 1
 * bytes (the result is never longer); returns its length.
 */
size_t mtlslb_path_normalize(const char *p, size_t n, char *out)
{
    size_t q, i, o = 0, end, seg;

    if (n == 0 || p[0] != '/') {
        memcpy(out, p, n);
        out[n] = 0;
        return n;
    }
    for (q = 0; q < n && p[q] != '?'; q++)
        ;
    for (i = 0; i < q; i++) {       /* decode into out: unreserved characters only */
        int hi, lo, ch = -1;
        if (p[i] == '%' && i + 2 < q && (hi = http_hex((unsigned char)p[i + 1])) >= 0 &&
            (lo = http_hex((unsigned char)p[i + 2])) >= 0)
            ch = hi * 16 + lo;
        if ((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
            ch == '-' || ch == '.' || ch == '_' || ch == '~') {
            out[o++] = (char)ch;
            i += 2;
        } else {
            out[o++] = p[i];
        }
    }
    /* the segments, in place: the write position never passes the read one */
    end = o;
    o = 0;
    for (i = 0; i < end; i = seg) {
        size_t len;
        int dot, dotdot;
        while (i < end && out[i] == '/')
            i++;
        for (seg = i; seg < end && out[seg] != '/'; seg++)
            ;
        len = seg - i;
        dot = len == 1 && out[i] == '.';
        dotdot = len == 2 && out[i] == '.' && out[i + 1] == '.';
        if (dotdot) {
            while (o > 0 && out[--o] != '/')
                ;
        } else if (len > 0 && !dot) {
            out[o++] = '/';
            memmove(out + o, out + i, len);
            o += len;
        }
        if (seg == end && (len == 0 || dot || dotdot))
            out[o++] = '/';     /* a path ending in a directory keeps its slash */
    }
    if (o == 0)
        out[o++] = '/';
    memcpy(out + o, p + q, n - q);  /* the query, as it came */
    o += n - q;
    out[o] = 0;
    return o;
}

static const struct mtlslb_route *http_route(const struct mtlslb_listener *l, const char *host,
                                             const struct mtlslb_http_msg *m)
{
    char path[MTLSLB_HTTP_LINE_MAX + 1];   /* the path is part of the request line */
    size_t i, n = 0;

    for (i = 0; i < l->nroutes; i++) {
        const struct mtlslb_route *r = &l->routes[i];
        if (r->host && !mtlslb_sni_match(r->host, host))
            continue;
        if (r->path && !n)
            n = mtlslb_path_normalize(m->path, m->path_len < MTLSLB_HTTP_LINE_MAX ? m->path_len :
                                      MTLSLB_HTTP_LINE_MAX, path);
        if (r->path && (n < strlen(r->path) || memcmp(path, r->path, strlen(r->path)) != 0))
            continue;
        return r;
    }
    return NULL;
}

/* The req line of the exchange; end: why it was cut off, or NULL. */
static void http_log_end(struct conn *c, const char *end)
{
    struct http_tx *t = &c->tx;
    const struct up_server *s = t->server;
    char sni[520], cn[520], path[2 * sizeof t->path];

    t->logged = 1;
    log_escape(path, sizeof path, t->path);
    log_msg(MTLSLB_LOG_INFO, "req %s listener=%s sni=%s cn=%s backend=%s/%s status=%d "
            "method=%s path=\"%s\" bytes_in=%llu bytes_out=%llu ms=%llu%s%s%s", c->peer,
            c->ls->cfg->name, log_word(sni, sizeof sni, c->sni), log_word(cn, sizeof cn, c->cn),
            t->up ? t->up->cfg->name : "-", s ? s->cfg->name : "-", t->status,
            t->method[0] ? t->method : "-", path, (unsigned long long)(c->bytes_in - t->in0),
            (unsigned long long)(c->bytes_out - t->out0),
            (unsigned long long)(c->S->now - t->start), end ? " end=\"" : "", end ? end : "",
            end ? "\"" : "");
}

static void http_log(struct conn *c)
{
    http_log_end(c, NULL);
}

static void http_side_reset(struct side *s)
{
    s->pl.fd = -1;
    s->pl.slot = -1;
    s->buf.off = s->buf.len = 0;
    s->wpending = 0;
    s->rd.drained = 0;
    s->eof = s->shut = s->shut_done = s->rd_want_wr = s->wr_want_rd = 0;
    memset(&s->body, 0, sizeof s->body);
    obuf_reset(&s->out);
}

/* Done with the server connection: back to its server's pool when it can
 * serve another request, closed otherwise. */
static void http_release_server(struct conn *c, int reusable)
{
    struct mtlslb *S = c->S;
    struct up_server *s = c->server;

    if (!s)
        return;
    if (c->srv.pl.slot >= 0)
        loop_del(S->loop, &c->srv.pl);
    /* Not into a retired generation's pool: gen_retire emptied it, and
     * nothing would drop what came after (it outlives its generation). */
    if (c->srv.pl.fd >= 0 && reusable && !c->ls->cfg->send_proxy && c->gen == S->gen &&
        !c->srv.eof && c->srv.buf.len == 0 &&
        c->srv.out.len == 0 && !c->srv.wpending && pool_put(S, s, c->srv.pl.fd, c->srv.ssl) == 0) {
        c->srv.pl.fd = -1;
        c->srv.ssl = NULL;
    }
    side_close(S, &c->srv);
    http_side_reset(&c->srv);
    conn_release_server(c);
}

/* The request is a HEAD: its head parsed, or the start of one that was
 * not (a 408, 414 or 431 comes before the head is complete). */
static int http_is_head(const struct conn *c)
{
    const struct buf *b = &c->cli.buf;

    if (c->tx.method[0])
        return strcmp(c->tx.method, "HEAD") == 0;
    return b->len >= 5 && memcmp(b->data + b->off, "HEAD ", 5) == 0;
}

/* Answer the client with an error of ours, then close.  A HEAD gets the
 * head alone (SPEC 5: no body), its Content-Length that of the GET. */
static void http_error(struct conn *c, int status)
{
    struct http_tx *t = &c->tx;
    char head[256];
    const char *reason = http_reason(status);
    int n;

    if (t->resp_started) {
        conn_close(c, "server failed mid-response");
        return;
    }
    n = snprintf(head, sizeof head, "HTTP/1.1 %d %s\r\nContent-Type: text/plain\r\n"
                 "Content-Length: %zu\r\nConnection: close\r\n\r\n%d %s\n", status, reason,
                 strlen(reason) + 5, status, reason);
    if (n > 0 && (size_t)n < sizeof head && http_is_head(c))
        n -= (int)strlen(reason) + 5;
    http_release_server(c, 0);
    /* A head refused before it was complete or parsed (400, 408, 414, 431):
     * its bytes read so far were still the client's (SPEC 8) */
    if (t->rq == HQ_HEAD && !t->head_in) {
        t->head_in = c->cli.buf.len;
        c->bytes_in += c->cli.buf.len;
    }
    obuf_reset(&c->cli.out);
    if (n < 0 || obuf_add(&c->cli.out, head, (size_t)n) < 0) {
        conn_close(c, "out of memory");
        return;
    }
    t->status = status;
    t->resp_started = 1;
    t->out0 -= (uint64_t)n;         /* logged now, written next: it counts as sent */
    http_log(c);
    t->rq = HQ_DONE;
    t->rs = HS_NONE;
    c->cli.body.kind = BK_NONE;
    c->closing = 1;
}

static int http_idempotent(const struct mtlslb_http_msg *m)
{
    static const char *const ok[] = { "GET", "HEAD", "PUT", "DELETE", "OPTIONS", "TRACE", NULL };
    size_t i;

    for (i = 0; ok[i]; i++)
        if (m->method_len == strlen(ok[i]) && memcmp(m->method, ok[i], m->method_len) == 0)
            return 1;
    return 0;
}

static void http_body_start(struct side *s, enum mtlslb_http_body b, uint64_t len)
{
    memset(&s->body, 0, sizeof s->body);
    s->body.kind = b == MTLSLB_BODY_LENGTH ? BK_LENGTH : b == MTLSLB_BODY_CHUNKED ? BK_CHUNKED :
                   b == MTLSLB_BODY_CLOSE ? BK_CLOSE : BK_NONE;
    s->body.left = len;
}

/* The request's method and path, for its log line. */
static void http_tx_names(struct http_tx *t, const struct mtlslb_http_msg *m)
{
    size_t n;

    n = m->method_len < sizeof t->method - 1 ? m->method_len : sizeof t->method - 1;
    memcpy(t->method, m->method, n);
    t->method[n] = 0;
    n = m->path_len < sizeof t->path - 1 ? m->path_len : sizeof t->path - 1;
    memcpy(t->path, m->path, n);
    t->path[n] = 0;
    str_clean(t->path, sizeof t->path, t->path);
    for (n = 0; t->path[n]; n++)
        if (t->path[n] == '"')
            t->path[n] = '?';
}

/* A complete request head in cli.buf: check it, route it, pass it on. */
static void http_request(struct conn *c, const struct mtlslb_http_msg *m)
{
    struct mtlslb *S = c->S;
    struct http_tx *t = &c->tx;
    const struct mtlslb_route *r;
    struct tls_ctx *asked;
    struct up_server *s;
    char host[256];

    http_tx_names(t, m);
    http_host(m, host, sizeof host);
    /* SPEC 4: a Host naming another sni entry than the handshake's is 421,
     * so one name's CA cannot reach another name's routes.  Both ways: a
     * Host that no sni line names belongs to the default certificate, so a
     * handshake made under an sni line cannot use it either. */
    asked = host[0] ? tls_sni_find(&c->ls->tls, host) : NULL;
    c->bytes_in += m->head_len;     /* SPEC 8: bytes from the client, not our rewrite */
    t->head_in = m->head_len;
    if (host[0] && (asked ? asked->sni : NULL) != c->hs_sni) {
        http_error(c, 421);
        return;
    }
    r = http_route(c->ls->cfg, host, m);
    t->up = &c->gen->ups[r ? r->backend : c->ls->cfg->backend];
    /* allow lines: the listener's for every request, the route's for its
     * own (no fall-through to later routes) */
    if (c->denied || (r && r->nallows && !(c->route_ok && c->route_ok[r - c->ls->cfg->routes]))) {
        const struct mtlslb_listener *l = c->ls->cfg;
        char where[64] = "";
        if (!c->denied)
            snprintf(where, sizeof where, " route=\"line %d\"", r->line);
        if (c->denied)
            conn_denied_log(c, l->allows, l->nallows, where);
        else
            conn_denied_log(c, r->allows, r->nallows, where);
        http_error(c, 403);
        return;
    }
    t->upgrade = m->conn_upgrade;
    t->head_req = http_is(m->method, m->method_len, "HEAD");
    t->keep = !m->conn_close;
    t->retryable = http_idempotent(m) && m->body == MTLSLB_BODY_NONE;
    obuf_reset(&c->srv.out);
    if (http_server_head(c, m, &c->srv.out) < 0) {
        conn_close(c, "out of memory");
        return;
    }
    c->cli.buf.off += m->head_len;
    c->cli.buf.len -= m->head_len;
    http_body_start(&c->cli, m->body, m->content_length);
    c->cli.body.ch.request = 1;
    t->rq = m->body == MTLSLB_BODY_NONE ? HQ_DONE : HQ_BODY;
    t->rs = HS_HEAD;
    c->up = t->up;
    c->tries = 0;
    s = up_pick(c->up, &c->caddr, S->now);
    if (!s) {
        http_error(c, 503);
        return;
    }
    if (http_attach_pooled(c, s) == 0)
        return;
    conn_connect_to(c, s);
}

/* A complete response head in srv.buf. */
static int http_response(struct conn *c, const struct mtlslb_http_msg *m)
{
    struct http_tx *t = &c->tx;
    struct obuf *o = &c->cli.out;
    size_t eol = (size_t)((const char *)memchr(c->srv.buf.data + c->srv.buf.off, '\r',
                                               m->head_len) -
                          (const char *)(c->srv.buf.data + c->srv.buf.off));
    int rc, dechunk;

    if (m->status == 101 && !t->upgrade) {
        http_error(c, 502);         /* a switch nobody asked for: invalid */
        return 0;
    }
    /* An HTTP/1.0 client gets neither 1xx (RFC 9110 15.2) nor chunked
     * framing (RFC 9112 6.1), which a server should not have sent it. */
    dechunk = t->version == 10 && m->body == MTLSLB_BODY_CHUNKED;
    if (m->status < 200 && m->status != 101) {
        /* 100 Continue and friends go to the client as they are. */
        rc = t->version == 10 ? 0 : obuf_add(o, (const char *)c->srv.buf.data + c->srv.buf.off,
                                             m->head_len);
        c->srv.buf.off += m->head_len;
        c->srv.buf.len -= m->head_len;
        return rc;
    }
    t->status = m->status;
    t->resp_started = 1;
    t->close_client = !t->keep || m->body == MTLSLB_BODY_CLOSE || t->rq != HQ_DONE ||
                      c->S->stopping || dechunk;
    t->srv_keep = !m->conn_close && m->body != MTLSLB_BODY_CLOSE && m->status != 101;
    rc = obuf_add(o, (const char *)c->srv.buf.data + c->srv.buf.off, eol + 2);
    rc |= http_copy_headers(o, m, m->status == 101, 0, dechunk);
    if (m->status == 101)
        rc |= obuf_str(o, "Connection: upgrade\r\n");
    else if (t->close_client)
        rc |= obuf_str(o, "Connection: close\r\n");
    else if (c->tx.version == 10)
        rc |= obuf_str(o, "Connection: keep-alive\r\n");
    rc |= obuf_add(o, "\r\n", 2);
    c->srv.buf.off += m->head_len;
    c->srv.buf.len -= m->head_len;
    if (m->status == 101) {
        /* Upgraded: from now on a plain relay, both ways (WebSocket).  Its
         * req line is written when it ends (conn_close), with the bytes
         * and time of the whole exchange. */
        c->cli.body.kind = c->srv.body.kind = BK_TUNNEL;
        c->st = CONN_RELAY;
        t->rs = HS_DONE;
        return rc;
    }
    http_body_start(&c->srv, m->body, m->content_length);
    c->srv.body.strip = dechunk;
    t->rs = HS_BODY;
    return rc;
}

/* The server connection broke before a response byte: retry a request that
 * went out on a reused connection once, on a fresh one; else 502. */
static void http_server_gone(struct conn *c, const char *why)
{
    struct http_tx *t = &c->tx;
    struct up_server *s = c->server;

    if (t->rs == HS_HEAD && !t->resp_started && c->srv_reused && t->retryable &&
        c->srv.buf.len == 0 && c->req_head.len) {
        log_msg(MTLSLB_LOG_DEBUG, "%s: reused connection to %s/%s gone (%s): retrying once",
                c->peer, s->be->name, s->cfg->name, why);
        http_release_server(c, 0);
        t->retryable = 0;
        if (obuf_add(&c->srv.out, c->req_head.p, c->req_head.len) < 0) {
            conn_close(c, "out of memory");
            return;
        }
        conn_connect_to(c, s);
        return;
    }
    if (s)
        log_msg(MTLSLB_LOG_WARN, "backend %s server %s (%s): %s", s->be->name, s->cfg->name,
                s->cfg->addr_text, why);
    if (!t->resp_started)
        http_error(c, 502);
    else
        conn_close(c, why);
}

/* Both messages are complete: log, release, and take the next request. */
static void http_finish(struct conn *c)
{
    struct http_tx *t = &c->tx;

    http_log(c);
    http_release_server(c, t->srv_keep && t->rq == HQ_DONE);
    /* A client that half-closed after pipelining is answered all it sent. */
    if (t->close_client || (c->cli.eof && c->cli.buf.len == 0) || c->S->stopping) {
        c->closing = 1;
        return;
    }
    c->req_head.len = 0;
    if (c->req_head.cap > HEAD_KEEP_MAX) {
        free(c->req_head.p);
        memset(&c->req_head, 0, sizeof c->req_head);
    }
    memset(t, 0, sizeof *t);
    t->rq = HQ_HEAD;
    t->rs = HS_NONE;
    t->start = c->S->now;
    t->in0 = c->bytes_in;
    t->out0 = c->bytes_out;
    memset(&c->cli.body, 0, sizeof c->cli.body);
}

/*
 * Lingering close (nginx's lingering_close): a client answered and closed
 * while it may still be sending (a request body not read to its end, or
 * bytes after the request) is read and discarded for up to LINGER_MS after
 * our close_notify and FIN.  Closing at once, with its bytes unread, sends
 * a RST that can reach the client before it has read the answer (a 413 its
 * server sent before the body, a 400): it then sees only a reset.
 */
#define LINGER_MS 2000

static void conn_linger_read(struct conn *c)
{
    if (fd_discard(c->cli.pl.fd, 64))
        conn_close(c, "done");          /* its end, or an error */
}

/* Done with a closing http client: linger if it may still be sending (in
 * a request, or bytes after one). */
static void http_close_client(struct conn *c)
{
    struct mtlslb *S = c->S;
    int sending = c->tx.rq == HQ_BODY || c->cli.buf.len > 0 ||
                  (c->tx.rq == HQ_HEAD && c->tx.head_seen);

    if (c->cli.eof || !sending || c->cli.pl.slot < 0) {
        conn_close(c, "done");
        return;
    }
    http_release_server(c, 0);
    c->st = CONN_LINGER;
    buf_give(&c->cli.buf);
    loop_events(S->loop, &c->cli.pl, POLLIN);
    timer_set(S->loop, &c->tm, S->now + LINGER_MS);
    conn_linger_read(c);
}

/*
 * Move the exchange along as far as the buffered bytes allow.  Returns 1
 * if its state changed, 0 if not, -1 if the connection was closed (or
 * lingers).
 */
static int http_advance(struct conn *c)
{
    struct http_tx *t = &c->tx;
    struct mtlslb_http_msg m;
    int rc;

    if (c->closing) {
        if (c->cli.out.len == 0 && !c->cli.shut) {
            c->cli.shut = 1;                /* relay_move sends close_notify */
            return 1;
        }
        if (c->cli.shut_done) {
            http_close_client(c);
            return -1;
        }
        return 0;
    }
    if (t->rq == HQ_HEAD && t->rs == HS_NONE) {
        /* RFC 9112 2.2: empty lines before a request line are ignored (some
         * clients send a CRLF after a POST body). */
        while (c->cli.buf.len > 0) {
            const uint8_t *p = c->cli.buf.data + c->cli.buf.off;
            size_t k = p[0] == '\n' ? 1 : c->cli.buf.len >= 2 && p[0] == '\r' && p[1] == '\n' ? 2 : 0;
            if (k == 0)
                break;
            c->cli.buf.off += k;
            c->cli.buf.len -= k;
        }
        if (c->cli.buf.len == 0) {
            if (c->cli.eof) {
                conn_close(c, "done");
                return -1;
            }
            return 0;
        }
        if (!t->head_seen) {
            t->head_seen = 1;
            t->start = c->S->now;
            if (!t->head_start)             /* the first request's: the handshake's */
                t->head_start = c->S->now;
        }
        rc = mtlslb_http_parse_request((const char *)c->cli.buf.data + c->cli.buf.off,
                                       c->cli.buf.len, &m);
        if (rc == 0 && c->cli.eof)
            rc = -400;                      /* the head was cut short */
        if (rc == 0)
            return 0;
        if (rc < 0) {
            if (m.method_len)               /* its request line was good */
                http_tx_names(t, &m);
            http_error(c, -rc);
            return c->dead ? -1 : 1;
        }
        t->version = m.version;
        http_request(c, &m);
        if (!c->dead && t->retryable && !c->closing && c->srv.out.len)
            (void)obuf_add(&c->req_head, c->srv.out.p, c->srv.out.len);  /* no room: no retry */
        return c->dead ? -1 : 1;
    }
    if (t->rq == HQ_BODY && c->cli.body.kind != BK_TUNNEL) {
        if (relay_body_done(&c->cli)) {
            t->rq = HQ_DONE;
            return 1;
        }
        if (c->cli.eof && c->cli.buf.len == 0) {
            conn_close(c, "client closed mid-request");
            return -1;
        }
    }
    if (t->rs == HS_HEAD && c->srv.pl.slot >= 0 && c->st == CONN_HTTP) {
        if (c->srv.buf.len) {
            rc = mtlslb_http_parse_response((const char *)c->srv.buf.data + c->srv.buf.off,
                                            c->srv.buf.len, t->head_req, &m);
            if (rc < 0) {
                http_server_gone(c, "invalid response");
                return c->dead ? -1 : 1;
            }
            if (rc > 0) {
                if (http_response(c, &m) < 0) {
                    if (!c->dead)
                        conn_close(c, "out of memory");
                    return -1;
                }
                return 1;
            }
        }
        if (c->srv.eof) {
            http_server_gone(c, c->srv.buf.len ? "response cut short" : "closed without a response");
            return c->dead ? -1 : 1;
        }
    }
    if (t->rs == HS_BODY) {
        if (relay_body_done(&c->srv)) {
            t->rs = HS_DONE;
            return 1;
        }
        if (c->srv.eof && c->srv.buf.len == 0) {
            c->closing = 1;                 /* the response was cut short */
            t->status = t->status ? t->status : 502;
            http_log_end(c, "server closed mid-response");
            return 1;
        }
    }
    if (t->rs == HS_DONE && c->cli.out.len == 0 && (t->rq == HQ_DONE || t->close_client)) {
        http_finish(c);
        return 1;
    }
    return 0;
}

static void http_timer(struct conn *c, int moved)
{
    struct mtlslb *S = c->S;
    const struct http_tx *t = &c->tx;

    if (t->rq == HQ_HEAD && t->rs == HS_NONE && t->head_start && !c->closing)
        timer_set(S->loop, &c->tm, t->head_start + S->gen->cfg->global.tmo_request);
    else if (moved || (t->rq == HQ_HEAD && !c->cli.buf.len))
        timer_set(S->loop, &c->tm, S->now + S->gen->cfg->global.tmo_idle);
}

static void http_pump(struct conn *c)
{
    struct mtlslb *S = c->S;
    int up, down, adv, any = 0;

    do {
        adv = http_advance(c);
        if (adv < 0)
            return;
        if (c->st == CONN_RELAY) {          /* upgraded */
            relay_pump(c);
            return;
        }
        if (c->st != CONN_HTTP)
            return;                         /* connecting to a server */
        /* -1 without the connection closed: an error answer is queued */
        up = relay_move(c, &c->cli, &c->srv);
        if (up < 0 && c->dead)
            return;
        down = relay_move(c, &c->srv, &c->cli);
        if (down < 0 && c->dead)
            return;
        up = up != 0;
        down = down != 0;
        any |= up | down;
    } while (up || down || adv);
    if (c->cli.rd.wb_more)              /* held for a close_notify that did not follow */
        (void)tls_flush(&c->cli.rd);
    http_timer(c, any);
    if (any)
        conn_server_bytes(c);
    loop_events(S->loop, &c->cli.pl, side_interest(&c->cli, &c->srv));
    loop_events(S->loop, &c->srv.pl, side_interest(&c->srv, &c->cli));
}

static void http_bad_framing(struct conn *c, struct side *s)
{
    if (s == &c->cli && !c->tx.resp_started)
        http_error(c, 400);             /* bad chunked request body */
    else if (s == &c->cli)
        conn_close(c, "bad chunked framing from the client");
    else
        http_server_gone(c, "bad chunked framing in the response");
}

/* ---- the handshake ---- */

/*
 * The client certificate of a handshake, as DER: the peer's on a full
 * handshake (then remembered for resumption: tk_cert_put, and for TLS 1.2
 * its session id), the remembered one on a resumed session (a ticket's, or
 * a session id's, checked again here).  *der NULL: none.  -1 with *why set
 * if a resumed session's certificate is no longer good.
 */
static int conn_peer_der(struct conn *c, const uint8_t **der, size_t *len, enum tls_reason *why)
{
    struct tls_listener *t = &c->ls->tls;
    WOLFSSL *ssl = c->cli.ssl;
    uint8_t fp[TK_FP], zero[TK_FP];

    *der = NULL;
    *len = 0;
    memset(fp, 0, sizeof fp);
    memset(zero, 0, sizeof zero);
    if (wolfSSL_session_reused(ssl)) {
        const struct tk_sid *sid;
        const struct tk_cert *e;
        if (c->tr.ok) {             /* a ticket: checked as it was opened */
            *der = c->tr.der;
            *len = c->tr.len;
            return 0;
        }
        sid = tk_sid_find(t, ssl);
        c->tr.sid = sid != NULL;        /* for tls_resume_problem */
        if (!sid || memcmp(sid->fp, zero, TK_FP) == 0)
            return 0;               /* tls_resume_problem decides */
        e = tk_cert_find(sid->fp);
        if (!e)
            return 0;
        if (tk_cert_check(tls_ctx_of(t, ssl), e, why) < 0)
            return -1;
        *der = e->der;
        *len = e->len;
        return 0;
    }
    if (tls_peer_cert(ssl, &c->tr) < 0) {
        *why = R_BAD_CERT;
        return -1;
    }
    if (c->tr.len) {
        *der = c->tr.der;
        *len = c->tr.len;
        if (tk_cert_put(c->tr.fp, *der, *len) == 0 && wolfSSL_version(ssl) == TLS1_2_VERSION)
            tk_sid_put(t, ssl, c->tr.fp);
    } else if (wolfSSL_version(ssl) == TLS1_2_VERSION) {
        tk_sid_put(t, ssl, fp);     /* no certificate: resumes as none */
    }
    return 0;
}

/*
 * Access control (allow lines), decided once per connection from its
 * certificate: the listener's (c->denied) and, in http mode, each route's
 * (c->route_ok).  A certificate that does not decode matches no rule.
 */
static int conn_access(struct conn *c, const uint8_t *der, size_t len)
{
    const struct mtlslb_listener *l = c->ls->cfg;
    struct mtlslb_peer pe;
    const struct mtlslb_peer *pp = NULL;
    size_t i, any = 0;

    for (i = 0; i < l->nroutes; i++)
        any |= l->routes[i].nallows;
    if (!l->nallows && !any)
        return 0;
    if (der && mtlslb_cert_peer(der, len, &pe) == 0)
        pp = &pe;
    c->denied = !mtlslb_identity_allowed(l->allows, l->nallows, pp);
    if (any && l->mode == MTLSLB_MODE_HTTP) {
        if (!(c->route_ok = malloc(l->nroutes)))
            return -1;
        for (i = 0; i < l->nroutes; i++)
            c->route_ok[i] = (unsigned char)mtlslb_identity_allowed(l->routes[i].allows,
                                                                    l->routes[i].nallows, pp);
    }
    return 0;
}

/* Who the client is: SNI and CN for every listener, and for http ones the
 * header block its requests carry.  -1 with *why set if the certificate
 * does not decode, a resumed one is no longer good, or memory ran out. */
static int conn_identity(struct conn *c, enum tls_reason *why)
{
    WOLFSSL *ssl = c->cli.ssl;
    const char *sni = wolfSSL_get_servername(ssl, WOLFSSL_SNI_HOST_NAME);
    struct mtlslb_identity id;
    const uint8_t *der;
    size_t len;
    int rc;

    *why = R_BAD_CERT;
    rc = sni ? conn_name(&c->sni, sni) : 0;
    if (rc == 0)
        rc = conn_peer_der(c, &der, &len, why);
    if (rc == 0 && der) {
        c->has_cert = 1;
        *why = R_BAD_CERT;
        if (mtlslb_cert_identity(der, len, &id) < 0 || conn_name(&c->cn, id.cn) < 0)
            rc = -1;
    }
    if (rc == 0 && c->ls->cfg->mode == MTLSLB_MODE_HTTP) {
        *why = R_BAD_CERT;
        rc = http_client_headers(c, c->has_cert ? &id : NULL, der, len);
        obuf_fit(&c->xhdrs);
    }
    if (rc == 0 && conn_access(c, c->has_cert ? der : NULL, len) < 0) {
        *why = R_BAD_CERT;
        rc = -1;
    }
    free(c->tr.der);                /* its identity is decoded: the copy goes */
    c->tr.der = NULL;
    return rc;
}

static void conn_handshake_done(struct conn *c)
{
    struct mtlslb *S = c->S;
    const struct mtlslb_listener *l = c->ls->cfg;
    const char *why;
    char sni[520], cn[520];

    why = tls_resume_problem(&c->ls->tls, c->cli.ssl, &c->tr, c->has_cert);
    if (why) {
        conn_hs_fail(c, R_SESSION, why);
        return;
    }
    if (l->sni_strict && (!c->sni[0] || !tls_sni_find(&c->ls->tls, c->sni))) {
        /* The servername callback refuses these; a resumed session may
         * not pass through it. */
        conn_hs_fail(c, R_SNI, NULL);
        return;
    }
    if (c->denied && l->mode == MTLSLB_MODE_TCP) {
        /* access_denied where wolfSSL lets us (tls_alert_denied), else (a
         * resumed session, no certificate) a close; nothing is relayed */
        tls_alert_denied(c->cli.ssl, c->cli.pl.fd);
        conn_denied_log(c, l->allows, l->nallows, "");
        conn_hs_fail(c, R_DENIED, NULL);
        return;
    }
    c->established = 1;
    c->hs_sni = tls_ctx_of(&c->ls->tls, c->cli.ssl)->sni;
    log_msg(MTLSLB_LOG_DEBUG, "handshake ok %s listener=%s sni=%s cn=%s %s %s", c->peer,
            l->name, log_word(sni, sizeof sni, c->sni), log_word(cn, sizeof cn, c->cn),
            wolfSSL_get_version(c->cli.ssl), wolfSSL_get_cipher(c->cli.ssl));
    c->up = c->ls->up;
    if (l->mode == MTLSLB_MODE_HTTP) {
        c->http = 1;
        c->st = CONN_HTTP;
        c->tx.rq = HQ_HEAD;
        c->tx.rs = HS_NONE;
        /* The first request's head is due within timeout request of the
         * handshake (408 then, as haproxy's timeout http-request); later
         * ones from their first byte, idle meanwhile (timeout idle). */
        c->tx.start = c->tx.head_start = S->now;
        http_pump(c);
        return;
    }
    c->cli.body.kind = c->srv.body.kind = BK_TUNNEL;
    conn_connect(c);
}

static void conn_handshake(struct conn *c)
{
    struct mtlslb *S = c->S;
    int r, err;
    char detail[160], tmp[120];

    conn_spare_release(S);
    r = wolfSSL_accept(c->cli.ssl);
    if (r == WOLFSSL_SUCCESS) {
        enum tls_reason why = R_BAD_CERT;
        c->cli.rd.hold_ticket = 0;
        int id = conn_identity(c, &why);
        conn_spare_take(S);
        if (id < 0)
            conn_hs_fail(c, why, why == R_BAD_CERT ? "the client certificate does not decode"
                         : "resumed session");
        else
            conn_handshake_done(c);
        return;
    }
    conn_spare_take(S);
    err = wolfSSL_get_error(c->cli.ssl, r);
    if (err == WOLFSSL_ERROR_WANT_READ) {
        loop_events(S->loop, &c->cli.pl, POLLIN);
        return;
    }
    if (err == WOLFSSL_ERROR_WANT_WRITE) {
        loop_events(S->loop, &c->cli.pl, POLLOUT);
        return;
    }
    snprintf(detail, sizeof detail, "%s (%d)", tls_err_text(err, tmp, sizeof tmp), err);
    if (c->tr.chain_bad) {          /* tls_verify_cb: the chain was not the client's own */
        conn_hs_fail(c, R_UNKNOWN_CA, "the chain it sent does not lead to the ca");
    } else if (c->tr.int_bad) {
        conn_hs_fail(c, (enum tls_reason)c->tr.int_why, "an intermediate CA of the ca file");
    } else if (c->tr.no_sign) {
        conn_hs_fail(c, R_BAD_CERT, "its key usage does not allow signing: not a client "
                     "certificate");
    } else if (c->tr.denied) {      /* tls_verify_cb: allow lines */
        (void)conn_name(&c->cn, c->tr.denied_cn);
        conn_denied_log(c, c->ls->cfg->allows, c->ls->cfg->nallows, "");
        conn_hs_fail(c, R_DENIED, NULL);
    } else if (tls_sni_refused(&c->ls->tls, c->cli.ssl))
        conn_hs_fail(c, R_SNI, detail);
    else
        conn_hs_fail(c, tls_reason_of(&c->ls->tls, c->cli.ssl, err), detail);
}

static void http_timeout(struct conn *c)
{
    const struct http_tx *t = &c->tx;

    if (c->closing)
        conn_close(c, "idle timeout");
    else if (t->rq == HQ_HEAD && t->rs == HS_NONE && t->head_start)
        http_error(c, 408);                 /* head not complete in time */
    else if (t->rq == HQ_HEAD && t->rs == HS_NONE)
        conn_close(c, "keep-alive idle timeout");
    else if (t->rs == HS_HEAD && !t->resp_started && t->rq == HQ_DONE)
        http_error(c, 504);                 /* the server is silent */
    else if (t->rs == HS_HEAD && !t->resp_started && t->rq == HQ_BODY &&
             (c->srv.out.len || relay_pending(&c->cli) || c->srv.wpending))
        http_error(c, 504);     /* it stopped taking the body, and says nothing */
    else
        conn_close(c, "idle timeout");
    if (!c->dead)
        http_pump(c);
}

static void conn_timeout(struct conn *c)
{
    switch (c->st) {
    case CONN_HANDSHAKE:
        conn_hs_fail(c, R_TIMEOUT, NULL);
        break;
    case CONN_CONNECTING:
        conn_connect_failed(c, ETIMEDOUT);
        break;
    case CONN_SRV_TLS:
        conn_server_failed(c, "TLS: handshake timed out");
        break;
    case CONN_RELAY:
        conn_close(c, "idle timeout");
        break;
    case CONN_HTTP:
        http_timeout(c);
        break;
    case CONN_LINGER:
        conn_close(c, "done");
        break;
    }
}

static void conn_event(struct side *s, short revents)
{
    struct conn *c = s->conn;

    if (revents & (POLLIN | POLLHUP | POLLERR))
        s->rd.drained = 0;              /* POLLOUT alone brings nothing to read */
    if (c->dead)
        return;
    switch (c->st) {
    case CONN_HANDSHAKE:
        conn_handshake(c);
        break;
    case CONN_CONNECTING:
        if (s == &c->srv)
            conn_connect_event(c);
        break;
    case CONN_SRV_TLS:
        if (s == &c->srv)
            conn_srv_handshake(c);
        break;
    case CONN_RELAY:
        relay_pump(c);
        break;
    case CONN_HTTP:
        http_pump(c);
        break;
    case CONN_LINGER:
        if (s == &c->cli)
            conn_linger_read(c);
        break;
    }
}

/*
 * Descriptors held in reserve, so that running out shows at accept time,
 * where accepting pauses, and never halfway through a connection:
 * - next_fd is the server-side socket of the next client, so a connection
 *   holds both its descriptors from the moment it is accepted;
 * - spare_fd is released around each call into wolfSSL that may seed an RNG
 *   (wolfSSL_new, the handshake, reading the peer certificate): wolfSSL opens
 *   /dev/urandom for a moment then, and at the limit that fails, sometimes
 *   silently (the peer certificate then reads as absent).  Taking it back
 *   afterwards cannot fail: nothing else opened a descriptor in between.
 */
static void conn_spare_release(struct mtlslb *S)
{
#ifndef WOLFSSL_GETRANDOM           /* with it, wolfSSL seeds by getrandom(): no descriptor */
    if (S->spare_fd >= 0) {
        close(S->spare_fd);
        S->spare_fd = -1;
    }
#else
    (void)S;
#endif
}

static void conn_out_of_fds(struct mtlslb *S, int err);

/*
 * Reserved server-side sockets an http client did not use (its request went
 * over a pooled server connection) wait here for the next clients instead
 * of being closed: a socket() and a close() less per connection.
 */
static void conn_rsv_put(struct mtlslb *S, int fd)
{
    if (S->nrsv < sizeof S->rsv / sizeof S->rsv[0])
        S->rsv[S->nrsv++] = fd;
    else
        close(fd);
}

static int conn_rsv_take(struct mtlslb *S)
{
    return S->nrsv > 0 ? S->rsv[--S->nrsv] : fd_socket(AF_INET);
}

static int conn_spare_take(struct mtlslb *S)
{
    if (S->spare_fd < 0 && (S->spare_fd = socket(AF_INET, SOCK_STREAM, 0)) < 0) {
        conn_out_of_fds(S, errno);
        return -1;
    }
    return 0;
}

/*
 * Set up an accepted client, with the server-side socket held in reserve
 * for it (S->next_fd).  Returns NULL with errno set on failure.
 */
static struct conn *conn_new(struct mtlslb *S, struct lst *ls, int fd,
                             const struct sockaddr_storage *ss)
{
    struct conn *c = calloc(1, sizeof *c);

    if (!c)
        return NULL;
    c->S = S;
    c->ls = ls;
    c->gen = S->gen;
    c->start = S->now;
    c->cli.conn = c->srv.conn = c;
    c->sni = c->cn = conn_noname;
    c->cli.pl.kind = c->srv.pl.kind = PK_SIDE;
    c->cli.pl.slot = c->srv.pl.slot = -1;
    c->cli.pl.fd = c->cli.rd.fd = fd;
    c->srv.pl.fd = S->next_fd;
    S->next_fd = -1;
    conn_spare_release(S);
#ifdef SINGLE_THREADED
    /* One random generator per listener, shared by its connections (only a
     * single-threaded wolfSSL has wolfSSL_CTX_new_rng): none to seed and
     * self-test per connection (a getrandom() and a Hash_DRBG health test).
     * Made here, in the process that serves, never before a fork: workers
     * must not share a generator's state.  Failing, each SSL has its own. */
    if (!ls->tls.rng && wolfSSL_CTX_new_rng(ls->tls.def.ctx) == WOLFSSL_SUCCESS)
        ls->tls.rng = 1;
#endif
    c->cli.ssl = wolfSSL_new(ls->tls.def.ctx);
    conn_spare_take(S);
    if (!c->cli.ssl || wolfSSL_set_fd(c->cli.ssl, fd) != WOLFSSL_SUCCESS ||
        wolfSSL_set_app_data(c->cli.ssl, &c->tr) != WOLFSSL_SUCCESS ||
        tls_own_suites(c->cli.ssl, ls->cfg) < 0 ||
        loop_add(S->loop, &c->cli.pl, POLLIN) < 0) {
        int e = ENOMEM;
        if (c->cli.ssl)
            wolfSSL_free(c->cli.ssl);
        if (c->srv.pl.fd >= 0)
            close(c->srv.pl.fd);
        free(c);
        errno = e;
        return NULL;
    }
    wolfSSL_SetIOReadCtx(c->cli.ssl, &c->cli.rd);     /* tls_recv reads for it */
    wolfSSL_SetIOWriteCtx(c->cli.ssl, &c->cli.rd);    /* tls_send writes */
    c->cli.rd.hold_ticket = ls->cfg->mode == MTLSLB_MODE_HTTP;
    c->tr.tl = &ls->tls;
    c->caddr = *ss;
    addr_unmap(&c->caddr);
    addr_text((struct sockaddr *)&c->caddr, c->peer, sizeof c->peer);
#ifndef __linux__                   /* Linux: inherited from the listening socket */
    {
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    }
#endif
    c->tm.kind = TM_CONN;
    timer_set(S->loop, &c->tm, S->now + S->gen->cfg->global.tmo_handshake);
    c->next = S->conns;
    if (S->conns)
        S->conns->prev = c;
    S->conns = c;
    S->active++;
    S->gen->refs++;
    ls->active++;
    ls->total++;
    return c;
}

/* Turn listening sockets on or off in the poll set. */
static void conn_listen_events(struct mtlslb *S, short ev)
{
    size_t i, j;

    for (i = 0; i < S->gen->nls; i++)
        for (j = 0; j < S->gen->ls[i].nfds; j++)
            if (S->gen->ls[i].fds[j].pl.slot >= 0)
                loop_events(S->loop, &S->gen->ls[i].fds[j].pl, ev);
}

/* Resume accepting if nothing holds it back. */
static void conn_accepting(struct mtlslb *S)
{
    if (S->stopping)
        return;
    S->paused_full = S->active >= S->gen->cfg->global.max_conns;
    conn_listen_events(S, (S->paused_full || S->paused_fds) ? 0 : POLLIN);
}

/*
 * No file descriptor for a new connection: stop accepting for 100 ms at a
 * time (the clients wait in the listen queue) and warn at most once a minute.
 */
static void conn_out_of_fds(struct mtlslb *S, int err)
{
    while (S->nrsv > 0)                 /* room for the clients it holds */
        close(S->rsv[--S->nrsv]);
    if (err != EMFILE && err != ENFILE) {
        log_msg(MTLSLB_LOG_ERROR, "cannot open a descriptor: %s", strerror(err));
        err = EMFILE;
    }
    S->paused_fds = 1;
    conn_accepting(S);
    timer_set(S->loop, &S->accept_tm, S->now + 100);
    if (S->fd_warned && S->now - S->fd_warned_at < 60000) {
        S->fd_suppressed++;
        return;
    }
    log_msg(MTLSLB_LOG_WARN, "accept: %s: pausing accepts for 100 ms at a time while it lasts "
            "(%u connections open; warned at most once a minute, %lu pauses since the last)",
            strerror(err), S->active, S->fd_suppressed);
    S->fd_warned = 1;
    S->fd_warned_at = S->now;
    S->fd_suppressed = 0;
}

static void conn_accept(struct mtlslb *S, struct lst_fd *lf)
{
    int budget = 64;

    while (budget-- > 0) {
        struct sockaddr_storage ss;
        socklen_t sl = sizeof ss;
        int fd;

        if (S->active >= S->gen->cfg->global.max_conns) {
            conn_accepting(S);
            return;
        }
        if (conn_spare_take(S) < 0)
            return;
        if (S->next_fd < 0 && (S->next_fd = conn_rsv_take(S)) < 0) {
            conn_out_of_fds(S, errno);
            return;
        }
        fd = fd_accept(lf->pl.fd, (struct sockaddr *)&ss, &sl);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED)
                continue;
            if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
                conn_out_of_fds(S, errno);
            } else if (errno != EAGAIN && errno != EWOULDBLOCK) {
                log_msg(MTLSLB_LOG_WARN, "accept on %s: %s", lf->ls->cfg->name, strerror(errno));
            }
            return;
        }
        if (!conn_new(S, lf->ls, fd, &ss)) {
            int e = errno;
            close(fd);
            if (e == EMFILE || e == ENFILE) {
                conn_out_of_fds(S, e);
                return;
            }
            log_msg(MTLSLB_LOG_ERROR, "listener %s: cannot set up a connection: %s",
                    lf->ls->cfg->name, strerror(e));
        }
    }
    conn_spare_take(S);
}

/* ======================================================================
 * stats
 *
 * The counters the loop keeps: written to the log on SIGUSR1 and served
 * as JSON by the stats endpoint (GET /stats, GET /health), plain HTTP in
 * the same loop, meant for loopback.
 * ====================================================================== */

/*
 * ---- figures shared by workers (`workers N`) ----
 *
 * One anonymous shared mapping, made before the workers start.  Names (a
 * listener's, "backend/server@address") get their places from the first
 * process, which alone writes them (at start and before it passes SIGHUP
 * on), so workers only look them up.  Each worker writes its own column
 * after every round of its loop; a reader sums the columns.  Worker 0 alone
 * runs the health checks and writes the server states; the others take
 * them.  Readers may see a figure a round old, never a torn one on 64-bit
 * machines (on 32-bit ones a counter read mid-write is off for one read).
 * When a worker dies, the first process moves its totals to the column
 * SHM_GONE before starting it again, so sums never go back; a worker 0
 * started again takes the server states from the shared ones.
 */
#define SHM_GONE MTLSLB_MAX_WORKERS        /* the totals of workers that died */
#define SHM_LSTS 64
#define SHM_SRVS 512
#define SHM_NAME 160

struct shm_lst {
    uint64_t active, total, hs_fail[R_COUNT];
};

struct shm_srv {
    uint64_t active, total, fails, bytes_in, bytes_out;
};

struct shm_health {
    int valid, up;
    char last[120];
    time_t last_time;
    unsigned last_ms;
};

struct shm {
    unsigned nworkers;
    unsigned nlsts, nsrvs;
    pid_t pid[MTLSLB_MAX_WORKERS];
    unsigned reload_seq;            /* the first process's SIGHUPs, counted */
    unsigned reload_ok[MTLSLB_MAX_WORKERS];     /* the last a worker took up */
    uint64_t active[MTLSLB_MAX_WORKERS], conns[MTLSLB_MAX_WORKERS];
    char lst_name[SHM_LSTS][SHM_NAME];
    char srv_name[SHM_SRVS][SHM_NAME];
    struct shm_lst lst[SHM_LSTS][MTLSLB_MAX_WORKERS + 1];   /* [SHM_GONE]: see above */
    struct shm_srv srv[SHM_SRVS][MTLSLB_MAX_WORKERS + 1];
    struct shm_health health[SHM_SRVS];
};

static void shm_srv_key(char *out, const char *be, const struct mtlslb_server *s)
{
    snprintf(out, SHM_NAME, "%s/%s@%s", be, s->name, s->addr_text);
}

static int shm_find(volatile char (*names)[SHM_NAME], unsigned n, const char *key)
{
    unsigned i;

    for (i = 0; i < n; i++)
        if (strncmp((const char *)names[i], key, SHM_NAME) == 0)
            return (int)i;
    return -1;
}

/* The first process: give every name of a configuration a place. */
static void shm_assign(volatile struct shm *m, const struct mtlslb_config *cfg)
{
    char key[SHM_NAME];
    size_t i, j;

    for (i = 0; i < cfg->nlisteners; i++) {
        snprintf(key, sizeof key, "%s", cfg->listeners[i].name);
        if (shm_find(m->lst_name, m->nlsts, key) < 0 && m->nlsts < SHM_LSTS)
            memcpy((char *)m->lst_name[m->nlsts++], key, sizeof key);
    }
    for (i = 0; i < cfg->nbackends; i++)
        for (j = 0; j < cfg->backends[i].nservers; j++) {
            shm_srv_key(key, cfg->backends[i].name, &cfg->backends[i].servers[j]);
            if (shm_find(m->srv_name, m->nsrvs, key) < 0 && m->nsrvs < SHM_SRVS)
                memcpy((char *)m->srv_name[m->nsrvs++], key, sizeof key);
        }
}

/* A server's state as the checker (worker 0) published it. */
static void shm_health_take(struct up_server *s, volatile const struct shm_health *h)
{
    s->up = h->up;
    memcpy(s->hc.last, (const char *)h->last, sizeof s->hc.last);
    s->hc.last[sizeof s->hc.last - 1] = 0;
    s->hc.last_time = h->last_time;
    s->hc.last_ms = h->last_ms;
}

/* The first process, worker w dead: its totals go to the column SHM_GONE
 * and its own column starts again from nothing. */
static void shm_retire(volatile struct shm *m, unsigned w)
{
    unsigned i, k;

    for (i = 0; i < m->nlsts; i++) {
        volatile struct shm_lst *g = &m->lst[i][SHM_GONE], *x = &m->lst[i][w];
        g->total += x->total;
        for (k = 0; k < R_COUNT; k++)
            g->hs_fail[k] += x->hs_fail[k];
        memset((void *)x, 0, sizeof *x);
    }
    for (i = 0; i < m->nsrvs; i++) {
        volatile struct shm_srv *g = &m->srv[i][SHM_GONE], *x = &m->srv[i][w];
        g->total += x->total;
        g->fails += x->fails;
        g->bytes_in += x->bytes_in;
        g->bytes_out += x->bytes_out;
        memset((void *)x, 0, sizeof *x);
    }
    m->active[w] = 0;
    m->conns[w] = 0;
}

/* A worker: find the places of a generation's listeners and servers.
 * Worker 0, the checker, takes the shared server states: started again
 * after a crash it goes on from them, not from "up". */
static void shm_bind(struct mtlslb *S, struct gen *g)
{
    char key[SHM_NAME];
    size_t i, j;

    for (i = 0; i < g->nls; i++)
        g->ls[i].slot = S->shm ? shm_find(S->shm->lst_name, S->shm->nlsts, g->ls[i].cfg->name) : -1;
    for (i = 0; i < g->nups; i++)
        for (j = 0; j < g->ups[i].n; j++) {
            struct up_server *s = &g->ups[i].srv[j];
            volatile struct shm_health *h;
            shm_srv_key(key, s->be->name, s->cfg);
            s->slot = S->shm ? shm_find(S->shm->srv_name, S->shm->nsrvs, key) : -1;
            if (s->slot >= 0 && worker_index == 0 && s->be->check != MTLSLB_CHECK_NONE &&
                (h = &S->shm->health[s->slot])->valid)
                shm_health_take(s, h);
        }
}

/* After every round of the loop: this worker's figures out; the checker's
 * server states in (or, in worker 0, out). */
static void shm_publish(struct mtlslb *S)
{
    volatile struct shm *m = S->shm;
    unsigned w = worker_index;
    uint64_t conns = 0;
    size_t i, j, k;

    for (i = 0; i < S->gen->nls; i++) {
        const struct lst *l = &S->gen->ls[i];
        conns += l->total;
        if (l->slot < 0)
            continue;
        m->lst[l->slot][w].active = l->active;
        m->lst[l->slot][w].total = l->total;
        for (k = 0; k < R_COUNT; k++)
            m->lst[l->slot][w].hs_fail[k] = l->hs_fail[k];
    }
    m->active[w] = S->active;
    m->conns[w] = conns;
    for (i = 0; i < S->gen->nups; i++)
        for (j = 0; j < S->gen->ups[i].n; j++) {
            struct up_server *s = &S->gen->ups[i].srv[j];
            volatile struct shm_health *h;
            if (s->slot < 0)
                continue;
            m->srv[s->slot][w].active = s->active;
            m->srv[s->slot][w].total = s->total;
            m->srv[s->slot][w].fails = s->fails;
            m->srv[s->slot][w].bytes_in = s->bytes_in;
            m->srv[s->slot][w].bytes_out = s->bytes_out;
            if (s->be->check == MTLSLB_CHECK_NONE)
                continue;
            h = &m->health[s->slot];
            if (w == 0) {
                h->up = s->up;
                memcpy((char *)h->last, s->hc.last, sizeof h->last);
                h->last_time = s->hc.last_time;
                h->last_ms = s->hc.last_ms;
                h->valid = 1;
            } else if (h->valid) {
                shm_health_take(s, h);
            }
        }
}

/* A listener's figures: its own, or with workers the sum of theirs. */
static void stats_lst(struct mtlslb *S, const struct lst *l, struct shm_lst *f)
{
    unsigned w, k;

    f->active = l->active;
    f->total = l->total;
    memcpy(f->hs_fail, l->hs_fail, sizeof f->hs_fail);
    if (!S->shm || l->slot < 0)
        return;
    memset(f, 0, sizeof *f);
    for (w = 0; w <= S->shm->nworkers; w++) {
        volatile struct shm_lst *x = &S->shm->lst[l->slot][w < S->shm->nworkers ? w : SHM_GONE];
        f->active += x->active;
        f->total += x->total;
        for (k = 0; k < R_COUNT; k++)
            f->hs_fail[k] += x->hs_fail[k];
    }
}

static void stats_srv(struct mtlslb *S, const struct up_server *s, struct shm_srv *f)
{
    unsigned w;

    f->active = s->active;
    f->total = s->total;
    f->fails = s->fails;
    f->bytes_in = s->bytes_in;
    f->bytes_out = s->bytes_out;
    if (!S->shm || s->slot < 0)
        return;
    memset(f, 0, sizeof *f);
    for (w = 0; w <= S->shm->nworkers; w++) {
        volatile struct shm_srv *x = &S->shm->srv[s->slot][w < S->shm->nworkers ? w : SHM_GONE];
        f->active += x->active;
        f->total += x->total;
        f->fails += x->fails;
        f->bytes_in += x->bytes_in;
        f->bytes_out += x->bytes_out;
    }
}

static unsigned stats_active(struct mtlslb *S)
{
    uint64_t n = 0;
    unsigned w;

    if (!S->shm)
        return S->active;
    for (w = 0; w < S->shm->nworkers; w++)
        n += S->shm->active[w];
    return (unsigned)n;
}

static void stats_log(struct mtlslb *S)
{
    size_t i, j;
    char fails[512], when[32];
    enum mtlslb_level level = log_level;

    /* Asked for by the signal: written at info whatever log-level says. */
    if (log_level < MTLSLB_LOG_INFO)
        log_level = MTLSLB_LOG_INFO;
    if (S->shm)
        shm_publish(S);
    for (i = 0; i < S->gen->nls; i++) {
        struct lst *l = &S->gen->ls[i];
        struct shm_lst f;
        size_t off = 0;
        stats_lst(S, l, &f);
        fails[0] = 0;
        for (j = 0; j < R_COUNT; j++)
            if (f.hs_fail[j] && off < sizeof fails)
                off += (size_t)snprintf(fails + off, sizeof fails - off, " \"%s\"=%llu",
                                        tls_reason_names[j], (unsigned long long)f.hs_fail[j]);
        log_msg(MTLSLB_LOG_INFO, "stats listener=%s active=%llu total=%llu handshake_failures:%s",
                l->cfg->name, (unsigned long long)f.active, (unsigned long long)f.total,
                fails[0] ? fails : " none");
    }
    for (i = 0; i < S->gen->nups; i++)
        for (j = 0; j < S->gen->ups[i].n; j++) {
            struct up_server *s = &S->gen->ups[i].srv[j];
            struct shm_srv f;
            stats_srv(S, s, &f);
            fmt_iso(s->hc.last_time, when, sizeof when);
            log_msg(MTLSLB_LOG_INFO, "stats backend=%s server=%s state=%s active=%llu requests=%llu "
                    "total=%llu connect_failures=%llu bytes_in=%llu bytes_out=%llu check=\"%s\" "
                    "check_time=%s", s->be->name, s->cfg->name, s->up ? "up" : "down",
                    (unsigned long long)f.active, (unsigned long long)f.total,
                    (unsigned long long)f.total,
                    (unsigned long long)f.fails,
                    (unsigned long long)f.bytes_in, (unsigned long long)f.bytes_out,
                    s->be->check == MTLSLB_CHECK_NONE ? "none" :
                    s->hc.last_time ? s->hc.last : "pending", when);
        }
    log_level = level;
}

/* ---- the stats endpoint: GET /stats, GET /health, plain HTTP ---- */

#define STATS_MAX_CONNS 16

struct stats_conn {
    struct pollable pl;
    struct timer tm;
    char in[2048];
    size_t in_len;
    struct obuf out;
    struct stats_conn *next, *prev;
};

static int json_str(struct obuf *o, const char *s)
{
    int rc = obuf_add(o, "\"", 1);

    for (; *s; s++) {
        char e[8];
        if (*s == '"' || *s == '\\') {
            e[0] = '\\';
            e[1] = *s;
            rc |= obuf_add(o, e, 2);
        } else if ((unsigned char)*s < 0x20) {
            snprintf(e, sizeof e, "\\u%04x", (unsigned char)*s);
            rc |= obuf_add(o, e, 6);
        } else {
            rc |= obuf_add(o, s, 1);
        }
    }
    return rc | obuf_add(o, "\"", 1);
}

static int json_fmt(struct obuf *o, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;

static int json_fmt(struct obuf *o, const char *fmt, ...)
{
    char buf[256];
    va_list ap;
    int n;

    va_start(ap, fmt);
    n = vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof buf)
        return -1;
    return obuf_add(o, buf, (size_t)n);
}

/* The figures as one JSON object (SPEC 8). */
static int stats_json(struct mtlslb *S, struct obuf *o)
{
    size_t i, j;
    int rc;

    if (S->shm)
        shm_publish(S);
    rc = json_fmt(o, "{\"version\":\"%s\",\"wolfssl\":\"%s\",\"pid\":%ld,\"uptime_s\":%llu,"
                  "\"active\":%u,", MTLSLB_VERSION, wolfSSL_lib_version(), (long)getpid(),
                  (unsigned long long)((S->now - S->started) / 1000), stats_active(S));
    if (S->shm) {               /* each worker's share: pid, open, connections so far */
        rc |= obuf_str(o, "\"workers\":[");
        for (i = 0; i < S->shm->nworkers; i++)
            rc |= json_fmt(o, "%s{\"pid\":%ld,\"active\":%llu,\"connections\":%llu}", i ? "," : "",
                           (long)S->shm->pid[i], (unsigned long long)S->shm->active[i],
                           (unsigned long long)S->shm->conns[i]);
        rc |= obuf_str(o, "],");
    }
    rc |= obuf_str(o, "\"listeners\":[");
    for (i = 0; i < S->gen->nls; i++) {
        const struct lst *l = &S->gen->ls[i];
        struct shm_lst f;
        stats_lst(S, l, &f);
        rc |= obuf_str(o, i ? ",{\"name\":" : "{\"name\":") | json_str(o, l->cfg->name);
        rc |= json_fmt(o, ",\"mode\":\"%s\",\"active\":%llu,\"total\":%llu,\"handshake_failures\":{",
                       l->cfg->mode == MTLSLB_MODE_TCP ? "tcp" : "http",
                       (unsigned long long)f.active, (unsigned long long)f.total);
        for (j = 0; j < R_COUNT; j++)
            rc |= obuf_str(o, j ? "," : "") | json_str(o, tls_reason_names[j]) |
                  json_fmt(o, ":%llu", (unsigned long long)f.hs_fail[j]);
        rc |= obuf_str(o, "}}");
    }
    rc |= obuf_str(o, "],\"backends\":[");
    for (i = 0; i < S->gen->nups; i++) {
        const struct up_backend *b = &S->gen->ups[i];
        rc |= obuf_str(o, i ? ",{\"name\":" : "{\"name\":") | json_str(o, b->cfg->name);
        rc |= json_fmt(o, ",\"up\":%u,\"servers\":[", up_count_up(b));
        for (j = 0; j < b->n; j++) {
            const struct up_server *s = &b->srv[j];
            struct shm_srv f;
            char when[32];
            stats_srv(S, s, &f);
            rc |= obuf_str(o, j ? ",{\"name\":" : "{\"name\":") | json_str(o, s->cfg->name);
            rc |= obuf_str(o, ",\"address\":") | json_str(o, s->cfg->addr_text);
            rc |= json_fmt(o, ",\"state\":\"%s\",\"backup\":%s,\"tls\":%s,\"weight\":%u,"
                           "\"active\":%llu,\"requests\":%llu,\"total\":%llu,"
                           "\"connect_failures\":%llu,\"bytes_in\":%llu,\"bytes_out\":%llu,"
                           "\"check\":",
                           s->up ? "up" : "down", s->cfg->backup ? "true" : "false",
                           s->cfg->tls ? "true" : "false", s->cfg->weight,
                           (unsigned long long)f.active, (unsigned long long)f.total,
                           (unsigned long long)f.total,
                           (unsigned long long)f.fails, (unsigned long long)f.bytes_in,
                           (unsigned long long)f.bytes_out);
            if (b->cfg->check == MTLSLB_CHECK_NONE) {
                rc |= obuf_str(o, "null}");
                continue;
            }
            fmt_iso(s->hc.last_time, when, sizeof when);
            rc |= json_fmt(o, "{\"type\":\"%s\",\"last\":",
                           b->cfg->check == MTLSLB_CHECK_TCP ? "tcp" : "http");
            rc |= s->hc.last_time ? json_str(o, s->hc.last) : obuf_str(o, "null");
            rc |= s->hc.last_time ? json_fmt(o, ",\"time\":\"%s\",\"ms\":%u", when, s->hc.last_ms)
                                  : obuf_str(o, ",\"time\":null,\"ms\":null");
            rc |= json_fmt(o, ",\"rise\":%u,\"fall\":%u}}", b->cfg->rise, b->cfg->fall);
        }
        rc |= obuf_str(o, "]}");
    }
    return rc | obuf_str(o, "]}\n");
}

static void stats_close(struct mtlslb *S, struct stats_conn *sc)
{
    loop_del(S->loop, &sc->pl);
    timer_del(S->loop, &sc->tm);
    close(sc->pl.fd);
    if (sc->prev)
        sc->prev->next = sc->next;
    else
        S->stats_conns = sc->next;
    if (sc->next)
        sc->next->prev = sc->prev;
    S->nstats--;
    free(sc->out.p);
    free(sc);
}

static void stats_answer(struct mtlslb *S, struct stats_conn *sc)
{
    struct obuf body = { NULL, 0, 0, 0 };
    const char *status = "200 OK", *type = "application/json", *path = NULL;
    char head[200];
    int n, rc = 0, get = strncmp(sc->in, "GET /", 5) == 0, headreq = strncmp(sc->in, "HEAD /", 6) == 0;
    size_t pl = 0;

    /* GET or HEAD; the path up to a query string or the blank */
    if (get || headreq) {
        path = sc->in + (get ? 4 : 5);
        pl = strcspn(path, "? \r\n");
    }
    if (path && pl == 6 && memcmp(path, "/stats", 6) == 0) {
        rc = stats_json(S, &body);
    } else if (path && pl == 7 && memcmp(path, "/health", 7) == 0) {
        type = "text/plain";
        rc = obuf_str(&body, "ok\n");
    } else {
        status = "404 Not Found";
        type = "text/plain";
        rc = obuf_str(&body, "not found: GET /stats or GET /health\n");
    }
    n = snprintf(head, sizeof head, "HTTP/1.1 %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n"
                 "Connection: close\r\n\r\n", status, type, body.len);
    if (rc < 0 || n < 0 || obuf_add(&sc->out, head, (size_t)n) < 0 ||
        (!headreq && obuf_add(&sc->out, body.p ? body.p : "", body.len) < 0)) {
        free(body.p);
        stats_close(S, sc);
        return;
    }
    free(body.p);
    loop_events(S->loop, &sc->pl, POLLOUT);
}

static void stats_event(struct mtlslb *S, struct stats_conn *sc)
{
    ssize_t n;

    if (sc->out.len == 0) {
        n = recv(sc->pl.fd, sc->in + sc->in_len, sizeof sc->in - 1 - sc->in_len, 0);
        if (n <= 0) {
            if (n == 0 || (errno != EAGAIN && errno != EINTR))
                stats_close(S, sc);
            return;
        }
        sc->in_len += (size_t)n;
        sc->in[sc->in_len] = 0;
        if (strstr(sc->in, "\r\n\r\n") || strstr(sc->in, "\n\n") ||
            sc->in_len == sizeof sc->in - 1)
            stats_answer(S, sc);
        return;
    }
    n = send(sc->pl.fd, sc->out.p + sc->out.off, sc->out.len - sc->out.off, MSG_NOSIGNAL);
    if (n < 0 && (errno == EAGAIN || errno == EINTR))
        return;
    if (n > 0)
        sc->out.off += (size_t)n;
    if (n < 0 || sc->out.off == sc->out.len)
        stats_close(S, sc);
}

/* Room for one more stats connection.  At the limit, those whose request
 * has come are answered at once (a burst of monitors); if that frees
 * nothing, the oldest one still waiting for its request goes (else the
 * oldest), so clients that connect and send nothing cannot lock a monitor
 * out of GET /health. */
static void stats_make_room(struct mtlslb *S)
{
    struct stats_conn *sc, *next, *oldest = NULL, *silent = NULL;

    for (sc = S->stats_conns; sc && S->nstats >= STATS_MAX_CONNS; sc = next) {
        unsigned n = S->nstats;
        next = sc->next;
        stats_event(S, sc);                 /* reads; a whole request is answered */
        if (S->nstats == n && sc->out.len)
            stats_event(S, sc);             /* and sent (closed when done) */
    }
    if (S->nstats < STATS_MAX_CONNS)
        return;
    for (sc = S->stats_conns; sc; sc = sc->next) {     /* newest first */
        oldest = sc;
        if (sc->out.len == 0)
            silent = sc;
    }
    stats_close(S, silent ? silent : oldest);
}

static void stats_accept(struct mtlslb *S)
{
    int fd;

    while ((fd = accept(S->stats_pl.fd, NULL, NULL)) >= 0) {
        struct stats_conn *sc;
        stats_make_room(S);
        if (fd_nonblock(fd) < 0 || !(sc = calloc(1, sizeof *sc))) {
            close(fd);
            continue;
        }
        sc->pl.fd = fd;
        sc->pl.kind = PK_STATS;
        sc->pl.slot = -1;
        sc->tm.kind = TM_STATS;
        if (loop_add(S->loop, &sc->pl, POLLIN) < 0) {
            close(fd);
            free(sc);
            continue;
        }
        timer_set(S->loop, &sc->tm, S->now + 5000);
        sc->next = S->stats_conns;
        if (sc->next)
            sc->next->prev = sc;
        S->stats_conns = sc;
        S->nstats++;
    }
}

/* ======================================================================
 * event loop
 *
 * poll() over a flat pollfd array.  Every pollable object keeps its slot
 * index, so changing interest is O(1); removal moves another slot into the
 * hole.  Timers live in a binary min-heap, so the next deadline is its root
 * and idle connections cost nothing per iteration.  Closing is deferred: a
 * connection closed during dispatch is freed after the iteration.
 *
 * poll() costs the kernel every descriptor it is given, ready or not, and
 * more when it sleeps: it hooks itself onto each one's wait queue, then
 * unhooks (here a look at 2,000 idle descriptors with timeout 0 takes
 * 0.19 ms, a wait on them several times that).  A loop that waits on all
 * of them every time, as this one did, spent 81-96 % of its CPU in poll()
 * with 1,000 idle mTLS clients open and 1 or 4 busy ones: those got 750
 * to 5,700 requests/s, against 5,000 to 30,000 with no idle client (one
 * core here); now they get about what they get with none.  So the array
 * is kept in two parts: hot slots [0, nhot) had an event or a change of
 * interest within LOOP_COLD_MS; the cold ones [nhot, n) have been quiet
 * since.  While the cold part is at least as large as the hot one (and
 * LOOP_SPLIT_MIN slots: a wait with a short timeout arms a timer, which
 * costs more than a few cold slots would), the loop waits on the hot part
 * alone, and looks at the whole array (timeout 0) once per period:
 * LOOP_SCAN_SHARE times what the last look took, from LOOP_SCAN_MIN_US to
 * LOOP_SCAN_MAX_US, so looking costs about 1/16 of a busy loop's time
 * whatever the machine and the number of idle clients.  When the hot part
 * stayed quiet through its wait and the look finds nothing either, the
 * loop sleeps on the whole array, as it always does with few cold slots.
 * So an idle client that speaks while others keep the loop busy waits up
 * to one period (1.5 ms with 1,000 idle http clients here, 3 ms with 1,000
 * tcp ones, whose server sides count too), and not at all when the loop
 * has time to sleep.  A cold slot with an event turns hot; a hot one is
 * cooled after each whole poll once it is LOOP_COLD_MS old.
 * ====================================================================== */

#define LOOP_COLD_MS 500
#define LOOP_SPLIT_MIN 64           /* fewer cold slots cost less than a wait's timer */
#define LOOP_SCAN_SHARE 16          /* a look at every slot: 1/16 of the time, */
#define LOOP_SCAN_MIN_US 1000       /* at most every 1 ms, */
#define LOOP_SCAN_MAX_US 20000      /* at least every 20 ms */

struct loop {
    struct pollfd *pfd;
    struct pollable **own;
    uint32_t *seen;                 /* a slot's last event or interest, ms (wraps) */
    size_t n, nhot, cap;
    uint64_t scan_at, scan_every;   /* the last look at the cold part; its period, us */
    int hot_empty;                  /* the last poll of the hot part found nothing */
    uint32_t now;                   /* S->now, truncated */
    struct timer **heap;
    size_t nheap, capheap;
};

static void loop_move(struct loop *L, size_t from, size_t to)
{
    L->pfd[to] = L->pfd[from];
    L->own[to] = L->own[from];
    L->seen[to] = L->seen[from];
    L->own[to]->slot = (int)to;
}

static void loop_swap(struct loop *L, size_t a, size_t b)
{
    struct pollfd f = L->pfd[a];
    struct pollable *o = L->own[a];
    uint32_t t = L->seen[a];

    loop_move(L, b, a);
    L->pfd[b] = f;
    L->own[b] = o;
    L->seen[b] = t;
    o->slot = (int)b;
}

/* A new slot is hot: it goes at nhot, the first cold one moving to the end. */
static int loop_add(struct loop *L, struct pollable *p, short events)
{
    if (L->n == L->cap) {
        size_t nc = L->cap ? L->cap * 2 : 64;
        struct pollfd *np = realloc(L->pfd, nc * sizeof *np);
        struct pollable **no;
        uint32_t *ns;
        if (!np)
            return -1;
        L->pfd = np;
        if (!(no = realloc(L->own, nc * sizeof *no)))
            return -1;
        L->own = no;
        if (!(ns = realloc(L->seen, nc * sizeof *ns)))
            return -1;
        L->seen = ns;
        L->cap = nc;
    }
    if (L->nhot < L->n)
        loop_move(L, L->nhot, L->n);
    L->n++;
    L->pfd[L->nhot].fd = events ? p->fd : -1;
    L->pfd[L->nhot].events = events;
    L->pfd[L->nhot].revents = 0;
    L->own[L->nhot] = p;
    L->seen[L->nhot] = L->now;
    p->slot = (int)L->nhot++;
    return 0;
}

/* A hot hole takes the last hot slot, whose place takes the last slot. */
static void loop_del(struct loop *L, struct pollable *p)
{
    size_t i = (size_t)p->slot;

    if (p->slot < 0)
        return;
    if (i < L->nhot) {
        if (i != --L->nhot)
            loop_move(L, L->nhot, i);
        i = L->nhot;
    }
    if (i != --L->n)
        loop_move(L, L->n, i);
    p->slot = -1;
}

/* A slot's event or change of interest: it is hot (at a new index if it was
 * cold).  A revents it carries is dropped: it may be from a poll() long ago,
 * and the next poll() of the hot part reports again what still holds. */
static size_t loop_warm(struct loop *L, size_t i)
{
    L->seen[i] = L->now;
    if (i >= L->nhot) {
        loop_swap(L, i, L->nhot);
        i = L->nhot++;
        L->pfd[i].revents = 0;
    }
    return i;
}

/* After a whole poll: hot slots quiet for LOOP_COLD_MS go cold. */
static void loop_cool(struct loop *L)
{
    size_t i = 0;

    while (i < L->nhot) {
        if (L->now - L->seen[i] >= LOOP_COLD_MS)
            loop_swap(L, i, --L->nhot);
        else
            i++;
    }
}

/* No interest = a negative fd, which poll() skips: POLLHUP and POLLERR are
 * reported even for events 0, and would spin the loop on a side that is
 * waiting for its peer. */
static void loop_events(struct loop *L, const struct pollable *p, short events)
{
    if (p->slot >= 0) {
        size_t i = loop_warm(L, (size_t)p->slot);
        L->pfd[i].fd = events ? p->fd : -1;
        L->pfd[i].events = events;
    }
}

static void heap_swap(struct loop *L, size_t a, size_t b)
{
    struct timer *t = L->heap[a];

    L->heap[a] = L->heap[b];
    L->heap[b] = t;
    L->heap[a]->idx = a + 1;
    L->heap[b]->idx = b + 1;
}

static void heap_fix(struct loop *L, size_t i)
{
    while (i > 0 && L->heap[(i - 1) / 2]->when > L->heap[i]->when) {
        heap_swap(L, i, (i - 1) / 2);
        i = (i - 1) / 2;
    }
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        if (l < L->nheap && L->heap[l]->when < L->heap[m]->when)
            m = l;
        if (r < L->nheap && L->heap[r]->when < L->heap[m]->when)
            m = r;
        if (m == i)
            return;
        heap_swap(L, i, m);
        i = m;
    }
}

static void timer_del(struct loop *L, struct timer *t)
{
    size_t i;

    if (!t->idx)
        return;
    i = t->idx - 1;
    t->idx = 0;
    L->nheap--;
    if (i != L->nheap) {
        L->heap[i] = L->heap[L->nheap];
        L->heap[i]->idx = i + 1;
        heap_fix(L, i);
    }
}

/* Never fails: the heap is grown ahead, one entry per possible timer. */
static void timer_set(struct loop *L, struct timer *t, uint64_t when)
{
    t->when = when;
    if (t->idx) {
        heap_fix(L, t->idx - 1);
        return;
    }
    L->heap[L->nheap] = t;
    t->idx = ++L->nheap;
    heap_fix(L, L->nheap - 1);
}

/* Room for every timer that can exist: one per connection (at most
 * max-conns) plus the few of the process, reserved once at start. */
static int loop_reserve_timers(struct loop *L, size_t n)
{
    struct timer **nh;

    if (n <= L->capheap)
        return 0;
    nh = realloc(L->heap, n * sizeof *nh);
    if (!nh)
        return -1;
    L->heap = nh;
    L->capheap = n;
    return 0;
}

static void main_reload(struct mtlslb *S);

/* The self-pipe: a handler only writes the signal's number, the loop reads
 * it like any other event. */
static int sig_pipe[2] = { -1, -1 };

static void loop_on_signal(int sig)
{
    int e = errno;
    unsigned char b = (unsigned char)sig;

    (void)!write(sig_pipe[1], &b, 1);
    errno = e;
}

static void loop_stop(struct mtlslb *S)
{
    struct conn *c, *next;
    size_t i, j;

    if (S->stopping)
        return;
    S->stopping = 1;
    for (i = 0; i < S->gen->nls; i++)
        for (j = 0; j < S->gen->ls[i].nfds; j++) {
            struct lst_fd *lf = &S->gen->ls[i].fds[j];
            loop_del(S->loop, &lf->pl);
            close(lf->pl.fd);
            lf->pl.fd = -1;
        }
    for (c = S->conns; c; c = next) {
        next = c->next;
        if (c->http && c->st == CONN_HTTP && c->tx.rq == HQ_HEAD && c->tx.rs == HS_NONE &&
            c->cli.buf.len == 0 && !c->closing)
            conn_close(c, "stopping");      /* idle keep-alive */
    }
    pool_clear(S);
    log_msg(MTLSLB_LOG_INFO, "stopping: listeners closed, %u connection%s open, grace %u ms",
            S->active, S->active == 1 ? "" : "s", S->gen->cfg->global.grace);
    timer_set(S->loop, &S->grace_tm, S->now + S->gen->cfg->global.grace);
}

static void loop_signals(struct mtlslb *S)
{
    unsigned char b[64];
    ssize_t n, i;

    while ((n = read(sig_pipe[0], b, sizeof b)) > 0)
        for (i = 0; i < n; i++) {
            if (b[i] == SIGTERM || b[i] == SIGINT)
                loop_stop(S);
            else if (b[i] == SIGHUP)
                main_reload(S);
            else if (b[i] == SIGUSR1)
                stats_log(S);
        }
}

static void loop_timer(struct mtlslb *S, struct timer *t)
{
    size_t i;

    switch (t->kind) {
    case TM_CONN:
        conn_timeout((struct conn *)(void *)((char *)t - offsetof(struct conn, tm)));
        break;
    case TM_ACCEPT:
        S->paused_fds = 0;
        conn_accepting(S);
        break;
    case TM_TICK:
        for (i = 0; i < S->gen->nls; i++)
            tls_crl_watch(&S->gen->ls[i].tls, time(NULL));
        timer_set(S->loop, t, S->now + 10000);
        break;
    case TM_GRACE:
        while (S->conns) {
            struct conn *c = S->conns;
            if (c->st == CONN_HANDSHAKE)        /* logged and counted as a timed-out one */
                conn_hs_fail(c, R_TIMEOUT, "stopped (grace period over)");
            else
                conn_close(c, "stopped (grace period over)");
        }
        break;
    case TM_POOL:
        pool_drop(S, (struct pconn *)(void *)((char *)t - offsetof(struct pconn, tm)));
        break;
    case TM_STATS:
        stats_close(S, (struct stats_conn *)(void *)((char *)t - offsetof(struct stats_conn, tm)));
        break;
    case TM_CHECK:
        hc_timer(S->loop, S->now,
                 (struct up_server *)(void *)((char *)t - offsetof(struct up_server, hc.tm)));
        break;
    }
}

static void loop_dispatch(struct mtlslb *S, struct pollable *p, short revents)
{
    switch (p->kind) {
    case PK_LISTEN:
        conn_accept(S, (struct lst_fd *)(void *)p);
        break;
    case PK_SIGNAL:
        loop_signals(S);
        break;
    case PK_SIDE:
        conn_event((struct side *)(void *)p, revents);
        break;
    case PK_STATS_LISTEN:
        stats_accept(S);
        break;
    case PK_STATS:
        stats_event(S, (struct stats_conn *)(void *)p);
        break;
    case PK_CHECK:
        hc_event(S->loop, S->now,
                 (struct up_server *)(void *)((char *)p - offsetof(struct up_server, hc.pl)));
        break;
    }
}

static int loop_run(struct mtlslb *S)
{
    struct loop *L = S->loop;

    for (;;) {
        int timeout = -1, n = 0, whole = 1;
        size_t i, cold = L->n - L->nhot;

        if (S->stopping && S->active == 0)
            return 0;
        if (L->nheap) {
            uint64_t when = L->heap[0]->when;
            S->now = now_ms();
            timeout = when <= S->now ? 0 : when - S->now > 60000 ? 60000 : (int)(when - S->now);
        }
        if (L->nhot > 0 && cold >= L->nhot && cold >= LOOP_SPLIT_MIN) {
            uint64_t t0 = now_us(), t1;
            if (t0 - L->scan_at < L->scan_every) {
                /* the hot part, until the period ends (rounded up to 1 ms) */
                int t = (int)((L->scan_every - (t0 - L->scan_at) + 999) / 1000);
                if (timeout >= 0 && timeout < t)
                    t = timeout;
                n = poll(L->pfd, (nfds_t)L->nhot, t);
                whole = 0;
                L->hot_empty = n == 0;
            } else {
                n = poll(L->pfd, (nfds_t)L->n, 0);     /* the look, timed */
                t1 = now_us();
                L->scan_at = t1;
                L->scan_every = (t1 - t0) * LOOP_SCAN_SHARE;
                if (L->scan_every < LOOP_SCAN_MIN_US)
                    L->scan_every = LOOP_SCAN_MIN_US;
                if (L->scan_every > LOOP_SCAN_MAX_US)
                    L->scan_every = LOOP_SCAN_MAX_US;
                if (n == 0 && L->hot_empty && timeout != 0)   /* all quiet: sleep */
                    n = poll(L->pfd, (nfds_t)L->n, timeout);
                L->hot_empty = 0;
            }
        } else {
            n = poll(L->pfd, (nfds_t)L->n, timeout);
        }
        if (n < 0 && errno != EINTR) {
            log_msg(MTLSLB_LOG_ERROR, "poll: %s", strerror(errno));
            return 2;
        }
        S->now = now_ms();
        L->now = (uint32_t)S->now;
        for (i = 0; n > 0 && i < (whole ? L->n : L->nhot); i++) {
            short re = L->pfd[i].revents;
            if (!re)
                continue;
            L->pfd[i].revents = 0;
            n--;
            loop_dispatch(S, L->own[loop_warm(L, i)], re);  /* what took i was scanned */
        }
        if (whole)
            loop_cool(L);
        while (L->nheap && L->heap[0]->when <= S->now) {
            struct timer *t = L->heap[0];
            timer_del(L, t);
            loop_timer(S, t);
        }
        while (S->dead) {
            struct conn *c = S->dead;
            S->dead = c->next;
            conn_free(c);
        }
        if (S->shm)
            shm_publish(S);
    }
}

/* ======================================================================
 * main & signals
 * ====================================================================== */

static void main_report(void *arg, const char *msg)
{
    (void)arg;
    fprintf(stderr, "%s\n", msg);
}

/* A listening socket for an address; -1 with errno set. */
static int main_bind(const struct mtlslb_bind *b)
{
    int fd, one = 1, e;

    fd = socket(b->addr.ss_family, SOCK_STREAM, 0);
    if (fd < 0)
        return -1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);    /* Linux: clients inherit it */
#ifdef SO_REUSEPORT
    if (bind_reuseport && setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) < 0) {
        e = errno;
        close(fd);
        errno = e;
        return -1;
    }
#endif
    if (b->addr.ss_family == AF_INET6)
        setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
    if (fd_nonblock(fd) < 0 || bind(fd, (const struct sockaddr *)&b->addr, b->addrlen) < 0 ||
        listen(fd, 511) < 0) {
        e = errno;
        close(fd);
        errno = e;
        return -1;
    }
    return fd;
}

/* main_bind, and the error said: "listener NAME: cannot bind ADDR: why", or
 * "stats: ..." for listener NULL.  errno is kept. */
static int main_bind_said(const struct mtlslb_bind *b, const char *listener)
{
    int fd = main_bind(b), e = errno;

    if (fd < 0) {
        log_msg(MTLSLB_LOG_ERROR, "%s%s: cannot bind %s: %s", listener ? "listener " : "stats",
                listener ? listener : "", b->text, strerror(e));
        errno = e;
    }
    return fd;
}

/* ---- generations: build, listen, swap (start-up and SIGHUP) ---- */

static void gen_free(struct loop *L, struct gen *g)
{
    size_t i, j;

    if (!g)
        return;
    for (i = 0; i < g->nls; i++) {
        tls_listener_free(&g->ls[i].tls);
        for (j = 0; j < g->ls[i].nfds; j++)
            if (g->ls[i].fds[j].pl.fd >= 0) {
                loop_del(L, &g->ls[i].fds[j].pl);
                close(g->ls[i].fds[j].pl.fd);
            }
        free(g->ls[i].fds);
    }
    free(g->ls);
    for (i = 0; i < g->nups; i++) {
        for (j = 0; j < g->ups[i].n; j++) {
            struct up_server *s = &g->ups[i].srv[j];
            if (s->hc.pl.fd >= 0)
                hc_close(L, s);
            timer_del(L, &s->hc.tm);
            if (s->tls_ctx)
                wolfSSL_CTX_free(s->tls_ctx);
        }
        free(g->ups[i].srv);
    }
    free(g->ups);
    mtlslb_config_free(g->cfg);
    free(g);
}

/* Parse a configuration and load every file it names, into a generation
 * that nothing uses yet.  NULL after reporting the errors. */
static struct gen *gen_build(const char *file, mtlslb_report_fn *report, void *arg)
{
    struct gen *g = calloc(1, sizeof *g);
    struct report r;
    size_t i, j;

    if (!g) {
        report(arg, "out of memory");
        return NULL;
    }
    if (mtlslb_config_parse(file, &g->cfg, report, arg) != 0) {
        free(g);
        return NULL;
    }
    memset(&r, 0, sizeof r);
    r.fn = report;
    r.arg = arg;
    r.file = g->cfg->file;
    g->nls = g->cfg->nlisteners;
    g->nups = g->cfg->nbackends;
    g->ls = calloc(g->nls, sizeof *g->ls);
    g->ups = calloc(g->nups, sizeof *g->ups);
    if (!g->ls || !g->ups) {
        report_at(&r, 0, "out of memory");
        gen_free(NULL, g);
        return NULL;
    }
    for (i = 0; i < g->nups; i++) {
        if (up_init(&g->ups[i], &g->cfg->backends[i]) < 0) {
            report_at(&r, 0, "out of memory");
            continue;
        }
        for (j = 0; j < g->ups[i].n; j++)
            up_tls_build(&r, &g->ups[i].srv[j]);
    }
    for (i = 0; i < g->nls; i++) {
        struct lst *l = &g->ls[i];
        l->cfg = &g->cfg->listeners[i];
        l->up = &g->ups[l->cfg->backend];
        tls_listener_build(&l->tls, l->cfg, &r);
        l->fds = calloc(l->cfg->nbinds, sizeof *l->fds);
        if (!l->fds) {
            report_at(&r, l->cfg->line, "out of memory");
            continue;
        }
        l->nfds = l->cfg->nbinds;
        for (j = 0; j < l->nfds; j++) {
            l->fds[j].pl.kind = PK_LISTEN;
            l->fds[j].pl.fd = -1;
            l->fds[j].pl.slot = -1;
            l->fds[j].ls = l;
        }
    }
    if (r.errors) {
        gen_free(NULL, g);
        return NULL;
    }
    return g;
}

/* A listening socket of the running generation with this address. */
static struct lst_fd *gen_find_bind(struct gen *old, const struct mtlslb_bind *b)
{
    size_t i, j;

    for (i = 0; old && i < old->nls; i++)
        for (j = 0; j < old->ls[i].nfds; j++) {
            const struct mtlslb_bind *ob = &old->ls[i].cfg->binds[j];
            if (old->ls[i].fds[j].pl.fd >= 0 && ob->addrlen == b->addrlen &&
                memcmp(&ob->addr, &b->addr, b->addrlen) == 0)
                return &old->ls[i].fds[j];
        }
    return NULL;
}

/* Open the sockets a new generation needs and the old one does not have.
 * On failure everything opened here is closed again. */
static int gen_open(struct gen *g, struct gen *old)
{
    size_t i, j;

    for (i = 0; i < g->nls; i++)
        for (j = 0; j < g->ls[i].nfds; j++) {
            const struct mtlslb_bind *b = &g->ls[i].cfg->binds[j];
            struct lst_fd *lf = &g->ls[i].fds[j];
            if (gen_find_bind(old, b))
                continue;                   /* kept: no refused connection */
            if ((lf->pl.fd = main_bind_said(b, g->ls[i].cfg->name)) < 0) {
                int e = errno;
                for (i = 0; i < g->nls; i++)
                    for (j = 0; j < g->ls[i].nfds; j++)
                        if (g->ls[i].fds[j].pl.fd >= 0) {
                            close(g->ls[i].fds[j].pl.fd);
                            g->ls[i].fds[j].pl.fd = -1;
                        }
                errno = e;
                return -1;
            }
            log_msg(MTLSLB_LOG_INFO, "listener %s: listening on %s (%s mode, backend %s)",
                    g->ls[i].cfg->name, b->text,
                    g->ls[i].cfg->mode == MTLSLB_MODE_TCP ? "tcp" : "http", g->ls[i].up->cfg->name);
        }
    return 0;
}

/* Put the new generation's sockets in the poll set, taking over the old
 * one's where the address is the same; close the old ones left over. */
static void gen_activate(struct mtlslb *S, struct gen *g, struct gen *old)
{
    size_t i, j;

    for (i = 0; i < g->nls; i++)
        for (j = 0; j < g->ls[i].nfds; j++) {
            struct lst_fd *lf = &g->ls[i].fds[j], *from = gen_find_bind(old, &g->ls[i].cfg->binds[j]);
            if (from) {
                loop_del(S->loop, &from->pl);
                lf->pl.fd = from->pl.fd;
                from->pl.fd = -1;
            }
            if (lf->pl.fd >= 0 && loop_add(S->loop, &lf->pl, POLLIN) < 0)
                log_msg(MTLSLB_LOG_ERROR, "listener %s: out of memory", g->ls[i].cfg->name);
        }
    for (i = 0; old && i < old->nls; i++)
        for (j = 0; j < old->ls[i].nfds; j++) {
            struct lst_fd *lf = &old->ls[i].fds[j];
            if (lf->pl.fd < 0)
                continue;
            log_msg(MTLSLB_LOG_INFO, "listener %s: no longer listening on %s", old->ls[i].cfg->name,
                    old->ls[i].cfg->binds[j].text);
            loop_del(S->loop, &lf->pl);
            close(lf->pl.fd);
            lf->pl.fd = -1;
        }
}

/* Counters and server states go on by name, so a reload neither resets the
 * figures nor makes servers flap. */
static void gen_carry(struct gen *g, const struct gen *old)
{
    size_t i, j, k, m;

    for (i = 0; i < g->nls; i++)
        for (j = 0; j < old->nls; j++)
            if (strcmp(g->ls[i].cfg->name, old->ls[j].cfg->name) == 0) {
                g->ls[i].total = old->ls[j].total;
                g->ls[i].active = old->ls[j].active;    /* they end here too */
                memcpy(g->ls[i].hs_fail, old->ls[j].hs_fail, sizeof g->ls[i].hs_fail);
            }
    for (i = 0; i < g->nups; i++)
        for (j = 0; j < old->nups; j++) {
            if (strcmp(g->ups[i].cfg->name, old->ups[j].cfg->name) != 0)
                continue;
            for (k = 0; k < g->ups[i].n; k++)
                for (m = 0; m < old->ups[j].n; m++) {
                    struct up_server *s = &g->ups[i].srv[k];
                    const struct up_server *o = &old->ups[j].srv[m];
                    if (!srv_same(s, o))
                        continue;
                    s->active = o->active;          /* they end here too */
                    s->total = o->total;
                    s->fails = o->fails;
                    s->bytes_in = o->bytes_in;
                    s->bytes_out = o->bytes_out;
                    if (g->ups[i].cfg->check != MTLSLB_CHECK_NONE &&
                        old->ups[j].cfg->check != MTLSLB_CHECK_NONE) {
                        s->up = o->up;
                        s->hc.oks = o->hc.oks;
                        s->hc.fails = o->hc.fails;
                        memcpy(s->hc.last, o->hc.last, sizeof s->hc.last);
                        s->hc.last_time = o->hc.last_time;
                        s->hc.last_ms = o->hc.last_ms;
                    }
                }
        }
}

/* The running generation's checks and idle server connections stop: the
 * new one has its own.  Its connections go on. */
static void gen_retire(struct mtlslb *S, struct gen *old)
{
    size_t i, j;

    for (i = 0; i < old->nups; i++)
        for (j = 0; j < old->ups[i].n; j++) {
            struct up_server *s = &old->ups[i].srv[j];
            hc_close(S->loop, s);
            timer_del(S->loop, &s->hc.tm);
            while (s->idle)
                pool_drop(S, s->idle);
        }
    if (old->refs == 0) {
        gen_free(S->loop, old);
        return;
    }
    old->next = S->retired;
    S->retired = old;
}

/* A connection of generation g ended. */
static void gen_unref(struct mtlslb *S, struct gen *g)
{
    struct gen **p;

    if (--g->refs || g == S->gen)
        return;
    for (p = &S->retired; *p; p = &(*p)->next)
        if (*p == g) {
            *p = g->next;
            break;
        }
    gen_free(S->loop, g);
}

static size_t gen_timers(const struct gen *g, unsigned active)
{
    size_t i, n = active + g->cfg->global.max_conns + 8 + STATS_MAX_CONNS;

    for (i = 0; i < g->nups; i++)
        n += g->ups[i].n * (MTLSLB_POOL_MAX + 1);   /* its pool and its check */
    return n;
}

/* Start what a generation runs: CRL watch, health checks. */
static void gen_start(struct mtlslb *S, struct gen *g)
{
    size_t i;

    log_level = g->cfg->global.log_level;
    log_to_syslog(g->cfg->global.log_syslog);
    for (i = 0; i < g->nls; i++)
        tls_crl_watch(&g->ls[i].tls, time(NULL));
    shm_bind(S, g);
    for (i = 0; i < g->nups && (!S->shm || worker_index == 0); i++)
        hc_schedule(S->loop, S->now, &g->ups[i]);   /* workers: worker 0 checks for all */
}

static int main_stats_bind(const struct mtlslb_bind *sb, int *fd)
{
    *fd = -1;
    if (!sb->addrlen)
        return 0;
    if ((*fd = main_bind_said(sb, NULL)) < 0)
        return -1;
#ifdef TCP_DEFER_ACCEPT
    {
        /* A connection is accepted once its request has come (or after
         * 2 s): clients that connect and send nothing wait in the kernel,
         * not in the 16 slots, and one dropped that connects again at once
         * does not push a monitor's connection out before its request is
         * read (stats_make_room). */
        int secs = 2;
        setsockopt(*fd, IPPROTO_TCP, TCP_DEFER_ACCEPT, &secs, sizeof secs);
    }
#endif
    return 0;
}

static int stats_same(const struct mtlslb_bind *a, const struct mtlslb_bind *b)
{
    return a->addrlen == b->addrlen && memcmp(&a->addr, &b->addr, a->addrlen) == 0;
}

static void main_stats_switch(struct mtlslb *S, const struct mtlslb_bind *sb, int fd)
{
    if (S->stats_pl.fd >= 0) {
        loop_del(S->loop, &S->stats_pl);
        close(S->stats_pl.fd);
    }
    S->stats_pl.fd = fd;
    if (fd >= 0 && loop_add(S->loop, &S->stats_pl, POLLIN) == 0)
        log_msg(MTLSLB_LOG_INFO, "stats: listening on %s (GET /stats, GET /health)", sb->text);
}

static void main_reload_report(void *arg, const char *msg)
{
    (void)arg;
    log_msg(MTLSLB_LOG_ERROR, "reload: %s", msg);
}

/*
 * SIGHUP: build the new configuration completely beside the running one
 * (every file loaded, every new address bound); on any error keep the
 * running one.  Then swap: sockets with unchanged addresses are handed
 * over, so no connection is refused; open connections finish on the
 * generation they started with.
 */
static void main_reload(struct mtlslb *S)
{
    struct gen *g, *old = S->gen;
    const struct mtlslb_bind *sb;
    int stats_fd = -1;

    if (S->stopping)
        return;
    log_msg(MTLSLB_LOG_INFO, "reload: reading %s", S->file);
    g = gen_build(S->file, main_reload_report, NULL);
    if (!g) {
        log_msg(MTLSLB_LOG_ERROR, "reload failed: the running configuration is unchanged");
        return;
    }
    sb = &g->cfg->global.stats;
    if (gen_open(g, old) < 0 ||
        (!stats_same(sb, &old->cfg->global.stats) && main_stats_bind(sb, &stats_fd) < 0) ||
        loop_reserve_timers(S->loop, gen_timers(g, S->active)) < 0) {
        if (stats_fd >= 0)
            close(stats_fd);
        gen_free(S->loop, g);
        log_msg(MTLSLB_LOG_ERROR, "reload failed: the running configuration is unchanged");
        return;
    }
    if (!stats_same(sb, &old->cfg->global.stats))
        main_stats_switch(S, sb, stats_fd);
    gen_carry(g, old);
    gen_activate(S, g, old);
    S->gen = g;
    gen_retire(S, old);
    gen_start(S, g);
    conn_accepting(S);
    if (S->shm)                     /* workers: tell the first process it took */
        S->shm->reload_ok[worker_index] = S->shm->reload_seq;
    log_msg(MTLSLB_LOG_INFO, "reload: configuration of %s in use (%zu listener%s, %zu backend%s); "
            "%u connection%s go on with the previous one", S->file, g->nls, g->nls == 1 ? "" : "s",
            g->nups, g->nups == 1 ? "" : "s", S->active, S->active == 1 ? "" : "s");
}

/* `user NAME`: after binding and loading keys, drop root for good. */
static int main_drop_privileges(const char *name)
{
    struct passwd *pw;
    gid_t gid;

    errno = 0;
    pw = getpwnam(name);
    if (!pw) {
        log_msg(MTLSLB_LOG_ERROR, "user %s: %s", name, errno ? strerror(errno) : "no such user");
        return -1;
    }
    gid = pw->pw_gid;
    if (setgroups(1, &gid) < 0 || setgid(pw->pw_gid) < 0 || setuid(pw->pw_uid) < 0) {
        log_msg(MTLSLB_LOG_ERROR, "user %s: cannot switch (%s); start as root to use 'user'",
                name, strerror(errno));
        return -1;
    }
    if (pw->pw_uid != 0 && (setuid(0) == 0 || geteuid() == 0)) {
        log_msg(MTLSLB_LOG_ERROR, "user %s: root could be regained; stopping", name);
        return -1;
    }
    log_msg(MTLSLB_LOG_INFO, "running as user %s (uid %ld, gid %ld)", name, (long)pw->pw_uid,
            (long)pw->pw_gid);
    return 0;
}

static int main_signals(struct loop *L, struct pollable *sp)
{
    static const int sigs[] = { SIGTERM, SIGINT, SIGHUP, SIGUSR1 };
    struct sigaction sa;
    size_t i;

    if (pipe(sig_pipe) < 0 || fd_nonblock(sig_pipe[0]) < 0 || fd_nonblock(sig_pipe[1]) < 0)
        return -1;
    memset(&sa, 0, sizeof sa);
    sigemptyset(&sa.sa_mask);
    sa.sa_handler = SIG_IGN;
    sigaction(SIGPIPE, &sa, NULL);
    sa.sa_handler = loop_on_signal;
    sa.sa_flags = SA_RESTART;
    for (i = 0; i < sizeof sigs / sizeof sigs[0]; i++)
        if (sigaction(sigs[i], &sa, NULL) < 0)
            return -1;
    sp->fd = sig_pipe[0];
    sp->kind = PK_SIGNAL;
    return loop_add(L, sp, POLLIN);
}

/*
 * ---- workers (`workers N`) ----
 *
 * With N > 1 the first process checks the configuration, makes the shared
 * figures (shm_*) and the ticket secret, starts N workers and from then on
 * only passes signals on: SIGHUP (after reading the configuration itself,
 * for the names of the shared figures), SIGTERM and SIGINT to every worker,
 * SIGUSR1 to worker 0, whose log line shows the sums.  A worker that dies is
 * started again (after 1 s if it died within 1 s of starting).  Each worker
 * is a whole mtlslb that binds every address itself with SO_REUSEPORT, so
 * the kernel spreads connections over them.  Start-up fails (exit 1) if any
 * worker cannot start.
 */
#define MASTER_NSIG 65
static volatile sig_atomic_t master_sig[MASTER_NSIG];

static void master_on_signal(int sig)
{
    if (sig > 0 && sig < MASTER_NSIG)
        master_sig[sig] = 1;
}

struct master {
    pid_t pid[MTLSLB_MAX_WORKERS];
    time_t born[MTLSLB_MAX_WORKERS];
    unsigned n;
    sigset_t oldmask;
    struct gen *pending;            /* read on the last SIGHUP; workers may refuse it */
};

/*
 * Which configuration does a worker started again get?  The one the
 * workers run: the last SIGHUP's if a worker took it up (reload_ok),
 * else the one before (the workers refused it: a key unreadable as
 * `user`, an address taken), as the first process reads files as root
 * and binds nothing.
 */
static void master_settle(struct master *M, volatile struct shm *m, struct gen **gp,
                          struct loop *L)
{
    unsigned w;

    if (!M->pending)
        return;
    for (w = 0; w < M->n; w++)
        if (M->pid[w] > 0 && m->reload_ok[w] == m->reload_seq)
            break;
    if (w < M->n) {
        gen_free(L, *gp);
        *gp = M->pending;
    } else {
        gen_free(L, M->pending);
    }
    M->pending = NULL;
}

/* Fork worker w.  In the child, returns 0 with worker_index set; in the
 * parent, 1 (or -1 if fork failed). */
static int master_fork(struct master *M, volatile struct shm *m, unsigned w)
{
    pid_t parent = getpid(), pid = fork();
    struct sigaction sa;
    int i;

    if (pid < 0)
        return -1;
    if (pid > 0) {
        M->pid[w] = pid;
        M->born[w] = time(NULL);
        m->pid[w] = pid;
        return 1;
    }
    worker_index = w;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = SIG_DFL;
    sigemptyset(&sa.sa_mask);
    for (i = 1; i < MASTER_NSIG; i++)
        if (i != SIGKILL && i != SIGSTOP)
            sigaction(i, &sa, NULL);
    sigprocmask(SIG_SETMASK, &M->oldmask, NULL);
#ifdef PR_SET_PDEATHSIG
    /* The first process gone (SIGKILL, a crash): stop as on SIGTERM, not
     * serve on as an orphan beside a new instance. */
    if (prctl(PR_SET_PDEATHSIG, SIGTERM) == 0 && getppid() != parent)
        kill(getpid(), SIGTERM);
#else
    (void)parent;
#endif
    return 0;
}

/*
 * Can every address be had?  Workers bind with SO_REUSEPORT, which lets a
 * second instance of the same user bind beside the first and take half its
 * clients; a probe without it fails where anything holds the address, so
 * a second instance stops here (exit 2), as a single process would.
 */
static int master_probe(const struct mtlslb_config *c)
{
    size_t i, j;

    for (i = 0; i <= c->nlisteners; i++) {
        const struct mtlslb_listener *l = i < c->nlisteners ? &c->listeners[i] : NULL;
        size_t n = l ? l->nbinds : c->global.stats.addrlen > 0;
        for (j = 0; j < n; j++) {
            int fd = main_bind_said(l ? &l->binds[j] : &c->global.stats, l ? l->name : NULL);
            if (fd < 0)
                return -1;
            close(fd);
        }
    }
    return 0;
}

static void master_tell(struct master *M, int sig, int only_first)
{
    unsigned w;

    for (w = 0; w < M->n; w++)
        if (M->pid[w] > 0 && (!only_first || w == 0))
            kill(M->pid[w], sig);
}

static unsigned master_alive(const struct master *M)
{
    unsigned w, n = 0;

    for (w = 0; w < M->n; w++)
        n += M->pid[w] > 0;
    return n;
}

/*
 * Run as the first process.  Returns in a worker (*ready_fd: where to say
 * "started"; 0) or, in the first process, when it is done (its exit
 * status, > 0 means failure; the caller adds 1000 to tell the two apart).
 */
static int master_run(struct mtlslb *S, struct gen **gp, int *ready_fd)
{
    static const int sigs[] = { SIGCHLD, SIGHUP, SIGTERM, SIGINT, SIGUSR1 };
    struct master M;
    volatile struct shm *m;
    struct sigaction sa;
    sigset_t block;
    int pfd[2], stopping = 0;
    unsigned w, ready = 0;
    char b;
    size_t i;

#ifndef SO_REUSEPORT
    log_msg(MTLSLB_LOG_ERROR, "workers: this system has no SO_REUSEPORT");
    return 1001;
#endif
    if (master_probe((*gp)->cfg) < 0)
        return 1002;
    memset(&M, 0, sizeof M);
    M.n = (*gp)->cfg->global.workers;
    m = mmap(NULL, sizeof *m, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    tk_shared = mmap(NULL, sizeof *tk_shared, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS,
                     -1, 0);
    tk_nworkers = M.n;
    if (m == MAP_FAILED || tk_shared == MAP_FAILED || tk_key_ready(time(NULL)) < 0 ||
        pipe(pfd) < 0) {
        log_msg(MTLSLB_LOG_ERROR, "workers: cannot start: %s", strerror(errno));
        return 1002;
    }
    m->nworkers = M.n;
    shm_assign(m, (*gp)->cfg);
    S->shm = m;
    bind_reuseport = 1;
    sigemptyset(&block);
    memset(&sa, 0, sizeof sa);
    sigemptyset(&sa.sa_mask);
    sa.sa_handler = master_on_signal;
    for (i = 0; i < sizeof sigs / sizeof sigs[0]; i++) {
        sigaddset(&block, sigs[i]);
        sigaction(sigs[i], &sa, NULL);
    }
    sa.sa_handler = SIG_IGN;
    sigaction(SIGPIPE, &sa, NULL);
    sigprocmask(SIG_BLOCK, &block, &M.oldmask);
    for (w = 0; w < M.n; w++) {
        int r = master_fork(&M, m, w);
        if (r == 0) {
            close(pfd[0]);
            *ready_fd = pfd[1];
            return 0;
        }
        if (r < 0) {
            log_msg(MTLSLB_LOG_ERROR, "workers: fork: %s", strerror(errno));
            break;
        }
    }
    close(pfd[1]);
    /* Every worker writes one byte once it serves; EOF before N bytes: one
     * could not start. */
    while (ready < M.n) {
        ssize_t k = read(pfd[0], &b, 1);
        if (k == 1)
            ready++;
        else if (k == 0 || errno != EINTR)
            break;
    }
    close(pfd[0]);
    if (ready < M.n) {
        log_msg(MTLSLB_LOG_ERROR, "workers: %u of %u started; stopping", ready, M.n);
        master_tell(&M, SIGTERM, 0);
        while (wait(NULL) > 0 || errno == EINTR)
            ;
        return 1002;                /* as a single process that cannot bind */
    }
    log_msg(MTLSLB_LOG_INFO, "mtlslb %s: %u workers started, pid %ld", MTLSLB_VERSION, M.n,
            (long)getpid());
    for (;;) {
        pid_t pid;
        int st;
        sigsuspend(&M.oldmask);
        if (master_sig[SIGTERM] || master_sig[SIGINT]) {
            master_sig[SIGTERM] = master_sig[SIGINT] = 0;
            if (!stopping)
                master_tell(&M, SIGTERM, 0);
            stopping = 1;
        }
        if (master_sig[SIGHUP]) {
            struct gen *g;
            master_sig[SIGHUP] = 0;
            master_settle(&M, m, gp, S->loop);
            if (!stopping && (g = gen_build(S->file, main_reload_report, NULL)) != NULL) {
                if (g->cfg->global.workers != M.n)
                    log_msg(MTLSLB_LOG_WARN, "reload: workers %u is for the next start; %u "
                            "workers go on", g->cfg->global.workers, M.n);
                shm_assign(m, g->cfg);      /* before the workers look the names up */
                M.pending = g;
            }
            if (!stopping) {
                m->reload_seq++;
                master_tell(&M, SIGHUP, 0);
            }
        }
        if (master_sig[SIGUSR1]) {
            master_sig[SIGUSR1] = 0;
            master_tell(&M, SIGUSR1, 1);
        }
        if (!master_sig[SIGCHLD])
            continue;
        master_sig[SIGCHLD] = 0;
        while ((pid = waitpid(-1, &st, WNOHANG)) > 0)
            for (w = 0; w < M.n; w++) {
                if (M.pid[w] != pid)
                    continue;
                M.pid[w] = 0;
                m->pid[w] = 0;
                if (stopping)
                    break;
                shm_retire(m, w);
                log_msg(MTLSLB_LOG_ERROR, "worker %u (pid %ld) %s %d; starting it again", w,
                        (long)pid, WIFSIGNALED(st) ? "killed by signal" : "exited with status",
                        WIFSIGNALED(st) ? WTERMSIG(st) : WEXITSTATUS(st));
                if (time(NULL) - M.born[w] < 1)
                    sleep(1);               /* a worker that cannot run: not in a tight loop */
                master_settle(&M, m, gp, S->loop);
                m->reload_ok[w] = m->reload_seq;    /* it starts with what the others run */
                if (master_fork(&M, m, w) == 0) {
                    *ready_fd = -1;
                    return 0;
                }
                break;
            }
        if (stopping && master_alive(&M) == 0) {
            log_msg(MTLSLB_LOG_INFO, "stopped (all workers)");
            master_settle(&M, m, gp, S->loop);
            return 1000;
        }
    }
}

static void usage(FILE *f)
{
    fprintf(f, "usage: mtlslb [-c FILE] [-t] [-V] [-h]\n"
               "  -c FILE  configuration file (default /etc/mtlslb.conf)\n"
               "  -t       check the configuration and every file it names, then exit\n"
               "  -V       print the version and exit\n"
               "  -h       print this help and exit\n");
}

int main(int argc, char **argv)
{
    const char *file = "/etc/mtlslb.conf";
    int check = 0, i, rc = 2, stats_fd = -1, ready_fd = -1;
    struct mtlslb S;
    struct loop L;
    struct pollable sigp;
    struct gen *g;

    /* getopt(): -tc FILE and -cFILE as well as -t -c FILE */
    while ((i = getopt(argc, argv, "c:tVh")) != -1) {
        switch (i) {
        case 'c':
            file = optarg;
            break;
        case 't':
            check = 1;
            break;
        case 'V':
            printf("mtlslb %s (wolfSSL %s)\n", MTLSLB_VERSION, wolfSSL_lib_version());
            return 0;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 1;
        }
    }
    if (optind < argc) {
        usage(stderr);
        return 1;
    }
    memset(&S, 0, sizeof S);
    memset(&L, 0, sizeof L);
    memset(&sigp, 0, sizeof sigp);
    S.loop = &L;
    S.file = file;
    S.spare_fd = S.next_fd = -1;
    S.stats_pl.fd = -1;
    S.stats_pl.slot = -1;
    S.stats_pl.kind = PK_STATS_LISTEN;
    S.accept_tm.kind = TM_ACCEPT;
    S.tick_tm.kind = TM_TICK;
    S.grace_tm.kind = TM_GRACE;
    if (wolfSSL_Init() != WOLFSSL_SUCCESS) {
        fprintf(stderr, "mtlslb: cannot initialise wolfSSL\n");
        return 2;
    }
    g = gen_build(file, main_report, NULL);
    if (!g)
        return 1;
    if (check) {
        printf("configuration OK\n");
        gen_free(&L, g);
        wolfSSL_Cleanup();
        return 0;
    }
    log_level = g->cfg->global.log_level;
    log_to_syslog(g->cfg->global.log_syslog);
    if (g->cfg->global.workers > 1) {
        rc = master_run(&S, &g, &ready_fd);
        if (rc >= 1000) {           /* the first process, done */
            gen_free(&L, g);
            tk_free();
            wolfSSL_Cleanup();
            return rc - 1000;
        }
        rc = 2;                     /* a worker: a start that fails is exit 2, as alone */
    }
    S.gen = g;
    S.now = S.started = now_ms();
    S.spare_fd = socket(AF_INET, SOCK_STREAM, 0);
    S.next_fd = fd_socket(AF_INET);
    if (S.spare_fd < 0 || S.next_fd < 0 || tk_key_ready(time(NULL)) < 0 ||
        loop_reserve_timers(&L, gen_timers(g, 0)) < 0 ||
        main_signals(&L, &sigp) < 0 || gen_open(g, NULL) < 0 ||
        main_stats_bind(&g->cfg->global.stats, &stats_fd) < 0) {
        log_msg(MTLSLB_LOG_ERROR, "cannot start: %s", strerror(errno));
    } else if (g->cfg->global.user && main_drop_privileges(g->cfg->global.user) < 0) {
        if (stats_fd >= 0)
            close(stats_fd);
    } else {
        main_stats_switch(&S, &g->cfg->global.stats, stats_fd);
        gen_activate(&S, g, NULL);
        gen_start(&S, g);
        timer_set(&L, &S.tick_tm, S.now + 10000);
        log_msg(MTLSLB_LOG_INFO, "mtlslb %s (wolfSSL %s) started, pid %ld", MTLSLB_VERSION,
                wolfSSL_lib_version(), (long)getpid());
        if (ready_fd >= 0) {        /* a worker: tell the first process */
            (void)!write(ready_fd, "1", 1);
            close(ready_fd);
            ready_fd = -1;
        }
        rc = loop_run(&S);
        if (rc == 0)
            log_msg(MTLSLB_LOG_INFO, "stopped");
    }
    while (S.stats_conns)
        stats_close(&S, S.stats_conns);
    if (S.stats_pl.fd >= 0) {
        loop_del(&L, &S.stats_pl);
        close(S.stats_pl.fd);
    }
    pool_clear(&S);
    if (S.spare_fd >= 0)
        close(S.spare_fd);
    if (S.next_fd >= 0)
        close(S.next_fd);
    while (S.nrsv > 0)
        close(S.rsv[--S.nrsv]);
    while (S.retired) {
        struct gen *r = S.retired;
        S.retired = r->next;
        gen_free(&L, r);
    }
    gen_free(&L, S.gen);
    free(L.pfd);
    free(L.own);
    free(L.seen);
    free(L.heap);
    if (sig_pipe[0] >= 0) {
        close(sig_pipe[0]);
        close(sig_pipe[1]);
    }
    tk_free();
    buf_spares_free();
    wolfSSL_Cleanup();
    return rc;
}
