/*
 * sync.c — connection synchronisation (ip_vs_sync.c, docs/ipvs.md#sync): when the master produces a
 * record (ip_vs_sync_conn), the record itself (IPVS sync v1: the 36-byte IPv4 entry or the
 * 72-byte IPv6 entry, each with the sequence options when the conn has a translation; format in
 * engine.py), and installing records on a backup (ip_vs_proc_conn).  It uses the connection
 * table; the table reaches it only through the engine's tmpl_rearmed hook.
 */
#include <stdlib.h>
#include <string.h>

#include "seqadj.h"

/* ip_vs_sync_conn_needed (sync_refresh_period = 0): TCP only in the states a backup needs,
 * at once on a change to one of them other than ESTABLISHED, otherwise when the incoming
 * packet count hits the threshold within the period.  Templates skip the count check. */
int lvs_sync_needed(const lvs_engine *e, const lvs_conn *c, uint32_t pkts)
{
    int tmpl = (c->flags & LVS_CONN_F_TEMPLATE) != 0;
    if (!tmpl && c->proto == LVS_PROTO_TCP) {
        static const uint32_t synced =
            1u << LVS_TCP_S_ESTABLISHED | 1u << LVS_TCP_S_FIN_WAIT | 1u << LVS_TCP_S_CLOSE |
            1u << LVS_TCP_S_CLOSE_WAIT | 1u << LVS_TCP_S_TIME_WAIT;
        if (!((1u << c->state) & synced))
            return 0;
        if (c->state != c->old_state && c->state != LVS_TCP_S_ESTABLISHED)
            return 1;
    }
    if (e->sync_period > 0)
        return tmpl || pkts % e->sync_period == e->sync_threshold;
    return pkts == e->sync_threshold;
}

static void sync_append(lvs_engine *e, const lvs_conn *c, double now);

/* ip_vs_sync_conn: the conn, then its controller (a template's own packet count goes up
 * every time, whether or not the conn itself was sent). */
void lvs_sync_conn(lvs_engine *e, lvs_conn *c, uint32_t pkts)
{
    for (;;) {
        if (lvs_sync_needed(e, c, pkts)) {
            c->old_state = c->state;
            sync_append(e, c, -1.0);
        }
        c = lvs_conn_control(e, c);
        if (!c)
            return;
        pkts = (c->flags & LVS_CONN_F_TEMPLATE) ? ++c->in_pkts : e->sync_threshold;
    }
}

void lvs_sync_conn_now(lvs_engine *e, lvs_conn *c)
{
    if (e->sync_master)
        sync_append(e, c, -1.0);
}

void lvs_sync_tmpl_rearmed(lvs_engine *e, lvs_conn *c)
{
    /* a template still in control outlived its timeout: the backup must keep it too */
    if (e->sync_master)
        lvs_sync_conn(e, c, e->sync_threshold);
}

/* ---- sync records (format documented in engine.py) ---- */

/*
 * A record is struct ip_vs_sync_v4 (36 bytes) or ip_vs_sync_v6 (72 bytes, type bit 0 =
 * STYPE_F_INET6), the kernel's v1 format.  A conn with a sequence translation (synproxy, an
 * application helper) carries two options after the entry, as that format allows:
 * IPVS_OPT_SEQ_DATA (type 1, 24 bytes: in_seq then out_seq, each init_seq, delta,
 * previous_delta) and pylvs's own optional parameter (type IPVS_OPT_F_PARAM 0x40 | 0x10, 8
 * bytes: timestamp offset, window shift, ext flags, bit 0 = opened by the SYN proxy), which a
 * kernel backup skips.  Sizes: 36 + 36 = 72 (IPv4), 72 + 36 = 108 (IPv6).  The size field holds
 * the unpadded length and the next record starts at the next multiple of 4 (the kernel pads
 * between records); ours are multiples of 4 already, a kernel's 62- or 98-byte record is not.
 */
#define OPT_SEQ_DATA 1
#define OPT_F_PARAM 0x40 /* IPVS_OPT_F_PARAM: a receiver may skip it */
#define OPT_PYLVS_TCPADJ (OPT_F_PARAM | 0x10)

/* The entry without options: struct ip_vs_sync_v4 or ip_vs_sync_v6. */
static inline uint32_t base_size(uint8_t af)
{
    return af == LVS_AF_INET6 ? LVS_SYNC_RECORD_SIZE_V6 : LVS_SYNC_RECORD_SIZE;
}

/* Where the record after one of `size` bytes starts (the kernel's 4-byte padding). */
static inline uint32_t rec_step(uint32_t size)
{
    return (size + 3u) & ~3u;
}

static inline int has_opts(const lvs_conn *c)
{
    return (c->flags & LVS_CONN_F_EXT) &&
           (c->flags & (LVS_CONN_F_SEQ_MASK | LVS_CONN_F_SYNPROXY)) &&
           !(c->flags & LVS_CONN_F_SP_WAIT);
}

/* Bytes of c's record. */
static inline uint32_t rec_size(const lvs_conn *c)
{
    return base_size(c->af) + (has_opts(c) ? LVS_SYNC_OPTS_SIZE : 0);
}

static void st_addr(uint8_t *r, uint8_t af, lvs_addr a)
{
    if (af == LVS_AF_INET6)
        st_addr6(r, a);
    else
        st32(r, a.ip);
}

static void put_seq(uint8_t *p, const lvs_seq *s)
{
    st32(p, s->init_seq);
    st32(p + 4, (uint32_t)s->delta);
    st32(p + 8, (uint32_t)s->previous_delta);
}

static void get_seq(const uint8_t *p, lvs_seq *s)
{
    s->init_seq = ld32(p);
    s->delta = (int32_t)ld32(p + 4);
    s->previous_delta = (int32_t)ld32(p + 8);
}

static uint32_t encode(const lvs_engine *e, uint8_t *r, const lvs_conn *c, double now)
{
    uint32_t size = rec_size(c);
    r[0] = c->af == LVS_AF_INET6 ? 1 : 0; /* STYPE_F_INET6 */
    r[1] = c->proto;
    st16(r + 2, (uint16_t)size);
    st32(r + 4, c->flags & LVS_CONN_F_SYNC_MASK);
    st16(r + 8, c->state);
    st16(r + 10, c->cport);
    st16(r + 12, c->vport);
    st16(r + 14, c->dport);
    /* the v1 fwmark field: the conn's service mark, so a backup finds the fwmark service */
    const lvs_dest *d = c->dest;
    st32(r + 16, d && d->vproto == LVS_PROTO_FWM ? d->vaddr.ip : 0);
    /* the timeout of the current state, as the kernel sends; now >= 0 means "remaining" */
    uint32_t t = c->timeout;
    if (now >= 0.0) {
        double rem = c->expires - now;
        t = rem <= 0 ? 0 : (uint32_t)(rem + 0.5);
    }
    st32(r + 20, t);
    uint32_t base = base_size(c->af);
    uint32_t asz = (base - 24) / 3;
    st_addr(r + 24, c->af, c->caddr);
    st_addr(r + 24 + asz, c->af, c->vaddr);
    st_addr(r + 24 + 2 * asz, c->af, c->daddr);
    if (size == base)
        return size;
    const lvs_conn_ext *x = lvs_ext_of(e, c);
    uint8_t *o = r + base;
    o[0] = OPT_SEQ_DATA;
    o[1] = 24;
    put_seq(o + 2, &x->in_seq);
    put_seq(o + 14, &x->out_seq);
    o += 26;
    o[0] = OPT_PYLVS_TCPADJ;
    o[1] = 8;
    st32(o + 2, x->ts_off);
    o[6] = (uint8_t)x->win_shift;
    o[7] = x->flags;
    o[8] = (c->flags & LVS_CONN_F_SYNPROXY) ? 1 : 0;
    o[9] = 0;
    return size;
}

/* Options of a received record: 0, or -1 when a mandatory one is unknown or one is cut. */
static int parse_options(const uint8_t *o, uint32_t n, lvs_conn_ext *x, int *have, int *sp)
{
    uint32_t i = 0;
    while (i + 2 <= n) {
        uint8_t type = o[i], len = o[i + 1];
        if (!len || i + 2 + len > n)
            return -1;
        const uint8_t *v = o + i + 2;
        if (type == OPT_SEQ_DATA && len == 24) {
            get_seq(v, &x->in_seq);
            get_seq(v + 12, &x->out_seq);
            *have = 1;
        } else if (type == OPT_PYLVS_TCPADJ && len >= 7) {
            x->ts_off = ld32(v);
            x->win_shift = (int8_t)v[4];
            x->flags = v[5];
            *sp = v[6] & 1;
            *have = 1;
        } else if (!(type & OPT_F_PARAM)) {
            return -1;
        }
        i += 2u + len;
    }
    return 0;
}

#define SYNC_BUF_MAX (1u << 20)

static void sync_append(lvs_engine *e, const lvs_conn *c, double now)
{
    uint32_t size = rec_size(c);
    if (e->sync_len + size > e->sync_cap) {
        uint32_t ncap = e->sync_cap ? e->sync_cap * 2 : 64 * LVS_SYNC_RECORD_SIZE;
        uint8_t *nb = ncap <= SYNC_BUF_MAX ? realloc(e->sync_buf, ncap) : NULL;
        if (!nb) {
            e->counters[LVS_CNT_SYNC_OVERFLOW]++;
            return;
        }
        e->sync_buf = nb;
        e->sync_cap = ncap;
    }
    e->sync_len += encode(e, e->sync_buf + e->sync_len, c, now);
}

void lvs_sync_free(lvs_engine *e)
{
    free(e->sync_buf);
    e->sync_buf = NULL;
    e->sync_len = e->sync_cap = 0;
}

uint32_t lvs_sync_pending(lvs_engine *e)
{
    return e->sync_len;
}

uint32_t lvs_sync_collect(lvs_engine *e, uint8_t *out, uint32_t cap)
{
    /* whole records only: walk the sizes up to cap */
    uint32_t n = 0;
    while (n < e->sync_len) {
        uint32_t size = ld16(e->sync_buf + n + 2) & 0x0fff;
        if (n + size > cap)
            break;
        n += size;
    }
    if (n == 0)
        return 0; /* sync_buf may still be NULL: memcpy from NULL is undefined even for 0 */
    memcpy(out, e->sync_buf, n);
    memmove(e->sync_buf, e->sync_buf + n, e->sync_len - n);
    e->sync_len -= n;
    return n;
}

typedef struct full_ctx {
    uint8_t *out;
    uint32_t cap;
    uint32_t n;
    double now;
    int templates;
} full_ctx;

static void full_one(lvs_engine *e, lvs_conn *c, void *arg)
{
    full_ctx *x = arg;
    /* templates first, so a receiver can link conns to them */
    if (((c->flags & LVS_CONN_F_TEMPLATE) != 0) != x->templates)
        return;
    uint32_t size = rec_size(c);
    if (x->n + size <= x->cap)
        encode(e, x->out + x->n, c, x->now);
    x->n += size;
}

uint32_t lvs_sync_full(lvs_engine *e, uint8_t *out, uint32_t cap, double now)
{
    full_ctx x = {out, cap, 0, now, 1};
    lvs_conn_for_each(e, full_one, &x);
    x.templates = 0;
    lvs_conn_for_each(e, full_one, &x);
    return x.n;
}

/* ip_vs_proc_conn: find or create, bind to the local dest by address:port.  Unlike the
 * kernel, a record whose service or dest is unknown here is skipped (and counted), not kept
 * unbound. */
int lvs_sync_apply(lvs_engine *e, const uint8_t *data, uint32_t len, double now,
                   uint32_t *skipped)
{
    int applied = 0;
    *skipped = 0;
    uint32_t size;
    for (uint32_t off = 0; off + 4 <= len; off += rec_step(size)) {
        const uint8_t *r = data + off;
        uint8_t af = (r[0] & 1) ? LVS_AF_INET6 : LVS_AF_INET;
        uint8_t proto = r[1];
        size = ld16(r + 2) & 0x0fff;
        if (size < LVS_SYNC_RECORD_SIZE || off + size > len) {
            /* no way to find the next record */
            (*skipped)++;
            break;
        }
        uint32_t base = base_size(af);
        if (size < base || (r[0] & ~1u) != 0) {
            (*skipped)++;
            continue;
        }
        lvs_conn_ext opt;
        int have_opt = 0, sp = 0;
        memset(&opt, 0, sizeof(opt));
        uint32_t flags = ld32(r + 4) & LVS_CONN_F_SYNC_MASK;
        uint16_t state = ld16(r + 8);
        uint16_t cport = ld16(r + 10), vport = ld16(r + 12), dport = ld16(r + 14);
        uint32_t fwmark = ld32(r + 16);
        uint32_t timeout = ld32(r + 20);
        lvs_addr caddr, vaddr, daddr;
        if (af == LVS_AF_INET6) {
            caddr = ld_addr6(r + 24);
            vaddr = ld_addr6(r + 40);
            daddr = ld_addr6(r + 56);
        } else {
            caddr = lvs_addr4(ld32(r + 24));
            vaddr = lvs_addr4(ld32(r + 28));
            daddr = lvs_addr4(ld32(r + 32));
        }
        int tmpl = (flags & LVS_CONN_F_TEMPLATE) != 0;
        if (parse_options(r + base, size - base, &opt, &have_opt, &sp) < 0 ||
            (proto != LVS_PROTO_TCP && proto != LVS_PROTO_UDP &&
             !(tmpl && proto == LVS_PROTO_FWM)) ||
            (!tmpl && (proto == LVS_PROTO_TCP ? state >= LVS_TCP_S_LAST : state != 0))) {
            (*skipped)++;
            continue;
        }
        if (tmpl)
            state = 0; /* ip_vs_proc_sync_conn: a template's state is not used */
        if (timeout > 2678400)
            timeout = 2678400;
        if (timeout == 0) /* ip_vs_proc_conn: the state's default, 180 s for a template */
            timeout = tmpl ? 180
                           : proto == LVS_PROTO_TCP ? e->tcp_timeouts[state] : e->udp_timeout;
        lvs_conn *c = tmpl ? lvs_tmpl_get(e, af, proto, caddr, vaddr, vport)
                           : lvs_conn_in_get(e, af, proto, caddr, cport, vaddr, vport);
        if (c && (!lvs_addr_eq(c->daddr, daddr) || c->dport != dport)) {
            /* the master rebound it: drop ours (a template in control just stops matching) */
            if (tmpl && c->n_control > 0)
                lvs_conn_unhash_template(e, c);
            else
                lvs_conn_expire_now(e, c, now);
            c = NULL;
        }
        if (!c) {
            lvs_service *svc =
                fwmark ? lvs_svc_lookup(e, af, LVS_PROTO_FWM, lvs_addr4(fwmark), 0)
                       : lvs_svc_lookup(e, af, proto, vaddr, vport);
            if (!svc && !fwmark)
                svc = lvs_svc_lookup(e, af, proto, vaddr, 0);
            lvs_dest *d = NULL;
            if (svc) {
                for (d = svc->destinations; d; d = d->next)
                    /* a port-0 dest keeps the client's port: any dport is its */
                    if (lvs_addr_eq(d->addr, daddr) &&
                        (d->port == dport || d->port == 0 || (tmpl && dport == 0)))
                        break;
            }
            if (!d) {
                (*skipped)++;
                continue;
            }
            lvs_conn_key ck = {af, proto, caddr, vaddr, daddr, cport, vport, dport};
            c = lvs_conn_new(e, &ck, (uint16_t)(flags | LVS_CONN_F_SYNC), d, now);
            if (!c) {
                e->counters[LVS_CNT_TABLE_FULL]++;
                (*skipped)++;
                continue;
            }
            /* like ip_vs_proc_conn, a synced conn is not linked to its template: the
             * template lives on its own timer, refreshed by its own records */
        } else {
            /* update only the INACTIVE bit and move the counters accordingly */
            if (!tmpl)
                lvs_conn_set_active(c, !(flags & LVS_CONN_F_INACTIVE));
        }
        if (have_opt && !tmpl && proto == LVS_PROTO_TCP) {
            lvs_conn_ext *x = lvs_ext_attach(e, c);
            if (x) {
                void *pending = x->pending;
                *x = opt;
                x->pending = pending;
                c->flags |= (uint16_t)(flags & LVS_CONN_F_SEQ_MASK);
                if (sp)
                    c->flags |= LVS_CONN_F_SYNPROXY;
            }
        }
        c->state = (uint8_t)state;
        if (c->state != LVS_TCP_S_ESTABLISHED || proto != LVS_PROTO_TCP)
            lvs_offload_recall(e, c); /* a peer moved it on: the engine takes it back */
        c->old_state = (uint8_t)state;
        c->in_pkts = e->sync_threshold;
        c->timeout = timeout;
        c->flags |= LVS_CONN_F_SYNC;
        lvs_conn_arm(e, c, now);
        applied++;
    }
    return applied;
}
