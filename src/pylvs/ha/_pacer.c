/*
 * _pacer.c — sends HA heartbeats on time whatever the event loop and the packet path are doing.
 *
 * The heartbeat protocol (ha/) runs on the asyncio loop, which also runs the control plane, and
 * the packet workers (dataplane/_workers.c) may fill every CPU with a flood.  A heartbeat sent
 * by the loop leaves when the loop is free and has a CPU: late by a reload's slice, an API
 * request, the GIL, or a busy worker.  keepalived sends VRRP from a process of its own at a
 * better priority; here the loop signs the next seconds' heartbeats in advance (each with the
 * sequence number and timestamp it will carry) and this thread sends each at its due time.
 *
 * The thread runs SCHED_FIFO: it wakes a few times per interval for microseconds, so it cannot
 * starve anyone, and nothing at normal priority (the loop, the workers, the flooder) delays it.
 * The loop refills the queue every interval; a loop stalled longer than the queue lasts (the
 * caller chooses: HaTransport queues KEEPER_COVER seconds) stops the heartbeats, and the peer
 * takes over, as it must for a hung control plane.  Never any Python, no GIL, no allocation
 * after start.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "_pacer.h"

struct lvs_pacer {
    pthread_mutex_t mu;
    pthread_cond_t cv;           /* CLOCK_MONOTONIC: queue changed, or stop */
    pthread_t thread;
    int stop;
    uint32_t head, count;        /* ring of pending items, in due order */
    lvs_pacer_item q[LVS_PACER_QUEUE];
    lvs_pacer_stats st;          /* under mu */
};

static double mono(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static struct timespec at(double t)
{
    struct timespec ts;
    ts.tv_sec = (time_t)t;
    ts.tv_nsec = (long)((t - (double)ts.tv_sec) * 1e9);
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    return ts;
}

static void *pacer_main(void *arg)
{
    lvs_pacer *p = arg;
    pthread_setname_np(pthread_self(), "pylvs-ha-pacer");
    int policy;
    struct sched_param sp;
    pthread_getschedparam(pthread_self(), &policy, &sp);
    if (policy != SCHED_FIFO) /* not allowed: the best nice we may have (per thread on Linux) */
        (void)setpriority(PRIO_PROCESS, (id_t)gettid(), -20);
    lvs_pacer_item it;
    pthread_mutex_lock(&p->mu);
    p->st.realtime = policy == SCHED_FIFO;
    while (!p->stop) {
        if (p->count == 0) {
            pthread_cond_wait(&p->cv, &p->mu);
            continue;
        }
        double due = p->q[p->head].due;
        double now = mono();
        if (now < due) {
            struct timespec ts = at(due);
            pthread_cond_timedwait(&p->cv, &p->mu, &ts);
            continue;  /* due, or the queue changed: look again */
        }
        it = p->q[p->head];  /* copied: the send runs unlocked, the loop may refill meanwhile */
        p->head = (p->head + 1) % LVS_PACER_QUEUE;
        p->count--;
        pthread_mutex_unlock(&p->mu);
        ssize_t r = sendto(it.fd, it.data, it.len, MSG_DONTWAIT,
                           (const struct sockaddr *)it.addr, it.addr_len);
        uint64_t late = (uint64_t)((mono() - it.due) * 1e9);
        pthread_mutex_lock(&p->mu);
        if (r < 0)
            p->st.send_errors++;
        else
            p->st.sent++;
        if (late > p->st.late_max_ns)
            p->st.late_max_ns = late;
        if (late > 1000000u)
            p->st.late_over_1ms++;
    }
    pthread_mutex_unlock(&p->mu);
    return NULL;
}

/* SCHED_FIFO first; without the privilege the best nice we may have; else as we are. */
static int start_thread(lvs_pacer *p, int rt_priority)
{
    pthread_attr_t a;
    pthread_attr_init(&a);
    int err = EPERM;
    if (rt_priority > 0) {
        struct sched_param sp = {.sched_priority = rt_priority};
        pthread_attr_setinheritsched(&a, PTHREAD_EXPLICIT_SCHED);
        pthread_attr_setschedpolicy(&a, SCHED_FIFO);
        pthread_attr_setschedparam(&a, &sp);
        err = pthread_create(&p->thread, &a, pacer_main, p);
    }
    pthread_attr_destroy(&a);
    if (err == EPERM) /* no CAP_SYS_NICE: a normal thread, which renices itself if it may */
        err = pthread_create(&p->thread, NULL, pacer_main, p);
    return err;
}

lvs_pacer *lvs_pacer_new(int rt_priority)
{
    lvs_pacer *p = calloc(1, sizeof(*p));
    if (!p)
        return NULL;
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&p->cv, &ca);
    pthread_condattr_destroy(&ca);
    pthread_mutex_init(&p->mu, NULL);
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old); /* signals stay with the Python thread */
    int err = start_thread(p, rt_priority);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (err) {
        pthread_cond_destroy(&p->cv);
        pthread_mutex_destroy(&p->mu);
        free(p);
        return NULL;
    }
    return p;
}

void lvs_pacer_free(lvs_pacer *p)
{
    if (!p)
        return;
    pthread_mutex_lock(&p->mu);
    p->stop = 1;
    pthread_cond_signal(&p->cv);
    pthread_mutex_unlock(&p->mu);
    pthread_join(p->thread, NULL);
    pthread_cond_destroy(&p->cv);
    pthread_mutex_destroy(&p->mu);
    free(p);
}

int lvs_pacer_queue(lvs_pacer *p, const lvs_pacer_item *items, uint32_t n, int replace)
{
    for (uint32_t i = 0; i < n; i++)
        if (items[i].len > LVS_PACER_DATA_MAX || items[i].addr_len > LVS_PACER_ADDR_MAX ||
            (i > 0 && items[i].due < items[i - 1].due))
            return -EINVAL;
    pthread_mutex_lock(&p->mu);
    if (replace)
        p->count = 0;
    int rc = 0;
    if (p->count + n > LVS_PACER_QUEUE) {
        rc = -ENOSPC;
    } else if (n && p->count &&
               items[0].due < p->q[(p->head + p->count - 1) % LVS_PACER_QUEUE].due) {
        rc = -EINVAL;
    } else {
        for (uint32_t i = 0; i < n; i++)
            p->q[(p->head + p->count + i) % LVS_PACER_QUEUE] = items[i];
        p->count += n;
        pthread_cond_signal(&p->cv);
    }
    pthread_mutex_unlock(&p->mu);
    return rc;
}

double lvs_pacer_last_due(lvs_pacer *p)
{
    pthread_mutex_lock(&p->mu);
    double d = p->count ? p->q[(p->head + p->count - 1) % LVS_PACER_QUEUE].due : 0.0;
    pthread_mutex_unlock(&p->mu);
    return d;
}

void lvs_pacer_get_stats(lvs_pacer *p, lvs_pacer_stats *out)
{
    pthread_mutex_lock(&p->mu);
    *out = p->st;
    out->pending = p->count;
    pthread_mutex_unlock(&p->mu);
}
