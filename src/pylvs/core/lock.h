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

/* Exclusive: the world stops for the holder. */
void lvs_engine_lock(lvs_engine *e);
void lvs_engine_unlock(lvs_engine *e);
/* 1 when taken (exclusively) without waiting (for tests and the contention counter). */
int lvs_engine_trylock(lvs_engine *e);
/* One batch from a packet worker, several workers at once: established packets under the
 * shared lock, and from the first packet that needs more, the rest of the batch under the
 * exclusive lock (packet.c).  Verdicts and rewrites exactly as lvs_engine_process_batch. */
int lvs_engine_process_batch_shared(lvs_engine *e, lvs_batch *b, double now);

#endif
