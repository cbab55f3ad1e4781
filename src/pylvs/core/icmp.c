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
 * multicast and class E. */
static int bad_icmp_target(uint32_t a)
{
    return a == 0 || a == 0xffffffffu || (a >> 28) >= 0xe;
}

int lvs_icmp_error_build(lvs_engine *e, uint8_t *p, uint32_t *plen, uint32_t cap, uint32_t tot,
                         uint8_t type, uint8_t code)
{
    if (bad_icmp_target(ld32(p + 12)))
        return -2;
    if (cap < 28 + 28)
        return -1;
    uint32_t quote = tot;
    if (quote > 576 - 28)
        quote = 576 - 28;
    if (quote > cap - 28)
        quote = cap - 28;
    uint32_t src = ld32(p + 16), dst = ld32(p + 12);
    memmove(p + 28, p, quote);
    uint8_t *ip = p;
    memset(ip, 0, 28);
    ip[0] = 0x45;
    ip[1] = 0xc0; /* IPTOS_PREC_INTERNETCONTROL, as Linux's icmp_send */
    st16(ip + 2, (uint16_t)(28 + quote));
    st16(ip + 4, e->ip_id++);
    ip[8] = 64;
    ip[9] = 1;
    st32(ip + 12, src);
    st32(ip + 16, dst);
    st16(ip + 10, ip_csum(ip, 20));
    uint8_t *ic = p + 20;
    ic[0] = type;
    ic[1] = code;
    st16(ic + 2, (uint16_t)~fold(sum16(ic, 8 + quote)));
    *plen = 28 + quote;
    return 0;
}

/* ---- ICMP errors (ip_vs_in_icmp / ip_vs_out_icmp with ip_vs_nat_icmp) ---- */

static int icmp_csum_ok(const uint8_t *ic, uint32_t n)
{
    return fold(sum16(ic, n)) == 0xffff;
}

/*
 * Translate an ICMP error about a connection.  Outer IP, quoted IP and the whole ICMP checksum
 * are recomputed as the kernel does; the quoted TCP/UDP checksum is also updated incrementally
 * when the quote holds it (UDP: always; TCP: 20 bytes quoted), as netfilter's NAT does, so the
 * quote stays a faithful copy of the packet the client or server really sent.
 */
int lvs_icmp_process(lvs_engine *e, pkt *k, int to_vip)
{
    uint8_t *ic = k->l4;
    uint32_t n = k->l4len;
    if (n < 8) {
        if (!to_vip)
            goto not_ours;
        e->counters[LVS_CNT_TRUNCATED]++;
        return LVS_VERDICT_DROP;
    }
    uint8_t type = ic[0];
    if (type != 3 && type != 4 && type != 11) {
        if (!to_vip)
            goto not_ours;
        e->counters[LVS_CNT_ICMP_OTHER]++;
        return LVS_VERDICT_DROP;
    }
    uint8_t *q = ic + 8;
    uint32_t qn = n - 8;
    if (qn < 20 || (q[0] >> 4) != 4 || (q[0] & 15) < 5 || (uint32_t)(q[0] & 15) * 4 + 8 > qn ||
        (ld16(q + 6) & 0x1fff) != 0 || (q[9] != LVS_PROTO_TCP && q[9] != LVS_PROTO_UDP))
        goto no_conn;
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
        goto no_conn;
    /* a CHECKSUM_PARTIAL ICMP message has no checksum yet: nothing to verify */
    int partial = (k->meta & LVS_META_CSUM_PARTIAL) != 0;
    if (!partial && !icmp_csum_ok(ic, n)) {
        e->counters[LVS_CNT_BAD_ICMP_CHECKSUM]++;
        return LVS_VERDICT_DROP;
    }
    if (to_vip) {
        stats_in(e, c, k->tot);
        /* ip_vs_icmp_xmit routes through __ip_vs_get_out_rt, which decrements the TTL */
        if (k->p[8] <= 1) {
            e->counters[LVS_CNT_TTL_EXCEEDED]++;
            return LVS_VERDICT_DROP;
        }
        k->p[8]--;
    } else {
        stats_out(e, c, k->tot);
    }
    uint32_t naddr;
    uint16_t nport;
    uint32_t q_ip_off, q_port_off;
    if (to_vip) {
        /* quoted packet went VIP -> client: it becomes RS -> client */
        naddr = c->daddr.ip;
        nport = c->dport;
        q_ip_off = 12;
        q_port_off = 0;
        st32(k->p + 16, naddr);
    } else {
        /* quoted packet went client -> RS: it becomes client -> VIP */
        naddr = c->vaddr.ip;
        nport = c->vport;
        q_ip_off = 16;
        q_port_off = 2;
        st32(k->p + 12, naddr);
    }
    st16(k->p + 10, 0);
    st16(k->p + 10, ip_csum(k->p, k->ihl));
    uint64_t dq = 0;
    if ((c->flags & LVS_CONN_F_EXT) && qproto == LVS_PROTO_TCP) /* the quote carries translated numbers */
        dq = lvs_seqadj_quote(ql4, ql4n, lvs_ext_of(e, c), to_vip ? LVS_DIR_OUT : LVS_DIR_IN);
    uint64_t da = diff32(ld32(q + q_ip_off), naddr);
    uint64_t dp = diff16(ld16(ql4 + q_port_off), nport);
    st32(q + q_ip_off, naddr);
    st16(q + 10, 0);
    st16(q + 10, ip_csum(q, qihl));
    st16(ql4 + q_port_off, nport);
    if (qproto == LVS_PROTO_UDP && ql4n >= 8) {
        if (ld16(ql4 + 6) != 0) {
            csum_apply(ql4 + 6, da + dp);
            if (ld16(ql4 + 6) == 0)
                st16(ql4 + 6, 0xffff);
        }
    } else if (qproto == LVS_PROTO_TCP && ql4n >= 20) {
        csum_apply(ql4 + 16, da + dp + dq);
    }
    st16(ic + 2, 0);
    /* partial: the field stays the (empty) seed the device sums from; else a full checksum */
    if (!partial)
        st16(ic + 2, (uint16_t)~fold(sum16(ic, n)));
    return LVS_VERDICT_FORWARD;

no_conn:
    if (!to_vip)
        goto not_ours;
    e->counters[LVS_CNT_ICMP_NO_CONN]++;
    return LVS_VERDICT_DROP;
not_ours:
    e->counters[LVS_CNT_PASS_NOT_OURS]++;
    return LVS_VERDICT_PASS;
}

/* ---- the error both families send ---- */

int lvs_icmp_error_for(lvs_engine *e, const pkt *k, uint32_t *plen, uint32_t cap, int which)
{
    if (k->af == LVS_AF_INET6)
        /* RFC 4443: port unreachable is type 1 code 4, hop limit exceeded type 3 code 0 */
        return which == LVS_ERR_PORT_UNREACH ? lvs_icmp6_error_build(k->p, plen, cap, k->tot, 1, 4)
                                             : lvs_icmp6_error_build(k->p, plen, cap, k->tot, 3, 0);
    return which == LVS_ERR_PORT_UNREACH ? lvs_icmp_error_build(e, k->p, plen, cap, k->tot, 3, 3)
                                         : lvs_icmp_error_build(e, k->p, plen, cap, k->tot, 11, 0);
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

/* ICMPv6 errors are sent to unicast senders only (RFC 4443 2.4 e). */
static int bad_icmp6_target(const uint8_t *a)
{
    lvs_addr x = ld_addr6(a);
    return (x.ip6[0] | x.ip6[1] | x.ip6[2] | x.ip6[3]) == 0 || a[0] == 0xff;
}

int lvs_icmp6_error_build(uint8_t *p, uint32_t *plen, uint32_t cap, uint32_t tot, uint8_t type,
                          uint8_t code)
{
    if (bad_icmp6_target(p + 8))
        return -2;
    if (cap < 48 + 48)
        return -1;
    /* RFC 4443 2.4 c: as much of the packet as fits in the 1280-byte minimum MTU */
    uint32_t quote = tot;
    if (quote > 1280 - 48)
        quote = 1280 - 48;
    if (quote > cap - 48)
        quote = cap - 48;
    lvs_addr src = ld_addr6(p + 24), dst = ld_addr6(p + 8);
    memmove(p + 48, p, quote);
    memset(p, 0, 48);
    st_ipv6_hdr(p, 8 + quote, LVS_PROTO_ICMPV6, src, dst);
    uint8_t *ic = p + 40;
    ic[0] = type;
    ic[1] = code;
    uint64_t sum = pseudo6_sum(p, 8 + quote, LVS_PROTO_ICMPV6) + sum16(ic, 8 + quote);
    st16(ic + 2, (uint16_t)~fold(sum));
    *plen = 48 + quote;
    return 0;
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
    if (n < 8) {
        if (!to_vip)
            goto not_ours;
        e->counters[LVS_CNT_TRUNCATED]++;
        return LVS_VERDICT_DROP;
    }
    /* every non-informational type is an error about a packet (ip_vs_in_icmp_v6:
     * ICMPV6_INFOMSG_MASK), Parameter Problem included */
    if (ic[0] & 0x80) {
        if (!to_vip)
            goto not_ours;
        e->counters[LVS_CNT_ICMP_OTHER]++;
        return LVS_VERDICT_DROP;
    }
    uint8_t *q = ic + 8;
    uint32_t qn = n - 8;
    if (qn < LVS_IPV6_HDR || (q[0] >> 4) != 6)
        goto no_conn;
    uint8_t qproto;
    int qoff = lvs_ipv6_skip_ext(q, LVS_IPV6_HDR, qn, q[6], &qproto);
    if (qoff < 0 || (uint32_t)qoff + 8 > qn ||
        (qproto != LVS_PROTO_TCP && qproto != LVS_PROTO_UDP))
        goto no_conn;
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
        goto no_conn;
    int partial = (k->meta & LVS_META_CSUM_PARTIAL) != 0;
    if (!partial && fold(pseudo6_sum(k->p, n, LVS_PROTO_ICMPV6) + sum16(ic, n)) != 0xffff) {
        e->counters[LVS_CNT_BAD_ICMP_CHECKSUM]++;
        return LVS_VERDICT_DROP;
    }
    lvs_addr naddr;
    uint16_t nport;
    uint32_t q_ip_off, q_port_off;
    if (to_vip) {
        stats_in(e, c, k->tot);
        if (k->p[7] <= 1) {
            e->counters[LVS_CNT_TTL_EXCEEDED]++;
            return LVS_VERDICT_DROP;
        }
        k->p[7]--;
        /* quoted packet went VIP -> client: it becomes RS -> client */
        naddr = c->daddr;
        nport = c->dport;
        q_ip_off = 8;
        q_port_off = 0;
        st_addr6(k->p + 24, naddr);
    } else {
        stats_out(e, c, k->tot);
        /* quoted packet went client -> RS: it becomes client -> VIP */
        naddr = c->vaddr;
        nport = c->vport;
        q_ip_off = 24;
        q_port_off = 2;
        st_addr6(k->p + 8, naddr);
    }
    uint64_t dq = 0;
    if ((c->flags & LVS_CONN_F_EXT) && qproto == LVS_PROTO_TCP) /* translated numbers, as v4 */
        dq = lvs_seqadj_quote(ql4, ql4n, lvs_ext_of(e, c), to_vip ? LVS_DIR_OUT : LVS_DIR_IN);
    uint64_t da = diff128(ld_addr6(q + q_ip_off), naddr);
    uint64_t dp = diff16(ld16(ql4 + q_port_off), nport);
    st_addr6(q + q_ip_off, naddr);
    st16(ql4 + q_port_off, nport);
    if (qproto == LVS_PROTO_UDP) {
        if (ld16(ql4 + 6) != 0) {
            csum_apply(ql4 + 6, da + dp);
            if (ld16(ql4 + 6) == 0)
                st16(ql4 + 6, 0xffff);
        }
    } else if (ql4n >= 20) {
        csum_apply(ql4 + 16, da + dp + dq);
    }
    /* partial: the field holds the pseudo-header sum the device completes; else in full */
    st16(ic + 2, 0);
    uint64_t ps = pseudo6_sum(k->p, n, LVS_PROTO_ICMPV6);
    if (partial)
        st16(ic + 2, fold(ps));
    else
        st16(ic + 2, (uint16_t)~fold(ps + sum16(ic, n)));
    return LVS_VERDICT_FORWARD;

no_conn:
    if (!to_vip)
        goto not_ours;
    e->counters[LVS_CNT_ICMP_NO_CONN]++;
    return LVS_VERDICT_DROP;
not_ours:
    e->counters[LVS_CNT_PASS_NOT_OURS]++;
    return LVS_VERDICT_PASS;
}
