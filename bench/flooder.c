/*
 * flooder.c — a bounded spoofed-SYN flooder for the test bed (bench/flood.py builds it with gcc
 * at run time).  Root only (a raw socket); use it only inside the benchmarking namespaces.
 *
 *   flooder DST_IP DST_PORT SRC_NET PREFIX_LEN RATE COUNT SECONDS
 *
 * Sends TCP SYNs (MSS option, valid IP and TCP checksums) from random addresses of
 * SRC_NET/PREFIX_LEN and random ports to DST_IP:DST_PORT, at RATE packets/s (0: as fast as it
 * can), and stops after COUNT packets or SECONDS seconds, whichever comes first.  Prints
 * {"sent": N, "seconds": S, "errors": E} on stdout.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define BATCH 64
#define PKT_LEN 44 /* IPv4 20 + TCP 20 + MSS option 4 */

static uint64_t rng;
static uint32_t rnd(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (uint32_t)(rng >> 16);
}

static uint32_t sum16(const uint8_t *p, size_t n, uint32_t s)
{
    for (size_t i = 0; i + 1 < n; i += 2)
        s += (uint32_t)(p[i] << 8 | p[i + 1]);
    return s;
}

static uint16_t fold(uint32_t s)
{
    while (s >> 16)
        s = (s & 0xffff) + (s >> 16);
    return (uint16_t)~s;
}

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void build(uint8_t *p, uint32_t src, uint32_t dst, uint16_t dport)
{
    memset(p, 0, PKT_LEN);
    p[0] = 0x45;
    p[2] = 0;
    p[3] = PKT_LEN;
    uint16_t id = (uint16_t)rnd();
    p[4] = (uint8_t)(id >> 8);
    p[5] = (uint8_t)id;
    p[8] = 64;
    p[9] = 6;
    memcpy(p + 12, &src, 4);
    memcpy(p + 16, &dst, 4);
    uint16_t c = fold(sum16(p, 20, 0));
    p[10] = (uint8_t)(c >> 8);
    p[11] = (uint8_t)c;
    uint8_t *t = p + 20;
    uint16_t sport = (uint16_t)(1024 + rnd() % 64000);
    uint32_t seq = rnd();
    t[0] = (uint8_t)(sport >> 8);
    t[1] = (uint8_t)sport;
    t[2] = (uint8_t)(dport >> 8);
    t[3] = (uint8_t)dport;
    t[4] = (uint8_t)(seq >> 24);
    t[5] = (uint8_t)(seq >> 16);
    t[6] = (uint8_t)(seq >> 8);
    t[7] = (uint8_t)seq;
    t[12] = 6 << 4;
    t[13] = 0x02;
    t[14] = 0xff;
    t[15] = 0xff;
    t[20] = 2;
    t[21] = 4;
    t[22] = 0x05;
    t[23] = 0xb4;
    /* pseudo header: src, dst, proto, TCP length */
    uint32_t s = sum16(p + 12, 8, 0) + 6 + (PKT_LEN - 20);
    c = fold(sum16(t, PKT_LEN - 20, s));
    t[16] = (uint8_t)(c >> 8);
    t[17] = (uint8_t)c;
}

int main(int argc, char **argv)
{
    if (argc != 8) {
        fprintf(stderr, "usage: %s DST_IP DST_PORT SRC_NET PREFIX_LEN RATE COUNT SECONDS\n",
                argv[0]);
        return 2;
    }
    struct in_addr dst, net;
    if (!inet_aton(argv[1], &dst) || !inet_aton(argv[3], &net))
        return 2;
    uint16_t dport = (uint16_t)atoi(argv[2]);
    int prefix = atoi(argv[4]);
    double rate = atof(argv[5]);
    unsigned long long count = strtoull(argv[6], NULL, 10);
    double seconds = atof(argv[7]);
    if (prefix < 8 || prefix > 32 || seconds <= 0 || seconds > 600)
        return 2;
    uint32_t host_mask = prefix == 32 ? 0 : (uint32_t)((1ULL << (32 - prefix)) - 1);
    uint32_t base = ntohl(net.s_addr) & ~host_mask;
    rng = (uint64_t)getpid() * 0x9E3779B97F4A7C15ULL ^ (uint64_t)(now() * 1e9);
    if (!rng)
        rng = 1;

    int fd = socket(AF_INET, SOCK_RAW, IPPROTO_RAW);
    if (fd < 0) {
        perror("socket");
        return 1;
    }
    int sndbuf = 4 << 20;
    setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof sndbuf);
    struct sockaddr_in to = {.sin_family = AF_INET, .sin_addr = dst};
    static uint8_t bufs[BATCH][PKT_LEN];
    struct mmsghdr msgs[BATCH];
    struct iovec iov[BATCH];
    for (int i = 0; i < BATCH; i++) {
        iov[i].iov_base = bufs[i];
        iov[i].iov_len = PKT_LEN;
        memset(&msgs[i], 0, sizeof msgs[i]);
        msgs[i].msg_hdr.msg_iov = &iov[i];
        msgs[i].msg_hdr.msg_iovlen = 1;
        msgs[i].msg_hdr.msg_name = &to;
        msgs[i].msg_hdr.msg_namelen = sizeof to;
    }
    unsigned long long sent = 0, errors = 0;
    double t0 = now(), t = t0;
    while (sent < count && (t = now()) - t0 < seconds) {
        unsigned long long due = rate > 0 ? (unsigned long long)((t - t0) * rate) + 1 : count;
        if (due > count)
            due = count;
        if (sent >= due) {
            struct timespec pause = {0, 100000};
            nanosleep(&pause, NULL);
            continue;
        }
        unsigned long long n = due - sent < BATCH ? due - sent : BATCH;
        for (unsigned long long i = 0; i < n; i++) {
            uint32_t src = htonl(base | (rnd() & host_mask));
            build(bufs[i], src, dst.s_addr, dport);
        }
        int r = sendmmsg(fd, msgs, (unsigned)n, 0);
        if (r < 0) {
            errors++;
            struct timespec pause = {0, 50000};
            nanosleep(&pause, NULL);
            continue;
        }
        sent += (unsigned long long)r;
    }
    printf("{\"sent\": %llu, \"seconds\": %.3f, \"errors\": %llu}\n", sent, now() - t0, errors);
    close(fd);
    return 0;
}
