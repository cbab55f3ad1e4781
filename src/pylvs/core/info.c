/*
 * info.c — what the engine shows Python (the listing half of ip_vs_ctl.c): services, dests,
 * connections, engine totals and the drop/pass counters by reason.
 */
#include <string.h>

#include "engine.h"

uint32_t lvs_svc_count(lvs_engine *e)
{
    return e->nsvcs;
}

int lvs_svc_info_get(lvs_engine *e, uint32_t idx, lvs_svc_info *out)
{
    if (idx >= e->nsvcs)
        return -LVS_E_SRCH;
    const lvs_service *s = e->svcs[idx];
    memset(out, 0, sizeof(*out));
    out->af = s->af;
    out->proto = s->proto;
    out->addr = s->addr;
    out->port = s->port;
    strncpy(out->sched, s->sched ? s->sched->name : "", sizeof(out->sched) - 1);
    out->flags = s->flags;
    out->timeout = s->timeout;
    out->netmask = s->netmask;
    out->mh_table_size = s->sched_params.mh_table_size;
    out->num_dests = s->num_dests;
    lvs_stats_info_fill(&out->stats, &s->stats, &s->zero, &s->est);
    return 0;
}

int lvs_svc_info_find(lvs_engine *e, uint8_t af, uint8_t proto, const lvs_addr *addr,
                      uint16_t port, lvs_svc_info *out)
{
    const lvs_service *svc = lvs_svc_lookup(e, af, proto, *addr, port);
    return svc ? lvs_svc_info_get(e, svc->index, out) : -LVS_E_SRCH;
}

static void dest_info_fill(lvs_dest_info *o, const lvs_dest *d)
{
    memset(o, 0, sizeof(*o));
    o->addr = d->addr;
    o->port = d->port;
    o->weight = d->weight;
    o->last_weight = d->last_weight;
    o->u_threshold = d->u_threshold;
    o->l_threshold = d->l_threshold;
    o->flags = d->flags;
    o->activeconns = d->activeconns;
    o->inactconns = d->inactconns;
    o->persistconns = d->persistconns;
    o->refcnt = d->refcnt;
    lvs_stats_info_fill(&o->stats, &d->stats, &d->zero, &d->est);
}

int lvs_dest_info_list(lvs_engine *e, uint8_t af, uint8_t proto, const lvs_addr *addr,
                       uint16_t port, lvs_dest_info *out, uint32_t cap)
{
    lvs_service *svc = lvs_svc_lookup(e, af, proto, *addr, port);
    if (!svc)
        return -LVS_E_SRCH;
    uint32_t n = 0;
    for (const lvs_dest *d = svc->destinations; d; d = d->next, n++)
        if (n < cap)
            dest_info_fill(&out[n], d);
    return (int)n;
}

int lvs_dest_info_find(lvs_engine *e, const lvs_dest_conf *c, lvs_dest_info *out)
{
    lvs_service *svc = lvs_svc_lookup(e, c->af, c->proto, c->vaddr, c->vport);
    if (!svc)
        return -LVS_E_SRCH;
    const lvs_dest *d = lvs_dest_lookup(svc, c->addr, c->port);
    if (!d)
        return -LVS_E_NOENT;
    dest_info_fill(out, d);
    return 0;
}

/* One row of LVS_RATE_ROW uint64 per service and per dest (see api.h). */
static uint64_t *rate_row(uint64_t *o, int is_dest, uint8_t af, uint8_t proto, uint16_t port,
                          const lvs_addr *addr, const lvs_stats *cur, const lvs_stats *zero,
                          const lvs_est *est, int32_t weight)
{
    lvs_stats_info st;
    lvs_stats_info_fill(&st, cur, zero, est);
    o[0] = (uint64_t)is_dest | (uint64_t)af << 8 | (uint64_t)proto << 16 | (uint64_t)port << 32;
    for (int i = 0; i < 4; i++)
        o[1 + i] = af == LVS_AF_INET6 ? addr->ip6[i] : (i == 0 ? addr->ip : 0);
    o[5] = st.cps;
    o[6] = st.inpps;
    o[7] = st.outpps;
    o[8] = st.inbps;
    o[9] = st.outbps;
    o[10] = (uint64_t)(int64_t)weight;
    return o + LVS_RATE_ROW;
}

uint32_t lvs_rate_rows(lvs_engine *e, uint64_t *out, uint32_t cap)
{
    uint32_t n = 0;
    for (uint32_t i = 0; i < e->nsvcs; i++) {
        const lvs_service *s = e->svcs[i];
        if (n++ < cap)
            out = rate_row(out, 0, s->af, s->proto, s->port, &s->addr, &s->stats, &s->zero,
                           &s->est, 0);
        for (const lvs_dest *d = s->destinations; d; d = d->next)
            if (n++ < cap)
                out = rate_row(out, 1, s->af, s->proto, d->port, &d->addr, &d->stats, &d->zero,
                               &d->est, d->weight);
    }
    return n;
}

typedef struct list_ctx {
    lvs_conn_info *out;
    uint32_t cap;
    uint32_t n;
} list_ctx;

static void list_one(lvs_engine *e, lvs_conn *c, void *arg)
{
    list_ctx *x = arg;
    if (x->n < x->cap) {
        lvs_conn_info *o = &x->out[x->n];
        o->af = c->af;
        o->proto = c->proto;
        o->state = c->state;
        o->flags = c->flags & (uint16_t)~LVS_CONN_F_INTERNAL;
        if (c->flags & LVS_CONN_F_INHASH)
            o->flags |= LVS_CONN_F_HASHED;
        o->caddr = c->caddr;
        o->vaddr = c->vaddr;
        o->daddr = c->daddr;
        o->cport = c->cport;
        o->vport = c->vport;
        o->dport = c->dport;
        o->expires = c->expires;
        o->in_pkts = c->in_pkts;
        o->n_control = c->n_control;
        /* slot indexes; engine.py maps them to positions in the listing */
        o->index = (int32_t)lvs_conn_index_of(e, c);
        o->control_index = c->control != LVS_NO_SLOT ? (int32_t)c->control : -1;
    }
    x->n++;
}

uint32_t lvs_conn_list(lvs_engine *e, lvs_conn_info *out, uint32_t cap)
{
    list_ctx x = {out, cap, 0};
    lvs_conn_for_each(e, list_one, &x);
    return x.n;
}

void lvs_engine_info_get(lvs_engine *e, lvs_engine_info *out)
{
    memset(out, 0, sizeof(*out));
    lvs_stats_info_fill(&out->stats, &e->stats, &e->zero, &e->est);
    out->connections = e->nconns;
    out->templates = e->ntemplates;
    out->max_connections = e->max_conns;
    out->conn_entry_size = (uint32_t)sizeof(lvs_conn);
    uint64_t buckets = 2ull * (e->tab_mask + 1ull) * sizeof(*e->in_tab);
    out->bytes_per_conn = (uint32_t)(sizeof(lvs_conn) + (buckets + e->max_conns - 1) / e->max_conns);
    out->num_services = e->nsvcs;
    out->trash_dests = e->ntrash;
}

static const char *const counter_names[LVS_CNT_MAX + 1] = {
    "truncated",        "bad_version",       "bad_ihl",      "bad_total_length",
    "bad_ip_checksum",  "fragment",          "unknown_proto", "no_service",
    "tcp_no_syn",       "table_full",        "no_dest",      "dest_unavailable",
    "ttl_exceeded",     "bad_icmp_checksum", "icmp_no_conn", "icmp_other",
    "not_ours",         "reply_short_stride", "sync_overflow", "defense_drop_packet",
    "ipv6_ext_header",
    "synproxy_syn",     "synproxy_ack_ok",   "synproxy_bad_cookie", "synproxy_expired_cookie",
    "synproxy_pending_drop", "synproxy_held_truncated", "synproxy_held",
    "sloppy_in",        "sloppy_reply",
    "ftp_data_entry",   "ftp_rewrite",       "ftp_no_room",
    "syncookie_syn",    "syncookie_ack_ok",  "syncookie_bad_cookie", "syncookie_expired_cookie",
    NULL,
};

const char *const *lvs_counter_names(void)
{
    return counter_names;
}

uint32_t lvs_counter_values(lvs_engine *e, uint64_t *out, uint32_t cap)
{
    uint32_t n = cap < LVS_CNT_MAX ? cap : LVS_CNT_MAX;
    memcpy(out, e->counters, n * sizeof(uint64_t));
    return LVS_CNT_MAX;
}

