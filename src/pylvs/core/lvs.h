/*
 * lvs.h — types shared by the core (this folder) and the schedulers (../_sched*.c): services,
 * dests, the scheduler interface and registry (include/net/ip_vs.h).
 *
 * The core is sans-IO; the dataplane pump (../dataplane/_tunio.c) lives in the same extension
 * module only so the per-packet loop never returns to Python.  Addresses are IPv4 or IPv6, held
 * as the kernel does (union nf_inet_addr) with an address family beside them in services, dests
 * and connections.  Addresses and ports inside these structs are in HOST byte order (an IPv6
 * address is four host-order 32-bit words, the most significant first); the packet code converts
 * at parse time, so schedulers can hash and compare without byte swapping.
 *
 * Ownership:
 *   lvs_engine  owns services, the connection table and the dest "trash".
 *   lvs_service owns its dest list and its scheduler's private state (sched_data).
 *   lvs_dest    is reference counted by the connections bound to it; a removed dest leaves
 *               the service list (AVAILABLE cleared) and is freed when its last conn expires,
 *               exactly like the kernel's dest trash.
 */
#ifndef PYLVS_CORE_H
#define PYLVS_CORE_H

#include <stddef.h>
#include <stdint.h>

#define LVS_PROTO_TCP 6
#define LVS_PROTO_UDP 17
/* A firewall-mark service (ipvsadm -f) is keyed (LVS_PROTO_FWM, mark, 0): the identity the
 * kernel gives its persistence templates (IPPROTO_IP, vaddr = mark), so every call that names
 * a service by (proto, addr, port) names a fwmark service too (docs/ipvs.md#fwmark). */
#define LVS_PROTO_FWM 0

/* address families (the Linux AF_* values, as the kernel's sync records and netlink use) */
#define LVS_AF_INET 2
#define LVS_AF_INET6 10

/* An IPv4 or IPv6 address (union nf_inet_addr), host-order words.  An IPv4 address is `ip`
 * with the other three words zero, so equality over all four words is exact for both families
 * (the family itself is compared separately where both can meet). */
typedef union lvs_addr {
    uint32_t ip;
    uint32_t ip6[4];
} lvs_addr;

static inline int lvs_addr_eq(lvs_addr a, lvs_addr b)
{
    return ((a.ip6[0] ^ b.ip6[0]) | (a.ip6[1] ^ b.ip6[1]) | (a.ip6[2] ^ b.ip6[2]) |
            (a.ip6[3] ^ b.ip6[3])) == 0;
}

static inline lvs_addr lvs_addr4(uint32_t ip)
{
    lvs_addr a = {.ip6 = {ip, 0, 0, 0}};
    return a;
}

/* The 32-bit key the kernel's schedulers hash (ip_vs_sh_hashkey, ip_vs_dh_hashkey,
 * ip_vs_lblc(r)_hashkey, ip_vs_mh_hashkey): the address itself for IPv4, the XOR of the four
 * words for IPv6.  XOR commutes with the byte swap, so folding host-order words gives the
 * kernel's ntohl(addr_fold). */
static inline uint32_t lvs_addr_fold(uint8_t af, lvs_addr a)
{
    return af == LVS_AF_INET6 ? a.ip6[0] ^ a.ip6[1] ^ a.ip6[2] ^ a.ip6[3] : a.ip;
}

/* dest flags (ip_vs.h IP_VS_DEST_F_*) */
#define LVS_DEST_F_AVAILABLE 0x0001u
#define LVS_DEST_F_OVERLOAD 0x0002u

/* service flags (ip_vs.h IP_VS_SVC_F_*) */
#define LVS_SVC_F_PERSISTENT 0x0001u
#define LVS_SVC_F_HASHED 0x0002u
#define LVS_SVC_F_ONEPACKET 0x0004u
/* The largest Maglev table mh builds (the kernel's 131071, a prime; pylvs.model mirrors it
 * for `pylvs check`, which runs without the C core; a unit test keeps the two equal). */
#define LVS_MH_MAX_SIZE 131071u
#define LVS_SVC_F_SCHED1 0x0008u /* sh-fallback, mh-fallback */
#define LVS_SVC_F_SCHED2 0x0010u /* sh-port, mh-port */
#define LVS_SVC_F_SCHED3 0x0020u
#define LVS_SVC_F_FTP 0x4000u /* pylvs: the FTP helper watches the control connection */
#define LVS_SVC_F_SYNPROXY 0x8000u /* answer SYNs with cookies (Alibaba LVS's value) */

typedef struct lvs_stats {
    uint64_t conns;
    uint64_t inpkts;
    uint64_t outpkts;
    uint64_t inbytes;
    uint64_t outbytes;
} lvs_stats;

/* IPVS rate estimator state (ip_vs_est.c): last raw counters and the fixed-point averages
 * (cps/pps scaled by 2^10, bytes/s by 2^5). */
typedef struct lvs_est {
    lvs_stats last;
    int64_t cps, inpps, outpps, inbps, outbps;
} lvs_est;

typedef struct lvs_dest lvs_dest;
typedef struct lvs_service lvs_service;
typedef struct lvs_engine lvs_engine;

struct lvs_dest {
    lvs_dest *next;          /* service list; the newest dest is at the head (kernel order) */
    lvs_service *svc;        /* NULL once the service itself is gone */
    lvs_addr addr;           /* host order; same family as the service */
    uint8_t af;
    uint16_t port;           /* host order */
    int32_t weight;
    int32_t last_weight;     /* most recent non-zero weight; mh builds its table from it */
    uint32_t u_threshold;    /* -x, 0 = none */
    uint32_t l_threshold;    /* -y, 0 = none */
    uint32_t flags;          /* LVS_DEST_F_* */
    uint32_t activeconns;
    uint32_t inactconns;
    uint32_t persistconns;   /* templates bound to this dest */
    uint32_t refcnt;         /* connections + templates pointing here */
    lvs_stats stats;         /* raw counters, never zeroed (-Z keeps a baseline) */
    void *sched_slot;        /* free for the scheduler's per-dest use */
    /* ---- engine-private from here on (schedulers must not touch) ---- */
    lvs_stats zero;          /* -Z baseline */
    lvs_est est;
    uint8_t vproto;          /* the owning service's key, kept for trash revival */
    uint16_t vport;
    lvs_addr vaddr;
};

/* What a scheduler may look at for a new connection. Host order. */
typedef struct lvs_sched_key {
    lvs_addr saddr;
    lvs_addr daddr;
    uint16_t sport;
    uint16_t dport;
    uint8_t proto;
    uint8_t af;              /* the service's family */
} lvs_sched_key;

/* Pluggable scheduler (ip_vs_scheduler). Every callback gets the owning service.
 * (scheduler developer) References: lblc/lblcr hold dest->refcnt for every cache entry that
 * names a dest, like the kernel's ip_vs_dest_hold, so a removed dest they cache stays in the
 * trash and is revived intact.  Their releases happen inside schedule/tick/done_service and can
 * leave a trashed dest at refcnt 0 without freeing it: the engine may free such dests in a
 * periodic sweep (until then they are only memory, reused on revival).  del_dest is called
 * before the unlink (the kernel calls it after); every scheduler here accounts for that.
 * mh's init_service returns -22 for an mh_table_size that is not a prime in 3..131071. */
typedef struct lvs_scheduler {
    const char *name;
    int (*init_service)(lvs_service *svc);       /* allocate svc->sched_data; 0 or -errno */
    void (*done_service)(lvs_service *svc);      /* free svc->sched_data */
    int (*add_dest)(lvs_service *svc, lvs_dest *dest);   /* after the dest is linked */
    int (*del_dest)(lvs_service *svc, lvs_dest *dest);   /* before the dest is unlinked */
    int (*upd_dest)(lvs_service *svc, lvs_dest *dest);   /* after weight/threshold edit */
    lvs_dest *(*schedule)(lvs_service *svc, const lvs_sched_key *key, double now);
    void (*tick)(lvs_service *svc, double now);  /* periodic work (lblc/lblcr GC); may be NULL */
} lvs_scheduler;

/* Scheduler parameters a service can carry (beyond the flags). */
typedef struct lvs_sched_params {
    uint32_t mh_table_size;       /* prime; 0 = kernel default 4093 */
    double lblc_expiration;       /* seconds; 0 = kernel default 86400 */
} lvs_sched_params;

struct lvs_service {
    lvs_service *hnext;      /* engine's service hash chain */
    uint8_t af;              /* LVS_AF_INET or LVS_AF_INET6; every dest has the same */
    uint8_t proto;
    lvs_addr addr;           /* VIP, host order */
    uint16_t port;           /* host order */
    uint32_t flags;          /* LVS_SVC_F_* */
    uint32_t timeout;        /* persistence, seconds */
    uint32_t netmask;        /* persistence: IPv4 netmask (host order); IPv6 prefix length */
    const lvs_scheduler *sched;
    void *sched_data;
    lvs_sched_params sched_params;
    lvs_dest *destinations;  /* newest first */
    uint32_t num_dests;
    lvs_stats stats;
    uint64_t rng_state;      /* for randomised schedulers (twos); seeded by the engine */
    /* ---- engine-private from here on (schedulers must not touch) ---- */
    lvs_stats zero;          /* -Z baseline */
    lvs_est est;
    uint32_t index;          /* position in the engine's service vector */
    /* a port-0 service restricted to these ports (pylvs's `ports`, no IPVS counterpart):
     * nranges pairs [lo, hi], host order; 0 = every port */
    uint16_t (*ranges)[2];
    uint32_t nranges;
};

/* ---- scheduler registry (../_sched.c) ---- */
const lvs_scheduler *lvs_sched_find(const char *name);
/* NULL-terminated list of every registered scheduler name, in a stable order. */
const char *const *lvs_sched_names(void);
/* 1 when n is a prime: the rule for mh_table_size (../_sched_hash.c, which enforces it). */
int lvs_is_prime(uint32_t n);

/* Overhead used by lc/wlc and friends (ip_vs_dest_conn_overhead). */
static inline uint32_t lvs_dest_overhead(const lvs_dest *d)
{
    return (d->activeconns << 8) + d->inactconns;
}

#endif /* PYLVS_CORE_H */
