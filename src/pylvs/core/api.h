/*
 * api.h — the engine functions callable from C (the dataplane) and, mirrored in _core.cdef,
 * from Python (engine.py only).  Addresses and ports in every struct here are HOST order.
 * The core includes no dataplane header: a backend includes this one.
 *
 * Return codes of the control functions: 0 or a negative errno (LVS_E* below).
 */
#ifndef PYLVS_API_H
#define PYLVS_API_H
#include "lvs.h"

#define LVS_E_NOENT 2    /* no such dest */
#define LVS_E_SRCH 3     /* no such service */
#define LVS_E_NOMEM 12
#define LVS_E_EXIST 17   /* duplicate service / dest */
#define LVS_E_INVAL 22   /* bad argument (unknown scheduler, bad flags, ...) */
#define LVS_E_RANGE 34   /* weight < 0, l_threshold > u_threshold, ... */
#define LVS_E_AFNOSUPPORT 97 /* a real server of the other address family than its service */

/* The text for an LVS_E* value (positive), NULL for any other. */
const char *lvs_strerror(int err);

/* ---- the dataplane contract ----------------------------------------------------------------
 *
 * Packet i of a batch is the IPv4 or IPv6 packet (by its version nibble) at data + i*stride,
 * len[i] bytes long.  Rewriting is
 * done in place.  meta[i] bits (input):
 *   LVS_META_CSUM_PARTIAL  the L4 checksum field holds only the non-inverted pseudo-header sum
 *                          (virtio NEEDS_CSUM).  An address change updates it with no outer
 *                          complement; a port change leaves it alone (the device sums the L4
 *                          header later).
 *   LVS_META_GSO           a TCP super-packet (TSO4 or TSO6): headers are rewritten once,
 *                          lengths unchanged.
 * verdict[i] (output):
 *   LVS_VERDICT_FORWARD    rewritten; send it on
 *   LVS_VERDICT_PASS       unchanged, not ours (no VIP, no connection)
 *   LVS_VERDICT_DROP       drop it (the reason is counted, see lvs_counter_names)
 *   LVS_VERDICT_REPLY      the slot now holds a generated packet (ICMP/ICMPv6 error) to be
 *                          written back towards the sender; len[i] is updated.
 * mark: packets carrying a firewall mark with a fwmark service are that service's (looked up
 * before the address/port services, as ip_vs_service_find does), whatever their address.
 * stride must be >= LVS_MIN_STRIDE (a reply is built in place).  Returns the number of
 * FORWARD + REPLY verdicts.
 */
#define LVS_META_CSUM_PARTIAL 0x01
#define LVS_META_GSO 0x02

#define LVS_VERDICT_FORWARD 0
#define LVS_VERDICT_PASS 1
#define LVS_VERDICT_DROP 2
#define LVS_VERDICT_REPLY 3

#define LVS_MIN_STRIDE 256

typedef struct lvs_batch {
    uint32_t count;
    uint32_t stride;
    uint8_t *data;
    uint32_t *len;
    uint8_t *meta;
    uint8_t *verdict;
    uint32_t mark;           /* the firewall mark every packet of this batch carries (the
                              * dataplane reads a mark's own device), 0 = none */
} lvs_batch;

int lvs_engine_process_batch(lvs_engine *e, lvs_batch *b, double now);

/* ---- engine lifetime and options ---- */

/* max_conns bounds connections + templates; seed keys the connection hash. NULL on ENOMEM. */
lvs_engine *lvs_engine_new(uint32_t max_conns, uint64_t seed);
void lvs_engine_free(lvs_engine *e);

/* Options (sysctl-like).  Values are 0/1 except conn_reuse_mode (0..3). */
#define LVS_OPT_EXPIRE_NODEST_CONN 1
#define LVS_OPT_EXPIRE_QUIESCENT_TEMPLATE 2
#define LVS_OPT_CONN_REUSE_MODE 3
#define LVS_OPT_SYNC_MASTER 4    /* collect sync records on the packet path */
#define LVS_OPT_SYNC_THRESHOLD 5
#define LVS_OPT_SYNC_PERIOD 6
/* sloppy_tcp / sloppy_udp: a packet of a flow with no entry (one another director scheduled)
 * creates the entry: a TCP non-SYN to a service (as IPVS's sloppy_tcp), and a reply from a
 * real server of a service, which IPVS never sees on another box (docs/ipvs.md#sloppy-pickup). */
#define LVS_OPT_SLOPPY_TCP 7
#define LVS_OPT_SLOPPY_UDP 8
int lvs_engine_set_option(lvs_engine *e, int opt, int64_t value);
int64_t lvs_engine_get_option(lvs_engine *e, int opt);

/* Run due timers; returns the number of entries removed (conns and templates). */
uint32_t lvs_engine_expire(lvs_engine *e, double now);

/* ---- flood defence (docs/ipvs.md#flood-defence) ----
 * drop_entry, drop_packet, secure_tcp: 0 off, 1 automatic (idle), 2 automatic (engaged), 3 always
 * on, as the kernel sysctls; the automatic modes move between 1 and 2 by themselves, once a
 * second (from lvs_engine_expire) and at once on a set.  They engage when fewer than amemthresh
 * entries are available to new connections (free slots, plus embryonic entries while eviction
 * is on).  evict_embryonic: a full table gives the oldest embryonic entry's slot
 * to a new connection (beyond the kernel).  syncookies: 0 never, 1 automatic, 2 always: while
 * engaged a bare SYN to any TCP service is answered with a cookie (defense.c says when it
 * engages and disengages). */
typedef struct lvs_defense_conf {
    int32_t drop_entry;
    int32_t drop_packet;
    int32_t secure_tcp;
    uint32_t amemthresh;     /* free table slots */
    uint32_t am_droprate;    /* drop_packet mode 3: one in am_droprate new conns */
    int32_t evict_embryonic;
    int32_t syncookies;      /* 0 never, 1 automatic, 2 always */
} lvs_defense_conf;

typedef struct lvs_defense_info {
    lvs_defense_conf conf;   /* the modes as they are now */
    int32_t drop_entry_active;
    int32_t secure_tcp_active;
    uint32_t drop_rate;      /* 0: drop_packet idle */
    uint32_t free_slots;
    uint32_t available;      /* what the levels compare with amemthresh: free slots, plus the
                              * embryonic entries while eviction is on */
    uint32_t embryonic;      /* entries that could be evicted */
    uint64_t drop_entry_conns, drop_entry_templates;
    uint64_t evicted_embryonic, evicted_templates;
    int32_t syncookies_engaged;
    uint32_t syncookies_threshold;   /* embryonic entries that engage it: min(amemthresh, 4096) */
    uint32_t syncookies_unanswered;  /* cookie SYNs without an ACK in the last second */
    uint32_t syncookies_quiet;       /* seconds under the disengage mark so far */
    uint64_t syncookies_engaged_count;
    uint64_t syncookies_xdp_syns;    /* cookie SYNs the director reported from XDP */
    double syncookies_window_until;  /* cookie ACKs accepted until then after disengaging */
} lvs_defense_info;

/* -LVS_E_RANGE for a mode outside 0..3. */
int lvs_defense_set(lvs_engine *e, const lvs_defense_conf *c);
void lvs_defense_get(lvs_engine *e, lvs_defense_info *out);
/* n more SYNs to services without synproxy were answered with cookies outside the engine (the
 * XDP responder): syncookies counts them as unanswered until their ACKs come, so it stays
 * engaged while XDP takes the flood. */
void lvs_defense_cookie_syns(lvs_engine *e, uint64_t n);

/* ipvsadm --set: 0 keeps the current value. */
void lvs_engine_set_timeouts(lvs_engine *e, uint32_t tcp, uint32_t tcpfin, uint32_t udp);
void lvs_engine_get_timeouts(lvs_engine *e, uint32_t *tcp, uint32_t *tcpfin, uint32_t *udp);

/* ---- services and dests ---- */

/* A fwmark service: proto LVS_PROTO_FWM, addr = the mark, port 0 (and so in every struct
 * below that names a service). */
typedef struct lvs_svc_conf {
    uint8_t af;              /* LVS_AF_INET or LVS_AF_INET6 */
    uint8_t proto;
    lvs_addr addr;
    uint16_t port;
    const char *sched;       /* registry name */
    uint32_t flags;          /* LVS_SVC_F_SCHED1/2/3 (PERSISTENT is derived from timeout) */
    uint32_t timeout;        /* persistence seconds, 0 = not persistent */
    uint32_t netmask;        /* persistence: IPv4 netmask (host order); IPv6 prefix 1..128 */
    uint32_t mh_table_size;  /* 0 = default */
    /* port 0 only: the ports the service takes, nranges [lo, hi] pairs (NULL/0 = all ports,
     * which needs persistence); one scheduler and one persistence template across them */
    const uint16_t *port_ranges;
    uint32_t nranges;
} lvs_svc_conf;

typedef struct lvs_dest_conf {
    uint8_t af;              /* the service's family */
    uint8_t proto;
    lvs_addr vaddr;
    uint16_t vport;
    uint8_t dest_af;         /* the server's family: must equal af (-LVS_E_AFNOSUPPORT) */
    lvs_addr addr;
    uint16_t port;
    int32_t weight;
    uint32_t u_threshold;
    uint32_t l_threshold;
} lvs_dest_conf;

int lvs_svc_add(lvs_engine *e, const lvs_svc_conf *c);
int lvs_svc_edit(lvs_engine *e, const lvs_svc_conf *c);
int lvs_svc_del(lvs_engine *e, uint8_t af, uint8_t proto, const lvs_addr *addr, uint16_t port);
int lvs_dest_add(lvs_engine *e, const lvs_dest_conf *c);
int lvs_dest_edit(lvs_engine *e, const lvs_dest_conf *c);
/* expire_conns: also expire every connection bound to the dest now (expire_nodest_conn). */
int lvs_dest_del(lvs_engine *e, const lvs_dest_conf *c, int expire_conns);
/* Expire every conn and template bound to the dest now; returns how many (or -errno). */
int lvs_dest_expire_conns(lvs_engine *e, const lvs_dest_conf *c);

/* Addresses the operator's nftables rules mark for fwmark services (their VIPs): unmarked
 * packets to them are dropped (no_service) instead of passed back to the kernel, which would
 * route them straight into the TUN again.  IPv4 ones in addrs, IPv6 ones in addrs6.  Replaces
 * the previous lists. */
int lvs_engine_set_fwm_vips(lvs_engine *e, const uint32_t *addrs, uint32_t n,
                            const lvs_addr *addrs6, uint32_t n6);

/* ---- inspection ---- */

typedef struct lvs_stats_info {
    uint64_t conns, inpkts, outpkts, inbytes, outbytes;  /* since the last zero */
    uint64_t cps, inpps, outpps, inbps, outbps;          /* rounded estimator values */
} lvs_stats_info;

typedef struct lvs_svc_info {
    uint8_t af;
    uint8_t proto;
    lvs_addr addr;
    uint16_t port;
    char sched[16];
    uint32_t flags;
    uint32_t timeout;
    uint32_t netmask;
    uint32_t mh_table_size;
    uint32_t num_dests;
    lvs_stats_info stats;
} lvs_svc_info;

typedef struct lvs_dest_info {
    lvs_addr addr;
    uint16_t port;
    int32_t weight;
    int32_t last_weight;
    uint32_t u_threshold, l_threshold;
    uint32_t flags;
    uint32_t activeconns, inactconns, persistconns, refcnt;
    lvs_stats_info stats;
} lvs_dest_info;

typedef struct lvs_conn_info {
    uint8_t af;
    uint8_t proto;
    uint8_t state;
    uint16_t flags;
    lvs_addr caddr, vaddr, daddr;
    uint16_t cport, vport, dport;
    double expires;          /* absolute time */
    uint32_t in_pkts;
    uint32_t n_control;
    int32_t index;           /* this entry's table slot */
    int32_t control_index;   /* the controlling template's slot, -1 = none */
} lvs_conn_info;

#define LVS_TCP_S_NONE 0
#define LVS_TCP_S_ESTABLISHED 1
#define LVS_TCP_S_SYN_SENT 2
#define LVS_TCP_S_SYN_RECV 3
#define LVS_TCP_S_FIN_WAIT 4
#define LVS_TCP_S_TIME_WAIT 5
#define LVS_TCP_S_CLOSE 6
#define LVS_TCP_S_CLOSE_WAIT 7
#define LVS_TCP_S_LAST_ACK 8
#define LVS_TCP_S_LISTEN 9
#define LVS_TCP_S_SYNACK 10
#define LVS_TCP_S_LAST 11
#define LVS_UDP_S_NORMAL 0

/* NULL-terminated names of the TCP states, indexed by LVS_TCP_S_*. */
const char *const *lvs_tcp_state_names(void);

/* conn flags (kernel IP_VS_CONN_F_* values) */
#define LVS_CONN_F_SYNC 0x0020
#define LVS_CONN_F_HASHED 0x0040
#define LVS_CONN_F_NOOUTPUT 0x0080
#define LVS_CONN_F_INACTIVE 0x0100
#define LVS_CONN_F_TEMPLATE 0x1000
#define LVS_CONN_F_OUT_SEQ 0x0200   /* has a server->client sequence delta (kernel value) */
#define LVS_CONN_F_IN_SEQ 0x0400    /* has a client->server sequence delta (kernel value) */
#define LVS_CONN_F_SEQ_MASK 0x0600
#define LVS_CONN_F_NO_CPORT 0x0800  /* an FTP expectation: any client port (kernel value) */
#define LVS_CONN_F_SYNPROXY 0x8000  /* opened by the SYN proxy (Alibaba LVS's value) */

typedef struct lvs_engine_info {
    lvs_stats_info stats;    /* global (tot_stats) */
    uint32_t connections;    /* entries in the table, templates included */
    uint32_t templates;
    uint32_t max_connections;
    uint32_t conn_entry_size;    /* sizeof the connection entry */
    uint32_t bytes_per_conn;     /* entry + both hash buckets at a full table */
    uint32_t num_services;
    uint32_t trash_dests;
} lvs_engine_info;

uint32_t lvs_svc_count(lvs_engine *e);
/* idx in insertion order; -LVS_E_SRCH past the end. */
int lvs_svc_info_get(lvs_engine *e, uint32_t idx, lvs_svc_info *out);
/* The service's dests in kernel list order (newest first); returns the count (may exceed cap). */
int lvs_dest_info_list(lvs_engine *e, uint8_t af, uint8_t proto, const lvs_addr *addr,
                       uint16_t port, lvs_dest_info *out, uint32_t cap);
/* One service / one dest by key, without listing the rest: 0, -LVS_E_SRCH or -LVS_E_NOENT
 * (only the key fields of the dest conf are read: af, proto, vaddr, vport, addr, port). */
int lvs_svc_info_find(lvs_engine *e, uint8_t af, uint8_t proto, const lvs_addr *addr,
                      uint16_t port, lvs_svc_info *out);
int lvs_dest_info_find(lvs_engine *e, const lvs_dest_conf *c, lvs_dest_info *out);
/* The rate estimator's readout of every service and dest in one call (the status page's
 * history samples it every 2 s): per service, then per dest of it in list order, one row of
 * LVS_RATE_ROW uint64: [0] is_dest | af << 8 | proto << 16 | port << 32, [1..4] the address
 * (IPv4: [1]; an fwmark service: the mark), [5..9] cps inpps outpps inbps outbps, [10] the
 * dest's weight.  Returns the row count (may exceed cap; call again with more room). */
#define LVS_RATE_ROW 11
uint32_t lvs_rate_rows(lvs_engine *e, uint64_t *out, uint32_t cap);
/* Every conn and template; returns the count (may exceed cap; call again with more room). */
uint32_t lvs_conn_list(lvs_engine *e, lvs_conn_info *out, uint32_t cap);
void lvs_engine_info_get(lvs_engine *e, lvs_engine_info *out);

/* Drop/pass counters by reason: names index the values. */
const char *const *lvs_counter_names(void);
uint32_t lvs_counter_values(lvs_engine *e, uint64_t *out, uint32_t cap);

/* -Z: baseline every counter (all services, or one when proto != 0) and reset estimators. */
int lvs_engine_zero_stats(lvs_engine *e, uint8_t af, uint8_t proto, const lvs_addr *addr,
                          uint16_t port);
/* Run the 2 s estimator for every stats object whose period has elapsed. */
void lvs_engine_update_rates(lvs_engine *e, double now);

/* ---- SYN proxy cookies (synproxy.c; exposed for tests) ----
 * tsopts: the low 6 timestamp bits the cookie carries (window scale, 0xf = none; 0x10 SACK),
 * or 0x40 for a client without timestamps.  check returns the MSS index (0..3) or: */
#define LVS_SP_EXPIRED (-2)  /* outside the validity window */
#define LVS_SP_BAD (-3)      /* forged or damaged */
uint32_t lvs_synproxy_cookie_make(lvs_engine *e, uint32_t saddr, uint32_t daddr, uint16_t sport,
                                  uint16_t dport, uint32_t sseq, uint32_t mssind,
                                  uint32_t tsopts, double now);
int lvs_synproxy_cookie_check(lvs_engine *e, uint32_t saddr, uint32_t daddr, uint16_t sport,
                              uint16_t dport, uint32_t sseq, uint32_t cookie, uint32_t tsopts,
                              double now);
/* The secrets the XDP responder needs to build this engine's cookies (dataplane/xdp.py):
 * out = {the MAC key of `period` (2 words), the base key of H0 (2 words)}.  Pure. */
void lvs_synproxy_secrets(const lvs_engine *e, uint32_t period, uint64_t out[4]);
/* The cookie period of a CLOCK_MONOTONIC time (60-second periods). */
uint32_t lvs_synproxy_period(double now);

/* ---- connection sync (see engine.py for the record format) ---- */

#define LVS_SYNC_RECORD_SIZE 36      /* struct ip_vs_sync_v4 */
#define LVS_SYNC_RECORD_SIZE_V6 72   /* struct ip_vs_sync_v6 (type bit 0 set) */
#define LVS_SYNC_OPTS_SIZE 36        /* a conn's sequence options after the entry (sync.c) */
#define LVS_SYNC_RECORD_MAX (LVS_SYNC_RECORD_SIZE_V6 + LVS_SYNC_OPTS_SIZE)
/* Copy out and clear the pending records; returns bytes written (<= cap) . */
uint32_t lvs_sync_collect(lvs_engine *e, uint8_t *out, uint32_t cap);
uint32_t lvs_sync_pending(lvs_engine *e);
/* Every entry; returns the bytes needed (writes only when <= cap). */
uint32_t lvs_sync_full(lvs_engine *e, uint8_t *out, uint32_t cap, double now);
/* Install/refresh entries (any mix of v4 and v6 records, each sized by its ver_size); returns
 * the number applied; *skipped counts unknown svc/dest and malformed records (a record whose
 * size runs past the data ends the walk). */
int lvs_sync_apply(lvs_engine *e, const uint8_t *data, uint32_t len, double now,
                   uint32_t *skipped);


#endif /* PYLVS_API_H */
