/*
 * http_request: mtlslb_http_parse_request() over the whole input, then
 * over the head alone and over prefixes of it (http.h).
 */
#include "http.h"

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
    if (rc > 0)
        fz_http_pieces(b, size, rc, 0, parse, &m);
    return 0;
}
