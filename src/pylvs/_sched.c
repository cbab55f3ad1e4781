/*
 * _sched.c — the list-walking IPVS schedulers (rr wrr lc wlc sed nq fo ovf twos) and the
 * registry.  The table schedulers live in _sched_hash.c (dh sh mh) and _sched_lblc.c
 * (lblc lblcr).  Semantics follow the kernel's ip_vs_*.c (docs/ipvs.md#schedulers).
 *
 * Every scheduler walks svc->destinations in list order, which is the kernel's order: the most
 * recently added dest first.  "Eligible" means weight > 0 and OVERLOAD clear, unless a
 * scheduler's comment says otherwise.
 *
 * Call order (engine contract, see core/lvs.h): add_dest after the dest is linked, del_dest BEFORE
 * it is unlinked (the kernel calls it after; every del_dest here therefore skips `dest`),
 * upd_dest after an edit.
 */
#include <stdlib.h>
#include <string.h>

#include "_sched.h"

static inline int dest_eligible(const lvs_dest *d)
{
    return d->weight > 0 && !(d->flags & LVS_DEST_F_OVERLOAD);
}

static void free_sched_data(lvs_service *svc)
{
    free(svc->sched_data);
    svc->sched_data = NULL;
}

/* ---- rr: resume just after the last dest picked (ip_vs_rr.c) ---- */

typedef struct rr_state {
    lvs_dest *last; /* NULL = start at the list head */
} rr_state;

static int rr_init(lvs_service *svc)
{
    svc->sched_data = calloc(1, sizeof(rr_state));
    return svc->sched_data ? 0 : -LVS_ENOMEM;
}

static int rr_del_dest(lvs_service *svc, lvs_dest *dest)
{
    rr_state *st = svc->sched_data;
    if (st->last == dest) {
        /* the kernel moves the cursor to the previous list entry (or the head) */
        lvs_dest *prev = NULL;
        for (lvs_dest *d = svc->destinations; d && d != dest; d = d->next)
            prev = d;
        st->last = prev;
    }
    return 0;
}

static lvs_dest *rr_schedule(lvs_service *svc, const lvs_sched_key *key, double now)
{
    (void)key;
    (void)now;
    rr_state *st = svc->sched_data;
    lvs_dest *start = st->last ? st->last->next : svc->destinations;
    /* one full lap at most, starting after the last pick and wrapping at the end */
    lvs_dest *d = start;
    for (uint32_t i = 0; i < svc->num_dests; i++) {
        if (!d)
            d = svc->destinations;
        if (dest_eligible(d)) {
            st->last = d;
            return d;
        }
        d = d->next;
    }
    return NULL;
}

/* ---- wrr: gcd / max-weight stepping (ip_vs_wrr.c) ---- */

typedef struct wrr_state {
    lvs_dest *cl; /* current dest; NULL = the list head */
    int32_t cw;   /* current weight */
    int32_t mw;   /* max weight - (di - 1) */
    int32_t di;   /* gcd of the weights > 0 */
} wrr_state;

static int32_t gcd32(int32_t a, int32_t b)
{
    while (b) {
        int32_t t = a % b;
        a = b;
        b = t;
    }
    return a;
}

/* Recompute di and mw over the list without `skip` (a dest about to be unlinked). */
static void wrr_recompute(wrr_state *st, const lvs_service *svc, const lvs_dest *skip)
{
    int32_t g = 0, mw = 0;
    for (const lvs_dest *d = svc->destinations; d; d = d->next) {
        if (d == skip)
            continue;
        if (d->weight > 0)
            g = g ? gcd32(d->weight, g) : d->weight;
        if (d->weight > mw)
            mw = d->weight;
    }
    st->di = g ? g : 1;
    st->mw = mw - (st->di - 1);
}

static int wrr_init(lvs_service *svc)
{
    wrr_state *st = calloc(1, sizeof(*st));
    if (!st)
        return -LVS_ENOMEM;
    wrr_recompute(st, svc, NULL);
    st->cw = st->mw;
    svc->sched_data = st;
    return 0;
}

static void wrr_changed(lvs_service *svc, const lvs_dest *skip)
{
    wrr_state *st = svc->sched_data;
    st->cl = NULL;
    wrr_recompute(st, svc, skip);
    if (st->cw > st->mw || !st->cw)
        st->cw = st->mw;
    else if (st->di > 1)
        st->cw = (st->cw / st->di) * st->di + 1;
}

static int wrr_add_upd(lvs_service *svc, lvs_dest *dest)
{
    (void)dest;
    wrr_changed(svc, NULL);
    return 0;
}

static int wrr_del(lvs_service *svc, lvs_dest *dest)
{
    wrr_changed(svc, dest);
    return 0;
}

static lvs_dest *wrr_schedule(lvs_service *svc, const lvs_sched_key *key, double now)
{
    (void)key;
    (void)now;
    wrr_state *st = svc->sched_data;
    lvs_dest *d = st->cl;
    if (st->mw == 0)
        return NULL;
    lvs_dest *last = d, *stop = NULL;
    int last_pass = 0, restarted = 0;
    for (;;) {
        for (lvs_dest *p = d ? d->next : svc->destinations; p; p = p->next) {
            if (!(p->flags & LVS_DEST_F_OVERLOAD) && p->weight >= st->cw) {
                st->cl = p;
                return p;
            }
            if (p == stop) {
                st->cl = p;
                return NULL; /* all overloaded */
            }
        }
        d = NULL; /* fell off the end: back at the head */
        st->cw -= st->di;
        if (st->cw <= 0) {
            st->cw = st->mw;
            /* a full pass at weight >= 1 already covered every dest */
            if (last_pass || last == NULL) {
                st->cl = NULL;
                return NULL;
            }
            restarted = 1;
        }
        last_pass = st->cw <= st->di;
        if (last_pass && restarted && last != NULL)
            stop = last; /* the first weight >= 1 pass began after `last`; finish at it */
    }
}

/* ---- lc: minimum overhead, strict < (ip_vs_lc.c) ---- */

static lvs_dest *lc_schedule(lvs_service *svc, const lvs_sched_key *key, double now)
{
    (void)key;
    (void)now;
    lvs_dest *least = NULL;
    uint32_t loh = 0;
    for (lvs_dest *d = svc->destinations; d; d = d->next) {
        if ((d->flags & LVS_DEST_F_OVERLOAD) || d->weight == 0)
            continue;
        uint32_t doh = lvs_dest_overhead(d);
        if (!least || doh < loh) {
            least = d;
            loh = doh;
        }
    }
    return least;
}

/* ---- wlc: minimum overhead/weight, first in list order wins ties (ip_vs_wlc.c) ---- */

/* One loop body for wlc and sed: `overhead` is the per-dest cost. */
#define WEIGHTED_LEAST(svc, overhead)                                                          \
    do {                                                                                       \
        lvs_dest *least = NULL, *d;                                                            \
        for (d = (svc)->destinations; d; d = d->next) {                                        \
            if (dest_eligible(d)) {                                                            \
                least = d;                                                                     \
                break;                                                                         \
            }                                                                                  \
        }                                                                                      \
        if (!least)                                                                            \
            return NULL;                                                                       \
        /* a weight-0 dest is not skipped here, but loh * 0 > x never holds */                 \
        uint64_t loh = (overhead)(least);                                                      \
        for (d = least->next; d; d = d->next) {                                                \
            if (d->flags & LVS_DEST_F_OVERLOAD)                                                \
                continue;                                                                      \
            uint64_t doh = (overhead)(d);                                                      \
            if (loh * (uint64_t)(uint32_t)d->weight > doh * (uint64_t)(uint32_t)least->weight) { \
                least = d;                                                                     \
                loh = doh;                                                                     \
            }                                                                                  \
        }                                                                                      \
        return least;                                                                          \
    } while (0)

static inline uint64_t wlc_overhead(const lvs_dest *d)
{
    return lvs_dest_overhead(d);
}

static inline uint64_t sed_overhead(const lvs_dest *d)
{
    return (uint64_t)d->activeconns + 1;
}

lvs_dest *lvs_wlc_pick(lvs_service *svc)
{
    WEIGHTED_LEAST(svc, wlc_overhead);
}

static lvs_dest *wlc_schedule(lvs_service *svc, const lvs_sched_key *key, double now)
{
    (void)key;
    (void)now;
    return lvs_wlc_pick(svc);
}

/* ---- sed: wlc with overhead = active + 1 (ip_vs_sed.c) ---- */

static lvs_dest *sed_schedule(lvs_service *svc, const lvs_sched_key *key, double now)
{
    (void)key;
    (void)now;
    WEIGHTED_LEAST(svc, sed_overhead);
}

/* ---- nq: first idle eligible dest, else sed's rule (ip_vs_nq.c) ---- */

static lvs_dest *nq_schedule(lvs_service *svc, const lvs_sched_key *key, double now)
{
    (void)key;
    (void)now;
    lvs_dest *least = NULL;
    uint64_t loh = 0;
    for (lvs_dest *d = svc->destinations; d; d = d->next) {
        if ((d->flags & LVS_DEST_F_OVERLOAD) || d->weight == 0)
            continue;
        uint64_t doh = sed_overhead(d);
        if (d->activeconns == 0)
            return d;
        if (!least ||
            loh * (uint64_t)(uint32_t)d->weight > doh * (uint64_t)(uint32_t)least->weight) {
            least = d;
            loh = doh;
        }
    }
    return least;
}

/* ---- fo: highest weight, strict > from 0 (ip_vs_fo.c) ---- */

static lvs_dest *fo_schedule(lvs_service *svc, const lvs_sched_key *key, double now)
{
    (void)key;
    (void)now;
    lvs_dest *best = NULL;
    int32_t hw = 0;
    for (lvs_dest *d = svc->destinations; d; d = d->next) {
        if (!(d->flags & LVS_DEST_F_OVERLOAD) && d->weight > hw) {
            best = d;
            hw = d->weight;
        }
    }
    return best;
}

/* ---- ovf: highest weight among dests with active <= weight (ip_vs_ovf.c) ---- */

static lvs_dest *ovf_schedule(lvs_service *svc, const lvs_sched_key *key, double now)
{
    (void)key;
    (void)now;
    lvs_dest *best = NULL;
    int32_t hw = 0;
    for (lvs_dest *d = svc->destinations; d; d = d->next) {
        int32_t w = d->weight;
        if ((d->flags & LVS_DEST_F_OVERLOAD) || (int64_t)d->activeconns > w || w == 0)
            continue;
        if (!best || w > hw) {
            best = d;
            hw = w;
        }
    }
    return best;
}

/* ---- twos: power of two random choices, weighted (ip_vs_twos.c) ---- */

/* xorshift64* — the kernel draws from prandom; any uniform 32-bit source keeps the rule.
 * svc->rng_state must be non-zero (the engine seeds it; 0 is replaced by a fixed constant). */
static uint32_t twos_rand(lvs_service *svc)
{
    uint64_t x = svc->rng_state ? svc->rng_state : 0x9E3779B97F4A7C15ull;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    svc->rng_state = x;
    return (uint32_t)((x * 0x2545F4914F6CDD1Dull) >> 32);
}

static lvs_dest *twos_schedule(lvs_service *svc, const lvs_sched_key *key, double now)
{
    (void)key;
    (void)now;
    lvs_dest *choice1 = NULL, *choice2 = NULL;
    int64_t total = 0, weight1 = -1, weight2 = -1, overhead1 = 0, overhead2 = 0;
    lvs_dest *d;
    for (d = svc->destinations; d; d = d->next) {
        if (dest_eligible(d)) {
            total += d->weight;
            choice1 = d;
        }
    }
    if (!choice1)
        return NULL;
    total += 1; /* both draws are inclusive of the total */
    int64_t r1 = twos_rand(svc) % (uint64_t)total;
    int64_t r2 = twos_rand(svc) % (uint64_t)total;
    for (d = svc->destinations; d; d = d->next) {
        if (!dest_eligible(d))
            continue;
        r1 -= d->weight;
        r2 -= d->weight;
        if (r1 <= 0 && weight1 == -1) {
            choice1 = d;
            weight1 = d->weight;
            overhead1 = lvs_dest_overhead(d);
        }
        if (r2 <= 0 && weight2 == -1) {
            choice2 = d;
            weight2 = d->weight;
            overhead2 = lvs_dest_overhead(d);
        }
        if (weight1 != -1 && weight2 != -1)
            break;
    }
    if (choice2 && weight2 * overhead1 > weight1 * overhead2)
        choice1 = choice2;
    return choice1;
}

/* ---- the scheduler table ---- */

const lvs_scheduler lvs_sched_rr = {
    .name = "rr",
    .init_service = rr_init,
    .done_service = free_sched_data,
    .del_dest = rr_del_dest,
    .schedule = rr_schedule,
};

const lvs_scheduler lvs_sched_wrr = {
    .name = "wrr",
    .init_service = wrr_init,
    .done_service = free_sched_data,
    .add_dest = wrr_add_upd,
    .del_dest = wrr_del,
    .upd_dest = wrr_add_upd,
    .schedule = wrr_schedule,
};

const lvs_scheduler lvs_sched_lc = {.name = "lc", .schedule = lc_schedule};
const lvs_scheduler lvs_sched_wlc = {.name = "wlc", .schedule = wlc_schedule};
const lvs_scheduler lvs_sched_sed = {.name = "sed", .schedule = sed_schedule};
const lvs_scheduler lvs_sched_nq = {.name = "nq", .schedule = nq_schedule};
const lvs_scheduler lvs_sched_fo = {.name = "fo", .schedule = fo_schedule};
const lvs_scheduler lvs_sched_ovf = {.name = "ovf", .schedule = ovf_schedule};
const lvs_scheduler lvs_sched_twos = {.name = "twos", .schedule = twos_schedule};

static const lvs_scheduler *const registry[] = {
    &lvs_sched_rr,  &lvs_sched_wrr,  &lvs_sched_lc,   &lvs_sched_wlc,  &lvs_sched_sed,
    &lvs_sched_nq,  &lvs_sched_lblc, &lvs_sched_lblcr, &lvs_sched_dh,  &lvs_sched_sh,
    &lvs_sched_mh,  &lvs_sched_fo,   &lvs_sched_ovf,  &lvs_sched_twos,
};

#define N_SCHED (sizeof(registry) / sizeof(registry[0]))

const lvs_scheduler *lvs_sched_find(const char *name)
{
    for (size_t i = 0; i < N_SCHED; i++)
        if (strcmp(registry[i]->name, name) == 0)
            return registry[i];
    return NULL;
}

const char *const *lvs_sched_names(void)
{
    static const char *names[N_SCHED + 1];
    for (size_t i = 0; i < N_SCHED; i++)
        names[i] = registry[i]->name;
    names[N_SCHED] = NULL;
    return names;
}
