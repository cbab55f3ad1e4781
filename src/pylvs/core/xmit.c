/*
 * xmit.c — NAT transmit (ip_vs_nat_xmit, ip_vs_nat_xmit_v6): the TTL / hop-limit step, the
 * address and port rewrite with RFC 1624 incremental checksums (docs/performance.md#checksums),
 * and UDP's zero-checksum rule.  IPv6 has no header checksum: only the L4 checksum follows the
 * pseudo-header's 128-bit address.
 */
#include "seqadj.h"

static inline uint32_t l4_csum_off(uint8_t proto)
{
    return proto == LVS_PROTO_TCP ? 16 : 6;
}

/* Full UDP checksum for a datagram that carried none (ip_vs_proto_udp: 0 -> computed; over
 * IPv6 a zero checksum is not even allowed, RFC 8200 8.1). */
static void udp_full_csum(const pkt *k)
{
    uint32_t ulen = ld16(k->l4 + 4);
    if (ulen < 8 || ulen > k->l4len)
        ulen = k->l4len;
    st16(k->l4 + 6, 0);
    uint64_t s = sum16(k->l4, ulen);
    if (k->af == LVS_AF_INET6) {
        s += pseudo6_sum(k->p, ulen, LVS_PROTO_UDP);
    } else {
        s += (ld32(k->p + 12) >> 16) + (ld32(k->p + 12) & 0xffff);
        s += (ld32(k->p + 16) >> 16) + (ld32(k->p + 16) & 0xffff);
        s += LVS_PROTO_UDP + ulen;
    }
    uint16_t cs = (uint16_t)~fold(s);
    st16(k->l4 + 6, cs ? cs : 0xffff);
}

/* Rewrite one address (the source when src, else the destination) and one port (L4 offset 0 /
 * 2).  The L4 checksum covers the address through the pseudo-header in both families. */
static void nat_rewrite(pkt *k, int src, lvs_addr naddr, uint32_t port_off, uint16_t nport)
{
    uint8_t *p = k->p;
    uint64_t da;
    if (k->af == LVS_AF_INET6) {
        uint8_t *a = p + (src ? 8 : 24);
        da = diff128(ld_addr6(a), naddr);
        st_addr6(a, naddr);
    } else {
        uint8_t *a = p + (src ? 12 : 16);
        da = diff32(ld32(a), naddr.ip);
        st32(a, naddr.ip);
        csum_apply(p + 10, da);
    }
    uint16_t oport = ld16(k->l4 + port_off);
    uint64_t dp = diff16(oport, nport);
    st16(k->l4 + port_off, nport);
    uint8_t *cf = k->l4 + l4_csum_off(k->proto);
    if (k->meta & LVS_META_CSUM_PARTIAL) {
        csum_apply_partial(cf, da);
    } else if (k->proto == LVS_PROTO_UDP && ld16(cf) == 0) {
        udp_full_csum(k);
    } else {
        csum_apply(cf, da + dp);
        if (k->proto == LVS_PROTO_UDP && ld16(cf) == 0)
            st16(cf, 0xffff);
    }
}

/* A conn with a side record (synproxy, an application helper): its sequence translation.  A
 * CHECKSUM_PARTIAL packet's field stays as it is: the device sums the header later. */
static void seq_adjust(lvs_engine *e, pkt *k, const lvs_conn *c, int dir)
{
    if (k->proto != LVS_PROTO_TCP)
        return;
    uint64_t d = lvs_seqadj_tcp(k->l4, (uint32_t)(k->l4[12] >> 4) * 4, lvs_ext_of(e, c), dir);
    if (!(k->meta & LVS_META_CSUM_PARTIAL))
        csum_apply(k->l4 + 16, d);
}

int lvs_nat_xmit_in(lvs_engine *e, pkt *k, const lvs_conn *c, uint32_t *plen, uint32_t cap)
{
    uint8_t *p = k->p;
    if (k->af == LVS_AF_INET6) {
        /* ip6_forward's hop-limit check, before any mangling: ICMPv6 time exceeded */
        if (p[7] <= 1) {
            e->counters[LVS_CNT_TTL_EXCEEDED]++;
            return lvs_icmp_error_for(e, k, plen, cap, LVS_ERR_TIME_EXCEEDED) < 0
                       ? LVS_VERDICT_DROP
                       : LVS_VERDICT_REPLY;
        }
        p[7]--;
    } else {
        if (p[8] <= 1) {
            /* decrement_ttl (via ip_vs_nat_xmit): ICMP time exceeded to the sender, about the
             * packet as it arrived (the kernel checks the TTL before mangling) */
            e->counters[LVS_CNT_TTL_EXCEEDED]++;
            return lvs_icmp_error_for(e, k, plen, cap, LVS_ERR_TIME_EXCEEDED) < 0
                       ? LVS_VERDICT_DROP
                       : LVS_VERDICT_REPLY;
        }
        p[8]--;
        csum_apply(p + 10,
                   diff16((uint16_t)((p[8] + 1) << 8 | p[9]), (uint16_t)(p[8] << 8 | p[9])));
    }
    nat_rewrite(k, 0, c->daddr, 2, c->dport);
    if (c->flags & LVS_CONN_F_EXT)
        seq_adjust(e, k, c, LVS_DIR_IN);
    return LVS_VERDICT_FORWARD;
}

void lvs_nat_xmit_out(lvs_engine *e, pkt *k, const lvs_conn *c)
{
    nat_rewrite(k, 1, c->vaddr, 0, c->vport);
    if (c->flags & LVS_CONN_F_EXT)
        seq_adjust(e, k, c, LVS_DIR_OUT);
}
