/* lock.h — the engine lock, a reader-writer lock (lock.c).  Exclusive: a control call
 * (add/edit/remove, expire, rates, sync, listings) for one C call, or a packet worker for the
 * part of a batch that changes shared state (new connections, state changes...).  Shared: the
 * packet workers' fast path for established packets, which runs on every worker at once.  The
 * engine's own functions never take it; their callers do (engine.py around every call that
 * takes an lvs_engine *; lvs_engine_process_batch_shared takes it itself).  Mirrored in
 * lock.cdef beside it. */
#ifndef PYLVS_LOCK_H
#define PYLVS_LOCK_H

#include "api.h"

/* Exclusive: the world stops for the holder.  These are the packet workers' (a batch's slow
 * part, packet.c); the control plane uses the _control pair, so the two are counted apart. */
void lvs_engine_lock(lvs_engine *e);
void lvs_engine_unlock(lvs_engine *e);
/* Exclusive, for one control-plane call: _build.py generates lvs_locked_<f> for every engine
 * function f, which calls f between these two inside C (why: _build.py locked_twins).  unlock
 * returns how long it was held (ns); unlock_named also keeps the name (a string literal) of the
 * call held longest. */
void lvs_engine_lock_control(lvs_engine *e);
uint64_t lvs_engine_unlock_control(lvs_engine *e);
void lvs_engine_unlock_named(lvs_engine *e, const char *name);
/* 1 when taken (exclusively) without waiting (for tests and the contention counter). */
int lvs_engine_trylock(lvs_engine *e);
/* One batch from a packet worker, several workers at once: established packets under the
 * shared lock, and from the first packet that needs more, the rest of the batch under the
 * exclusive lock (packet.c).  Verdicts and rewrites exactly as lvs_engine_process_batch. */
int lvs_engine_process_batch_shared(lvs_engine *e, lvs_batch *b, double now);

/* How long the lock stops packets (issue 14: "packets are never delayed by the control
 * plane"), counted by the lock itself so every run shows it: the control plane's exclusive
 * holds, the workers' exclusive holds, and how long a worker waited to take the lock (shared
 * or exclusive) -- the delay the lock adds to a packet.  Bucket i counts durations below
 * LVS_LOCK_BOUNDS_US[i] microseconds (not cumulative); the last bucket is everything longer.
 * Read without the lock (relaxed atomics): a snapshot may be off by the call in flight. */
#define LVS_LOCK_BUCKETS 12
#define LVS_LOCK_BOUNDS_US {10, 50, 100, 250, 500, 1000, 2000, 5000, 10000, 20000, 50000}
typedef struct lvs_lock_timing {
    uint64_t count;
    uint64_t total_ns;
    uint64_t max_ns;
    uint64_t hist[LVS_LOCK_BUCKETS];
} lvs_lock_timing;
typedef struct lvs_lock_stats {
    lvs_lock_timing control_hold;   /* exclusive holds by control-plane calls */
    lvs_lock_timing worker_hold;    /* exclusive holds by packet workers (a batch's slow part) */
    lvs_lock_timing worker_wait;    /* a worker's wait to take the lock, shared or exclusive */
    const char *longest_call;       /* the control call held longest (NULL: none yet) */
} lvs_lock_stats;
void lvs_engine_lock_stats(lvs_engine *e, lvs_lock_stats *out);
/* Upper bound of bucket i in microseconds (0 for the last, unbounded one). */
uint32_t lvs_engine_lock_bound_us(uint32_t i);

#endif
