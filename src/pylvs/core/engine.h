/*
 * engine.h — internals shared by the files of the core (this folder): the engine and
 * connection structs, the drop counters, the connection hashes, and what each file offers the
 * others.  Schedulers and the dataplane never include this; they use lvs.h and api.h.
 *
 * Who calls whom (no cycles; a file calls only files below it in this list):
 *   engine.c   lifetime, options, expiry sweep  -> defense.c ctl.c conn.c dest.c sync.c proto_tcp.c
 *                                                  offload.c
 *   packet.c   packet entry, batch loop         -> defense.c synproxy.c ftp.c proto_tcp.c xmit.c
 *                                                  icmp.c sync.c ctl.c offload.c conn.c
 *   ftp.c      FTP helper (PORT/PASV entries)    -> seqadj.c sync.c conn.c
 *   defense.c  flood defence, eviction          -> conn.c
 *   synproxy.c SYN proxy                        -> xmit.c seqadj.c conn.c
 *   xmit.c     NAT rewrite                      -> icmp.c seqadj.c
 *   icmp.c     ICMP                             -> conn.c seqadj.c
 *   sync.c     sync records                     -> ctl.c conn.c seqadj.c offload.c
 *   info.c     listings                         -> est.c ctl.c conn.c
 *   est.c      estimator, -Z                    -> ctl.c
 *   ctl.c      services and dests               -> conn.c dest.c (and the scheduler registry)
 *   proto_tcp.c  TCP state machine              -> offload.c conn.c
 *   conn.c     connection table, timers         -> offload.c dest.c seqadj.c (releases side
 *                                                  records, recalls offloaded conns)
 *   offload_fold.c  offload: the fold, off      -> sync.c conn.c offload.c
 *   seqadj.c   per-conn TCP translation         (nothing)
 *   offload.c  flow offload: the event queue    (nothing)
 *   dest.c     dest references, the trash       (nothing)
 */
#ifndef PYLVS_ENGINE_H
#define PYLVS_ENGINE_H

#include <pthread.h>
#include <stdint.h>

#include "api.h"
#include "lock.h"
#include "lvs.h"

/* Internal conn flag bits (not in the kernel's set; masked out of sync records). */
#define LVS_CONN_F_INUSE 0x0001    /* slab slot holds a live entry */
#define LVS_CONN_F_INHASH 0x0002   /* linked in the in-hash (a neutralised template is not) */
#define LVS_CONN_F_EMBRYO 0x0004   /* in the embryonic FIFO: TCP, made by a SYN, never ESTABLISHED */
#define LVS_CONN_F_ASSURED 0x0008  /* template: a conn it controls got established (or a UDP
                                    * reply); the kernel's IP_VS_CTPL_S_ASSURED */
#define LVS_CONN_F_EXT 0x0010      /* has a side record (seqadj.h), found by its slot */
#define LVS_CONN_F_SP_WAIT 0x4000  /* synproxy: the real server's handshake is still pending */
#define LVS_CONN_F_OFFLOAD 0x2000  /* offered to the kernel's fast path (offload.c) */
#define LVS_CONN_F_INTERNAL                                                                   \
    (LVS_CONN_F_INUSE | LVS_CONN_F_INHASH | LVS_CONN_F_EMBRYO | LVS_CONN_F_ASSURED |          \
     LVS_CONN_F_EXT | LVS_CONN_F_SP_WAIT | LVS_CONN_F_OFFLOAD)
#define LVS_CONN_F_SYNC_MASK                                                                  \
    (LVS_CONN_F_NOOUTPUT | LVS_CONN_F_INACTIVE | LVS_CONN_F_TEMPLATE | LVS_CONN_F_SEQ_MASK)

/*
 * One connection or persistence template, IPv4 and IPv6 alike: 128 bytes, two cache lines
 * (slabs are 128-byte aligned, so it never touches a third).  The first line holds everything a
 * lookup compares plus the in-chain link, the second the timer, dest and bookkeeping the packet
 * path updates.  Links between entries are slab slot indexes (lvs_conn_at), not pointers: half
 * the size, and the hash buckets shrink with them, so with its share of both bucket arrays at a
 * full table an entry costs <= 136 bytes (docs/performance.md#entry-size).  Per-conn state that
 * only some conns need (the SYN proxy's, seqadj.h) lives outside, indexed by `slot`.
 */
typedef struct lvs_conn lvs_conn;
struct lvs_conn {
    lvs_addr caddr, vaddr, daddr;
    uint16_t cport, vport, dport;
    uint8_t proto;
    uint8_t af;              /* LVS_AF_INET or LVS_AF_INET6 (all three addresses) */
    uint16_t flags;
    uint8_t state;
    uint8_t old_state;       /* state at the last sync record */
    uint32_t in_next;        /* in-hash chain: (af, proto, caddr, cport, vaddr, vport) */
    /* ---- second cache line ---- */
    lvs_dest *dest;
    double expires;          /* absolute deadline; may be later than the wheel slot (lazy) */
    uint32_t out_next;       /* out-hash chain: (af, proto, daddr, dport, caddr, cport); free list */
    uint32_t t_next;         /* timer wheel slot list */
    uint32_t t_prev;         /* LVS_NO_SLOT: not on the wheel; LVS_WHEEL_HEAD: first in its slot */
    uint32_t wexp;           /* the wheel tick (low 32 bits) of the slot the entry is in */
    uint32_t control;        /* persistence template's slot, or LVS_NO_SLOT */
    uint32_t slot;           /* this entry's table index (fixed for the slab slot's life) */
    uint32_t timeout;        /* seconds, for the current state */
    uint32_t in_pkts;        /* for the sync thresholds */
    uint32_t n_control;      /* conns controlled by this template */
    uint32_t emb_prev;       /* embryonic FIFO links (LVS_NO_SLOT = none) */
    uint32_t emb_next;
} __attribute__((aligned(64)));

#define LVS_NO_SLOT UINT32_MAX
#define LVS_WHEEL_HEAD (UINT32_MAX - 1)   /* t_prev of the first entry in a wheel slot */
_Static_assert(sizeof(lvs_conn) == 128, "a connection entry is two cache lines");

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
    LVS_CNT_DEFENSE_DROP_PACKET,
    LVS_CNT_BAD_EXT_HEADER,
    LVS_CNT_SYNPROXY_SYN,            /* SYNs answered with a cookie (REPLY) */
    LVS_CNT_SYNPROXY_ACK_OK,         /* ACKs with a valid cookie: a connection was opened */
    LVS_CNT_SYNPROXY_BAD_COOKIE,     /* ACKs whose cookie is forged or damaged (DROP) */
    LVS_CNT_SYNPROXY_EXPIRED_COOKIE, /* ACKs whose cookie is outside the window (DROP) */
    LVS_CNT_SYNPROXY_PENDING_DROP,   /* packets of a conn still waiting for its server (DROP) */
    LVS_CNT_SYNPROXY_HELD_TRUNCATED, /* client data not kept while waiting (over the budget) */
    LVS_CNT_SYNPROXY_HELD,           /* client data kept while waiting (a DROP verdict: the
                                      * engine sends it on with the server's SYN-ACK) */
    LVS_CNT_SLOPPY_IN,       /* not drops: entries created from a TCP non-SYN (sloppy) */
    LVS_CNT_SLOPPY_REPLY,    /* ... and from a reply of a real server (sloppy) */
    LVS_CNT_FTP_DATA_ENTRY,          /* FTP data entries made from PORT/EPRT/227/229 */
    LVS_CNT_FTP_REWRITE,             /* 227 replies rewritten to the VIP */
    LVS_CNT_FTP_NO_ROOM,             /* a 227 reply left as it was: no room to grow */
    /* SYN cookies for a service without synproxy (defense.c, syncookies); the same four
     * steps, in the same order, as the LVS_CNT_SYNPROXY_SYN block: lvs_synproxy_new counts
     * from either base */
    LVS_CNT_SYNCOOKIE_SYN,           /* SYNs answered with a cookie (REPLY) */
    LVS_CNT_SYNCOOKIE_ACK_OK,        /* ACKs with a valid cookie: a connection was opened */
    LVS_CNT_SYNCOOKIE_BAD_COOKIE,    /* ACKs whose cookie is forged or damaged (DROP) */
    LVS_CNT_SYNCOOKIE_EXPIRED_COOKIE, /* ACKs whose cookie is outside the window (DROP) */
    LVS_CNT_MAX
};

/* The flood defence state (defense.c; docs/ipvs.md#flood-defence). */
typedef struct lvs_defense {
    int drop_entry, drop_packet, secure_tcp;   /* the sysctls: 0..3, 1 <-> 2 move by themselves */
    int dropentry_on;        /* drop_entry engaged (the kernel's ipvs->dropentry) */
    int secure_on;           /* the secure state table and timeouts are in force */
    uint32_t amemthresh;     /* free table slots under which the automatic modes engage */
    uint32_t am_droprate;    /* drop rate of drop_packet mode 3 */
    uint32_t drop_rate;      /* 0 = drop_packet idle; else one in drop_rate new conns drops */
    uint32_t drop_counter;
    int evict_embryonic;     /* a full table gives the oldest embryonic entry's slot away */
    int32_t dropentry_counters[8];   /* todrop_entry: per in_pkts 1..8 */
    double last_tick;
    int ticked;
    uint64_t rng;
    uint64_t drop_entry_conns, drop_entry_templates;   /* removed by drop_entry */
    uint64_t evicted_embryonic, evicted_templates;     /* removed to make room */
    /* syncookies (defense.c): SYN cookies for every TCP service while a flood is on */
    int syncookies;          /* the sysctl: 0 never, 1 automatic, 2 always */
    int cookies_on;          /* engaged: a bare SYN to any TCP service gets a cookie */
    double cookies_until;    /* cookie ACKs are accepted until then (the validity window
                              * after disengaging) */
    uint32_t cookie_quiet;   /* consecutive ticks under the disengage mark */
    uint64_t cookie_syns_elsewhere;      /* SYNs answered with cookies in XDP (director) */
    uint64_t cookie_syn_mark, cookie_ack_mark;   /* their counts at the last tick */
    uint32_t cookie_unanswered;          /* cookie SYNs without an ACK in the last tick */
    uint64_t cookies_engaged;            /* times engaged */
} lvs_defense;

/* The flow offload state (offload.c): whether conns are offered, and the event queue the
 * dataplane drains (its own mutex: a worker drains it without the engine lock). */
typedef struct lvs_offload {
    int on;                  /* conns are offered (the dataplane's program is attached) */
    int v6;                  /* IPv6 conns too */
    uint32_t after;          /* offered after this many packets in */
    pthread_mutex_t mu;      /* guards ring, head, tail, lost, n_lost */
    struct lvs_offload_event *ring;
    uint32_t cap, head, tail;    /* head: next to drain; tail: next to fill (free-running) */
    uint32_t pending;        /* tail - head (+1 when lost), atomic: read without the mutex */
    int lost;                /* a DEL found the queue full: the dataplane must flush */
    uint64_t n_adds, n_dels, n_full, n_lost, n_fold_pkts, n_fold_bytes, n_orphans;
} lvs_offload;

struct lvs_engine {
    pthread_rwlock_t lock;   /* lock.c: exclusive (control calls, a batch's slow part) or shared
                              * (the workers' established-packet fast path) */
    lvs_lock_stats lock_stats;   /* lock.c: hold and wait times */
    uint64_t lock_held_since;    /* lock.c: when the exclusive holder took it (ns) */
    uint32_t workers_blocked;    /* lock.c: workers waiting for the lock (atomic) */
    /* connection table */
    uint32_t *in_tab;        /* bucket -> first entry's slot, LVS_NO_SLOT = empty */
    uint32_t *out_tab;
    uint32_t tab_mask;
    uint64_t seed;
    uint32_t max_conns;
    uint32_t nconns;         /* live entries, templates included */
    uint32_t ntemplates;
    lvs_conn **slabs;
    uint32_t nslabs, slabs_cap;
    uint32_t free_list;      /* slot of the first free entry, LVS_NO_SLOT = none */
    uint32_t emb_head, emb_tail;   /* embryonic FIFO, oldest first (slot indexes) */
    uint32_t nembryo;

    /* timer wheel */
    uint32_t wheel[LVS_WHEEL_SIZE];   /* slot of each wheel slot's first entry, or LVS_NO_SLOT */
    int64_t wheel_tick;      /* next tick to process (kept at the current one) */
    int wheel_started;

    /* services: a small hash by (proto, addr, port), a vector in insertion order, a VIP set */
    lvs_service *svc_tab[256];
    lvs_service **svcs;
    uint32_t nsvcs, svcs_cap;
    uint32_t *vip_set;       /* open addressing, 0 = empty; addresses + 1 never 0 in practice */
    uint32_t *vip_cnt;
    uint32_t vip_mask;
    lvs_addr *vip6_set;      /* the IPv6 VIPs, open addressing, :: = empty (never a VIP) */
    uint32_t vip6_mask;
    uint32_t *fwm_vips;      /* lvs_engine_set_fwm_vips: also in vip_set */
    uint32_t nfwm_vips;
    lvs_addr *fwm_vips6;     /* the IPv6 ones: also in vip6_set */
    uint32_t nfwm_vips6;
    uint32_t nfwm_svcs;      /* fwmark services: a marked batch looks them up only if > 0 */
    uint32_t n_no_cport;     /* FTP expectations waiting for their client port (ftp.c) */

    lvs_dest *trash;         /* removed dests still referenced (linked through ->next) */
    uint32_t ntrash;

    /* timeouts in seconds */
    uint32_t tcp_timeouts[LVS_TCP_S_LAST];
    uint32_t udp_timeout;

    /* options */
    int expire_nodest_conn;
    int expire_quiescent_template;
    int conn_reuse_mode;
    int sloppy_tcp;
    int sloppy_udp;

    /* stats */
    lvs_stats stats;
    lvs_stats zero;
    lvs_est est;
    double est_last;
    int est_started;
    uint64_t counters[LVS_CNT_MAX];
    uint16_t ip_id;          /* IP id of generated ICMP packets */
    lvs_defense def;

    /* per-conn side records (seqadj.c): one array per connection slab, allocated when a conn
     * of that slab first needs a record, indexed like the slab (by the conn's slot) */
    struct lvs_conn_ext **ext_slabs;
    uint32_t ext_nslabs;
    uint32_t ext_used;
    uint64_t sp_held_bytes;  /* client bytes synproxy holds for pending handshakes */

    /* synproxy cookie keys (synproxy.c): one per period, the two latest cached */
    uint64_t sp_key[2][2];
    uint32_t sp_key_period[2];
    uint8_t sp_key_valid[2];

    /* sync */
    /* called when a template still in control is re-armed by its timer (sync.c), so the
     * connection table needs nothing from sync */
    void (*tmpl_rearmed)(lvs_engine *e, lvs_conn *c);
    int sync_master;
    uint32_t sync_threshold;
    uint32_t sync_period;
    uint8_t *sync_buf;
    uint32_t sync_len, sync_cap;

    lvs_offload offload;
};

/* ---- lock.c (the rest is in lock.h) ---- */
void lvs_engine_lock_init(lvs_engine *e);
void lvs_engine_lock_destroy(lvs_engine *e);
void lvs_engine_lock_shared(lvs_engine *e);
void lvs_engine_unlock_shared(lvs_engine *e);

/* ---- offload.c (the rest is in offload.h; the fold is offload_fold.c) ---- */
void lvs_offload_init(lvs_engine *e);
void lvs_offload_free(lvs_engine *e);
/* The conn may be offered now (reads only). */
int lvs_offload_eligible(const lvs_engine *e, const lvs_conn *c);
/* Offer c if eligible (queue an ADD, mark it); called after a packet through the engine. */
void lvs_offload_offer(lvs_engine *e, lvs_conn *c);
/* c leaves ESTABLISHED or is freed: if it was offered, queue a DEL and unmark it. */
void lvs_offload_recall(lvs_engine *e, lvs_conn *c);

/* ---- conn.c ---- */
/* The entry in table slot `slot` (a live slot index, never LVS_NO_SLOT). */
static inline lvs_conn *lvs_conn_at(const lvs_engine *e, uint32_t slot)
{
    return &e->slabs[slot >> LVS_SLAB_BITS][slot & (LVS_SLAB_SIZE - 1)];
}
/* The entry at a chain link or bucket, NULL for LVS_NO_SLOT. */
static inline lvs_conn *lvs_conn_or_null(const lvs_engine *e, uint32_t slot)
{
    return slot == LVS_NO_SLOT ? NULL : lvs_conn_at(e, slot);
}
/* c's persistence template, or NULL. */
static inline lvs_conn *lvs_conn_control(const lvs_engine *e, const lvs_conn *c)
{
    return lvs_conn_or_null(e, c->control);
}
lvs_conn *lvs_conn_in_get(lvs_engine *e, uint8_t af, uint8_t proto, lvs_addr caddr,
                          uint16_t cport, lvs_addr vaddr, uint16_t vport);
lvs_conn *lvs_conn_out_get(lvs_engine *e, uint8_t af, uint8_t proto, lvs_addr daddr,
                           uint16_t dport, lvs_addr caddr, uint16_t cport);
lvs_conn *lvs_tmpl_get(lvs_engine *e, uint8_t af, uint8_t proto, lvs_addr snet, lvs_addr vaddr,
                       uint16_t vport);
/* The three addresses and ports of a new entry (host order). */
typedef struct lvs_conn_key {
    uint8_t af, proto;
    lvs_addr caddr, vaddr, daddr;
    uint16_t cport, vport, dport;
} lvs_conn_key;
/* Allocate, bind to dest (counters, thresholds) and hash; NULL when the table is full. */
lvs_conn *lvs_conn_new(lvs_engine *e, const lvs_conn_key *k, uint16_t flags, lvs_dest *dest,
                       double now);
void lvs_conn_unhash_template(lvs_engine *e, lvs_conn *c);
/* Re-arm to now + c->timeout (lazy: the wheel slot moves only when the deadline
 * shrinks into an earlier tick). */
void lvs_conn_arm(lvs_engine *e, lvs_conn *c, double now);
/* lvs_conn_arm for the shared fast path: when the new deadline stays in the entry's wheel
 * slot (the common case: lazy re-arming), store it atomically and return 1; otherwise change
 * nothing and return 0 (the wheel must move: exclusive work). */
int lvs_conn_rearm_in_place(const lvs_engine *e, lvs_conn *c, double now);
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
/* The embryonic FIFO: a TCP conn made by a SYN joins at the tail; it leaves when it first
 * becomes ESTABLISHED (lvs_conn_assure) or is freed.  O(1) each. */
void lvs_embryo_push(lvs_engine *e, lvs_conn *c);
lvs_conn *lvs_embryo_oldest(lvs_engine *e);
/* A conn proved real (TCP ESTABLISHED, or a UDP reply): it leaves the embryonic FIFO and
 * its template becomes ASSURED. */
void lvs_conn_assure(lvs_engine *e, lvs_conn *c);

/* ---- defense.c ---- */
void lvs_defense_init(lvs_engine *e);
/* The once-a-second defence work (defense_work_handler), run from the expiry sweep. */
void lvs_defense_tick(lvs_engine *e, double now);
/* Before a new entry: 1 when the table has a free slot (after evicting the oldest embryonic
 * entry if it was full and eviction is on), 0 when it is full. */
int lvs_defense_make_room(lvs_engine *e, double now);
/* A new embryonic entry: syncookies in automatic mode engages at once when the embryonic
 * entries reach its threshold (not at the next tick: a flood fills it in a fraction of one). */
void lvs_defense_embryo_added(lvs_engine *e);
/* 1 while an ACK to a service without synproxy may carry one of our cookies: syncookies is
 * engaged, or disengaged less than a cookie's lifetime ago (no handshake in flight is lost). */
static inline int lvs_defense_cookie_window(const lvs_engine *e, double now)
{
    return e->def.cookies_on || now < e->def.cookies_until;
}
/* ip_vs_todrop: drop_packet's verdict for one new-connection packet. */
static inline int lvs_defense_todrop(lvs_engine *e)
{
    lvs_defense *d = &e->def;
    if (!d->drop_rate)
        return 0;
    if (d->drop_counter > 1) {
        d->drop_counter--;
        return 0;
    }
    d->drop_counter = d->drop_rate;
    return 1;
}

/* ---- dest.c ---- */
/* A dest left its service: clear AVAILABLE and OVERLOAD, keep it in the trash while it is
 * referenced, free it at once otherwise. */
void lvs_dest_trash(lvs_engine *e, lvs_dest *d);
/* Take a trashed dest of this virtual service back out (revival), or NULL. */
lvs_dest *lvs_dest_trash_take(lvs_engine *e, uint8_t af, uint8_t vproto, lvs_addr vaddr,
                              uint16_t vport, lvs_addr addr, uint16_t port);
/* Drop one reference; the last one to a removed dest frees it. */
void lvs_dest_put(lvs_engine *e, lvs_dest *d);
/* Free the trashed dests nobody references (all of them when `all`, at teardown). */
void lvs_dest_trash_sweep(lvs_engine *e, int all);

/* ---- seqadj.c (conn side records; the rest is in seqadj.h) ---- */
/* Release the conn's side record, if any (conn.c calls it when the conn is freed). */
void lvs_ext_detach(lvs_engine *e, lvs_conn *c);
void lvs_ext_free_all(lvs_engine *e);

/* ---- ctl.c ---- */
int lvs_ctl_init(lvs_engine *e);
/* Remove every service (their dests go to the trash) and free the service containers. */
void lvs_ctl_free(lvs_engine *e);
lvs_service *lvs_svc_lookup(lvs_engine *e, uint8_t af, uint8_t proto, lvs_addr addr,
                            uint16_t port);
/* A service's dest by address (the list walk of ip_vs_lookup_dest), or NULL. */
lvs_dest *lvs_dest_lookup(lvs_service *svc, lvs_addr addr, uint16_t port);
int lvs_is_vip(const lvs_engine *e, uint32_t addr);
int lvs_is_vip6(const lvs_engine *e, lvs_addr addr);
/* A port-0 service takes `port`: always, unless it has a port list that lacks it. */
int lvs_svc_takes_port(const lvs_service *svc, uint16_t port);

/* The client's data connection found its expectation: the entry takes the client's port
 * (ip_vs_conn_fill_cport) and is rehashed under it. */
void lvs_conn_fill_cport(lvs_engine *e, lvs_conn *c, uint16_t cport);

/* ---- proto_tcp.c ---- */
extern const uint32_t lvs_tcp_default_timeouts[LVS_TCP_S_LAST];

/* ---- est.c ---- */
/* Counters since the last zero and the rounded estimator rates of one stats object. */
void lvs_stats_info_fill(lvs_stats_info *o, const lvs_stats *cur, const lvs_stats *zero,
                         const lvs_est *est);

/* ---- sync.c ---- */
/* ip_vs_sync_conn_needed: the conn's pkts-th incoming packet makes a record (reads only). */
int lvs_sync_needed(const lvs_engine *e, const lvs_conn *c, uint32_t pkts);
/* A conn got an incoming packet (pkts = its count): queue the records the master sends. */
void lvs_sync_conn(lvs_engine *e, lvs_conn *c, uint32_t pkts);
/* Queue a record for the conn now (sync master only): its sequence delta just changed (the
 * FTP helper), which a backup must have before the next packet-count threshold. */
void lvs_sync_conn_now(lvs_engine *e, lvs_conn *c);
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

/* An IPv6 address keyed by the seed through two mixing rounds: the conn table's hash must not
 * let a client pick colliding addresses out of the 2^64 it may own (hash flooding). */
static inline uint64_t lvs_addr6_key(uint64_t seed, lvs_addr a)
{
    uint64_t h = lvs_hash_mix(((uint64_t)a.ip6[0] << 32 | a.ip6[1]) ^ seed);
    return lvs_hash_mix(h ^ ((uint64_t)a.ip6[2] << 32 | a.ip6[3]));
}

/* Bucket of the in-hash (client side + VIP) and of the out-hash (server side + client).  The
 * IPv4 hash is the one the IPv4-only core had; IPv6 folds each address to a keyed 64-bit value
 * first. */

static inline uint32_t lvs_in_hash(const lvs_engine *e, uint8_t af, uint8_t proto,
                                   lvs_addr caddr, uint16_t cport, lvs_addr vaddr,
                                   uint16_t vport)
{
    uint64_t h;
    if (af == LVS_AF_INET6)
        h = lvs_addr6_key(e->seed, caddr) ^ (lvs_addr6_key(e->seed, vaddr) * 31);
    else
        h = ((uint64_t)caddr.ip << 32 | vaddr.ip) ^ e->seed;
    h = lvs_hash_mix(h ^ ((uint64_t)cport << 24 | (uint64_t)vport << 8 | proto) *
                             0x9E3779B97F4A7C15ULL);
    return (uint32_t)h & e->tab_mask;
}

static inline uint32_t lvs_out_hash(const lvs_engine *e, uint8_t af, uint8_t proto,
                                    lvs_addr daddr, uint16_t dport, lvs_addr caddr,
                                    uint16_t cport)
{
    uint64_t h;
    if (af == LVS_AF_INET6)
        h = lvs_addr6_key(e->seed * 31, daddr) ^ (lvs_addr6_key(e->seed, caddr) * 31);
    else
        h = ((uint64_t)daddr.ip << 32 | caddr.ip) ^ (e->seed * 31);
    h = lvs_hash_mix(h ^ ((uint64_t)dport << 24 | (uint64_t)cport << 8 | proto) *
                             0xC2B2AE3D27D4EB4FULL);
    return (uint32_t)h & e->tab_mask;
}

#endif /* PYLVS_ENGINE_H */
