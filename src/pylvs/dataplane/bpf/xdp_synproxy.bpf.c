/*
 * xdp_synproxy.bpf.c — the SYN proxy's first step in XDP, before the TUN and the IP stack
 * (docs/ipvs.md#syn-proxy; the kernel's tools/testing/selftests/bpf/progs/xdp_synproxy_kern.c
 * does the same for nftables' synproxy).
 *
 * Under a spoofed SYN flood each SYN to a synproxy service costs the TUN path a TUN read, a
 * worker wake-up and a TUN write whose routing runs in the worker, while the engine's own work
 * (the cookie) is a few hundred nanoseconds.  This program answers such a SYN on the public
 * interface itself: it turns the frame into the SYN-ACK core/synproxy.c would build, byte for
 * byte (same cookie, same secret and period, same MSS table, options encoded in the TSval as
 * the kernel's cookie_init_timestamp, TTL 64, IP ID 0, DF, window 65535), swaps the MACs and
 * sends it back (XDP_TX).  The client's ACK is not touched: it reaches the engine through the
 * TUN, which checks the cookie exactly as for a SYN-ACK it built itself.
 *
 * Everything else is XDP_PASS: not Ethernet IPv4/IPv6, IPv4 with options or fragments or a bad
 * header checksum (the kernel drops those), IPv6 with extension headers, a segment that is not
 * a bare SYN, a destination that is not an exact-port synproxy service in `services`, a source
 * no handshake may come from, or a period whose secret the director has not pushed yet.
 *
 * Maps the director keeps (pylvs/dataplane/xdp.py): `services` (the VIP:ports answered: value
 * SVC_SYNPROXY for a synproxy service, always; SVC_COOKIES for any other exact-port TCP
 * service, only while `syncookies` slot 0 is 1, i.e. while the engine's syncookies defence is
 * engaged: docs/ipvs.md#syn-cookies), `secrets` (slot period & 1: the period number, the
 * period's MAC key, the engine's base key) and `counters` (per CPU: SYN-ACKs sent, SYNs passed
 * for want of a current secret, and of the SYN-ACKs those sent for SVC_COOKIES services, which
 * the director reports to the engine's syncookies measure).
 *
 * The clock is CLOCK_MONOTONIC (bpf_ktime_get_ns), the clock the packet workers give the
 * engine.  Built with `clang -O2 -g -target bpf` by pylvs/_build.py; no libbpf headers needed.
 */
#include "pylvs_bpf.h"

static long (*bpf_xdp_adjust_tail)(struct xdp_md *ctx, int delta) = (void *)BPF_FUNC_xdp_adjust_tail;
static long (*bpf_loop)(__u32 nr_loops, void *callback_fn, void *callback_ctx, __u64 flags) =
    (void *)BPF_FUNC_loop;

#define SP_PERIOD_NS 60000000000ULL  /* synproxy.c SP_PERIOD */
#define SP_MSS 1460
#define SP_WSCALE 7
#define SP_WINDOW 65535
#define TS_OPT_WSCALE_MASK 0xf
#define TS_OPT_SACK 0x10
#define TS_NONE 0x40
#define TH_FIN 0x01
#define TH_SYN 0x02
#define TH_RST 0x04
#define TH_ACK 0x10
#define MAX_OPTS 40

/* A synproxy service: the VIP as it is on the wire (IPv4 in addr[0], the rest 0), the port in
 * network order, the family (4 or 6).  Must match xdp.py's _SERVICE_KEY. */
struct sp_service {
    __u32 addr[4];
    __u16 port;
    __u8 family;
    __u8 pad;
};

/* The secrets of one cookie period (xdp.py's _SECRET). */
struct sp_secret {
    __u64 period;          /* the period these keys are for; another: not pushed yet */
    __u64 mac_key[2];      /* synproxy.c period_key */
    __u64 base_key[2];     /* synproxy.c base_key (H0) */
};

enum { CNT_SYN, CNT_NO_SECRET, CNT_COOKIE_SYN, CNT_MAX };
enum { SVC_SYNPROXY = 1, SVC_COOKIES = 2 };  /* the services map's values (xdp.py) */

struct {
    __uint(type, BPF_MAP_TYPE_HASH);
    __uint(max_entries, 4096);
    __type(key, struct sp_service);
    __type(value, __u32);
} services SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __uint(max_entries, 2);
    __type(key, __u32);
    __type(value, struct sp_secret);
} secrets SEC(".maps");

/* slot 0: 1 while the engine's syncookies is engaged (SVC_COOKIES services answered) */
struct {
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __uint(max_entries, 1);
    __type(key, __u32);
    __type(value, __u32);
} syncookies SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
    __uint(max_entries, CNT_MAX);
    __type(key, __u32);
    __type(value, __u64);
} counters SEC(".maps");

/* ---- SipHash-2-4 over whole 64-bit words (core/siphash.h lvs_siphash24) ---- */

#define ROTL(x, b) (((x) << (b)) | ((x) >> (64 - (b))))
#define SIPROUND                                                                 \
    do {                                                                         \
        v0 += v1; v1 = ROTL(v1, 13); v1 ^= v0; v0 = ROTL(v0, 32);                \
        v2 += v3; v3 = ROTL(v3, 16); v3 ^= v2;                                   \
        v0 += v3; v3 = ROTL(v3, 21); v3 ^= v0;                                   \
        v2 += v1; v1 = ROTL(v1, 17); v1 ^= v2; v2 = ROTL(v2, 32);                \
    } while (0)

INLINE __u64 siphash24(__u64 k0, __u64 k1, const __u64 *m, int n)
{
    __u64 v0 = k0 ^ 0x736f6d6570736575ULL, v1 = k1 ^ 0x646f72616e646f6dULL;
    __u64 v2 = k0 ^ 0x6c7967656e657261ULL, v3 = k1 ^ 0x7465646279746573ULL;
#pragma unroll
    for (int i = 0; i < 6; i++) {
        if (i < n) {
            v3 ^= m[i];
            SIPROUND;
            SIPROUND;
            v0 ^= m[i];
        }
    }
    __u64 last = (__u64)(n * 8) << 56;
    v3 ^= last;
    SIPROUND;
    SIPROUND;
    v0 ^= last;
    v2 ^= 0xff;
    SIPROUND;
    SIPROUND;
    SIPROUND;
    SIPROUND;
    return v0 ^ v1 ^ v2 ^ v3;
}

/* ---- the SYN's options (synproxy.c parse_opts over seqadj.h lvs_tcp_opt_next) ---- */

struct sp_opts {
    __u32 mss;      /* 0 = none */
    __u32 wscale;   /* 0xf = none */
    __u32 sack;
    __u32 ts;
    __u32 tsval;
};

/* The walk's state: bpf_loop runs one step per call, so the verifier checks one step once
 * instead of every path through up to 40 options. */
struct walk {
    __u8 b[64];
    __u32 len;
    __u32 i;
    struct sp_opts o;
};

static long walk_step(__u32 idx, void *ctx)
{
    struct walk *w = ctx;
    __u32 i = w->i, len = w->len;
    if (i >= len || len > MAX_OPTS)
        return 1;
    __u8 kind = w->b[i & 63];
    if (kind == 1) { /* NOP */
        w->i = i + 1;
        return 0;
    }
    if (i + 1 >= len || kind == 0)
        return 1;
    __u32 n = w->b[(i + 1) & 63];
    if (n < 2 || i + n > len)
        return 1;
    const __u32 v = i + 2;
    if (kind == 2 && n == 4) {
        w->o.mss = (__u32)w->b[v & 63] << 8 | w->b[(v + 1) & 63];
    } else if (kind == 3 && n == 3) {
        __u32 s = w->b[v & 63];
        w->o.wscale = s > 14 ? 14 : s;
    } else if (kind == 4 && n == 2) {
        w->o.sack = 1;
    } else if (kind == 8 && n == 10) {
        w->o.ts = 1;
        w->o.tsval = (__u32)w->b[v & 63] << 24 | (__u32)w->b[(v + 1) & 63] << 16 |
                     (__u32)w->b[(v + 2) & 63] << 8 | w->b[(v + 3) & 63];
    }
    w->i = i + n;
    return 0;
}

INLINE void put32(__u8 *p, __u32 v)
{
    p[0] = (__u8)(v >> 24);
    p[1] = (__u8)(v >> 16);
    p[2] = (__u8)(v >> 8);
    p[3] = (__u8)v;
}

/* synproxy.c put_opts for the SYN-ACK (our MSS and window scale); returns the length. */
INLINE __u32 put_opts(__u8 *p, const struct sp_opts *o, __u32 tsval)
{
    __u32 n = 4;
    p[0] = 2;
    p[1] = 4;
    p[2] = SP_MSS >> 8;
    p[3] = SP_MSS & 0xff;
    if (o->ts) {
        p[4] = o->sack ? 4 : 1;
        p[5] = o->sack ? 2 : 1;
        p[6] = 8;
        p[7] = 10;
        put32(p + 8, tsval);
        put32(p + 12, o->tsval);
        n = 16;
    } else if (o->sack) {
        p[4] = 1;
        p[5] = 1;
        p[6] = 4;
        p[7] = 2;
        n = 8;
    }
    if (o->wscale != 0xf) {
        p[n & 31] = 1;
        p[(n + 1) & 31] = 3;
        p[(n + 2) & 31] = 3;
        p[(n + 3) & 31] = SP_WSCALE;
        n += 4;
    }
    return n;
}

INLINE __u32 fold(__u64 s)
{
    s = (s & 0xffffffff) + (s >> 32);
    s = (s & 0xffff) + (s >> 16);
    s = (s & 0xffff) + (s >> 16);
    return (__u32)((s & 0xffff) + (s >> 16));
}

/* The sum of n bytes (n even, <= 40) of a stack buffer as 16-bit big-endian words. */
INLINE __u64 sum16(const __u8 *p, __u32 n)
{
    __u64 s = 0;
#pragma unroll
    for (int i = 0; i < 40; i += 2) {
        if ((__u32)i < n)
            s += (__u32)p[i] << 8 | p[i + 1];
    }
    return s;
}

INLINE void count(__u32 idx)
{
    __u64 *c = bpf_map_lookup_elem(&counters, &idx);
    if (c)
        *c += 1;
}

/* A source no handshake may come from (synproxy.c bad_source); words in host order. */
INLINE int bad_source(int v6, const __u32 *a)
{
    if (v6)
        return (a[0] >> 24) == 0xff || (a[0] == 0 && a[1] == 0 && a[2] == 0 && a[3] == 0);
    return a[0] == 0 || a[0] == 0xffffffffu || (a[0] >> 28) >= 0xe;
}

SEC("xdp")
int pylvs_synproxy(struct xdp_md *ctx)
{
    void *data = (void *)(long)ctx->data;
    void *data_end = (void *)(long)ctx->data_end;
    struct ethhdr *eth = data;
    if ((void *)(eth + 1) > data_end)
        return XDP_PASS;
    if (eth->h_dest[0] & 1) /* multicast or broadcast: not a SYN meant for us */
        return XDP_PASS;
    int v6 = eth->h_proto == bswap16(ETH_P_IPV6);
    if (!v6 && eth->h_proto != bswap16(ETH_P_IP))
        return XDP_PASS;
    __u8 *ip = (__u8 *)(eth + 1);
    __u32 l3 = v6 ? 40 : 20;
    __u8 *th = ip + l3;
    if ((void *)(th + 20) > data_end)
        return XDP_PASS;
    struct sp_service key = {};
    __u32 src[4] = {}, dst[4] = {};
    __u32 l4len; /* the TCP segment's length by the IP header (bytes past it are padding) */
    if (v6) {
        /* payload length checked against the frame; only TCP right after the fixed header */
        if ((ip[0] >> 4) != 6 || ip[6] != IPPROTO_TCP)
            return XDP_PASS;
        __u32 plen = (__u32)ip[4] << 8 | ip[5];
        if (plen < 20 || (void *)(th + plen) > data_end)
            return XDP_PASS;
        l4len = plen;
#pragma unroll
        for (int w = 0; w < 4; w++) {
            key.addr[w] = *(__u32 *)(ip + 24 + 4 * w);
            src[w] = bswap32(*(__u32 *)(ip + 8 + 4 * w));
            dst[w] = bswap32(key.addr[w]);
        }
        key.family = 6;
    } else {
        if (ip[0] != 0x45 || ip[9] != IPPROTO_TCP)
            return XDP_PASS;
        /* most frames are not bare SYNs: they leave before the checksum is summed */
        if ((th[13] & (TH_SYN | TH_ACK | TH_RST | TH_FIN)) != TH_SYN)
            return XDP_PASS;
        __u32 tot = (__u32)ip[2] << 8 | ip[3];
        if (tot < 40 || (void *)(ip + tot) > data_end)
            return XDP_PASS;
        l4len = tot - 20;
        if (((__u32)ip[6] << 8 | ip[7]) & 0x3fff) /* MF or an offset: a fragment */
            return XDP_PASS;
        if (fold(sum16(ip, 20)) != 0xffff) /* the kernel drops it; so would the engine */
            return XDP_PASS;
        key.addr[0] = *(__u32 *)(ip + 16);
        src[0] = bswap32(*(__u32 *)(ip + 12));
        dst[0] = bswap32(key.addr[0]);
        key.family = 4;
    }
    if ((th[13] & (TH_SYN | TH_ACK | TH_RST | TH_FIN)) != TH_SYN)
        return XDP_PASS;
    __u32 thlen = (__u32)(th[12] >> 4) * 4;
    if (thlen < 20 || thlen > 60 || thlen > l4len || (void *)(th + thlen) > data_end)
        return XDP_PASS; /* the engine drops a header cut short (truncated) */
    key.port = *(__u16 *)(th + 2);
    __u32 *kind = bpf_map_lookup_elem(&services, &key);
    if (!kind)
        return XDP_PASS;
    __u32 svc_kind = *kind;
    if (svc_kind != SVC_SYNPROXY) {
        __u32 zero = 0;
        __u32 *on = bpf_map_lookup_elem(&syncookies, &zero);
        if (!on || !*on) /* not engaged: the SYN goes to the engine, which forwards it */
            return XDP_PASS;
    }
    if (bad_source(v6, src))
        return XDP_PASS; /* the engine counts it (tcp_no_syn) and drops it */

    __u64 now = bpf_ktime_get_ns();
    __u64 period = now / SP_PERIOD_NS;
    __u32 slot = (__u32)(period & 1);
    struct sp_secret *sec = bpf_map_lookup_elem(&secrets, &slot);
    if (!sec || sec->period != period) {
        count(CNT_NO_SECRET);
        return XDP_PASS; /* the engine answers it through the TUN */
    }

    /* the client's options, copied to the stack byte by byte (bounded for the verifier),
     * then walked as seqadj.h lvs_tcp_opt_next and synproxy.c parse_opts do */
    struct walk w = {};
    w.len = thlen - 20;
    w.o.wscale = 0xf;
    for (__u32 i = 0; i < MAX_OPTS; i++) {
        if (i >= w.len)
            break;
        __u8 *b = th + 20 + i;
        if ((void *)(b + 1) > data_end)
            return XDP_PASS;
        w.b[i & 63] = *b;
    }
    bpf_loop(MAX_OPTS, walk_step, &w, 0);
    struct sp_opts o = w.o;
    __u32 mss = o.mss ? o.mss : 536;
    __u32 mssind = mss >= 1460 ? 3 : mss >= 1440 ? 2 : mss >= 1300 ? 1 : 0;
    if (!o.ts) { /* the kernel's cookies keep window scale and SACK only in timestamps */
        o.wscale = 0xf;
        o.sack = 0;
    }
    __u32 tsopts = o.ts ? (o.wscale != 0xf ? o.wscale : TS_OPT_WSCALE_MASK) |
                              (o.sack ? TS_OPT_SACK : 0)
                        : TS_NONE;
    __u16 sport = bswap16(*(__u16 *)th), dport = bswap16(key.port);
    __u32 cseq = bswap32(*(__u32 *)(th + 4));

    /* the cookie (synproxy.c cookie_msg, cookie_h0, cookie_mac, cookie_make) */
    __u64 m[6] = {};
    int n;
    if (v6) {
        m[0] = (__u64)src[0] << 32 | src[1];
        m[1] = (__u64)src[2] << 32 | src[3];
        m[2] = (__u64)dst[0] << 32 | dst[1];
        m[3] = (__u64)dst[2] << 32 | dst[3];
        m[4] = (__u64)sport << 48 | (__u64)dport << 32 | cseq;
        n = 5;
    } else {
        m[0] = (__u64)src[0] << 32 | dst[0];
        m[1] = (__u64)sport << 48 | (__u64)dport << 32 | cseq;
        n = 2;
    }
    __u32 h0 = (__u32)siphash24(sec->base_key[0], sec->base_key[1], m, n);
    if (v6)
        m[5] = (__u64)mssind << 8 | tsopts;
    else
        m[2] = (__u64)mssind << 8 | tsopts;
    __u32 mac = (__u32)siphash24(sec->mac_key[0], sec->mac_key[1], m, n + 1) & 0x3fffff;
    __u32 cookie = h0 + ((__u32)period << 24) + (mssind << 22 | mac);

    __u32 tsval = 0;
    if (o.ts) { /* cookie_init_timestamp: a millisecond clock with the options in the low bits */
        __u32 ts_now = (__u32)(now / 1000000);
        tsval = (ts_now & ~0x3fu) | tsopts;
        if (tsval > ts_now)
            tsval -= 1u << 6;
    }

    /* the TCP header and options on the stack, then its checksum */
    __u8 tcp[64] = {};
    __u32 optlen = put_opts(tcp + 20, &o, tsval);
    __u32 tcplen = 20 + optlen;
    tcp[0] = (__u8)(dport >> 8);
    tcp[1] = (__u8)dport;
    tcp[2] = (__u8)(sport >> 8);
    tcp[3] = (__u8)sport;
    put32(tcp + 4, cookie);
    put32(tcp + 8, cseq + 1);
    tcp[12] = (__u8)((tcplen / 4) << 4);
    tcp[13] = TH_SYN | TH_ACK;
    tcp[14] = SP_WINDOW >> 8;
    tcp[15] = SP_WINDOW & 0xff;
    __u64 s = sum16(tcp, tcplen) + IPPROTO_TCP + tcplen;
    int words = v6 ? 4 : 1;
#pragma unroll
    for (int w = 0; w < 4; w++) {
        if (w < words)
            s += (src[w] >> 16) + (src[w] & 0xffff) + (dst[w] >> 16) + (dst[w] & 0xffff);
    }
    __u16 csum = (__u16)~fold(s);
    tcp[16] = (__u8)(csum >> 8);
    tcp[17] = (__u8)csum;

    /* the frame takes the SYN-ACK's exact length */
    __u8 mac_src[ETH_ALEN], mac_dst[ETH_ALEN];
    __builtin_memcpy(mac_src, eth->h_source, ETH_ALEN);
    __builtin_memcpy(mac_dst, eth->h_dest, ETH_ALEN);
    __u32 want = sizeof(struct ethhdr) + l3 + tcplen;
    int delta = (int)want - (int)(data_end - data);
    if (delta && bpf_xdp_adjust_tail(ctx, delta))
        return XDP_PASS;
    data = (void *)(long)ctx->data;
    data_end = (void *)(long)ctx->data_end;
    eth = data;
    ip = (__u8 *)(eth + 1);
    th = ip + l3;
    if ((void *)(th + 20) > data_end)
        return XDP_DROP; /* cannot happen: the frame was just sized */
    __builtin_memcpy(eth->h_source, mac_dst, ETH_ALEN);
    __builtin_memcpy(eth->h_dest, mac_src, ETH_ALEN);
    if (v6) {
        /* st_ipv6_hdr: version 6, no traffic class or flow label, hop limit 64 */
        *(__u32 *)ip = bswap32(6u << 28);
        ip[4] = (__u8)(tcplen >> 8);
        ip[5] = (__u8)tcplen;
        ip[6] = IPPROTO_TCP;
        ip[7] = 64;
#pragma unroll
        for (int w = 0; w < 4; w++) {
            *(__u32 *)(ip + 8 + 4 * w) = bswap32(dst[w]);
            *(__u32 *)(ip + 24 + 4 * w) = bswap32(src[w]);
        }
    } else {
        /* build_segment: DF, TTL 64, IP ID 0 (an atomic datagram, RFC 6864) */
        __u32 tot = 20 + tcplen;
        ip[0] = 0x45;
        ip[1] = 0;
        ip[2] = (__u8)(tot >> 8);
        ip[3] = (__u8)tot;
        ip[4] = 0;
        ip[5] = 0;
        ip[6] = 0x40;
        ip[7] = 0;
        ip[8] = 64;
        ip[9] = IPPROTO_TCP;
        ip[10] = 0;
        ip[11] = 0;
        *(__u32 *)(ip + 12) = bswap32(dst[0]);
        *(__u32 *)(ip + 16) = bswap32(src[0]);
        __u8 hdr[20];
        __builtin_memcpy(hdr, ip, 20);
        __u16 ic = (__u16)~fold(sum16(hdr, 20));
        ip[10] = (__u8)(ic >> 8);
        ip[11] = (__u8)ic;
    }
    for (__u32 i = 0; i < 40; i++) {
        if (i >= tcplen)
            break;
        __u8 *b = th + i;
        if ((void *)(b + 1) > data_end)
            return XDP_DROP;
        *b = tcp[i & 63];
    }
    count(CNT_SYN);
    if (svc_kind != SVC_SYNPROXY)
        count(CNT_COOKIE_SYN);
    return XDP_TX;
}

char _license[] SEC("license") = "GPL";
