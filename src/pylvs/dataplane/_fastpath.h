/* _fastpath.h — the dataplane side of flow offload (_fastpath.c): applies the engine's
 * offload events (core/offload.h) to the TC program's `flows` map (bpf/tc_fastpath.bpf.c)
 * and folds the map's counters back into the engine.  Mirrored in _fastpath.cdef beside it.
 * Every call returns 0 (or a count) or -errno. */
#ifndef PYLVS_FASTPATH_H
#define PYLVS_FASTPATH_H
#include <stdint.h>

#include "core/api.h"

/* What the TUN path takes from a packet's TTL (hop limit) on its way through the director:
 * client -> real server, the kernel's forward into the TUN, the engine's NAT and the forward
 * of the packet written back; a reply, the two forwards (the engine's reverse NAT leaves it). */
#define LVS_FASTPATH_TTL_IN 3
#define LVS_FASTPATH_TTL_OUT 2

typedef struct lvs_fastpath lvs_fastpath;

typedef struct lvs_fastpath_stats {
    uint64_t adds, dels;         /* connections put in / taken out of the map */
    uint64_t add_errors;         /* refused by the map (full: max_entries) */
    uint64_t flushes;            /* the whole map forgotten (a DEL the engine could not queue) */
    uint64_t collects;           /* folds of the whole map */
    uint64_t pruned;             /* entries a fold found dead (conn gone, not ESTABLISHED) */
    uint64_t entries;            /* map entries at the last fold (two per connection) */
    uint64_t collect_ns_max;     /* the longest fold */
} lvs_fastpath_stats;

/* map_fd: the program's `flows` map (max_entries >= 2 x max_conns); the engine's max_conns
 * sizes the fold bookkeeping.  NULL on bad arguments or no memory. */
lvs_fastpath *lvs_fastpath_new(lvs_engine *engine, int map_fd, uint32_t max_conns);
void lvs_fastpath_free(lvs_fastpath *fp);
/* Apply the queued events.  wait = 0 (a packet worker after its batch): return at once when
 * another thread is applying or folding (the events wait for the next batch).  The last counts
 * of a connection taken out wait for the next lvs_fastpath_collect.  Returns the events
 * applied. */
int lvs_fastpath_drain(lvs_fastpath *fp, int wait);
/* The collector: apply the events, fold the last counts of the entries taken out, then read
 * the whole map (BPF_MAP_LOOKUP_BATCH), fold each
 * entry's new packets and bytes into the engine (stats, timer, sync threshold) and delete the
 * entries whose connection is gone or no longer offloadable.  Returns the entries left. */
int lvs_fastpath_collect(lvs_fastpath *fp);
/* Delete every entry (counts not yet folded are lost); the engine's marks stay. */
int lvs_fastpath_flush(lvs_fastpath *fp);
void lvs_fastpath_get_stats(lvs_fastpath *fp, lvs_fastpath_stats *out);
/* Attach a SCHED_CLS program to an interface's ingress through a tcx BPF link
 * (BPF_LINK_CREATE, BPF_TCX_INGRESS): the link's fd, whose last close detaches it. */
int lvs_fastpath_link(int prog_fd, int ifindex);
/* How many programs the interface's tcx ingress runs (BPF_PROG_QUERY; for tests). */
int lvs_fastpath_tcx_count(int ifindex);
/* Run the program once on an Ethernet frame arriving on ifindex (BPF_PROG_TEST_RUN with an
 * __sk_buff context): its verdict, the frame as it left it in out. */
int lvs_fastpath_test_run(int prog_fd, int ifindex, const uint8_t *frame, uint32_t len,
                          uint8_t *out, uint32_t cap, uint32_t *out_len);

#endif
