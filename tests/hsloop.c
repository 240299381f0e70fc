/*
 * tests/hsloop.c - a ceiling for `make bench`: full and resumed mutual-TLS
 * handshakes between a wolfSSL client and a wolfSSL server in one process,
 * connected by memory buffers (wolfSSL_SetIORecv/wolfSSL_SetIOSend), no
 * sockets, no event loop, no HTTP.  What a server built on this wolfSSL
 * cannot beat per handshake.
 *
 * usage: hsloop PKI-DIR [--seconds S] [--tls 1.2|1.3]
 *
 * PKI-DIR holds tests/pki.sh files: server.crt server.key (the server),
 * ca.crt and ca.crl (verify required, CRL checked, as mtlslb does),
 * client.crt client.key (the client; it checks the server's name
 * "localhost").  The server's CPU time is taken with
 * CLOCK_THREAD_CPUTIME_ID around its calls only (wolfSSL_new, every
 * wolfSSL_accept step, wolfSSL_free); the client's work is not counted.
 * S seconds (default 2) of full handshakes, then S seconds where every
 * client resumes the session (ticket) of its previous handshake.
 *
 * Prints one line on stdout:
 *   full=N server_us_full=U total_us_full=U resumed=N of=N
 *   server_us_resumed=U total_us_resumed=U
 * total_us_* is client + server CPU (the process clock) per handshake;
 * "of" is how many handshakes the resumed phase made, "resumed" how many of
 * them wolfSSL reported as resumed.  Exit 1 on a failed handshake.
 *
 * Build: cc -std=c99 -O2 -Wall -Wextra -o hsloop tests/hsloop.c -lwolfssl
 *    or: cc -std=c99 -O2 -I$PREFIX/include -o hsloop tests/hsloop.c \
 *            $PREFIX/lib/libwolfssl.a -lm
 */
#define _POSIX_C_SOURCE 200809L

#include <wolfssl/options.h>
#include <wolfssl/ssl.h>

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define QSZ (256 * 1024)

struct q {                       /* one direction of the in-memory "wire" */
    unsigned char d[QSZ];
    size_t r, w;
};

static struct q c2s, s2c;
static int64_t server_ns;        /* server thread CPU, accumulated */

static int64_t clk(clockid_t id)
{
    struct timespec ts;
    clock_gettime(id, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static int io_recv(WOLFSSL *ssl, char *buf, int sz, void *ctx)
{
    struct q *q = ctx;
    size_t n = q->w - q->r;
    (void)ssl;
    if (n == 0)
        return WOLFSSL_CBIO_ERR_WANT_READ;
    if (n > (size_t)sz)
        n = (size_t)sz;
    memcpy(buf, q->d + q->r, n);
    q->r += n;
    if (q->r == q->w)
        q->r = q->w = 0;
    return (int)n;
}

static int io_send(WOLFSSL *ssl, char *buf, int sz, void *ctx)
{
    struct q *q = ctx;
    (void)ssl;
    if (q->r > 0 && q->r == q->w)
        q->r = q->w = 0;
    if ((size_t)sz > QSZ - q->w) {
        if (q->r > 0) {
            memmove(q->d, q->d + q->r, q->w - q->r);
            q->w -= q->r;
            q->r = 0;
        }
        if ((size_t)sz > QSZ - q->w)
            return WOLFSSL_CBIO_ERR_WANT_WRITE;
    }
    memcpy(q->d + q->w, buf, (size_t)sz);
    q->w += (size_t)sz;
    return sz;
}

static void die(const char *what)
{
    fprintf(stderr, "hsloop: %s\n", what);
    exit(1);
}

static void path(char *out, size_t n, const char *dir, const char *file)
{
    if ((size_t)snprintf(out, n, "%s/%s", dir, file) >= n)
        die("path too long");
}

static WOLFSSL_CTX *make_ctx(int server, const char *dir, const char *tls)
{
    char cert[4096], key[4096], ca[4096];
    WOLFSSL_METHOD *m;
    WOLFSSL_CTX *ctx;

    if (server)
        m = wolfSSLv23_server_method();
    else if (tls && strcmp(tls, "1.2") == 0)
        m = wolfTLSv1_2_client_method();
    else if (tls && strcmp(tls, "1.3") == 0)
        m = wolfTLSv1_3_client_method();
    else
        m = wolfSSLv23_client_method();
    ctx = m ? wolfSSL_CTX_new(m) : NULL;
    if (!ctx)
        die("wolfSSL_CTX_new failed");
    (void)wolfSSL_CTX_SetMinVersion(ctx, WOLFSSL_TLSV1_2);
    path(cert, sizeof cert, dir, server ? "server.crt" : "client.crt");
    path(key, sizeof key, dir, server ? "server.key" : "client.key");
    path(ca, sizeof ca, dir, "ca.crt");
    if (wolfSSL_CTX_use_certificate_chain_file(ctx, cert) != WOLFSSL_SUCCESS)
        die("cannot load a certificate");
    if (wolfSSL_CTX_use_PrivateKey_file(ctx, key, WOLFSSL_FILETYPE_PEM) != WOLFSSL_SUCCESS)
        die("cannot load a key");
    if (wolfSSL_CTX_load_verify_locations(ctx, ca, NULL) != WOLFSSL_SUCCESS)
        die("cannot load ca.crt");
    if (server) {
        wolfSSL_CTX_set_verify(ctx, WOLFSSL_VERIFY_PEER | WOLFSSL_VERIFY_FAIL_IF_NO_PEER_CERT,
                               NULL);
#ifdef HAVE_CRL
        {
            char crl[4096];
            path(crl, sizeof crl, dir, "ca.crl");
            if (wolfSSL_CTX_EnableCRL(ctx, WOLFSSL_CRL_CHECK) != WOLFSSL_SUCCESS ||
                wolfSSL_CTX_LoadCRLFile(ctx, crl, WOLFSSL_FILETYPE_PEM) != WOLFSSL_SUCCESS)
                die("cannot load ca.crl");
        }
#endif
    } else {
        wolfSSL_CTX_set_verify(ctx, WOLFSSL_VERIFY_PEER, NULL);
#ifdef HAVE_SESSION_TICKET
        (void)wolfSSL_CTX_UseSessionTicket(ctx);
#endif
    }
    wolfSSL_CTX_SetIORecv(ctx, io_recv);
    wolfSSL_CTX_SetIOSend(ctx, io_send);
    return ctx;
}

/* One handshake; returns 1 if it resumed.  *sess: in, the session to offer
 * (or NULL); out, the client's session after it (a TLS 1.3 ticket). */
static int handshake(WOLFSSL_CTX *cctx, WOLFSSL_CTX *sctx, WOLFSSL_SESSION **sess)
{
    WOLFSSL *c, *s;
    int cdone = 0, sdone = 0, i, resumed;
    int64_t t0;
    unsigned char b[64];

    c2s.r = c2s.w = s2c.r = s2c.w = 0;
    c = wolfSSL_new(cctx);
    if (!c)
        die("wolfSSL_new (client) failed");
    wolfSSL_SetIOReadCtx(c, &s2c);
    wolfSSL_SetIOWriteCtx(c, &c2s);
    (void)wolfSSL_check_domain_name(c, "localhost");
    if (*sess)
        (void)wolfSSL_set_session(c, *sess);

    t0 = clk(CLOCK_THREAD_CPUTIME_ID);
    s = wolfSSL_new(sctx);
    if (s) {
        wolfSSL_SetIOReadCtx(s, &c2s);
        wolfSSL_SetIOWriteCtx(s, &s2c);
    }
    server_ns += clk(CLOCK_THREAD_CPUTIME_ID) - t0;
    if (!s)
        die("wolfSSL_new (server) failed");

    for (i = 0; i < 64 && !(cdone && sdone); i++) {
        if (!cdone) {
            int r = wolfSSL_connect(c);
            if (r == WOLFSSL_SUCCESS)
                cdone = 1;
            else if (wolfSSL_get_error(c, r) != WOLFSSL_ERROR_WANT_READ) {
                char eb[WOLFSSL_MAX_ERROR_SZ];
                fprintf(stderr, "hsloop: client: %s\n",
                        wolfSSL_ERR_error_string((unsigned long)wolfSSL_get_error(c, r), eb));
                exit(1);
            }
        }
        if (!sdone) {
            int r, e;
            t0 = clk(CLOCK_THREAD_CPUTIME_ID);
            r = wolfSSL_accept(s);
            e = r == WOLFSSL_SUCCESS ? 0 : wolfSSL_get_error(s, r);
            server_ns += clk(CLOCK_THREAD_CPUTIME_ID) - t0;
            if (r == WOLFSSL_SUCCESS)
                sdone = 1;
            else if (e != WOLFSSL_ERROR_WANT_READ) {
                char eb[WOLFSSL_MAX_ERROR_SZ];
                fprintf(stderr, "hsloop: server: %s\n", wolfSSL_ERR_error_string((unsigned long)e, eb));
                exit(1);
            }
        }
    }
    if (!(cdone && sdone))
        die("handshake did not finish");
    /* The client takes the TLS 1.3 ticket that came after the handshake. */
    if (wolfSSL_read(c, b, (int)sizeof b) > 0)
        die("unexpected application data");
    resumed = wolfSSL_session_reused(c) ? 1 : 0;
    if (*sess)
        wolfSSL_SESSION_free(*sess);
    *sess = wolfSSL_get1_session(c);

    t0 = clk(CLOCK_THREAD_CPUTIME_ID);
    wolfSSL_free(s);
    server_ns += clk(CLOCK_THREAD_CPUTIME_ID) - t0;
    wolfSSL_free(c);
    return resumed;
}

int main(int argc, char **argv)
{
    const char *dir = NULL, *tls = NULL;
    double seconds = 2.0;
    WOLFSSL_CTX *sctx, *cctx;
    WOLFSSL_SESSION *sess = NULL;
    long full = 0, of = 0, resumed = 0;
    int64_t end, p0, p1, p2, s_full;
    int i;

    for (i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--seconds") == 0 && i + 1 < argc)
            seconds = atof(argv[++i]);
        else if (strcmp(argv[i], "--tls") == 0 && i + 1 < argc)
            tls = argv[++i];
        else if (argv[i][0] != '-' && !dir)
            dir = argv[i];
        else
            dir = NULL, i = argc;
    }
    if (!dir || !(seconds > 0) || seconds > 3600) {
        fprintf(stderr, "usage: hsloop PKI-DIR [--seconds S] [--tls 1.2|1.3]\n");
        return 2;
    }
    if (wolfSSL_Init() != WOLFSSL_SUCCESS)
        die("wolfSSL_Init failed");
    sctx = make_ctx(1, dir, NULL);
    cctx = make_ctx(0, dir, tls);

    (void)handshake(cctx, sctx, &sess);         /* warm up */
    server_ns = 0;
    p0 = clk(CLOCK_PROCESS_CPUTIME_ID);
    end = clk(CLOCK_MONOTONIC) + (int64_t)(seconds * 1e9);
    do {
        WOLFSSL_SESSION *none = NULL;
        (void)handshake(cctx, sctx, &none);
        if (none)
            wolfSSL_SESSION_free(none);
        full++;
    } while (clk(CLOCK_MONOTONIC) < end);
    p1 = clk(CLOCK_PROCESS_CPUTIME_ID);
    s_full = server_ns;

    server_ns = 0;
    end = clk(CLOCK_MONOTONIC) + (int64_t)(seconds * 1e9);
    do {
        resumed += handshake(cctx, sctx, &sess);
        of++;
    } while (clk(CLOCK_MONOTONIC) < end);
    p2 = clk(CLOCK_PROCESS_CPUTIME_ID);

    printf("full=%ld server_us_full=%.1f total_us_full=%.1f resumed=%ld of=%ld "
           "server_us_resumed=%.1f total_us_resumed=%.1f\n",
           full, (double)s_full / 1e3 / (double)full, (double)(p1 - p0) / 1e3 / (double)full,
           resumed, of, (double)server_ns / 1e3 / (double)of, (double)(p2 - p1) / 1e3 / (double)of);
    if (sess)
        wolfSSL_SESSION_free(sess);
    wolfSSL_CTX_free(cctx);
    wolfSSL_CTX_free(sctx);
    wolfSSL_Cleanup();
    return 0;
}
