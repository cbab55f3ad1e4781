/* _pacer.h — the heartbeat pacer (_pacer.c): a native thread that sends datagrams the event
 * loop signed in advance, each at its own CLOCK_MONOTONIC time.  Mirrored in _pacer.cdef. */
#ifndef PYLVS_PACER_H
#define PYLVS_PACER_H
#include <stdint.h>

#define LVS_PACER_DATA_MAX 512  /* a heartbeat is ~100 bytes (ha/messages.py) */
#define LVS_PACER_ADDR_MAX 28   /* sizeof(struct sockaddr_in6) */
#define LVS_PACER_QUEUE 512     /* pending datagrams: 30 s of two paths at 0.1 s */

typedef struct lvs_pacer_item {
    double due;                 /* CLOCK_MONOTONIC seconds (time.monotonic()) */
    int fd;                     /* a UDP socket of the caller's */
    uint32_t addr_len;
    uint8_t addr[LVS_PACER_ADDR_MAX];  /* struct sockaddr_in or _in6 of the peer */
    uint32_t len;
    uint8_t data[LVS_PACER_DATA_MAX];
} lvs_pacer_item;

typedef struct lvs_pacer_stats {
    uint64_t sent;
    uint64_t send_errors;
    uint64_t late_max_ns;       /* the latest a datagram left after its due time */
    uint64_t late_over_1ms;     /* datagrams that left more than 1 ms after their due time */
    uint32_t pending;
    int realtime;               /* 1: the thread runs SCHED_FIFO; 0: a nice value */
} lvs_pacer_stats;

typedef struct lvs_pacer lvs_pacer;

/* Start the thread at SCHED_FIFO priority rt_priority (1..99) if allowed, else at nice -20 if
 * allowed, else as it is; NULL on failure. */
lvs_pacer *lvs_pacer_new(int rt_priority);
/* Stop and join the thread (nothing is sent after this returns), free. */
void lvs_pacer_free(lvs_pacer *p);
/* Queue n items after the pending ones (replace: drop the pending ones first).  Items must be
 * in non-decreasing due order, after the pending ones.  0, or -EINVAL / -ENOSPC. */
int lvs_pacer_queue(lvs_pacer *p, const lvs_pacer_item *items, uint32_t n, int replace);
/* Due time of the last pending item (0 when none). */
double lvs_pacer_last_due(lvs_pacer *p);
void lvs_pacer_get_stats(lvs_pacer *p, lvs_pacer_stats *out);

#endif
