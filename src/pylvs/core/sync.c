/*
 * sync.c — connection synchronisation (ip_vs_sync.c, docs/ipvs.md#sync): when the master produces a
 * record (ip_vs_sync_conn), the record itself (IPVS sync v1: the 36-byte IPv4 entry or the
 * 72-byte IPv6 entry, format in engine.py), and installing records on a backup (ip_vs_proc_conn).  It uses the connection
 * table; the table reaches it only through the engine's tmpl_rearmed hook.
 */
#include <stdlib.h>
#include <string.h>

#include "packet.h"

/* ip_vs_sync_conn_needed (sync_refresh_period = 0): TCP only in the states a backup needs,
 * at once on a change to one of them other than ESTABLISHED, otherwise when the incoming
 * packet count hits the threshold within the period.  Templates skip the count check. */
static int sync_needed(const lvs_engine *e, lvs_conn *c, uint32_t pkts)
{
    int tmpl = (c->flags & LVS_CONN_F_TEMPLATE) != 0;
    if (!tmpl && c->proto == LVS_PROTO_TCP) {
        static const uint32_t synced =
            1u << LVS_TCP_S_ESTABLISHED | 1u << LVS_TCP_S_FIN_WAIT | 1u << LVS_TCP_S_CLOSE |
            1u << LVS_TCP_S_CLOSE_WAIT | 1u << LVS_TCP_S_TIME_WAIT;
        if (!((1u << c->state) & synced))
            return 0;
        if (c->state != c->old_state && c->state != LVS_TCP_S_ESTABLISHED)
            goto set;
    }
    if (e->sync_period > 0) {
        if (!tmpl && pkts % e->sync_period != e->sync_threshold)
            return 0;
    } else if (pkts != e->sync_threshold) {
        return 0;
    }
set:
    c->old_state = c->state;
    return 1;
}

static void sync_append(lvs_engine *e, const lvs_conn *c, double now);

/* ip_vs_sync_conn: the conn, then its controller (a template's own packet count goes up
 * every time, whether or not the conn itself was sent). */
void lvs_sync_conn(lvs_engine *e, lvs_conn *c, uint32_t pkts)
{
    for (;;) {
        if (sync_needed(e, c, pkts))
            sync_append(e, c, -1.0);
        c = lvs_conn_control(e, c);
        if (!c)
            return;
        pkts = (c->flags & LVS_CONN_F_TEMPLATE) ? ++c->in_pkts : e->sync_threshold;
    }
}

void lvs_sync_tmpl_rearmed(lvs_engine *e, lvs_conn *c)
{
    /* a template still in control outlived its timeout: the backup must keep it too */
    if (e->sync_master)
        lvs_sync_conn(e, c, e->sync_threshold);
}

/* ---- sync records (format documented in engine.py) ---- */

/* Bytes of c's record: struct ip_vs_sync_v4 or ip_vs_sync_v6. */
static inline uint32_t rec_size(const lvs_conn *c)
{
    return c->af == LVS_AF_INET6 ? LVS_SYNC_RECORD_SIZE_V6 : LVS_SYNC_RECORD_SIZE;
}

static void st_addr(uint8_t *r, uint8_t af, lvs_addr a)
{
    if (af == LVS_AF_INET6)
        st_addr6(r, a);
    else
        st32(r, a.ip);
}

static void encode(uint8_t *r, const lvs_conn *c, double now)
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
    st32(r + 16, 0);
    /* the timeout of the current state, as the kernel sends; now >= 0 means "remaining" */
    uint32_t t = c->timeout;
    if (now >= 0.0) {
        double rem = c->expires - now;
        t = rem <= 0 ? 0 : (uint32_t)(rem + 0.5);
    }
    st32(r + 20, t);
    uint32_t asz = (size - 24) / 3;
    st_addr(r + 24, c->af, c->caddr);
    st_addr(r + 24 + asz, c->af, c->vaddr);
    st_addr(r + 24 + 2 * asz, c->af, c->daddr);
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
    encode(e->sync_buf + e->sync_len, c, now);
    e->sync_len += size;
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
        encode(x->out + x->n, c, x->now);
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
    for (uint32_t off = 0; off + 4 <= len; off += size) {
        const uint8_t *r = data + off;
        uint8_t af = (r[0] & 1) ? LVS_AF_INET6 : LVS_AF_INET;
        uint8_t proto = r[1];
        size = ld16(r + 2) & 0x0fff;
        uint32_t want = af == LVS_AF_INET6 ? LVS_SYNC_RECORD_SIZE_V6 : LVS_SYNC_RECORD_SIZE;
        if (size < LVS_SYNC_RECORD_SIZE || off + size > len) {
            /* no way to find the next record */
            (*skipped)++;
            break;
        }
        if (size != want || (r[0] & ~1u) != 0) {
            (*skipped)++;
            continue;
        }
        uint32_t flags = ld32(r + 4) & LVS_CONN_F_SYNC_MASK;
        uint16_t state = ld16(r + 8);
        uint16_t cport = ld16(r + 10), vport = ld16(r + 12), dport = ld16(r + 14);
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
        if ((proto != LVS_PROTO_TCP && proto != LVS_PROTO_UDP) ||
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
            lvs_service *svc = lvs_svc_lookup(e, af, proto, vaddr, vport);
            if (!svc)
                svc = lvs_svc_lookup(e, af, proto, vaddr, 0);
            lvs_dest *d = NULL;
            if (svc) {
                for (d = svc->destinations; d; d = d->next)
                    if (lvs_addr_eq(d->addr, daddr) && (d->port == dport || (tmpl && dport == 0)))
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
        c->state = (uint8_t)state;
        c->old_state = (uint8_t)state;
        c->in_pkts = e->sync_threshold;
        c->timeout = timeout;
        c->flags |= LVS_CONN_F_SYNC;
        lvs_conn_arm(e, c, now);
        applied++;
    }
    return applied;
}
