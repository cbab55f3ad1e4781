/*
 * _schedtest.c — a standalone service for exercising the schedulers without the engine.
 *
 * It plays the engine's part of the scheduler contract (core/lvs.h) the way ip_vs_ctl.c and
 * ip_vs_conn.c do: new dests are linked at the list head, del_dest runs before the unlink, a
 * removed dest goes to a trash and is revived by re-adding the same address:port, last_weight
 * keeps the latest non-zero weight, and connection bind/unbind maintain the active/inactive
 * counters and the OVERLOAD flag from the -x/-y thresholds (docs/ipvs.md#active-and-inactive,
 * #real-servers).
 * Dests are named by small integer ids so Python never holds a pointer.  The service is IPv4
 * unless lvs_st_set_af makes it IPv6; the *6 calls take addresses as four host-order words.
 */
#include <stdlib.h>
#include <string.h>

#include "_sched.h"

struct lvs_schedtest {
    lvs_service svc;
    lvs_dest **dests; /* by id; NULL once freed */
    int32_t n_ids;
    int32_t cap;
    int32_t n_trash; /* removed but not yet freed */
};

/* A dest plus its harness id, so mapping a scheduler's answer back to an id is O(1). */
typedef struct st_dest {
    lvs_dest d;
    int32_t id;
} st_dest;

static int32_t dest_id(const lvs_schedtest *t, const lvs_dest *d)
{
    (void)t;
    return d ? ((const st_dest *)(const void *)d)->id : -1;
}

static lvs_dest *get_dest(const lvs_schedtest *t, int32_t id)
{
    return (id >= 0 && id < t->n_ids) ? t->dests[id] : NULL;
}

/* Free removed dests nobody references any more (the kernel's trash expiry). */
static void sweep_trash(lvs_schedtest *t)
{
    if (t->n_trash == 0)
        return;
    for (int32_t i = 0; i < t->n_ids; i++) {
        lvs_dest *d = t->dests[i];
        if (d && !(d->flags & LVS_DEST_F_AVAILABLE) && d->refcnt == 0) {
            free(d);
            t->dests[i] = NULL;
            t->n_trash--;
        }
    }
}

lvs_schedtest *lvs_st_new(const char *sched, uint32_t flags, uint32_t mh_table_size,
                          double lblc_expiration, uint64_t seed, int *err)
{
    const lvs_scheduler *s = lvs_sched_find(sched);
    *err = 0;
    if (!s) {
        *err = -LVS_EINVAL;
        return NULL;
    }
    lvs_schedtest *t = calloc(1, sizeof(*t));
    if (!t) {
        *err = -LVS_ENOMEM;
        return NULL;
    }
    t->svc.proto = LVS_PROTO_TCP;
    t->svc.af = LVS_AF_INET;
    t->svc.flags = flags;
    t->svc.sched = s;
    t->svc.sched_params.mh_table_size = mh_table_size;
    t->svc.sched_params.lblc_expiration = lblc_expiration;
    t->svc.rng_state = seed;
    if (s->init_service) {
        int rc = s->init_service(&t->svc);
        if (rc < 0) {
            free(t);
            *err = rc;
            return NULL;
        }
    }
    return t;
}

int lvs_st_set_sched(lvs_schedtest *t, const char *sched)
{
    /* the engine's scheduler change: done_service on the old one, init_service on the new */
    const lvs_scheduler *s = lvs_sched_find(sched);
    if (!s)
        return -LVS_EINVAL;
    if (t->svc.sched->done_service)
        t->svc.sched->done_service(&t->svc);
    t->svc.sched_data = NULL;
    t->svc.sched = s;
    sweep_trash(t);
    int rc = s->init_service ? s->init_service(&t->svc) : 0;
    if (rc < 0)
        t->svc.sched = &lvs_sched_wlc; /* stateless, so the harness stays usable */
    return rc;
}

void lvs_st_free(lvs_schedtest *t)
{
    if (!t)
        return;
    if (t->svc.sched->done_service)
        t->svc.sched->done_service(&t->svc);
    for (int32_t i = 0; i < t->n_ids; i++)
        free(t->dests[i]);
    free(t->dests);
    free(t);
}

static void set_thresholds(lvs_dest *d, uint32_t u, uint32_t l)
{
    /* __ip_vs_update_dest: a lower or removed upper threshold keeps OVERLOAD */
    if (u == 0 || u > d->u_threshold)
        d->flags &= ~LVS_DEST_F_OVERLOAD;
    d->u_threshold = u;
    d->l_threshold = l;
}

int lvs_st_set_af(lvs_schedtest *t, uint8_t af)
{
    if ((af != LVS_AF_INET && af != LVS_AF_INET6) || t->n_ids != 0)
        return -LVS_EINVAL;
    t->svc.af = af;
    return 0;
}

static lvs_addr words(const uint32_t *w)
{
    lvs_addr a = {.ip6 = {w[0], w[1], w[2], w[3]}};
    return a;
}

static int32_t st_add(lvs_schedtest *t, lvs_addr addr, uint16_t port, int32_t weight,
                      uint32_t u, uint32_t l)
{
    if (weight < 0 || (u && l > u))
        return -LVS_EINVAL;
    int32_t id = -1;
    lvs_dest *d = NULL;
    for (int32_t i = 0; i < t->n_ids; i++) {
        lvs_dest *x = t->dests[i];
        if (x && lvs_addr_eq(x->addr, addr) && x->port == port) {
            if (x->flags & LVS_DEST_F_AVAILABLE)
                return -17; /* EEXIST */
            d = x; /* revive from the trash, counters and all */
            id = i;
            t->n_trash--;
        }
    }
    if (!d) {
        if (t->n_ids == t->cap) {
            int32_t cap = t->cap ? t->cap * 2 : 16;
            lvs_dest **nd = realloc(t->dests, (size_t)cap * sizeof(*nd));
            if (!nd)
                return -LVS_ENOMEM;
            t->dests = nd;
            t->cap = cap;
        }
        st_dest *sd = calloc(1, sizeof(*sd));
        if (!sd)
            return -LVS_ENOMEM;
        d = &sd->d;
        d->addr = addr;
        d->af = t->svc.af;
        d->port = port;
        id = t->n_ids++;
        sd->id = id;
        t->dests[id] = d;
    }
    d->last_weight = weight; /* add: always, even 0 */
    d->weight = weight;
    d->svc = &t->svc;
    d->flags |= LVS_DEST_F_AVAILABLE;
    set_thresholds(d, u, l);
    d->next = t->svc.destinations;
    t->svc.destinations = d;
    t->svc.num_dests++;
    if (t->svc.sched->add_dest) {
        int rc = t->svc.sched->add_dest(&t->svc, d);
        if (rc < 0)
            return rc;
    }
    return id;
}

int32_t lvs_st_add(lvs_schedtest *t, uint32_t addr, uint16_t port, int32_t weight, uint32_t u,
                   uint32_t l)
{
    return t->svc.af == LVS_AF_INET6 ? -LVS_EINVAL : st_add(t, lvs_addr4(addr), port, weight, u, l);
}

int32_t lvs_st_add6(lvs_schedtest *t, const uint32_t *addr, uint16_t port, int32_t weight,
                    uint32_t u, uint32_t l)
{
    return t->svc.af != LVS_AF_INET6 ? -LVS_EINVAL : st_add(t, words(addr), port, weight, u, l);
}

int lvs_st_edit(lvs_schedtest *t, int32_t id, int32_t weight, uint32_t u, uint32_t l)
{
    lvs_dest *d = get_dest(t, id);
    if (!d || !(d->flags & LVS_DEST_F_AVAILABLE) || weight < 0 || (u && l > u))
        return -LVS_EINVAL;
    if (weight != 0)
        d->last_weight = weight;
    d->weight = weight;
    set_thresholds(d, u, l);
    if (t->svc.sched->upd_dest)
        return t->svc.sched->upd_dest(&t->svc, d);
    return 0;
}

int lvs_st_del(lvs_schedtest *t, int32_t id)
{
    lvs_dest *d = get_dest(t, id);
    if (!d || !(d->flags & LVS_DEST_F_AVAILABLE))
        return -LVS_EINVAL;
    if (t->svc.sched->del_dest)
        t->svc.sched->del_dest(&t->svc, d);
    lvs_dest **pp = &t->svc.destinations;
    while (*pp != d)
        pp = &(*pp)->next;
    *pp = d->next;
    d->next = NULL;
    t->svc.num_dests--;
    d->flags &= ~LVS_DEST_F_AVAILABLE;
    t->n_trash++;
    sweep_trash(t);
    return 0;
}

static int32_t st_schedule(lvs_schedtest *t, lvs_addr saddr, lvs_addr daddr, uint16_t sport,
                           uint16_t dport, uint8_t proto, double now)
{
    lvs_sched_key key = {saddr, daddr, sport, dport, proto, t->svc.af};
    lvs_dest *d = t->svc.sched->schedule(&t->svc, &key, now);
    sweep_trash(t);
    return dest_id(t, d);
}

int32_t lvs_st_schedule(lvs_schedtest *t, uint32_t saddr, uint32_t daddr, uint16_t sport,
                        uint16_t dport, uint8_t proto, double now)
{
    return st_schedule(t, lvs_addr4(saddr), lvs_addr4(daddr), sport, dport, proto, now);
}

int32_t lvs_st_schedule6(lvs_schedtest *t, const uint32_t *saddr, const uint32_t *daddr,
                         uint16_t sport, uint16_t dport, uint8_t proto, double now)
{
    return st_schedule(t, words(saddr), words(daddr), sport, dport, proto, now);
}

void lvs_st_tick(lvs_schedtest *t, double now)
{
    if (t->svc.sched->tick)
        t->svc.sched->tick(&t->svc, now);
    sweep_trash(t);
}

int lvs_st_conn_open(lvs_schedtest *t, int32_t id, int active)
{
    lvs_dest *d = get_dest(t, id);
    if (!d)
        return -LVS_EINVAL;
    /* ip_vs_bind_dest: a new conn counts as inactive, then the upper threshold is checked */
    d->refcnt++;
    d->inactconns++;
    if (d->u_threshold && d->activeconns + d->inactconns >= d->u_threshold)
        d->flags |= LVS_DEST_F_OVERLOAD;
    if (active) {
        /* the TCP state change that makes it active moves one count, no threshold check */
        d->inactconns--;
        d->activeconns++;
    }
    return 0;
}

int lvs_st_conn_close(lvs_schedtest *t, int32_t id, int active)
{
    lvs_dest *d = get_dest(t, id);
    if (!d || (active ? d->activeconns : d->inactconns) == 0)
        return -LVS_EINVAL;
    if (active)
        d->activeconns--;
    else
        d->inactconns--;
    /* ip_vs_unbind_dest: clear OVERLOAD below l, or below 3/4 of u, or unconditionally */
    uint64_t total = (uint64_t)d->activeconns + d->inactconns;
    if (d->l_threshold) {
        if (total < d->l_threshold)
            d->flags &= ~LVS_DEST_F_OVERLOAD;
    } else if (d->u_threshold) {
        if (total * 4 < (uint64_t)d->u_threshold * 3)
            d->flags &= ~LVS_DEST_F_OVERLOAD;
    } else {
        d->flags &= ~LVS_DEST_F_OVERLOAD;
    }
    d->refcnt--;
    sweep_trash(t);
    return 0;
}

int lvs_st_dest_info(const lvs_schedtest *t, int32_t id, int32_t *out)
{
    const lvs_dest *d = get_dest(t, id);
    if (!d)
        return -LVS_EINVAL;
    out[0] = d->weight;
    out[1] = (int32_t)d->activeconns;
    out[2] = (int32_t)d->inactconns;
    out[3] = (int32_t)d->flags;
    out[4] = (int32_t)d->refcnt;
    out[5] = d->last_weight;
    return 0;
}

int32_t lvs_st_order(const lvs_schedtest *t, int32_t *out, int32_t max)
{
    int32_t n = 0;
    for (const lvs_dest *d = t->svc.destinations; d; d = d->next, n++)
        if (n < max)
            out[n] = dest_id(t, d);
    return n;
}

uint32_t lvs_st_table_size(const lvs_schedtest *t)
{
    return lvs_sched_table_size(&t->svc);
}

int32_t lvs_st_table_slot(const lvs_schedtest *t, uint32_t i)
{
    return dest_id(t, lvs_sched_table_slot(&t->svc, i));
}

uint32_t lvs_st_cache_entries(const lvs_schedtest *t)
{
    return lvs_lblc_entries(&t->svc);
}

static int32_t st_cache_lookup(const lvs_schedtest *t, lvs_addr daddr, int32_t *out,
                               int32_t max)
{
    lvs_dest *buf[64];
    int n = lvs_lblc_lookup(&t->svc, daddr, buf, 64);
    for (int i = 0; i < n && i < max && i < 64; i++)
        out[i] = dest_id(t, buf[i]);
    return n;
}

int32_t lvs_st_cache_lookup(const lvs_schedtest *t, uint32_t daddr, int32_t *out, int32_t max)
{
    return st_cache_lookup(t, lvs_addr4(daddr), out, max);
}

int32_t lvs_st_cache_lookup6(const lvs_schedtest *t, const uint32_t *daddr, int32_t *out,
                             int32_t max)
{
    return st_cache_lookup(t, words(daddr), out, max);
}

uint32_t lvs_st_hsiphash(uint32_t v, uint64_t k0, uint64_t k1)
{
    return lvs_hsiphash_1u32(v, k0, k1);
}

uint64_t lvs_st_siphash24(uint64_t k0, uint64_t k1, const uint64_t *m, int32_t n)
{
    return lvs_siphash24(k0, k1, m, n);
}

uint64_t lvs_st_bench(lvs_schedtest *t, uint64_t n, double now)
{
    /* picks only: no connection is bound, so the counters stay as the caller left them */
    uint64_t hits = 0;
    lvs_sched_key key = {lvs_addr4(0), lvs_addr4(0xC6120064u), 0, 80, LVS_PROTO_TCP, t->svc.af};
    const lvs_scheduler *s = t->svc.sched;
    for (uint64_t i = 0; i < n; i++) {
        key.saddr.ip = 0xC6000000u + (uint32_t)(i * 2654435761u >> 8);
        key.sport = (uint16_t)(1024 + (i & 0x7fff));
        key.daddr.ip = 0xC6120000u + (uint32_t)(i & 0xff);
        hits += s->schedule(&t->svc, &key, now) != NULL;
    }
    return hits;
}
