/*
 * _sched.c — IPVS schedulers with the kernel's exact semantics (see reference ipvs.md §1).
 *
 * Every scheduler walks svc->destinations in list order, which is the kernel's order: the most
 * recently added dest first.  "Eligible" means weight > 0 and OVERLOAD clear, unless a
 * scheduler's comment says otherwise.
 */
#include <stdlib.h>
#include <string.h>

#include "_core.h"

static inline int dest_eligible(const lvs_dest *d)
{
    return d->weight > 0 && !(d->flags & LVS_DEST_F_OVERLOAD);
}

/* ---- rr: resume just after the last dest picked (ip_vs_rr.c) ---- */

typedef struct rr_state {
    lvs_dest *last; /* NULL = start at the list head */
} rr_state;

static int rr_init(lvs_service *svc)
{
    svc->sched_data = calloc(1, sizeof(rr_state));
    return svc->sched_data ? 0 : -12;
}

static void rr_done(lvs_service *svc)
{
    free(svc->sched_data);
    svc->sched_data = NULL;
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

/* ---- wlc: minimum overhead/weight, first in list order wins ties (ip_vs_wlc.c) ---- */

static lvs_dest *wlc_schedule(lvs_service *svc, const lvs_sched_key *key, double now)
{
    (void)key;
    (void)now;
    lvs_dest *least = NULL;
    lvs_dest *d;
    for (d = svc->destinations; d; d = d->next) {
        if (dest_eligible(d)) {
            least = d;
            break;
        }
    }
    if (!least)
        return NULL;
    uint64_t loh = lvs_dest_overhead(least);
    for (d = least->next; d; d = d->next) {
        if (d->flags & LVS_DEST_F_OVERLOAD)
            continue;
        uint64_t doh = lvs_dest_overhead(d);
        if (loh * (uint64_t)(uint32_t)d->weight > doh * (uint64_t)(uint32_t)least->weight) {
            least = d;
            loh = doh;
        }
    }
    return least;
}

static const lvs_scheduler sched_rr = {
    .name = "rr",
    .init_service = rr_init,
    .done_service = rr_done,
    .del_dest = rr_del_dest,
    .schedule = rr_schedule,
};

static const lvs_scheduler sched_wlc = {
    .name = "wlc",
    .schedule = wlc_schedule,
};

static const lvs_scheduler *const registry[] = {
    &sched_rr,
    &sched_wlc,
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
