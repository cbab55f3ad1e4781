/*
 * icmp.c — ICMP and ICMPv6: errors about a connection translated in both directions
 * (ip_vs_in_icmp / ip_vs_out_icmp with ip_vs_nat_icmp, and their _v6 twins,
 * docs/ipvs.md#icmp) and the errors the engine generates itself (port unreachable, time
 * exceeded).  The IPv6 extension-header walk lives here too: packet.c and the quoted packet of
 * an ICMPv6 error both use it.
 */
#include <string.h>

#include "seqadj.h"

/* ---- generated ICMP errors (icmp_send, quoting at most 576 bytes in all).  The source is
 * the address the packet was sent to (the VIP): the engine knows no interface address. ---- */

/* icmp_send never answers a sender that cannot receive it: 0.0.0.0, limited broadcast,
 * multicast and class E; ICMPv6 errors go to unicast senders only (RFC 4443 2.4 e). */
static int bad_icmp_target(uint8_t af, const uint8_t *p)
{
    if (af == LVS_AF_INET6) {
        lvs_addr x = ld_addr6(p + 8);
        return (x.ip6[0] | x.ip6[1] | x.ip6[2] | x.ip6[3]) == 0 || p[8] == 0xff;
    }
    uint32_t a = ld32(p + 12);
    return a == 0 || a == 0xffffffffu || (a >> 28) >= 0xe;
}

/*
 * Turn the packet p (tot bytes) in place into an ICMP or ICMPv6 error about it for its sender
 * and set *plen; returns 0, -1 if cap is too small, -2 if the sender may not get one.  The
 * error quotes as much of the packet as fits in 576 bytes (icmp_send) or, for ICMPv6, in the
 * 1280-byte minimum MTU (RFC 4443 2.4 c).
 */
static int error_build(lvs_engine *e, uint8_t af, uint8_t *p, uint32_t *plen, uint32_t cap,
                       uint32_t tot, uint8_t type, uint8_t code)
{
    int v6 = af == LVS_AF_INET6;
    uint32_t hdr = (v6 ? LVS_IPV6_HDR : 20) + 8; /* the IP and ICMP headers put in front */
    uint32_t limit = v6 ? 1280 : 576;
    if (bad_icmp_target(af, p))
        return -2;
    if (cap < hdr + hdr)
        return -1;
    uint32_t quote = tot;
    if (quote > limit - hdr)
        quote = limit - hdr;
    if (quote > cap - hdr)
        quote = cap - hdr;
    /* from the address the packet was sent to, back to its sender */
    lvs_addr src = v6 ? ld_addr6(p + 24) : lvs_addr4(ld32(p + 16));
    lvs_addr dst = v6 ? ld_addr6(p + 8) : lvs_addr4(ld32(p + 12));
    memmove(p + hdr, p, quote);
    memset(p, 0, hdr);
    uint8_t *ic = p + hdr - 8;
    ic[0] = type;
    ic[1] = code;
    uint64_t sum = sum16(ic, 8 + quote);
    if (v6) {
        st_ipv6_hdr(p, 8 + quote, LVS_PROTO_ICMPV6, src, dst);
        sum += pseudo6_sum(p, 8 + quote, LVS_PROTO_ICMPV6);
    } else {
        p[0] = 0x45;
        p[1] = 0xc0; /* IPTOS_PREC_INTERNETCONTROL, as Linux's icmp_send */
        st16(p + 2, (uint16_t)(hdr + quote));
        st16(p + 4, e->ip_id++);
        p[8] = 64;
        p[9] = 1;
        st32(p + 12, src.ip);
        st32(p + 16, dst.ip);
        st16(p + 10, ip_csum(p, 20));
    }
    st16(ic + 2, (uint16_t)~fold(sum));
    *plen = hdr + quote;
    return 0;
}

/* ---- ICMP errors (ip_vs_in_icmp / ip_vs_out_icmp with ip_vs_nat_icmp) ---- */

/* An ICMP message we will not translate: dropped (counted as `counter`) when it was sent to a
 * VIP, passed on otherwise. */
static int unmatched(lvs_engine *e, int to_vip, int counter)
{
    if (!to_vip) {
        e->counters[LVS_CNT_PASS_NOT_OURS]++;
        return LVS_VERDICT_PASS;
    }
    e->counters[counter]++;
    return LVS_VERDICT_DROP;
}

/* Count an error about conn c; one sent on to a real server takes the TTL (hop limit) step of
 * ip_vs_icmp_xmit, which routes through __ip_vs_get_out_rt.  0, or -1 when it must die. */
static int count_and_step(lvs_engine *e, pkt *k, lvs_conn *c, int to_vip)
{
    if (!to_vip) {
        stats_out(e, c, k->tot);
        return 0;
    }
    stats_in(e, c, k->tot);
    uint8_t *ttl = k->p + (k->af == LVS_AF_INET6 ? 7 : 8);
    if (*ttl <= 1) {
        e->counters[LVS_CNT_TTL_EXCEEDED]++;
        return -1;
    }
    (*ttl)--;
    return 0;
}

/*
 * The quoted TCP/UDP header (ql4n >= 8 bytes of it) once its address changed by checksum
 * difference da: the port at port_off becomes nport, a SYN proxy's translated numbers go back
 * to their sender's (lvs_seqadj_quote), and the quoted checksum follows incrementally when the
 * quote holds it (UDP: always, a zero checksum stays zero; TCP: 20 bytes quoted), as
 * netfilter's NAT does, so the quote stays a faithful copy of the packet really sent.
 */
static void fix_quoted_l4(lvs_engine *e, lvs_conn *c, uint8_t *ql4, uint32_t ql4n,
                          uint8_t qproto, int to_vip, uint32_t port_off, uint16_t nport,
                          uint64_t da)
{
    uint64_t dq = 0;
    if ((c->flags & LVS_CONN_F_EXT) && qproto == LVS_PROTO_TCP)
        dq = lvs_seqadj_quote(ql4, ql4n, lvs_ext_of(e, c), to_vip ? LVS_DIR_OUT : LVS_DIR_IN);
    uint64_t dp = diff16(ld16(ql4 + port_off), nport);
    st16(ql4 + port_off, nport);
    if (qproto == LVS_PROTO_UDP) {
        if (ld16(ql4 + 6) != 0) {
            csum_apply(ql4 + 6, da + dp);
            if (ld16(ql4 + 6) == 0)
                st16(ql4 + 6, 0xffff);
        }
    } else if (ql4n >= 20) {
        csum_apply(ql4 + 16, da + dp + dq);
    }
}

static int icmp_csum_ok(const uint8_t *ic, uint32_t n)
{
    return fold(sum16(ic, n)) == 0xffff;
}

/*
 * Translate an ICMP error about a connection.  Outer IP, quoted IP and the whole ICMP checksum
 * are recomputed as the kernel does; the quoted TCP/UDP header as fix_quoted_l4 says.
 */
int lvs_icmp_process(lvs_engine *e, pkt *k, int to_vip)
{
    uint8_t *ic = k->l4;
    uint32_t n = k->l4len;
    if (n < 8)
        return unmatched(e, to_vip, LVS_CNT_TRUNCATED);
    uint8_t type = ic[0];
    if (type != 3 && type != 4 && type != 11)
        return unmatched(e, to_vip, LVS_CNT_ICMP_OTHER);
    uint8_t *q = ic + 8;
    uint32_t qn = n - 8;
    if (qn < 20 || (q[0] >> 4) != 4 || (q[0] & 15) < 5 || (uint32_t)(q[0] & 15) * 4 + 8 > qn ||
        (ld16(q + 6) & 0x1fff) != 0 || (q[9] != LVS_PROTO_TCP && q[9] != LVS_PROTO_UDP))
        return unmatched(e, to_vip, LVS_CNT_ICMP_NO_CONN);
    uint32_t qihl = (uint32_t)(q[0] & 15) * 4;
    uint8_t qproto = q[9];
    uint8_t *ql4 = q + qihl;
    uint32_t ql4n = qn - qihl;
    uint32_t qsrc = ld32(q + 12), qdst = ld32(q + 16);
    uint16_t qsport = ld16(ql4), qdport = ld16(ql4 + 2);
    lvs_conn *c;
    if (to_vip)
        c = lvs_conn_in_get(e, LVS_AF_INET, qproto, lvs_addr4(qdst), qdport, lvs_addr4(qsrc),
                            qsport);
    else
        c = lvs_conn_out_get(e, LVS_AF_INET, qproto, lvs_addr4(qdst), qdport, lvs_addr4(qsrc),
                             qsport);
    if (!c)
        return unmatched(e, to_vip, LVS_CNT_ICMP_NO_CONN);
    /* a CHECKSUM_PARTIAL ICMP message has no checksum yet: nothing to verify */
    int partial = (k->meta & LVS_META_CSUM_PARTIAL) != 0;
    if (!partial && !icmp_csum_ok(ic, n)) {
        e->counters[LVS_CNT_BAD_ICMP_CHECKSUM]++;
        return LVS_VERDICT_DROP;
    }
    if (count_and_step(e, k, c, to_vip) < 0)
        return LVS_VERDICT_DROP;
    /* to a VIP, the quoted packet went VIP -> client: it becomes RS -> client; from a real
     * server, it went client -> RS: it becomes client -> VIP */
    uint32_t naddr = to_vip ? c->daddr.ip : c->vaddr.ip;
    uint32_t q_ip_off = to_vip ? 12 : 16;
    st32(k->p + (to_vip ? 16 : 12), naddr);
    st16(k->p + 10, 0);
    st16(k->p + 10, ip_csum(k->p, k->ihl));
    uint64_t da = diff32(ld32(q + q_ip_off), naddr);
    st32(q + q_ip_off, naddr);
    st16(q + 10, 0);
    st16(q + 10, ip_csum(q, qihl));
    fix_quoted_l4(e, c, ql4, ql4n, qproto, to_vip, to_vip ? 0 : 2, to_vip ? c->dport : c->vport,
                  da);
    st16(ic + 2, 0);
    /* partial: the field stays the (empty) seed the device sums from; else a full checksum */
    if (!partial)
        st16(ic + 2, (uint16_t)~fold(sum16(ic, n)));
    return LVS_VERDICT_FORWARD;
}

/* ---- the error both families send ---- */

int lvs_icmp_error_for(lvs_engine *e, const pkt *k, uint32_t *plen, uint32_t cap, int which)
{
    int port = which == LVS_ERR_PORT_UNREACH;
    if (k->af == LVS_AF_INET6)
        /* RFC 4443: port unreachable is type 1 code 4, hop limit exceeded type 3 code 0 */
        return error_build(e, k->af, k->p, plen, cap, k->tot, port ? 1 : 3, port ? 4 : 0);
    return error_build(e, k->af, k->p, plen, cap, k->tot, port ? 3 : 11, port ? 3 : 0);
}

/* ---- IPv6 ---- */

int lvs_ipv6_skip_ext(const uint8_t *p, uint32_t off, uint32_t len, uint8_t nh, uint8_t *proto)
{
    for (uint32_t n = 0;; n++) {
        if (nh == 44)
            return -2; /* Fragment */
        if (nh != 0 && nh != 43 && nh != 60)
            break; /* the upper layer (or a protocol the caller judges: AH, ESP, No Next) */
        /* RFC 8200 4.1: hop-by-hop only straight after the IPv6 header */
        if (n >= LVS_IPV6_MAX_EXT_HEADERS || off + 8 > len || (nh == 0 && n != 0))
            return -1;
        uint32_t hl = ((uint32_t)p[off + 1] + 1) * 8;
        /* a routing header not yet at its last segment names another final destination: the
         * pseudo-header the L4 checksum covers is not the address we would rewrite */
        if (off + hl > len || (nh == 43 && p[off + 3] != 0))
            return -1;
        nh = p[off];
        off += hl;
    }
    *proto = nh;
    return (int)off;
}

/*
 * ip_vs_in_icmp_v6 / ip_vs_out_icmp_v6 with ip_vs_nat_icmp_v6: an ICMPv6 error (type < 128:
 * Destination Unreachable, Packet Too Big with its MTU untouched so PMTU discovery works through
 * the director, Time Exceeded, Parameter Problem) about a conn.  The outer address and the quoted address and port are
 * rewritten, the quoted TCP/UDP checksum incrementally, the ICMPv6 checksum (which covers the
 * pseudo-header) in full.
 */
int lvs_icmp6_process(lvs_engine *e, pkt *k, int to_vip)
{
    uint8_t *ic = k->l4;
    uint32_t n = k->l4len;
    if (n < 8)
        return unmatched(e, to_vip, LVS_CNT_TRUNCATED);
    /* every non-informational type is an error about a packet (ip_vs_in_icmp_v6:
     * ICMPV6_INFOMSG_MASK), Parameter Problem included */
    if (ic[0] & 0x80)
        return unmatched(e, to_vip, LVS_CNT_ICMP_OTHER);
    uint8_t *q = ic + 8;
    uint32_t qn = n - 8;
    if (qn < LVS_IPV6_HDR || (q[0] >> 4) != 6)
        return unmatched(e, to_vip, LVS_CNT_ICMP_NO_CONN);
    uint8_t qproto;
    int qoff = lvs_ipv6_skip_ext(q, LVS_IPV6_HDR, qn, q[6], &qproto);
    if (qoff < 0 || (uint32_t)qoff + 8 > qn ||
        (qproto != LVS_PROTO_TCP && qproto != LVS_PROTO_UDP))
        return unmatched(e, to_vip, LVS_CNT_ICMP_NO_CONN);
    uint8_t *ql4 = q + qoff;
    uint32_t ql4n = qn - (uint32_t)qoff;
    lvs_addr qsrc = ld_addr6(q + 8), qdst = ld_addr6(q + 24);
    uint16_t qsport = ld16(ql4), qdport = ld16(ql4 + 2);
    lvs_conn *c;
    if (to_vip)
        c = lvs_conn_in_get(e, LVS_AF_INET6, qproto, qdst, qdport, qsrc, qsport);
    else
        c = lvs_conn_out_get(e, LVS_AF_INET6, qproto, qdst, qdport, qsrc, qsport);
    if (!c)
        return unmatched(e, to_vip, LVS_CNT_ICMP_NO_CONN);
    int partial = (k->meta & LVS_META_CSUM_PARTIAL) != 0;
    if (!partial && fold(pseudo6_sum(k->p, n, LVS_PROTO_ICMPV6) + sum16(ic, n)) != 0xffff) {
        e->counters[LVS_CNT_BAD_ICMP_CHECKSUM]++;
        return LVS_VERDICT_DROP;
    }
    if (count_and_step(e, k, c, to_vip) < 0)
        return LVS_VERDICT_DROP;
    /* the quoted packet becomes RS -> client (to a VIP) or client -> VIP, as for IPv4 */
    lvs_addr naddr = to_vip ? c->daddr : c->vaddr;
    uint32_t q_ip_off = to_vip ? 8 : 24;
    st_addr6(k->p + (to_vip ? 24 : 8), naddr);
    uint64_t da = diff128(ld_addr6(q + q_ip_off), naddr);
    st_addr6(q + q_ip_off, naddr);
    fix_quoted_l4(e, c, ql4, ql4n, qproto, to_vip, to_vip ? 0 : 2, to_vip ? c->dport : c->vport,
                  da);
    /* partial: the field holds the pseudo-header sum the device completes; else in full */
    st16(ic + 2, 0);
    uint64_t ps = pseudo6_sum(k->p, n, LVS_PROTO_ICMPV6);
    if (partial)
        st16(ic + 2, fold(ps));
    else
        st16(ic + 2, (uint16_t)~fold(ps + sum16(ic, n)));
    return LVS_VERDICT_FORWARD;
}
