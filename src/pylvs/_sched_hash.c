/*
 * _sched_hash.c — the static-table schedulers: dh, sh (ip_vs_dh.c, ip_vs_sh.c) and mh, Maglev
 * hashing (ip_vs_mh.c); the two kernel hashes they use are hash_32 (_sched.h) and hsiphash
 * (core/siphash.h).
 *
 * Tables hold plain pointers to linked dests only: they are rebuilt on every add/del/upd, and
 * del_dest is called before the dest is unlinked, so each rebuild here skips that dest.
 */
#include <stdlib.h>
#include <string.h>

#include "_sched.h"

#define HASH_TAB_BITS 8
#define HASH_TAB_SIZE (1u << HASH_TAB_BITS)
#define HASH_TAB_MASK (HASH_TAB_SIZE - 1)
#define LVS_PROTO_SCTP 132

/* The first dest after `d` in list order that is not `skip` (d == NULL: from the head). */
static lvs_dest *next_kept(const lvs_service *svc, lvs_dest *d, const lvs_dest *skip)
{
    d = d ? d->next : svc->destinations;
    while (d && d == skip)
        d = d->next;
    return d;
}

/* The source port when a flag asks for it: only TCP/UDP/SCTP carry ports (ip_vs_sh_get_port). */
static uint16_t hash_port(const lvs_service *svc, const lvs_sched_key *key)
{
    if (!(svc->flags & LVS_SVC_F_SCHED2))
        return 0;
    if (key->proto == LVS_PROTO_TCP || key->proto == LVS_PROTO_UDP || key->proto == LVS_PROTO_SCTP)
        return key->sport;
    return 0;
}

static inline int unavailable(const lvs_dest *d)
{
    return d->weight <= 0 || (d->flags & LVS_DEST_F_OVERLOAD);
}

/* ---- dh: 256 buckets, one per dest in turn, keyed by the destination address ---- */

typedef struct hash_state {
    lvs_dest *buckets[HASH_TAB_SIZE];
} hash_state;

static void dh_reassign(hash_state *s, const lvs_service *svc, const lvs_dest *skip)
{
    lvs_dest *p = NULL;
    for (uint32_t i = 0; i < HASH_TAB_SIZE; i++) {
        p = next_kept(svc, p, skip);
        if (!p)
            p = next_kept(svc, NULL, skip); /* wrap; stays NULL when the list is empty */
        s->buckets[i] = p;
    }
}

static int dh_init(lvs_service *svc)
{
    hash_state *s = calloc(1, sizeof(*s));
    if (!s)
        return -LVS_ENOMEM;
    dh_reassign(s, svc, NULL);
    svc->sched_data = s;
    return 0;
}

static void hash_done(lvs_service *svc)
{
    free(svc->sched_data);
    svc->sched_data = NULL;
}

static int dh_add_upd(lvs_service *svc, lvs_dest *dest)
{
    (void)dest;
    dh_reassign(svc->sched_data, svc, NULL);
    return 0;
}

static int dh_del(lvs_service *svc, lvs_dest *dest)
{
    dh_reassign(svc->sched_data, svc, dest);
    return 0;
}

static lvs_dest *dh_schedule(lvs_service *svc, const lvs_sched_key *key, double now)
{
    (void)now;
    hash_state *s = svc->sched_data;
    lvs_dest *d = s->buckets[lvs_hash_32(lvs_addr_fold(key->af, key->daddr), HASH_TAB_BITS)];
    if (!d || !(d->flags & LVS_DEST_F_AVAILABLE) || unavailable(d))
        return NULL;
    return d;
}

/* ---- sh: 256 buckets, max(weight, 1) consecutive buckets per dest, keyed by the source ---- */

static void sh_reassign(hash_state *s, const lvs_service *svc, const lvs_dest *skip)
{
    lvs_dest *p = next_kept(svc, NULL, skip);
    int32_t d_count = 0;
    for (uint32_t i = 0; i < HASH_TAB_SIZE; i++) {
        if (!p) {
            /* the list is empty (p only becomes NULL on an empty list; it wraps otherwise) */
            s->buckets[i] = NULL;
            continue;
        }
        s->buckets[i] = p;
        if (++d_count >= p->weight) {
            p = next_kept(svc, p, skip);
            if (!p)
                p = next_kept(svc, NULL, skip);
            d_count = 0;
        }
    }
}

static int sh_init(lvs_service *svc)
{
    hash_state *s = calloc(1, sizeof(*s));
    if (!s)
        return -LVS_ENOMEM;
    sh_reassign(s, svc, NULL);
    svc->sched_data = s;
    return 0;
}

static int sh_add_upd(lvs_service *svc, lvs_dest *dest)
{
    (void)dest;
    sh_reassign(svc->sched_data, svc, NULL);
    return 0;
}

static int sh_del(lvs_service *svc, lvs_dest *dest)
{
    sh_reassign(svc->sched_data, svc, dest);
    return 0;
}

static inline uint32_t sh_hashkey(uint32_t addr, uint16_t port, uint32_t offset)
{
    return (offset + lvs_hash_32((uint32_t)port + addr, HASH_TAB_BITS)) & HASH_TAB_MASK;
}

static lvs_dest *sh_schedule(lvs_service *svc, const lvs_sched_key *key, double now)
{
    (void)now;
    hash_state *s = svc->sched_data;
    uint16_t port = hash_port(svc, key);
    uint32_t ihash = sh_hashkey(lvs_addr_fold(key->af, key->saddr), port, 0);
    lvs_dest *d = s->buckets[ihash];
    if (!(svc->flags & LVS_SVC_F_SCHED1))
        return (!d || unavailable(d)) ? NULL : d;
    /* sh-fallback: re-hash with a rotating offset that starts at the original bucket */
    if (!d)
        return NULL;
    if (!unavailable(d))
        return d;
    for (uint32_t offset = 0; offset < HASH_TAB_SIZE; offset++) {
        uint32_t roffset = (offset + ihash) % HASH_TAB_SIZE;
        d = s->buckets[sh_hashkey(lvs_addr_fold(key->af, key->saddr), port, roffset)];
        if (!d)
            break;
        if (!unavailable(d))
            return d;
    }
    return NULL;
}

/* ---- mh: Maglev lookup table of a prime size, built from last_weight ---- */

#define MH_DEFAULT_SIZE 4093u
#define MH_MAX_SIZE LVS_MH_MAX_SIZE
static const uint64_t MH_K1 = 2654435761ull, MH_K2 = 2654446892ull;

typedef struct mh_state {
    lvs_dest **lookup;
    uint8_t *taken;   /* scratch bitmap for populate, one byte a slot */
    uint32_t size;    /* M, a prime */
    int tab_bits;     /* bit_length(M) / 2: the kernel's CONFIG_IP_VS_MH_TAB_INDEX / 2 */
    /* scratch for one rebuild, sized to the dest count */
    uint32_t *perm, *skip;
    int32_t *turns;
    lvs_dest **dests;
    uint32_t cap;
} mh_state;

int lvs_is_prime(uint32_t n)
{
    if (n < 2)
        return 0;
    for (uint32_t f = 2; f * f <= n; f++)
        if (n % f == 0)
            return 0;
    return 1;
}

static int fls32(uint32_t x)
{
    return x ? 32 - __builtin_clz(x) : 0;
}

static inline uint32_t mh_hashkey(uint32_t addr, uint16_t port, uint64_t k, uint32_t offset)
{
    return lvs_hsiphash_1u32(offset + (uint32_t)port + addr, k, k);
}

static int mh_reassign(mh_state *s, const lvs_service *svc, const lvs_dest *skip)
{
    uint32_t nd = 0;
    int32_t g = 0, maxw = 0;
    for (lvs_dest *d = svc->destinations; d; d = d->next) {
        if (d == skip)
            continue;
        nd++;
        int32_t lw = d->last_weight;
        if (lw > 0) {
            int32_t a = lw, b = g;
            while (b) {
                int32_t t = a % b;
                a = b;
                b = t;
            }
            g = g ? a : lw;
        }
        if (lw > maxw)
            maxw = lw;
    }
    if (nd > s->size)
        return -LVS_EINVAL;
    if (g < 1) {
        /* no dest, or every last_weight is 0: an empty table */
        memset(s->lookup, 0, s->size * sizeof(*s->lookup));
        return 0;
    }
    if (nd > s->cap) {
        uint32_t cap = nd * 2;
        uint32_t *perm = realloc(s->perm, cap * sizeof(*perm));
        if (perm)
            s->perm = perm;
        uint32_t *skp = realloc(s->skip, cap * sizeof(*skp));
        if (skp)
            s->skip = skp;
        int32_t *turns = realloc(s->turns, cap * sizeof(*turns));
        if (turns)
            s->turns = turns;
        lvs_dest **dests = realloc(s->dests, cap * sizeof(*dests));
        if (dests)
            s->dests = dests;
        if (!perm || !skp || !turns || !dests)
            return -LVS_ENOMEM;
        s->cap = cap;
    }
    int shift = fls32((uint32_t)(maxw / g)) - s->tab_bits;
    int rshift = shift > 0 ? shift : 0;
    uint32_t i = 0;
    for (lvs_dest *d = svc->destinations; d; d = d->next) {
        if (d == skip)
            continue;
        s->dests[i] = d;
        s->perm[i] = mh_hashkey(lvs_addr_fold(d->af, d->addr), d->port, MH_K1, 0) % s->size;
        s->skip[i] = mh_hashkey(lvs_addr_fold(d->af, d->addr), d->port, MH_K2, 0) % (s->size - 1) + 1;
        int32_t lw = d->last_weight;
        int32_t t = (lw / g) >> rshift;
        s->turns[i] = t ? t : (lw != 0);
        i++;
    }
    /* populate: round-robin over the dests, each claiming `turns` slots in a row, each slot
     * the next free position of its own permutation */
    memset(s->taken, 0, s->size);
    uint32_t n = 0;
    int32_t dt_count = 0;
    for (;;) {
        for (i = 0; i < nd;) {
            if (s->turns[i] < 1) {
                i++;
                continue;
            }
            uint32_t c = s->perm[i];
            while (s->taken[c]) {
                s->perm[i] += s->skip[i];
                if (s->perm[i] >= s->size)
                    s->perm[i] -= s->size;
                c = s->perm[i];
            }
            s->taken[c] = 1;
            s->lookup[c] = s->dests[i];
            if (++n == s->size)
                return 0;
            if (++dt_count >= s->turns[i]) {
                dt_count = 0;
                i++;
            }
        }
    }
}

static void mh_free(mh_state *s)
{
    free(s->lookup);
    free(s->taken);
    free(s->perm);
    free(s->skip);
    free(s->turns);
    free(s->dests);
    free(s);
}

static int mh_init(lvs_service *svc)
{
    uint32_t m = svc->sched_params.mh_table_size ? svc->sched_params.mh_table_size
                                                 : MH_DEFAULT_SIZE;
    if (m < 3 || m > MH_MAX_SIZE || !lvs_is_prime(m))
        return -LVS_EINVAL;
    mh_state *s = calloc(1, sizeof(*s));
    if (!s)
        return -LVS_ENOMEM;
    s->size = m;
    s->tab_bits = fls32(m) / 2;
    s->lookup = calloc(m, sizeof(*s->lookup));
    s->taken = malloc(m);
    if (!s->lookup || !s->taken) {
        mh_free(s);
        return -LVS_ENOMEM;
    }
    int rc = mh_reassign(s, svc, NULL);
    if (rc < 0) {
        mh_free(s);
        return rc;
    }
    svc->sched_data = s;
    return 0;
}

static void mh_done(lvs_service *svc)
{
    mh_free(svc->sched_data);
    svc->sched_data = NULL;
}

static int mh_add_upd(lvs_service *svc, lvs_dest *dest)
{
    (void)dest;
    return mh_reassign(svc->sched_data, svc, NULL);
}

static int mh_del(lvs_service *svc, lvs_dest *dest)
{
    return mh_reassign(svc->sched_data, svc, dest);
}

static lvs_dest *mh_schedule(lvs_service *svc, const lvs_sched_key *key, double now)
{
    (void)now;
    mh_state *s = svc->sched_data;
    uint16_t port = hash_port(svc, key);
    uint32_t ihash = mh_hashkey(lvs_addr_fold(key->af, key->saddr), port, MH_K1, 0) % s->size;
    lvs_dest *d = s->lookup[ihash];
    if (!(svc->flags & LVS_SVC_F_SCHED1))
        return (!d || unavailable(d)) ? NULL : d;
    if (!d)
        return NULL;
    if (!unavailable(d))
        return d;
    for (uint32_t offset = 0; offset < s->size; offset++) {
        uint32_t roffset = (offset + ihash) % s->size;
        d = s->lookup[mh_hashkey(lvs_addr_fold(key->af, key->saddr), port, MH_K1, roffset) % s->size];
        if (!d)
            break;
        if (!unavailable(d))
            return d;
    }
    return NULL;
}

const lvs_scheduler lvs_sched_dh = {
    .name = "dh",
    .init_service = dh_init,
    .done_service = hash_done,
    .add_dest = dh_add_upd,
    .del_dest = dh_del,
    .upd_dest = dh_add_upd,
    .schedule = dh_schedule,
};

const lvs_scheduler lvs_sched_sh = {
    .name = "sh",
    .init_service = sh_init,
    .done_service = hash_done,
    .add_dest = sh_add_upd,
    .del_dest = sh_del,
    .upd_dest = sh_add_upd,
    .schedule = sh_schedule,
};

const lvs_scheduler lvs_sched_mh = {
    .name = "mh",
    .init_service = mh_init,
    .done_service = mh_done,
    .add_dest = mh_add_upd,
    .del_dest = mh_del,
    .upd_dest = mh_add_upd,
    .schedule = mh_schedule,
};

/* ---- inspection (tests, harness) ---- */

uint32_t lvs_sched_table_size(const lvs_service *svc)
{
    if (svc->sched == &lvs_sched_dh || svc->sched == &lvs_sched_sh)
        return HASH_TAB_SIZE;
    if (svc->sched == &lvs_sched_mh)
        return ((const mh_state *)svc->sched_data)->size;
    return 0;
}

lvs_dest *lvs_sched_table_slot(const lvs_service *svc, uint32_t i)
{
    if (i >= lvs_sched_table_size(svc))
        return NULL;
    if (svc->sched == &lvs_sched_mh)
        return ((const mh_state *)svc->sched_data)->lookup[i];
    return ((const hash_state *)svc->sched_data)->buckets[i];
}
