/*
 * http_response: mtlslb_http_parse_response() over the whole input, as the
 * answer to a GET and to a HEAD, then over the head alone and over prefixes
 * of it (http.h).  The head's length does not depend on the request (only
 * the framing of what follows does); a response to HEAD has no body.
 */
#include "http.h"

static int parse(const char *b, size_t len, int head, struct mtlslb_http_msg *m)
{
    return mtlslb_http_parse_response(b, len, head, m);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct mtlslb_http_msg m, mh;
    const char *b = (const char *)data;
    int rc = parse(b, size, 0, &m), rh = parse(b, size, 1, &mh);

    fz_http_check(b, size, rc, 0, &m);
    fz_http_check(b, size, rh, 0, &mh);
    CHECK((rc == 0) == (rh == 0));
    if (rc > 0) {
        CHECK(rh == rc);
        CHECK(mh.status == m.status && mh.nheaders == m.nheaders);
        fz_http_pieces(b, size, rc, 0, parse, &m);
    }
    if (rh > 0) {
        CHECK(mh.body == MTLSLB_BODY_NONE);
        fz_http_pieces(b, size, rh, 1, parse, &mh);
    }
    if (rc > 0 && (m.status < 200 || m.status == 204 || m.status == 304))
        CHECK(m.body == MTLSLB_BODY_NONE);
    return 0;
}
