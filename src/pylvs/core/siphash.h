/*
 * siphash.h — the one SipHash implementation of the C core (Aumasson and Bernstein; the
 * kernel's lib/siphash.c): SipHash-2-4 for the SYN proxy's cookies (core/synproxy.c) and
 * hsiphash, which on 64-bit kernels is SipHash-1-3 with a 32-bit result, for the schedulers'
 * hashes (_sched_hash.c).
 *
 * Messages here are whole 64-bit words plus one final word that carries the byte length in its
 * top byte (and, for hsiphash_1u32, the 4-byte message itself), which is all either user needs.
 * Static inline so each caller's constant round counts unroll.
 */
#ifndef PYLVS_SIPHASH_H
#define PYLVS_SIPHASH_H

#include <stdint.h>

static inline uint64_t lvs_sip_rotl(uint64_t x, unsigned r)
{
    return (x << r) | (x >> (64 - r));
}

typedef struct lvs_sip {
    uint64_t v0, v1, v2, v3;
} lvs_sip;

static inline void lvs_sip_rounds(lvs_sip *s, int rounds)
{
    for (int i = 0; i < rounds; i++) {
        s->v0 += s->v1; s->v1 = lvs_sip_rotl(s->v1, 13); s->v1 ^= s->v0;
        s->v0 = lvs_sip_rotl(s->v0, 32);
        s->v2 += s->v3; s->v3 = lvs_sip_rotl(s->v3, 16); s->v3 ^= s->v2;
        s->v0 += s->v3; s->v3 = lvs_sip_rotl(s->v3, 21); s->v3 ^= s->v0;
        s->v2 += s->v1; s->v1 = lvs_sip_rotl(s->v1, 17); s->v1 ^= s->v2;
        s->v2 = lvs_sip_rotl(s->v2, 32);
    }
}

/* SipHash-c-d of the n words m[] followed by the final word `last` (the length byte on top);
 * returns the 64-bit v0 ^ v1 ^ v2 ^ v3. */
static inline uint64_t lvs_siphash(uint64_t k0, uint64_t k1, const uint64_t *m, int n,
                                   uint64_t last, int c, int d)
{
    lvs_sip s = {k0 ^ 0x736f6d6570736575ULL, k1 ^ 0x646f72616e646f6dULL,
                 k0 ^ 0x6c7967656e657261ULL, k1 ^ 0x7465646279746573ULL};
    for (int i = 0; i < n; i++) {
        s.v3 ^= m[i];
        lvs_sip_rounds(&s, c);
        s.v0 ^= m[i];
    }
    s.v3 ^= last;
    lvs_sip_rounds(&s, c);
    s.v0 ^= last;
    s.v2 ^= 0xff;
    lvs_sip_rounds(&s, d);
    return s.v0 ^ s.v1 ^ s.v2 ^ s.v3;
}

/* SipHash-2-4 of n 64-bit words (little-endian words of an 8n-byte message). */
static inline uint64_t lvs_siphash24(uint64_t k0, uint64_t k1, const uint64_t *m, int n)
{
    return lvs_siphash(k0, k1, m, n, (uint64_t)(n * 8) << 56, 2, 4);
}

/* The kernel's hsiphash_1u32 on 64-bit: SipHash-1-3 of one 4-byte word, 32 bits kept. */
static inline uint32_t lvs_hsiphash_1u32(uint32_t first, uint64_t k0, uint64_t k1)
{
    /* a 4-byte message has no full 8-byte block: it all goes into the final word */
    return (uint32_t)lvs_siphash(k0, k1, (const uint64_t *)0, 0, (uint64_t)4 << 56 | first,
                                 1, 3);
}

#endif /* PYLVS_SIPHASH_H */
