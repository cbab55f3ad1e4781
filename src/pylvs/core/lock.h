/* lock.h — the engine lock: one holder at a time, a packet worker for one batch or a control
 * call (add/edit/remove, expire, rates, sync, listings) for one C call.  The engine's own
 * functions never take it; their callers do (dataplane/_tunio.c around a batch, engine.py
 * around every call that takes an lvs_engine *).  Mirrored in lock.cdef beside it. */
#ifndef PYLVS_LOCK_H
#define PYLVS_LOCK_H

#include "api.h"

void lvs_engine_lock(lvs_engine *e);
void lvs_engine_unlock(lvs_engine *e);
/* 1 when taken without waiting (for tests and the contention counter). */
int lvs_engine_trylock(lvs_engine *e);

#endif
