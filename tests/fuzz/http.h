/*
 * http.h - the properties both HTTP head parsers must keep (http_request.c,
 * http_response.c).
 */
#ifndef MTLSLB_FUZZ_HTTP_H
#define MTLSLB_FUZZ_HTTP_H

#include "fuzz.h"

typedef int fz_parse_fn(const char *b, size_t len, int arg, struct mtlslb_http_msg *m);

static inline int fz_in(const char *b, size_t rc, const char *p, size_t n)
{
    return p >= b && p <= b + rc && n <= (size_t)(b + rc - p);
}

/* What a parse result says about the message, against the bytes it came from. */
static inline void fz_http_check(const char *b, size_t len, int rc, int request,
                                 const struct mtlslb_http_msg *m)
{
    size_t i, h;

    if (rc <= 0) {
        CHECK(rc == 0 || rc == -400 || rc == -414 || rc == -431 || rc == -501 || rc == -502);
        CHECK(request ? rc != -502 : (rc == 0 || rc == -502));
        return;
    }
    h = (size_t)rc;
    CHECK(h <= len && h == m->head_len && h <= MTLSLB_HTTP_HEAD_MAX);
    CHECK(h >= 4 && memcmp(b + h - 4, "\r\n\r\n", 4) == 0);
    for (i = 0; i < h; i++) {           /* CRLF only; no NUL or other control byte */
        unsigned char ch = (unsigned char)b[i];
        if (ch == '\r')
            CHECK(b[i + 1] == '\n');
        else if (ch == '\n')
            CHECK(i > 0 && b[i - 1] == '\r');
        else
            CHECK((ch >= 0x20 || ch == '\t') && ch != 0x7f);
    }
    CHECK(m->version == 10 || m->version == 11);
    CHECK(m->nheaders <= MTLSLB_HTTP_HEADERS);
    for (i = 0; i < m->nheaders; i++) {
        const struct mtlslb_http_header *x = &m->headers[i];
        size_t k;
        CHECK(x->name_len > 0 && fz_in(b, h, x->name, x->name_len));
        CHECK(fz_in(b, h, x->value, x->value_len));
        CHECK(x->name[x->name_len] == ':');
        for (k = 0; k < x->value_len; k++)
            CHECK(((unsigned char)x->value[k] >= 0x20 || x->value[k] == '\t') &&
                  x->value[k] != 0x7f);
        CHECK(x->value_len == 0 || (x->value[0] != ' ' && x->value[0] != '\t' &&
                                    x->value[x->value_len - 1] != ' ' &&
                                    x->value[x->value_len - 1] != '\t'));
    }
    CHECK(m->body == MTLSLB_BODY_NONE || m->body == MTLSLB_BODY_LENGTH ||
          m->body == MTLSLB_BODY_CHUNKED || m->body == MTLSLB_BODY_CLOSE);
    CHECK(m->body != MTLSLB_BODY_LENGTH || m->content_length > 0);
    if (request) {
        CHECK(m->body != MTLSLB_BODY_CLOSE);
        CHECK(m->method_len > 0 && m->method == b);
        CHECK(m->target_len > 0 && fz_in(b, h, m->target, m->target_len));
        CHECK(m->path_len > 0);
        CHECK(fz_in(b, h, m->path, m->path_len) ||
              (m->path_len == 1 && m->path[0] == '/'));
        CHECK(m->host == NULL || fz_in(b, h, m->host, m->host_len));
        CHECK(m->version == 10 || m->host != NULL);
        CHECK(m->status == 0);
    } else {
        CHECK(m->status >= 100 && m->status <= 999);
        CHECK(m->method == NULL && m->target == NULL);
    }
}

/*
 * A head that parsed parses the same from exactly its bytes (what follows
 * it does not matter), and every prefix of it cut just after a CR or just
 * before the end asks for more bytes (0): the proxy reads a head in
 * whatever pieces the network gives, so where the bytes are cut must not
 * change the answer.
 */
static inline void fz_http_pieces(const char *b, size_t len, int rc, int arg,
                                  fz_parse_fn *parse, const struct mtlslb_http_msg *m)
{
    struct mtlslb_http_msg *m2 = malloc(sizeof *m2);
    size_t h = (size_t)rc, cut;
    char *c;
    int r2;

    CHECK(m2 != NULL);
    (void)len;
    c = fz_copy(b, h);
    r2 = parse(c, h, arg, m2);
    CHECK(r2 == rc);
    CHECK(m2->nheaders == m->nheaders && m2->body == m->body && m2->status == m->status &&
          m2->content_length == m->content_length && m2->version == m->version &&
          m2->conn_close == m->conn_close && m2->conn_upgrade == m->conn_upgrade &&
          m2->expect_continue == m->expect_continue);
    free(c);
    for (cut = 1; cut < h; cut++) {
        if (b[cut - 1] != '\r' && cut != h - 1 && cut != h / 2)
            continue;
        c = fz_copy(b, cut);
        r2 = parse(c, cut, arg, m2);
        if (r2 != 0)
            fprintf(stderr, "a complete head of %zu bytes parses (%d), its first %zu bytes "
                    "give %d, not 0 (more needed)\n", h, rc, cut, r2);
        CHECK(r2 == 0);
        free(c);
    }
    free(m2);
}

#endif
