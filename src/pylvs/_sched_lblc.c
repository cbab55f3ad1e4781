/*
 * _sched_lblc.c — locality-based least-connection schedulers, keyed by the packet's
 * destination address (ip_vs_lblc.c, ip_vs_lblcr.c; docs/ipvs.md#lblc, #lblcr).
 *
 * lblc caches daddr -> dest; lblcr caches daddr -> a set of dests that grows when its best
 * member is overloaded and sheds its most loaded member once the set has not changed for
 * lblc_expiration seconds.
 *
 * References: like the kernel (ip_vs_dest_hold), every cached pointer holds dest->refcnt, so a
 * removed dest stays in the engine's trash while a cache entry names it.  A cache hit on such
 * a dest fails its AVAILABLE test and is rescheduled; re-adding the same server revives the
 * same struct and the cache entry becomes valid again.  The engine must free a removed dest
 * only once refcnt is 0 (the refcnt can drop to 0 inside schedule, tick or done_service).
 *
 * Garbage collection (tick): the kernel's 60 s timer.  The timer is armed by the first tick or
 * schedule call (init_service has no clock) and re-armed 60 s after each run.
 */
#include <stdlib.h>

#include "_sched.h"

#define LBLC_TAB_BITS 10
#define LBLC_TAB_SIZE (1u << LBLC_TAB_BITS)
#define LBLC_TAB_MASK (LBLC_TAB_SIZE - 1)
#define LBLC_MAX_SIZE (LBLC_TAB_SIZE * 16)
#define CHECK_EXPIRE_INTERVAL 60.0
#define ENTRY_TIMEOUT 360.0
#define DEFAULT_EXPIRATION 86400.0
#define COUNT_FOR_FULL_EXPIRATION 30

typedef struct set_elem {
    struct set_elem *next;
    lvs_dest *dest;
} set_elem;

typedef struct lblc_entry {
    struct lblc_entry *next; /* bucket chain, newest first */
    lvs_addr addr;           /* destination address, host order (the service's family) */
    double lastuse;
    lvs_dest *dest;          /* lblc */
    set_elem *set;           /* lblcr: newest member first */
    uint32_t set_size;
    double lastmod;
} lblc_entry;

typedef struct lblc_table {
    lblc_entry *bucket[LBLC_TAB_SIZE];
    uint32_t entries;
    uint32_t rover;
    uint32_t counter;
    int replicated; /* 1 = lblcr */
    int armed;
    double next_check;
} lblc_table;

static inline void hold(lvs_dest *d)
{
    d->refcnt++;
}

static inline void put(lvs_dest *d)
{
    d->refcnt--;
}

static double expiration(const lvs_service *svc)
{
    double e = svc->sched_params.lblc_expiration;
    return e > 0 ? e : DEFAULT_EXPIRATION;
}

static void entry_free(lblc_entry *en)
{
    if (en->dest)
        put(en->dest);
    for (set_elem *e = en->set, *nx; e; e = nx) {
        nx = e->next;
        put(e->dest);
        free(e);
    }
    free(en);
}

/* ip_vs_lblc_hashkey: the kernel's fold of an IPv6 address; entries compare whole addresses */
static inline uint32_t entry_hash(uint8_t af, lvs_addr addr)
{
    return lvs_hash_32(lvs_addr_fold(af, addr), LBLC_TAB_BITS);
}

static lblc_entry *entry_get(lblc_table *t, uint8_t af, lvs_addr addr)
{
    for (lblc_entry *en = t->bucket[entry_hash(af, addr)]; en; en = en->next)
        if (lvs_addr_eq(en->addr, addr))
            return en;
    return NULL;
}

static lblc_entry *entry_new(lblc_table *t, uint8_t af, lvs_addr addr, double now)
{
    lblc_entry *en = calloc(1, sizeof(*en));
    if (!en)
        return NULL;
    en->addr = addr;
    en->lastuse = now;
    uint32_t h = entry_hash(af, addr);
    en->next = t->bucket[h];
    t->bucket[h] = en;
    t->entries++;
    return en;
}

/* Drop, from bucket j, every entry whose lastuse + timeout is not after now; returns count. */
static int sweep_bucket(lblc_table *t, uint32_t j, double now, double timeout)
{
    int dropped = 0;
    lblc_entry **pp = &t->bucket[j];
    while (*pp) {
        lblc_entry *en = *pp;
        if (now < en->lastuse + timeout) {
            pp = &en->next;
            continue;
        }
        *pp = en->next;
        entry_free(en);
        t->entries--;
        dropped++;
    }
    return dropped;
}

static void check_expire(lblc_table *t, const lvs_service *svc, double now)
{
    uint32_t i, j;
    if (t->counter % COUNT_FOR_FULL_EXPIRATION == 0) {
        for (i = 0, j = t->rover; i < LBLC_TAB_SIZE; i++) {
            j = (j + 1) & LBLC_TAB_MASK;
            sweep_bucket(t, j, now, expiration(svc));
        }
        t->rover = j;
        t->counter = 1;
        return;
    }
    if (t->entries <= LBLC_MAX_SIZE) {
        t->counter++;
        return;
    }
    int goal = (int)((t->entries - LBLC_MAX_SIZE) * 4 / 3);
    if (goal > (int)(LBLC_MAX_SIZE / 2))
        goal = (int)(LBLC_MAX_SIZE / 2);
    for (i = 0, j = t->rover; i < LBLC_TAB_SIZE; i++) {
        j = (j + 1) & LBLC_TAB_MASK;
        goal -= sweep_bucket(t, j, now, ENTRY_TIMEOUT);
        if (goal <= 0)
            break;
    }
    t->rover = j;
}

static void arm(lblc_table *t, double now)
{
    if (!t->armed) {
        t->armed = 1;
        t->next_check = now + CHECK_EXPIRE_INTERVAL;
    }
}

static void lblc_tick(lvs_service *svc, double now)
{
    lblc_table *t = svc->sched_data;
    if (!t->armed) {
        arm(t, now);
        return;
    }
    if (now >= t->next_check) {
        check_expire(t, svc, now);
        t->next_check = now + CHECK_EXPIRE_INTERVAL;
    }
}

static int table_init(lvs_service *svc, int replicated)
{
    lblc_table *t = calloc(1, sizeof(*t));
    if (!t)
        return -LVS_ENOMEM;
    t->counter = 1;
    t->replicated = replicated;
    svc->sched_data = t;
    return 0;
}

static int lblc_init(lvs_service *svc)
{
    return table_init(svc, 0);
}

static int lblcr_init(lvs_service *svc)
{
    return table_init(svc, 1);
}

static void lblc_done(lvs_service *svc)
{
    lblc_table *t = svc->sched_data;
    for (uint32_t i = 0; i < LBLC_TAB_SIZE; i++) {
        for (lblc_entry *en = t->bucket[i], *nx; en; en = nx) {
            nx = en->next;
            entry_free(en);
        }
    }
    free(t);
    svc->sched_data = NULL;
}

/* Above its weight while some dest of the service is under half of its weight. */
static int is_overloaded(const lvs_dest *dest, const lvs_service *svc)
{
    if ((int64_t)dest->activeconns > dest->weight) {
        for (const lvs_dest *d = svc->destinations; d; d = d->next)
            if ((int64_t)d->activeconns * 2 < d->weight)
                return 1;
    }
    return 0;
}

static lvs_dest *lblc_schedule(lvs_service *svc, const lvs_sched_key *key, double now)
{
    lblc_table *t = svc->sched_data;
    arm(t, now);
    lblc_entry *en = entry_get(t, key->af, key->daddr);
    if (en) {
        en->lastuse = now;
        lvs_dest *d = en->dest;
        /* the cache hit checks AVAILABLE and weight but not the OVERLOAD flag */
        if ((d->flags & LVS_DEST_F_AVAILABLE) && d->weight > 0 && !is_overloaded(d, svc))
            return d;
    }
    lvs_dest *d = lvs_wlc_pick(svc);
    if (!d)
        return NULL;
    if (!en) {
        en = entry_new(t, key->af, key->daddr, now);
        if (!en)
            return d; /* no memory for the cache: still use the dest */
    } else if (en->dest != d) {
        put(en->dest);
        en->dest = NULL;
    }
    if (!en->dest) {
        hold(d);
        en->dest = d;
    }
    return d;
}

/* ---- lblcr's dest sets ---- */

static void set_insert(lblc_entry *en, lvs_dest *d, double now)
{
    for (set_elem *e = en->set; e; e = e->next)
        if (e->dest == d)
            return;
    set_elem *e = malloc(sizeof(*e));
    if (!e)
        return;
    hold(d);
    e->dest = d;
    e->next = en->set;
    en->set = e;
    en->set_size++;
    en->lastmod = now;
}

static void set_erase(lblc_entry *en, const lvs_dest *d, double now)
{
    for (set_elem **pp = &en->set; *pp; pp = &(*pp)->next) {
        set_elem *e = *pp;
        if (e->dest == d) {
            en->set_size--;
            en->lastmod = now;
            *pp = e->next;
            put(e->dest);
            free(e);
            return;
        }
    }
}

/* Weighted least-connection member: must be AVAILABLE, weight > 0, not OVERLOADed. */
static lvs_dest *set_min(const lblc_entry *en)
{
    const set_elem *e;
    lvs_dest *least = NULL;
    int64_t loh = 0;
    for (e = en->set; e; e = e->next) {
        lvs_dest *d = e->dest;
        if (d->flags & LVS_DEST_F_OVERLOAD)
            continue;
        if (d->weight > 0 && (d->flags & LVS_DEST_F_AVAILABLE)) {
            least = d;
            loh = lvs_dest_overhead(d);
            break;
        }
    }
    if (!least)
        return NULL;
    for (e = e->next; e; e = e->next) {
        lvs_dest *d = e->dest;
        if (d->flags & LVS_DEST_F_OVERLOAD)
            continue;
        int64_t doh = lvs_dest_overhead(d);
        if (loh * d->weight > doh * least->weight && (d->flags & LVS_DEST_F_AVAILABLE)) {
            least = d;
            loh = doh;
        }
    }
    return least;
}

/* Weighted most-loaded member among those with weight > 0 (removed ones included). */
static lvs_dest *set_max(const lblc_entry *en)
{
    const set_elem *e;
    lvs_dest *most = NULL;
    int64_t moh = 0;
    for (e = en->set; e; e = e->next) {
        if (e->dest->weight > 0) {
            most = e->dest;
            moh = lvs_dest_overhead(most);
            break;
        }
    }
    if (!most)
        return NULL;
    for (e = e->next; e; e = e->next) {
        lvs_dest *d = e->dest;
        int64_t doh = lvs_dest_overhead(d);
        if (moh * d->weight < doh * most->weight && d->weight > 0) {
            most = d;
            moh = doh;
        }
    }
    return most;
}

static lvs_dest *lblcr_schedule(lvs_service *svc, const lvs_sched_key *key, double now)
{
    lblc_table *t = svc->sched_data;
    arm(t, now);
    lblc_entry *en = entry_get(t, key->af, key->daddr);
    lvs_dest *d;
    if (en) {
        en->lastuse = now;
        d = set_min(en);
        /* more than one member and no change for the expiration time: shed the most loaded */
        if (en->set_size > 1 && now > en->lastmod + expiration(svc)) {
            lvs_dest *m = set_max(en);
            if (m)
                set_erase(en, m, now);
        }
        if (d && !is_overloaded(d, svc))
            return d;
        d = lvs_wlc_pick(svc);
        if (!d)
            return NULL;
        set_insert(en, d, now);
        return d;
    }
    d = lvs_wlc_pick(svc);
    if (!d)
        return NULL;
    en = entry_new(t, key->af, key->daddr, now);
    if (en)
        set_insert(en, d, now);
    return d;
}

const lvs_scheduler lvs_sched_lblc = {
    .name = "lblc",
    .init_service = lblc_init,
    .done_service = lblc_done,
    .schedule = lblc_schedule,
    .tick = lblc_tick,
};

const lvs_scheduler lvs_sched_lblcr = {
    .name = "lblcr",
    .init_service = lblcr_init,
    .done_service = lblc_done,
    .schedule = lblcr_schedule,
    .tick = lblc_tick,
};

/* ---- inspection (tests, harness) ---- */

uint32_t lvs_lblc_entries(const lvs_service *svc)
{
    if (svc->sched != &lvs_sched_lblc && svc->sched != &lvs_sched_lblcr)
        return 0;
    return ((const lblc_table *)svc->sched_data)->entries;
}

int lvs_lblc_lookup(const lvs_service *svc, lvs_addr daddr, lvs_dest **out, int max)
{
    if (svc->sched != &lvs_sched_lblc && svc->sched != &lvs_sched_lblcr)
        return 0;
    lblc_entry *en = entry_get(svc->sched_data, svc->af, daddr);
    if (!en)
        return 0;
    if (en->dest) {
        if (max > 0)
            out[0] = en->dest;
        return 1;
    }
    int n = 0;
    for (set_elem *e = en->set; e; e = e->next, n++)
        if (n < max)
            out[n] = e->dest;
    return n;
}
