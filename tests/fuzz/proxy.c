/*
 * proxy: mtlslb_proxy_header(), the PROXY protocol header written to a
 * server (send-proxy v1 | v2).  Every input of the writer comes from the
 * fuzz bytes:
 *
 *   byte 0      version: 1 or 2 (some values give 0 or 3, which fail)
 *   byte 1      families of src and dst (IPv4, IPv6, AF_UNIX), TLS info or
 *               none, has_cert, resumed
 *   byte 2      which of version, cipher, cn, sni are set
 *   2 bytes     cap, the output buffer's size (0..799: often too small)
 *   4 bytes     verify
 *   2 x 18      src and dst: 16 address bytes (IPv4 uses 4), port
 *   4 x (2+n)   version, cipher, cn, sni: length (0..319) and bytes
 *
 * The header is also built here from the PROXY protocol specification
 * (haproxy's proxy-protocol.txt) and compared byte for byte: the return is
 * its length when it fits in cap and every string is within its limit
 * (sni, cn 255; version, cipher 64), else -1; nothing past the returned
 * length (nothing at all on -1) is written; never more than MTLSLB_PROXY_MAX.
 */
#include "fuzz.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/un.h>

static const int fams[4] = { AF_INET, AF_INET6, AF_UNIX, AF_INET };

static void make_addr(struct fz *f, int fam, struct sockaddr_storage *ss)
{
    uint8_t a[16];
    unsigned port;

    fz_bytes(f, a, sizeof a);
    port = fz_u16(f);
    memset(ss, 0, sizeof *ss);
    ss->ss_family = (sa_family_t)fam;
    if (fam == AF_INET) {
        struct sockaddr_in *in = (struct sockaddr_in *)ss;
        memcpy(&in->sin_addr, a, 4);
        in->sin_port = htons((uint16_t)port);
    } else if (fam == AF_INET6) {
        struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)ss;
        memcpy(&in6->sin6_addr, a, 16);
        in6->sin6_port = htons((uint16_t)port);
    } else {
        struct sockaddr_un *un = (struct sockaddr_un *)ss;
        memcpy(un->sun_path, a, sizeof a);
    }
}

static char *take_str(struct fz *f, int present)
{
    size_t n = fz_u16(f) % 320;
    char *s;

    if (n > f->n)
        n = f->n;
    s = fz_str(f->p, n);
    f->p += n;
    f->n -= n;
    if (!present) {
        free(s);
        return NULL;
    }
    return s;
}

static size_t put_tlv(uint8_t *p, uint8_t type, const char *v, size_t n)
{
    p[0] = type;
    p[1] = (uint8_t)(n >> 8);
    p[2] = (uint8_t)n;
    memcpy(p + 3, v, n);
    return 3 + n;
}

/* The header as the specification has it; its length, or -1 when a string
 * is over its limit. */
static long expected(int version, int fam, const struct sockaddr_storage *src,
                     const struct sockaddr_storage *dst, const struct mtlslb_tls_info *tls,
                     uint8_t *e, size_t ecap)
{
    static const uint8_t sig[12] = { 0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A,
                                     0x51, 0x55, 0x49, 0x54, 0x0A };
    const struct sockaddr_in *s4 = (const void *)src, *d4 = (const void *)dst;
    const struct sockaddr_in6 *s6 = (const void *)src, *d6 = (const void *)dst;
    size_t n = 16;
    uint8_t *ssl;

    if (version == 1) {
        char a[INET6_ADDRSTRLEN], b[INET6_ADDRSTRLEN];
        int w;
        if (fam == AF_INET) {
            inet_ntop(AF_INET, &s4->sin_addr, a, sizeof a);
            inet_ntop(AF_INET, &d4->sin_addr, b, sizeof b);
            w = snprintf((char *)e, ecap, "PROXY TCP4 %s %s %u %u\r\n", a, b,
                         ntohs(s4->sin_port), ntohs(d4->sin_port));
        } else if (fam == AF_INET6) {
            inet_ntop(AF_INET6, &s6->sin6_addr, a, sizeof a);
            inet_ntop(AF_INET6, &d6->sin6_addr, b, sizeof b);
            w = snprintf((char *)e, ecap, "PROXY TCP6 %s %s %u %u\r\n", a, b,
                         ntohs(s6->sin6_port), ntohs(d6->sin6_port));
        } else {
            w = snprintf((char *)e, ecap, "PROXY UNKNOWN\r\n");
        }
        CHECK(w > 0 && (size_t)w < ecap);
        CHECK(w <= 107);                            /* the specification's maximum */
        return w;
    }
    memcpy(e, sig, 12);
    e[12] = fam == AF_UNSPEC ? 0x20 : 0x21;
    e[13] = fam == AF_INET ? 0x11 : fam == AF_INET6 ? 0x21 : 0x00;
    if (fam == AF_INET) {
        memcpy(e + n, &s4->sin_addr, 4);
        memcpy(e + n + 4, &d4->sin_addr, 4);
        memcpy(e + n + 8, &s4->sin_port, 2);
        memcpy(e + n + 10, &d4->sin_port, 2);
        n += 12;
    } else if (fam == AF_INET6) {
        memcpy(e + n, &s6->sin6_addr, 16);
        memcpy(e + n + 16, &d6->sin6_addr, 16);
        memcpy(e + n + 32, &s6->sin6_port, 2);
        memcpy(e + n + 34, &d6->sin6_port, 2);
        n += 36;
    }
    if (tls && tls->sni) {
        if (strlen(tls->sni) > 255)
            return -1;
        n += put_tlv(e + n, 0x02, tls->sni, strlen(tls->sni));
    }
    if (tls && tls->version) {
        size_t vl = strlen(tls->version), cl = tls->cn ? strlen(tls->cn) : 0,
               pl = tls->cipher ? strlen(tls->cipher) : 0;
        if (vl > 64 || cl > 255 || pl > 64)
            return -1;
        e[n] = 0x20;
        ssl = e + n + 1;
        n += 3;
        e[n++] = (uint8_t)(0x01 | (tls->has_cert ? 0x04 : 0) | (tls->has_cert && !tls->resumed ? 0x02 : 0));
        e[n++] = (uint8_t)(tls->verify >> 24);
        e[n++] = (uint8_t)(tls->verify >> 16);
        e[n++] = (uint8_t)(tls->verify >> 8);
        e[n++] = (uint8_t)tls->verify;
        n += put_tlv(e + n, 0x21, tls->version, vl);
        if (cl)
            n += put_tlv(e + n, 0x22, tls->cn, cl);
        if (pl)
            n += put_tlv(e + n, 0x23, tls->cipher, pl);
        ssl[0] = (uint8_t)((size_t)(e + n - ssl - 2) >> 8);
        ssl[1] = (uint8_t)(e + n - ssl - 2);
    }
    e[14] = (uint8_t)((n - 16) >> 8);
    e[15] = (uint8_t)(n - 16);
    CHECK(n <= ecap);
    return (long)n;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const int versions[8] = { 1, 2, 1, 2, 1, 2, 0, 3 };
    struct fz f = { data, size };
    unsigned b0 = fz_u8(&f), b1 = fz_u8(&f), b2 = fz_u8(&f);
    int version = versions[b0 & 7], sfam = fams[b1 & 3], dfam = fams[(b1 >> 2) & 3], fam;
    size_t cap = fz_u16(&f) % 800, i;
    struct sockaddr_storage src, dst;
    struct mtlslb_tls_info tls;
    uint8_t e[2048], *out;
    long want;
    int rc;

    memset(&tls, 0, sizeof tls);
    tls.verify = (uint32_t)fz_u16(&f) << 16;
    tls.verify |= fz_u16(&f);
    tls.has_cert = (b1 >> 5) & 1;
    tls.resumed = (b1 >> 6) & 1;
    make_addr(&f, sfam, &src);
    make_addr(&f, dfam, &dst);
    tls.version = take_str(&f, b2 & 1);
    tls.cipher = take_str(&f, b2 & 2);
    tls.cn = take_str(&f, b2 & 4);
    tls.sni = take_str(&f, b2 & 8);
    fam = sfam == dfam && (sfam == AF_INET || sfam == AF_INET6) ? sfam : AF_UNSPEC;

    out = malloc(cap ? cap : 1);
    CHECK(out != NULL);
    memset(out, 0xA5, cap);
    rc = mtlslb_proxy_header(version, (struct sockaddr *)&src, (struct sockaddr *)&dst,
                             (b1 & 0x10) ? NULL : &tls, out, cap);
    want = version == 1 || version == 2
               ? expected(version, fam, &src, &dst, (b1 & 0x10) ? NULL : &tls, e, sizeof e)
               : -1;
    if (want > 0) {
        CHECK(want <= MTLSLB_PROXY_MAX);
        if ((size_t)want > cap)
            want = -1;
    }
    if (rc != want)
        fprintf(stderr, "version %d, families %d/%d, cap %zu: returned %d, expected %ld\n",
                version, sfam, dfam, cap, rc, want);
    CHECK(rc == want);
    if (rc > 0)
        CHECK(memcmp(out, e, (size_t)rc) == 0);
    for (i = rc > 0 ? (size_t)rc : 0; i < cap; i++)
        CHECK(out[i] == 0xA5);                      /* nothing written past the header */
    free(out);
    free((char *)tls.version);
    free((char *)tls.cipher);
    free((char *)tls.cn);
    free((char *)tls.sni);
    return 0;
}
