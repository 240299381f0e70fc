/*
 * fuzz.h - what every fuzz target shares (tests/fuzz/README).
 *
 * Each target defines LLVMFuzzerTestOneInput and is linked with mtlslb.c
 * (its main() renamed mtlslb_main) and either libFuzzer (run.sh fuzz) or
 * driver.c (run.sh regress).  A broken property aborts, so libFuzzer saves
 * the input and run.sh regress fails.
 */
#ifndef MTLSLB_FUZZ_H
#define MTLSLB_FUZZ_H

#define _POSIX_C_SOURCE 200809L
#define _DEFAULT_SOURCE

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mtlslb.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond)                                                                     \
    do {                                                                                \
        if (!(cond)) {                                                                  \
            fprintf(stderr, "%s:%d: property broken: %s\n", __FILE__, __LINE__, #cond);  \
            abort();                                                                    \
        }                                                                               \
    } while (0)

/* An exact-size heap copy, so AddressSanitizer sees any read past the end. */
static inline char *fz_copy(const void *p, size_t n)
{
    char *c = malloc(n ? n : 1);

    CHECK(c != NULL);
    if (n)
        memcpy(c, p, n);
    return c;
}

/* The same with a terminating NUL. */
static inline char *fz_str(const void *p, size_t n)
{
    char *c = malloc(n + 1);

    CHECK(c != NULL);
    if (n)
        memcpy(c, p, n);
    c[n] = 0;
    return c;
}

/* Reading fuzz bytes in order; zeros once they run out. */
struct fz {
    const uint8_t *p;
    size_t n;
};

static inline unsigned fz_u8(struct fz *f)
{
    if (!f->n)
        return 0;
    f->n--;
    return *f->p++;
}

static inline unsigned fz_u16(struct fz *f)
{
    unsigned v = fz_u8(f) << 8;

    return v | fz_u8(f);
}

static inline void fz_bytes(struct fz *f, void *out, size_t n)
{
    size_t k = n < f->n ? n : f->n;

    if (k)
        memcpy(out, f->p, k);
    memset((uint8_t *)out + k, 0, n - k);
    f->p += k;
    f->n -= k;
}

#endif
