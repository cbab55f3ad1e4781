/*
 * lock.c — the engine lock (lock.h).  Why one lock and not per-service locks or a steered,
 * per-worker table: the director's CPU is ~93 % kernel work (the TUN read/write and the
 * receiver's TCP work in the writer's context) and ~3.5 % engine (docs/performance.md
 * #multi-core), and the kernel work runs outside this lock, so workers contend only for the
 * engine's few percent.  A single lock keeps every scheduler sequence, counter and table
 * exactly as with one thread (IPVS's per-service locks give the same order for one flow at a
 * time), and both directions of a connection see one table whichever queue they arrive on.
 */
#include "engine.h"
#include "lock.h"

void lvs_engine_lock(lvs_engine *e)
{
    pthread_mutex_lock(&e->lock);
}

void lvs_engine_unlock(lvs_engine *e)
{
    pthread_mutex_unlock(&e->lock);
}

int lvs_engine_trylock(lvs_engine *e)
{
    return pthread_mutex_trylock(&e->lock) == 0;
}
