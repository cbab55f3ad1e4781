/*
 * tc_fastpath.bpf.c — the established-flow fast path (flow offload): a TC ingress program on
 * the director's public and private interfaces that rewrites and forwards the data segments of
 * connections the engine admitted, without the TUN (docs/performance.md, "The fast path").
 *
 * The TUN path copies every packet out of the kernel and back, gives it a second skb and a
 * second route-and-forward pass; for bulk traffic each 64 KB super-packet crosses twice.  This
 * program does what the engine's NAT would do to such a segment (core/xmit.c) where the packet
 * arrives: the engine stays the authority.  It sees every SYN, FIN and RST (they always pass
 * here) and every connection's first packets; once a connection is ESTABLISHED it offers it
 * (core/offload.c) and the dataplane (dataplane/_fastpath.c) adds two entries to `flows`:
 *   in:  client:cport -> VIP:vport       rewritten to  client:cport -> RS:rport
 *   out: RS:rport -> client:cport        rewritten to  VIP:vport -> client:cport
 * Each entry counts its packets and bytes and the time of its latest packet
 * (bpf_ktime_get_ns: CLOCK_MONOTONIC, the workers' clock); the dataplane folds them into the
 * engine's stats and timers (offload.h).
 *
 * Everything else returns TC_ACT_OK and takes the TUN path as before: not Ethernet IPv4/IPv6,
 * IPv4 with options or fragments, IPv6 with an extension header, not TCP, a segment with SYN,
 * FIN or RST, no entry, a TTL/hop limit the TUN path would answer with time exceeded, and a
 * route lookup that does not give a plain forward (no route, an MTU the packet exceeds -- the
 * kernel then sends "fragmentation needed" for it on the TUN path --, forwarding off).
 *
 * The rewrite: bpf_skb_store_bytes for the address and port, bpf_l3_csum_replace and
 * bpf_l4_csum_replace (BPF_F_PSEUDO_HDR for the address) for the checksums, which keeps a
 * CHECKSUM_PARTIAL or GSO super-packet right (only its pseudo-header sum changes).  The TTL
 * (hop limit) drops by what the TUN path takes from it, the entry's `ttl_dec`, so a packet
 * leaves the director the same either way.  Then bpf_fib_lookup in the main table
 * (BPF_FIB_LOOKUP_DIRECT: the director's policy rules send VIP traffic to the TUN, which is
 * what this avoids) and bpf_redirect to the egress interface with the looked-up MACs, or
 * bpf_redirect_neigh when the neighbour is not resolved yet.
 *
 * Built with `clang -O2 -g -target bpf` by pylvs/_build.py; no libbpf headers needed.
 */
#include <linux/pkt_cls.h>

#include "pylvs_bpf.h"

static long (*bpf_skb_load_bytes)(const void *skb, __u32 off, void *to, __u32 len) =
    (void *)BPF_FUNC_skb_load_bytes;
static long (*bpf_skb_store_bytes)(void *skb, __u32 off, const void *from, __u32 len,
                                   __u64 flags) = (void *)BPF_FUNC_skb_store_bytes;
static long (*bpf_l3_csum_replace)(void *skb, __u32 off, __u64 from, __u64 to, __u64 size) =
    (void *)BPF_FUNC_l3_csum_replace;
static long (*bpf_l4_csum_replace)(void *skb, __u32 off, __u64 from, __u64 to, __u64 flags) =
    (void *)BPF_FUNC_l4_csum_replace;
static long (*bpf_fib_lookup)(void *ctx, struct bpf_fib_lookup *params, int plen, __u32 flags) =
    (void *)BPF_FUNC_fib_lookup;
static long (*bpf_redirect)(__u32 ifindex, __u64 flags) = (void *)BPF_FUNC_redirect;
static long (*bpf_redirect_neigh)(__u32 ifindex, struct bpf_redir_neigh *params, int plen,
                                  __u64 flags) = (void *)BPF_FUNC_redirect_neigh;
static __s64 (*bpf_csum_diff)(__be32 *from, __u32 from_size, __be32 *to, __u32 to_size,
                              __wsum seed) = (void *)BPF_FUNC_csum_diff;

#define ETH_HLEN_ 14
#define TH_FIN 0x01
#define TH_SYN 0x02
#define TH_RST 0x04
#define AF_INET_ 2
#define AF_INET6_ 10

/* One direction of an offloaded connection, as its packets arrive: addresses and ports as on
 * the wire (an IPv4 address in saddr[0], the rest 0).  Must match _fastpath.c's fp_key. */
struct fp_key {
    __u32 saddr[4];
    __u32 daddr[4];
    __u16 sport, dport;
    __u8 family;             /* 4 or 6 */
    __u8 proto;
    __u16 pad;
};

/* The rewrite and the counters (_fastpath.c's fp_val).  dir 0: the destination becomes
 * addr:port (client -> real server); dir 1: the source does (real server's reply -> VIP). */
struct fp_val {
    __u32 addr[4];
    __u16 port;
    __u8 dir;
    __u8 ttl_dec;            /* what the TUN path takes from the TTL in this direction */
    __u32 slot;              /* the engine's conn slot (the dataplane's fold bookkeeping) */
    __u64 pkts, bytes, last_ns;
};

enum { CNT_FWD, CNT_NEIGH, CNT_NO_FIB, CNT_TTL, CNT_MAX };

struct {
    __uint(type, BPF_MAP_TYPE_HASH);
    __uint(max_entries, 65536);   /* the loader sets 2 x max_connections */
    __uint(map_flags, BPF_F_NO_PREALLOC);
    __type(key, struct fp_key);
    __type(value, struct fp_val);
} flows SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
    __uint(max_entries, CNT_MAX);
    __type(key, __u32);
    __type(value, __u64);
} counters SEC(".maps");

INLINE void count(__u32 which)
{
    __u64 *c = bpf_map_lookup_elem(&counters, &which);
    if (c)
        *c += 1;
}

INLINE __u32 ip_off(int v6, int dir)
{
    /* the address the rewrite changes: the destination for dir 0, the source for dir 1 */
    return ETH_HLEN_ + (v6 ? (dir ? 8 : 24) : (dir ? 12 : 16));
}

/* Route the rewritten packet and send it on; TC_ACT_OK (untouched) when it cannot. */
INLINE int route(struct __sk_buff *skb, struct bpf_fib_lookup *fib)
{
    long rc = bpf_fib_lookup(skb, fib, sizeof(*fib), BPF_FIB_LOOKUP_DIRECT);
    if (rc == BPF_FIB_LKUP_RET_SUCCESS)
        return 1;
    if (rc == BPF_FIB_LKUP_RET_NO_NEIGH)
        return 2;
    return 0;
}

SEC("tc")
int pylvs_fastpath(struct __sk_buff *skb)
{
    void *data = (void *)(long)skb->data;
    void *end = (void *)(long)skb->data_end;
    struct ethhdr *eth = data;
    if ((void *)(eth + 1) > end)
        return TC_ACT_OK;
    struct fp_key key = {};
    struct bpf_fib_lookup fib = {};
    __u32 l4, ttl_off;
    __u8 ttl;
    int v6;
    if (eth->h_proto == bswap16(ETH_P_IP)) {
        __u8 *ip = (void *)(eth + 1);
        if ((void *)(ip + 20) > end)
            return TC_ACT_OK;
        /* IHL 5 (no options), TCP, no fragment (MF clear, offset 0) */
        if (ip[0] != 0x45 || ip[9] != IPPROTO_TCP || (ip[6] & 0x3f) || ip[7])
            return TC_ACT_OK;
        v6 = 0;
        key.family = 4;
        key.saddr[0] = *(__u32 *)(ip + 12);
        key.daddr[0] = *(__u32 *)(ip + 16);
        ttl = ip[8];
        ttl_off = ETH_HLEN_ + 8;
        l4 = ETH_HLEN_ + 20;
        fib.family = AF_INET_;
        fib.tos = ip[1];
        fib.tot_len = 0;   /* 0: the kernel checks the skb itself against the MTU (GSO-aware) */
    } else if (eth->h_proto == bswap16(ETH_P_IPV6)) {
        __u8 *ip = (void *)(eth + 1);
        if ((void *)(ip + 40) > end)
            return TC_ACT_OK;
        if ((ip[0] >> 4) != 6 || ip[6] != IPPROTO_TCP)
            return TC_ACT_OK;
        v6 = 1;
        key.family = 6;
        __builtin_memcpy(key.saddr, ip + 8, 16);
        __builtin_memcpy(key.daddr, ip + 24, 16);
        ttl = ip[7];
        ttl_off = ETH_HLEN_ + 7;
        l4 = ETH_HLEN_ + 40;
        fib.family = AF_INET6_;
        fib.flowinfo = *(__u32 *)ip & bswap32(0x0fffffff);
    } else {
        return TC_ACT_OK;
    }
    __u8 th[14];
    if (bpf_skb_load_bytes(skb, l4, th, sizeof(th)) < 0)
        return TC_ACT_OK;
    if (th[13] & (TH_SYN | TH_FIN | TH_RST))
        return TC_ACT_OK;   /* every state change goes through the engine */
    key.proto = IPPROTO_TCP;
    key.sport = *(__u16 *)th;
    key.dport = *(__u16 *)(th + 2);
    struct fp_val *v = bpf_map_lookup_elem(&flows, &key);
    if (!v)
        return TC_ACT_OK;
    int dir = v->dir;
    __u8 dec = v->ttl_dec;
    if (ttl <= dec) {
        count(CNT_TTL);   /* the TUN path answers with time exceeded */
        return TC_ACT_OK;
    }
    /* the packet as it will leave, for the route lookup (nothing is changed before it) */
    fib.l4_protocol = IPPROTO_TCP;
    fib.ifindex = skb->ingress_ifindex;
    fib.sport = dir ? v->port : key.sport;
    fib.dport = dir ? key.dport : v->port;
    if (v6) {
        __builtin_memcpy(fib.ipv6_src, dir ? v->addr : key.saddr, 16);
        __builtin_memcpy(fib.ipv6_dst, dir ? key.daddr : v->addr, 16);
    } else {
        fib.ipv4_src = dir ? v->addr[0] : key.saddr[0];
        fib.ipv4_dst = dir ? key.daddr[0] : v->addr[0];
    }
    int how = route(skb, &fib);
    if (!how) {
        count(CNT_NO_FIB);
        return TC_ACT_OK;
    }
    /* the rewrite (core/xmit.c nat_rewrite) */
    __u32 aoff = ip_off(v6, dir);
    __u32 poff = l4 + (dir ? 0 : 2);
    __u32 csum_off = l4 + 16;
    __u16 oport = dir ? key.sport : key.dport;
    if (v6) {
        __u32 *old = dir ? key.saddr : key.daddr;
        __s64 diff = bpf_csum_diff(old, 16, v->addr, 16, 0);
        if (diff < 0)
            return TC_ACT_OK;
        bpf_l4_csum_replace(skb, csum_off, 0, (__u64)diff, BPF_F_PSEUDO_HDR);
        bpf_skb_store_bytes(skb, aoff, v->addr, 16, 0);
    } else {
        __u32 old = dir ? key.saddr[0] : key.daddr[0];
        bpf_l4_csum_replace(skb, csum_off, old, v->addr[0], BPF_F_PSEUDO_HDR | 4);
        bpf_l3_csum_replace(skb, ETH_HLEN_ + 10, old, v->addr[0], 4);
        bpf_skb_store_bytes(skb, aoff, v->addr, 4, 0);
    }
    bpf_l4_csum_replace(skb, csum_off, oport, v->port, 2);
    bpf_skb_store_bytes(skb, poff, &v->port, 2, 0);
    __u8 nttl = ttl - dec;
    if (!v6) {
        /* the TTL shares a 16-bit checksum word with the protocol */
        __u16 ow = bswap16((__u16)(ttl << 8 | IPPROTO_TCP));
        __u16 nw = bswap16((__u16)(nttl << 8 | IPPROTO_TCP));
        bpf_l3_csum_replace(skb, ETH_HLEN_ + 10, ow, nw, 2);
    }
    bpf_skb_store_bytes(skb, ttl_off, &nttl, 1, 0);
    __sync_fetch_and_add(&v->pkts, 1);
    __sync_fetch_and_add(&v->bytes, skb->len - ETH_HLEN_);
    v->last_ns = bpf_ktime_get_ns();
    if (how == 2) {
        struct bpf_redir_neigh nh = {};
        if (v6) {
            nh.nh_family = AF_INET6_;
            __builtin_memcpy(nh.ipv6_nh, fib.ipv6_dst, 16);
        } else {
            nh.nh_family = AF_INET_;
            nh.ipv4_nh = fib.ipv4_dst;
        }
        count(CNT_NEIGH);
        return bpf_redirect_neigh(fib.ifindex, &nh, sizeof(nh), 0);
    }
    __u8 macs[12];
    __builtin_memcpy(macs, fib.dmac, 6);
    __builtin_memcpy(macs + 6, fib.smac, 6);
    bpf_skb_store_bytes(skb, 0, macs, 12, 0);
    count(CNT_FWD);
    return bpf_redirect(fib.ifindex, 0);
}

/* GPL: bpf_fib_lookup and the redirect helpers are GPL-only, as for xdp_synproxy.bpf.c */
char _license[] SEC("license") = "GPL";
