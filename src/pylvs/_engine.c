/*
 * _engine.c — engine lifetime, services and dests (with the kernel's dest trash and threshold
 * rules, ipvs.md §4), inspection, -Z baselines and the rate estimator (§5), sync records (§6).
 */
#include <stdlib.h>
#include <string.h>

#include "_engine.h"

/* ---- services ---- */

static inline uint32_t svc_hash(uint8_t proto, uint32_t addr, uint16_t port)
{
    return (uint32_t)lvs_hash_mix((uint64_t)addr << 24 ^ (uint64_t)port << 8 ^ proto) & 255;
}

lvs_service *lvs_svc_lookup(lvs_engine *e, uint8_t proto, uint32_t addr, uint16_t port)
{
    for (lvs_service *s = e->svc_tab[svc_hash(proto, addr, port)]; s; s = s->hnext)
        if (s->addr == addr && s->port == port && s->proto == proto)
            return s;
    return NULL;
}

lvs_dest *lvs_dest_lookup(lvs_service *svc, uint32_t addr, uint16_t port)
{
    for (lvs_dest *d = svc->destinations; d; d = d->next)
        if (d->addr == addr && d->port == port)
            return d;
    return NULL;
}

/* ---- VIP set: open addressing over addr+1, rebuilt when services change ---- */

int lvs_is_vip(const lvs_engine *e, uint32_t addr)
{
    if (!e->vip_set)
        return 0;
    uint32_t key = addr + 1;
    uint32_t i = (uint32_t)lvs_hash_mix(addr) & e->vip_mask;
    for (;;) {
        uint32_t v = e->vip_set[i];
        if (v == key)
            return 1;
        if (v == 0)
            return 0;
        i = (i + 1) & e->vip_mask;
    }
}

static int vip_rebuild(lvs_engine *e)
{
    uint32_t n = 16;
    while (n < e->nsvcs * 4)
        n <<= 1;
    uint32_t *set = calloc(n, sizeof(uint32_t));
    if (!set)
        return -LVS_E_NOMEM;
    for (uint32_t s = 0; s < e->nsvcs; s++) {
        uint32_t addr = e->svcs[s]->addr;
        uint32_t i = (uint32_t)lvs_hash_mix(addr) & (n - 1);
        while (set[i] != 0 && set[i] != addr + 1)
            i = (i + 1) & (n - 1);
        set[i] = addr + 1;
    }
    free(e->vip_set);
    e->vip_set = set;
    e->vip_mask = n - 1;
    return 0;
}

/* ---- lifetime ---- */

static const uint32_t default_tcp_timeouts[LVS_TCP_S_LAST] = {
    2, 900, 120, 60, 120, 120, 10, 60, 30, 120, 120,
};

lvs_engine *lvs_engine_new(uint32_t max_conns, uint64_t seed)
{
    lvs_engine *e = calloc(1, sizeof(*e));
    if (!e)
        return NULL;
    if (max_conns == 0)
        max_conns = 1;
    e->seed = lvs_hash_mix(seed ^ 0x5bd1e9955bd1e995ULL);
    if (lvs_conn_table_init(e, max_conns) < 0) {
        lvs_engine_free(e);
        return NULL;
    }
    memcpy(e->tcp_timeouts, default_tcp_timeouts, sizeof(e->tcp_timeouts));
    e->udp_timeout = 300;
    e->conn_reuse_mode = 1;
    e->sync_threshold = 3;
    e->sync_period = 50;
    if (vip_rebuild(e) < 0) {
        lvs_engine_free(e);
        return NULL;
    }
    return e;
}

static void svc_free(lvs_engine *e, lvs_service *svc);

void lvs_engine_free(lvs_engine *e)
{
    if (!e)
        return;
    while (e->nsvcs)
        svc_free(e, e->svcs[e->nsvcs - 1]);
    /* every remaining conn holds a dest reference; free the table and then the trash */
    lvs_conn_table_free(e);
    while (e->trash) {
        lvs_dest *d = e->trash;
        e->trash = d->next;
        free(d);
    }
    free(e->svcs);
    free(e->vip_set);
    free(e->sync_buf);
    free(e);
}

int lvs_engine_set_option(lvs_engine *e, int opt, int64_t value)
{
    switch (opt) {
    case LVS_OPT_EXPIRE_NODEST_CONN:
        e->expire_nodest_conn = value != 0;
        return 0;
    case LVS_OPT_EXPIRE_QUIESCENT_TEMPLATE:
        e->expire_quiescent_template = value != 0;
        return 0;
    case LVS_OPT_CONN_REUSE_MODE:
        if (value < 0 || value > 3)
            return -LVS_E_RANGE;
        e->conn_reuse_mode = (int)value;
        return 0;
    case LVS_OPT_SYNC_MASTER:
        e->sync_master = value != 0;
        return 0;
    case LVS_OPT_SYNC_THRESHOLD:
        if (value < 0 || value > 1000000)
            return -LVS_E_RANGE;
        e->sync_threshold = (uint32_t)value;
        return 0;
    case LVS_OPT_SYNC_PERIOD:
        if (value < 0 || value > 1000000)
            return -LVS_E_RANGE;
        e->sync_period = (uint32_t)value;
        return 0;
    default:
        return -LVS_E_INVAL;
    }
}

int64_t lvs_engine_get_option(lvs_engine *e, int opt)
{
    switch (opt) {
    case LVS_OPT_EXPIRE_NODEST_CONN:
        return e->expire_nodest_conn;
    case LVS_OPT_EXPIRE_QUIESCENT_TEMPLATE:
        return e->expire_quiescent_template;
    case LVS_OPT_CONN_REUSE_MODE:
        return e->conn_reuse_mode;
    case LVS_OPT_SYNC_MASTER:
        return e->sync_master;
    case LVS_OPT_SYNC_THRESHOLD:
        return e->sync_threshold;
    case LVS_OPT_SYNC_PERIOD:
        return e->sync_period;
    default:
        return -LVS_E_INVAL;
    }
}

void lvs_engine_set_timeouts(lvs_engine *e, uint32_t tcp, uint32_t tcpfin, uint32_t udp)
{
    if (tcp)
        e->tcp_timeouts[LVS_TCP_S_ESTABLISHED] = tcp;
    if (tcpfin)
        e->tcp_timeouts[LVS_TCP_S_FIN_WAIT] = tcpfin;
    if (udp)
        e->udp_timeout = udp;
}

void lvs_engine_get_timeouts(lvs_engine *e, uint32_t *tcp, uint32_t *tcpfin, uint32_t *udp)
{
    *tcp = e->tcp_timeouts[LVS_TCP_S_ESTABLISHED];
    *tcpfin = e->tcp_timeouts[LVS_TCP_S_FIN_WAIT];
    *udp = e->udp_timeout;
}

/* ---- services ---- */

static int svc_apply_conf(lvs_service *svc, const lvs_svc_conf *c)
{
    svc->flags = (c->flags & (LVS_SVC_F_SCHED1 | LVS_SVC_F_SCHED2 | LVS_SVC_F_SCHED3)) |
                 (svc->flags & LVS_SVC_F_HASHED);
    if (c->timeout)
        svc->flags |= LVS_SVC_F_PERSISTENT;
    svc->timeout = c->timeout;
    svc->netmask = c->netmask;
    svc->sched_params.mh_table_size = c->mh_table_size;
    return 0;
}

static int check_svc_conf(const lvs_svc_conf *c, const lvs_scheduler **sched)
{
    if (c->proto != LVS_PROTO_TCP && c->proto != LVS_PROTO_UDP)
        return -LVS_E_INVAL;
    if (c->port == 0 && c->timeout == 0)
        return -LVS_E_INVAL; /* port-zero services must be persistent */
    if (c->timeout > 2678400)
        return -LVS_E_RANGE;
    *sched = lvs_sched_find(c->sched ? c->sched : "wlc");
    return *sched ? 0 : -LVS_E_INVAL;
}

int lvs_svc_add(lvs_engine *e, const lvs_svc_conf *c)
{
    const lvs_scheduler *sched;
    int r = check_svc_conf(c, &sched);
    if (r < 0)
        return r;
    if (lvs_svc_lookup(e, c->proto, c->addr, c->port))
        return -LVS_E_EXIST;
    if (e->nsvcs == e->svcs_cap) {
        uint32_t ncap = e->svcs_cap ? e->svcs_cap * 2 : 8;
        lvs_service **ns = realloc(e->svcs, ncap * sizeof(*ns));
        if (!ns)
            return -LVS_E_NOMEM;
        e->svcs = ns;
        e->svcs_cap = ncap;
    }
    lvs_service *svc = calloc(1, sizeof(*svc));
    if (!svc)
        return -LVS_E_NOMEM;
    svc->proto = c->proto;
    svc->addr = c->addr;
    svc->port = c->port;
    svc_apply_conf(svc, c);
    svc->rng_state = lvs_hash_mix(e->seed ^ ((uint64_t)c->addr << 24 | (uint64_t)c->port << 8 |
                                             c->proto)) | 1;
    svc->sched = sched;
    if (sched->init_service) {
        r = sched->init_service(svc);
        if (r < 0) {
            free(svc);
            return r;
        }
    }
    uint32_t h = svc_hash(svc->proto, svc->addr, svc->port);
    svc->hnext = e->svc_tab[h];
    e->svc_tab[h] = svc;
    svc->flags |= LVS_SVC_F_HASHED;
    svc->index = e->nsvcs;
    e->svcs[e->nsvcs++] = svc;
    if (vip_rebuild(e) < 0) {
        svc_free(e, svc);
        return -LVS_E_NOMEM;
    }
    return 0;
}

int lvs_svc_edit(lvs_engine *e, const lvs_svc_conf *c)
{
    const lvs_scheduler *sched;
    int r = check_svc_conf(c, &sched);
    if (r < 0)
        return r;
    lvs_service *svc = lvs_svc_lookup(e, c->proto, c->addr, c->port);
    if (!svc)
        return -LVS_E_SRCH;
    lvs_service old = *svc;
    svc_apply_conf(svc, c);
    int params_changed = old.sched_params.mh_table_size != svc->sched_params.mh_table_size ||
                         (old.flags ^ svc->flags) & (LVS_SVC_F_SCHED1 | LVS_SVC_F_SCHED2 |
                                                     LVS_SVC_F_SCHED3);
    if (sched != svc->sched || params_changed) {
        /* ip_vs_edit_service: unbind the old scheduler, bind the new one (its init_service
         * sees the existing dests); on failure restore the old one */
        if (svc->sched && svc->sched->done_service)
            svc->sched->done_service(svc);
        svc->sched_data = NULL;
        svc->sched = sched;
        r = sched->init_service ? sched->init_service(svc) : 0;
        if (r < 0) {
            svc->flags = old.flags;
            svc->timeout = old.timeout;
            svc->netmask = old.netmask;
            svc->sched_params = old.sched_params;
            svc->sched = old.sched;
            svc->sched_data = NULL;
            if (old.sched->init_service)
                old.sched->init_service(svc);
            return r;
        }
    }
    return 0;
}

/* Move a dest out of its service's list into the trash, or free it if unreferenced. */
static void dest_to_trash(lvs_engine *e, lvs_dest *d)
{
    d->flags &= ~(LVS_DEST_F_AVAILABLE | LVS_DEST_F_OVERLOAD);
    if (d->refcnt == 0) {
        free(d);
        return;
    }
    d->next = e->trash;
    e->trash = d;
    e->ntrash++;
}

static void svc_free(lvs_engine *e, lvs_service *svc)
{
    if (svc->sched && svc->sched->done_service)
        svc->sched->done_service(svc);
    svc->sched_data = NULL;
    lvs_dest *d = svc->destinations;
    while (d) {
        lvs_dest *next = d->next;
        d->svc = NULL;
        dest_to_trash(e, d);
        d = next;
    }
    svc->destinations = NULL;
    lvs_service **pp = &e->svc_tab[svc_hash(svc->proto, svc->addr, svc->port)];
    while (*pp && *pp != svc)
        pp = &(*pp)->hnext;
    if (*pp)
        *pp = svc->hnext;
    uint32_t idx = svc->index;
    memmove(&e->svcs[idx], &e->svcs[idx + 1], (e->nsvcs - idx - 1) * sizeof(*e->svcs));
    e->nsvcs--;
    for (uint32_t i = idx; i < e->nsvcs; i++)
        e->svcs[i]->index = i;
    free(svc);
}

int lvs_svc_del(lvs_engine *e, uint8_t proto, uint32_t addr, uint16_t port)
{
    lvs_service *svc = lvs_svc_lookup(e, proto, addr, port);
    if (!svc)
        return -LVS_E_SRCH;
    svc_free(e, svc);
    vip_rebuild(e);
    return 0;
}

/* ---- dests ---- */

static int check_dest_conf(const lvs_dest_conf *c)
{
    if (c->weight < 0)
        return -LVS_E_RANGE;
    if (c->l_threshold > c->u_threshold)
        return -LVS_E_RANGE;
    return 0;
}

/* __ip_vs_update_dest: weight, thresholds and the OVERLOAD clearing rule. */
static void dest_update(lvs_dest *d, const lvs_dest_conf *c)
{
    d->weight = c->weight;
    if (c->weight > 0)
        d->last_weight = c->weight;
    d->flags |= LVS_DEST_F_AVAILABLE;
    if (c->u_threshold == 0 || c->u_threshold > d->u_threshold)
        d->flags &= ~LVS_DEST_F_OVERLOAD;
    d->u_threshold = c->u_threshold;
    d->l_threshold = c->l_threshold;
}

int lvs_dest_add(lvs_engine *e, const lvs_dest_conf *c)
{
    int r = check_dest_conf(c);
    if (r < 0)
        return r;
    lvs_service *svc = lvs_svc_lookup(e, c->proto, c->vaddr, c->vport);
    if (!svc)
        return -LVS_E_SRCH;
    if (lvs_dest_lookup(svc, c->addr, c->port))
        return -LVS_E_EXIST;
    /* a dest of the same virtual service still in the trash is revived with its counters */
    lvs_dest *d = NULL;
    for (lvs_dest **pp = &e->trash; *pp; pp = &(*pp)->next) {
        lvs_dest *t = *pp;
        if (t->addr == c->addr && t->port == c->port && t->vaddr == c->vaddr &&
            t->vport == c->vport && t->vproto == c->proto) {
            *pp = t->next;
            e->ntrash--;
            d = t;
            break;
        }
    }
    if (!d) {
        d = calloc(1, sizeof(*d));
        if (!d)
            return -LVS_E_NOMEM;
        d->addr = c->addr;
        d->port = c->port;
        d->vproto = c->proto;
        d->vaddr = c->vaddr;
        d->vport = c->vport;
    }
    d->svc = svc;
    dest_update(d, c);
    d->next = svc->destinations;
    svc->destinations = d;
    svc->num_dests++;
    if (svc->sched && svc->sched->add_dest) {
        r = svc->sched->add_dest(svc, d);
        if (r < 0) {
            svc->destinations = d->next;
            svc->num_dests--;
            dest_to_trash(e, d);
            return r;
        }
    }
    return 0;
}

int lvs_dest_edit(lvs_engine *e, const lvs_dest_conf *c)
{
    int r = check_dest_conf(c);
    if (r < 0)
        return r;
    lvs_service *svc = lvs_svc_lookup(e, c->proto, c->vaddr, c->vport);
    if (!svc)
        return -LVS_E_SRCH;
    lvs_dest *d = lvs_dest_lookup(svc, c->addr, c->port);
    if (!d)
        return -LVS_E_NOENT;
    dest_update(d, c);
    if (svc->sched && svc->sched->upd_dest)
        svc->sched->upd_dest(svc, d);
    return 0;
}

typedef struct expire_ctx {
    lvs_dest *dest;
    double now;
    int count;
} expire_ctx;

static void expire_if_dest(lvs_engine *e, lvs_conn *c, void *arg)
{
    expire_ctx *x = arg;
    if (c->dest == x->dest && !(c->flags & LVS_CONN_F_TEMPLATE)) {
        lvs_conn_expire_now(e, c, x->now);
        x->count++;
    }
}

static void expire_tmpl_if_dest(lvs_engine *e, lvs_conn *c, void *arg)
{
    expire_ctx *x = arg;
    if (c->dest == x->dest && (c->flags & LVS_CONN_F_TEMPLATE) && c->n_control == 0) {
        lvs_conn_expire_now(e, c, x->now);
        x->count++;
    }
}

/* An explicit admin action, so a full table walk is fine here (never on the packet path). */
static int expire_dest_conns(lvs_engine *e, lvs_dest *d)
{
    /* conns first so their templates lose control and can go too; hold a ref meanwhile */
    d->refcnt++;
    expire_ctx x = {d, -1e300, 0};
    /* `now` only matters for re-arming templates still in control, which we skip */
    lvs_conn_for_each(e, expire_if_dest, &x);
    lvs_conn_for_each(e, expire_tmpl_if_dest, &x);
    int n = x.count;
    lvs_dest_put(e, d);
    return n;
}

int lvs_dest_del(lvs_engine *e, const lvs_dest_conf *c, int expire_conns)
{
    lvs_service *svc = lvs_svc_lookup(e, c->proto, c->vaddr, c->vport);
    if (!svc)
        return -LVS_E_SRCH;
    lvs_dest *d = lvs_dest_lookup(svc, c->addr, c->port);
    if (!d)
        return -LVS_E_NOENT;
    if (svc->sched && svc->sched->del_dest)
        svc->sched->del_dest(svc, d);
    lvs_dest **pp = &svc->destinations;
    while (*pp != d)
        pp = &(*pp)->next;
    *pp = d->next;
    svc->num_dests--;
    if (expire_conns) {
        d->refcnt++;
        d->flags &= ~LVS_DEST_F_AVAILABLE;
        expire_dest_conns(e, d);
        d->refcnt--;
    }
    dest_to_trash(e, d);
    return 0;
}

int lvs_dest_expire_conns(lvs_engine *e, const lvs_dest_conf *c)
{
    lvs_service *svc = lvs_svc_lookup(e, c->proto, c->vaddr, c->vport);
    if (!svc)
        return -LVS_E_SRCH;
    lvs_dest *d = lvs_dest_lookup(svc, c->addr, c->port);
    if (!d)
        return -LVS_E_NOENT;
    return expire_dest_conns(e, d);
}

/* ---- inspection ---- */

static uint64_t est_read(int64_t avg, int shift)
{
    if (avg <= 0)
        return 0;
    return (uint64_t)(avg + ((int64_t)1 << (shift - 1)) - 1) >> shift;
}

static void stats_info(lvs_stats_info *o, const lvs_stats *cur, const lvs_stats *zero,
                       const lvs_est *est)
{
    o->conns = cur->conns - zero->conns;
    o->inpkts = cur->inpkts - zero->inpkts;
    o->outpkts = cur->outpkts - zero->outpkts;
    o->inbytes = cur->inbytes - zero->inbytes;
    o->outbytes = cur->outbytes - zero->outbytes;
    o->cps = est_read(est->cps, 10);
    o->inpps = est_read(est->inpps, 10);
    o->outpps = est_read(est->outpps, 10);
    o->inbps = est_read(est->inbps, 5);
    o->outbps = est_read(est->outbps, 5);
}

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
    out->proto = s->proto;
    out->addr = s->addr;
    out->port = s->port;
    strncpy(out->sched, s->sched ? s->sched->name : "", sizeof(out->sched) - 1);
    out->flags = s->flags;
    out->timeout = s->timeout;
    out->netmask = s->netmask;
    out->mh_table_size = s->sched_params.mh_table_size;
    out->num_dests = s->num_dests;
    stats_info(&out->stats, &s->stats, &s->zero, &s->est);
    return 0;
}

int lvs_dest_info_list(lvs_engine *e, uint8_t proto, uint32_t addr, uint16_t port,
                       lvs_dest_info *out, uint32_t cap)
{
    lvs_service *svc = lvs_svc_lookup(e, proto, addr, port);
    if (!svc)
        return -LVS_E_SRCH;
    uint32_t n = 0;
    for (const lvs_dest *d = svc->destinations; d; d = d->next, n++) {
        if (n >= cap)
            continue;
        lvs_dest_info *o = &out[n];
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
        stats_info(&o->stats, &d->stats, &d->zero, &d->est);
    }
    return (int)n;
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
        o->proto = c->proto;
        o->state = c->state;
        o->flags = c->flags & (uint16_t)~(LVS_CONN_F_INUSE | LVS_CONN_F_INHASH);
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
        o->control_index = c->control ? (int32_t)lvs_conn_index_of(e, c->control) : -1;
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
    stats_info(&out->stats, &e->stats, &e->zero, &e->est);
    out->connections = e->nconns;
    out->templates = e->ntemplates;
    out->max_connections = e->max_conns;
    out->conn_entry_size = (uint32_t)sizeof(lvs_conn);
    uint64_t buckets = 2ull * (e->tab_mask + 1ull) * sizeof(lvs_conn *);
    out->bytes_per_conn = (uint32_t)(sizeof(lvs_conn) + (buckets + e->max_conns - 1) / e->max_conns);
    out->num_services = e->nsvcs;
    out->trash_dests = e->ntrash;
}

static const char *const counter_names[LVS_CNT_MAX + 1] = {
    "truncated",        "bad_version",       "bad_ihl",      "bad_total_length",
    "bad_ip_checksum",  "fragment",          "unknown_proto", "no_service",
    "tcp_no_syn",       "table_full",        "no_dest",      "dest_unavailable",
    "ttl_exceeded",     "bad_icmp_checksum", "icmp_no_conn", "icmp_other",
    "not_ours",         "reply_short_stride", "sync_overflow", NULL,
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

/* ---- -Z and the estimator ---- */

static void est_zero(lvs_est *est, const lvs_stats *cur)
{
    memset(est, 0, sizeof(*est));
    est->last = *cur;
}

int lvs_engine_zero_stats(lvs_engine *e, uint8_t proto, uint32_t addr, uint16_t port)
{
    for (uint32_t i = 0; i < e->nsvcs; i++) {
        lvs_service *s = e->svcs[i];
        if (proto && !(s->proto == proto && s->addr == addr && s->port == port))
            continue;
        s->zero = s->stats;
        est_zero(&s->est, &s->stats);
        for (lvs_dest *d = s->destinations; d; d = d->next) {
            d->zero = d->stats;
            est_zero(&d->est, &d->stats);
        }
    }
    if (proto) {
        return lvs_svc_lookup(e, proto, addr, port) ? 0 : -LVS_E_SRCH;
    }
    e->zero = e->stats;
    est_zero(&e->est, &e->stats);
    return 0;
}

/* ip_vs_est.c estimation_timer body: one 2 s step. */
static void est_step(lvs_est *est, const lvs_stats *cur)
{
    int64_t rate;
    rate = (int64_t)((cur->conns - est->last.conns) << 9);
    est->cps += (rate - est->cps) >> 2;
    rate = (int64_t)((cur->inpkts - est->last.inpkts) << 9);
    est->inpps += (rate - est->inpps) >> 2;
    rate = (int64_t)((cur->outpkts - est->last.outpkts) << 9);
    est->outpps += (rate - est->outpps) >> 2;
    rate = (int64_t)((cur->inbytes - est->last.inbytes) << 4);
    est->inbps += (rate - est->inbps) >> 2;
    rate = (int64_t)((cur->outbytes - est->last.outbytes) << 4);
    est->outbps += (rate - est->outbps) >> 2;
    est->last = *cur;
}

void lvs_engine_update_rates(lvs_engine *e, double now)
{
    if (!e->est_started) {
        e->est_started = 1;
        e->est_last = now;
        est_zero(&e->est, &e->stats);
        for (uint32_t i = 0; i < e->nsvcs; i++) {
            lvs_service *s = e->svcs[i];
            est_zero(&s->est, &s->stats);
            for (lvs_dest *d = s->destinations; d; d = d->next)
                est_zero(&d->est, &d->stats);
        }
        return;
    }
    /* one step per elapsed 2 s period; a late caller gets the whole delta in the first */
    int steps = 0;
    while (now - e->est_last >= 2.0 && steps < 64) {
        e->est_last += 2.0;
        steps++;
        est_step(&e->est, &e->stats);
        for (uint32_t i = 0; i < e->nsvcs; i++) {
            lvs_service *s = e->svcs[i];
            est_step(&s->est, &s->stats);
            for (lvs_dest *d = s->destinations; d; d = d->next)
                est_step(&d->est, &d->stats);
        }
    }
    if (now - e->est_last >= 2.0)
        e->est_last = now;
}

/* ---- sync records (format documented in engine.py) ---- */

static void put16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)(v >> 8);
    p[1] = (uint8_t)v;
}

static void put32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

static uint16_t get16(const uint8_t *p)
{
    return (uint16_t)(p[0] << 8 | p[1]);
}

static uint32_t get32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static void encode(uint8_t *r, const lvs_conn *c, double now)
{
    r[0] = 0;
    r[1] = c->proto;
    put16(r + 2, LVS_SYNC_RECORD_SIZE);
    put32(r + 4, c->flags & LVS_CONN_F_SYNC_MASK);
    put16(r + 8, c->state);
    put16(r + 10, c->cport);
    put16(r + 12, c->vport);
    put16(r + 14, c->dport);
    put32(r + 16, 0);
    /* the timeout of the current state, as the kernel sends; now >= 0 means "remaining" */
    uint32_t t = c->timeout;
    if (now >= 0.0) {
        double rem = c->expires - now;
        t = rem <= 0 ? 0 : (uint32_t)(rem + 0.5);
    }
    put32(r + 20, t);
    put32(r + 24, c->caddr);
    put32(r + 28, c->vaddr);
    put32(r + 32, c->daddr);
}

#define SYNC_BUF_MAX (1u << 20)

void lvs_sync_append(lvs_engine *e, const lvs_conn *c, double now)
{
    if (e->sync_len + LVS_SYNC_RECORD_SIZE > e->sync_cap) {
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
    e->sync_len += LVS_SYNC_RECORD_SIZE;
}

uint32_t lvs_sync_pending(lvs_engine *e)
{
    return e->sync_len;
}

uint32_t lvs_sync_collect(lvs_engine *e, uint8_t *out, uint32_t cap)
{
    uint32_t n = e->sync_len < cap ? e->sync_len : cap;
    n -= n % LVS_SYNC_RECORD_SIZE;
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
    if (x->n + LVS_SYNC_RECORD_SIZE <= x->cap)
        encode(x->out + x->n, c, x->now);
    x->n += LVS_SYNC_RECORD_SIZE;
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
    for (uint32_t off = 0; off + LVS_SYNC_RECORD_SIZE <= len; off += LVS_SYNC_RECORD_SIZE) {
        const uint8_t *r = data + off;
        uint8_t proto = r[1];
        uint16_t size = get16(r + 2) & 0x0fff;
        uint32_t flags = get32(r + 4) & LVS_CONN_F_SYNC_MASK;
        uint16_t state = get16(r + 8);
        uint16_t cport = get16(r + 10), vport = get16(r + 12), dport = get16(r + 14);
        uint32_t timeout = get32(r + 20);
        uint32_t caddr = get32(r + 24), vaddr = get32(r + 28), daddr = get32(r + 32);
        int tmpl = (flags & LVS_CONN_F_TEMPLATE) != 0;
        if (r[0] != 0 || size != LVS_SYNC_RECORD_SIZE ||
            (proto != LVS_PROTO_TCP && proto != LVS_PROTO_UDP) ||
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
        lvs_conn *c = tmpl ? lvs_tmpl_get(e, proto, caddr, vaddr, vport)
                           : lvs_conn_in_get(e, proto, caddr, cport, vaddr, vport);
        if (c && (c->daddr != daddr || c->dport != dport)) {
            /* the master rebound it: drop ours (a template in control just stops matching) */
            if (tmpl && c->n_control > 0)
                lvs_conn_unhash_template(e, c);
            else
                lvs_conn_expire_now(e, c, now);
            c = NULL;
        }
        if (!c) {
            lvs_service *svc = lvs_svc_lookup(e, proto, vaddr, vport);
            if (!svc)
                svc = lvs_svc_lookup(e, proto, vaddr, 0);
            lvs_dest *d = NULL;
            if (svc) {
                for (d = svc->destinations; d; d = d->next)
                    if (d->addr == daddr && (d->port == dport || (tmpl && dport == 0)))
                        break;
            }
            if (!d) {
                (*skipped)++;
                continue;
            }
            c = lvs_conn_new(e, proto, caddr, cport, vaddr, vport, daddr, dport,
                             (uint16_t)(flags | LVS_CONN_F_SYNC), d, now);
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
