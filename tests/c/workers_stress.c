/*
 * workers_stress.c — the packet workers under ThreadSanitizer (or ASan/UBSan): two (or more)
 * worker threads (dataplane/_workers.c) pump packets that sender threads write into
 * SOCK_SEQPACKET socket pairs (a stand-in for TUN queues: one read, one packet), while the main
 * thread makes the control plane's calls under the engine lock, as engine.py does: add, edit
 * and remove dests, switch schedulers, expire, rates, sync collect and apply, listings,
 * counters, options and timeouts, -Z, the workers' stats and their zeroing.  The workers take
 * the engine lock shared for established packets and exclusive for the rest (core/lock.h), so
 * both kinds of batch meet the control calls.  With a BPF hash map (root), flow offload runs
 * too: the engine offers established conns, the workers apply the events to the map after
 * each batch (dataplane/_fastpath.c) while the main thread folds the map (the collector),
 * switches offload off and on and takes the fast path from the workers and gives it back.
 * Then stop: every thread must be joined.
 *
 * Built and run by tests/unit/test_workers_tsan.py:
 *   gcc -fsanitize=thread -g -O1 -pthread -Isrc/pylvs tests/c/workers_stress.c \
 *       src/pylvs/core/\*.c src/pylvs/_sched*.c src/pylvs/dataplane/\*.c -o stress
 *   ./stress SECONDS WORKERS
 * Exit 0 and a totals line on success; the sanitizer makes any race a non-zero exit.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "core/lock.h"
#include "core/offload.h"
#include "dataplane/_bpf.h"
#include "dataplane/_fastpath.h"
#include "dataplane/_workers.h"

#define VIP 0xC6120064u   /* 198.18.0.100 */
#define RS(i) (0xC613000Bu + (i)) /* 198.19.0.11 + i */
#define MAXW 8

static atomic_int stop_flag;
static atomic_ulong sent;
static int peers[MAXW];
static int nworkers;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static uint16_t csum(const uint8_t *p, size_t n, uint32_t s)
{
    for (size_t i = 0; i + 1 < n; i += 2)
        s += (uint32_t)(p[i] << 8 | p[i + 1]);
    if (n & 1)
        s += (uint32_t)p[n - 1] << 8;
    while (s >> 16)
        s = (s & 0xffff) + (s >> 16);
    return (uint16_t)~s;
}

/* A 40-byte IPv4 TCP segment with valid checksums. */
static size_t segment(uint8_t *b, uint32_t src, uint16_t sport, uint32_t dst, uint16_t dport,
                      uint8_t flags)
{
    memset(b, 0, 40);
    b[0] = 0x45;
    b[3] = 40;
    b[6] = 0x40;
    b[8] = 64;
    b[9] = 6;
    uint32_t s = htonl(src), d = htonl(dst);
    memcpy(b + 12, &s, 4);
    memcpy(b + 16, &d, 4);
    uint16_t c = htons(csum(b, 20, 0));
    memcpy(b + 10, &c, 2);
    uint8_t *t = b + 20;
    t[0] = (uint8_t)(sport >> 8);
    t[1] = (uint8_t)sport;
    t[2] = (uint8_t)(dport >> 8);
    t[3] = (uint8_t)dport;
    t[7] = 1;
    t[12] = 5 << 4;
    t[13] = flags;
    t[14] = 0x20;
    uint32_t pseudo = (src >> 16) + (src & 0xffff) + (dst >> 16) + (dst & 0xffff) + 6 + 20;
    c = htons(csum(t, 20, pseudo));
    memcpy(t + 16, &c, 2);
    return 40;
}

/* Packets of short flows, both directions: a SYN, then ACKs from the client and replies from
 * a real server (the right one a quarter of the time: the sender cannot know which one the
 * scheduler picked), so established packets take the workers' shared fast path while SYNs,
 * state changes and unknown replies take the exclusive one. */
static void *sender(void *arg)
{
    int i = (int)(intptr_t)arg;
    unsigned seed = (unsigned)i * 7919u + 1;
    uint8_t pkt[64];
    while (!atomic_load(&stop_flag)) {
        uint16_t port = (uint16_t)(1024 + rand_r(&seed) % 60000);
        uint32_t client = 0xC6120000u | (uint32_t)(i << 8) | (uint32_t)(2 + rand_r(&seed) % 200);
        uint32_t rs = RS(rand_r(&seed) % 4);
        for (int k = 0; k < 8 && !atomic_load(&stop_flag); k++) {
            uint8_t flags = k == 0 ? 0x02 : k == 7 && rand_r(&seed) % 4 == 0 ? 0x11 : 0x10;
            size_t n = segment(pkt, client, port, VIP, 80, flags);
            if (send(peers[i], pkt, n, 0) > 0)
                atomic_fetch_add(&sent, 1);
            /* the out direction, possibly on another queue than its flow */
            n = segment(pkt, rs, 80, client, port, k == 0 ? 0x12 : 0x10);
            if (send(peers[(i + (rand_r(&seed) & 1)) % nworkers], pkt, n, 0) > 0)
                atomic_fetch_add(&sent, 1);
        }
    }
    return NULL;
}

static void *drainer(void *arg)
{
    int i = (int)(intptr_t)arg;
    uint8_t buf[65536];
    while (!atomic_load(&stop_flag) || recv(peers[i], buf, sizeof(buf), MSG_DONTWAIT) > 0)
        (void)recv(peers[i], buf, sizeof(buf), MSG_DONTWAIT);
    return NULL;
}

static void svc_conf(lvs_svc_conf *c, const char *sched)
{
    memset(c, 0, sizeof(*c));
    c->af = LVS_AF_INET;
    c->proto = LVS_PROTO_TCP;
    c->addr = lvs_addr4(VIP);
    c->port = 80;
    c->sched = sched;
    c->netmask = 0xffffffffu;
}

static void dest_conf(lvs_dest_conf *c, uint32_t addr, int weight)
{
    memset(c, 0, sizeof(*c));
    c->af = c->dest_af = LVS_AF_INET;
    c->proto = LVS_PROTO_TCP;
    c->vaddr = lvs_addr4(VIP);
    c->vport = 80;
    c->addr = lvs_addr4(addr);
    c->port = 80;
    c->weight = weight;
}

#define LOCKED(e, call) do { lvs_engine_lock(e); call; lvs_engine_unlock(e); } while (0)
#define CHECK(x) do { if (!(x)) { fprintf(stderr, "FAIL %s:%d %s\n", __FILE__, __LINE__, #x); \
                                   exit(2); } } while (0)

int main(int argc, char **argv)
{
    double seconds = argc > 1 ? atof(argv[1]) : 2.0;
    int nw = argc > 2 ? atoi(argv[2]) : 2;
    CHECK(nw >= 1 && nw <= MAXW);
    nworkers = nw;
    lvs_engine *e = lvs_engine_new(1 << 14, 42);
    CHECK(e);
    lvs_svc_conf sc;
    lvs_dest_conf dc;
    svc_conf(&sc, "wlc");
    CHECK(lvs_svc_add(e, &sc) == 0);
    for (int i = 0; i < 4; i++) {
        dest_conf(&dc, RS(i), 1 + i % 2);
        CHECK(lvs_dest_add(e, &dc) == 0);
    }
    CHECK(lvs_engine_set_option(e, LVS_OPT_SYNC_MASTER, 1) == 0);
    CHECK(lvs_engine_set_option(e, LVS_OPT_SYNC_THRESHOLD, 1) == 0);

    int fds[MAXW];
    for (int i = 0; i < nw; i++) {
        int sv[2];
        CHECK(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_NONBLOCK, 0, sv) == 0);
        fds[i] = sv[0];
        peers[i] = sv[1];
    }
    lvs_workers *w = lvs_workers_new(e, fds, (uint32_t)nw, 0, 64, 2048);
    lvs_workers_set_spin(w, 20000); /* the spin's reads run against the control calls too */
    CHECK(w);
    /* the fast path's map (bpf/tc_fastpath.bpf.c: 40-byte key, 48-byte value); without
     * bpf(2) (not root) offload is left out */
    int map_fd = lvs_bpf_hash_map(40, 48, 2 << 14, NULL);
    lvs_fastpath *fp = map_fd >= 0 ? lvs_fastpath_new(e, map_fd, 1 << 14) : NULL;
    if (fp) {
        lvs_workers_set_fastpath(w, fp);
        CHECK(lvs_offload_enable(e, 256, 0, 1) == 0);
    }
    CHECK(lvs_workers_start(w) == 0);
    CHECK(lvs_workers_running(w) == (uint32_t)nw);
    pthread_t th[2 * MAXW];
    for (int i = 0; i < nw; i++) {
        pthread_create(&th[2 * i], NULL, sender, (void *)(intptr_t)i);
        pthread_create(&th[2 * i + 1], NULL, drainer, (void *)(intptr_t)i);
    }

    static const char *scheds[] = {"rr", "wlc", "sh", "mh", "lblc", "wrr"};
    static uint8_t syncbuf[1 << 20];
    static lvs_conn_info conns[4096];
    uint64_t counters[64];
    lvs_tunio_stats st;
    unsigned long calls = 0;
    double end = now_s() + seconds;
    for (unsigned k = 0; now_s() < end; k++) {
        double t = now_s();
        dest_conf(&dc, 0xC6130100u + k % 200, 2);
        int rc;
        LOCKED(e, rc = lvs_dest_add(e, &dc));
        CHECK(rc == 0);
        dc.weight = 3;
        LOCKED(e, rc = lvs_dest_edit(e, &dc));
        CHECK(rc == 0);
        svc_conf(&sc, scheds[k % 6]);
        LOCKED(e, rc = lvs_svc_edit(e, &sc));
        CHECK(rc == 0);
        LOCKED(e, lvs_engine_expire(e, t));
        LOCKED(e, lvs_engine_update_rates(e, t));
        uint32_t n, skipped;
        LOCKED(e, n = lvs_sync_collect(e, syncbuf, sizeof(syncbuf)));
        LOCKED(e, lvs_sync_apply(e, syncbuf, n, t, &skipped));
        LOCKED(e, lvs_conn_list(e, conns, 4096));
        LOCKED(e, lvs_counter_values(e, counters, 64));
        /* the sync master keeps every in-packet exclusive: off half the time */
        LOCKED(e, lvs_engine_set_option(e, LVS_OPT_SYNC_MASTER, (int)(k >> 3 & 1)));
        LOCKED(e, lvs_engine_set_timeouts(e, 900 - k % 2, 120, 300));
        LOCKED(e, rc = lvs_dest_del(e, &dc, (int)(k & 1)));
        CHECK(rc == 0);
        if (k % 50 == 0)
            LOCKED(e, lvs_engine_zero_stats(e, 0, 0, NULL, 0));
        if (k == 100)
            lvs_workers_zero_stats(w);
        for (int i = 0; i < nw; i++)
            lvs_workers_get_stats(w, (uint32_t)i, &st);
        calls += 11;
        if (fp) {
            CHECK(lvs_fastpath_collect(fp) >= 0); /* takes the engine lock itself */
            if (k % 40 == 20) {
                LOCKED(e, lvs_offload_disable(e));
                lvs_workers_set_fastpath(w, NULL);
                lvs_fastpath_flush(fp);
            } else if (k % 40 == 30) {
                lvs_workers_set_fastpath(w, fp);
                LOCKED(e, rc = lvs_offload_enable(e, 256, k % 3, 1));
                CHECK(rc == 0);
            }
            calls += 1;
        }
    }
    atomic_store(&stop_flag, 1);
    for (int i = 0; i < 2 * nw; i++)
        pthread_join(th[i], NULL);
    usleep(100000);
    lvs_workers_stop(w);
    CHECK(lvs_workers_running(w) == 0);
    lvs_fastpath_stats fst = {0};
    if (fp) {
        lvs_fastpath_collect(fp);
        lvs_fastpath_get_stats(fp, &fst);
        CHECK(fst.adds > 0); /* offload really ran */
    }
    uint64_t reads = 0, fwd = 0, batches = 0;
    for (int i = 0; i < nw; i++) {
        lvs_workers_get_stats(w, (uint32_t)i, &st);
        /* every packet read got exactly one verdict */
        CHECK(st.reads == st.forwarded + st.passed + st.replies + st.dropped);
        reads += st.reads;
        fwd += st.forwarded;
        batches += st.batches;
    }
    /* restart and stop again: the stop eventfd is drained on stop */
    CHECK(lvs_workers_start(w) == 0);
    CHECK(lvs_workers_running(w) == (uint32_t)nw);
    lvs_workers_free(w);
    lvs_fastpath_free(fp);
    if (map_fd >= 0)
        close(map_fd);
    for (int i = 0; i < nw; i++) {
        close(fds[i]);
        close(peers[i]);
    }
    lvs_engine_free(e);
    printf("workers=%d sent=%lu reads_since_zero=%llu forwarded=%llu batches=%llu "
           "control_calls=%lu offload_adds=%llu offload_dels=%llu folds=%llu\n", nw,
           (unsigned long)atomic_load(&sent), (unsigned long long)reads,
           (unsigned long long)fwd, (unsigned long long)batches, calls,
           (unsigned long long)fst.adds, (unsigned long long)fst.dels,
           (unsigned long long)fst.collects);
    return 0;
}
