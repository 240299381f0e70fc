/*
 * cert: mtlslb_cert_identity(), mtlslb's own DER certificate decoder.
 * Client certificates reach it (X-Client-* headers, logs), so it is the
 * most exposed parser.  Properties: 0 or -1; on 0 every field is a
 * terminated string of printable ASCII (escaped DNs can split no header
 * or log line), the serial is upper-case hex, the fingerprint is the
 * SHA-256 of the input in lower-case hex, not_after is set.
 */
#include "fuzz.h"

#include <wolfssl/options.h>
#include <wolfssl/wolfcrypt/hash.h>

static void printable(const char *s, size_t cap, int empty_ok)
{
    const char *end = memchr(s, 0, cap);
    const char *p;

    CHECK(end != NULL);
    CHECK(empty_ok || end > s);
    for (p = s; p < end; p++)
        CHECK(*p >= 0x20 && *p < 0x7f);
}

static void hex(const char *s, size_t cap, const char *digits, size_t want)
{
    const char *end = memchr(s, 0, cap);
    const char *p;

    CHECK(end != NULL && end > s);
    CHECK(want == 0 || (size_t)(end - s) == want);
    CHECK((end - s) % 2 == 0);
    for (p = s; p < end; p++)
        CHECK(strchr(digits, *p) != NULL);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct mtlslb_identity *id = malloc(sizeof *id);
    uint8_t *der = (uint8_t *)fz_copy(data, size);
    int rc;

    CHECK(id != NULL);
    rc = mtlslb_cert_identity(der, size, id);
    CHECK(rc == 0 || rc == -1);
    if (rc == 0) {
        uint8_t md[32];
        char fp[65];
        size_t i;
        printable(id->subject, sizeof id->subject, 1);
        printable(id->issuer, sizeof id->issuer, 1);
        printable(id->cn, sizeof id->cn, 1);
        printable(id->not_after, sizeof id->not_after, 0);
        hex(id->serial, sizeof id->serial, "0123456789ABCDEF", 0);
        hex(id->fingerprint, sizeof id->fingerprint, "0123456789abcdef", 64);
        CHECK(wc_Sha256Hash(der, (word32)size, md) == 0);
        for (i = 0; i < 32; i++)
            snprintf(fp + 2 * i, 3, "%02x", md[i]);
        CHECK(strcmp(fp, id->fingerprint) == 0);
        /* A CN found in the subject shows in the DN too. */
        CHECK(!id->cn[0] || strstr(id->subject, "CN=") != NULL);
    }
    free(der);
    free(id);
    return 0;
}
