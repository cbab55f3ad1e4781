/*
 * seqadj.h — per-connection TCP translation: sequence deltas in both directions (ip_vs_app's
 * in_seq/out_seq, nf_conntrack_seqadj), plus the timestamp offset and window-scale shift a
 * SYN proxy needs because the client's handshake was with the director, not the server
 * (docs/ipvs.md#syn-proxy).
 *
 * The record lives outside the connection entry (which stays at its size): an array per
 * connection slab, indexed by the conn's slot, allocated when a conn of that slab first needs
 * a record; LVS_CONN_F_EXT marks the conns whose record is live.
 * Users: synproxy.c (a constant server-side delta), and an application helper (FTP) that
 * changes a stream's length at a sequence point (lvs_seq_update).
 */
#ifndef PYLVS_SEQADJ_H
#define PYLVS_SEQADJ_H

#include <stdint.h>

#include "packet.h"

/* ip_vs_seq: a packet whose seq is after init_seq gets delta, an earlier one previous_delta. */
typedef struct lvs_seq {
    uint32_t init_seq;
    int32_t delta;
    int32_t previous_delta;
} lvs_seq;

#define LVS_EXT_TS 0x01      /* ts_off applies (both ends use timestamps) */

typedef struct lvs_conn_ext {
    lvs_seq in_seq;          /* client -> server stream: seq of IN packets, ack of OUT ones */
    lvs_seq out_seq;         /* server -> client stream: seq of OUT packets, ack of IN ones */
    uint32_t ts_off;         /* added to the server's TSval, taken from the client's TSecr */
    int8_t win_shift;        /* OUT window field scaled by 2^win_shift (negative: divided) */
    uint8_t flags;           /* LVS_EXT_* */
    uint16_t pad_;
    void *pending;           /* synproxy's handshake state (malloc'd); freed on detach */
} lvs_conn_ext;

static inline lvs_conn_ext *lvs_ext_of(const lvs_engine *e, const lvs_conn *c)
{
    if (!(c->flags & LVS_CONN_F_EXT))
        return (lvs_conn_ext *)0;
    return &e->ext_slabs[c->slot >> LVS_SLAB_BITS][c->slot & (LVS_SLAB_SIZE - 1)];
}

/* The next TCP option of a header (th, thlen = doff * 4) from offset *pos (start at 20): a
 * pointer to its kind byte with *olen its length (>= 2), *pos moved past it; NULL at the end
 * of the list, at EOL, or where the list is malformed (the rest is left alone).  NOPs are
 * skipped.  One walker for the SYN proxy's parse and the translation's rewrite. */
static inline uint8_t *lvs_tcp_opt_next(uint8_t *th, uint32_t thlen, uint32_t *pos,
                                        uint32_t *olen)
{
    uint32_t i = *pos;
    while (i < thlen && th[i] == 1)
        i++;
    if (i + 1 >= thlen || th[i] == 0)
        return (uint8_t *)0;
    uint32_t n = th[i + 1];
    if (n < 2 || i + n > thlen)
        return (uint8_t *)0;
    *pos = i + n;
    *olen = n;
    return th + i;
}

/* The conn's record, zeroed when new; NULL when the pool cannot grow. */
lvs_conn_ext *lvs_ext_attach(lvs_engine *e, lvs_conn *c);

/* The stream grew by `diff` bytes at sequence number `seq` (ip_vs_app's vs_seq_update):
 * packets up to it keep the delta they had. */
void lvs_seq_update(lvs_seq *s, uint32_t seq, int32_t diff);

/* Translate a TCP header of the conn (th, thlen = doff * 4) travelling in `dir`
 * (LVS_DIR_IN: client -> server, LVS_DIR_OUT: server -> client): seq, ack, SACK blocks,
 * timestamps and (OUT) the window.  Returns the RFC 1624 sum of the changes for the TCP
 * checksum; the caller applies it (or not, for a CHECKSUM_PARTIAL packet). */
uint64_t lvs_seqadj_tcp(uint8_t *th, uint32_t thlen, const lvs_conn_ext *x, int dir);

/* The inverse, for the TCP header quoted in an ICMP error (n bytes of it quoted, >= 8): the
 * quoted packet went in `dir` and was translated then; give it back its sender's numbers.
 * Returns the checksum sum of the changes (meaningful when the quote holds the checksum). */
uint64_t lvs_seqadj_quote(uint8_t *th, uint32_t n, const lvs_conn_ext *x, int dir);

#endif /* PYLVS_SEQADJ_H */
