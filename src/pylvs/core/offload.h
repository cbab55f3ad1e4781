/* offload.h — flow offload: which connections the kernel may forward without the engine
 * (offload.c), and folding what it forwarded back into the engine (offload_fold.c).  The engine stays the authority
 * and does no I/O: it only queues events ("this connection may be offloaded", "this one must
 * come back") that the dataplane applies to the kernel's table (dataplane/_fastpath.c, the TC
 * program bpf/tc_fastpath.bpf.c), and it takes back the kernel's counts as fold records.
 * Mirrored in offload.cdef beside it. */
#ifndef PYLVS_OFFLOAD_H
#define PYLVS_OFFLOAD_H

#include "api.h"

#define LVS_OFFLOAD_ADD 1   /* the conn may be forwarded in the kernel, both directions */
#define LVS_OFFLOAD_DEL 2   /* the conn must come back to the engine (state change, freed) */

/* One event, addresses and ports in host order (as lvs_conn).  The dataplane's two keys: in
 * (caddr:cport -> vaddr:vport, rewritten to daddr:dport) and out (daddr:dport -> caddr:cport,
 * rewritten from vaddr:vport). */
typedef struct lvs_offload_event {
    uint8_t op, af, proto, pad;
    uint16_t cport, vport, dport, pad2;
    uint32_t slot;           /* the conn's table slot (fixed while it lives) */
    lvs_addr caddr, vaddr, daddr;
} lvs_offload_event;

/* What the kernel forwarded for one key since the last fold (host order, as the packet had
 * it when it arrived: dir 0 = client -> VIP, 1 = real server -> client). */
typedef struct lvs_offload_fold {
    uint8_t af, proto, dir, pad;
    uint16_t sport, dport;
    lvs_addr saddr, daddr;
    uint64_t pkts, bytes;
    double last_seen;        /* CLOCK_MONOTONIC seconds of its latest packet, 0 = none */
} lvs_offload_fold;

#define LVS_OFFLOAD_KEEP 0   /* fold verdict: the entry stays */
#define LVS_OFFLOAD_DROP 1   /* the entry must go: conn gone, not ESTABLISHED, dest removed */

typedef struct lvs_offload_stats {
    uint64_t adds, dels;     /* events queued */
    uint64_t full;           /* ADDs not queued: the queue was full (the conn stays on the TUN) */
    uint64_t lost;           /* DELs not queued: the dataplane flushes its whole table */
    uint64_t fold_pkts, fold_bytes;   /* packets and bytes folded in from the kernel */
    uint64_t fold_orphans;   /* fold records whose conn was gone (their counts are lost) */
    uint32_t pending;        /* events queued now */
    uint32_t enabled;
} lvs_offload_stats;

/* Start offering conns: a TCP conn of a plain NAT service is offered once ESTABLISHED and
 * after `after_pkts` packets in (0: at once); IPv6 ones too when v6.  `queue` events at most
 * wait for the dataplane.  0 or -ENOMEM. */
int lvs_offload_enable(lvs_engine *e, uint32_t queue, uint32_t after_pkts, int v6);
/* Stop: no more events, the queue emptied, every conn's offload mark cleared (a conn offered
 * before stays with the engine; call after the kernel's table is gone). */
void lvs_offload_disable(lvs_engine *e);
/* Copy out and remove up to max queued events, oldest first; *lost is set (and cleared in the
 * engine) when a DEL could not be queued since the last call: the caller must forget every
 * entry.  Takes only the queue's own mutex, not the engine lock (a worker calls it after each
 * batch). */
uint32_t lvs_offload_drain(lvs_engine *e, lvs_offload_event *out, uint32_t max, int *lost);
/* Events waiting, read without any lock (a worker's cheap check after each batch). */
uint32_t lvs_offload_pending(lvs_engine *e);
/* Fold n records (caller holds the engine lock, exclusively): per record its conn's stats,
 * dest and service stats, timer (from last_seen) and sync threshold count as if the packets
 * had gone through the engine; verdicts[i] = LVS_OFFLOAD_KEEP or _DROP. */
void lvs_offload_fold_batch(lvs_engine *e, const lvs_offload_fold *recs, uint32_t n,
                            uint8_t *verdicts);
void lvs_offload_get_stats(lvs_engine *e, lvs_offload_stats *out);

#endif
