/* _tunio.h — the TUN pump (dataplane/_tunio.c), a backend of the engine: it includes the
 * core's API, never the other way round.  Mirrored in _tunio.cdef beside it. */
#ifndef PYLVS_TUNIO_H
#define PYLVS_TUNIO_H
#include <stdint.h>

#include "core/api.h"

#define LVS_TUNIO_BUCKETS 12 /* batch sizes 1, 2-3, 4-7, ... 1024-2047, >= 2048 */

typedef struct lvs_tunio_stats {
    uint64_t reads, read_bytes;      /* packets and bytes read from the TUN */
    uint64_t writes, write_bytes;    /* packets and bytes written back */
    uint64_t forwarded, passed, replies, dropped;  /* engine verdicts */
    uint64_t write_eagain;           /* writes that would block: packet dropped */
    uint64_t write_errors, read_errors, short_reads;
    uint64_t csum_partial, gso_packets;  /* offload metadata seen on reads */
    uint64_t batches, empty_wakeups;
    uint32_t max_batch;
    uint64_t spin_hits, spin_polls;  /* busy polls (lvs_tunio_poll) that found packets / none */
    uint64_t batch_hist[LVS_TUNIO_BUCKETS];
} lvs_tunio_stats;

typedef struct lvs_tunio lvs_tunio;

lvs_tunio *lvs_tunio_new(int fd, int vnet_hdr, uint32_t batch_max, uint32_t stride);
void lvs_tunio_free(lvs_tunio *io);
/* The device carries one fwmark service's packets (the policy rule `fwmark M` routes them
 * here): the engine sees mark M on each. */
void lvs_tunio_set_mark(lvs_tunio *io, uint32_t mark);
/* Read up to max_rounds full batches (stopping at EAGAIN), run the engine (NULL drops
 * everything) and write back.  Returns packets read, or -errno on a read error. */
int lvs_tunio_pump(lvs_tunio *io, lvs_engine *engine, double now, uint32_t max_rounds);
/* The same, for a caller that polls the queue without a readiness (a worker's bounded spin,
 * _workers.c): a read that finds the queue empty counts as spin_polls, not as an empty wakeup. */
int lvs_tunio_poll(lvs_tunio *io, lvs_engine *engine, double now, uint32_t max_rounds);
void lvs_tunio_get_stats(const lvs_tunio *io, lvs_tunio_stats *out);
void lvs_tunio_zero_stats(lvs_tunio *io);
/* For a worker after a zero of its published counters (_workers.c). */
void lvs_tunio_reset_max_batch(lvs_tunio *io);

#endif
