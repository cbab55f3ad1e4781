/*
 * _fastpath.c — flow offload, the dataplane's half: the engine's events into the TC program's
 * `flows` map, and the map's counters back into the engine (_fastpath.h; the program is
 * bpf/tc_fastpath.bpf.c, the engine's half core/offload.c).
 *
 * Events.  A packet worker drains the engine's queue after each batch (lvs_fastpath_drain,
 * from _workers.c), so a connection's entries appear right after the packet that made it
 * ESTABLISHED, and go right after the FIN or RST that ended it: an entry left behind would
 * send a reused client port to the old real server.  One thread applies at a time (fp->mu),
 * so an ADD and a DEL of one key are applied in the order the engine queued them; a worker
 * that finds the mutex taken leaves the events for its next batch.
 *
 * Folding.  The program counts packets, bytes and the latest packet's time per entry
 * (cumulative since the entry was added).  `shadow` keeps, per conn slot and direction, what
 * was folded already, so each fold adds only the difference; an entry taken out is read as it
 * is deleted (BPF_MAP_LOOKUP_AND_DELETE_ELEM) and its remainder kept for the collector's next
 * fold (its conn lives on in FIN_WAIT or TIME_WAIT), so the stats lose nothing at a FIN and a
 * worker takes no exclusive engine lock for it (unless PENDING records pile up).  The collector (lvs_fastpath_collect, called by the control plane every
 * FOLD interval and before a stats read) reads the whole map in batches and deletes the entries
 * the engine says are dead.  The engine lock is taken once per batch of entries, never across
 * a bpf(2) call.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "_bpf.h"
#include "_fastpath.h"
#include "core/lock.h"
#include "core/offload.h"

#ifndef BPF_TCX_INGRESS
#define BPF_TCX_INGRESS 46 /* uapi 6.6; the build host's headers may be older */
#endif

/* The map's key and value (bpf/tc_fastpath.bpf.c: struct fp_key, struct fp_val). */
typedef struct fp_key {
    uint32_t saddr[4];
    uint32_t daddr[4];
    uint16_t sport, dport;
    uint8_t family, proto;
    uint16_t pad;
} fp_key;

typedef struct fp_val {
    uint32_t addr[4];
    uint16_t port;
    uint8_t dir, ttl_dec;
    uint32_t slot;
    uint64_t pkts, bytes, last_ns;
} fp_val;

_Static_assert(sizeof(fp_key) == 40, "fp_key as the program has it");
_Static_assert(sizeof(fp_val) == 48, "fp_val as the program has it");

typedef struct shadow {
    uint64_t pkts, bytes;
} shadow;

#define CHUNK 256 /* map entries per BPF_MAP_LOOKUP_BATCH and per engine-lock hold */
#define PENDING 4096 /* last counts of removed entries waiting for the collector's fold */

struct lvs_fastpath {
    lvs_engine *engine;
    int map_fd;
    uint32_t max_conns;
    pthread_mutex_t mu;      /* one applier or collector at a time; guards shadow and st */
    shadow *shadow;          /* [slot * 2 + dir]: counts folded so far */
    lvs_offload_fold pending[PENDING];   /* removed entries' last counts, not yet folded */
    uint32_t npending;
    lvs_fastpath_stats st;
};

lvs_fastpath *lvs_fastpath_new(lvs_engine *engine, int map_fd, uint32_t max_conns)
{
    if (!engine || map_fd < 0 || max_conns == 0)
        return NULL;
    lvs_fastpath *fp = calloc(1, sizeof(*fp));
    if (!fp)
        return NULL;
    /* calloc of a large array maps zero pages lazily: only the slots in use cost memory */
    fp->shadow = calloc((size_t)max_conns * 2, sizeof(shadow));
    if (!fp->shadow) {
        free(fp);
        return NULL;
    }
    fp->engine = engine;
    fp->map_fd = map_fd;
    fp->max_conns = max_conns;
    pthread_mutex_init(&fp->mu, NULL);
    return fp;
}

void lvs_fastpath_free(lvs_fastpath *fp)
{
    if (!fp)
        return;
    pthread_mutex_destroy(&fp->mu);
    free(fp->shadow);
    free(fp);
}

static uint64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* ---- keys: host-order engine tuples <-> wire-order map keys ---- */

static void put_addr(uint32_t out[4], uint8_t af, lvs_addr a)
{
    if (af == LVS_AF_INET6) {
        for (int i = 0; i < 4; i++)
            out[i] = htonl(a.ip6[i]);
    } else {
        out[0] = htonl(a.ip);
        out[1] = out[2] = out[3] = 0;
    }
}

static lvs_addr get_addr(const uint32_t in[4], uint8_t family)
{
    lvs_addr a = {.ip6 = {0, 0, 0, 0}};
    if (family == 6) {
        for (int i = 0; i < 4; i++)
            a.ip6[i] = ntohl(in[i]);
    } else {
        a.ip = ntohl(in[0]);
    }
    return a;
}

/* One direction's entry: packets from src:sport to dst:dport get `to:toport` written over the
 * address the NAT changes, and their TTL lowered by ttl_dec. */
static void entry_of(const lvs_offload_event *ev, int dir, fp_key *k, fp_val *v,
                     lvs_addr src, uint16_t sport, lvs_addr dst, uint16_t dport,
                     lvs_addr to, uint16_t toport, uint8_t ttl_dec)
{
    k->family = ev->af == LVS_AF_INET6 ? 6 : 4;
    k->proto = ev->proto;
    put_addr(k->saddr, ev->af, src);
    put_addr(k->daddr, ev->af, dst);
    k->sport = htons(sport);
    k->dport = htons(dport);
    v->dir = (uint8_t)dir;
    v->slot = ev->slot;
    put_addr(v->addr, ev->af, to);
    v->port = htons(toport);
    v->ttl_dec = ttl_dec;
}

/* The two entries of an event's connection: [0] client -> VIP, [1] real server -> client. */
static void entries_of(const lvs_offload_event *ev, fp_key k[2], fp_val v[2])
{
    memset(k, 0, 2 * sizeof(fp_key));
    memset(v, 0, 2 * sizeof(fp_val));
    entry_of(ev, 0, &k[0], &v[0], ev->caddr, ev->cport, ev->vaddr, ev->vport,
             ev->daddr, ev->dport, LVS_FASTPATH_TTL_IN);
    entry_of(ev, 1, &k[1], &v[1], ev->daddr, ev->dport, ev->caddr, ev->cport,
             ev->vaddr, ev->vport, LVS_FASTPATH_TTL_OUT);
}

/* What an entry counted since the last fold (and remember it as folded). */
static void to_fold(lvs_fastpath *fp, const fp_key *k, const fp_val *v, lvs_offload_fold *r)
{
    memset(r, 0, sizeof(*r));
    r->af = k->family == 6 ? LVS_AF_INET6 : LVS_AF_INET;
    r->proto = k->proto;
    r->dir = v->dir;
    r->saddr = get_addr(k->saddr, k->family);
    r->daddr = get_addr(k->daddr, k->family);
    r->sport = ntohs(k->sport);
    r->dport = ntohs(k->dport);
    r->last_seen = v->last_ns ? (double)v->last_ns * 1e-9 : 0.0;
    if (v->slot < fp->max_conns && v->dir < 2) {
        shadow *s = &fp->shadow[(size_t)v->slot * 2 + v->dir];
        r->pkts = v->pkts >= s->pkts ? v->pkts - s->pkts : v->pkts;
        r->bytes = v->bytes >= s->bytes ? v->bytes - s->bytes : v->bytes;
        s->pkts = v->pkts;
        s->bytes = v->bytes;
    }
}

static void fold(lvs_fastpath *fp, const lvs_offload_fold *recs, uint32_t n, uint8_t *verdicts,
                 int worker)
{
    if (!n)
        return;
    if (worker) {
        lvs_engine_lock(fp->engine);
        lvs_offload_fold_batch(fp->engine, recs, n, verdicts);
        lvs_engine_unlock(fp->engine);
    } else {
        lvs_engine_lock_control(fp->engine);
        lvs_offload_fold_batch(fp->engine, recs, n, verdicts);
        lvs_engine_unlock_named(fp->engine, "lvs_fastpath_collect");
    }
}

static int flush_locked(lvs_fastpath *fp)
{
    fp_key next;
    int n = 0;
    /* always from the first key: the one just deleted has no successor any more */
    for (;;) {
        union bpf_attr attr;
        memset(&attr, 0, sizeof(attr));
        attr.map_fd = (uint32_t)fp->map_fd;
        attr.next_key = (uint64_t)(uintptr_t)&next;
        if (lvs_sys_bpf(BPF_MAP_GET_NEXT_KEY, &attr) < 0 ||
            lvs_bpf_map_op(BPF_MAP_DELETE_ELEM, fp->map_fd, &next, NULL, 0) < 0)
            break;
        n++;
    }
    fp->st.flushes++;
    return n;
}

/* Apply queued events (fp->mu held). */
/* Fold the removed entries' last counts (fp->mu held). */
static void fold_pending(lvs_fastpath *fp, int worker)
{
    static __thread uint8_t verdicts[PENDING];
    fold(fp, fp->pending, fp->npending, verdicts, worker);
    fp->npending = 0;
}

static int update(lvs_fastpath *fp, const fp_key *k, const fp_val *v)
{
    return lvs_bpf_map_op(BPF_MAP_UPDATE_ELEM, fp->map_fd, k, (void *)v, BPF_ANY);
}

static int drain_locked(lvs_fastpath *fp, int worker)
{
    lvs_offload_event ev[64];
    int applied = 0;
    for (;;) {
        int lost = 0;
        uint32_t n = lvs_offload_drain(fp->engine, ev, 64, &lost);
        if (lost)
            flush_locked(fp);
        for (uint32_t i = 0; i < n; i++) {
            fp_key k[2];
            fp_val v[2];
            entries_of(&ev[i], k, v);
            if (ev[i].op == LVS_OFFLOAD_ADD) {
                if (ev[i].slot < fp->max_conns)
                    memset(&fp->shadow[(size_t)ev[i].slot * 2], 0, 2 * sizeof(shadow));
                if (update(fp, &k[0], &v[0]) < 0) {
                    fp->st.add_errors++;
                } else if (update(fp, &k[1], &v[1]) < 0) {
                    lvs_bpf_map_op(BPF_MAP_DELETE_ELEM, fp->map_fd, &k[0], NULL, 0);
                    fp->st.add_errors++;
                } else {
                    fp->st.adds++;
                }
            } else {
                for (int d = 0; d < 2; d++) {
                    fp_val got;
                    if (lvs_bpf_map_op(BPF_MAP_LOOKUP_AND_DELETE_ELEM, fp->map_fd, &k[d], &got,
                                       0) < 0 || got.slot != ev[i].slot)
                        continue;
                    if (fp->npending == PENDING)
                        fold_pending(fp, worker);
                    to_fold(fp, &k[d], &got, &fp->pending[fp->npending]);
                    if (fp->pending[fp->npending].pkts)
                        fp->npending++;
                }
                fp->st.dels++;
            }
            applied++;
        }
        if (n < 64)
            break;
    }
    return applied;
}

int lvs_fastpath_drain(lvs_fastpath *fp, int wait)
{
    if (wait)
        pthread_mutex_lock(&fp->mu);
    else if (pthread_mutex_trylock(&fp->mu) != 0)
        return 0;
    int n = drain_locked(fp, !wait);
    pthread_mutex_unlock(&fp->mu);
    return n;
}

/* One BPF_MAP_LOOKUP_BATCH: up to *count entries after *token (first: NULL); 1 = more to
 * come, 0 = that was the last batch, < 0 = error. */
static int lookup_batch(int fd, const uint64_t *in, uint64_t *out, fp_key *keys, fp_val *vals,
                        uint32_t *count)
{
    union bpf_attr attr;
    memset(&attr, 0, sizeof(attr));
    attr.batch.map_fd = (uint32_t)fd;
    attr.batch.in_batch = (uint64_t)(uintptr_t)in;
    attr.batch.out_batch = (uint64_t)(uintptr_t)out;
    attr.batch.keys = (uint64_t)(uintptr_t)keys;
    attr.batch.values = (uint64_t)(uintptr_t)vals;
    attr.batch.count = *count;
    long rc = lvs_sys_bpf(BPF_MAP_LOOKUP_BATCH, &attr);
    *count = attr.batch.count;
    if (rc < 0)
        return errno == ENOENT ? 0 : -errno;
    return 1;
}

int lvs_fastpath_collect(lvs_fastpath *fp)
{
    static __thread fp_key keys[CHUNK];
    static __thread fp_val vals[CHUNK];
    static __thread lvs_offload_fold recs[CHUNK];
    static __thread uint8_t verdicts[CHUNK];
    uint64_t t0 = mono_ns();
    pthread_mutex_lock(&fp->mu);
    drain_locked(fp, 0);
    fold_pending(fp, 0);
    fp_key *dead = NULL;
    uint32_t ndead = 0, capdead = 0;
    uint64_t token = 0, entries = 0;
    int first = 1, more = 1, err = 0;
    while (more) {
        uint32_t count = CHUNK;
        more = lookup_batch(fp->map_fd, first ? NULL : &token, &token, keys, vals, &count);
        if (more < 0) {
            err = more;
            break;
        }
        first = 0;
        for (uint32_t i = 0; i < count; i++)
            to_fold(fp, &keys[i], &vals[i], &recs[i]);
        fold(fp, recs, count, verdicts, 0);
        entries += count;
        for (uint32_t i = 0; i < count; i++) {
            if (verdicts[i] != LVS_OFFLOAD_DROP)
                continue;
            if (ndead == capdead) {
                uint32_t cap = capdead ? capdead * 2 : CHUNK;
                fp_key *d = realloc(dead, (size_t)cap * sizeof(*d));
                if (!d)
                    break;
                dead = d;
                capdead = cap;
            }
            dead[ndead++] = keys[i];
        }
    }
    /* after the walk: deleting during it would make the batch cursor skip entries */
    for (uint32_t i = 0; i < ndead; i++)
        lvs_bpf_map_op(BPF_MAP_DELETE_ELEM, fp->map_fd, &dead[i], NULL, 0);
    free(dead);
    fp->st.pruned += ndead;
    fp->st.entries = entries - ndead;
    fp->st.collects++;
    uint64_t took = mono_ns() - t0;
    if (took > fp->st.collect_ns_max)
        fp->st.collect_ns_max = took;
    pthread_mutex_unlock(&fp->mu);
    return err ? err : (int)(entries - ndead);
}

int lvs_fastpath_flush(lvs_fastpath *fp)
{
    pthread_mutex_lock(&fp->mu);
    int n = flush_locked(fp);
    fp->st.entries = 0;
    pthread_mutex_unlock(&fp->mu);
    return n;
}

void lvs_fastpath_get_stats(lvs_fastpath *fp, lvs_fastpath_stats *out)
{
    pthread_mutex_lock(&fp->mu);
    *out = fp->st;
    pthread_mutex_unlock(&fp->mu);
}

int lvs_fastpath_link(int prog_fd, int ifindex)
{
    union bpf_attr attr;
    memset(&attr, 0, sizeof(attr));
    attr.link_create.prog_fd = (uint32_t)prog_fd;
    attr.link_create.target_ifindex = (uint32_t)ifindex;
    attr.link_create.attach_type = BPF_TCX_INGRESS;
    long fd = lvs_sys_bpf(BPF_LINK_CREATE, &attr);
    return fd < 0 ? -errno : (int)fd;
}

int lvs_fastpath_tcx_count(int ifindex)
{
    union bpf_attr attr;
    memset(&attr, 0, sizeof(attr));
    attr.query.target_fd = (uint32_t)ifindex; /* target_ifindex in newer headers (a union) */
    attr.query.attach_type = BPF_TCX_INGRESS;
    if (lvs_sys_bpf(BPF_PROG_QUERY, &attr) < 0)
        return -errno;
    return (int)attr.query.prog_cnt;
}

int lvs_fastpath_test_run(int prog_fd, int ifindex, const uint8_t *frame, uint32_t len,
                          uint8_t *out, uint32_t cap, uint32_t *out_len)
{
    struct __sk_buff ctx;
    memset(&ctx, 0, sizeof(ctx));
    ctx.ifindex = (uint32_t)ifindex;
    ctx.ingress_ifindex = (uint32_t)ifindex;
    return lvs_bpf_test_run(prog_fd, frame, len, out, cap, out_len, &ctx, sizeof(ctx));
}
