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
    "ftp_data_entry",   "ftp_rewrite",       "ftp_no_room", NULL,
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

