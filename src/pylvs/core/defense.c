/*
 * defense.c — flood defence (docs/ipvs.md#flood-defence): the kernel's three strategies with
 * their modes 0..3 (update_defense_level and defense_work_handler in ip_vs_ctl.c,
 * ip_vs_random_dropentry and todrop_entry in ip_vs_conn.c, ip_vs_todrop in ip_vs.h), and the
 * one thing the kernel lacks: a full table gives the oldest embryonic entry's slot to a new
 * connection instead of locking every new client out.
 *
 * The trigger is table fill, not free memory: the table is the bounded resource here, so
 * "available" is the number of entries a new connection can still get: the free slots
 * (max_connections - entries, templates included) plus, while eviction is on, the embryonic
 * entries it may take; "memory is low" when that is below amemthresh.  Counting the evictable
 * entries matters: eviction keeps a flooded table full, and with free slots alone drop_packet's
 * automatic rate would reach 1 and drop every new connection (measured: 0 of 80 fresh
 * clients); counted, the automatic modes engage when the table fills with entries eviction
 * cannot take (established connections, templates), which is what they are for.  With eviction
 * off this is exactly the kernel's rule with slots for pages.  Everything runs on the caller's clock: the once-a-second work rides on
 * the expiry sweep (lvs_engine_expire), so the engine stays sans-IO.
 *
 * What a drop or an eviction removes, and why:
 *   drop_entry (engaged)  each second, 1/32 of the buckets picked at random: conns in
 *                         SYN_RECV/SYNACK; ESTABLISHED and UDP conns by todrop_entry; templates
 *                         nobody controls that never saw a conn established (not ASSURED).
 *   eviction (table full) the oldest entry of the embryonic FIFO (a TCP conn made by a SYN that
 *                         never became ESTABLISHED; controlled ones included).  Never an
 *                         established conn, never a template in its own right.
 *   both                  a conn that goes takes its template along when the template then
 *                         controls nothing and was never ASSURED (the kernel's "drop CTL or
 *                         non-assured TPL if not used anymore" in ip_vs_conn_expire): a spoofed
 *                         SYN to a persistent service leaves nothing behind.
 *
 * syncookies (the kernel's net.ipv4.tcp_syncookies, for every TCP service): 0 never, 1
 * automatic (the default, as the kernel's), 2 always.  While engaged, a bare SYN to any TCP
 * service without a conn is answered with the SYN proxy's cookie SYN-ACK (synproxy.c) and
 * makes no entry; a valid cookie ACK opens the conn exactly as for a synproxy service.
 *   engage     at once when the embryonic entries (SYN seen, never established) reach
 *              min(amemthresh, 4096): the kernel engages when one listener's SYN backlog
 *              overflows (somaxconn, 4096 by default); the table-wide amemthresh caps it on
 *              a small table.  A legitimate load keeps few embryonic entries (one per
 *              handshake in flight, a round trip each), a spoofed flood keeps one per SYN for
 *              the SYN_RECV timeout (60 s), so the count tells the two apart within a
 *              fraction of a second.  amemthresh 0: the automatic mode never engages.
 *   disengage  once engaged, cookies make no entries, so the embryonic count can no longer
 *              tell whether the flood goes on (a table that empties must not disengage).  The
 *              measure is then the cookie SYNs left unanswered in the last second (cookie
 *              SYNs, the engine's and those XDP answered, minus cookie ACKs accepted): times
 *              the SYN_RECV timeout it is the embryonic count the flood would build without
 *              cookies.  Disengaged when that and the embryonic entries left stay under half
 *              the threshold for SYNCOOKIE_HOLD (10) consecutive seconds: the half and the
 *              hold are the hysteresis, so a flood that pauses or a burst does not flap it.
 *   after      cookie ACKs are still accepted for a cookie's lifetime (120 s,
 *              MAX_SYNCOOKIE_AGE periods of 60 s) after disengaging, as the kernel accepts
 *              them for 2 minutes after its last overflow: no handshake in flight is lost.
 */
#include <math.h>

#include "engine.h"

#define DEFENSE_PERIOD 1.0    /* DEFENSE_TIMER_PERIOD: 1 s */
#define SYNCOOKIE_BACKLOG 4096u  /* somaxconn's default: the kernel's listen backlog */
#define SYNCOOKIE_HOLD 10u   /* quiet seconds before disengaging */
#define SYNCOOKIE_LIFETIME 120.0 /* a cookie's validity (synproxy.c: 2 periods of 60 s) */

static uint64_t rng_next(lvs_defense *d)
{
    /* xorshift64*: the bucket picks only need to be unpredictable enough to spread */
    d->rng ^= d->rng >> 12;
    d->rng ^= d->rng << 25;
    d->rng ^= d->rng >> 27;
    return d->rng * 0x2545F4914F6CDD1DULL;
}

void lvs_defense_init(lvs_engine *e)
{
    lvs_defense *d = &e->def;
    d->amemthresh = e->max_conns / 10 ? e->max_conns / 10 : 1;
    d->am_droprate = 10;
    d->evict_embryonic = 1;
    d->syncookies = 1;
    d->rng = lvs_hash_mix(e->seed ^ 0xdefe05e0defe05e0ULL) | 1;
}

/* ---- update_defense_level ---- */

/* One strategy's sysctl value after a level update: automatic modes follow the fill. */
static int auto_mode(int mode, int nomem)
{
    if (mode == 1 && nomem)
        return 2;
    if (mode == 2 && !nomem)
        return 1;
    return mode;
}

static uint32_t available(const lvs_engine *e)
{
    uint32_t avail = e->nconns < e->max_conns ? e->max_conns - e->nconns : 0;
    if (e->def.evict_embryonic)
        avail += e->nembryo;
    return avail;
}

static void update_level(lvs_engine *e)
{
    lvs_defense *d = &e->def;
    uint32_t avail = available(e);
    int nomem = avail < d->amemthresh;

    d->drop_entry = auto_mode(d->drop_entry, nomem);
    d->dropentry_on = d->drop_entry >= 2;

    d->drop_packet = auto_mode(d->drop_packet, nomem);
    if (d->drop_packet == 3) {
        d->drop_rate = d->am_droprate;
    } else if (d->drop_packet == 2) {
        /* amemthresh / (amemthresh - available): 1 (drop all) on a full table */
        d->drop_rate = d->drop_counter = d->amemthresh / (d->amemthresh - avail);
    } else {
        d->drop_rate = 0;
    }

    d->secure_tcp = auto_mode(d->secure_tcp, nomem);
    d->secure_on = d->secure_tcp >= 2;
}

/* ---- syncookies ---- */

static uint32_t cookie_threshold(const lvs_defense *d)
{
    return d->amemthresh < SYNCOOKIE_BACKLOG ? d->amemthresh : SYNCOOKIE_BACKLOG;
}

static void cookies_engage(lvs_engine *e)
{
    lvs_defense *d = &e->def;
    if (d->cookies_on)
        return;
    d->cookies_on = 1;
    d->cookie_quiet = 0;
    d->cookies_engaged++;
}

/* now: the time of the disengagement, or INFINITY from a set (which has no clock): the next
 * tick starts the window then. */
static void cookies_disengage(lvs_engine *e, double now)
{
    lvs_defense *d = &e->def;
    if (!d->cookies_on)
        return;
    d->cookies_on = 0;
    d->cookies_until = now + SYNCOOKIE_LIFETIME;
}

void lvs_defense_embryo_added(lvs_engine *e)
{
    const lvs_defense *d = &e->def;
    uint32_t t = cookie_threshold(d);
    if (d->syncookies == 1 && !d->cookies_on && t && e->nembryo >= t)
        cookies_engage(e);
}

/* Once a second: the unanswered cookie SYNs of the last interval, and the mode's move. */
static void cookies_tick(lvs_engine *e, double elapsed, double now)
{
    lvs_defense *d = &e->def;
    uint64_t syns = e->counters[LVS_CNT_SYNCOOKIE_SYN] + d->cookie_syns_elsewhere;
    uint64_t acks = e->counters[LVS_CNT_SYNCOOKIE_ACK_OK];
    uint64_t ds = syns - d->cookie_syn_mark, da = acks - d->cookie_ack_mark;
    d->cookie_syn_mark = syns;
    d->cookie_ack_mark = acks;
    uint64_t un = ds > da ? ds - da : 0;
    d->cookie_unanswered = un > UINT32_MAX ? UINT32_MAX : (uint32_t)un;
    if (isinf(d->cookies_until))
        d->cookies_until = now + SYNCOOKIE_LIFETIME;
    uint32_t t = cookie_threshold(d);
    if (d->syncookies == 2) {
        cookies_engage(e);
    } else if (d->syncookies == 0 || t == 0) {
        cookies_disengage(e, now);
    } else if (!d->cookies_on) {
        if (e->nembryo >= t)
            cookies_engage(e);
    } else {
        /* the embryonic entries the unanswered SYNs would keep without cookies */
        double rate = elapsed > 0 ? (double)un / elapsed : (double)un;
        double would_hold = rate * (double)e->tcp_timeouts[LVS_TCP_S_SYN_RECV];
        if (would_hold < (double)t / 2 && e->nembryo < t / 2)
            d->cookie_quiet++;
        else
            d->cookie_quiet = 0;
        if (d->cookie_quiet >= SYNCOOKIE_HOLD)
            cookies_disengage(e, now);
    }
}

void lvs_defense_cookie_syns(lvs_engine *e, uint64_t n)
{
    e->def.cookie_syns_elsewhere += n;
}

/* ---- removing entries ---- */

/* Remove a conn (never a template that controls conns) and, when it leaves its template with
 * nothing to control and that template was never ASSURED, the template too.  Returns 1 when
 * the template went. */
static int drop_conn(lvs_engine *e, lvs_conn *c, double now)
{
    lvs_conn *ct = lvs_conn_control(e, c);
    lvs_conn_expire_now(e, c, now);
    if (ct && ct->n_control == 0 && !(ct->flags & LVS_CONN_F_ASSURED)) {
        lvs_conn_expire_now(e, ct, now);
        return 1;
    }
    return 0;
}

/* todrop_entry (5.x): keep an entry refreshed in the last 60 s or with in_pkts outside 1..8;
 * of the rest drop one in in_pkts, so 1-packet entries always go. */
static int todrop_entry(lvs_engine *e, const lvs_conn *c, double now)
{
    if (now - (c->expires - (double)c->timeout) < 60.0)
        return 0;
    uint32_t i = c->in_pkts;
    if (i < 1 || i > 8)
        return 0;
    i--;
    if (--e->def.dropentry_counters[i] > 0)
        return 0;
    e->def.dropentry_counters[i] = (int32_t)i + 1;
    return 1;
}

static int wants_drop(lvs_engine *e, const lvs_conn *c, double now)
{
    if (c->n_control > 0)
        return 0;
    if (c->flags & LVS_CONN_F_TEMPLATE)
        return !(c->flags & LVS_CONN_F_ASSURED);
    if (c->proto == LVS_PROTO_TCP) {
        if (c->state == LVS_TCP_S_SYN_RECV || c->state == LVS_TCP_S_SYNACK)
            return 1;
        if (c->state == LVS_TCP_S_ESTABLISHED)
            return todrop_entry(e, c, now);
        return 0;
    }
    return todrop_entry(e, c, now);
}

/* ip_vs_random_dropentry: visit 1/32 of the in-hash buckets, picked at random. */
static void random_dropentry(lvs_engine *e, double now)
{
    lvs_defense *d = &e->def;
    uint32_t n = (e->tab_mask + 1) >> 5;
    for (uint32_t k = 0; k < n; k++) {
        uint32_t i = e->in_tab[(uint32_t)rng_next(d) & e->tab_mask];
        while (i != LVS_NO_SLOT) {
            lvs_conn *c = lvs_conn_at(e, i);
            uint32_t next = c->in_next;
            if (wants_drop(e, c, now)) {
                if (c->flags & LVS_CONN_F_TEMPLATE) {
                    lvs_conn_expire_now(e, c, now);
                    d->drop_entry_templates++;
                } else {
                    /* the template may be the next in this chain: step over it first */
                    if (c->control != LVS_NO_SLOT && c->control == next)
                        next = lvs_conn_at(e, next)->in_next;
                    d->drop_entry_conns++;
                    d->drop_entry_templates += (uint64_t)drop_conn(e, c, now);
                }
            }
            i = next;
        }
    }
}

void lvs_defense_tick(lvs_engine *e, double now)
{
    lvs_defense *d = &e->def;
    if (d->ticked && now - d->last_tick < DEFENSE_PERIOD && now >= d->last_tick)
        return;
    double elapsed = d->ticked && now >= d->last_tick ? now - d->last_tick : DEFENSE_PERIOD;
    d->ticked = 1;
    d->last_tick = now;
    update_level(e);
    cookies_tick(e, elapsed, now);
    if (d->dropentry_on)
        random_dropentry(e, now);
}

int lvs_defense_make_room(lvs_engine *e, double now)
{
    if (e->nconns < e->max_conns)
        return 1;
    if (!e->def.evict_embryonic)
        return 0;
    lvs_conn *c = lvs_embryo_oldest(e);
    if (!c)
        return 0;
    e->def.evicted_embryonic++;
    e->def.evicted_templates += (uint64_t)drop_conn(e, c, now);
    return 1;
}

/* ---- the API ---- */

int lvs_defense_set(lvs_engine *e, const lvs_defense_conf *c)
{
    if (c->drop_entry < 0 || c->drop_entry > 3 || c->drop_packet < 0 || c->drop_packet > 3 ||
        c->secure_tcp < 0 || c->secure_tcp > 3 || c->am_droprate > 1000000 ||
        c->syncookies < 0 || c->syncookies > 2)
        return -LVS_E_RANGE;
    lvs_defense *d = &e->def;
    d->drop_entry = c->drop_entry;
    d->drop_packet = c->drop_packet;
    d->secure_tcp = c->secure_tcp;
    d->amemthresh = c->amemthresh;
    d->am_droprate = c->am_droprate;
    d->evict_embryonic = c->evict_embryonic != 0;
    d->syncookies = c->syncookies;
    /* as proc_do_defense_mode: a written mode takes effect at once; 1 keeps what is engaged
     * now and lets the hysteresis decide; 0 stops answering SYNs with cookies but still takes
     * the ACKs to cookies already sent for their lifetime (the kernel refuses them) */
    update_level(e);
    if (d->syncookies == 2)
        cookies_engage(e);
    else if (d->syncookies == 0)
        cookies_disengage(e, INFINITY);
    return 0;
}

void lvs_defense_get(lvs_engine *e, lvs_defense_info *out)
{
    const lvs_defense *d = &e->def;
    out->conf.drop_entry = d->drop_entry;
    out->conf.drop_packet = d->drop_packet;
    out->conf.secure_tcp = d->secure_tcp;
    out->conf.amemthresh = d->amemthresh;
    out->conf.am_droprate = d->am_droprate;
    out->conf.evict_embryonic = d->evict_embryonic;
    out->conf.syncookies = d->syncookies;
    out->syncookies_engaged = d->cookies_on;
    out->syncookies_threshold = cookie_threshold(d);
    out->syncookies_unanswered = d->cookie_unanswered;
    out->syncookies_quiet = d->cookie_quiet;
    out->syncookies_engaged_count = d->cookies_engaged;
    out->syncookies_xdp_syns = d->cookie_syns_elsewhere;
    out->syncookies_window_until = d->cookies_until;
    out->drop_entry_active = d->dropentry_on;
    out->secure_tcp_active = d->secure_on;
    out->drop_rate = d->drop_rate;
    out->free_slots = e->nconns < e->max_conns ? e->max_conns - e->nconns : 0;
    out->available = available(e);
    out->embryonic = e->nembryo;
    out->drop_entry_conns = d->drop_entry_conns;
    out->drop_entry_templates = d->drop_entry_templates;
    out->evicted_embryonic = d->evicted_embryonic;
    out->evicted_templates = d->evicted_templates;
}
