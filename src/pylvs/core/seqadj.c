/*
 * seqadj.c — per-connection TCP translation (see seqadj.h): the side-record pool and the
 * header rewrite (ip_vs_app.c vs_fix_seq / vs_fix_ack_seq; SACK blocks and timestamps as
 * nf_conntrack_seqadj and nf_synproxy do).
 */
#include <stdlib.h>
#include <string.h>

#include "seqadj.h"

/* ---- the pool ---- */

lvs_conn_ext *lvs_ext_attach(lvs_engine *e, lvs_conn *c)
{
    lvs_conn_ext *x = lvs_ext_of(e, c);
    if (x)
        return x;
    uint32_t s = c->slot >> LVS_SLAB_BITS;
    if (s >= e->ext_nslabs) {
        uint32_t n = e->nslabs > s ? e->nslabs : s + 1;
        lvs_conn_ext **ns = realloc(e->ext_slabs, (size_t)n * sizeof(*ns));
        if (!ns)
            return NULL;
        memset(ns + e->ext_nslabs, 0, (size_t)(n - e->ext_nslabs) * sizeof(*ns));
        e->ext_slabs = ns;
        e->ext_nslabs = n;
    }
    if (!e->ext_slabs[s]) {
        e->ext_slabs[s] = calloc(LVS_SLAB_SIZE, sizeof(lvs_conn_ext));
        if (!e->ext_slabs[s])
            return NULL;
    }
    x = &e->ext_slabs[s][c->slot & (LVS_SLAB_SIZE - 1)];
    memset(x, 0, sizeof(*x));
    c->flags |= LVS_CONN_F_EXT;
    e->ext_used++;
    return x;
}

void lvs_ext_detach(lvs_engine *e, lvs_conn *c)
{
    lvs_conn_ext *x = lvs_ext_of(e, c);
    if (!x)
        return;
    free(x->pending);
    x->pending = NULL;
    c->flags &= (uint16_t)~LVS_CONN_F_EXT;
    e->ext_used--;
}

void lvs_ext_free_all(lvs_engine *e)
{
    for (uint32_t s = 0; s < e->ext_nslabs; s++) {
        lvs_conn_ext *a = e->ext_slabs[s];
        if (!a)
            continue;
        for (uint32_t i = 0; i < LVS_SLAB_SIZE; i++)
            free(a[i].pending);
        free(a);
    }
    free(e->ext_slabs);
    e->ext_slabs = NULL;
    e->ext_nslabs = e->ext_used = 0;
}

/* ---- sequence arithmetic (ip_vs_app.c) ---- */

static inline int after(uint32_t a, uint32_t b)
{
    return (int32_t)(b - a) < 0;
}

void lvs_seq_update(lvs_seq *s, uint32_t seq, int32_t diff)
{
    /* vs_seq_update: the old delta stays for what was sent up to the change */
    if (s->init_seq == 0 || after(seq, s->init_seq)) {
        s->previous_delta = s->delta;
        s->delta += diff;
        s->init_seq = seq;
    }
}

static inline int seq_active(const lvs_seq *s)
{
    return s->delta != 0 || s->previous_delta != 0;
}

/* vs_fix_seq: the sender's number as the receiver sees it */
static inline uint32_t fix_seq(const lvs_seq *s, uint32_t seq)
{
    return seq + (uint32_t)(after(seq, s->init_seq) ? s->delta : s->previous_delta);
}

/* vs_fix_ack_seq: an acknowledgement of that stream, back into the sender's numbers */
static inline uint32_t fix_ack(const lvs_seq *s, uint32_t ack)
{
    return ack - (uint32_t)(after(ack, s->init_seq + (uint32_t)s->delta) ? s->delta
                                                                          : s->previous_delta);
}

/* inverse of fix_seq (a quoted packet's seq back to what its sender wrote) */
static inline uint32_t unfix_seq(const lvs_seq *s, uint32_t seq)
{
    return seq - (uint32_t)(after(seq, s->init_seq + (uint32_t)s->delta) ? s->delta
                                                                         : s->previous_delta);
}

static inline uint32_t unfix_ack(const lvs_seq *s, uint32_t ack)
{
    return ack + (uint32_t)(after(ack, s->init_seq) ? s->delta : s->previous_delta);
}

static inline uint64_t put32(uint8_t *p, uint32_t v)
{
    uint32_t o = ld32(p);
    st32(p, v);
    return diff32(o, v);
}

/* ---- options: SACK blocks and timestamps ---- */

typedef struct opt_fix {
    const lvs_seq *sack;     /* the stream the SACK blocks acknowledge, or NULL */
    int sack_unfix;          /* quoted packets: inverse translation */
    int32_t tsval_add;       /* added to TSval */
    int32_t tsecr_add;       /* added to TSecr */
    int ts;
} opt_fix;

static uint64_t fix_options(uint8_t *th, uint32_t thlen, const opt_fix *f)
{
    uint64_t sum = 0;
    uint32_t pos = 20, olen;
    uint8_t *opt;
    while ((opt = lvs_tcp_opt_next(th, thlen, &pos, &olen))) {
        uint8_t kind = opt[0];
        uint8_t *o = opt + 2;
        if (kind == 5 && f->sack && olen >= 10 && (olen - 2) % 8 == 0) {
            for (uint32_t b = 0; b + 4 <= olen - 2; b += 4) {
                uint32_t v = ld32(o + b);
                sum += put32(o + b, f->sack_unfix ? unfix_ack(f->sack, v) : fix_ack(f->sack, v));
            }
        } else if (kind == 8 && olen == 10 && f->ts) {
            sum += put32(o, ld32(o) + (uint32_t)f->tsval_add);
            sum += put32(o + 4, ld32(o + 4) + (uint32_t)f->tsecr_add);
        }
    }
    return sum;
}

uint64_t lvs_seqadj_tcp(uint8_t *th, uint32_t thlen, const lvs_conn_ext *x, int dir)
{
    const lvs_seq *mine = dir == LVS_DIR_IN ? &x->in_seq : &x->out_seq;
    const lvs_seq *peer = dir == LVS_DIR_IN ? &x->out_seq : &x->in_seq;
    uint64_t sum = 0;
    if (seq_active(mine))
        sum += put32(th + 4, fix_seq(mine, ld32(th + 4)));
    if ((th[13] & TH_ACK) && seq_active(peer))
        sum += put32(th + 8, fix_ack(peer, ld32(th + 8)));
    opt_fix f = {seq_active(peer) ? peer : NULL, 0, 0, 0, (x->flags & LVS_EXT_TS) != 0};
    if (dir == LVS_DIR_IN)
        f.tsecr_add = -(int32_t)x->ts_off;
    else
        f.tsval_add = (int32_t)x->ts_off;
    if (thlen > 20 && (f.sack || (f.ts && x->ts_off)))
        sum += fix_options(th, thlen, &f);
    if (dir == LVS_DIR_OUT && x->win_shift && !(th[13] & TH_SYN)) {
        uint32_t w = ld16(th + 14);
        w = x->win_shift > 0 ? w << x->win_shift : w >> -x->win_shift;
        uint16_t nw = w > 0xffff ? 0xffff : (uint16_t)w;
        sum += diff16(ld16(th + 14), nw);
        st16(th + 14, nw);
    }
    return sum;
}

uint64_t lvs_seqadj_quote(uint8_t *th, uint32_t n, const lvs_conn_ext *x, int dir)
{
    const lvs_seq *mine = dir == LVS_DIR_IN ? &x->in_seq : &x->out_seq;
    const lvs_seq *peer = dir == LVS_DIR_IN ? &x->out_seq : &x->in_seq;
    uint64_t sum = 0;
    if (n >= 8 && seq_active(mine))
        sum += put32(th + 4, unfix_seq(mine, ld32(th + 4)));
    if (n >= 14 && (th[13] & TH_ACK) && seq_active(peer))
        sum += put32(th + 8, unfix_ack(peer, ld32(th + 8)));
    if (n >= 20) {
        uint32_t thlen = (uint32_t)(th[12] >> 4) * 4;
        if (thlen > n)
            thlen = n;
        opt_fix f = {seq_active(peer) ? peer : NULL, 1, 0, 0, (x->flags & LVS_EXT_TS) != 0};
        if (dir == LVS_DIR_IN)
            f.tsecr_add = (int32_t)x->ts_off;
        else
            f.tsval_add = -(int32_t)x->ts_off;
        if (thlen > 20)
            sum += fix_options(th, thlen, &f);
    }
    return sum;
}
