/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * mtlslb.h - the public face of mtlslb: version, limits, the configuration
 * model, and the few entry points a test harness or a fuzzer calls.
 *
 * The configuration model is plain data.  mtlslb_config_parse() builds it
 * completely; after that everything only reads it.  Runtime state (sockets,
 * TLS contexts, counters) lives in mtlslb.c and points into the model, so a
 * reload can build a second model beside the first and swap a pointer.
 */
#ifndef MTLSLB_H
#define MTLSLB_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#define MTLSLB_VERSION "0.1.0"

/* Limits. */
#define MTLSLB_MAX_TOKENS    32     /* tokens on one configuration line */
#define MTLSLB_MAX_LINE      4096   /* bytes in one configuration line */
#define MTLSLB_MAX_WORKERS   16     /* `workers` at most */
#define MTLSLB_BUF_SIZE      16384  /* relay buffer per direction */
#define MTLSLB_MAX_NAME      64     /* listener, backend and server names */
#define MTLSLB_PROXY_MAX     712    /* largest PROXY header we ever write */
#define MTLSLB_BACKOFF_MS    2000   /* a server whose connect failed is skipped */
#define MTLSLB_HTTP_LINE_MAX 8192   /* request line: longer is 414 */
#define MTLSLB_HTTP_HEAD_MAX 16384  /* request or response head: longer is 431 / 502 */
#define MTLSLB_HTTP_HEADERS  1024   /* header lines in one head: more is 431 (the size
                                       limit comes first but for lines under 16 bytes) */
#define MTLSLB_POOL_MAX      16     /* idle connections kept per server */
#define MTLSLB_POOL_IDLE_MS  15000  /* an idle server connection is closed after */

enum mtlslb_level { MTLSLB_LOG_ERROR, MTLSLB_LOG_WARN, MTLSLB_LOG_INFO, MTLSLB_LOG_DEBUG };
enum mtlslb_mode { MTLSLB_MODE_HTTP, MTLSLB_MODE_TCP };
enum mtlslb_verify { MTLSLB_VERIFY_UNSET, MTLSLB_VERIFY_NONE, MTLSLB_VERIFY_OPTIONAL,
                     MTLSLB_VERIFY_REQUIRED };
enum mtlslb_balance { MTLSLB_BAL_ROUNDROBIN, MTLSLB_BAL_LEASTCONN, MTLSLB_BAL_SOURCE };

/* A path named in the configuration, with the line that named it. */
struct mtlslb_file {
    char *path;                     /* already joined with the config's directory */
    int line;
};

struct mtlslb_bind {
    struct sockaddr_storage addr;
    socklen_t addrlen;
    char *text;                     /* as written, for logs */
    int line;
};

struct mtlslb_global {
    enum mtlslb_level log_level;
    unsigned max_conns;
    unsigned tmo_handshake;         /* all durations in milliseconds */
    unsigned tmo_connect;
    unsigned tmo_idle;
    unsigned tmo_request;
    unsigned grace;
    struct mtlslb_bind stats;       /* addrlen 0: no stats endpoint */
    char *user;                     /* drop to this user after start-up; NULL = stay */
    int log_syslog;                 /* log to syslog (daemon, "mtlslb") instead of stderr */
    unsigned workers;               /* processes sharing the listening sockets (1..16) */
};

/*
 * Access control by client certificate (SPEC 4): `allow FIELD PATTERN...`.
 * A rule admits a certificate when one of its patterns matches one of the
 * certificate's values of that field; several rules: any one admits.
 * Patterns are exact or with `*` globs (a `*` never matches a control
 * byte); fingerprint (SHA-256) and serial are hex, kept without colons,
 * compared in any case.
 */
enum mtlslb_allow_field {
    MTLSLB_ALLOW_CN, MTLSLB_ALLOW_OU, MTLSLB_ALLOW_O, MTLSLB_ALLOW_SAN_DNS, MTLSLB_ALLOW_SAN_URI,
    MTLSLB_ALLOW_SAN_EMAIL, MTLSLB_ALLOW_FINGERPRINT, MTLSLB_ALLOW_SERIAL, MTLSLB_ALLOW_FIELDS
};

struct mtlslb_allow {
    enum mtlslb_allow_field field;
    char **patterns;
    size_t npatterns;
    char *text;                     /* "cn device-* admin", for the log */
    int line;
};

/* One `sni` line: a name (exact, or "*.rest" for one label) and its own
 * certificate, optionally its own client CA and CRLs. */
struct mtlslb_sni {
    char *name;                     /* lower-cased */
    struct mtlslb_file cert, key, ca;   /* ca.path NULL = the listener's */
    struct mtlslb_file *crls;
    size_t ncrls;
    enum mtlslb_verify verify;      /* resolved: the listener's; required by
                                       default for an own ca (SPEC 4) */
    int line;
};

struct mtlslb_listener {
    char *name;
    int line;
    struct mtlslb_bind *binds;
    size_t nbinds;
    enum mtlslb_mode mode;
    int mode_line;
    struct mtlslb_file cert, key, ca;
    struct mtlslb_file *crls;
    size_t ncrls;
    enum mtlslb_verify verify;
    int tls_min;                    /* 12 or 13 */
    char *ciphers;                  /* NULL = ECDHE + AEAD default */
    int ciphers_line;
    struct mtlslb_sni *snis;
    size_t nsnis;
    int sni_strict;
    char *default_backend;
    int default_backend_line;
    size_t backend;                 /* index into config->backends, resolved */
    int send_proxy;                 /* 0, 1 or 2 */
    int forward_cert;               /* http: RFC 9440 Client-Cert header */
    struct mtlslb_route *routes;
    size_t nroutes;
    struct mtlslb_allow *allows;    /* none: every verified certificate */
    size_t nallows;
};

/* route [host PATTERN] [path PREFIX] backend NAME (http mode). */
struct mtlslb_route {
    char *host;                     /* lower-cased; "*.x" = one label; NULL = any */
    char *path;                     /* prefix; NULL = any */
    char *backend_name;
    size_t backend;                 /* index into config->backends, resolved */
    struct mtlslb_allow *allows;    /* none: whoever the listener admits */
    size_t nallows;
    int line;
};

struct mtlslb_server {
    char *name;
    char *addr_text;
    struct sockaddr_storage addr;
    socklen_t addrlen;
    unsigned weight;
    int backup;
    int line;
    int tls;                        /* speak TLS to this server */
    struct mtlslb_file tls_ca;      /* verify the server against it (path NULL: no check) */
    struct mtlslb_file tls_cert, tls_key;   /* mtlslb's own client certificate */
    char *tls_sni;                  /* SNI to send and name to verify */
};

enum mtlslb_check_type { MTLSLB_CHECK_NONE, MTLSLB_CHECK_TCP, MTLSLB_CHECK_HTTP };

struct mtlslb_backend {
    char *name;
    int line;
    enum mtlslb_balance balance;
    struct mtlslb_server *servers;
    size_t nservers;
    unsigned retries;
    enum mtlslb_check_type check;
    char *check_method, *check_path;
    int check_expect;               /* a status code; 2 = 2xx, 3 = 3xx, 0 = 2xx or 3xx */
    int check_line;
    unsigned check_interval;        /* ms */
    unsigned check_timeout;
    unsigned rise, fall;
};

struct mtlslb_config {
    char *file;                     /* the file it was read from */
    struct mtlslb_global global;
    struct mtlslb_listener *listeners;
    size_t nlisteners;
    struct mtlslb_backend *backends;
    size_t nbackends;
};

/* Receives each error as "FILE:LINE: message" (no newline). */
typedef void mtlslb_report_fn(void *arg, const char *msg);

/*
 * Parse a configuration.  Every error found is passed to report; the result
 * is the number of errors (0 = *out holds a complete model, which the caller
 * frees with mtlslb_config_free; otherwise *out is NULL).  Only the syntax and
 * the names are checked here; files are loaded by the TLS layer.
 * mtlslb_config_parse_text() parses a buffer as if it were the file `name`
 * (relative paths are then relative to name's directory); fuzzers use it.
 */
int mtlslb_config_parse(const char *path, struct mtlslb_config **out,
                        mtlslb_report_fn *report, void *arg);
int mtlslb_config_parse_text(const char *name, const char *text, size_t len,
                             struct mtlslb_config **out,
                             mtlslb_report_fn *report, void *arg);
void mtlslb_config_free(struct mtlslb_config *cfg);

/* 1: server addresses must be numeric (no name lookup, so no DNS traffic
 * and no waiting): for fuzzers.  0 (the default): names are resolved. */
void mtlslb_config_numeric(int on);

/* Parse a duration ("250ms", "10s", "2m", "1h", bare number = seconds) into
 * milliseconds.  Returns 0, or -1 if malformed or above one day. */
int mtlslb_parse_duration(const char *s, unsigned *ms);

/* What a PROXY v2 header says about the client's TLS session. */
struct mtlslb_tls_info {
    const char *version;            /* "TLSv1.3"; NULL = no TLS TLV at all */
    const char *cipher;             /* may be NULL */
    const char *cn;                 /* client certificate CN; NULL = none */
    const char *sni;                /* SNI the client sent; NULL = none */
    int has_cert;                   /* a certificate was presented and verified */
    int resumed;                    /* ...with the session resumed: not on this connection */
    uint32_t verify;                /* 0 = verified */
};

/*
 * Write a PROXY protocol header (version 1 or 2) for a connection from src
 * to dst into out (at most MTLSLB_PROXY_MAX bytes).  Returns its length, or
 * -1 if cap is too small, version is neither 1 nor 2, or a TLS string is
 * longer than the header can carry (sni, cn: 255; version, cipher: 64).
 * Addresses that are not both IPv4 or both IPv6 give "PROXY UNKNOWN" (v1)
 * or a LOCAL header without addresses (v2).
 */
int mtlslb_proxy_header(int version, const struct sockaddr *src,
                        const struct sockaddr *dst,
                        const struct mtlslb_tls_info *tls,
                        uint8_t *out, size_t cap);

/* ---- HTTP/1.x messages (http mode) ---- */

struct mtlslb_http_header {
    const char *name, *value;       /* into the parsed buffer, not terminated */
    size_t name_len, value_len;     /* value without leading/trailing blanks */
};

enum mtlslb_http_body { MTLSLB_BODY_NONE, MTLSLB_BODY_LENGTH, MTLSLB_BODY_CHUNKED,
                        MTLSLB_BODY_CLOSE };

struct mtlslb_http_msg {
    size_t head_len;                /* bytes up to and including the blank line */
    int version;                    /* 10 or 11 */
    const char *method, *target;    /* request */
    size_t method_len, target_len;
    const char *path;               /* request: the target's path (and query) */
    size_t path_len;
    int status;                     /* response */
    size_t nheaders;
    enum mtlslb_http_body body;     /* framing of what follows the head */
    uint64_t content_length;
    const char *host;               /* request: Host value (or from the target) */
    size_t host_len;
    unsigned conn_close : 1;        /* Connection: close (or 1.0 without keep-alive) */
    unsigned conn_upgrade : 1;      /* Connection: upgrade with an Upgrade header */
    unsigned expect_continue : 1;
    unsigned has_connection : 1;    /* a Connection header (its options are hop-by-hop) */
    struct mtlslb_http_header headers[MTLSLB_HTTP_HEADERS];     /* last: not cleared */
};

/*
 * Parse a request head at the start of buf.  Returns the head length when
 * complete, 0 when more bytes are needed, or minus the HTTP status to answer
 * (-400 malformed, -414 request line too long, -431 head too large, -501
 * unknown transfer coding).  Strict, as an edge proxy must be: CRLF only, no
 * obs-fold, no blank before a colon, no control bytes, one Content-Length
 * value, Transfer-Encoding only "chunked" and never with Content-Length.
 */
int mtlslb_http_parse_request(const char *buf, size_t len, struct mtlslb_http_msg *m);

/* The same for a response head (-502 when malformed); request_was_head:
 * the response has no body whatever its headers say. */
int mtlslb_http_parse_response(const char *buf, size_t len, int request_was_head,
                               struct mtlslb_http_msg *m);

/* A request path as routes match it: octets of unreserved characters
 * decoded, dot segments removed, runs of slashes merged, the query kept as
 * it came.  out holds n + 1 bytes; returns the length written (terminated). */
size_t mtlslb_path_normalize(const char *p, size_t n, char *out);

/* Chunked body framing (RFC 9112 7.1), fed any slices of the body. */
struct mtlslb_http_chunk {
    int state;
    uint64_t left;                  /* data bytes left in this chunk */
    unsigned digits;                /* of the size, leading zeros not counted */
    unsigned request : 1;           /* set by the caller: a request's trailer may not
                                       carry what the proxy sets (400) */
    unsigned nlen;                  /* a trailer field name so far */
    char name[24];
    unsigned tlen;                  /* bytes of the trailer section so far */
};

/* Consume body bytes: returns how many of len belong to the body (all, or up
 * to the end of the last chunk's trailer, when *done is set), or -1 when the
 * framing is malformed (bad or overflowing size, bare LF, a trailer line
 * that would be a malformed header line, a trailer section over
 * MTLSLB_HTTP_HEAD_MAX bytes, ...). */
long mtlslb_http_chunk_scan(struct mtlslb_http_chunk *c, const char *buf, size_t len,
                            int *done);

/* What a client certificate says, for the X-Client-* headers and logs. */
struct mtlslb_identity {
    char subject[1024];             /* RFC 4514 (2253) DN, control bytes escaped */
    char issuer[1024];
    char serial[132];               /* upper-case hex */
    char fingerprint[65];           /* SHA-256 of the DER, lower-case hex */
    char not_after[24];             /* 2026-11-22T13:21:23Z */
    char cn[256];                   /* first CN, printable ASCII only */
};

/* Decode a DER certificate.  Returns 0, or -1 if it does not parse. */
int mtlslb_cert_identity(const uint8_t *der, size_t len, struct mtlslb_identity *id);

/* The values access control looks at, decoded from a DER certificate:
 * subject CN, OU, O and the DNS, URI and e-mail subjectAltNames as they
 * are in the DER (pointers into it, with lengths), the SHA-256 fingerprint
 * (lower-case hex) and the serial (upper-case hex, no leading zero bytes). */
#define MTLSLB_PEER_VALUES 64
struct mtlslb_peer_value {
    enum mtlslb_allow_field field;
    const uint8_t *p;
    size_t len;
};

struct mtlslb_peer {
    struct mtlslb_peer_value v[MTLSLB_PEER_VALUES];
    size_t n;                       /* values beyond MTLSLB_PEER_VALUES are dropped */
    char fingerprint[65];
    char serial[132];
};

/* Decode a DER certificate's access-control values.  0, or -1 if it does
 * not parse. */
int mtlslb_cert_peer(const uint8_t *der, size_t len, struct mtlslb_peer *peer);

/* May a DER certificate sign (as a client's must)?  0 if its keyUsage
 * lacks digitalSignature, 1 if it may (or has no keyUsage), -1 if it does
 * not parse. */
int mtlslb_cert_may_sign(const uint8_t *der, size_t len);

/* Does a pattern match a value (bytes, not a C string)?  Exact, or `*`
 * matching any run of bytes but control ones (0x00-0x1f, 0x7f);
 * case-insensitive (ASCII) if icase. */
int mtlslb_allow_match(const char *pattern, const uint8_t *value, size_t len, int icase);

/* Do the rules admit this certificate (peer NULL: none was presented)?
 * No rules: 1.  Otherwise 1 if any rule matches, else 0. */
int mtlslb_identity_allowed(const struct mtlslb_allow *rules, size_t n,
                            const struct mtlslb_peer *peer);

/*
 * Does an SNI pattern match a host name?  Exact names compare
 * case-insensitively; "*.example.org" matches exactly one extra label.
 */
int mtlslb_sni_match(const char *pattern, const char *host);

#endif
