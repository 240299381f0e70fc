/*
 * sni: mtlslb_sni_match(pattern, host).  The input is split at its first
 * NUL (or in the middle if it has none) into two strings.  The result is
 * compared with a model of the rule: one trailing dot of the host is
 * ignored; "*.rest" matches a host of exactly one more label (non-empty,
 * without a dot) followed by ".rest"; anything else matches only the same
 * name; ASCII letters compare without case.  Swapping the case of either
 * string changes nothing.
 */
#include "fuzz.h"

static int lc(int c)
{
    return c >= 'A' && c <= 'Z' ? c - 'A' + 'a' : c;
}

static int same(const char *a, const char *b, size_t n)
{
    size_t i;

    for (i = 0; i < n; i++)
        if (lc((unsigned char)a[i]) != lc((unsigned char)b[i]))
            return 0;
    return 1;
}

static int model(const char *pattern, const char *host)
{
    size_t hl = strlen(host), pl = strlen(pattern), label;

    if (hl && host[hl - 1] == '.')
        hl--;
    if (pattern[0] == '*' && pattern[1] == '.') {
        const char *rest = pattern + 1;             /* ".rest" */
        size_t rl = pl - 1;
        if (hl <= rl)
            return 0;
        label = hl - rl;
        return !memchr(host, '.', label) && same(host + label, rest, rl);
    }
    return pl == hl && same(pattern, host, hl);
}

static char *recase(const char *s, int upper)
{
    char *r = fz_str(s, strlen(s)), *q;

    for (q = r; *q; q++)
        if (upper && *q >= 'a' && *q <= 'z')
            *q = (char)(*q - 'a' + 'A');
        else if (!upper && *q >= 'A' && *q <= 'Z')
            *q = (char)(*q - 'A' + 'a');
    return r;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const uint8_t *nul = memchr(data, 0, size);
    size_t pl = nul ? (size_t)(nul - data) : size / 2;
    const uint8_t *h = nul ? nul + 1 : data + pl;
    size_t hl = size - (size_t)(h - data);
    char *pattern = fz_str(data, pl), *host = fz_str(h, hl);    /* host stops at a 2nd NUL */
    char *pu = recase(pattern, 1), *hlow = recase(host, 0);
    int r = mtlslb_sni_match(pattern, host);

    CHECK(r == 0 || r == 1);
    if (r != model(pattern, host))
        fprintf(stderr, "sni_match(\"%s\", \"%s\") = %d\n", pattern, host, r);
    CHECK(r == model(pattern, host));
    CHECK(mtlslb_sni_match(pu, hlow) == r);
    if (!host[0] || host[strlen(host) - 1] != '.') {
        /* "name." is "name"; a name matches itself */
        size_t n = strlen(host);
        char *dotted = malloc(n + 2);
        CHECK(dotted != NULL);
        memcpy(dotted, host, n);
        dotted[n] = '.';
        dotted[n + 1] = 0;
        CHECK(mtlslb_sni_match(pattern, dotted) == r);
        CHECK(mtlslb_sni_match(host, host) == 1);
        free(dotted);
    }
    free(pattern);
    free(host);
    free(pu);
    free(hlow);
    return 0;
}
