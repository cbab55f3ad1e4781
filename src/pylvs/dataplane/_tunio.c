/*
 * _tunio.c — the TUN pump: read a batch of packets, run the engine over it, write it back.
 *
 * Python calls lvs_tunio_pump() once per readiness of the TUN fd (loop.add_reader); every
 * packet of the batch stays in C.  Each slot of the batch buffer holds one IPv4 or IPv6 packet at
 * data + i*stride, as lvs_engine_process_batch() expects.
 *
 * With IFF_VNET_HDR every read starts with a 10-byte struct virtio_net_hdr.  It is read into a
 * side array with readv(), so the IP packet still lands at the start of its slot, and written
 * back unchanged with writev(): the engine rewrites addresses and ports only, so csum_start,
 * csum_offset, hdr_len and gso_size stay valid.  NEEDS_CSUM and a GSO type become the engine's
 * LVS_META_CSUM_PARTIAL / LVS_META_GSO bits.  A REPLY verdict (a packet the engine generated,
 * fully checksummed) goes out with a zeroed header.
 *
 * Several pumps may share one engine (dataplane/_workers.c: one per TUN queue and thread);
 * each holds the engine lock (core/lock.h) for its batch's engine call only, shared for the
 * established packets, exclusive from the first packet that needs more.
 *
 * Nothing here blocks: the fd is O_NONBLOCK, reads stop at EAGAIN or the batch limit, and a
 * write that would block drops the packet (counted), as a full device queue would.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <unistd.h>

#include "_tunio.h"
#include "core/lock.h"

#define VNET_HDR_LEN 10
#define VNET_F_NEEDS_CSUM 1
#define VNET_GSO_NONE 0

struct lvs_tunio {
    int fd;
    int vnet_hdr;
    uint32_t batch_max;
    uint32_t stride;
    uint8_t *data;
    uint8_t *hdr;       /* batch_max * VNET_HDR_LEN */
    uint32_t *len;
    uint8_t *meta;
    uint8_t *verdict;
    uint32_t mark;      /* a fwmark service's device: every packet read carries this mark */
    lvs_tunio_stats st;
};

void lvs_tunio_set_mark(lvs_tunio *io, uint32_t mark)
{
    io->mark = mark;
}

lvs_tunio *lvs_tunio_new(int fd, int vnet_hdr, uint32_t batch_max, uint32_t stride)
{
    if (fd < 0 || batch_max == 0 || batch_max > 4096 || stride < LVS_MIN_STRIDE)
        return NULL;
    lvs_tunio *io = calloc(1, sizeof(*io));
    if (!io)
        return NULL;
    io->fd = fd;
    io->vnet_hdr = vnet_hdr != 0;
    io->batch_max = batch_max;
    io->stride = stride;
    io->data = malloc((size_t)batch_max * stride);
    io->hdr = calloc(batch_max, VNET_HDR_LEN);
    io->len = calloc(batch_max, sizeof(uint32_t));
    io->meta = calloc(batch_max, 1);
    io->verdict = calloc(batch_max, 1);
    if (!io->data || !io->hdr || !io->len || !io->meta || !io->verdict) {
        lvs_tunio_free(io);
        return NULL;
    }
    return io;
}

void lvs_tunio_free(lvs_tunio *io)
{
    if (!io)
        return;
    free(io->data);
    free(io->hdr);
    free(io->len);
    free(io->meta);
    free(io->verdict);
    free(io);
}

void lvs_tunio_get_stats(const lvs_tunio *io, lvs_tunio_stats *out)
{
    *out = io->st;
}

void lvs_tunio_zero_stats(lvs_tunio *io)
{
    memset(&io->st, 0, sizeof(io->st));
}

void lvs_tunio_reset_max_batch(lvs_tunio *io)
{
    io->st.max_batch = 0;
}

static unsigned bucket_of(uint32_t n)
{
    unsigned b = 0;
    while (n > 1 && b < LVS_TUNIO_BUCKETS - 1) {
        n >>= 1;
        b++;
    }
    return b;
}

/* Read until EAGAIN or a full batch; returns the count, or -errno on a hard read error. */
static int read_batch(lvs_tunio *io)
{
    uint32_t n = 0;
    while (n < io->batch_max) {
        uint8_t *slot = io->data + (size_t)n * io->stride;
        ssize_t r;
        if (io->vnet_hdr) {
            struct iovec iov[2] = {
                {.iov_base = io->hdr + (size_t)n * VNET_HDR_LEN, .iov_len = VNET_HDR_LEN},
                {.iov_base = slot, .iov_len = io->stride},
            };
            r = readv(io->fd, iov, 2);
        } else {
            r = read(io->fd, slot, io->stride);
        }
        if (r < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                break;
            io->st.read_errors++;
            return n ? (int)n : -errno;
        }
        size_t plen = (size_t)r;
        if (io->vnet_hdr) {
            if (plen < VNET_HDR_LEN) {
                io->st.short_reads++;
                continue;
            }
            plen -= VNET_HDR_LEN;
        }
        if (plen == 0) {
            io->st.short_reads++;
            continue;
        }
        uint8_t meta = 0;
        if (io->vnet_hdr) {
            const uint8_t *h = io->hdr + (size_t)n * VNET_HDR_LEN;
            if (h[0] & VNET_F_NEEDS_CSUM) {
                meta |= LVS_META_CSUM_PARTIAL;
                io->st.csum_partial++;
            }
            if ((h[1] & 0x7f) != VNET_GSO_NONE) {
                meta |= LVS_META_GSO;
                io->st.gso_packets++;
            }
        }
        io->len[n] = (uint32_t)plen;
        io->meta[n] = meta;
        io->st.reads++;
        io->st.read_bytes += plen;
        n++;
    }
    return (int)n;
}

static void write_one(lvs_tunio *io, uint32_t i, int fresh)
{
    static const uint8_t zero_hdr[VNET_HDR_LEN];
    uint8_t *slot = io->data + (size_t)i * io->stride;
    for (int attempt = 0; attempt < 2; attempt++) {
        ssize_t w;
        if (io->vnet_hdr) {
            struct iovec iov[2] = {
                {.iov_base = fresh ? (void *)zero_hdr : io->hdr + (size_t)i * VNET_HDR_LEN,
                 .iov_len = VNET_HDR_LEN},
                {.iov_base = slot, .iov_len = io->len[i]},
            };
            w = writev(io->fd, iov, 2);
        } else {
            w = write(io->fd, slot, io->len[i]);
        }
        if (w >= 0) {
            io->st.writes++;
            io->st.write_bytes += io->len[i];
            return;
        }
        if (errno == EINTR)
            continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK)
            io->st.write_eagain++;
        else
            io->st.write_errors++;
        return;
    }
}

/* polled: called without a readiness (a worker's spin), so an empty queue is no empty wakeup. */
static int pump(lvs_tunio *io, lvs_engine *eng, double now, uint32_t max_rounds, int polled)
{
    int total = 0;
    if (max_rounds == 0)
        max_rounds = 1;
    for (uint32_t round = 0; round < max_rounds; round++) {
        int n = read_batch(io);
        if (n < 0)
            return total ? total : n;
        if (n == 0) {
            if (round == 0 && !polled)
                io->st.empty_wakeups++;
            break;
        }
        io->st.batches++;
        io->st.batch_hist[bucket_of((uint32_t)n)]++;
        if ((uint32_t)n > io->st.max_batch)
            io->st.max_batch = (uint32_t)n;
        lvs_batch b = {
            .count = (uint32_t)n, .stride = io->stride, .data = io->data,
            .len = io->len, .meta = io->meta, .verdict = io->verdict, .mark = io->mark,
        };
        if (eng) {
            /* Only the engine call is locked (reads and writes, most of the cost, overlap),
             * and its established packets only share the lock (core/lock.h). */
            lvs_engine_process_batch_shared(eng, &b, now);
        } else {
            /* No engine attached (a standby pump): nothing may loop back into the TUN. */
            memset(io->verdict, LVS_VERDICT_DROP, (size_t)n);
        }
        for (uint32_t i = 0; i < (uint32_t)n; i++) {
            switch (io->verdict[i]) {
            case LVS_VERDICT_FORWARD:
                io->st.forwarded++;
                write_one(io, i, 0);
                break;
            case LVS_VERDICT_PASS:
                io->st.passed++;
                write_one(io, i, 0);
                break;
            case LVS_VERDICT_REPLY:
                io->st.replies++;
                write_one(io, i, 1);
                break;
            default:
                io->st.dropped++;
                break;
            }
        }
        total += n;
        if ((uint32_t)n < io->batch_max)
            break; /* the queue is empty: back to the event loop */
    }
    return total;
}

int lvs_tunio_pump(lvs_tunio *io, lvs_engine *eng, double now, uint32_t max_rounds)
{
    return pump(io, eng, now, max_rounds, 0);
}

int lvs_tunio_poll(lvs_tunio *io, lvs_engine *eng, double now, uint32_t max_rounds)
{
    int n = pump(io, eng, now, max_rounds, 1);
    if (n > 0)
        io->st.spin_hits++;
    else if (n == 0)
        io->st.spin_polls++;
    return n;
}
