/*
 * packet.h — what the packet files (packet.c, proto_tcp.c, xmit.c, icmp.c, sync.c) share: byte
 * access, RFC 1624 checksum arithmetic (docs/performance.md#checksums), the parsed-packet view, the
 * per-direction counters and the functions each packet file offers the others.
 */
#ifndef PYLVS_PACKET_H
#define PYLVS_PACKET_H

#include <stdint.h>

#include "engine.h"

/* ---- byte access ---- */

static inline uint16_t ld16(const uint8_t *p)
{
    return (uint16_t)(p[0] << 8 | p[1]);
}

static inline uint32_t ld32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static inline void st16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)(v >> 8);
    p[1] = (uint8_t)v;
}

static inline void st32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

/* ---- checksums ---- */

static inline uint16_t fold(uint64_t s)
{
    while (s >> 16)
        s = (s & 0xffff) + (s >> 16);
    return (uint16_t)s;
}

/* One's-complement sum of 16-bit big-endian words (odd tail padded with zero). */
static inline uint64_t sum16(const uint8_t *p, uint32_t n)
{
    uint64_t s = 0;
    while (n >= 8) {
        s += (uint32_t)ld16(p) + ld16(p + 2) + ld16(p + 4) + ld16(p + 6);
        p += 8;
        n -= 8;
    }
    while (n >= 2) {
        s += ld16(p);
        p += 2;
        n -= 2;
    }
    if (n)
        s += (uint32_t)p[0] << 8;
    return s;
}

/* Contribution of replacing 32-bit `o` by `n` to an RFC 1624 sum (~m + m'); 0 if equal. */
static inline uint64_t diff32(uint32_t o, uint32_t n)
{
    if (o == n)
        return 0;
    return (uint64_t)(~o >> 16 & 0xffff) + (~o & 0xffff) + (n >> 16) + (n & 0xffff);
}

static inline uint64_t diff16(uint16_t o, uint16_t n)
{
    if (o == n)
        return 0;
    return (uint64_t)(uint16_t)~o + n;
}

/* RFC 1624 eqn 3: HC' = ~(~HC + sum(~m + m')).  No-op when nothing changed (erratum 4782). */
static inline void csum_apply(uint8_t *field, uint64_t delta)
{
    if (!delta)
        return;
    uint16_t hc = ld16(field);
    st16(field, (uint16_t)~fold((uint64_t)(uint16_t)~hc + delta));
}

/* Partial checksum (pseudo-header sum, not inverted): field' = fold(field + ~m + m'). */
static inline void csum_apply_partial(uint8_t *field, uint64_t delta)
{
    if (!delta)
        return;
    st16(field, fold((uint64_t)ld16(field) + delta));
}

static inline uint16_t ip_csum(const uint8_t *h, uint32_t ihl)
{
    return (uint16_t)~fold(sum16(h, ihl));
}

/* ---- IPv6 addresses in a packet (16 bytes, network order) as host-order words ---- */

static inline lvs_addr ld_addr6(const uint8_t *p)
{
    lvs_addr a = {.ip6 = {ld32(p), ld32(p + 4), ld32(p + 8), ld32(p + 12)}};
    return a;
}

static inline void st_addr6(uint8_t *p, lvs_addr a)
{
    st32(p, a.ip6[0]);
    st32(p + 4, a.ip6[1]);
    st32(p + 8, a.ip6[2]);
    st32(p + 12, a.ip6[3]);
}

/* RFC 1624 contribution of replacing a whole IPv6 address (the pseudo-header changes by it). */
static inline uint64_t diff128(lvs_addr o, lvs_addr n)
{
    return diff32(o.ip6[0], n.ip6[0]) + diff32(o.ip6[1], n.ip6[1]) + diff32(o.ip6[2], n.ip6[2]) +
           diff32(o.ip6[3], n.ip6[3]);
}

/* Sum of the IPv6 pseudo-header (RFC 8200 section 8.1) for the addresses at ip+8 and ip+24. */
static inline uint64_t pseudo6_sum(const uint8_t *ip, uint32_t len, uint8_t nh)
{
    return sum16(ip + 8, 32) + (len >> 16) + (len & 0xffff) + nh;
}

#define LVS_IPV6_HDR 40

/* A bare IPv6 header of a packet the engine generates (traffic class and flow label 0, hop
 * limit 64) carrying `payload` bytes of next header `nh`. */
static inline void st_ipv6_hdr(uint8_t *p, uint32_t payload, uint8_t nh, lvs_addr src,
                               lvs_addr dst)
{
    st32(p, 6u << 28);
    st16(p + 4, (uint16_t)payload);
    p[6] = nh;
    p[7] = 64;
    st_addr6(p + 8, src);
    st_addr6(p + 24, dst);
}
#define LVS_IPV6_MAX_EXT_HEADERS 8   /* extension headers walked before the packet is dropped */
#define LVS_PROTO_ICMPV6 58

/* Offsets of the source and destination address in the IP header of each family. */
static inline uint32_t saddr_off(uint8_t af)
{
    return af == LVS_AF_INET6 ? 8 : 12;
}

static inline uint32_t daddr_off(uint8_t af)
{
    return af == LVS_AF_INET6 ? 24 : 16;
}

/* ---- a parsed IPv4 or IPv6 TCP/UDP/ICMP packet (addresses and ports host order) ---- */

typedef struct pkt {
    uint8_t *p;
    uint8_t *l4;
    uint32_t tot;
    uint32_t ihl;            /* L3 header length: IHL*4, or 40 + the IPv6 extension headers */
    uint32_t l4len;
    lvs_addr saddr, daddr;
    uint16_t sport, dport;
    uint8_t af;
    uint8_t proto;
    uint8_t th_flags;
    uint8_t meta;
    struct lvs_service *fwm_svc; /* the fwmark service of the batch's mark, if any */
} pkt;

/* ---- stats (ip_vs_in_stats / ip_vs_out_stats / ip_vs_conn_stats) ---- */

static inline void stats_in(lvs_engine *e, lvs_conn *c, uint32_t bytes)
{
    lvs_dest *d = c->dest;
    if (!d || !(d->flags & LVS_DEST_F_AVAILABLE))
        return;
    d->stats.inpkts++;
    d->stats.inbytes += bytes;
    if (d->svc) {
        d->svc->stats.inpkts++;
        d->svc->stats.inbytes += bytes;
    }
    e->stats.inpkts++;
    e->stats.inbytes += bytes;
}

static inline void stats_out(lvs_engine *e, lvs_conn *c, uint32_t bytes)
{
    lvs_dest *d = c->dest;
    if (!d || !(d->flags & LVS_DEST_F_AVAILABLE))
        return;
    d->stats.outpkts++;
    d->stats.outbytes += bytes;
    if (d->svc) {
        d->svc->stats.outpkts++;
        d->svc->stats.outbytes += bytes;
    }
    e->stats.outpkts++;
    e->stats.outbytes += bytes;
}

static inline void stats_conn(lvs_engine *e, lvs_dest *d)
{
    d->stats.conns++;
    if (d->svc)
        d->svc->stats.conns++;
    e->stats.conns++;
}

/* TCP header flag bits the engine looks at. */
#define TH_FIN 0x01
#define TH_SYN 0x02
#define TH_RST 0x04
#define TH_ACK 0x10

/* Direction of a packet through a connection: the row offset into the TCP state table. */
enum { LVS_DIR_IN = 0, LVS_DIR_OUT = 4 };

/* ---- proto_tcp.c ---- */

/* Move a TCP conn to its next state for a packet with these flags; sets the state's timeout
 * and moves the conn between the dest's active and inactive counters. */
void lvs_tcp_transition(lvs_engine *e, lvs_conn *c, int dir, uint8_t th_flags);
/* 1 when the packet leaves the conn's state, flags and timeout as they are (the transition
 * would write only what is already there): the shared fast path may skip it. */
int lvs_tcp_steady(const lvs_engine *e, const lvs_conn *c, int dir, uint8_t th_flags);

/* ---- xmit.c ---- */

/* Client -> server: the TTL step (an ICMP time exceeded for the sender at TTL <= 1) and DNAT
 * to the conn's server; returns the verdict. */
int lvs_nat_xmit_in(lvs_engine *e, pkt *k, const lvs_conn *c, uint32_t *plen, uint32_t cap);
/* Server -> client: SNAT back to the conn's VIP and port. */
void lvs_nat_xmit_out(lvs_engine *e, pkt *k, const lvs_conn *c);

/* ---- ftp.c (docs/ipvs.md#ftp) ---- */

/* A client -> server segment of an FTP control conn (before NAT): PORT/EPRT make the entry
 * the server's active data connection will use. */
void lvs_ftp_in(lvs_engine *e, pkt *k, lvs_conn *c, double now);
/* A server -> client segment of an FTP control conn (before NAT): 227/229 make the
 * expectation; a 227's address is rewritten to the VIP (the packet's length may change,
 * within cap, and *plen with it). */
void lvs_ftp_out(lvs_engine *e, pkt *k, lvs_conn *c, uint32_t *plen, uint32_t cap, double now);

/* An FTP control conn: TCP to the port of a service with the helper on. */
static inline int lvs_ftp_ctl(const lvs_conn *c)
{
    const lvs_service *s = c->dest ? c->dest->svc : (const lvs_service *)0;
    return s && (s->flags & LVS_SVC_F_FTP) && c->vport == s->port &&
           !(c->flags & LVS_CONN_F_TEMPLATE);
}

/* ---- icmp.c ---- */

/* The error both families send: port unreachable / time exceeded for k's sender, built in
 * place (*plen set); returns 0, -1 if cap is too small, -2 if the sender may not get one
 * (broadcast, multicast, unspecified ...). */
enum { LVS_ERR_PORT_UNREACH, LVS_ERR_TIME_EXCEEDED };
int lvs_icmp_error_for(lvs_engine *e, const pkt *k, uint32_t *plen, uint32_t cap, int which);
/* An ICMP packet (k->l4 is the ICMP header): translate an error about a conn; a verdict. */
int lvs_icmp_process(lvs_engine *e, pkt *k, int to_vip);
/* An ICMPv6 packet: the same for Destination Unreachable, Packet Too Big, Time Exceeded. */
int lvs_icmp6_process(lvs_engine *e, pkt *k, int to_vip);
/* Walk an IPv6 extension-header chain from next header nh at p[off] within len bytes:
 * returns the upper-layer offset and sets *proto, or -1 (chain too long, runs past len, a
 * routing header with segments left, hop-by-hop not first), -2 (a fragment header). */
int lvs_ipv6_skip_ext(const uint8_t *p, uint32_t off, uint32_t len, uint8_t nh, uint8_t *proto);

/* ---- synproxy.c ---- */

/* What an ACK with a valid cookie gives back: the client's options as its SYN offered them
 * (mss is the cookie's MSS class; wscale 0xf = none). */
typedef struct lvs_sp_accept {
    uint16_t mss;
    uint8_t wscale;
    uint8_t sack;
    uint8_t ts;
    uint32_t tsval, tsecr;   /* from the ACK */
} lvs_sp_accept;

#define LVS_SP_ACCEPT (-1)

/* A TCP packet to a synproxy service matching no conn: a SYN becomes a cookie SYN-ACK
 * (REPLY); an ACK with a valid cookie returns LVS_SP_ACCEPT and the options; the rest DROP.
 * cnt: the first of the four counters to count in, LVS_CNT_SYNPROXY_SYN or (SYN cookies
 * for a service without synproxy, defense.c) LVS_CNT_SYNCOOKIE_SYN. */
int lvs_synproxy_new(lvs_engine *e, pkt *k, uint32_t *plen, uint32_t cap, double now,
                     lvs_sp_accept *out, int cnt);
/* The conn just scheduled for an accepted ACK: keep the client's packet; the slot becomes the
 * SYN for the server (REPLY). */
int lvs_synproxy_open(lvs_engine *e, pkt *k, lvs_conn *c, const lvs_sp_accept *o,
                      uint32_t *plen, uint32_t cap, double now);
/* 1 when k is a pure ACK carrying a valid cookie (nothing counted): the client's ACK to a
 * SYN-ACK the XDP responder sent, for a tuple whose old conn the engine would have expired
 * on the SYN (conn_reuse_mode) had it seen it. */
int lvs_synproxy_cookie_ack(lvs_engine *e, const pkt *k, double now);
/* An accepted ACK no server can take: the slot becomes a RST for the client (REPLY). */
int lvs_synproxy_refuse(lvs_engine *e, pkt *k, uint32_t *plen);
/* Packets of a conn whose server handshake is pending (LVS_CONN_F_SP_WAIT), each direction. */
int lvs_synproxy_in_wait(lvs_engine *e, pkt *k, lvs_conn *c, uint32_t *plen, uint32_t cap,
                         double now);
int lvs_synproxy_out_wait(lvs_engine *e, pkt *k, lvs_conn *c, uint32_t *plen, uint32_t cap,
                          double now);

#endif /* PYLVS_PACKET_H */
