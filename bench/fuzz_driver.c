/*
 * fuzz_driver.c — pushes generated packets through the C engine, built with the sanitizers of
 * PYLVS_DEBUG=1 (ASan + UBSan; LeakSanitizer checks the teardown), one packet per batch so
 * every verdict is checked against the table as it was right after that packet.
 *
 * Usage: fuzz_driver PACKETS SEED.  Prints one JSON line of counts; exits 1 on the first
 * broken invariant (and the sanitizers abort on their own findings):
 *   - a packet forwarded towards a real server has a connection in the table that names that
 *     server (in direction, TCP/UDP, and ICMP errors by their quoted packet);
 *   - a reply forwarded to a client has a connection (out direction) and leaves from the VIP;
 *   - nothing addressed to a VIP passes unchanged; a REPLY goes back to the sender;
 *   - the table never holds more than max_connections entries.
 *
 * Packet kinds: random bytes, valid packets (clients, spoofed flood sources, real-server
 * replies, ICMP errors), valid packets cut short, valid packets with bits flipped (IP checksum
 * repaired half the time), TCP with option soup, and cookie-shaped ACKs (bare ACKs from unseen
 * sources, as a SYN-cookie check would meet them).  Defence modes change every 50,000 packets.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine.h"

#define STRIDE 1024
#define MAXC 4096

static uint64_t rng = 88172645463325252ULL;
static uint64_t rnd(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}
static uint32_t below(uint32_t n) { return n ? (uint32_t)(rnd() % n) : 0; }

static const uint32_t VIP = 0xC6120064;      /* 198.18.0.100 */
static const uint32_t RS[3] = {0xC613000B, 0xC613000C, 0xC613000D};   /* 198.19.0.11-13 */
static const uint16_t RSPORT[3] = {8080, 8080, 5353};

static void st16(uint8_t *p, uint16_t v) { p[0] = (uint8_t)(v >> 8); p[1] = (uint8_t)v; }
static void st32(uint8_t *p, uint32_t v) { st16(p, (uint16_t)(v >> 16)); st16(p + 2, (uint16_t)v); }
static uint16_t ld16(const uint8_t *p) { return (uint16_t)(p[0] << 8 | p[1]); }
static uint32_t ld32(const uint8_t *p) { return (uint32_t)ld16(p) << 16 | ld16(p + 2); }

static uint16_t csum(const uint8_t *p, uint32_t n)
{
    uint32_t s = 0;
    for (uint32_t i = 0; i + 1 < n; i += 2)
        s += ld16(p + i);
    if (n & 1)
        s += (uint32_t)p[n - 1] << 8;
    while (s >> 16)
        s = (s & 0xffff) + (s >> 16);
    return (uint16_t)~s;
}

static void ip_fix(uint8_t *p)
{
    uint32_t ihl = (uint32_t)(p[0] & 15) * 4;
    st16(p + 10, 0);
    st16(p + 10, csum(p, ihl));
}

/* IPv4 header + room for L4; returns the L4 offset. */
static uint32_t ip_hdr(uint8_t *p, uint8_t proto, uint32_t s, uint32_t d, uint32_t l4len)
{
    memset(p, 0, 20);
    p[0] = 0x45;
    st16(p + 2, (uint16_t)(20 + l4len));
    st16(p + 4, (uint16_t)rnd());
    p[8] = (uint8_t)(below(4) ? 64 : 1 + below(3));
    p[9] = proto;
    st32(p + 12, s);
    st32(p + 16, d);
    ip_fix(p);
    return 20;
}

static uint32_t tcp_pkt(uint8_t *p, uint32_t s, uint16_t sp, uint32_t d, uint16_t dp,
                        uint8_t flags, uint32_t optlen, uint32_t paylen)
{
    uint32_t doff = 20 + optlen, l4 = doff + paylen;
    ip_hdr(p, 6, s, d, l4);
    uint8_t *t = p + 20;
    memset(t, 0, doff);
    st16(t, sp);
    st16(t + 2, dp);
    st32(t + 4, (uint32_t)rnd());
    st32(t + 8, (uint32_t)rnd());
    t[12] = (uint8_t)((doff / 4) << 4);
    t[13] = flags;
    st16(t + 14, 65535);
    for (uint32_t i = 0; i < paylen; i++)
        t[doff + i] = (uint8_t)rnd();
    st16(t + 16, (uint16_t)rnd());   /* the engine never checks the TCP checksum */
    return 20 + l4;
}

static uint32_t udp_pkt(uint8_t *p, uint32_t s, uint16_t sp, uint32_t d, uint16_t dp,
                        uint32_t paylen)
{
    ip_hdr(p, 17, s, d, 8 + paylen);
    uint8_t *u = p + 20;
    st16(u, sp);
    st16(u + 2, dp);
    st16(u + 4, (uint16_t)(8 + paylen));
    st16(u + 6, below(4) ? (uint16_t)rnd() : 0);
    for (uint32_t i = 0; i < paylen; i++)
        u[8 + i] = (uint8_t)rnd();
    return 28 + paylen;
}

/* TCP options: well-formed, truncated, zero- and over-length kinds in any order. */
static uint32_t option_soup(uint8_t *o, uint32_t room)
{
    static const uint8_t kinds[] = {0, 1, 2, 3, 4, 5, 8, 30, 34, 254};
    uint32_t n = 0;
    while (n < room) {
        uint8_t k = kinds[below(sizeof kinds)];
        o[n++] = k;
        if (k <= 1 || n >= room)
            continue;
        uint8_t len = below(5) ? (uint8_t)(k == 2 ? 4 : k == 3 ? 3 : k == 8 ? 10 : 2 + below(8))
                               : (uint8_t)below(256);
        o[n++] = len;
        for (uint32_t i = 2; i < len && n < room; i++)
            o[n++] = (uint8_t)rnd();
    }
    return room;
}

/* Clients: 64 well-behaved addresses and a spoofed /17; ports from a small range so conns
 * meet their later packets. */
static uint32_t client(void)
{
    return below(3) ? 0xC6120000u + 1 + below(64) : 0xC6128000u + below(32768);
}
static uint16_t cport(void) { return (uint16_t)(40000 + below(64)); }
static uint16_t vport(void)
{
    static const uint16_t ports[] = {80, 80, 80, 53, 443, 443, 8443, 22};
    return ports[below(sizeof ports / sizeof ports[0])];
}

static uint32_t valid_packet(uint8_t *p)
{
    static const uint8_t flags[] = {0x02, 0x02, 0x10, 0x18, 0x11, 0x04, 0x12, 0x14, 0x01, 0x00};
    uint32_t r = below(10);
    uint32_t c = client();
    uint16_t cp = cport();
    if (r < 5) {
        uint16_t vp = vport();
        if (vp == 53)
            return udp_pkt(p, c, cp, VIP, 53, below(64));
        return tcp_pkt(p, c, cp, VIP, vp, flags[below(sizeof flags)], 0, below(3) ? 0 : below(64));
    }
    uint32_t k = below(3);
    if (r < 8) {   /* a real server answering a client */
        if (k == 2)
            return udp_pkt(p, RS[2], RSPORT[2], c, cp, below(64));
        return tcp_pkt(p, RS[k], below(4) ? RSPORT[k] : 443, c, cp, flags[below(sizeof flags)],
                       0, below(32));
    }
    /* an ICMP error quoting a packet either way */
    uint8_t q[64];
    uint32_t qlen = r == 8 ? tcp_pkt(q, VIP, vport(), c, cp, 0x12, 0, 0)
                           : tcp_pkt(q, c, cp, RS[k], RSPORT[k], 0x10, 0, 0);
    if (qlen > 28)
        qlen = 28;
    uint32_t src = r == 8 ? 0xC61200FE : RS[k], dst = r == 8 ? VIP : c;
    ip_hdr(p, 1, src, dst, 8 + qlen);
    uint8_t *ic = p + 20;
    static const uint8_t types[] = {3, 3, 4, 11, 0, 8, 5};
    ic[0] = types[below(sizeof types)];
    ic[1] = (uint8_t)below(5);
    memset(ic + 2, 0, 6);
    memcpy(ic + 8, q, qlen);
    st16(ic + 2, csum(ic, 8 + qlen));
    return 28 + qlen;
}

enum { K_RANDOM, K_VALID, K_TRUNC, K_FLIP, K_OPTS, K_COOKIE, K_MAX };
static const char *const kind_names[K_MAX] = {"random", "valid", "truncated", "bit_flipped",
                                              "option_soup", "cookie_ack"};

static uint32_t generate(uint8_t *p, int kind)
{
    uint32_t len;
    switch (kind) {
    case K_RANDOM:
        len = below(200);
        for (uint32_t i = 0; i < len; i++)
            p[i] = (uint8_t)rnd();
        if (len && below(2))
            p[0] = 0x45;
        return len;
    case K_TRUNC:
        len = valid_packet(p);
        return below(len + 1);
    case K_FLIP: {
        len = valid_packet(p);
        for (uint32_t n = 1 + below(4); n; n--)
            p[below(len)] ^= (uint8_t)(1u << below(8));
        if (below(2) && len >= 20 && (p[0] >> 4) == 4 && (uint32_t)(p[0] & 15) * 4 <= len &&
            (p[0] & 15) >= 5)
            ip_fix(p);
        return len;
    }
    case K_OPTS: {
        uint32_t optlen = 4 * below(11);
        len = tcp_pkt(p, client(), cport(), VIP, below(2) ? 80 : 443,
                      below(2) ? 0x02 : (uint8_t)rnd(), optlen, below(3) ? 0 : below(40));
        option_soup(p + 40, optlen);
        return len;
    }
    case K_COOKIE:
        /* ack = a cookie-like value, seq = isn + 1, sometimes data in the first ACK */
        return tcp_pkt(p, 0xC6128000u + below(32768), (uint16_t)(1024 + below(60000)), VIP, 80,
                       below(4) ? 0x10 : 0x18, below(2) ? 12 : 0, below(3) ? 0 : below(100));
    default:
        return valid_packet(p);
    }
}

static int is_rs(uint32_t a)
{
    for (int i = 0; i < 3; i++)
        if (a == RS[i])
            return 1;
    return 0;
}

static int fail(uint64_t n, const char *what)
{
    fprintf(stderr, "fuzz: packet %llu: %s\n", (unsigned long long)n, what);
    return 1;
}

/* The invariants for one packet: orig went in, out (len olen) came back with verdict v. */
static int check(lvs_engine *e, uint64_t n, const uint8_t *orig, uint32_t ilen,
                 const uint8_t *out, uint32_t olen, int v)
{
    if (e->nconns > e->max_conns)
        return fail(n, "table above max_connections");
    int ipv4 = ilen >= 20 && (orig[0] >> 4) == 4;
    uint32_t daddr = ipv4 ? ld32(orig + 16) : 0;
    if (v == LVS_VERDICT_PASS && ipv4 && daddr == VIP)
        return fail(n, "a packet to the VIP passed unchanged");
    if (v == LVS_VERDICT_REPLY && (olen < 20 || out[9] != 1 || ld32(out + 16) != ld32(orig + 12)))
        return fail(n, "a reply that is not ICMP back to the sender");
    if (v != LVS_VERDICT_FORWARD)
        return 0;
    uint32_t ihl = (uint32_t)(out[0] & 15) * 4;
    uint8_t proto = out[9];
    const uint8_t *l4 = out + ihl;
    if (proto == 6 || proto == 17) {
        uint16_t sp = ld16(orig + ihl), dp = ld16(orig + ihl + 2);
        if (daddr == VIP) {
            lvs_conn *c = lvs_conn_in_get(e, LVS_AF_INET, proto, lvs_addr4(ld32(orig + 12)), sp,
                                          lvs_addr4(VIP), dp);
            if (!c)
                return fail(n, "forwarded to a real server without a connection");
            if (ld32(out + 16) != c->daddr.ip || ld16(l4 + 2) != c->dport ||
                !is_rs(c->daddr.ip))
                return fail(n, "forwarded somewhere its connection does not name");
        } else {
            lvs_conn *c = lvs_conn_out_get(e, LVS_AF_INET, proto, lvs_addr4(ld32(orig + 12)), sp,
                                           lvs_addr4(daddr), dp);
            if (!c || ld32(out + 12) != VIP)
                return fail(n, "a reply forwarded without its connection");
        }
        return 0;
    }
    if (proto == 1) {
        const uint8_t *q = l4 + 8;   /* the quoted packet, already translated */
        const uint8_t *oq = orig + ihl + 8;
        uint32_t qihl = (uint32_t)(oq[0] & 15) * 4;
        uint16_t qs = ld16(oq + qihl), qd = ld16(oq + qihl + 2);
        lvs_conn *c = daddr == VIP
                          ? lvs_conn_in_get(e, LVS_AF_INET, oq[9], lvs_addr4(ld32(oq + 16)), qd,
                                            lvs_addr4(ld32(oq + 12)), qs)
                          : lvs_conn_out_get(e, LVS_AF_INET, oq[9], lvs_addr4(ld32(oq + 16)), qd,
                                             lvs_addr4(ld32(oq + 12)), qs);
        if (!c)
            return fail(n, "an ICMP error forwarded without a connection");
        if (daddr == VIP && (ld32(out + 16) != c->daddr.ip || ld32(q + 12) != c->daddr.ip))
            return fail(n, "an ICMP error forwarded somewhere its connection does not name");
        return 0;
    }
    return fail(n, "forwarded a protocol the engine does not handle");
}

static void add_services(lvs_engine *e)
{
    lvs_svc_conf s = {.af = LVS_AF_INET, .proto = 6, .addr.ip6 = {VIP}, .port = 80, .sched = "rr"};
    lvs_svc_add(e, &s);
    lvs_svc_conf u = {.af = LVS_AF_INET, .proto = 17, .addr.ip6 = {VIP}, .port = 53, .sched = "wlc"};
    lvs_svc_add(e, &u);
    lvs_svc_conf ps = {.af = LVS_AF_INET, .proto = 6, .addr.ip6 = {VIP}, .port = 443, .sched = "wlc", .timeout = 60,
                       .netmask = 0xffffff00};
    lvs_svc_add(e, &ps);
    lvs_svc_conf p0 = {.af = LVS_AF_INET, .proto = 6, .addr.ip6 = {VIP}, .port = 0, .sched = "rr", .timeout = 30,
                       .netmask = 0xffffffff};
    lvs_svc_add(e, &p0);
    for (int i = 0; i < 2; i++) {
        lvs_dest_conf d = {.af = LVS_AF_INET, .dest_af = LVS_AF_INET, .proto = 6,
                           .vaddr.ip6 = {VIP}, .vport = 80, .addr.ip6 = {RS[i]},
                           .port = RSPORT[i], .weight = 1 + i};
        lvs_dest_add(e, &d);
        d.vport = 443;
        d.port = 443;
        lvs_dest_add(e, &d);
        d.vport = 0;
        d.port = 0;
        lvs_dest_add(e, &d);
    }
    lvs_dest_conf d = {.af = LVS_AF_INET, .dest_af = LVS_AF_INET, .proto = 17,
                       .vaddr.ip6 = {VIP}, .vport = 53, .addr.ip6 = {RS[2]}, .port = 5353,
                       .weight = 1};
    lvs_dest_add(e, &d);
}

int main(int argc, char **argv)
{
    uint64_t total = argc > 1 ? strtoull(argv[1], NULL, 10) : 1000000;
    uint64_t seed = argc > 2 ? strtoull(argv[2], NULL, 10) : 1;
    rng ^= seed * 0x9E3779B97F4A7C15ULL;
    if (!rng)
        rng = 1;
    lvs_engine *e = lvs_engine_new(MAXC, seed);
    if (!e)
        return 2;
    add_services(e);
    static uint8_t data[STRIDE], orig[STRIDE];
    uint32_t len;
    uint8_t meta = 0, verdict = 0;
    lvs_batch b = {.count = 1, .stride = STRIDE, .data = data, .len = &len, .meta = &meta,
                   .verdict = &verdict};
    uint64_t kinds[K_MAX] = {0}, verdicts[4] = {0};
    double now = 1.0;
    for (uint64_t n = 0; n < total; n++) {
        if (n % 50000 == 0) {
            lvs_defense_conf dc = {.drop_entry = (int32_t)below(4),
                                   .drop_packet = (int32_t)below(4),
                                   .secure_tcp = (int32_t)below(4),
                                   .amemthresh = below(MAXC / 2), .am_droprate = 1 + below(20),
                                   .evict_embryonic = below(4) != 0};
            if (lvs_defense_set(e, &dc) != 0)
                return fail(n, "lvs_defense_set refused a valid setting");
        }
        if (n % 1000 == 0)
            lvs_engine_expire(e, now);
        now += 0.002;
        int kind = (int)below(K_MAX);
        kinds[kind]++;
        uint32_t ilen = generate(orig, kind);
        memcpy(data, orig, ilen);
        len = ilen;
        meta = below(16) ? 0 : LVS_META_CSUM_PARTIAL;
        lvs_engine_process_batch(e, &b, now);
        if (verdict > LVS_VERDICT_REPLY)
            return fail(n, "unknown verdict");
        verdicts[verdict]++;
        if (check(e, n, orig, ilen, data, len, verdict))
            return 1;
    }
    lvs_defense_info di;
    lvs_defense_get(e, &di);
    printf("{\"packets\": %llu", (unsigned long long)total);
    for (int k = 0; k < K_MAX; k++)
        printf(", \"%s\": %llu", kind_names[k], (unsigned long long)kinds[k]);
    printf(", \"forward\": %llu, \"pass\": %llu, \"drop\": %llu, \"reply\": %llu",
           (unsigned long long)verdicts[0], (unsigned long long)verdicts[1],
           (unsigned long long)verdicts[2], (unsigned long long)verdicts[3]);
    printf(", \"connections\": %u, \"evicted\": %llu, \"drop_entry\": %llu, "
           "\"defense_drop_packet\": %llu, \"table_full\": %llu}\n",
           e->nconns, (unsigned long long)di.evicted_embryonic,
           (unsigned long long)di.drop_entry_conns,
           (unsigned long long)e->counters[LVS_CNT_DEFENSE_DROP_PACKET],
           (unsigned long long)e->counters[LVS_CNT_TABLE_FULL]);
    lvs_engine_free(e);
    return 0;
}
