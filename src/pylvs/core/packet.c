/*
 * packet.c — packet entry (ip_vs_core.c): the batch loop the dataplane calls, parsing (IPv4 and
 * IPv6; the extension-header walk is in icmp.c, shared with quoted packets), the
 * connection lookup in either direction, and scheduling a new connection (with persistence)
 * (docs/ipvs.md#lookups to #new-connections, #persistence).  The TCP state machine is in proto_tcp.c, the NAT rewrite in
 * xmit.c, ICMP in icmp.c.
 *
 * What happens to every kind of input (counter names as in lvs_counter_names):
 *
 *  input                                              verdict  counter
 *  -------------------------------------------------  -------  --------------------------
 *  shorter than 20 bytes                              DROP     truncated
 *  IP version != 4                                    DROP     bad_version
 *  IHL < 5                                            DROP     bad_ihl
 *  IHL*4 > packet length                              DROP     truncated
 *  total length < IHL*4 or > packet length            DROP     bad_total_length
 *  IP header checksum wrong                           DROP     bad_ip_checksum
 *  fragment (MF set or offset != 0)                   DROP     fragment
 *  TCP/UDP header cut short (or TCP doff < 5)         DROP     truncated
 *  IP options                                         handled (L4 found through IHL)
 *  bytes after the IP total length (padding)          trimmed (len = total length), as the
 *                                                     kernel's ip_rcv does
 *  batch mark with a fwmark service of its family     to a VIP (that service first)
 *  other protocol, to a VIP                           DROP     unknown_proto
 *  other protocol, elsewhere                          PASS     not_ours
 *  TCP/UDP to a VIP, no conn, no service on the port  DROP     no_service
 *    (a port-0 service with a port list takes only those ports)
 *  TCP to a service, no conn, not SYN (or SYN+RST)    DROP     tcp_no_syn
 *    ... with sloppy_tcp: any packet without RST       scheduled (IPVS's sloppy_tcp;
 *                                                              not synproxy services)
 *  synproxy service, no conn: a SYN                  REPLY    synproxy_syn (cookie SYN-ACK)
 *    ... an ACK with a valid cookie                   REPLY    synproxy_ack_ok (SYN to the
 *                                                              server; the ACK is kept)
 *    ... an ACK with a forged cookie / too old one    DROP     synproxy_bad_cookie /
 *                                                              synproxy_expired_cookie
 *    ... any other TCP packet                         DROP     tcp_no_syn
 *  any TCP service while syncookies is engaged         as a synproxy service, counted as
 *    (a bare ACK: also for 120 s after it disengages)  syncookie_syn, syncookie_ack_ok,
 *                                                     syncookie_bad/expired_cookie
 *                                                     (docs/ipvs.md#syn-cookies)
 *  synproxy conn waiting for its server: see synproxy.c  (synproxy_pending_drop; client data
 *    kept for the server is a DROP verdict counted as synproxy_held)
 *  new conn, drop_packet defence engaged (1 in rate)  DROP     defense_drop_packet
 *  new conn, table full and nothing embryonic to      DROP     table_full
 *  evict (docs/ipvs.md#flood-defence)
 *  new conn, scheduler finds no dest                  REPLY    no_dest (ICMP port unreach)
 *    ... but stride too small for the reply           DROP     reply_short_stride
 *    ... from 0.0.0.0, broadcast, multicast, class E  DROP     (no_dest only; no ICMP)
 *  conn whose dest was removed (in direction)         DROP     dest_unavailable
 *  in direction, TTL <= 1                             REPLY    ttl_exceeded (ICMP time
 *                                                              exceeded from the VIP)
 *    ... an ICMP error with TTL <= 1                  DROP     ttl_exceeded (no error about
 *                                                              an error)
 *  TCP/UDP not to a VIP and no out conn               PASS     not_ours
 *    ... with sloppy_tcp/udp, from an available dest   FORWARD  sloppy_reply (entry created
 *        of a service (TCP: not an RST)                         from the reply, see below)
 *  ICMP error (3, 4, 11) matching a conn              FORWARD  (translated both ways; the
 *                                                              in direction also takes the
 *                                                              TTL step, as ip_vs_icmp_xmit)
 *    ... with a wrong ICMP checksum                   DROP     bad_icmp_checksum
 *        (not checked under LVS_META_CSUM_PARTIAL, where the field is left 0 for the device)
 *  ICMP shorter than its 8-byte header, to a VIP      DROP     truncated
 *  ICMP error to a VIP without a conn / unparsable    DROP     icmp_no_conn
 *  other ICMP to a VIP (echo ...)                     DROP     icmp_other
 *  any ICMP not to a VIP and not matching             PASS     not_ours
 *
 *  IPv6 (version nibble 6; docs/ipvs.md#ipv6), where it differs from the above:
 *  shorter than 40 bytes                              DROP     truncated
 *  payload length 0 (jumbogram) or past the packet    DROP     bad_total_length
 *  a Fragment header anywhere in the chain            DROP     fragment
 *  more than 8 extension headers, a header running    DROP     ipv6_ext_header
 *    past the packet, hop-by-hop not first, a
 *    routing header with segments left
 *  hop-by-hop, routing (segments left 0), dest opts   handled (L4 found after them)
 *  bytes after 40 + payload length                    trimmed
 *  new conn, no dest                                  REPLY    no_dest (ICMPv6 dest unreach,
 *                                                              code 4; none to :: or multicast)
 *  in direction, hop limit <= 1                       REPLY    ttl_exceeded (ICMPv6 time
 *                                                              exceeded from the VIP)
 *  ICMPv6 error (type < 128) matching a conn          FORWARD  translated both ways
 *  ICMPv6 informational (echo, ND) to a VIP           DROP     icmp_other
 *  other ICMPv6, as for ICMP above
 *
 * VIP traffic never passes unchanged: the TUN routes VIPs into the engine, so a passed packet
 * would come straight back.  Out-direction packets with no conn pass, as in the kernel.
 */
#include <string.h>

#include "lock.h"
#include "packet.h"

/* UDP has one state; TCP's machine is in proto_tcp.c. */
static inline void state_transition(lvs_engine *e, lvs_conn *c, int dir, uint8_t th_flags)
{
    if (c->proto == LVS_PROTO_TCP) {
        lvs_tcp_transition(e, c, dir, th_flags);
    } else {
        c->state = LVS_UDP_S_NORMAL;
        c->timeout = e->udp_timeout;
        /* a reply proves the flow: its template is ASSURED (drop_entry keeps it) */
        if (dir == LVS_DIR_OUT && c->control != LVS_NO_SLOT &&
            !(lvs_conn_at(e, c->control)->flags & LVS_CONN_F_ASSURED))
            lvs_conn_assure(e, c);
    }
}

/* ---- scheduling (ip_vs_schedule, ip_vs_sched_persist) ---- */

enum { SCHED_OK, SCHED_NODEST, SCHED_FULL };

/* The persistence template's client key: the client address under the service's netmask (an
 * IPv6 service's netmask is a prefix length, ipv6_addr_prefix in ip_vs_sched_persist). */
static lvs_addr persist_net(const lvs_service *svc, lvs_addr saddr)
{
    if (svc->af != LVS_AF_INET6)
        return lvs_addr4(saddr.ip & svc->netmask);
    uint32_t plen = svc->netmask;
    for (int i = 0; i < 4; i++, plen = plen > 32 ? plen - 32 : 0)
        saddr.ip6[i] &= plen >= 32 ? 0xffffffffu : plen == 0 ? 0 : ~(0xffffffffu >> plen);
    return saddr;
}

static int schedule(lvs_engine *e, lvs_service *svc, const pkt *k, double now, lvs_conn **out)
{
    lvs_sched_key key = {k->saddr, k->daddr, k->sport, k->dport, k->proto, k->af};
    uint8_t proto = k->proto;
    uint16_t dport = k->dport;
    lvs_dest *dest;
    lvs_conn *ct = NULL;
    int fwm = svc->proto == LVS_PROTO_FWM;
    if (svc->flags & LVS_SVC_F_PERSISTENT) {
        lvs_addr snet = persist_net(svc, k->saddr);
        uint16_t tport = (svc->port != 0 && dport == svc->port) ? svc->port : 0;
        /* ip_vs_sched_persist: a fwmark service's template is (IPPROTO_IP, snet, 0, mark, 0),
         * one per client network across every port and protocol the mark covers */
        uint8_t tproto = fwm ? LVS_PROTO_FWM : proto;
        lvs_addr taddr = fwm ? svc->addr : k->daddr;
        ct = lvs_tmpl_get(e, k->af, tproto, snet, taddr, tport);
        if (ct) {
            lvs_dest *td = ct->dest;
            int valid = td && (td->flags & LVS_DEST_F_AVAILABLE) &&
                        !(e->expire_quiescent_template && td->weight == 0);
            if (!valid) {
                /* neutralise: it stops matching and dies on its own timer */
                lvs_conn_unhash_template(e, ct);
                ct = NULL;
            }
        }
        if (!ct) {
            dest = svc->sched && svc->sched->schedule ? svc->sched->schedule(svc, &key, now)
                                                      : NULL;
            if (!dest)
                return SCHED_NODEST;
            lvs_conn_key tk = {k->af,   tproto, snet, taddr, dest->addr, 0, tport,
                               svc->port != 0 ? dest->port : 0};
            if (!lvs_defense_make_room(e, now))
                return SCHED_FULL;
            ct = lvs_conn_new(e, &tk, LVS_CONN_F_TEMPLATE | LVS_CONN_F_INACTIVE, dest, now);
            if (!ct)
                return SCHED_FULL;
            ct->timeout = svc->timeout;
            /* armed at once: if the conn below fails, ip_vs_conn_put(ct) still re-arms it */
            lvs_conn_arm(e, ct, now);
        } else {
            dest = ct->dest;
        }
    } else {
        dest = svc->sched && svc->sched->schedule ? svc->sched->schedule(svc, &key, now) : NULL;
        if (!dest)
            return SCHED_NODEST;
    }
    uint16_t rport = dport;
    if (dest->port != 0 && (svc->port == 0 ? 0 : dport == svc->port))
        rport = dest->port;
    /* ip_vs_schedule: without persistence a fwmark service's dest port wins when set; port 0
     * keeps the client's destination port */
    if (fwm && !ct && dest->port != 0)
        rport = dest->port;
    lvs_conn_key ck = {k->af, proto, k->saddr, k->daddr, dest->addr, k->sport, dport, rport};
    /* the template is pinned while room is made, so evicting the conn it controls cannot
     * take it along */
    if (ct)
        ct->n_control++;
    int room = lvs_defense_make_room(e, now);
    if (ct)
        ct->n_control--;
    lvs_conn *c = room ? lvs_conn_new(e, &ck, LVS_CONN_F_INACTIVE, dest, now) : NULL;
    if (!c) {
        if (ct)
            lvs_conn_arm(e, ct, now);
        return SCHED_FULL;
    }
    if (ct) {
        c->control = ct->slot;
        ct->n_control++;
        lvs_conn_arm(e, ct, now);
    }
    if (proto == LVS_PROTO_TCP) {
        lvs_embryo_push(e, c);
        lvs_defense_embryo_added(e);
    }
    stats_conn(e, dest);
    *out = c;
    return SCHED_OK;
}

/* ---- the TCP/UDP path ---- */

/* conn_reuse_mode: a new SYN on a TIME_WAIT or CLOSE entry (or one whose dest is quiesced
 * under expire_nodest_conn) is scheduled afresh (docs/ipvs.md#new-connections step 2; CLOSE is
 * in the kernel's is_new_conn_expected since 4.x: after an RST the port is soon reused). */
static int conn_reusable(const lvs_engine *e, const lvs_conn *c)
{
    if (c->n_control != 0)
        return 0;
    if (e->expire_nodest_conn && c->dest && c->dest->weight == 0)
        return 1;
    return c->control == LVS_NO_SLOT &&
           (c->state == LVS_TCP_S_TIME_WAIT || c->state == LVS_TCP_S_CLOSE ||
            ((e->conn_reuse_mode & 2) && c->state == LVS_TCP_S_FIN_WAIT &&
             (c->flags & LVS_CONN_F_NOOUTPUT)));
}

/* SYN cookies for a TCP service without synproxy (defense.c, syncookies): a bare SYN while
 * engaged, a bare ACK while cookie ACKs are accepted go to the SYN proxy; with sloppy_tcp only
 * an ACK whose cookie is valid does (any other is a flow ECMP moved here, scheduled as
 * before). */
static int cookie_packet(lvs_engine *e, const pkt *k, double now)
{
    if (k->proto != LVS_PROTO_TCP || !lvs_defense_cookie_window(e, now))
        return 0;
    uint8_t f = k->th_flags & (TH_SYN | TH_ACK | TH_RST | TH_FIN);
    if (f == TH_SYN)
        return e->def.cookies_on;
    if (f != TH_ACK)
        return 0;
    return !e->sloppy_tcp || lvs_synproxy_cookie_ack(e, k, now);
}

static int do_in(lvs_engine *e, pkt *k, uint32_t *plen, uint32_t cap, double now)
{
    lvs_conn *c = lvs_conn_in_get(e, k->af, k->proto, k->saddr, k->sport, k->daddr, k->dport);
    int syn = k->proto == LVS_PROTO_TCP && (k->th_flags & TH_SYN);
    /* The SYN of a synproxy service (of any TCP service while syncookies is on) may have been
     * answered in XDP (dataplane/bpf/): the client's cookie ACK is then the first packet the
     * engine sees of the new connection, and it reuses the old entry exactly as the SYN would
     * have. */
    if (c && e->conn_reuse_mode &&
        (syn || (c->flags & LVS_CONN_F_SYNPROXY) || lvs_defense_cookie_window(e, now)) &&
        conn_reusable(e, c) && (syn || lvs_synproxy_cookie_ack(e, k, now))) {
        lvs_conn_expire_now(e, c, now);
        c = NULL;
    }
    /* A cookie ACK on an entry still in SYN_RECV: the client's SYN made it before syncookies
     * engaged, the server's SYN-ACK was lost, and the retransmitted SYN got a cookie (from XDP,
     * which cannot see the entry).  A valid cookie proves we answered that very SYN: the
     * handshake is ours now, and the server's half-open one is abandoned; riding the entry,
     * the ACK would reach a server that never saw the cookie and resets the client. */
    if (c && !syn && c->state == LVS_TCP_S_SYN_RECV && c->n_control == 0 &&
        lvs_defense_cookie_window(e, now) && lvs_synproxy_cookie_ack(e, k, now)) {
        lvs_conn_expire_now(e, c, now);
        c = NULL;
    }
    if (!c && e->n_no_cport && k->proto == LVS_PROTO_TCP && k->af == LVS_AF_INET) {
        /* an FTP data connection to the port a 227/229 announced (ip_vs_conn_in_get retries
         * with cport 0; ip_vs_nat_xmit fills the port in) */
        c = lvs_conn_in_get(e, k->af, k->proto, k->saddr, 0, k->daddr, k->dport);
        if (c && (c->flags & LVS_CONN_F_NO_CPORT))
            lvs_conn_fill_cport(e, c, k->sport);
        else
            c = NULL;
    }
    if (!c) {
        lvs_service *svc = k->fwm_svc;
        if (!svc)
            svc = lvs_svc_lookup(e, k->af, k->proto, k->daddr, k->dport);
        if (!svc) {
            svc = lvs_svc_lookup(e, k->af, k->proto, k->daddr, 0);
            if (svc && !lvs_svc_takes_port(svc, k->dport))
                svc = NULL;
        }
        if (!svc || (svc->port == 0 && svc->nranges == 0 && svc->proto != LVS_PROTO_FWM &&
                     !(svc->flags & LVS_SVC_F_PERSISTENT))) {
            e->counters[LVS_CNT_NO_SERVICE]++;
            return LVS_VERDICT_DROP;
        }
        lvs_sp_accept spa;
        int proxied = 0;
        int cookies = !(svc->flags & LVS_SVC_F_SYNPROXY) && cookie_packet(e, k, now);
        if ((svc->flags & LVS_SVC_F_SYNPROXY) || cookies) {
            /* the director answers the handshake itself (synproxy.c) */
            int v = lvs_synproxy_new(e, k, plen, cap, now, &spa,
                                     cookies ? LVS_CNT_SYNCOOKIE_SYN : LVS_CNT_SYNPROXY_SYN);
            if (v != LVS_SP_ACCEPT)
                return v;
            proxied = 1;
        } else if (k->proto == LVS_PROTO_TCP &&
                   ((!syn && !e->sloppy_tcp) || (k->th_flags & TH_RST))) {
            /* tcp_conn_schedule: with sloppy_tcp a packet of a flow another director
             * scheduled (ECMP moved it here) is scheduled too; mh/sh pick the same server */
            e->counters[LVS_CNT_TCP_NO_SYN]++;
            return LVS_VERDICT_DROP;
        }
        if (lvs_defense_todrop(e)) {
            e->counters[LVS_CNT_DEFENSE_DROP_PACKET]++;
            return LVS_VERDICT_DROP;
        }
        int r = schedule(e, svc, k, now, &c);
        if (r == SCHED_OK && k->proto == LVS_PROTO_TCP && !syn && !proxied)
            e->counters[LVS_CNT_SLOPPY_IN]++;
        if (r == SCHED_FULL) {
            e->counters[LVS_CNT_TABLE_FULL]++;
            return LVS_VERDICT_DROP;
        }
        if (r == SCHED_NODEST) {
            e->counters[LVS_CNT_NO_DEST]++;
            if (proxied) /* the client believes it is connected: a reset, not an ICMP */
                return lvs_synproxy_refuse(e, k, plen);
            int built = lvs_icmp_error_for(e, k, plen, cap, LVS_ERR_PORT_UNREACH);
            if (built < 0) {
                if (built == -1)
                    e->counters[LVS_CNT_REPLY_SHORT_STRIDE]++;
                return LVS_VERDICT_DROP;
            }
            return LVS_VERDICT_REPLY;
        }
        if (proxied)
            return lvs_synproxy_open(e, k, c, &spa, plen, cap, now);
    }
    if (c->flags & LVS_CONN_F_SP_WAIT)
        return lvs_synproxy_in_wait(e, k, c, plen, cap, now);
    if (!c->dest || !(c->dest->flags & LVS_DEST_F_AVAILABLE)) {
        e->counters[LVS_CNT_DEST_UNAVAILABLE]++;
        if (e->expire_nodest_conn)
            lvs_conn_expire_now(e, c, now);
        return LVS_VERDICT_DROP;
    }
    stats_in(e, c, k->tot);
    state_transition(e, c, LVS_DIR_IN, k->th_flags);
    if (k->proto == LVS_PROTO_TCP && lvs_ftp_ctl(c))
        lvs_ftp_in(e, k, c, now);
    int verdict = lvs_nat_xmit_in(e, k, c, plen, cap);
    uint32_t pkts = ++c->in_pkts;
    if (e->sync_master)
        lvs_sync_conn(e, c, pkts);
    lvs_conn_arm(e, c, now);
    if (e->offload.on)
        lvs_offload_offer(e, c);
    return verdict;
}

/*
 * Sloppy reply pickup (no IPVS counterpart: on one box the reply always finds the entry).
 * With several active directors the real servers' return route may hash a reply to a
 * director that never saw the flow.  A reply from an available dest of a service is the
 * flow's own reply: the client is its destination and the VIP is the service's, so the
 * entry is created from it.  The first service (in insertion order) holding the dest wins;
 * with mh/sh the directors that see the client's packets pick that same dest.
 */
static lvs_conn *sloppy_reply(lvs_engine *e, pkt *k, double now)
{
    if (k->proto == LVS_PROTO_TCP ? !e->sloppy_tcp || (k->th_flags & TH_RST) : !e->sloppy_udp)
        return NULL;
    for (uint32_t i = 0; i < e->nsvcs; i++) {
        lvs_service *svc = e->svcs[i];
        /* a SYN proxy's entries carry sequence deltas a reply cannot tell */
        if (svc->proto != k->proto || svc->af != k->af || (svc->flags & LVS_SVC_F_SYNPROXY))
            continue;
        for (lvs_dest *d = svc->destinations; d; d = d->next) {
            uint16_t rport = d->port ? d->port : svc->port;
            if (!lvs_addr_eq(d->addr, k->saddr) || rport != k->sport ||
                !(d->flags & LVS_DEST_F_AVAILABLE))
                continue;
            /* a port-0 service forwards every port unchanged: the reply's port is the VIP's */
            uint16_t vport = svc->port ? svc->port : k->sport;
            lvs_conn_key ck = {k->af, k->proto, k->daddr, svc->addr, d->addr,
                               k->dport, vport, k->sport};
            lvs_conn *c = lvs_conn_new(e, &ck, LVS_CONN_F_INACTIVE, d, now);
            if (!c) {
                e->counters[LVS_CNT_TABLE_FULL]++;
                return NULL;
            }
            stats_conn(e, d);
            e->counters[LVS_CNT_SLOPPY_REPLY]++;
            return c;
        }
    }
    return NULL;
}

static int do_out(lvs_engine *e, pkt *k, uint32_t *plen, uint32_t cap, double now)
{
    lvs_conn *c = lvs_conn_out_get(e, k->af, k->proto, k->saddr, k->sport, k->daddr, k->dport);
    if (!c)
        c = sloppy_reply(e, k, now);
    if (!c) {
        e->counters[LVS_CNT_PASS_NOT_OURS]++;
        return LVS_VERDICT_PASS;
    }
    if (c->flags & LVS_CONN_F_SP_WAIT)
        return lvs_synproxy_out_wait(e, k, c, plen, cap, now);
    if (k->proto == LVS_PROTO_TCP && lvs_ftp_ctl(c))
        lvs_ftp_out(e, k, c, plen, cap, now); /* before NAT, as ip_vs_app_pkt_out */
    lvs_nat_xmit_out(e, k, c);
    stats_out(e, c, k->tot);
    state_transition(e, c, LVS_DIR_OUT, k->th_flags);
    lvs_conn_arm(e, c, now);
    if (e->offload.on)
        lvs_offload_offer(e, c);
    return LVS_VERDICT_FORWARD;
}

/* ---- one packet ---- */

/* PARSE_OK, or the counter of the drop (the parse helpers below). */
#define PARSE_OK (-1)

/* A TCP/UDP header's bounds, then its ports and flags. */
static int parse_ports(pkt *k)
{
    if (k->proto == LVS_PROTO_TCP) {
        if (k->l4len < 20 || (k->l4[12] >> 4) < 5 || (uint32_t)(k->l4[12] >> 4) * 4 > k->l4len)
            return LVS_CNT_TRUNCATED;
        k->th_flags = k->l4[13];
    } else if (k->l4len < 8) {
        return LVS_CNT_TRUNCATED;
    }
    k->sport = ld16(k->l4);
    k->dport = ld16(k->l4 + 2);
    return PARSE_OK;
}

/* Bounds of the TCP/UDP header, ports, then the direction (shared by both families). */
static int process_l4(lvs_engine *e, pkt *k, int to_vip, uint32_t *plen, uint32_t cap,
                      double now)
{
    if (k->proto != LVS_PROTO_TCP && k->proto != LVS_PROTO_UDP) {
        if (to_vip) {
            e->counters[LVS_CNT_UNKNOWN_PROTO]++;
            return LVS_VERDICT_DROP;
        }
        e->counters[LVS_CNT_PASS_NOT_OURS]++;
        return LVS_VERDICT_PASS;
    }
    int bad = parse_ports(k);
    if (bad != PARSE_OK) {
        e->counters[bad]++;
        return LVS_VERDICT_DROP;
    }
    if (to_vip)
        return do_in(e, k, plen, cap, now);
    return do_out(e, k, plen, cap, now);
}

/* A marked packet of a fwmark service is inbound whatever its address: ip_vs_in looks the
 * service up by (family, skb->mark) first. */
static lvs_service *fwm_service(lvs_engine *e, uint8_t af, uint32_t mark)
{
    return mark && e->nfwm_svcs ? lvs_svc_lookup(e, af, LVS_PROTO_FWM, lvs_addr4(mark), 0)
                                : NULL;
}

/* An IPv6 header and its extension headers: k and *to_vip filled, or the counter of the
 * drop.  Reads the engine only (the VIP set, the fwmark services). */
static int parse_v6(lvs_engine *e, uint8_t *p, uint32_t *plen, uint8_t meta, uint32_t mark,
                    pkt *k, int *to_vip)
{
    uint32_t len = *plen;
    if (len < LVS_IPV6_HDR)
        return LVS_CNT_TRUNCATED;
    /* payload length 0 is a jumbogram (RFC 2675): never on a TUN of normal MTU */
    uint32_t tot = LVS_IPV6_HDR + ld16(p + 4);
    if (tot == LVS_IPV6_HDR || tot > len)
        return LVS_CNT_BAD_TOTAL_LENGTH;
    *plen = tot;
    k->p = p;
    k->tot = tot;
    k->af = LVS_AF_INET6;
    k->meta = meta;
    k->th_flags = 0;
    k->saddr = ld_addr6(p + 8);
    k->daddr = ld_addr6(p + 24);
    k->fwm_svc = fwm_service(e, LVS_AF_INET6, mark);
    *to_vip = k->fwm_svc != NULL || lvs_is_vip6(e, k->daddr);
    int off = lvs_ipv6_skip_ext(p, LVS_IPV6_HDR, tot, p[6], &k->proto);
    if (off < 0) {
        /* a fragment or a chain we will not follow: ours or not, nothing can be done with
         * it (the kernel's ip6_forward would still route it, but it cannot reach a VIP's
         * service without reassembly, and a pass would loop VIP traffic) */
        return off == -2 ? LVS_CNT_FRAGMENT : LVS_CNT_BAD_EXT_HEADER;
    }
    k->ihl = (uint32_t)off;
    k->l4 = p + off;
    k->l4len = tot - (uint32_t)off;
    return PARSE_OK;
}

/* An IPv4 header: k and *to_vip filled, or the counter of the drop.  Reads the engine only
 * (the VIP set, the fwmark services). */
static int parse_v4(lvs_engine *e, uint8_t *p, uint32_t *plen, uint8_t meta, uint32_t mark,
                    pkt *k, int *to_vip)
{
    uint32_t len = *plen;
    if (len < 20)
        return LVS_CNT_TRUNCATED;
    if ((p[0] >> 4) != 4)
        return LVS_CNT_BAD_VERSION;
    uint32_t ihl = (uint32_t)(p[0] & 15) * 4;
    if (ihl < 20)
        return LVS_CNT_BAD_IHL;
    if (ihl > len)
        return LVS_CNT_TRUNCATED;
    uint32_t tot = ld16(p + 2);
    if (tot < ihl || tot > len)
        return LVS_CNT_BAD_TOTAL_LENGTH;
    if (fold(sum16(p, ihl)) != 0xffff)
        return LVS_CNT_BAD_IP_CHECKSUM;
    if (ld16(p + 6) & 0x3fff)
        return LVS_CNT_FRAGMENT;
    /* link-layer padding (an AF_PACKET frame of 60 bytes) is cut off, as ip_rcv trims */
    *plen = tot;
    k->p = p;
    k->ihl = ihl;
    k->tot = tot;
    k->l4 = p + ihl;
    k->l4len = tot - ihl;
    k->af = LVS_AF_INET;
    k->proto = p[9];
    k->saddr = lvs_addr4(ld32(p + 12));
    k->daddr = lvs_addr4(ld32(p + 16));
    k->meta = meta;
    k->th_flags = 0;
    k->fwm_svc = fwm_service(e, LVS_AF_INET, mark);
    *to_vip = k->fwm_svc != NULL || lvs_is_vip(e, k->daddr.ip);
    return PARSE_OK;
}

/* Either family by the version nibble; *plen loses any padding past the IP length. */
static int parse_ip(lvs_engine *e, uint8_t *p, uint32_t *plen, uint8_t meta, uint32_t mark,
                    pkt *k, int *to_vip)
{
    if (*plen >= 1 && (p[0] >> 4) == 6)
        return parse_v6(e, p, plen, meta, mark, k, to_vip);
    return parse_v4(e, p, plen, meta, mark, k, to_vip);
}

static int process_one(lvs_engine *e, uint8_t *p, uint32_t *plen, uint32_t cap, uint8_t meta,
                       uint32_t mark, double now)
{
    pkt k;
    int to_vip;
    int bad = parse_ip(e, p, plen, meta, mark, &k, &to_vip);
    if (bad != PARSE_OK) {
        e->counters[bad]++;
        return LVS_VERDICT_DROP;
    }
    if (k.af == LVS_AF_INET6 && k.proto == LVS_PROTO_ICMPV6)
        return lvs_icmp6_process(e, &k, to_vip);
    if (k.af == LVS_AF_INET && k.proto == 1)
        return lvs_icmp_process(e, &k, to_vip);
    return process_l4(e, &k, to_vip, plen, cap, now);
}

/* ---- the shared fast path (lock.h): established packets on every worker at once ---- */

#define SLOW (-1) /* fast_one: the packet needs the exclusive path */
#define ACC_DESTS 8

/* The stats a batch's fast path adds up, per dest, added to the shared counters atomically
 * once per batch (a counter bumped per packet by two cores would bounce between them). */
typedef struct stats_acc {
    lvs_dest *dest[ACC_DESTS];
    lvs_stats s[ACC_DESTS];
    uint32_t n;
} stats_acc;

static void stats_add_atomic(lvs_stats *to, const lvs_stats *d)
{
    if (d->inpkts) {
        __atomic_fetch_add(&to->inpkts, d->inpkts, __ATOMIC_RELAXED);
        __atomic_fetch_add(&to->inbytes, d->inbytes, __ATOMIC_RELAXED);
    }
    if (d->outpkts) {
        __atomic_fetch_add(&to->outpkts, d->outpkts, __ATOMIC_RELAXED);
        __atomic_fetch_add(&to->outbytes, d->outbytes, __ATOMIC_RELAXED);
    }
}

static void stats_sum(lvs_stats *to, const lvs_stats *d)
{
    to->inpkts += d->inpkts;
    to->inbytes += d->inbytes;
    to->outpkts += d->outpkts;
    to->outbytes += d->outbytes;
}

/* Each dest's sums to it, then each service's and the engine's totals, each once. */
static void acc_flush(lvs_engine *e, stats_acc *a)
{
    lvs_service *svc[ACC_DESTS];
    lvs_stats per_svc[ACC_DESTS];
    lvs_stats total = {0};
    uint32_t nsvc = 0;
    for (uint32_t i = 0; i < a->n; i++) {
        lvs_dest *d = a->dest[i];
        stats_add_atomic(&d->stats, &a->s[i]);
        stats_sum(&total, &a->s[i]);
        if (!d->svc)
            continue;
        uint32_t j = 0;
        while (j < nsvc && svc[j] != d->svc)
            j++;
        if (j == nsvc) {
            svc[nsvc] = d->svc;
            memset(&per_svc[nsvc++], 0, sizeof(lvs_stats));
        }
        stats_sum(&per_svc[j], &a->s[i]);
    }
    for (uint32_t j = 0; j < nsvc; j++)
        stats_add_atomic(&svc[j]->stats, &per_svc[j]);
    if (a->n)
        stats_add_atomic(&e->stats, &total);
    a->n = 0;
}

/* stats_in / stats_out of the exclusive path, into the accumulator. */
static void acc_add(lvs_engine *e, stats_acc *a, lvs_dest *d, int dir, uint32_t bytes)
{
    uint32_t i = 0;
    while (i < a->n && a->dest[i] != d)
        i++;
    if (i == a->n) {
        if (a->n == ACC_DESTS)
            acc_flush(e, a);
        i = a->n++;
        a->dest[i] = d;
        memset(&a->s[i], 0, sizeof(a->s[i]));
    }
    if (dir == LVS_DIR_IN) {
        a->s[i].inpkts++;
        a->s[i].inbytes += bytes;
    } else {
        a->s[i].outpkts++;
        a->s[i].outbytes += bytes;
    }
}

/* do_in's ++c->in_pkts, unless this packet makes a sync record (the master's buffer is
 * exclusive work): 0, and nothing counted.  Two workers may count one conn at once (its
 * directions on two queues): each claims its own count, so none is lost or skipped. */
static int count_in_packet(const lvs_engine *e, lvs_conn *c)
{
    uint32_t pkts = __atomic_load_n(&c->in_pkts, __ATOMIC_RELAXED);
    do {
        if (e->sync_master && lvs_sync_needed(e, c, pkts + 1))
            return 0;
    } while (!__atomic_compare_exchange_n(&c->in_pkts, &pkts, pkts + 1, 1, __ATOMIC_RELAXED,
                                          __ATOMIC_RELAXED));
    return 1;
}

/* state_transition would change nothing for a UDP conn. */
static int udp_steady(const lvs_engine *e, const lvs_conn *c, int dir)
{
    return c->state == LVS_UDP_S_NORMAL && c->timeout == e->udp_timeout &&
           !(dir == LVS_DIR_OUT && c->control != LVS_NO_SLOT &&
             !(lvs_conn_at(e, c->control)->flags & LVS_CONN_F_ASSURED));
}

/*
 * do_in / do_out for a packet of an established connection whose handling changes nothing
 * but its own bytes, its conn's deadline and packet count (atomics) and the stats (acc): no
 * state change, no timer-wheel move, no helper, no sync record, no counter.  Anything else
 * returns SLOW before changing anything, and the exclusive path takes the packet whole.
 */
static int fast_one(lvs_engine *e, uint8_t *p, uint32_t *plen, uint32_t cap, uint8_t meta,
                    uint32_t mark, double now, stats_acc *acc)
{
    pkt k;
    int to_vip;
    if (parse_ip(e, p, plen, meta, mark, &k, &to_vip) != PARSE_OK ||
        (k.proto != LVS_PROTO_TCP && k.proto != LVS_PROTO_UDP) || parse_ports(&k) != PARSE_OK ||
        (k.th_flags & (TH_SYN | TH_RST)))
        return SLOW;
    int dir = to_vip ? LVS_DIR_IN : LVS_DIR_OUT;
    lvs_conn *c = to_vip ? lvs_conn_in_get(e, k.af, k.proto, k.saddr, k.sport, k.daddr, k.dport)
                         : lvs_conn_out_get(e, k.af, k.proto, k.saddr, k.sport, k.daddr,
                                            k.dport);
    if (!c || (c->flags & (LVS_CONN_F_SP_WAIT | LVS_CONN_F_EXT)) || lvs_ftp_ctl(c))
        return SLOW;
    /* while cookie ACKs are taken, one on an old or half-open entry may open a new connection
     * instead (do_in); the ACK of a TIME_WAIT entry would otherwise ride it here, unchanged */
    if (to_vip && k.proto == LVS_PROTO_TCP && lvs_defense_cookie_window(e, now) &&
        (c->state == LVS_TCP_S_TIME_WAIT || c->state == LVS_TCP_S_CLOSE ||
         c->state == LVS_TCP_S_SYN_RECV || c->state == LVS_TCP_S_FIN_WAIT))
        return SLOW;
    lvs_dest *d = c->dest;
    if (!d || !(d->flags & LVS_DEST_F_AVAILABLE))
        return SLOW;
    /* TTL <= 1 answers with an ICMP error; the sync master's template counts are shared */
    if (to_vip && (p[k.af == LVS_AF_INET6 ? 7 : 8] <= 1 ||
                   (e->sync_master && c->control != LVS_NO_SLOT)))
        return SLOW;
    if (k.proto == LVS_PROTO_TCP ? !lvs_tcp_steady(e, c, dir, k.th_flags)
                                 : !udp_steady(e, c, dir))
        return SLOW;
    /* a conn the kernel may now forward is offered by the exclusive path (offload.c) */
    if (e->offload.on && lvs_offload_eligible(e, c))
        return SLOW;
    if (!lvs_conn_rearm_in_place(e, c, now))
        return SLOW;
    /* The packet count last: the deadline just stored is the one the exclusive path would
     * store too, so a SLOW from here changes nothing it would not. */
    if (to_vip && !count_in_packet(e, c))
        return SLOW;
    /* from here on nothing can fail */
    acc_add(e, acc, d, dir, k.tot);
    if (to_vip)
        lvs_nat_xmit_in(e, &k, c, plen, cap);
    else
        lvs_nat_xmit_out(e, &k, c);
    return LVS_VERDICT_FORWARD;
}

/* The bucket a well-formed TCP/UDP packet will look up first, or NULL.  Only a hint for
 * prefetching: process_one re-validates everything. */
static uint32_t *bucket_hint(lvs_engine *e, const uint8_t *p, uint32_t len)
{
    if (len >= LVS_IPV6_HDR + 4 && (p[0] >> 4) == 6) {
        /* only the common case without extension headers */
        if (p[6] != LVS_PROTO_TCP && p[6] != LVS_PROTO_UDP)
            return NULL;
        lvs_addr saddr = ld_addr6(p + 8), daddr = ld_addr6(p + 24);
        uint16_t sport = ld16(p + 40), dport = ld16(p + 42);
        if (lvs_is_vip6(e, daddr))
            return &e->in_tab[lvs_in_hash(e, LVS_AF_INET6, p[6], saddr, sport, daddr, dport)];
        return &e->out_tab[lvs_out_hash(e, LVS_AF_INET6, p[6], saddr, sport, daddr, dport)];
    }
    if (len < 28 || (p[0] >> 4) != 4)
        return NULL;
    uint32_t ihl = (uint32_t)(p[0] & 15) * 4;
    if (ihl < 20 || ihl + 4 > len || (p[9] != LVS_PROTO_TCP && p[9] != LVS_PROTO_UDP))
        return NULL;
    lvs_addr saddr = lvs_addr4(ld32(p + 12)), daddr = lvs_addr4(ld32(p + 16));
    uint16_t sport = ld16(p + ihl), dport = ld16(p + ihl + 2);
    if (lvs_is_vip(e, daddr.ip))
        return &e->in_tab[lvs_in_hash(e, LVS_AF_INET, p[9], saddr, sport, daddr, dport)];
    return &e->out_tab[lvs_out_hash(e, LVS_AF_INET, p[9], saddr, sport, daddr, dport)];
}

#define PREFETCH_CHUNK 256
#define PREFETCH_AHEAD 6

/* Prefetch the first entry of a bucket, if any: both of its cache lines, since the packet
 * path reads the key in the first and the timer and dest in the second.  always_inline: GCC
 * models __builtin_prefetch as free of side effects, so an out-of-line copy of this function
 * counts as pure, and calls to a pure void function are deleted (with them every prefetch). */
static inline __attribute__((always_inline)) void prefetch_chain(const lvs_engine *e, const uint32_t *bucket)
{
    if (!bucket || *bucket == LVS_NO_SLOT)
        return;
    const lvs_conn *c = lvs_conn_at(e, *bucket);
    __builtin_prefetch(c);
    __builtin_prefetch((const char *)c + 64);
}

/*
 * Lookups are memory-latency bound (a bucket and an entry, both random), so the batch is a
 * software pipeline: hash and prefetch every bucket of a chunk first, then, while packet i
 * is processed, prefetch the chain head of packet i + PREFETCH_AHEAD.
 *
 * From packet `from` on; with `acc` only the shared fast path runs, and the loop stops at the
 * first packet it cannot take (returned: the exclusive path goes on from there, so a
 * connection's packets keep their order).  Returns b->count when every packet is done.
 */
static inline __attribute__((always_inline)) uint32_t
run_batch(lvs_engine *e, lvs_batch *b, uint32_t from, double now, stats_acc *acc, int *sent)
{
    uint32_t *hint[PREFETCH_CHUNK];
    for (uint32_t g = from; g < b->count; g += PREFETCH_CHUNK) {
        uint32_t n = b->count - g < PREFETCH_CHUNK ? b->count - g : PREFETCH_CHUNK;
        for (uint32_t j = 0; j < n; j++) {
            uint32_t len = b->len[g + j] < b->stride ? b->len[g + j] : b->stride;
            hint[j] = bucket_hint(e, b->data + (size_t)(g + j) * b->stride, len);
            if (hint[j])
                __builtin_prefetch(hint[j]);
        }
        for (uint32_t j = 0; j < n && j < PREFETCH_AHEAD; j++)
            prefetch_chain(e, hint[j]);
        for (uint32_t j = 0; j < n; j++) {
            if (j + PREFETCH_AHEAD < n)
                prefetch_chain(e, hint[j + PREFETCH_AHEAD]);
            uint32_t i = g + j;
            uint8_t *p = b->data + (size_t)i * b->stride;
            uint32_t len = b->len[i] < b->stride ? b->len[i] : b->stride;
            uint8_t meta = b->meta ? b->meta[i] : 0;
            int v = acc ? fast_one(e, p, &len, b->stride, meta, b->mark, now, acc)
                        : process_one(e, p, &len, b->stride, meta, b->mark, now);
            if (v == SLOW)
                return i;
            b->len[i] = len;
            b->verdict[i] = (uint8_t)v;
            if (v == LVS_VERDICT_FORWARD || v == LVS_VERDICT_REPLY)
                (*sent)++;
        }
    }
    return b->count;
}

int lvs_engine_process_batch(lvs_engine *e, lvs_batch *b, double now)
{
    int sent = 0;
    run_batch(e, b, 0, now, NULL, &sent);
    return sent;
}

int lvs_engine_process_batch_shared(lvs_engine *e, lvs_batch *b, double now)
{
    int sent = 0;
    stats_acc acc = {.n = 0};
    lvs_engine_lock_shared(e);
    uint32_t i = run_batch(e, b, 0, now, &acc, &sent);
    acc_flush(e, &acc);
    lvs_engine_unlock_shared(e);
    if (i < b->count) {
        lvs_engine_lock(e);
        run_batch(e, b, i, now, NULL, &sent);
        lvs_engine_unlock(e);
    }
    return sent;
}
