/*
 * ftp.c — the FTP helper of a service with ftp = true (ip_vs_ftp.c, with ip_vs_app.c's
 * length changes; docs/ipvs.md#ftp).  It watches the control connection (the one to the
 * service's port) in the NAT direction the kernel does:
 *
 *   client -> server  "PORT h1,h2,h3,h4,p1,p2" / "EPRT |1|a.b.c.d|port|": an entry
 *                     (client addr:port, VIP:port-1, server:port-1) bound to the same real
 *                     server, so the server's active data connection from port 20 leaves as
 *                     VIP:20.  The command is not changed.
 *   server -> client  "227 Entering Passive Mode (h1,h2,h3,h4,p1,p2)": an expectation entry
 *                     (client, any client port, VIP:p, server:p) so the client's data
 *                     connection to VIP:p reaches that server; the address in the reply is
 *                     rewritten to the VIP.  When that changes the reply's length the stream's
 *                     sequence delta is updated (seqadj.c) and every later packet of the
 *                     connection is translated both ways, retransmissions of the rewritten
 *                     segment included (they are rewritten again; the delta is not counted
 *                     twice).  "229 ... (|||p|)" (EPSV) gets the expectation, no rewrite.
 *
 * IPv4 only, as the kernel's helper.  As in the kernel: a command or reply split across segments is left alone (each segment is
 * looked at on its own), only ESTABLISHED control connections are watched, and a GSO
 * super-packet (bulk data, never a command) is not.  The kernel matches a 227 only after the
 * client sent PASV; here every 227 line at the start of a server segment is taken, so a
 * retransmitted reply is rewritten the same way again.
 */
#include <string.h>

#include "seqadj.h"

#define FTP_LISTEN_TIMEOUT 120 /* ip_vs_tcp_conn_listen: the LISTEN state's timeout */

static int ieq(const uint8_t *a, const char *b, uint32_t n)
{
    for (uint32_t i = 0; i < n; i++) {
        uint8_t x = a[i], y = (uint8_t)b[i];
        if (x >= 'a' && x <= 'z')
            x = (uint8_t)(x - 32);
        if (x != y)
            return 0;
    }
    return 1;
}

/* "h1,h2,h3,h4,p1,p2" from s up to (not including) `term`; 1 when well formed
 * (ip_vs_ftp_get_addrport: digits and exactly five commas, each number < 256). */
static int parse_commas(const uint8_t *s, const uint8_t *limit, uint8_t term, uint32_t *addr,
                        uint16_t *port, const uint8_t **end)
{
    uint32_t v[6] = {0};
    int i = 0, digits = 0;
    for (const uint8_t *q = s; q < limit; q++) {
        uint8_t ch = *q;
        if (ch == term) {
            if (i != 5 || !digits)
                return 0;
            *addr = v[0] << 24 | v[1] << 16 | v[2] << 8 | v[3];
            *port = (uint16_t)(v[4] << 8 | v[5]);
            *end = q;
            return 1;
        }
        if (ch >= '0' && ch <= '9') {
            v[i] = v[i] * 10 + (uint32_t)(ch - '0');
            if (v[i] > 255)
                return 0;
            digits = 1;
        } else if (ch == ',' && i < 5 && digits) {
            i++;
            digits = 0;
        } else {
            return 0;
        }
    }
    return 0; /* no terminator in this segment: left alone */
}

/* A decimal number up to `term`. */
static int parse_num(const uint8_t *s, const uint8_t *limit, uint8_t term, uint32_t max,
                     uint32_t *out, const uint8_t **end)
{
    uint32_t v = 0;
    const uint8_t *q = s;
    for (; q < limit && *q >= '0' && *q <= '9'; q++) {
        v = v * 10 + (uint32_t)(*q - '0');
        if (v > max)
            return 0;
    }
    if (q == s || q >= limit || *q != term)
        return 0;
    *out = v;
    *end = q;
    return 1;
}

/* "EPRT |1|a.b.c.d|port|" (RFC 2428, IPv4 only) after the command word and its space. */
static int parse_eprt(const uint8_t *s, const uint8_t *limit, uint32_t *addr, uint16_t *port)
{
    if (limit - s < 4)
        return 0;
    uint8_t d = s[0];
    if (d < 33 || d > 126 || s[1] != '1' || s[2] != d)
        return 0;
    const uint8_t *q = s + 3;
    uint32_t a = 0, v;
    for (int i = 0; i < 4; i++) {
        if (!parse_num(q, limit, i < 3 ? '.' : d, 255, &v, &q))
            return 0;
        a = a << 8 | v;
        q++;
    }
    if (!parse_num(q, limit, d, 65535, &v, &q))
        return 0;
    *addr = a;
    *port = (uint16_t)v;
    return 1;
}

/* A data entry bound to the control conn's dest, controlled by it, in LISTEN. */
static void data_entry(lvs_engine *e, lvs_conn *ctl, uint32_t caddr, uint16_t cport,
                       uint16_t vport, uint32_t daddr, uint16_t dport, uint16_t flags,
                       double now)
{
    lvs_conn_key key = {LVS_AF_INET,       LVS_PROTO_TCP, lvs_addr4(caddr), ctl->vaddr,
                        lvs_addr4(daddr), cport,         vport,            dport};
    lvs_conn *n = lvs_conn_new(e, &key, (uint16_t)(flags | LVS_CONN_F_INACTIVE), ctl->dest, now);
    if (!n) {
        e->counters[LVS_CNT_TABLE_FULL]++;
        return;
    }
    if (flags & LVS_CONN_F_NO_CPORT)
        e->n_no_cport++;
    n->control = ctl->slot;
    ctl->n_control++;
    n->state = LVS_TCP_S_LISTEN;
    n->timeout = FTP_LISTEN_TIMEOUT;
    lvs_conn_arm(e, n, now);
    e->counters[LVS_CNT_FTP_DATA_ENTRY]++;
}

static inline const uint8_t *payload(const pkt *k, uint32_t *n)
{
    uint32_t thlen = (uint32_t)(k->l4[12] >> 4) * 4;
    *n = k->l4len - thlen;
    return k->l4 + thlen;
}

void lvs_ftp_in(lvs_engine *e, pkt *k, lvs_conn *c, double now)
{
    uint32_t n;
    const uint8_t *d = payload(k, &n);
    if (c->af != LVS_AF_INET || c->state != LVS_TCP_S_ESTABLISHED || n < 6 ||
        (k->meta & LVS_META_GSO))
        return;
    const uint8_t *limit = d + n;
    uint32_t addr;
    uint16_t port;
    const uint8_t *end;
    if (ieq(d, "PORT ", 5)) {
        const uint8_t *s = d + 5;
        while (s < limit && *s == ' ')
            s++;
        if (!parse_commas(s, limit, '\r', &addr, &port, &end))
            return;
    } else if (ieq(d, "EPRT ", 5)) {
        if (!parse_eprt(d + 5, limit, &addr, &port))
            return;
    } else {
        return;
    }
    /* ip_vs_ftp_in: (addr:port, VIP:vport-1) -> (server:dport-1), unless it exists */
    uint16_t vport = (uint16_t)(c->vport - 1), dport = (uint16_t)(c->dport - 1);
    if (lvs_conn_in_get(e, LVS_AF_INET, LVS_PROTO_TCP, lvs_addr4(addr), port, c->vaddr, vport))
        return;
    data_entry(e, c, addr, port, vport, c->daddr.ip, dport, 0, now);
}

/* Replace [start, end) of the packet with text, moving the tail; fixes IP length and checksum
 * and the TCP checksum (full, or the pseudo-header length under CHECKSUM_PARTIAL). */
static int mangle(pkt *k, uint32_t *plen, uint32_t cap, uint8_t *start, uint8_t *end,
                  const char *text, uint32_t tlen, int32_t *pdiff)
{
    uint8_t *p = k->p;
    uint32_t olen = (uint32_t)(end - start);
    int32_t diff = (int32_t)tlen - (int32_t)olen;
    uint32_t ntot = (uint32_t)((int32_t)k->tot + diff);
    if (ntot > cap || ntot > 0xffff)
        return -1;
    *pdiff = diff;
    memmove(end + diff, end, (size_t)(p + k->tot - end));
    memcpy(start, text, tlen);
    uint16_t otot = (uint16_t)k->tot;
    st16(p + 2, (uint16_t)ntot);
    csum_apply(p + 10, diff16(otot, (uint16_t)ntot));
    k->tot = ntot;
    k->l4len = ntot - k->ihl;
    *plen = ntot;
    uint8_t *cf = k->l4 + 16;
    if (k->meta & LVS_META_CSUM_PARTIAL) {
        csum_apply_partial(cf, diff16((uint16_t)(otot - k->ihl), (uint16_t)k->l4len));
    } else {
        st16(cf, 0);
        uint64_t s = sum16(k->l4, k->l4len);
        s += (ld32(p + 12) >> 16) + (ld32(p + 12) & 0xffff);
        s += (ld32(p + 16) >> 16) + (ld32(p + 16) & 0xffff);
        s += LVS_PROTO_TCP + k->l4len;
        st16(cf, (uint16_t)~fold(s));
    }
    return 0;
}

void lvs_ftp_out(lvs_engine *e, pkt *k, lvs_conn *c, uint32_t *plen, uint32_t cap, double now)
{
    uint32_t n;
    const uint8_t *d = payload(k, &n);
    if (c->af != LVS_AF_INET || c->state != LVS_TCP_S_ESTABLISHED || n < 8 ||
        (k->meta & LVS_META_GSO))
        return;
    const uint8_t *limit = d + n;
    uint32_t from;
    uint16_t port;
    const uint8_t *end, *start;
    int epsv = 0;
    if (ieq(d, "227 ", 4)) {
        start = memchr(d, '(', n);
        if (!start || !parse_commas(++start, limit, ')', &from, &port, &end))
            return;
    } else if (ieq(d, "229 ", 4)) {
        const uint8_t *q = memchr(d, '(', n);
        uint32_t v;
        if (!q || limit - q < 5 || q[2] != q[1] || q[3] != q[1] ||
            !parse_num(q + 4, limit, q[1], 65535, &v, &end))
            return;
        from = c->daddr.ip; /* EPSV names no address: the control connection's server */
        port = (uint16_t)v;
        epsv = 1;
        start = end;
    } else {
        return;
    }
    /* ip_vs_ftp_out: an expectation (client, cport 0, VIP:port) -> (from:port) */
    if (!lvs_conn_out_get(e, LVS_AF_INET, LVS_PROTO_TCP, lvs_addr4(from), port, c->caddr, 0))
        data_entry(e, c, c->caddr.ip, 0, port, from, port, LVS_CONN_F_NO_CPORT, now);
    if (epsv)
        return;
    char text[24];
    uint32_t v = c->vaddr.ip;
    int tlen = 0;
    const unsigned parts[6] = {v >> 24, v >> 16 & 255, v >> 8 & 255, v & 255, port >> 8u,
                               port & 255u};
    for (int i = 0; i < 6; i++) {
        unsigned x = parts[i];
        char digits[3];
        int nd = 0;
        do {
            digits[nd++] = (char)('0' + x % 10);
            x /= 10;
        } while (x);
        while (nd)
            text[tlen++] = digits[--nd];
        if (i < 5)
            text[tlen++] = ',';
    }
    uint32_t seq = ld32(k->l4 + 4);
    int32_t diff = 0;
    if (mangle(k, plen, cap, (uint8_t *)start, (uint8_t *)end, text, (uint32_t)tlen, &diff) < 0) {
        e->counters[LVS_CNT_FTP_NO_ROOM]++; /* the slot cannot hold the longer reply */
        return;
    }
    e->counters[LVS_CNT_FTP_REWRITE]++;
    if (diff == 0)
        return;
    lvs_conn_ext *x = lvs_ext_attach(e, c);
    if (!x)
        return;
    /* ip_vs_app's vs_seq_update: counted once, at the first copy of this segment */
    lvs_seq_update(&x->out_seq, seq, diff);
    c->flags |= LVS_CONN_F_OUT_SEQ;
    /* the backup needs the new delta before the next packet-count threshold: a takeover
     * would otherwise leave the session's numbers untranslated */
    lvs_sync_conn_now(e, c);
}
