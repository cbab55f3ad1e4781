/*
 * proto_tcp.c — the TCP state machine (ip_vs_proto_tcp.c): the transition table as data, the
 * states that count as active, each state's default timeout and the state names Python shows.
 */
#include "packet.h"

/* ---- TCP state machine (docs/ipvs.md#tcp-states; columns NO ES SS SR FW TW CL CW LA LI SA).
 * Rows: (direction offset 0 = INPUT, 4 = OUTPUT, 8 = INPUT-ONLY) + flag index
 * (0 syn, 1 fin, 2 ack, 3 rst). */
enum { NO = LVS_TCP_S_NONE, ES = LVS_TCP_S_ESTABLISHED, SS = LVS_TCP_S_SYN_SENT,
       SR = LVS_TCP_S_SYN_RECV, FW = LVS_TCP_S_FIN_WAIT, TW = LVS_TCP_S_TIME_WAIT,
       CL = LVS_TCP_S_CLOSE, CW = LVS_TCP_S_CLOSE_WAIT, LA = LVS_TCP_S_LAST_ACK,
       LI = LVS_TCP_S_LISTEN, SA = LVS_TCP_S_SYNACK };

enum { DIR_INPUT_ONLY = 8 };

static const uint8_t tcp_states[12][LVS_TCP_S_LAST] = {
    /*        NO  ES  SS  SR  FW  TW  CL  CW  LA  LI  SA */
    /* in  syn */ {SR, ES, ES, SR, SR, SR, SR, SR, SR, SR, SR},
    /* in  fin */ {CL, CW, SS, TW, TW, TW, CL, CW, LA, LI, TW},
    /* in  ack */ {ES, ES, SS, ES, FW, TW, CL, CW, CL, LI, ES},
    /* in  rst */ {CL, CL, CL, SR, CL, CL, CL, CL, LA, LI, SR},
    /* out syn */ {SS, ES, SS, SR, SS, SS, SS, SS, SS, LI, SR},
    /* out fin */ {TW, FW, SS, TW, FW, TW, CL, TW, LA, LI, TW},
    /* out ack */ {ES, ES, SS, ES, FW, TW, CL, CW, LA, ES, ES},
    /* out rst */ {CL, CL, SS, CL, CL, TW, CL, CL, CL, CL, CL},
    /* ionly syn */ {SR, ES, ES, SR, SR, SR, SR, SR, SR, SR, SR},
    /* ionly fin */ {CL, FW, SS, TW, FW, TW, CL, CW, LA, LI, TW},
    /* ionly ack */ {ES, ES, SS, ES, FW, TW, CL, CW, CL, LI, ES},
    /* ionly rst */ {CL, CL, CL, SR, CL, CL, CL, CL, LA, LI, CL},
};

/* tcp_states_dos: the secure_tcp table (docs/ipvs.md#flood-defence).  SYN-ACK out moves
 * SYN_RECV to SYNACK, the client's ACK leaves SYN_RECV and SYNACK as they are, and only the
 * server's next packet out makes the entry ESTABLISHED; a bare ACK never creates one. */
static const uint8_t tcp_states_dos[12][LVS_TCP_S_LAST] = {
    /*        NO  ES  SS  SR  FW  TW  CL  CW  LA  LI  SA */
    /* in  syn */ {SR, ES, ES, SR, SR, SR, SR, SR, SR, SR, SA},
    /* in  fin */ {CL, CW, SS, TW, TW, TW, CL, CW, LA, LI, SA},
    /* in  ack */ {CL, ES, SS, SR, FW, TW, CL, CW, CL, LI, SA},
    /* in  rst */ {CL, CL, CL, SR, CL, CL, CL, CL, LA, LI, CL},
    /* out syn */ {SS, ES, SS, SA, SS, SS, SS, SS, SS, LI, SA},
    /* out fin */ {TW, FW, SS, TW, FW, TW, CL, TW, LA, LI, TW},
    /* out ack */ {ES, ES, SS, ES, FW, TW, CL, CW, LA, ES, ES},
    /* out rst */ {CL, CL, SS, CL, CL, TW, CL, CL, CL, CL, CL},
    /* ionly syn */ {SA, ES, ES, SR, SA, SA, SA, SA, SA, SA, SA},
    /* ionly fin */ {CL, FW, SS, TW, FW, TW, CL, CW, LA, LI, TW},
    /* ionly ack */ {CL, ES, SS, ES, FW, TW, CL, CW, CL, LI, ES},
    /* ionly rst */ {CL, CL, CL, SR, CL, CL, CL, CL, LA, LI, CL},
};

/* The secure timeouts (2.4's vs_timeout_table_dos); under secure_tcp a state's timeout is the
 * shorter of this and the normal one, so NONE keeps 2 s and ESTABLISHED at most 8 min. */
static const uint32_t tcp_secure_timeouts[LVS_TCP_S_LAST] = {
    900, 480, 60, 10, 60, 60, 10, 60, 30, 120, 100,
};

/* tcp_timeouts (seconds), indexed by state; ipvsadm --set changes ES (tcp) and FW (tcpfin). */
const uint32_t lvs_tcp_default_timeouts[LVS_TCP_S_LAST] = {
    2, 900, 120, 60, 120, 120, 10, 60, 30, 120, 120,
};

/* tcp_state_name_table, as ipvsadm -Lc prints them. */
static const char *const state_names[LVS_TCP_S_LAST + 1] = {
    "NONE",  "ESTABLISHED", "SYN_SENT", "SYN_RECV", "FIN_WAIT", "TIME_WAIT",
    "CLOSE", "CLOSE_WAIT",  "LAST_ACK", "LISTEN",   "SYNACK",   NULL,
};

const char *const *lvs_tcp_state_names(void)
{
    return state_names;
}

/* tcp_state_active_table (5.x): ES, SYN_SENT, SYN_RECV, SYNACK count as active. */
static int state_is_active(uint8_t state)
{
    return state == ES || state == SS || state == SR || state == SA;
}

/* The state a packet moves c to (reads only). */
static uint8_t next_state(const lvs_engine *e, const lvs_conn *c, int dir, uint8_t th_flags)
{
    int idx;
    if (th_flags & TH_RST)
        idx = 3;
    else if (th_flags & TH_SYN)
        idx = 0;
    else if (th_flags & TH_FIN)
        idx = 1;
    else if (th_flags & TH_ACK)
        idx = 2;
    else
        return CL;
    /* a conn that has seen nothing from the server reads the INPUT-ONLY rows */
    int off = (c->flags & LVS_CONN_F_NOOUTPUT) && dir != LVS_DIR_OUT ? DIR_INPUT_ONLY : dir;
    const uint8_t(*table)[LVS_TCP_S_LAST] = e->def.secure_on ? tcp_states_dos : tcp_states;
    return table[off + idx][c->state < LVS_TCP_S_LAST ? c->state : 0];
}

static uint32_t state_timeout(const lvs_engine *e, uint8_t ns)
{
    uint32_t t = e->tcp_timeouts[ns];
    if (e->def.secure_on && tcp_secure_timeouts[ns] < t)
        t = tcp_secure_timeouts[ns];
    return t;
}

void lvs_tcp_transition(lvs_engine *e, lvs_conn *c, int dir, uint8_t th_flags)
{
    uint8_t ns = next_state(e, c, dir, th_flags);
    if ((th_flags & (TH_RST | TH_SYN | TH_FIN | TH_ACK)) && dir == LVS_DIR_OUT)
        c->flags &= (uint16_t)~LVS_CONN_F_NOOUTPUT;
    if (ns != c->state) {
        lvs_conn_set_active(c, state_is_active(ns));
        if (ns == ES)
            lvs_conn_assure(e, c);
        else
            lvs_offload_recall(e, c); /* the kernel's fast path hands it back */
    }
    c->state = ns;
    c->timeout = state_timeout(e, ns);
}

int lvs_tcp_steady(const lvs_engine *e, const lvs_conn *c, int dir, uint8_t th_flags)
{
    if ((c->flags & LVS_CONN_F_NOOUTPUT) && dir == LVS_DIR_OUT &&
        (th_flags & (TH_RST | TH_SYN | TH_FIN | TH_ACK)))
        return 0;
    uint8_t ns = next_state(e, c, dir, th_flags);
    return ns == c->state && c->timeout == state_timeout(e, ns);
}
