/*
 * dest.c — real-server references and the dest trash (ip_vs_dest_put, ip_vs_trash_get_dest,
 * ip_vs_dest_trash_expire).  A removed dest waits in the trash while connections, templates or
 * a scheduler's cache still point at it; re-adding the same server revives it with its
 * counters.  This file is the one place a removed dest is freed.
 *
 * Invariant: a dest without LVS_DEST_F_AVAILABLE is in the trash, except while ctl.c removes
 * it, and then it holds a reference of its own.
 */
#include <stdlib.h>
#include <string.h>

#include "engine.h"

/* Unlink the dest at *pp from the trash and free it. */
static void trash_free(lvs_engine *e, lvs_dest **pp)
{
    lvs_dest *d = *pp;
    *pp = d->next;
    e->ntrash--;
    free(d);
}

void lvs_dest_trash(lvs_engine *e, lvs_dest *d)
{
    d->flags &= ~(LVS_DEST_F_AVAILABLE | LVS_DEST_F_OVERLOAD);
    d->next = e->trash;
    e->trash = d;
    e->ntrash++;
    if (d->refcnt == 0)
        trash_free(e, &e->trash);
}

lvs_dest *lvs_dest_trash_take(lvs_engine *e, uint8_t af, uint8_t vproto, lvs_addr vaddr,
                              uint16_t vport, lvs_addr addr, uint16_t port)
{
    for (lvs_dest **pp = &e->trash; *pp; pp = &(*pp)->next) {
        lvs_dest *t = *pp;
        if (lvs_addr_eq(t->addr, addr) && t->port == port && lvs_addr_eq(t->vaddr, vaddr) &&
            t->vport == vport && t->vproto == vproto && t->af == af) {
            *pp = t->next;
            e->ntrash--;
            /* its estimator stopped in the trash: restart from the current counters */
            memset(&t->est, 0, sizeof(t->est));
            t->est.last = t->stats;
            return t;
        }
    }
    return NULL;
}

void lvs_dest_put(lvs_engine *e, lvs_dest *d)
{
    if (--d->refcnt > 0 || (d->flags & LVS_DEST_F_AVAILABLE))
        return;
    /* last reference to a removed dest */
    for (lvs_dest **pp = &e->trash; *pp; pp = &(*pp)->next) {
        if (*pp == d) {
            trash_free(e, pp);
            return;
        }
    }
}

void lvs_dest_trash_sweep(lvs_engine *e, int all)
{
    for (lvs_dest **pp = &e->trash; *pp;) {
        if (all || (*pp)->refcnt == 0)
            trash_free(e, pp);
        else
            pp = &(*pp)->next;
    }
}
