/*
 * offload.c — flow offload (offload.h): the kernel forwards established connections the
 * engine admitted, the engine stays the authority.
 *
 * This is what the kernel's nf_flow_table offload and OVS's datapath do: the slow path (here
 * the engine, through the TUN) sees every connection's handshake and every state change, and
 * once a connection is ESTABLISHED its plain data segments may be rewritten and forwarded by a
 * TC program (dataplane/bpf/tc_fastpath.bpf.c) without leaving the kernel.  Segments with
 * SYN, FIN or RST always come to the engine, so it sees every state change and sends the
 * connection back (a DEL) as it leaves ESTABLISHED.
 *
 * Which connections: TCP, ESTABLISHED, whose every byte the NAT rewrite alone handles: no
 * synproxy handshake or sequence translation (LVS_CONN_F_EXT, SP_WAIT, SEQ_MASK), no FTP
 * control connection (its payload is rewritten), no template, no FTP expectation, a dest still
 * available, and (sync master) no persistence template whose counts its packets drive.
 *
 * The engine does no I/O: it queues events in a bounded queue that the dataplane drains
 * after each batch (dataplane/_fastpath.c).  The queue has its own mutex, so a worker drains
 * it without the engine lock; the engine pushes while holding the lock exclusively.  An ADD
 * that finds the queue full is not queued (the conn stays on the TUN, and a later packet
 * through the engine offers it again); a DEL that finds it full sets `lost`, and the dataplane
 * then forgets its whole table: a stale entry would send a reused client port to the old real
 * server, so a DEL is never dropped silently.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "offload.h"
#include "packet.h"

int lvs_offload_enable(lvs_engine *e, uint32_t queue, uint32_t after_pkts, int v6)
{
    lvs_offload *o = &e->offload;
    pthread_mutex_lock(&o->mu);
    if (!o->ring || o->cap != queue) {
        lvs_offload_event *r = calloc(queue ? queue : 1, sizeof(*r));
        if (!r) {
            pthread_mutex_unlock(&o->mu);
            return -ENOMEM;
        }
        free(o->ring);
        o->ring = r;
        o->cap = queue ? queue : 1;
        o->head = o->tail = 0;
        __atomic_store_n(&o->pending, 0, __ATOMIC_RELAXED);
    }
    o->after = after_pkts;
    o->v6 = v6;
    o->on = 1;
    pthread_mutex_unlock(&o->mu);
    return 0;
}

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

void lvs_offload_init(lvs_engine *e)
{
    pthread_mutex_init(&e->offload.mu, NULL);
}

void lvs_offload_free(lvs_engine *e)
{
    free(e->offload.ring);
    pthread_mutex_destroy(&e->offload.mu);
}

static int push(lvs_engine *e, const lvs_conn *c, uint8_t op)
{
    lvs_offload *o = &e->offload;
    int ok = 0;
    pthread_mutex_lock(&o->mu);
    if (o->ring && o->tail - o->head < o->cap) {
        lvs_offload_event *ev = &o->ring[o->tail++ % o->cap];
        *ev = (lvs_offload_event){.op = op, .af = c->af, .proto = c->proto, .cport = c->cport,
                                  .vport = c->vport, .dport = c->dport, .slot = c->slot,
                                  .caddr = c->caddr, .vaddr = c->vaddr, .daddr = c->daddr};
        __atomic_store_n(&o->pending, o->tail - o->head, __ATOMIC_RELEASE);
        ok = 1;
    } else if (op == LVS_OFFLOAD_DEL) {
        o->lost = 1;
        o->n_lost++;
        __atomic_store_n(&o->pending, o->tail - o->head + 1, __ATOMIC_RELEASE);
    }
    pthread_mutex_unlock(&o->mu);
    return ok;
}

int lvs_offload_eligible(const lvs_engine *e, const lvs_conn *c)
{
    const lvs_offload *o = &e->offload;
    const lvs_dest *d = c->dest;
    return o->on && c->proto == LVS_PROTO_TCP && c->state == LVS_TCP_S_ESTABLISHED &&
           !(c->flags & (LVS_CONN_F_OFFLOAD | LVS_CONN_F_TEMPLATE | LVS_CONN_F_EXT |
                         LVS_CONN_F_SP_WAIT | LVS_CONN_F_SEQ_MASK | LVS_CONN_F_SYNPROXY |
                         LVS_CONN_F_NO_CPORT)) &&
           (c->af == LVS_AF_INET || o->v6) && d && (d->flags & LVS_DEST_F_AVAILABLE) &&
           c->in_pkts >= o->after && !lvs_ftp_ctl(c) &&
           !(e->sync_master && c->control != LVS_NO_SLOT);
}

void lvs_offload_offer(lvs_engine *e, lvs_conn *c)
{
    if (!lvs_offload_eligible(e, c))
        return;
    if (push(e, c, LVS_OFFLOAD_ADD)) {
        c->flags |= LVS_CONN_F_OFFLOAD;
        e->offload.n_adds++;
    } else {
        e->offload.n_full++;
    }
}

void lvs_offload_recall(lvs_engine *e, lvs_conn *c)
{
    if (!(c->flags & LVS_CONN_F_OFFLOAD))
        return;
    c->flags &= (uint16_t)~LVS_CONN_F_OFFLOAD;
    push(e, c, LVS_OFFLOAD_DEL);
    e->offload.n_dels++;
}

uint32_t lvs_offload_drain(lvs_engine *e, lvs_offload_event *out, uint32_t max, int *lost)
{
    lvs_offload *o = &e->offload;
    uint32_t n = 0;
    pthread_mutex_lock(&o->mu);
    while (n < max && o->head != o->tail)
        out[n++] = o->ring[o->head++ % o->cap];
    *lost = o->lost;
    o->lost = 0;
    __atomic_store_n(&o->pending, o->tail - o->head, __ATOMIC_RELEASE);
    pthread_mutex_unlock(&o->mu);
    return n;
}

uint32_t lvs_offload_pending(lvs_engine *e)
{
    return __atomic_load_n(&e->offload.pending, __ATOMIC_ACQUIRE);
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
