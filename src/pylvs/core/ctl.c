/*
 * ctl.c — services and dests (ip_vs_ctl.c): add, edit and remove with the kernel's threshold
 * and scheduler-callback rules (docs/ipvs.md#real-servers), the service hash and the VIP set the packet path
 * looks up.  A removed dest goes to the trash in dest.c.
 */
#include <stdlib.h>
#include <string.h>

#include "engine.h"

/* ---- services ---- */

/* XOR of the four words (the IPv4 address itself), rotated so /64 prefixes still spread */
static inline uint64_t addr_bits(lvs_addr a)
{
    return (uint64_t)a.ip6[0] ^ ((uint64_t)a.ip6[1] << 7) ^ ((uint64_t)a.ip6[2] << 17) ^
           ((uint64_t)a.ip6[3] << 29);
}

static inline uint32_t svc_hash(uint8_t proto, lvs_addr addr, uint16_t port)
{
    return (uint32_t)lvs_hash_mix(addr_bits(addr) << 24 ^ (uint64_t)port << 8 ^ proto) & 255;
}

lvs_service *lvs_svc_lookup(lvs_engine *e, uint8_t af, uint8_t proto, lvs_addr addr,
                            uint16_t port)
{
    for (lvs_service *s = e->svc_tab[svc_hash(proto, addr, port)]; s; s = s->hnext)
        if (lvs_addr_eq(s->addr, addr) && s->port == port && s->proto == proto && s->af == af)
            return s;
    return NULL;
}

lvs_dest *lvs_dest_lookup(lvs_service *svc, lvs_addr addr, uint16_t port)
{
    for (lvs_dest *d = svc->destinations; d; d = d->next)
        if (lvs_addr_eq(d->addr, addr) && d->port == port)
            return d;
    return NULL;
}

/* ---- VIP sets: open addressing over addr+1 (IPv4) and over the address (IPv6, where :: is
 * the empty slot), rebuilt when services change ---- */

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

static inline uint32_t vip6_slot(lvs_addr a)
{
    return (uint32_t)lvs_hash_mix(((uint64_t)a.ip6[0] << 32 | a.ip6[1]) ^
                                  lvs_hash_mix((uint64_t)a.ip6[2] << 32 | a.ip6[3]));
}

int lvs_is_vip6(const lvs_engine *e, lvs_addr addr)
{
    if (!e->vip6_set)
        return 0;
    uint32_t i = vip6_slot(addr) & e->vip6_mask;
    for (;;) {
        lvs_addr v = e->vip6_set[i];
        if (lvs_addr_eq(v, addr))
            return 1;
        if ((v.ip6[0] | v.ip6[1] | v.ip6[2] | v.ip6[3]) == 0)
            return 0;
        i = (i + 1) & e->vip6_mask;
    }
}

static void vip4_insert(uint32_t *set, uint32_t mask, uint32_t addr)
{
    uint32_t i = (uint32_t)lvs_hash_mix(addr) & mask;
    while (set[i] != 0 && set[i] != addr + 1)
        i = (i + 1) & mask;
    set[i] = addr + 1;
}

static void vip6_insert(lvs_addr *set6, uint32_t mask, lvs_addr a)
{
    if ((a.ip6[0] | a.ip6[1] | a.ip6[2] | a.ip6[3]) == 0)
        return; /* :: is the empty slot (and never a VIP) */
    uint32_t i = vip6_slot(a) & mask;
    while ((set6[i].ip6[0] | set6[i].ip6[1] | set6[i].ip6[2] | set6[i].ip6[3]) != 0 &&
           !lvs_addr_eq(set6[i], a))
        i = (i + 1) & mask;
    set6[i] = a;
}

static int vip_rebuild(lvs_engine *e)
{
    uint32_t n = 16;
    while (n < (e->nsvcs + e->nfwm_vips + e->nfwm_vips6) * 4)
        n <<= 1;
    uint32_t *set = calloc(n, sizeof(uint32_t));
    lvs_addr *set6 = calloc(n, sizeof(lvs_addr));
    if (!set || !set6) {
        free(set);
        free(set6);
        return -LVS_E_NOMEM;
    }
    uint32_t nfwm = 0;
    for (uint32_t s = 0; s < e->nsvcs; s++) {
        const lvs_service *svc = e->svcs[s];
        if (svc->proto == LVS_PROTO_FWM)
            nfwm++; /* its addr is the mark, not an address */
        else if (svc->af == LVS_AF_INET6)
            vip6_insert(set6, n - 1, svc->addr);
        else
            vip4_insert(set, n - 1, svc->addr.ip);
    }
    for (uint32_t i = 0; i < e->nfwm_vips; i++)
        vip4_insert(set, n - 1, e->fwm_vips[i]);
    for (uint32_t i = 0; i < e->nfwm_vips6; i++)
        vip6_insert(set6, n - 1, e->fwm_vips6[i]);
    free(e->vip_set);
    free(e->vip6_set);
    e->vip_set = set;
    e->vip_mask = n - 1;
    e->vip6_set = set6;
    e->vip6_mask = n - 1;
    e->nfwm_svcs = nfwm;
    return 0;
}

static void svc_free(lvs_engine *e, lvs_service *svc);

int lvs_ctl_init(lvs_engine *e)
{
    return vip_rebuild(e);
}

void lvs_ctl_free(lvs_engine *e)
{
    while (e->nsvcs)
        svc_free(e, e->svcs[e->nsvcs - 1]);
    free(e->svcs);
    free(e->vip_set);
    free(e->vip6_set);
    free(e->fwm_vips);
    free(e->fwm_vips6);
    e->svcs = NULL;
    e->vip_set = NULL;
    e->vip6_set = NULL;
    e->fwm_vips = NULL;
    e->nfwm_vips = 0;
    e->fwm_vips6 = NULL;
    e->nfwm_vips6 = 0;
}

int lvs_engine_set_fwm_vips(lvs_engine *e, const uint32_t *addrs, uint32_t n,
                            const lvs_addr *addrs6, uint32_t n6)
{
    uint32_t *copy = n ? malloc((size_t)n * sizeof(*copy)) : NULL;
    lvs_addr *copy6 = n6 ? malloc((size_t)n6 * sizeof(*copy6)) : NULL;
    if ((n && !copy) || (n6 && !copy6)) {
        free(copy);
        free(copy6);
        return -LVS_E_NOMEM;
    }
    if (n)
        memcpy(copy, addrs, (size_t)n * sizeof(*copy));
    if (n6)
        memcpy(copy6, addrs6, (size_t)n6 * sizeof(*copy6));
    uint32_t *old = e->fwm_vips, nold = e->nfwm_vips;
    lvs_addr *old6 = e->fwm_vips6;
    uint32_t nold6 = e->nfwm_vips6;
    e->fwm_vips = copy;
    e->nfwm_vips = n;
    e->fwm_vips6 = copy6;
    e->nfwm_vips6 = n6;
    if (vip_rebuild(e) < 0) {
        e->fwm_vips = old;
        e->nfwm_vips = nold;
        e->fwm_vips6 = old6;
        e->nfwm_vips6 = nold6;
        free(copy);
        free(copy6);
        return -LVS_E_NOMEM;
    }
    free(old);
    free(old6);
    return 0;
}

/* ---- services ---- */

static int svc_apply_conf(lvs_service *svc, const lvs_svc_conf *c)
{
    svc->flags = (c->flags & (LVS_SVC_F_SCHED1 | LVS_SVC_F_SCHED2 | LVS_SVC_F_SCHED3 |
                              LVS_SVC_F_SYNPROXY | LVS_SVC_F_FTP)) |
                 (svc->flags & LVS_SVC_F_HASHED);
    if (c->timeout)
        svc->flags |= LVS_SVC_F_PERSISTENT;
    svc->timeout = c->timeout;
    svc->netmask = c->netmask;
    svc->sched_params.mh_table_size = c->mh_table_size;
    return 0;
}

/* Install the conf's port ranges (replacing any); -LVS_E_NOMEM leaves the old ones. */
static int svc_set_ranges(lvs_service *svc, const lvs_svc_conf *c)
{
    uint16_t(*r)[2] = NULL;
    if (c->nranges) {
        r = malloc((size_t)c->nranges * sizeof(*r));
        if (!r)
            return -LVS_E_NOMEM;
        for (uint32_t i = 0; i < c->nranges; i++) {
            r[i][0] = c->port_ranges[2 * i];
            r[i][1] = c->port_ranges[2 * i + 1];
        }
    }
    free(svc->ranges);
    svc->ranges = r;
    svc->nranges = c->nranges;
    return 0;
}

int lvs_svc_takes_port(const lvs_service *svc, uint16_t port)
{
    if (!svc->nranges)
        return 1;
    for (uint32_t i = 0; i < svc->nranges; i++)
        if (port >= svc->ranges[i][0] && port <= svc->ranges[i][1])
            return 1;
    return 0;
}

static int check_svc_conf(const lvs_svc_conf *c, const lvs_scheduler **sched)
{
    if (c->nranges) {
        if (c->port != 0 || c->proto == LVS_PROTO_FWM || !c->port_ranges)
            return -LVS_E_INVAL; /* a port list belongs to a port-0 address service */
        for (uint32_t i = 0; i < c->nranges; i++)
            if (c->port_ranges[2 * i] == 0 || c->port_ranges[2 * i] > c->port_ranges[2 * i + 1])
                return -LVS_E_INVAL;
    }
    if (c->proto == LVS_PROTO_FWM) {
        /* (af, LVS_PROTO_FWM, mark, 0): the kernel keys a fwmark service by family and mark
         * (ipvsadm -f 1 -6); a mark of 0 marks nothing */
        if ((c->af != LVS_AF_INET && c->af != LVS_AF_INET6) || c->addr.ip == 0 ||
            c->port != 0 || (c->addr.ip6[1] | c->addr.ip6[2] | c->addr.ip6[3]))
            return -LVS_E_INVAL;
    } else if (c->proto != LVS_PROTO_TCP && c->proto != LVS_PROTO_UDP) {
        return -LVS_E_INVAL;
    }
    if (c->af == LVS_AF_INET6) {
        /* :: is the VIP set's empty slot, and no VIP anyway (a fwmark's addr is its mark);
         * ipvsadm -M is a prefix length */
        if ((c->addr.ip6[0] | c->addr.ip6[1] | c->addr.ip6[2] | c->addr.ip6[3]) == 0)
            return -LVS_E_INVAL;
        if (c->timeout && (c->netmask < 1 || c->netmask > 128))
            return -LVS_E_INVAL;
    } else if (c->proto == LVS_PROTO_FWM) {
        /* checked above */
    } else if (c->af != LVS_AF_INET || (c->addr.ip6[1] | c->addr.ip6[2] | c->addr.ip6[3])) {
        return -LVS_E_INVAL;
    }
    if (c->port == 0 && c->timeout == 0 && c->proto != LVS_PROTO_FWM && c->nranges == 0)
        return -LVS_E_INVAL; /* port-zero services must be persistent */
    if (c->timeout > 2678400)
        return -LVS_E_RANGE;
    if ((c->flags & LVS_SVC_F_SYNPROXY) && c->proto != LVS_PROTO_TCP)
        return -LVS_E_INVAL; /* a SYN proxy needs TCP */
    if ((c->flags & LVS_SVC_F_FTP) &&
        (c->proto != LVS_PROTO_TCP || c->af != LVS_AF_INET || c->port < 2))
        return -LVS_E_INVAL; /* the FTP helper watches an IPv4 TCP control port (port - 1 = data) */
    *sched = lvs_sched_find(c->sched ? c->sched : "wlc");
    return *sched ? 0 : -LVS_E_INVAL;
}

int lvs_svc_add(lvs_engine *e, const lvs_svc_conf *c)
{
    const lvs_scheduler *sched;
    int r = check_svc_conf(c, &sched);
    if (r < 0)
        return r;
    if (lvs_svc_lookup(e, c->af, c->proto, c->addr, c->port))
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
    svc->af = c->af;
    svc->proto = c->proto;
    svc->addr = c->addr;
    svc->port = c->port;
    svc_apply_conf(svc, c);
    svc->rng_state = lvs_hash_mix(e->seed ^ (addr_bits(c->addr) << 24 | (uint64_t)c->port << 8 |
                                             c->proto)) | 1;
    svc->sched = sched;
    if (svc_set_ranges(svc, c) < 0) {
        free(svc);
        return -LVS_E_NOMEM;
    }
    if (sched->init_service) {
        r = sched->init_service(svc);
        if (r < 0) {
            free(svc->ranges);
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
    lvs_service *svc = lvs_svc_lookup(e, c->af, c->proto, c->addr, c->port);
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
    return svc_set_ranges(svc, c);
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
        lvs_dest_trash(e, d);
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
    free(svc->ranges);
    free(svc);
}

int lvs_svc_del(lvs_engine *e, uint8_t af, uint8_t proto, const lvs_addr *addr, uint16_t port)
{
    lvs_service *svc = lvs_svc_lookup(e, af, proto, *addr, port);
    if (!svc)
        return -LVS_E_SRCH;
    svc_free(e, svc);
    vip_rebuild(e);
    return 0;
}

/* ---- dests ---- */

static int check_dest_conf(const lvs_dest_conf *c)
{
    /* a NAT real server speaks the VIP's family (ip_vs_add_dest refuses a mix for NAT) */
    if (c->dest_af != c->af)
        return -LVS_E_AFNOSUPPORT;
    if (c->af == LVS_AF_INET && (c->addr.ip6[1] | c->addr.ip6[2] | c->addr.ip6[3]))
        return -LVS_E_INVAL;
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
    lvs_service *svc = lvs_svc_lookup(e, c->af, c->proto, c->vaddr, c->vport);
    if (!svc)
        return -LVS_E_SRCH;
    if (lvs_dest_lookup(svc, c->addr, c->port))
        return -LVS_E_EXIST;
    /* a dest of the same virtual service still in the trash is revived with its counters */
    lvs_dest *d = lvs_dest_trash_take(e, c->af, c->proto, c->vaddr, c->vport, c->addr, c->port);
    if (!d) {
        d = calloc(1, sizeof(*d));
        if (!d)
            return -LVS_E_NOMEM;
        d->af = c->af;
        d->addr = c->addr;
        d->port = c->port;
        d->vproto = c->proto;
        d->vaddr = c->vaddr;
        d->vport = c->vport;
    }
    d->svc = svc;
    dest_update(d, c);
    d->last_weight = c->weight; /* an add sets it even to 0, revival included (kernel) */
    d->next = svc->destinations;
    svc->destinations = d;
    svc->num_dests++;
    if (svc->sched && svc->sched->add_dest) {
        r = svc->sched->add_dest(svc, d);
        if (r < 0) {
            svc->destinations = d->next;
            svc->num_dests--;
            lvs_dest_trash(e, d);
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
    lvs_service *svc = lvs_svc_lookup(e, c->af, c->proto, c->vaddr, c->vport);
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
    lvs_service *svc = lvs_svc_lookup(e, c->af, c->proto, c->vaddr, c->vport);
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
    lvs_dest_trash(e, d);
    return 0;
}

int lvs_dest_expire_conns(lvs_engine *e, const lvs_dest_conf *c)
{
    lvs_service *svc = lvs_svc_lookup(e, c->af, c->proto, c->vaddr, c->vport);
    if (!svc)
        return -LVS_E_SRCH;
    lvs_dest *d = lvs_dest_lookup(svc, c->addr, c->port);
    if (!d)
        return -LVS_E_NOENT;
    return expire_dest_conns(e, d);
}
