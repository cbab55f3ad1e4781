/*
 * _workers.c — packet worker threads: the packet path off the event loop, on every core.
 *
 * Each worker is a native pthread that owns one queue (one fd) of a multi-queue TUN device and
 * one pump (_tunio.c).  It sleeps in poll() on its queue and on a shared stop eventfd, pumps
 * when the queue is readable and never enters Python: no GIL, no callback per packet or per
 * wakeup.  The workers share the engine under the engine lock (core/lock.h), held for one
 * batch's engine call: shared for established packets (every worker at once), exclusive from
 * the first packet that needs more; reads and writes, most of the cost, run in parallel.
 *
 * The steering program (_steer.c) sends both directions of a connection to one queue, so a
 * connection's entry stays in one core's cache.  Without it the kernel picks the queue by its
 * flow hash and the two directions may arrive on different workers: the shared table makes
 * that correct too.
 *
 * Spinning.  After a wakeup that found packets a worker keeps reading its queue (non-blocking
 * reads, no poll) until spin_ns pass without a packet, then sleeps in poll() again.  On a busy
 * path the next packet comes within microseconds, and every sleep costs a context switch and a
 * wakeup in the kernel's transmit path (an IPI when the waker runs on another CPU, a VM exit
 * in a guest); the bound keeps an idle director idle.  Off by default ([director]
 * worker_spin_us): it lowered latency at moderate rates but not throughput on shared cores
 * (docs/performance.md, "The TUN path's kernel cost").
 *
 * Priority: a worker renices itself to LVS_WORKERS_NICE ([director] worker_nice; 0 or more leaves
 * the workers and the group as created), better than the event loop's nice -10
 * (ha/node.py: HEARTBEAT_NICE) and the health checker's 0, so a reload, an API request or 10,000
 * health checks do not keep a woken worker off the CPU (measured: workers at nice 0 behind the
 * loop at -10 waited up to 26 ms for a CPU during a 10,000-server reload, bench/isolation.py
 * --sched).  A nice value and not a real-time class: a flood keeps the workers busy, and
 * SCHED_FIFO/RR workers would then leave the control plane only what RT throttling reserves;
 * with nice the loop still gets about a quarter of a CPU a busy worker shares with it.  The
 * heartbeats, which must not wait at all, have their own real-time thread (ha/_pacer.c).
 * Thread nice values only order the threads of one scheduling group: with autogroup
 * (kernel.sched_autogroup_enabled, the default of most distributions) every session is a group
 * and competes with every other session at the group's nice, so a director that leads its own
 * session (a service, the testbed) gives its group LVS_WORKERS_GROUP_NICE (measured: with the
 * group at 0 the workers still waited up to 23 ms for a CPU behind other sessions' processes).
 * A director started from a shell shares the shell's group and leaves it alone.
 *
 * Signals are blocked in the workers (SIGTERM and friends go to the Python thread).  A worker
 * whose read fails (the device went away) records -errno, signals the notify eventfd (which
 * the event loop watches, once, not per packet) and exits; the others keep running until stop.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "_fastpath.h"
#include "_workers.h"
#include "core/lock.h"
#include "core/offload.h"

#define MAX_ROUNDS 4 /* full batches per wakeup before polling again (the stop fd) */

typedef struct worker {
    struct lvs_workers *owner;
    uint32_t index;
    int fd;
    lvs_tunio *io;
    pthread_t thread;
    int started;
    pthread_mutex_t stats_mu;    /* guards pub, base */
    lvs_tunio_stats pub;         /* the pump's counters as of its last wakeup */
    lvs_tunio_stats base;        /* pub at the last zero */
    atomic_int reset_max;        /* zero asked: the worker restarts max_batch */
} worker;

struct lvs_workers {
    lvs_engine *engine;
    uint32_t n;
    int stop_fd;                 /* eventfd: readable = stop (never read, so it stays readable) */
    int notify_fd;               /* eventfd: a worker failed */
    atomic_int stopping;         /* set before the stop eventfd: ends a spin at once */
    uint32_t spin_ns;            /* busy-poll window after the last packet (0: always sleep) */
    int nice;                    /* the workers' niceness; 0 or more: left as created */
    atomic_int failure;          /* first failure, -errno */
    atomic_uint failed_index;
    atomic_uint running;
    pthread_rwlock_t fp_lock;    /* a worker applying events holds it shared (fastpath's life) */
    lvs_fastpath *fastpath;      /* flow offload: events to apply after each batch, or NULL */
    worker *w;
};

static double monotonic_now(void)
{
    /* time.monotonic()'s clock: the engine's timers and the control plane's agree. */
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

#define STAT_U64(X) X(reads) X(read_bytes) X(writes) X(write_bytes) X(forwarded) X(passed) \
    X(replies) X(dropped) X(write_eagain) X(write_errors) X(read_errors) X(short_reads) \
    X(csum_partial) X(gso_packets) X(batches) X(empty_wakeups) X(spin_hits) X(spin_polls)

static void publish(worker *k)
{
    pthread_mutex_lock(&k->stats_mu);
    lvs_tunio_get_stats(k->io, &k->pub);
    pthread_mutex_unlock(&k->stats_mu);
}

static void fail(worker *k, int err)
{
    lvs_workers *w = k->owner;
    int expected = 0;
    if (atomic_compare_exchange_strong(&w->failure, &expected, err))
        atomic_store(&w->failed_index, k->index);
    uint64_t one = 1;
    ssize_t r = write(w->notify_fd, &one, sizeof(one));
    (void)r; /* an eventfd write fails only on counter overflow */
}

/* A zero of the counters asked the worker to restart max_batch (lvs_workers_zero_stats). */
static void take_reset(worker *k)
{
    if (atomic_load_explicit(&k->reset_max, memory_order_relaxed) &&
        atomic_exchange(&k->reset_max, 0))
        lvs_tunio_reset_max_batch(k->io);
}

/* Apply the engine's offload events right after the batch that queued them (_fastpath.c: why
 * so soon).  One atomic load when there are none. */
static void apply_offload(lvs_workers *w)
{
    if (!w->engine || !lvs_offload_pending(w->engine))
        return;
    pthread_rwlock_rdlock(&w->fp_lock);
    if (w->fastpath)
        lvs_fastpath_drain(w->fastpath, 0);
    pthread_rwlock_unlock(&w->fp_lock);
}

void lvs_workers_set_fastpath(lvs_workers *w, lvs_fastpath *fp)
{
    pthread_rwlock_wrlock(&w->fp_lock);
    w->fastpath = fp;
    pthread_rwlock_unlock(&w->fp_lock);
}

/* Read the queue without sleeping until spin_ns pass with no packet, a stop, or an error;
 * returns the last pump's result (< 0: a read error). */
static int spin(worker *k)
{
    lvs_workers *w = k->owner;
    double now = monotonic_now();
    double end = now + (double)w->spin_ns * 1e-9;
    int n = 0;
    while (now < end && !atomic_load_explicit(&w->stopping, memory_order_relaxed)) {
        take_reset(k);
        n = lvs_tunio_poll(k->io, w->engine, now, MAX_ROUNDS);
        if (n < 0)
            return n;
        apply_offload(w);
        now = monotonic_now();
        if (n > 0) {
            end = now + (double)w->spin_ns * 1e-9;
            publish(k); /* under steady traffic the spin may not end for a long time */
        }
    }
    return n;
}

static void *worker_main(void *arg)
{
    worker *k = arg;
    lvs_workers *w = k->owner;
    struct pollfd pf[2] = {{.fd = k->fd, .events = POLLIN}, {.fd = w->stop_fd, .events = POLLIN}};
    char name[16];
    snprintf(name, sizeof(name), "pylvs-w%u", k->index); /* top -H, /proc/<pid>/task/<tid>/comm */
    pthread_setname_np(pthread_self(), name);
    /* nice is per thread on Linux; without CAP_SYS_NICE this fails and the worker keeps the
     * creator's niceness (tests, unprivileged runs) */
    if (w->nice < 0 && getpriority(PRIO_PROCESS, (id_t)gettid()) > w->nice)
        (void)setpriority(PRIO_PROCESS, (id_t)gettid(), w->nice);
    for (;;) {
        int r = poll(pf, 2, -1);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            fail(k, -errno);
            break;
        }
        if (pf[1].revents)
            break;
        if (pf[0].revents & (POLLERR | POLLHUP | POLLNVAL)) {
            fail(k, pf[0].revents & POLLNVAL ? -EBADF : -EIO);
            break;
        }
        if (!(pf[0].revents & POLLIN))
            continue;
        take_reset(k);
        int n = lvs_tunio_pump(k->io, w->engine, monotonic_now(), MAX_ROUNDS);
        apply_offload(w);
        publish(k);
        if (n > 0 && w->spin_ns) {
            n = spin(k);
            publish(k);
        }
        if (n < 0) {
            fail(k, n);
            break;
        }
    }
    publish(k);
    return NULL;
}

/* Give this process's autogroup LVS_WORKERS_GROUP_NICE if it is ours alone (we lead the
 * session) and allowed; silently nothing otherwise (no autogroup, no privilege). */
static void favour_own_group(void)
{
    if (getsid(0) != getpid())
        return;
    FILE *f = fopen("/proc/self/autogroup", "r+");
    if (!f)
        return;
    int nice = 0;
    if (fscanf(f, "/autogroup-%*d nice %d", &nice) == 1 && nice > LVS_WORKERS_GROUP_NICE) {
        rewind(f);
        fprintf(f, "%d", LVS_WORKERS_GROUP_NICE);
    }
    fclose(f); /* the write happens here; its failure (EPERM) needs no handling */
}

lvs_workers *lvs_workers_new(lvs_engine *engine, const int *fds, uint32_t n, int vnet_hdr,
                             uint32_t batch_max, uint32_t stride)
{
    if (n == 0 || n > LVS_WORKERS_MAX || !fds)
        return NULL;
    lvs_workers *w = calloc(1, sizeof(*w));
    if (!w)
        return NULL;
    w->engine = engine;
    w->n = n;
    w->spin_ns = LVS_WORKERS_SPIN_NS;
    w->nice = LVS_WORKERS_NICE;
    pthread_rwlock_init(&w->fp_lock, NULL);
    w->stop_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    w->notify_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    w->w = calloc(n, sizeof(worker));
    if (w->stop_fd < 0 || w->notify_fd < 0 || !w->w) {
        lvs_workers_free(w);
        return NULL;
    }
    for (uint32_t i = 0; i < n; i++) {
        worker *k = &w->w[i];
        k->owner = w;
        k->index = i;
        k->fd = fds[i];
        pthread_mutex_init(&k->stats_mu, NULL);
        k->io = lvs_tunio_new(fds[i], vnet_hdr, batch_max, stride);
        if (!k->io) {
            lvs_workers_free(w);
            return NULL;
        }
    }
    return w;
}

int lvs_workers_start(lvs_workers *w)
{
    if (w->nice < 0)
        favour_own_group();
    sigset_t all, old;
    sigfillset(&all);
    /* Threads inherit the mask: block everything so signals reach the Python thread only. */
    pthread_sigmask(SIG_SETMASK, &all, &old);
    int rc = 0;
    for (uint32_t i = 0; i < w->n; i++) {
        worker *k = &w->w[i];
        if (k->started)
            continue;
        int err = pthread_create(&k->thread, NULL, worker_main, k);
        if (err) {
            rc = -err;
            break;
        }
        k->started = 1;
        atomic_fetch_add(&w->running, 1);
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc)
        lvs_workers_stop(w);
    return rc;
}

void lvs_workers_stop(lvs_workers *w)
{
    if (!w || w->stop_fd < 0)
        return;
    uint64_t one = 1;
    atomic_store(&w->stopping, 1);
    ssize_t r = write(w->stop_fd, &one, sizeof(one));
    (void)r;
    for (uint32_t i = 0; i < w->n; i++) {
        worker *k = &w->w[i];
        if (!k->started)
            continue;
        pthread_join(k->thread, NULL);
        k->started = 0;
        atomic_fetch_sub(&w->running, 1);
    }
    /* Drain the stop signal so the workers can be started again. */
    uint64_t v;
    r = read(w->stop_fd, &v, sizeof(v));
    atomic_store(&w->stopping, 0);
}

void lvs_workers_free(lvs_workers *w)
{
    if (!w)
        return;
    if (w->w) {
        lvs_workers_stop(w);
        for (uint32_t i = 0; i < w->n; i++) {
            if (w->w[i].owner)
                pthread_mutex_destroy(&w->w[i].stats_mu);
            lvs_tunio_free(w->w[i].io);
        }
        free(w->w);
    }
    if (w->stop_fd >= 0)
        close(w->stop_fd);
    if (w->notify_fd >= 0)
        close(w->notify_fd);
    pthread_rwlock_destroy(&w->fp_lock);
    free(w);
}

void lvs_workers_set_spin(lvs_workers *w, uint32_t spin_ns)
{
    w->spin_ns = spin_ns;
}

void lvs_workers_set_nice(lvs_workers *w, int nice)
{
    w->nice = nice;
}

void lvs_workers_set_mark(lvs_workers *w, uint32_t mark)
{
    for (uint32_t i = 0; i < w->n; i++)
        lvs_tunio_set_mark(w->w[i].io, mark);
}

uint32_t lvs_workers_count(const lvs_workers *w)
{
    return w->n;
}

uint32_t lvs_workers_running(const lvs_workers *w)
{
    return atomic_load(&((lvs_workers *)w)->running);
}

int lvs_workers_notify_fd(const lvs_workers *w)
{
    return w->notify_fd;
}

int lvs_workers_failure(const lvs_workers *w, uint32_t *which)
{
    lvs_workers *m = (lvs_workers *)w;
    int f = atomic_load(&m->failure);
    if (which)
        *which = atomic_load(&m->failed_index);
    return f;
}

int lvs_workers_get_stats(lvs_workers *w, uint32_t i, lvs_tunio_stats *out)
{
    if (i >= w->n)
        return -1;
    worker *k = &w->w[i];
    pthread_mutex_lock(&k->stats_mu);
    *out = k->pub;
#define SUB(f) out->f -= k->base.f;
    STAT_U64(SUB)
#undef SUB
    for (unsigned b = 0; b < LVS_TUNIO_BUCKETS; b++)
        out->batch_hist[b] -= k->base.batch_hist[b];
    pthread_mutex_unlock(&k->stats_mu);
    return 0;
}

void lvs_workers_zero_stats(lvs_workers *w)
{
    for (uint32_t i = 0; i < w->n; i++) {
        worker *k = &w->w[i];
        pthread_mutex_lock(&k->stats_mu);
        k->base = k->pub;
        k->pub.max_batch = 0;
        pthread_mutex_unlock(&k->stats_mu);
        atomic_store(&k->reset_max, 1);
    }
}

uint64_t lvs_workers_bench(lvs_engine *engine, lvs_batch *const *batches,
                           const uint8_t *const *pristine, const uint32_t *const *lens,
                           uint32_t n, uint32_t rounds, double now)
{
    uint64_t sent = 0;
    for (uint32_t r = 0; r < rounds; r++) {
        for (uint32_t i = 0; i < n; i++) {
            lvs_batch *b = batches[i];
            memcpy(b->data, pristine[i], (size_t)b->count * b->stride);
            memcpy(b->len, lens[i], (size_t)b->count * sizeof(uint32_t));
            sent += (uint64_t)lvs_engine_process_batch_shared(engine, b, now);
        }
    }
    return sent;
}
