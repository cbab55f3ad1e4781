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
 *
 * The way back (folding the kernel's counts, switching off) is offload_fold.c.
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
