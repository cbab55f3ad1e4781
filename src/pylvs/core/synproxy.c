/*
 * synproxy.c — the SYN proxy (Alibaba LVS's ip_vs_synproxy.c, nftables' synproxy; the cookie
 * layout after the kernel's syncookies.c; docs/ipvs.md#syn-proxy).
 *
 * A service with LVS_SVC_F_SYNPROXY never shows its real servers a SYN the director has not
 * seen completed:
 *   1. client SYN         -> the slot becomes a SYN-ACK whose ISN is a cookie (REPLY); no state.
 *   2. client ACK         -> cookie valid: schedule, make the conn (SYN_SENT, SYNPROXY, SP_WAIT),
 *                            keep the client's packet, the slot becomes the SYN for the server
 *                            with the client's options (REPLY).  Invalid: DROP, counted.
 *   3. while waiting      -> a data segment from the client replaces a kept pure ACK; a
 *                            retransmission of the kept segment re-sends the SYN (the client's
 *                            retransmission timer drives ours); anything else is dropped and
 *                            counted (the client retransmits it).
 *   4. server SYN-ACK     -> the sequence delta (and timestamp offset, window shift) is set and
 *                            the slot becomes the kept client packet, translated (REPLY): it
 *                            completes the server's handshake and delivers the client's first
 *                            data.  A server RST is passed on with the client's expected seq.
 *   5. from then on       -> seqadj.c translates every packet both ways.
 *
 * Cookie (32 bits, the kernel's layout with a stronger check):
 *   cookie = H0(tuple, client ISN) + (period << 24) + (mss_index << 22 | MAC22)
 * H0 is keyed with the engine secret (derived from the engine seed); MAC22 is SipHash-2-4
 * keyed with the PERIOD'S secret (derived from the engine secret and the period number) over
 * the tuple, the client ISN, the MSS index and the timestamp option bits, truncated to 22
 * bits.  A period lasts LVS_SP_PERIOD (60) seconds; an ACK is accepted in the period of its
 * cookie and the next one (MAX_SYNCOOKIE_AGE 2): a cookie stays valid between 60 and 120 s.
 * Options ride in the low 6 bits of the SYN-ACK's TSval as the kernel encodes them
 * (cookie_init_timestamp: window scale, 0xf = none; bit 4 SACK-permitted); a client without
 * timestamps gets only the MSS class back, as with the kernel's cookies.
 */
#include <string.h>
#include <stdlib.h>

#include "seqadj.h"
#include "siphash.h"

#define SP_PERIOD 60.0
#define SP_MAX_AGE 2
#define SP_MSS 1460          /* the MSS the director offers in its SYN-ACK */
#define SP_WSCALE 7          /* the window scale the director offers (Linux's usual) */
#define SP_WINDOW 65535
#define SP_HELD_MAX (64u << 20)  /* bytes of client packets kept for pending handshakes */
#define TS_OPT_WSCALE_MASK 0xf
#define TS_OPT_SACK 0x10
#define TS_NONE 0x40         /* the MAC's option input for a client without timestamps */

static const uint16_t msstab[4] = {536, 1300, 1440, 1460};

/* ---- keys and cookies ---- */

static inline void base_key(const lvs_engine *e, uint64_t k[2])
{
    k[0] = lvs_hash_mix(e->seed ^ 0x9ae16a3b2f90404fULL);
    k[1] = lvs_hash_mix(e->seed ^ 0xc949d7c7509e6557ULL);
}

/* The MAC key of one period, derived from the engine secret and the period number. */
static void derive_period_key(const lvs_engine *e, uint32_t period, uint64_t out[2])
{
    uint64_t k[2];
    base_key(e, k);
    uint64_t m1[2] = {period, 1}, m2[2] = {period, 2};
    out[0] = lvs_siphash24(k[0], k[1], m1, 2);
    out[1] = lvs_siphash24(k[0], k[1], m2, 2);
}

/* The secret of one period, computed once and cached for the current and previous one. */
static const uint64_t *period_key(lvs_engine *e, uint32_t period)
{
    int slot = (int)(period & 1);
    if (!e->sp_key_valid[slot] || e->sp_key_period[slot] != period) {
        derive_period_key(e, period, e->sp_key[slot]);
        e->sp_key_period[slot] = period;
        e->sp_key_valid[slot] = 1;
    }
    return e->sp_key[slot];
}

static inline uint32_t period_of(double now)
{
    return (uint32_t)(uint64_t)(now / SP_PERIOD);
}

uint32_t lvs_synproxy_period(double now)
{
    return period_of(now);
}

void lvs_synproxy_secrets(const lvs_engine *e, uint32_t period, uint64_t out[4])
{
    /* derived afresh: the cache is the packet path's, this is the director's (dataplane/xdp.py) */
    derive_period_key(e, period, out);
    base_key(e, out + 2);
}

/* The hashed input: for IPv4 the two addresses in one word (the layout of the first
 * version), for IPv6 the two 128-bit addresses in four words (cookie_v6_init_sequence hashes
 * the whole addresses too); then ports and the client ISN.  Returns the word count. */
static int cookie_msg(uint8_t af, lvs_addr saddr, lvs_addr daddr, uint16_t sport,
                      uint16_t dport, uint32_t sseq, uint64_t m[6])
{
    int n = 0;
    if (af == LVS_AF_INET6) {
        m[n++] = (uint64_t)saddr.ip6[0] << 32 | saddr.ip6[1];
        m[n++] = (uint64_t)saddr.ip6[2] << 32 | saddr.ip6[3];
        m[n++] = (uint64_t)daddr.ip6[0] << 32 | daddr.ip6[1];
        m[n++] = (uint64_t)daddr.ip6[2] << 32 | daddr.ip6[3];
    } else {
        m[n++] = (uint64_t)saddr.ip << 32 | daddr.ip;
    }
    m[n++] = (uint64_t)sport << 48 | (uint64_t)dport << 32 | sseq;
    return n;
}

static uint32_t cookie_h0(const lvs_engine *e, const uint64_t *m, int n)
{
    uint64_t k[2];
    base_key(e, k);
    return (uint32_t)lvs_siphash24(k[0], k[1], m, n);
}

static uint32_t cookie_mac(lvs_engine *e, uint32_t period, const uint64_t *m, int n,
                           uint32_t mssind, uint32_t tsopts)
{
    const uint64_t *k = period_key(e, period);
    uint64_t mm[6];
    memcpy(mm, m, (size_t)n * sizeof(*m));
    mm[n] = (uint64_t)mssind << 8 | tsopts;
    return (uint32_t)lvs_siphash24(k[0], k[1], mm, n + 1) & 0x3fffff;
}

static uint32_t cookie_make(lvs_engine *e, uint8_t af, lvs_addr saddr, lvs_addr daddr,
                            uint16_t sport, uint16_t dport, uint32_t sseq, uint32_t mssind,
                            uint32_t tsopts, double now)
{
    uint64_t m[6];
    int n = cookie_msg(af, saddr, daddr, sport, dport, sseq, m);
    uint32_t period = period_of(now);
    mssind &= 3;
    return cookie_h0(e, m, n) + (period << 24) +
           (mssind << 22 | cookie_mac(e, period, m, n, mssind, tsopts));
}

static int cookie_check(lvs_engine *e, uint8_t af, lvs_addr saddr, lvs_addr daddr,
                        uint16_t sport, uint16_t dport, uint32_t sseq, uint32_t cookie,
                        uint32_t tsopts, double now)
{
    uint64_t m[6];
    int n = cookie_msg(af, saddr, daddr, sport, dport, sseq, m);
    uint32_t v = cookie - cookie_h0(e, m, n);
    uint32_t period = period_of(now);
    uint32_t diff = (period - (v >> 24)) & 0xff;
    if (diff >= SP_MAX_AGE)
        return LVS_SP_EXPIRED;
    uint32_t mssind = (v >> 22) & 3;
    if ((v & 0x3fffff) != cookie_mac(e, period - diff, m, n, mssind, tsopts))
        return LVS_SP_BAD;
    return (int)mssind;
}

uint32_t lvs_synproxy_cookie_make(lvs_engine *e, uint32_t saddr, uint32_t daddr, uint16_t sport,
                                  uint16_t dport, uint32_t sseq, uint32_t mssind,
                                  uint32_t tsopts, double now)
{
    return cookie_make(e, LVS_AF_INET, lvs_addr4(saddr), lvs_addr4(daddr), sport, dport, sseq,
                       mssind, tsopts, now);
}

int lvs_synproxy_cookie_check(lvs_engine *e, uint32_t saddr, uint32_t daddr, uint16_t sport,
                              uint16_t dport, uint32_t sseq, uint32_t cookie, uint32_t tsopts,
                              double now)
{
    return cookie_check(e, LVS_AF_INET, lvs_addr4(saddr), lvs_addr4(daddr), sport, dport, sseq,
                        cookie, tsopts, now);
}

/* ---- TCP options ---- */

typedef struct sp_opts {
    uint16_t mss;            /* 0 = none */
    uint8_t wscale;          /* 0xf = none */
    uint8_t sack;
    uint8_t ts;
    uint32_t tsval, tsecr;
} sp_opts;

static void parse_opts(uint8_t *th, uint32_t thlen, sp_opts *o)
{
    memset(o, 0, sizeof(*o));
    o->wscale = 0xf;
    uint32_t pos = 20, olen;
    const uint8_t *opt;
    while ((opt = lvs_tcp_opt_next(th, thlen, &pos, &olen))) {
        uint8_t kind = opt[0];
        const uint8_t *v = opt + 2;
        if (kind == 2 && olen == 4)
            o->mss = ld16(v);
        else if (kind == 3 && olen == 3)
            o->wscale = v[0] > 14 ? 14 : v[0];
        else if (kind == 4 && olen == 2)
            o->sack = 1;
        else if (kind == 8 && olen == 10) {
            o->ts = 1;
            o->tsval = ld32(v);
            o->tsecr = ld32(v + 4);
        }
    }
}

/* The options of a SYN or SYN-ACK; returns their length (a multiple of 4, at most 20). */
static uint32_t put_opts(uint8_t *p, uint16_t mss, const sp_opts *o, uint8_t wscale)
{
    uint32_t n = 0;
    p[n++] = 2;
    p[n++] = 4;
    st16(p + n, mss);
    n += 2;
    if (o->ts) {
        if (o->sack) {
            p[n++] = 4;
            p[n++] = 2;
        } else {
            p[n++] = 1;
            p[n++] = 1;
        }
        p[n++] = 8;
        p[n++] = 10;
        st32(p + n, o->tsval);
        st32(p + n + 4, o->tsecr);
        n += 8;
    } else if (o->sack) {
        p[n++] = 1;
        p[n++] = 1;
        p[n++] = 4;
        p[n++] = 2;
    }
    if (o->wscale != 0xf) {
        p[n++] = 1;
        p[n++] = 3;
        p[n++] = 3;
        p[n++] = wscale;
    }
    return n;
}

/* ---- building packets ---- */

/* The L3 header a segment of family af gets from us (IPv6: no extension headers). */
static inline uint32_t l3_len(uint8_t af)
{
    return af == LVS_AF_INET6 ? LVS_IPV6_HDR : 20;
}

/* The TCP checksum from scratch: the IPv4 or the IPv6 pseudo-header (RFC 8200 8.1). */
static void tcp_csum_full(uint8_t af, uint8_t *p, uint32_t l4off, uint32_t tot)
{
    uint8_t *th = p + l4off;
    uint32_t n = tot - l4off;
    st16(th + 16, 0);
    uint64_t s = sum16(th, n);
    if (af == LVS_AF_INET6) {
        s += pseudo6_sum(p, n, LVS_PROTO_TCP);
    } else {
        s += (ld32(p + 12) >> 16) + (ld32(p + 12) & 0xffff);
        s += (ld32(p + 16) >> 16) + (ld32(p + 16) & 0xffff);
        s += LVS_PROTO_TCP + n;
    }
    st16(th + 16, (uint16_t)~fold(s));
}

/* A bare TCP segment (no payload) in the slot; returns its length. */
static uint32_t build_segment(lvs_engine *e, uint8_t af, uint8_t *p, lvs_addr src, lvs_addr dst,
                              uint16_t sport, uint16_t dport, uint32_t seq, uint32_t ack,
                              uint8_t flags, uint16_t win, const uint8_t *opts, uint32_t optlen)
{
    /* The cookie SYN-ACK has IP ID 0, as nf_synproxy's (an atomic datagram, RFC 6864): the
     * XDP responder (dataplane/bpf/xdp_synproxy.bpf.c) builds the same bytes without the
     * engine's counter. */
    uint16_t ip_id = flags == (TH_SYN | TH_ACK) ? 0 : e->ip_id++;
    uint32_t l3 = l3_len(af);
    uint32_t tot = l3 + 20 + optlen;
    memset(p, 0, l3 + 20);
    if (af == LVS_AF_INET6) {
        st_ipv6_hdr(p, 20 + optlen, LVS_PROTO_TCP, src, dst);
    } else {
        p[0] = 0x45;
        st16(p + 2, (uint16_t)tot);
        st16(p + 4, ip_id);
        st16(p + 6, 0x4000); /* DF */
        p[8] = 64;
        p[9] = LVS_PROTO_TCP;
        st32(p + 12, src.ip);
        st32(p + 16, dst.ip);
        st16(p + 10, ip_csum(p, 20));
    }
    uint8_t *th = p + l3;
    st16(th, sport);
    st16(th + 2, dport);
    st32(th + 4, seq);
    st32(th + 8, ack);
    th[12] = (uint8_t)(((20 + optlen) / 4) << 4);
    th[13] = flags;
    st16(th + 14, win);
    if (optlen)
        memcpy(th + 20, opts, optlen);
    tcp_csum_full(af, p, l3, tot);
    return tot;
}

/* A source no handshake may come from: unspecified, broadcast, multicast (and IPv4 class E). */
static int bad_source(uint8_t af, lvs_addr a)
{
    if (af == LVS_AF_INET6)
        return (a.ip6[0] >> 24) == 0xff ||
               (a.ip6[0] == 0 && a.ip6[1] == 0 && a.ip6[2] == 0 && a.ip6[3] == 0);
    return a.ip == 0 || a.ip == 0xffffffffu || (a.ip >> 28) >= 0xe;
}

static inline uint32_t ts_options(const sp_opts *o)
{
    if (!o->ts)
        return TS_NONE;
    return (o->wscale != 0xf ? o->wscale : TS_OPT_WSCALE_MASK) | (o->sack ? TS_OPT_SACK : 0);
}

/* ---- step 1 and the cookie check of step 2 ---- */

/* The cookie an ACK returns: the MSS index, LVS_SP_EXPIRED or LVS_SP_BAD; its options. */
static int check_ack(lvs_engine *e, const pkt *k, double now, sp_opts *o, uint32_t *tsopts)
{
    uint8_t *th = k->l4;
    parse_opts(th, (uint32_t)(th[12] >> 4) * 4, o);
    *tsopts = o->ts ? (o->tsecr & 0x3f) : TS_NONE;
    return cookie_check(e, k->af, k->saddr, k->daddr, k->sport, k->dport, ld32(th + 4) - 1,
                        ld32(th + 8) - 1, *tsopts, now);
}

int lvs_synproxy_cookie_ack(lvs_engine *e, const pkt *k, double now)
{
    sp_opts o;
    uint32_t tsopts;
    return (k->th_flags & (TH_SYN | TH_ACK | TH_RST | TH_FIN)) == TH_ACK &&
           check_ack(e, k, now, &o, &tsopts) >= 0;
}

_Static_assert(LVS_CNT_SYNPROXY_ACK_OK == LVS_CNT_SYNPROXY_SYN + 1 &&
               LVS_CNT_SYNPROXY_BAD_COOKIE == LVS_CNT_SYNPROXY_SYN + 2 &&
               LVS_CNT_SYNPROXY_EXPIRED_COOKIE == LVS_CNT_SYNPROXY_SYN + 3 &&
               LVS_CNT_SYNCOOKIE_ACK_OK == LVS_CNT_SYNCOOKIE_SYN + 1 &&
               LVS_CNT_SYNCOOKIE_BAD_COOKIE == LVS_CNT_SYNCOOKIE_SYN + 2 &&
               LVS_CNT_SYNCOOKIE_EXPIRED_COOKIE == LVS_CNT_SYNCOOKIE_SYN + 3,
               "lvs_synproxy_new counts in either block by offset");

int lvs_synproxy_new(lvs_engine *e, pkt *k, uint32_t *plen, uint32_t cap, double now,
                     lvs_sp_accept *out, int cnt)
{
    /* the four counters of the block at cnt: SYN answered, ACK accepted, bad, expired */
    uint64_t *counted = &e->counters[cnt];
    uint8_t *th = k->l4;
    uint32_t thlen = (uint32_t)(th[12] >> 4) * 4;
    uint8_t f = k->th_flags & (TH_SYN | TH_ACK | TH_RST | TH_FIN);
    sp_opts o;
    if (f == TH_SYN) {
        if (bad_source(k->af, k->saddr) || cap < l3_len(k->af) + 40)
            goto no_syn;
        parse_opts(th, thlen, &o);
        uint16_t mss = o.mss ? o.mss : 536;
        uint32_t mssind = 3;
        while (mssind && mss < msstab[mssind])
            mssind--;
        if (!o.ts) { /* the kernel's cookies keep window scale and SACK only in timestamps */
            o.wscale = 0xf;
            o.sack = 0;
        }
        uint32_t tsopts = ts_options(&o);
        uint32_t cseq = ld32(th + 4);
        uint32_t cookie = cookie_make(e, k->af, k->saddr, k->daddr, k->sport, k->dport, cseq,
                                      mssind, tsopts, now);
        sp_opts r = o;
        if (o.ts) {
            /* cookie_init_timestamp: a millisecond clock with the options in the low bits */
            uint32_t ts_now = (uint32_t)(uint64_t)(now * 1000.0);
            uint32_t ts = (ts_now & ~0x3fu) | tsopts;
            if (ts > ts_now)
                ts -= 1u << 6;
            r.tsval = ts;
            r.tsecr = o.tsval;
        }
        uint8_t opts[20];
        uint32_t optlen = put_opts(opts, SP_MSS, &r, SP_WSCALE);
        *plen = build_segment(e, k->af, k->p, k->daddr, k->saddr, k->dport, k->sport, cookie,
                              cseq + 1, TH_SYN | TH_ACK, SP_WINDOW, opts, optlen);
        counted[0]++;
        return LVS_VERDICT_REPLY;
    }
    if (f != TH_ACK)
        goto no_syn;
    uint32_t tsopts;
    int r = check_ack(e, k, now, &o, &tsopts);
    if (r == LVS_SP_EXPIRED) {
        counted[3]++;
        return LVS_VERDICT_DROP;
    }
    if (r < 0 || (o.ts && (tsopts & TS_OPT_WSCALE_MASK) != TS_OPT_WSCALE_MASK &&
                  (tsopts & TS_OPT_WSCALE_MASK) > 14)) {
        counted[2]++;
        return LVS_VERDICT_DROP;
    }
    memset(out, 0, sizeof(*out));
    out->mss = msstab[r];
    out->wscale = 0xf;
    if (o.ts) {
        out->ts = 1;
        out->tsval = o.tsval;
        out->tsecr = o.tsecr;
        out->sack = (tsopts & TS_OPT_SACK) != 0;
        out->wscale = (uint8_t)(tsopts & TS_OPT_WSCALE_MASK);
    }
    counted[1]++;
    return LVS_SP_ACCEPT;
no_syn:
    e->counters[LVS_CNT_TCP_NO_SYN]++;
    return LVS_VERDICT_DROP;
}

int lvs_synproxy_refuse(lvs_engine *e, pkt *k, uint32_t *plen)
{
    const uint8_t *th = k->l4;
    *plen = build_segment(e, k->af, k->p, k->daddr, k->saddr, k->dport, k->sport, ld32(th + 8),
                          0, TH_RST, 0, NULL, 0);
    return LVS_VERDICT_REPLY;
}

/* ---- a pending handshake ---- */

typedef struct sp_pending {
    uint32_t cookie_isn;     /* the ISN the client got from us */
    uint32_t client_isn;
    lvs_sp_accept opts;      /* the client's options, for (re)building the SYN */
    uint16_t win;            /* the client's window, unscaled, for the SYN */
    uint32_t held_seq;
    uint32_t held_payload;
    uint32_t held_len;
    uint32_t held_l4off;     /* where its TCP header starts (IPv6: after extension headers) */
    uint8_t held[];          /* the client's packet as it arrived (maybe headers only) */
} sp_pending;

/* Keep the client's packet: whole when the budget allows and it is one real segment, else its
 * headers (the client retransmits the data). */
static sp_pending *hold(lvs_engine *e, sp_pending *old, const pkt *k)
{
    uint32_t thlen = (uint32_t)(k->l4[12] >> 4) * 4;
    uint32_t len = k->tot;
    uint32_t payload = k->l4len - thlen;
    if ((k->meta & LVS_META_GSO) || e->sp_held_bytes + len > SP_HELD_MAX) {
        if (payload)
            e->counters[LVS_CNT_SYNPROXY_HELD_TRUNCATED]++;
        len = k->ihl + thlen;
        payload = 0;
    }
    sp_pending *w = realloc(old, sizeof(*w) + len);
    if (!w)
        return NULL;
    if (old)
        e->sp_held_bytes -= w->held_len;
    memcpy(w->held, k->p, len);
    if (k->af == LVS_AF_INET6)
        st16(w->held + 4, (uint16_t)(len - LVS_IPV6_HDR));
    else
        st16(w->held + 2, (uint16_t)len);
    w->held_len = len;
    w->held_l4off = k->ihl;
    w->held_payload = payload;
    w->held_seq = ld32(k->l4 + 4);
    e->sp_held_bytes += len;
    return w;
}

static void release(lvs_engine *e, lvs_conn *c, lvs_conn_ext *x)
{
    sp_pending *w = x->pending;
    if (w)
        e->sp_held_bytes -= w->held_len;
    free(w);
    x->pending = NULL;
    c->flags &= (uint16_t)~LVS_CONN_F_SP_WAIT;
}

static uint32_t build_syn(lvs_engine *e, uint8_t *p, const lvs_conn *c, const sp_pending *w)
{
    sp_opts o = {0, w->opts.wscale, w->opts.sack, w->opts.ts, w->opts.tsval, 0};
    uint8_t opts[20];
    uint32_t optlen = put_opts(opts, w->opts.mss, &o, w->opts.wscale);
    return build_segment(e, c->af, p, c->caddr, c->daddr, c->cport, c->dport, w->client_isn, 0,
                         TH_SYN, w->win, opts, optlen);
}

int lvs_synproxy_open(lvs_engine *e, pkt *k, lvs_conn *c, const lvs_sp_accept *o,
                      uint32_t *plen, uint32_t cap, double now)
{
    lvs_conn_ext *x = lvs_ext_attach(e, c);
    sp_pending *w = x && cap >= l3_len(k->af) + 40 ? hold(e, NULL, k) : NULL;
    c->flags |= LVS_CONN_F_SYNPROXY;
    c->state = LVS_TCP_S_SYN_SENT;
    c->timeout = e->tcp_timeouts[LVS_TCP_S_SYN_SENT];
    if (!w) {
        /* no memory: the conn lives as a closed entry and dies on its timer */
        c->state = LVS_TCP_S_CLOSE;
        c->timeout = e->tcp_timeouts[LVS_TCP_S_CLOSE];
        lvs_conn_arm(e, c, now);
        return LVS_VERDICT_DROP;
    }
    const uint8_t *th = k->l4;
    w->cookie_isn = ld32(th + 8) - 1;
    w->client_isn = ld32(th + 4) - 1;
    w->opts = *o;
    uint32_t win = ld16(th + 14);
    if (o->wscale != 0xf)
        win <<= o->wscale;
    w->win = win > 0xffff ? 0xffff : (uint16_t)win;
    x->pending = w;
    c->flags |= LVS_CONN_F_SP_WAIT;
    stats_in(e, c, k->tot);
    *plen = build_syn(e, k->p, c, w);
    lvs_conn_arm(e, c, now);
    return LVS_VERDICT_REPLY;
}

int lvs_synproxy_in_wait(lvs_engine *e, pkt *k, lvs_conn *c, uint32_t *plen, uint32_t cap,
                         double now)
{
    lvs_conn_ext *x = lvs_ext_of(e, c);
    sp_pending *w = x->pending;
    uint8_t f = k->th_flags;
    if (f & TH_RST) {
        /* the client gave up before the server answered: forget the attempt */
        lvs_conn_expire_now(e, c, now);
        return LVS_VERDICT_DROP;
    }
    uint32_t thlen = (uint32_t)(k->l4[12] >> 4) * 4;
    uint32_t payload = k->l4len - thlen;
    uint32_t seq = ld32(k->l4 + 4);
    if ((f & (TH_ACK | TH_SYN)) == TH_ACK && seq == w->held_seq) {
        if (payload > w->held_payload) {
            sp_pending *nw = hold(e, w, k);
            if (nw)
                x->pending = nw;
            e->counters[LVS_CNT_SYNPROXY_HELD]++;
            return LVS_VERDICT_DROP;
        }
        if (payload == w->held_payload && cap >= l3_len(k->af) + 40) {
            /* the client retransmits: so must we (the server's SYN-ACK or our SYN was lost) */
            if (k->l4len >= 20 && w->opts.ts) {
                sp_opts o;
                parse_opts(k->l4, thlen, &o);
                if (o.ts)
                    w->opts.tsval = o.tsval;
            }
            *plen = build_syn(e, k->p, c, w);
            lvs_conn_arm(e, c, now);
            return LVS_VERDICT_REPLY;
        }
    }
    e->counters[LVS_CNT_SYNPROXY_PENDING_DROP]++;
    return LVS_VERDICT_DROP;
}

int lvs_synproxy_out_wait(lvs_engine *e, pkt *k, lvs_conn *c, uint32_t *plen, uint32_t cap,
                          double now)
{
    lvs_conn_ext *x = lvs_ext_of(e, c);
    sp_pending *w = x->pending;
    uint8_t *th = k->l4;
    uint8_t f = k->th_flags;
    uint32_t seq = ld32(th + 4);
    if ((f & (TH_SYN | TH_ACK | TH_RST)) == (TH_SYN | TH_ACK) &&
        ld32(th + 8) == w->client_isn + 1 && w->held_len <= cap) {
        uint32_t thlen = (uint32_t)(th[12] >> 4) * 4;
        sp_opts ro;
        parse_opts(th, thlen, &ro);
        x->out_seq.init_seq = seq;
        x->out_seq.delta = x->out_seq.previous_delta = (int32_t)(w->cookie_isn - seq);
        if (w->opts.ts && ro.ts) {
            x->flags |= LVS_EXT_TS;
            x->ts_off = w->opts.tsecr - ro.tsval;
        }
        if (w->opts.wscale != 0xf)
            x->win_shift = (int8_t)((ro.wscale != 0xf ? ro.wscale : 0) - SP_WSCALE);
        c->flags |= LVS_CONN_F_OUT_SEQ;
        stats_out(e, c, k->tot);
        /* the slot becomes the client's kept packet, on its way to the server */
        uint8_t *p = k->p;
        memcpy(p, w->held, w->held_len);
        uint32_t tot = w->held_len;
        uint32_t l4off = w->held_l4off;
        uint8_t *hth = p + l4off;
        st16(hth + 2, c->dport);
        if (c->af == LVS_AF_INET6) {
            st_addr6(p + 24, c->daddr);
            if (p[7] > 1)
                p[7]--;
        } else {
            st32(p + 16, c->daddr.ip);
            if (p[8] > 1)
                p[8]--;
            st16(p + 10, 0);
            st16(p + 10, ip_csum(p, l4off));
        }
        lvs_seqadj_tcp(hth, (uint32_t)(hth[12] >> 4) * 4, x, LVS_DIR_IN);
        tcp_csum_full(c->af, p, l4off, tot);
        *plen = tot;
        release(e, c, x);
        lvs_conn_set_active(c, 1);
        lvs_conn_assure(e, c); /* established: never an eviction candidate again */
        c->state = LVS_TCP_S_ESTABLISHED;
        c->timeout = e->tcp_timeouts[LVS_TCP_S_ESTABLISHED];
        lvs_conn_arm(e, c, now);
        return LVS_VERDICT_REPLY;
    }
    if (f & TH_RST) {
        /* refused: the client must see the RST at exactly the seq it expects (RFC 5961) */
        x->out_seq.init_seq = seq;
        x->out_seq.delta = x->out_seq.previous_delta = (int32_t)(w->cookie_isn + 1 - seq);
        c->flags |= LVS_CONN_F_OUT_SEQ;
        release(e, c, x);
        stats_out(e, c, k->tot);
        lvs_nat_xmit_out(e, k, c);
        c->state = LVS_TCP_S_CLOSE;
        c->timeout = e->tcp_timeouts[LVS_TCP_S_CLOSE];
        lvs_conn_arm(e, c, now);
        return LVS_VERDICT_FORWARD;
    }
    e->counters[LVS_CNT_SYNPROXY_PENDING_DROP]++;
    return LVS_VERDICT_DROP;
}
