/*
 * http_request: mtlslb_http_parse_request() over the whole input, then
 * over the head alone and over prefixes of it (http.h); and the path a
 * route matches (mtlslb_path_normalize): never longer, still absolute, no
 * empty, "." or ".." segment left, the same when normalised again (where
 * no escape is left).
 */
#include "http.h"

static void check_path(const char *p, size_t n)
{
    char *a = malloc(n + 1), *b = malloc(n + 1);
    size_t la, lb, q, i;

    CHECK(a && b);
    la = mtlslb_path_normalize(p, n, a);
    CHECK(la <= n && strlen(a) == la);
    if (n && p[0] == '/') {
        CHECK(a[0] == '/');
        for (q = 0; q < la && a[q] != '?'; q++)
            ;
        for (i = 0; i < q; i++)
            if (a[i] == '/') {
                CHECK(i + 1 == q || a[i + 1] != '/');
                CHECK(!(a[i + 1] == '.' && (i + 2 == q || a[i + 2] == '/')));
                CHECK(!(a[i + 1] == '.' && a[i + 2] == '.' && (i + 3 == q || a[i + 3] == '/')));
            }
    }
    /* decoding once is the rule ("%%33" gives "%3" then "3"): the same
     * again only where no escape is left */
    lb = mtlslb_path_normalize(a, la, b);
    CHECK(memchr(a, '%', la) || (lb == la && memcmp(a, b, la) == 0));
    free(a);
    free(b);
}

static int parse(const char *b, size_t len, int arg, struct mtlslb_http_msg *m)
{
    (void)arg;
    return mtlslb_http_parse_request(b, len, m);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct mtlslb_http_msg m;
    const char *b = (const char *)data;
    int rc = parse(b, size, 0, &m);

    fz_http_check(b, size, rc, 1, &m);
    if (rc > 0) {
        check_path(m.path, m.path_len);
        fz_http_pieces(b, size, rc, 0, parse, &m);
    }
    return 0;
}
