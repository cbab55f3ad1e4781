/*
 * _sched.h — internal to the scheduler files (_sched.c, _sched_hash.c, _sched_lblc.c) and the
 * scheduler test harness (_schedtest.c), whose API closes this file.  The engine only needs
 * core/lvs.h.
 */
#ifndef PYLVS_SCHED_H
#define PYLVS_SCHED_H

#include <stdint.h>

#include "core/lvs.h"
#include "core/siphash.h"

#define LVS_ENOMEM 12
#define LVS_EINVAL 22

/* Every scheduler of the registry, defined in the file that implements it. */
extern const lvs_scheduler lvs_sched_rr, lvs_sched_wrr, lvs_sched_lc, lvs_sched_wlc,
    lvs_sched_sed, lvs_sched_nq, lvs_sched_fo, lvs_sched_ovf, lvs_sched_twos;
extern const lvs_scheduler lvs_sched_dh, lvs_sched_sh, lvs_sched_mh;
extern const lvs_scheduler lvs_sched_lblc, lvs_sched_lblcr;

/* hash_32 of include/linux/hash.h: multiply by GOLDEN_RATIO_32, keep the high bits. */
static inline uint32_t lvs_hash_32(uint32_t v, unsigned bits)
{
    return (uint32_t)(v * 0x61C88647u) >> (32 - bits);
}

/* lvs_hsiphash_1u32, the kernel's hsiphash_1u32 on a 64-bit build, is in core/siphash.h
 * (shared with the SYN proxy's SipHash-2-4). */

/* The wlc pick used by wlc itself and by lblc/lblcr to choose a new dest: first dest with
 * weight > 0 and OVERLOAD clear, then a strict overhead/weight comparison. */
lvs_dest *lvs_wlc_pick(lvs_service *svc);

/* Inspection for tests and the harness (NULL/0 when the scheduler has no such table). */
/* dh/sh bucket i (0..255) or mh slot i (0..M-1). */
lvs_dest *lvs_sched_table_slot(const lvs_service *svc, uint32_t i);
uint32_t lvs_sched_table_size(const lvs_service *svc);
/* lblc/lblcr: entries in the table; the dests cached for one destination address (set order). */
uint32_t lvs_lblc_entries(const lvs_service *svc);
int lvs_lblc_lookup(const lvs_service *svc, lvs_addr daddr, lvs_dest **out, int max);

/* ---- the standalone test harness of _schedtest.c (owned by the scheduler developer), for
 * property tests and the scheduler benchmark; never used by the engine.  Mirrored in the
 * schedulers block of _core.cdef. ---- */
typedef struct lvs_schedtest lvs_schedtest;
lvs_schedtest *lvs_st_new(const char *sched, uint32_t flags, uint32_t mh_table_size,
                          double lblc_expiration, uint64_t seed, int *err);
void lvs_st_free(lvs_schedtest *t);
int lvs_st_set_sched(lvs_schedtest *t, const char *sched);
int lvs_st_set_af(lvs_schedtest *t, uint8_t af);
int32_t lvs_st_add6(lvs_schedtest *t, const uint32_t *addr, uint16_t port, int32_t weight,
                    uint32_t u, uint32_t l);
int32_t lvs_st_schedule6(lvs_schedtest *t, const uint32_t *saddr, const uint32_t *daddr,
                         uint16_t sport, uint16_t dport, uint8_t proto, double now);
int32_t lvs_st_cache_lookup6(const lvs_schedtest *t, const uint32_t *daddr, int32_t *out,
                             int32_t max);
int32_t lvs_st_add(lvs_schedtest *t, uint32_t addr, uint16_t port, int32_t weight, uint32_t u,
                   uint32_t l);
int lvs_st_edit(lvs_schedtest *t, int32_t id, int32_t weight, uint32_t u, uint32_t l);
int lvs_st_del(lvs_schedtest *t, int32_t id);
int32_t lvs_st_schedule(lvs_schedtest *t, uint32_t saddr, uint32_t daddr, uint16_t sport,
                        uint16_t dport, uint8_t proto, double now);
void lvs_st_tick(lvs_schedtest *t, double now);
int lvs_st_conn_open(lvs_schedtest *t, int32_t id, int active);
int lvs_st_conn_close(lvs_schedtest *t, int32_t id, int active);
int lvs_st_dest_info(const lvs_schedtest *t, int32_t id, int32_t *out);
int32_t lvs_st_order(const lvs_schedtest *t, int32_t *out, int32_t max);
uint32_t lvs_st_table_size(const lvs_schedtest *t);
int32_t lvs_st_table_slot(const lvs_schedtest *t, uint32_t i);
uint32_t lvs_st_cache_entries(const lvs_schedtest *t);
int32_t lvs_st_cache_lookup(const lvs_schedtest *t, uint32_t daddr, int32_t *out, int32_t max);
uint32_t lvs_st_hsiphash(uint32_t v, uint64_t k0, uint64_t k1);
/* SipHash-2-4 of n 64-bit words (core/siphash.h, the SYN proxy's cookie hash). */
uint64_t lvs_st_siphash24(uint64_t k0, uint64_t k1, const uint64_t *m, int32_t n);
uint64_t lvs_st_bench(lvs_schedtest *t, uint64_t n, double now);
/* ---- end schedulers ---- */

#endif /* PYLVS_SCHED_H */
