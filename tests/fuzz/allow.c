/*
 * allow: the access-control matcher.  The input is split at its first NUL
 * (or in the middle) into a pattern (a C string) and a value (bytes, NULs
 * included).  mtlslb_allow_match() is compared with a recursive model: a
 * `*` takes any run of bytes but control ones (0x00-0x1f, 0x7f), anything else matches
 * itself (ASCII letters without case when icase), decided by dynamic
 * programming.  Then the same bytes go
 * to mtlslb_cert_may_sign() (-1, 0 or 1) and to mtlslb_cert_peer() as a
 * DER certificate: 0 or -1, every value it
 * returns lies inside the input, and its fingerprint and serial are the
 * identity decoder's wherever that decodes the input too.
 */
#include "fuzz.h"

static int lc(int c)
{
    return c >= 'A' && c <= 'Z' ? c - 'A' + 'a' : c;
}

/* dp[i][j]: pattern from i matches value from j (filled backwards). */
static int model(const char *p, const uint8_t *v, size_t n, int icase)
{
    size_t pl = strlen(p), i, j;
    unsigned char *dp = calloc((pl + 1) * (n + 1), 1);
    int r;

    CHECK(dp != NULL);
#define DP(a, b) dp[(a) * (n + 1) + (b)]
    DP(pl, n) = 1;
    for (i = pl; i-- > 0; )
        for (j = n + 1; j-- > 0; ) {
            if (p[i] == '*')
                DP(i, j) = DP(i + 1, j) || (j < n && v[j] >= 0x20 && v[j] != 0x7f && DP(i, j + 1));
            else
                DP(i, j) = j < n && (icase ? lc((unsigned char)p[i]) == lc(v[j])
                                           : (uint8_t)p[i] == v[j]) && DP(i + 1, j + 1);
        }
    r = DP(0, 0);
#undef DP
    free(dp);
    return r;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const uint8_t *nul = memchr(data, 0, size);
    size_t pl = nul ? (size_t)(nul - data) : size / 2, i;
    const uint8_t *v = nul ? nul + 1 : data + pl;
    size_t vl = size - (size_t)(v - data);
    char *pattern = fz_str(data, pl);
    uint8_t *value = (uint8_t *)fz_copy(v, vl), *der = (uint8_t *)fz_copy(data, size);
    struct mtlslb_peer *pe = malloc(sizeof *pe);
    struct mtlslb_identity *id = malloc(sizeof *id);
    int icase;

    CHECK(pe != NULL && id != NULL);
    for (icase = 0; icase < 2; icase++) {
        int r = mtlslb_allow_match(pattern, value, vl, icase);
        CHECK(r == 0 || r == 1);
        if (pl <= 256 && vl <= 256)     /* the model's table: pl x vl */
            CHECK(r == model(pattern, value, vl, icase));
    }
    i = (size_t)(mtlslb_cert_may_sign(der, size) + 1);
    CHECK(i <= 2);
    if (mtlslb_cert_peer(der, size, pe) == 0) {
        CHECK(pe->n <= MTLSLB_PEER_VALUES);
        for (i = 0; i < pe->n; i++) {
            CHECK(pe->v[i].field < MTLSLB_ALLOW_FIELDS);
            CHECK(pe->v[i].p >= der && pe->v[i].p + pe->v[i].len <= der + size);
        }
        /* it reads fewer fields than the identity decoder (not the issuer
         * nor the validity), so it may take what that refuses; where both
         * decode, serial and fingerprint agree */
        if (mtlslb_cert_identity(der, size, id) == 0) {
            CHECK(strcmp(id->fingerprint, pe->fingerprint) == 0);
            CHECK(strcmp(id->serial, pe->serial) == 0);
        }
    }
    free(pattern);
    free(value);
    free(der);
    free(pe);
    free(id);
    return 0;
}
