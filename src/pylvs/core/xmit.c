/*
 * xmit.c — NAT transmit (ip_vs_nat_xmit): the TTL step, the address and port rewrite with
 * RFC 1624 incremental checksums (docs/performance.md#checksums), and UDP's zero-checksum rule.
 */
#include "seqadj.h"

static inline uint32_t l4_csum_off(uint8_t proto)
{
    return proto == LVS_PROTO_TCP ? 16 : 6;
}

/* Full UDP checksum for a datagram that carried none (ip_vs_proto_udp: 0 -> computed). */
static void udp_full_csum(const pkt *k)
{
    uint32_t ulen = ld16(k->l4 + 4);
    if (ulen < 8 || ulen > k->l4len)
        ulen = k->l4len;
    st16(k->l4 + 6, 0);
    uint64_t s = sum16(k->l4, ulen);
    s += (ld32(k->p + 12) >> 16) + (ld32(k->p + 12) & 0xffff);
    s += (ld32(k->p + 16) >> 16) + (ld32(k->p + 16) & 0xffff);
    s += LVS_PROTO_UDP + ulen;
    uint16_t cs = (uint16_t)~fold(s);
    st16(k->l4 + 6, cs ? cs : 0xffff);
}

/* Rewrite one address (IP offset 12 = src, 16 = dst) and one port (L4 offset 0 / 2). */
static void nat_rewrite(pkt *k, uint32_t ip_off, uint32_t naddr, uint32_t port_off,
                        uint16_t nport)
{
    uint8_t *p = k->p;
    uint32_t oaddr = ld32(p + ip_off);
    uint16_t oport = ld16(k->l4 + port_off);
    uint64_t da = diff32(oaddr, naddr);
    uint64_t dp = diff16(oport, nport);
    st32(p + ip_off, naddr);
    csum_apply(p + 10, da);
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
    if (p[8] <= 1) {
        /* decrement_ttl (via ip_vs_nat_xmit): ICMP time exceeded to the sender, about the
         * packet as it arrived (the kernel checks the TTL before mangling) */
        e->counters[LVS_CNT_TTL_EXCEEDED]++;
        return lvs_icmp_error_build(e, p, plen, cap, k->tot, 11, 0) < 0 ? LVS_VERDICT_DROP
                                                                        : LVS_VERDICT_REPLY;
    }
    p[8]--;
    csum_apply(p + 10, diff16((uint16_t)((p[8] + 1) << 8 | p[9]), (uint16_t)(p[8] << 8 | p[9])));
    nat_rewrite(k, 16, c->daddr, 2, c->dport);
    if (c->flags & LVS_CONN_F_EXT)
        seq_adjust(e, k, c, LVS_DIR_IN);
    return LVS_VERDICT_FORWARD;
}

void lvs_nat_xmit_out(lvs_engine *e, pkt *k, const lvs_conn *c)
{
    nat_rewrite(k, 12, c->vaddr, 0, c->vport);
    if (c->flags & LVS_CONN_F_EXT)
        seq_adjust(e, k, c, LVS_DIR_OUT);
}
