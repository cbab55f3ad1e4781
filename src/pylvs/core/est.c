/*
 * est.c — the IPVS rate estimator (ip_vs_est.c): one 2 s step for every stats object, the -Z
 * baselines, and the readout the listings report (counters since the last zero, rates).
 */
#include <string.h>

#include "engine.h"

/* ---- readout ---- */

static uint64_t est_read(int64_t avg, int shift)
{
    if (avg <= 0)
        return 0;
    return (uint64_t)(avg + ((int64_t)1 << (shift - 1)) - 1) >> shift;
}

void lvs_stats_info_fill(lvs_stats_info *o, const lvs_stats *cur, const lvs_stats *zero,
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

/* ---- -Z and the estimator ---- */

static void est_zero(lvs_est *est, const lvs_stats *cur)
{
    memset(est, 0, sizeof(*est));
    est->last = *cur;
}

int lvs_engine_zero_stats(lvs_engine *e, uint8_t af, uint8_t proto, const lvs_addr *addr,
                          uint16_t port)
{
    for (uint32_t i = 0; i < e->nsvcs; i++) {
        lvs_service *s = e->svcs[i];
        if (proto && !(s->proto == proto && s->af == af && lvs_addr_eq(s->addr, *addr) &&
                       s->port == port))
            continue;
        s->zero = s->stats;
        est_zero(&s->est, &s->stats);
        for (lvs_dest *d = s->destinations; d; d = d->next) {
            d->zero = d->stats;
            est_zero(&d->est, &d->stats);
        }
    }
    if (proto) {
        return lvs_svc_lookup(e, af, proto, *addr, port) ? 0 : -LVS_E_SRCH;
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

/* k steps of one estimator: the first sees the whole delta, the others none (the stats do
 * not move under the lock), exactly as k passes over every estimator would do. */
static void est_steps(lvs_est *est, const lvs_stats *cur, int k)
{
    for (int i = 0; i < k; i++)
        est_step(est, cur);
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
    /* one step per elapsed 2 s period; a late caller gets the whole delta in the first.  One
     * pass over the estimators whatever the number of steps: a caller 100 s late (a stalled
     * loop) would otherwise walk 10,000 servers 50 times while the workers wait (lock.h). */
    int steps = 0;
    while (now - e->est_last >= 2.0 && steps < 64) {
        e->est_last += 2.0;
        steps++;
    }
    if (steps) {
        est_steps(&e->est, &e->stats, steps);
        for (uint32_t i = 0; i < e->nsvcs; i++) {
            lvs_service *s = e->svcs[i];
            est_steps(&s->est, &s->stats, steps);
            for (lvs_dest *d = s->destinations; d; d = d->next)
                est_steps(&d->est, &d->stats, steps);
        }
    }
    if (now - e->est_last >= 2.0)
        e->est_last = now;
}
