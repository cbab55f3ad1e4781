/*
 * engine.c — the engine's lifetime, its sysctl-like options and timeouts, the periodic
 * expiry sweep (timers, the schedulers' tick, the dest trash) and the error texts of the API.
 * The parts live in conn.c (table and timers), ctl.c (services, dests), dest.c (the trash),
 * est.c and info.c (stats), sync.c (sync records) and the packet files.
 */
#include <stdlib.h>
#include <string.h>

#include "engine.h"

/* ---- lifetime ---- */

lvs_engine *lvs_engine_new(uint32_t max_conns, uint64_t seed)
{
    lvs_engine *e = calloc(1, sizeof(*e));
    if (!e)
        return NULL;
    lvs_engine_lock_init(e);
    lvs_offload_init(e);
    if (max_conns == 0)
        max_conns = 1;
    e->seed = lvs_hash_mix(seed ^ 0x5bd1e9955bd1e995ULL);
    if (lvs_conn_table_init(e, max_conns) < 0) {
        lvs_engine_free(e);
        return NULL;
    }
    lvs_defense_init(e);
    memcpy(e->tcp_timeouts, lvs_tcp_default_timeouts, sizeof(e->tcp_timeouts));
    e->udp_timeout = 300;
    e->conn_reuse_mode = 1;
    e->sync_threshold = 3;
    e->sync_period = 50;
    e->tmpl_rearmed = lvs_sync_tmpl_rearmed;
    if (lvs_ctl_init(e) < 0) {
        lvs_engine_free(e);
        return NULL;
    }
    return e;
}

void lvs_engine_free(lvs_engine *e)
{
    if (!e)
        return;
    lvs_ctl_free(e);
    /* every remaining conn holds a dest reference; free the table and then the whole trash */
    lvs_conn_table_free(e);
    lvs_dest_trash_sweep(e, 1);
    lvs_sync_free(e);
    lvs_ext_free_all(e);
    lvs_offload_free(e);
    lvs_engine_lock_destroy(e);
    free(e);
}

/* ---- options and timeouts ---- */

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
    case LVS_OPT_SLOPPY_TCP:
        e->sloppy_tcp = value != 0;
        return 0;
    case LVS_OPT_SLOPPY_UDP:
        e->sloppy_udp = value != 0;
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
    case LVS_OPT_SLOPPY_TCP:
        return e->sloppy_tcp;
    case LVS_OPT_SLOPPY_UDP:
        return e->sloppy_udp;
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

/* ---- the periodic sweep ---- */

uint32_t lvs_engine_expire(lvs_engine *e, double now)
{
    uint32_t expired = lvs_conn_expire_due(e, now);
    lvs_defense_tick(e, now);
    /* periodic scheduler work (lblc/lblcr garbage collection) rides on the same call */
    for (uint32_t i = 0; i < e->nsvcs; i++) {
        lvs_service *svc = e->svcs[i];
        if (svc->sched && svc->sched->tick)
            svc->sched->tick(svc, now);
    }
    /* lblc/lblcr drop their dest references without lvs_dest_put, so a removed dest can
     * reach refcnt 0 in the trash unnoticed: free those here */
    lvs_dest_trash_sweep(e, 0);
    return expired;
}

/* ---- error texts ---- */

const char *lvs_strerror(int err)
{
    switch (err) {
    case LVS_E_NOENT:
        return "no such real server";
    case LVS_E_SRCH:
        return "no such virtual service";
    case LVS_E_NOMEM:
        return "out of memory";
    case LVS_E_EXIST:
        return "already exists";
    case LVS_E_INVAL:
        return "invalid argument";
    case LVS_E_AFNOSUPPORT:
        return "real server of the other address family than its virtual service";
    case LVS_E_RANGE:
        return "value out of range";
    default:
        return NULL;
    }
}
