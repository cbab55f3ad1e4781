/*
 * conn.c — the connection table (ip_vs_conn.c): slab allocation, two hash tables (in and out
 * direction, so both lookups are O(1)), dest binding with the active/inactive counters and
 * thresholds, and a timer wheel for expiry (docs/ipvs.md#connection-table,
 * #active-and-inactive, #expiry, #real-servers).
 *
 * Timers are lazy: re-arming on a packet only moves `expires` forward; the entry stays in its
 * wheel slot and is moved when that slot comes up.  A deadline that shrinks into an earlier
 * tick (e.g. ESTABLISHED -> CLOSE) relinks at once, so nothing ever expires late; within the
 * slot's own tick it stays, since the sweep checks each entry's exact deadline.  lvs_conn_expire_due visits only the
 * slots between the last call and now, so no O(n) scan ever happens.
 *
 * The table calls nothing above it: a template re-armed by its timer is reported through the
 * engine's tmpl_rearmed hook (sync.c sends it again), and a dest losing its last reference
 * goes back to dest.c.
 *
 * Entries link to each other by slab slot index (engine.h), so every chain, bucket and wheel
 * slot holds a uint32_t and LVS_NO_SLOT ends it.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "engine.h"

lvs_conn *lvs_conn_in_get(lvs_engine *e, uint8_t af, uint8_t proto, lvs_addr caddr,
                          uint16_t cport, lvs_addr vaddr, uint16_t vport)
{
    uint32_t i = e->in_tab[lvs_in_hash(e, af, proto, caddr, cport, vaddr, vport)];
    for (lvs_conn *c; i != LVS_NO_SLOT; i = c->in_next) {
        c = lvs_conn_at(e, i);
        if (lvs_addr_eq(c->caddr, caddr) && lvs_addr_eq(c->vaddr, vaddr) && c->cport == cport &&
            c->vport == vport && c->proto == proto && c->af == af &&
            !(c->flags & LVS_CONN_F_TEMPLATE))
            return c;
    }
    return NULL;
}

lvs_conn *lvs_conn_out_get(lvs_engine *e, uint8_t af, uint8_t proto, lvs_addr daddr,
                           uint16_t dport, lvs_addr caddr, uint16_t cport)
{
    uint32_t i = e->out_tab[lvs_out_hash(e, af, proto, daddr, dport, caddr, cport)];
    for (lvs_conn *c; i != LVS_NO_SLOT; i = c->out_next) {
        c = lvs_conn_at(e, i);
        if (lvs_addr_eq(c->daddr, daddr) && lvs_addr_eq(c->caddr, caddr) && c->dport == dport &&
            c->cport == cport && c->proto == proto && c->af == af)
            return c;
    }
    return NULL;
}

lvs_conn *lvs_tmpl_get(lvs_engine *e, uint8_t af, uint8_t proto, lvs_addr snet, lvs_addr vaddr,
                       uint16_t vport)
{
    uint32_t i = e->in_tab[lvs_in_hash(e, af, proto, snet, 0, vaddr, vport)];
    for (lvs_conn *c; i != LVS_NO_SLOT; i = c->in_next) {
        c = lvs_conn_at(e, i);
        if (lvs_addr_eq(c->caddr, snet) && lvs_addr_eq(c->vaddr, vaddr) && c->cport == 0 &&
            c->vport == vport && c->proto == proto && c->af == af &&
            (c->flags & LVS_CONN_F_TEMPLATE))
            return c;
    }
    return NULL;
}

static void in_unlink(lvs_engine *e, lvs_conn *c)
{
    if (!(c->flags & LVS_CONN_F_INHASH))
        return;
    uint32_t *pp =
        &e->in_tab[lvs_in_hash(e, c->af, c->proto, c->caddr, c->cport, c->vaddr, c->vport)];
    while (*pp != LVS_NO_SLOT && *pp != c->slot)
        pp = &lvs_conn_at(e, *pp)->in_next;
    if (*pp != LVS_NO_SLOT)
        *pp = c->in_next;
    c->flags &= (uint16_t)~LVS_CONN_F_INHASH;
}

static void out_unlink(lvs_engine *e, lvs_conn *c)
{
    uint32_t *pp =
        &e->out_tab[lvs_out_hash(e, c->af, c->proto, c->daddr, c->dport, c->caddr, c->cport)];
    while (*pp != LVS_NO_SLOT && *pp != c->slot)
        pp = &lvs_conn_at(e, *pp)->out_next;
    if (*pp != LVS_NO_SLOT)
        *pp = c->out_next;
}

void lvs_conn_unhash_template(lvs_engine *e, lvs_conn *c)
{
    in_unlink(e, c);
    /* ip_vs_check_template: a neutralised template shows ports 0xffff (ipvsadm -Lc, sync).
     * Safe: it is out of the in-hash for good and templates are never in the out-hash. */
    c->vport = 0xffff;
    c->dport = 0xffff;
}

/* ---- timer wheel ---- */

static inline int64_t tick_of(double t)
{
    return (int64_t)floor(t * LVS_WHEEL_TPS);
}

/* wexp keeps only the low 32 bits of the slot's tick: enough to find the slot (LVS_WHEEL_SIZE
 * divides 2^32) and to compare deadlines up to 2^31 ticks (8 years) apart, far beyond the
 * 31-day timeout limit. */
static inline int tick_before(int64_t t, uint32_t wexp)
{
    return (int32_t)((uint32_t)t - wexp) < 0;
}

static inline void wheel_unlink(lvs_engine *e, lvs_conn *c)
{
    if (c->t_prev == LVS_NO_SLOT)
        return;
    if (c->t_prev == LVS_WHEEL_HEAD)
        e->wheel[c->wexp & (LVS_WHEEL_SIZE - 1)] = c->t_next;
    else
        lvs_conn_at(e, c->t_prev)->t_next = c->t_next;
    if (c->t_next != LVS_NO_SLOT)
        lvs_conn_at(e, c->t_next)->t_prev = c->t_prev;
    c->t_next = LVS_NO_SLOT;
    c->t_prev = LVS_NO_SLOT;
}

static inline void wheel_link(lvs_engine *e, lvs_conn *c)
{
    int64_t t = tick_of(c->expires);
    /* a deadline in a tick already swept (a caller's clock slightly behind the last expire)
     * goes into the current tick, which the next sweep revisits */
    if (e->wheel_started && t < e->wheel_tick)
        t = e->wheel_tick;
    uint32_t *head = &e->wheel[(uint64_t)t & (LVS_WHEEL_SIZE - 1)];
    c->wexp = (uint32_t)t;
    c->t_next = *head;
    if (*head != LVS_NO_SLOT)
        lvs_conn_at(e, *head)->t_prev = c->slot;
    c->t_prev = LVS_WHEEL_HEAD;
    *head = c->slot;
}

void lvs_conn_arm(lvs_engine *e, lvs_conn *c, double now)
{
    c->expires = now + (double)c->timeout;
    if (c->t_prev == LVS_NO_SLOT || tick_before(tick_of(c->expires), c->wexp)) {
        wheel_unlink(e, c);
        wheel_link(e, c);
    }
}

int lvs_conn_rearm_in_place(const lvs_engine *e, lvs_conn *c, double now)
{
    double expires = now + (double)c->timeout;
    if (c->t_prev == LVS_NO_SLOT || tick_before(tick_of(expires), c->wexp))
        return 0;
    /* two workers may re-arm one conn at once (its two directions on two queues): either
     * deadline is right */
    __atomic_store(&c->expires, &expires, __ATOMIC_RELAXED);
    return 1;
}

/* ---- dest binding (ip_vs_bind_dest / ip_vs_unbind_dest) ---- */

static void bind_dest(lvs_conn *c, lvs_dest *d)
{
    c->dest = d;
    d->refcnt++;
    if (c->flags & LVS_CONN_F_TEMPLATE)
        d->persistconns++;
    else if (c->flags & LVS_CONN_F_INACTIVE)
        d->inactconns++;
    else
        d->activeconns++;
    if (d->u_threshold != 0 && d->activeconns + d->inactconns >= d->u_threshold)
        d->flags |= LVS_DEST_F_OVERLOAD;
}

static void unbind_dest(lvs_engine *e, lvs_conn *c)
{
    lvs_dest *d = c->dest;
    if (!d)
        return;
    if (c->flags & LVS_CONN_F_TEMPLATE)
        d->persistconns--;
    else if (c->flags & LVS_CONN_F_INACTIVE)
        d->inactconns--;
    else
        d->activeconns--;
    uint32_t total = d->activeconns + d->inactconns;
    if (d->l_threshold != 0) {
        if (total < d->l_threshold)
            d->flags &= ~LVS_DEST_F_OVERLOAD;
    } else if (d->u_threshold != 0) {
        if ((uint64_t)total * 4 < (uint64_t)d->u_threshold * 3)
            d->flags &= ~LVS_DEST_F_OVERLOAD;
    } else {
        d->flags &= ~LVS_DEST_F_OVERLOAD;
    }
    c->dest = NULL;
    lvs_dest_put(e, d);
}

void lvs_conn_set_active(lvs_conn *c, int active)
{
    int is_inactive = (c->flags & LVS_CONN_F_INACTIVE) != 0;
    if (active == !is_inactive)
        return;
    lvs_dest *d = c->dest;
    if (active) {
        c->flags &= (uint16_t)~LVS_CONN_F_INACTIVE;
        if (d) {
            d->inactconns--;
            d->activeconns++;
        }
    } else {
        c->flags |= LVS_CONN_F_INACTIVE;
        if (d) {
            d->activeconns--;
            d->inactconns++;
        }
    }
}

/* ---- allocation ---- */

static lvs_conn *conn_alloc(lvs_engine *e)
{
    if (e->nconns >= e->max_conns)
        return NULL;
    if (e->free_list == LVS_NO_SLOT) {
        if (e->nslabs == e->slabs_cap) {
            uint32_t ncap = e->slabs_cap ? e->slabs_cap * 2 : 16;
            lvs_conn **ns = realloc(e->slabs, ncap * sizeof(*ns));
            if (!ns)
                return NULL;
            e->slabs = ns;
            e->slabs_cap = ncap;
        }
        /* 128-byte aligned: each entry is exactly its own two cache lines (and one pair
         * for the adjacent-line prefetcher) */
        lvs_conn *slab = aligned_alloc(128, LVS_SLAB_SIZE * sizeof(lvs_conn));
        if (!slab)
            return NULL;
        memset(slab, 0, LVS_SLAB_SIZE * sizeof(lvs_conn));
        uint32_t base = e->nslabs * LVS_SLAB_SIZE;
        e->slabs[e->nslabs++] = slab;
        for (uint32_t i = LVS_SLAB_SIZE; i-- > 0;) {
            slab[i].slot = base + i;
            slab[i].out_next = e->free_list;
            e->free_list = base + i;
        }
    }
    uint32_t slot = e->free_list;
    lvs_conn *c = lvs_conn_at(e, slot);
    e->free_list = c->out_next;
    memset(c, 0, sizeof(*c));
    c->slot = slot;
    c->in_next = c->out_next = LVS_NO_SLOT;
    c->t_next = c->t_prev = LVS_NO_SLOT;
    c->control = LVS_NO_SLOT;
    c->emb_prev = c->emb_next = LVS_NO_SLOT;
    e->nconns++;
    return c;
}

lvs_conn *lvs_conn_new(lvs_engine *e, const lvs_conn_key *k, uint16_t flags, lvs_dest *dest,
                       double now)
{
    int tmpl = (flags & LVS_CONN_F_TEMPLATE) != 0;
    uint32_t o = tmpl ? 0 : lvs_out_hash(e, k->af, k->proto, k->daddr, k->dport, k->caddr,
                                         k->cport);
    /* the out bucket is a cold line nobody prefetched: start loading it now */
    if (!tmpl)
        __builtin_prefetch(&e->out_tab[o], 1);
    lvs_conn *c = conn_alloc(e);
    if (!c)
        return NULL;
    c->af = k->af;
    c->proto = k->proto;
    c->caddr = k->caddr;
    c->cport = k->cport;
    c->vaddr = k->vaddr;
    c->vport = k->vport;
    c->daddr = k->daddr;
    c->dport = k->dport;
    c->flags = (uint16_t)(flags | LVS_CONN_F_INUSE | LVS_CONN_F_INHASH);
    c->state = 0;
    c->old_state = 0;
    c->timeout = 3; /* ip_vs_conn_new: until the first state transition */
    if (dest)
        bind_dest(c, dest);
    uint32_t h = lvs_in_hash(e, k->af, k->proto, k->caddr, k->cport, k->vaddr, k->vport);
    c->in_next = e->in_tab[h];
    e->in_tab[h] = c->slot;
    if (!tmpl) {
        c->out_next = e->out_tab[o];
        e->out_tab[o] = c->slot;
    } else {
        c->out_next = LVS_NO_SLOT;
        e->ntemplates++;
    }
    c->expires = now + c->timeout;
    wheel_link(e, c);
    return c;
}

void lvs_conn_fill_cport(lvs_engine *e, lvs_conn *c, uint16_t cport)
{
    in_unlink(e, c);
    out_unlink(e, c);
    c->cport = cport;
    c->flags &= (uint16_t)~LVS_CONN_F_NO_CPORT;
    e->n_no_cport--;
    uint32_t h = lvs_in_hash(e, c->af, c->proto, c->caddr, cport, c->vaddr, c->vport);
    c->in_next = e->in_tab[h];
    e->in_tab[h] = c->slot;
    c->flags |= LVS_CONN_F_INHASH;
    uint32_t o = lvs_out_hash(e, c->af, c->proto, c->daddr, c->dport, c->caddr, cport);
    c->out_next = e->out_tab[o];
    e->out_tab[o] = c->slot;
}

/* Unlink and free (ip_vs_conn_expire once the timer is really done with it). */
static void embryo_unlink(lvs_engine *e, lvs_conn *c);

static void conn_free(lvs_engine *e, lvs_conn *c)
{
    wheel_unlink(e, c);
    embryo_unlink(e, c);
    in_unlink(e, c);
    if (c->flags & LVS_CONN_F_TEMPLATE)
        e->ntemplates--;
    else
        out_unlink(e, c);
    if (c->control != LVS_NO_SLOT) {
        lvs_conn_at(e, c->control)->n_control--;
        c->control = LVS_NO_SLOT;
    }
    lvs_offload_recall(e, c);
    unbind_dest(e, c);
    lvs_ext_detach(e, c);
    if (c->flags & LVS_CONN_F_NO_CPORT)
        e->n_no_cport--;
    c->flags = 0;
    c->out_next = e->free_list;
    e->free_list = c->slot;
    e->nconns--;
}

/* The timer fired (its sweep runs at `when`) or expire-now: a template still in control lives
 * on 60 s at a time, and keeps 60 s as its timeout from then on (ip_vs_conn_expire sets
 * cp->timeout).  Re-arming counts from the sweep, so expire() should run every second or so,
 * as the kernel's timers would. */
static int conn_expire(lvs_engine *e, lvs_conn *c, double when)
{
    if (c->n_control > 0) {
        c->timeout = 60;
        wheel_unlink(e, c);
        c->expires = when + 60.0;
        wheel_link(e, c);
        if (e->tmpl_rearmed)
            e->tmpl_rearmed(e, c);
        return 0;
    }
    conn_free(e, c);
    return 1;
}

void lvs_conn_expire_now(lvs_engine *e, lvs_conn *c, double now)
{
    conn_expire(e, c, now);
}

uint32_t lvs_conn_expire_due(lvs_engine *e, double now)
{
    int64_t target = tick_of(now);
    uint32_t expired = 0;
    if (!e->wheel_started) {
        /* nothing older than the first call can be pending in a fresh engine's slots except
         * entries created with earlier times; start far enough back to cover them */
        e->wheel_started = 1;
        e->wheel_tick = target - (int64_t)LVS_WHEEL_SIZE + 1;
    }
    int64_t from = e->wheel_tick;
    if (target - from >= (int64_t)LVS_WHEEL_SIZE)
        from = target - (int64_t)LVS_WHEEL_SIZE + 1;
    for (int64_t t = from; t <= target; t++) {
        /* a deadline re-armed into the past lands in this slot, revisited next call */
        e->wheel_tick = t;
        const uint32_t *head = &e->wheel[(uint64_t)t & (LVS_WHEEL_SIZE - 1)];
        /* plain conns first, so a template due in the same tick sees its n_control drop */
        for (int templates = 0; templates < 2; templates++) {
            uint32_t i = *head;
            while (i != LVS_NO_SLOT) {
                lvs_conn *c = lvs_conn_at(e, i);
                i = c->t_next;
                if (((c->flags & LVS_CONN_F_TEMPLATE) != 0) != templates)
                    continue;
                if (c->expires <= now) {
                    expired += (uint32_t)conn_expire(e, c, now);
                } else if ((uint32_t)tick_of(c->expires) != c->wexp) {
                    /* a lazily extended deadline: move to its real slot */
                    wheel_unlink(e, c);
                    wheel_link(e, c);
                }
            }
        }
    }
    /* the current (partial) tick stays current: entries due later in it are revisited */
    return expired;
}

/* ---- whole-table helpers ---- */

int lvs_conn_table_init(lvs_engine *e, uint32_t max_conns)
{
    /* the largest power of two <= max_conns: at a full table chains average 1..2 entries,
     * and the buckets cost at most 8 bytes per connection */
    uint32_t n = 256;
    while (n * 2 <= max_conns && n < (1u << 24))
        n <<= 1;
    e->in_tab = malloc(n * sizeof(uint32_t));
    e->out_tab = malloc(n * sizeof(uint32_t));
    if (!e->in_tab || !e->out_tab)
        return -LVS_E_NOMEM;
    /* all bits set: every bucket, wheel slot and the free list start as LVS_NO_SLOT */
    memset(e->in_tab, 0xff, n * sizeof(uint32_t));
    memset(e->out_tab, 0xff, n * sizeof(uint32_t));
    memset(e->wheel, 0xff, sizeof(e->wheel));
    e->free_list = LVS_NO_SLOT;
    e->tab_mask = n - 1;
    e->max_conns = max_conns;
    e->emb_head = e->emb_tail = LVS_NO_SLOT;
    return 0;
}

void lvs_conn_table_free(lvs_engine *e)
{
    for (uint32_t i = 0; i < e->nslabs; i++)
        free(e->slabs[i]);
    free(e->slabs);
    free(e->in_tab);
    free(e->out_tab);
    e->slabs = NULL;
    e->in_tab = e->out_tab = NULL;
}

void lvs_conn_for_each(lvs_engine *e, void (*fn)(lvs_engine *, lvs_conn *, void *), void *arg)
{
    for (uint32_t s = 0; s < e->nslabs; s++) {
        lvs_conn *slab = e->slabs[s];
        for (uint32_t i = 0; i < LVS_SLAB_SIZE; i++)
            if (slab[i].flags & LVS_CONN_F_INUSE)
                fn(e, &slab[i], arg);
    }
}

uint32_t lvs_conn_index_of(lvs_engine *e, const lvs_conn *c)
{
    (void)e;
    return c->slot;
}

/* ---- the embryonic FIFO (docs/ipvs.md#flood-defence, "no lock-out") ---- */

void lvs_embryo_push(lvs_engine *e, lvs_conn *c)
{
    if (c->flags & (LVS_CONN_F_EMBRYO | LVS_CONN_F_TEMPLATE))
        return;
    c->flags |= LVS_CONN_F_EMBRYO;
    c->emb_next = LVS_NO_SLOT;
    c->emb_prev = e->emb_tail;
    if (e->emb_tail != LVS_NO_SLOT)
        lvs_conn_at(e, e->emb_tail)->emb_next = c->slot;
    else
        e->emb_head = c->slot;
    e->emb_tail = c->slot;
    e->nembryo++;
}

static void embryo_unlink(lvs_engine *e, lvs_conn *c)
{
    if (!(c->flags & LVS_CONN_F_EMBRYO))
        return;
    if (c->emb_prev != LVS_NO_SLOT)
        lvs_conn_at(e, c->emb_prev)->emb_next = c->emb_next;
    else
        e->emb_head = c->emb_next;
    if (c->emb_next != LVS_NO_SLOT)
        lvs_conn_at(e, c->emb_next)->emb_prev = c->emb_prev;
    else
        e->emb_tail = c->emb_prev;
    c->emb_prev = c->emb_next = LVS_NO_SLOT;
    c->flags &= (uint16_t)~LVS_CONN_F_EMBRYO;
    e->nembryo--;
}

lvs_conn *lvs_embryo_oldest(lvs_engine *e)
{
    return lvs_conn_or_null(e, e->emb_head);
}

void lvs_conn_assure(lvs_engine *e, lvs_conn *c)
{
    embryo_unlink(e, c);
    if (c->control != LVS_NO_SLOT)
        lvs_conn_at(e, c->control)->flags |= LVS_CONN_F_ASSURED;
}
