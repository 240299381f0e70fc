/*
 * chunked: mtlslb_http_chunk_scan(), a state machine fed any slices of a
 * body.  The input's first byte says how many cuts (0..7), the next ones
 * how long each piece before the last is; the rest is the body.  The body
 * is scanned in those pieces (each an exact-size copy) and in one go: both
 * must agree on where the body ends and on whether it is malformed.  A
 * slice is taken whole unless the body ends in it; once done, the scanner
 * takes nothing more; a body ends with the CRLF after the last chunk.
 */
#include "fuzz.h"

struct result {
    long used;                      /* body bytes taken */
    int bad, done;
};

static void scan(const char *body, size_t len, const size_t *cuts, size_t ncuts,
                 struct result *r)
{
    struct mtlslb_http_chunk c;
    size_t off = 0, i;

    memset(&c, 0, sizeof c);
    c.request = len & 1;            /* a request's trailer names are checked */
    memset(r, 0, sizeof *r);
    for (i = 0; i <= ncuts && !r->bad; i++) {
        size_t n = i < ncuts ? cuts[i] : len - off;
        char *piece;
        long got;
        int done = -1;
        if (n > len - off)
            n = len - off;
        piece = fz_copy(body + off, n);
        got = mtlslb_http_chunk_scan(&c, piece, n, &done);
        free(piece);
        CHECK(done == 0 || done == 1);
        if (got < 0) {
            CHECK(got == -1);
            CHECK(!r->done);
            r->bad = 1;
            break;
        }
        CHECK((size_t)got <= n);
        if (r->done)
            CHECK(got == 0 && done);                /* nothing after the end */
        CHECK(done || (size_t)got == n);            /* all of it, unless the end */
        r->used += got;
        r->done = done;
        off += n;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct fz f = { data, size };
    size_t cuts[7], ncuts = fz_u8(&f) % 8, i;
    struct result one, split;
    const char *body;

    for (i = 0; i < ncuts; i++)
        cuts[i] = fz_u8(&f);
    body = (const char *)f.p;
    scan(body, f.n, NULL, 0, &one);
    scan(body, f.n, cuts, ncuts, &split);
    CHECK(one.done == split.done && one.bad == split.bad);
    if (!one.bad)
        CHECK(one.used == split.used);
    if (one.done)
        CHECK(one.used >= 5 && memcmp(body + one.used - 2, "\r\n", 2) == 0);
    return 0;
}
