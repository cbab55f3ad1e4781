/*
 * offload_fold.c — flow offload, the way back (offload.h): the kernel's counts folded into the
 * engine as if its packets had gone through the packet path (stats, the conn's timer, the sync
 * threshold), the verdict whether an entry may stay, and switching offload off.  The event
 * queue, which the packet path and the connection table feed, is offload.c: this file calls
 * them, they never call it.
 */
#include "offload.h"
#include "packet.h"

static void clear_mark(lvs_engine *e, lvs_conn *c, void *arg)
{
    (void)e;
    (void)arg;
    c->flags &= (uint16_t)~LVS_CONN_F_OFFLOAD;
}

void lvs_offload_disable(lvs_engine *e)
{
    lvs_offload *o = &e->offload;
    o->on = 0;
    lvs_conn_for_each(e, clear_mark, NULL);
    pthread_mutex_lock(&o->mu);
    o->head = o->tail = 0;
    o->lost = 0;
    __atomic_store_n(&o->pending, 0, __ATOMIC_RELAXED);
    pthread_mutex_unlock(&o->mu);
}

/* The first packet count in (from, to] that makes a sync record, or 0. */
static uint32_t sync_hit(const lvs_engine *e, const lvs_conn *c, uint32_t from, uint32_t to)
{
    /* the thresholds repeat every sync_period packets: one period covers every case */
    uint32_t span = e->sync_period ? e->sync_period : to - from;
    for (uint32_t p = from + 1; p <= to && p - from <= span; p++)
        if (lvs_sync_needed(e, c, p))
            return p;
    return 0;
}

static uint8_t fold_one(lvs_engine *e, const lvs_offload_fold *r)
{
    lvs_conn *c = r->dir == 0
                      ? lvs_conn_in_get(e, r->af, r->proto, r->saddr, r->sport, r->daddr, r->dport)
                      : lvs_conn_out_get(e, r->af, r->proto, r->saddr, r->sport, r->daddr,
                                         r->dport);
    if (!c) {
        if (r->pkts)
            e->offload.n_orphans++;
        return LVS_OFFLOAD_DROP;
    }
    lvs_dest *d = c->dest;
    if (r->pkts && d && (d->flags & LVS_DEST_F_AVAILABLE)) {
        /* stats_in / stats_out, n packets at once */
        lvs_stats *s[3] = {&d->stats, d->svc ? &d->svc->stats : NULL, &e->stats};
        for (int i = 0; i < 3; i++) {
            if (!s[i])
                continue;
            if (r->dir == 0) {
                s[i]->inpkts += r->pkts;
                s[i]->inbytes += r->bytes;
            } else {
                s[i]->outpkts += r->pkts;
                s[i]->outbytes += r->bytes;
            }
        }
        e->offload.n_fold_pkts += r->pkts;
        e->offload.n_fold_bytes += r->bytes;
    }
    int live = (c->flags & LVS_CONN_F_OFFLOAD) && c->state == LVS_TCP_S_ESTABLISHED &&
               d && (d->flags & LVS_DEST_F_AVAILABLE);
    if (!live)
        return LVS_OFFLOAD_DROP;
    if (r->pkts && r->dir == 0) {
        uint32_t from = c->in_pkts;
        uint32_t to = from + (uint32_t)r->pkts;
        uint32_t hit = e->sync_master ? sync_hit(e, c, from, to) : 0;
        c->in_pkts = to;
        if (hit)
            lvs_sync_conn(e, c, hit);
    }
    /* the timer as the packet path would have left it after the latest packet */
    if (r->last_seen > 0 && r->last_seen + (double)c->timeout > c->expires)
        lvs_conn_arm(e, c, r->last_seen);
    return LVS_OFFLOAD_KEEP;
}

void lvs_offload_fold_batch(lvs_engine *e, const lvs_offload_fold *recs, uint32_t n,
                            uint8_t *verdicts)
{
    for (uint32_t i = 0; i < n; i++)
        verdicts[i] = fold_one(e, &recs[i]);
}

void lvs_offload_get_stats(lvs_engine *e, lvs_offload_stats *out)
{
    const lvs_offload *o = &e->offload;
    *out = (lvs_offload_stats){
        .adds = o->n_adds, .dels = o->n_dels, .full = o->n_full, .lost = o->n_lost,
        .fold_pkts = o->n_fold_pkts, .fold_bytes = o->n_fold_bytes,
        .fold_orphans = o->n_orphans, .pending = lvs_offload_pending(e), .enabled = (uint32_t)o->on,
    };
}
