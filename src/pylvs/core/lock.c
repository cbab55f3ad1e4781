/*
 * lock.c — the engine lock (lock.h): a reader-writer lock that prefers writers.
 *
 * Why this split and not a table per worker: a packet of an established connection changes
 * nothing another packet reads except its connection's deadline and packet count (atomics)
 * and the stats (summed per batch, added atomically: packet.c), so the workers' fast path
 * shares the lock and runs on every core at once.  Everything else (scheduling a new
 * connection, a state change, the timer wheel, sync records, the flood defence, any drop
 * counter) runs exclusively, one holder at a time: scheduler sequences, counters and the
 * table stay exactly as with one thread (IPVS's per-service locks give the same order for one
 * flow at a time), and both directions of a connection see one table whichever queue they
 * arrive on, so a steering program (dataplane/_steer.c) is an optimisation, not a condition.
 * Writers are preferred so a control call waits for at most the batches already running.
 */
#define _GNU_SOURCE
#include "engine.h"
#include "lock.h"

void lvs_engine_lock_init(lvs_engine *e)
{
    pthread_rwlockattr_t a;
    pthread_rwlockattr_init(&a);
    pthread_rwlockattr_setkind_np(&a, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
    pthread_rwlock_init(&e->lock, &a);
    pthread_rwlockattr_destroy(&a);
}

void lvs_engine_lock_destroy(lvs_engine *e)
{
    pthread_rwlock_destroy(&e->lock);
}

void lvs_engine_lock(lvs_engine *e)
{
    pthread_rwlock_wrlock(&e->lock);
}

void lvs_engine_unlock(lvs_engine *e)
{
    pthread_rwlock_unlock(&e->lock);
}

int lvs_engine_trylock(lvs_engine *e)
{
    return pthread_rwlock_trywrlock(&e->lock) == 0;
}

void lvs_engine_lock_shared(lvs_engine *e)
{
    pthread_rwlock_rdlock(&e->lock);
}

void lvs_engine_unlock_shared(lvs_engine *e)
{
    pthread_rwlock_unlock(&e->lock);
}
