/*
 * engine.h — internals shared by the files of the core (this folder): the engine and
 * connection structs, the drop counters, the connection hashes, and what each file offers the
 * others.  Schedulers and the dataplane never include this; they use lvs.h and api.h.
 *
 * Who calls whom (no cycles; a file calls only files below it in this list):
 *   engine.c   lifetime, options, expiry sweep  -> ctl.c conn.c dest.c sync.c proto_tcp.c
 *   packet.c   packet entry, batch loop         -> proto_tcp.c xmit.c icmp.c sync.c ctl.c conn.c
 *   xmit.c     NAT rewrite                      -> icmp.c
 *   icmp.c     ICMP                             -> conn.c
 *   sync.c     sync records                     -> ctl.c conn.c
 *   info.c     listings                         -> est.c ctl.c conn.c
 *   est.c      estimator, -Z                    -> ctl.c
 *   ctl.c      services and dests               -> conn.c dest.c (and the scheduler registry)
 *   proto_tcp.c  TCP state machine              -> conn.c
 *   conn.c     connection table, timers         -> dest.c
 *   dest.c     dest references, the trash       (nothing)
 */
#ifndef PYLVS_ENGINE_H
#define PYLVS_ENGINE_H

#include <stdint.h>

#include "api.h"
#include "lvs.h"

/* Internal conn flag bits (not in the kernel's set; masked out of sync records). */
#define LVS_CONN_F_INUSE 0x0001    /* slab slot holds a live entry */
#define LVS_CONN_F_INHASH 0x0002   /* linked in the in-hash (a neutralised template is not) */
#define LVS_CONN_F_SYNC_MASK                                                                  \
    (LVS_CONN_F_NOOUTPUT | LVS_CONN_F_INACTIVE | LVS_CONN_F_TEMPLATE)

/*
 * One connection or persistence template.  Kept at <= 104 bytes: with the two hash buckets
 * per entry at a full table that is <= 120 bytes per connection.
 */
typedef struct lvs_conn lvs_conn;
struct lvs_conn {
    lvs_conn *in_next;       /* in-hash chain: (proto, caddr, cport, vaddr, vport) */
    lvs_conn *out_next;      /* out-hash chain: (proto, daddr, dport, caddr, cport); free list */
    lvs_conn *t_next;        /* timer wheel slot list */
    lvs_conn **t_pprev;
    lvs_dest *dest;
    lvs_conn *control;       /* persistence template, or NULL */
    double expires;          /* absolute deadline; may be later than the wheel slot (lazy) */
    double wexp;             /* the deadline the wheel slot was chosen for */
    uint32_t caddr, vaddr, daddr;
    uint16_t cport, vport, dport;
    uint8_t proto;
    uint8_t state;
    uint16_t flags;
    uint8_t old_state;       /* state at the last sync record */
    uint8_t pad_[3];
    uint32_t timeout;        /* seconds, for the current state */
    uint32_t in_pkts;        /* for the sync thresholds */
    uint32_t n_control;      /* conns controlled by this template */
};

#define LVS_WHEEL_BITS 12
#define LVS_WHEEL_SIZE (1u << LVS_WHEEL_BITS)
#define LVS_WHEEL_TPS 8.0    /* wheel ticks per second */
#define LVS_SLAB_BITS 12
#define LVS_SLAB_SIZE (1u << LVS_SLAB_BITS)

/* Drop/pass reasons; names in lvs_counter_names (same order). */
enum {
    LVS_CNT_TRUNCATED,
    LVS_CNT_BAD_VERSION,
    LVS_CNT_BAD_IHL,
    LVS_CNT_BAD_TOTAL_LENGTH,
    LVS_CNT_BAD_IP_CHECKSUM,
    LVS_CNT_FRAGMENT,
    LVS_CNT_UNKNOWN_PROTO,
    LVS_CNT_NO_SERVICE,
    LVS_CNT_TCP_NO_SYN,
    LVS_CNT_TABLE_FULL,
    LVS_CNT_NO_DEST,
    LVS_CNT_DEST_UNAVAILABLE,
    LVS_CNT_TTL_EXCEEDED,
    LVS_CNT_BAD_ICMP_CHECKSUM,
    LVS_CNT_ICMP_NO_CONN,
    LVS_CNT_ICMP_OTHER,
    LVS_CNT_PASS_NOT_OURS,
    LVS_CNT_REPLY_SHORT_STRIDE,
    LVS_CNT_SYNC_OVERFLOW,
    LVS_CNT_MAX
};

struct lvs_engine {
    /* connection table */
    lvs_conn **in_tab;
    lvs_conn **out_tab;
    uint32_t tab_mask;
    uint64_t seed;
    uint32_t max_conns;
    uint32_t nconns;         /* live entries, templates included */
    uint32_t ntemplates;
    lvs_conn **slabs;
    uint32_t nslabs, slabs_cap;
    lvs_conn *free_list;

    /* timer wheel */
    lvs_conn *wheel[LVS_WHEEL_SIZE];
    int64_t wheel_tick;      /* next tick to process (kept at the current one) */
    int wheel_started;

    /* services: a small hash by (proto, addr, port), a vector in insertion order, a VIP set */
    lvs_service *svc_tab[256];
    lvs_service **svcs;
    uint32_t nsvcs, svcs_cap;
    uint32_t *vip_set;       /* open addressing, 0 = empty; addresses + 1 never 0 in practice */
    uint32_t *vip_cnt;
    uint32_t vip_mask;

    lvs_dest *trash;         /* removed dests still referenced (linked through ->next) */
    uint32_t ntrash;

    /* timeouts in seconds */
    uint32_t tcp_timeouts[LVS_TCP_S_LAST];
    uint32_t udp_timeout;

    /* options */
    int expire_nodest_conn;
    int expire_quiescent_template;
    int conn_reuse_mode;

    /* stats */
    lvs_stats stats;
    lvs_stats zero;
    lvs_est est;
    double est_last;
    int est_started;
    uint64_t counters[LVS_CNT_MAX];
    uint16_t ip_id;          /* IP id of generated ICMP packets */

    /* sync */
    /* called when a template still in control is re-armed by its timer (sync.c), so the
     * connection table needs nothing from sync */
    void (*tmpl_rearmed)(lvs_engine *e, lvs_conn *c);
    int sync_master;
    uint32_t sync_threshold;
    uint32_t sync_period;
    uint8_t *sync_buf;
    uint32_t sync_len, sync_cap;
};

/* ---- conn.c ---- */
lvs_conn *lvs_conn_in_get(lvs_engine *e, uint8_t proto, uint32_t caddr, uint16_t cport,
                          uint32_t vaddr, uint16_t vport);
lvs_conn *lvs_conn_out_get(lvs_engine *e, uint8_t proto, uint32_t daddr, uint16_t dport,
                           uint32_t caddr, uint16_t cport);
lvs_conn *lvs_tmpl_get(lvs_engine *e, uint8_t proto, uint32_t snet, uint32_t vaddr,
                       uint16_t vport);
/* Allocate, bind to dest (counters, thresholds) and hash; NULL when the table is full. */
lvs_conn *lvs_conn_new(lvs_engine *e, uint8_t proto, uint32_t caddr, uint16_t cport,
                       uint32_t vaddr, uint16_t vport, uint32_t daddr, uint16_t dport,
                       uint16_t flags, lvs_dest *dest, double now);
void lvs_conn_unhash_template(lvs_engine *e, lvs_conn *c);
/* Re-arm to now + c->timeout (lazy: the wheel slot moves only when the deadline shrinks). */
void lvs_conn_arm(lvs_engine *e, lvs_conn *c, double now);
/* ip_vs_conn_expire_now: a template that controls conns is re-armed 60 s instead. */
void lvs_conn_expire_now(lvs_engine *e, lvs_conn *c, double now);
/* Run the timer wheel up to now; returns the entries removed (conns and templates). */
uint32_t lvs_conn_expire_due(lvs_engine *e, double now);
void lvs_conn_set_active(lvs_conn *c, int active);
int lvs_conn_table_init(lvs_engine *e, uint32_t max_conns);
void lvs_conn_table_free(lvs_engine *e);
/* Call fn on every live entry (safe against fn expiring the entry). */
void lvs_conn_for_each(lvs_engine *e, void (*fn)(lvs_engine *, lvs_conn *, void *), void *arg);
uint32_t lvs_conn_index_of(lvs_engine *e, const lvs_conn *c);

/* ---- dest.c ---- */
/* A dest left its service: clear AVAILABLE and OVERLOAD, keep it in the trash while it is
 * referenced, free it at once otherwise. */
void lvs_dest_trash(lvs_engine *e, lvs_dest *d);
/* Take a trashed dest of this virtual service back out (revival), or NULL. */
lvs_dest *lvs_dest_trash_take(lvs_engine *e, uint8_t vproto, uint32_t vaddr, uint16_t vport,
                              uint32_t addr, uint16_t port);
/* Drop one reference; the last one to a removed dest frees it. */
void lvs_dest_put(lvs_engine *e, lvs_dest *d);
/* Free the trashed dests nobody references (all of them when `all`, at teardown). */
void lvs_dest_trash_sweep(lvs_engine *e, int all);

/* ---- ctl.c ---- */
int lvs_ctl_init(lvs_engine *e);
/* Remove every service (their dests go to the trash) and free the service containers. */
void lvs_ctl_free(lvs_engine *e);
lvs_service *lvs_svc_lookup(lvs_engine *e, uint8_t proto, uint32_t addr, uint16_t port);
/* A service's dest by address (the list walk of ip_vs_lookup_dest), or NULL. */
lvs_dest *lvs_dest_lookup(lvs_service *svc, uint32_t addr, uint16_t port);
int lvs_is_vip(const lvs_engine *e, uint32_t addr);

/* ---- proto_tcp.c ---- */
extern const uint32_t lvs_tcp_default_timeouts[LVS_TCP_S_LAST];

/* ---- est.c ---- */
/* Counters since the last zero and the rounded estimator rates of one stats object. */
void lvs_stats_info_fill(lvs_stats_info *o, const lvs_stats *cur, const lvs_stats *zero,
                         const lvs_est *est);

/* ---- sync.c ---- */
/* A conn got an incoming packet (pkts = its count): queue the records the master sends. */
void lvs_sync_conn(lvs_engine *e, lvs_conn *c, uint32_t pkts);
/* The tmpl_rearmed hook. */
void lvs_sync_tmpl_rearmed(lvs_engine *e, lvs_conn *c);
void lvs_sync_free(lvs_engine *e);

static inline uint64_t lvs_hash_mix(uint64_t h)
{
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdULL;
    h ^= h >> 33;
    h *= 0xc4ceb9fe1a85ec53ULL;
    h ^= h >> 33;
    return h;
}

/* Bucket of the in-hash (client side + VIP) and of the out-hash (server side + client). */

static inline uint32_t lvs_in_hash(const lvs_engine *e, uint8_t proto, uint32_t caddr,
                                   uint16_t cport, uint32_t vaddr, uint16_t vport)
{
    uint64_t h = ((uint64_t)caddr << 32 | vaddr) ^ e->seed;
    h = lvs_hash_mix(h ^ ((uint64_t)cport << 24 | (uint64_t)vport << 8 | proto) *
                             0x9E3779B97F4A7C15ULL);
    return (uint32_t)h & e->tab_mask;
}

static inline uint32_t lvs_out_hash(const lvs_engine *e, uint8_t proto, uint32_t daddr,
                                    uint16_t dport, uint32_t caddr, uint16_t cport)
{
    uint64_t h = ((uint64_t)daddr << 32 | caddr) ^ (e->seed * 31);
    h = lvs_hash_mix(h ^ ((uint64_t)dport << 24 | (uint64_t)cport << 8 | proto) *
                             0xC2B2AE3D27D4EB4FULL);
    return (uint32_t)h & e->tab_mask;
}

#endif /* PYLVS_ENGINE_H */
