/* _workers.h — packet worker threads (dataplane/_workers.c): one native thread per queue of a
 * multi-queue TUN device, each with its own pump (_tunio.h), all sharing one engine under the
 * engine lock (core/lock.h).  Mirrored in _workers.cdef beside it. */
#ifndef PYLVS_WORKERS_H
#define PYLVS_WORKERS_H
#include <stdint.h>

#include "_tunio.h"
#include "core/api.h"

#define LVS_WORKERS_MAX 256 /* the kernel's MAX_TAP_QUEUES */
/* The default busy-poll window after a worker's last packet (_workers.c, "Spinning"): off; it
 * lowers latency at moderate rates but did not raise throughput on shared cores. */
#define LVS_WORKERS_SPIN_NS 0
#define LVS_WORKERS_NICE (-15) /* the workers' niceness when allowed (_workers.c: why) */
#define LVS_WORKERS_GROUP_NICE (-10) /* the director's autogroup, when it leads its session */

typedef struct lvs_workers lvs_workers;

/* One pump per fd (the caller keeps owning the fds); NULL on bad arguments or no memory.
 * engine may be NULL (drop everything). */
lvs_workers *lvs_workers_new(lvs_engine *engine, const int *fds, uint32_t n, int vnet_hdr,
                             uint32_t batch_max, uint32_t stride);
/* Start every thread; 0, or -errno after stopping the threads already started. */
int lvs_workers_start(lvs_workers *w);
/* Wake every thread through the stop eventfd and join them; idempotent. */
void lvs_workers_stop(lvs_workers *w);
/* Stop, close the eventfds, free (the TUN fds stay open: they are the caller's). */
void lvs_workers_free(lvs_workers *w);
/* The busy-poll window after the last packet, in ns (0: sleep in poll() at once); before start. */
void lvs_workers_set_spin(lvs_workers *w, uint32_t spin_ns);
void lvs_workers_set_nice(lvs_workers *w, int nice);
/* The flow offload dataplane (_fastpath.h) whose events each worker applies after its batch;
 * NULL: none.  Safe while the workers run: when it returns no worker uses the old one. */
typedef struct lvs_fastpath lvs_fastpath;
void lvs_workers_set_fastpath(lvs_workers *w, lvs_fastpath *fp);
/* Every queue carries one fwmark service's packets (lvs_tunio_set_mark); before start. */
void lvs_workers_set_mark(lvs_workers *w, uint32_t mark);
uint32_t lvs_workers_count(const lvs_workers *w);
/* Threads started and not yet joined. */
uint32_t lvs_workers_running(const lvs_workers *w);
/* An eventfd that becomes readable when a worker stopped on its own (a read error). */
int lvs_workers_notify_fd(const lvs_workers *w);
/* The first worker failure as -errno (0: none); *which = its index. */
int lvs_workers_failure(const lvs_workers *w, uint32_t *which);
/* Worker i's counters as of its last wakeup, since the last zero. */
int lvs_workers_get_stats(lvs_workers *w, uint32_t i, lvs_tunio_stats *out);
void lvs_workers_zero_stats(lvs_workers *w);
/* A worker's loop without a device, for bench/engine.py: `rounds` times, each batch restored
 * from its pristine packets and lengths, then the workers' engine call
 * (lvs_engine_process_batch_shared).  In C so a benchmark thread holds no GIL.  Returns the
 * packets sent (forwarded or replied). */
uint64_t lvs_workers_bench(lvs_engine *engine, lvs_batch *const *batches,
                           const uint8_t *const *pristine, const uint32_t *const *lens,
                           uint32_t n, uint32_t rounds, double now);

#endif
