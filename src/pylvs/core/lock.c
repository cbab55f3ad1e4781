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
 *
 * Hand-over: a control plane applying a reload makes thousands of short exclusive calls back to
 * back.  glibc does not hand a released lock to the threads waiting for it: the loop thread,
 * already running, takes it again microseconds later, before a woken worker gets a CPU, and a
 * worker waited for a whole slice of calls (measured: 12.8 ms behind holds of at most 8.5 ms).
 * So a worker that finds the lock taken says so (workers_blocked), and the next control call
 * first lets it in, yielding for at most LOCK_HANDOVER_NS.
 *
 * Timing (lvs_lock_stats): two CLOCK_MONOTONIC reads per acquisition (vDSO, tens of ns, beside a
 * batch of reads and writes) say how long each exclusive holder stopped the packets and how
 * long a worker waited for the lock, so a forwarding gap can be told apart from CPU contention
 * (a worker that was not scheduled) in every run, not only under a profiler.
 */
#define _GNU_SOURCE
#include <sched.h>
#include <time.h>

#include "engine.h"
#include "lock.h"

static const uint32_t bounds_us[LVS_LOCK_BUCKETS - 1] = LVS_LOCK_BOUNDS_US;

/* The longest a control call steps aside for blocked workers: a woken worker needs a CPU,
 * tens of microseconds on an idle core, more on a busy one. */
#define LOCK_HANDOVER_NS 500000u

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* Relaxed atomics: several workers record waits at once, and the API reads while they do. */
static void record(lvs_lock_timing *t, uint64_t ns)
{
    unsigned b = 0;
    while (b < LVS_LOCK_BUCKETS - 1 && ns >= (uint64_t)bounds_us[b] * 1000u)
        b++;
    __atomic_fetch_add(&t->count, 1, __ATOMIC_RELAXED);
    __atomic_fetch_add(&t->total_ns, ns, __ATOMIC_RELAXED);
    __atomic_fetch_add(&t->hist[b], 1, __ATOMIC_RELAXED);
    uint64_t max = __atomic_load_n(&t->max_ns, __ATOMIC_RELAXED);
    while (ns > max && !__atomic_compare_exchange_n(&t->max_ns, &max, ns, 1, __ATOMIC_RELAXED,
                                                    __ATOMIC_RELAXED))
        ;
}

static void snapshot(const lvs_lock_timing *t, lvs_lock_timing *out)
{
    out->count = __atomic_load_n(&t->count, __ATOMIC_RELAXED);
    out->total_ns = __atomic_load_n(&t->total_ns, __ATOMIC_RELAXED);
    out->max_ns = __atomic_load_n(&t->max_ns, __ATOMIC_RELAXED);
    for (unsigned b = 0; b < LVS_LOCK_BUCKETS; b++)
        out->hist[b] = __atomic_load_n(&t->hist[b], __ATOMIC_RELAXED);
}

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

/* The exclusive lock taken and its hold clock started. */
static void take(lvs_engine *e)
{
    pthread_rwlock_wrlock(&e->lock);
    e->lock_held_since = now_ns();
}

/* Released; returns how long it was held. */
static uint64_t give(lvs_engine *e, lvs_lock_timing *t)
{
    uint64_t held = now_ns() - e->lock_held_since;
    record(t, held);
    pthread_rwlock_unlock(&e->lock);
    return held;
}

/* A worker's acquisition: without waiting if it can, else counted in workers_blocked while
 * it waits, so the next control call lets it in first. */
static void worker_take(lvs_engine *e, int exclusive)
{
    uint64_t t0 = now_ns();
    int r = exclusive ? pthread_rwlock_trywrlock(&e->lock) : pthread_rwlock_tryrdlock(&e->lock);
    if (r != 0) {
        __atomic_fetch_add(&e->workers_blocked, 1, __ATOMIC_SEQ_CST);
        if (exclusive)
            pthread_rwlock_wrlock(&e->lock);
        else
            pthread_rwlock_rdlock(&e->lock);
        __atomic_fetch_sub(&e->workers_blocked, 1, __ATOMIC_SEQ_CST);
    }
    uint64_t t1 = now_ns();
    if (exclusive)
        e->lock_held_since = t1;
    record(&e->lock_stats.worker_wait, t1 - t0);
}

void lvs_engine_lock(lvs_engine *e)
{
    worker_take(e, 1);
}

void lvs_engine_unlock(lvs_engine *e)
{
    give(e, &e->lock_stats.worker_hold);
}

void lvs_engine_lock_control(lvs_engine *e)
{
    if (__atomic_load_n(&e->workers_blocked, __ATOMIC_SEQ_CST)) {
        uint64_t until = now_ns() + LOCK_HANDOVER_NS;
        while (__atomic_load_n(&e->workers_blocked, __ATOMIC_SEQ_CST) && now_ns() < until)
            sched_yield();
    }
    take(e);
}

uint64_t lvs_engine_unlock_control(lvs_engine *e)
{
    return give(e, &e->lock_stats.control_hold);
}

void lvs_engine_unlock_named(lvs_engine *e, const char *name)
{
    uint64_t held = now_ns() - e->lock_held_since;
    if (held > __atomic_load_n(&e->lock_stats.control_hold.max_ns, __ATOMIC_RELAXED))
        __atomic_store_n(&e->lock_stats.longest_call, name, __ATOMIC_RELAXED);
    record(&e->lock_stats.control_hold, held);
    pthread_rwlock_unlock(&e->lock);
}

int lvs_engine_trylock(lvs_engine *e)
{
    if (pthread_rwlock_trywrlock(&e->lock) != 0)
        return 0;
    e->lock_held_since = now_ns();
    return 1;
}

void lvs_engine_lock_shared(lvs_engine *e)
{
    worker_take(e, 0);
}

void lvs_engine_unlock_shared(lvs_engine *e)
{
    pthread_rwlock_unlock(&e->lock);
}

void lvs_engine_lock_stats(lvs_engine *e, lvs_lock_stats *out)
{
    snapshot(&e->lock_stats.control_hold, &out->control_hold);
    snapshot(&e->lock_stats.worker_hold, &out->worker_hold);
    snapshot(&e->lock_stats.worker_wait, &out->worker_wait);
    out->longest_call = __atomic_load_n(&e->lock_stats.longest_call, __ATOMIC_RELAXED);
}

uint32_t lvs_engine_lock_bound_us(uint32_t i)
{
    return i < LVS_LOCK_BUCKETS - 1 ? bounds_us[i] : 0;
}
