/*
 * _steer.c — the TUN steering program (TUNSETSTEERINGEBPF): one queue for both directions of
 * a connection.
 *
 * Without it the kernel picks a TUN queue by the packet's flow hash, and the two directions of
 * a NAT connection (client -> VIP, real server -> client) have different 5-tuples, so they
 * usually land on different workers.  The engine is correct either way (one shared table), but
 * a connection touched by two cores moves its cache lines between them on every packet.  The
 * one part of a connection NAT changes in neither direction is the client's address and port:
 * the source of a packet to a VIP, the destination of a reply.  The program hashes that, and
 * the TUN takes its return value modulo the queue count (tun_ebpf_select_queue).
 *
 * Which side is the client: a packet whose destination is in the VIP map goes to a VIP (the
 * client is its source); any other packet is a reply (the client is its destination).  ICMP
 * errors follow the connection they quote: quoting a packet the director sent towards the
 * client (outer destination a VIP), the client is the quoted destination; otherwise the quoted
 * source.  IPv6 packets with extension headers, and packets of other protocols, hash the
 * client's address alone (port 0): a flow whose two directions disagree there only loses the
 * locality, never correctness.
 *
 * The program is BPF_PROG_TYPE_SOCKET_FILTER, assembled here from raw instructions, so the
 * build needs no clang; it reads the packet with the classic LD_ABS/LD_IND loads (the TUN's
 * skb starts at the IP header) and is a few dozen instructions with no loops.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <linux/bpf.h>
#include <linux/if_tun.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "_bpf.h"
#include "_steer.h"

#define MAX_VIPS 65536
#define MAX_INSNS 160
#define ETH_HLEN 14

struct lvs_steer {
    int prog_fd;
    int map_fd;
};


uint32_t lvs_steer_hash(uint8_t af, const uint32_t addr[4], uint16_t port)
{
    uint32_t h = af == 10 ? addr[0] ^ addr[1] ^ addr[2] ^ addr[3] : addr[0];
    h *= 0x9E3779B1u;
    h ^= port;
    h *= 0x85EBCA6Bu;
    h ^= h >> 16;
    return h & 0xffff;
}

/* ---- a tiny assembler: instructions plus forward labels ---- */

enum { R0, R1, R2, R3, R4, R5, R6, R7, R8, R9, R10 };

enum label {
    L_V4, L_V6, L_OTHER4, L_OTHER4_DST, L_PORTS4, L_PORTS4_OUT, L_ICMP4, L_IERR4,
    L_IERR4_SRC, L_IERR4_PROTO, L_IERR4_PORTS, L_OTHER6, L_OTHER6_DST, L_PORTS6,
    L_PORTS6_OUT, L_ICMP6, L_I6_PORTS, L_I6_NOPORT_SRC, L_I6_SRC, L_FOLD6, L_HASH, L_COUNT
};

typedef struct as {
    struct bpf_insn insn[MAX_INSNS];
    int n;
    int at[L_COUNT];              /* label -> instruction index, -1 = not placed yet */
    struct { int insn; enum label to; } fix[64];
    int nfix;
    int overflow;
} as;

static void emit(as *a, uint8_t code, uint8_t dst, uint8_t src, int16_t off, int32_t imm)
{
    if (a->n >= MAX_INSNS) {
        a->overflow = 1;
        return;
    }
    a->insn[a->n++] = (struct bpf_insn){
        .code = code, .dst_reg = dst, .src_reg = src, .off = off, .imm = imm};
}

static void label(as *a, enum label l)
{
    a->at[l] = a->n;
}

/* A conditional jump (op with an immediate) or, with op = BPF_JA, an unconditional one. */
static void jmp(as *a, uint8_t op, uint8_t reg, int32_t imm, enum label to)
{
    if (a->nfix >= (int)(sizeof(a->fix) / sizeof(a->fix[0]))) {
        a->overflow = 1;
        return;
    }
    a->fix[a->nfix].insn = a->n;
    a->fix[a->nfix++].to = to;
    emit(a, BPF_JMP | op | BPF_K, op == BPF_JA ? 0 : reg, 0, 0, op == BPF_JA ? 0 : imm);
}

static void ld_abs(as *a, uint8_t size, int32_t off)
{
    emit(a, BPF_LD | size | BPF_ABS, 0, 0, 0, off);
}

static void ld_ind(as *a, uint8_t size, uint8_t reg, int32_t off)
{
    emit(a, BPF_LD | size | BPF_IND, 0, reg, 0, off);
}

static void mov_reg(as *a, uint8_t dst, uint8_t src)
{
    emit(a, BPF_ALU64 | BPF_MOV | BPF_X, dst, src, 0, 0);
}

/* reg = a packet load (LD_ABS/LD_IND leave it in r0) */
static void abs_to(as *a, uint8_t reg, uint8_t size, int32_t off)
{
    ld_abs(a, size, off);
    mov_reg(a, reg, R0);
}

static void ind_to(as *a, uint8_t reg, uint8_t size, uint8_t base, int32_t off)
{
    ld_ind(a, size, base, off);
    mov_reg(a, reg, R0);
}

static void mov_imm(as *a, uint8_t dst, int32_t imm)
{
    emit(a, BPF_ALU64 | BPF_MOV | BPF_K, dst, 0, 0, imm);
}

static void alu32_imm(as *a, uint8_t op, uint8_t dst, int32_t imm)
{
    emit(a, BPF_ALU | op | BPF_K, dst, 0, 0, imm);
}

static void alu32_reg(as *a, uint8_t op, uint8_t dst, uint8_t src)
{
    emit(a, BPF_ALU | op | BPF_X, dst, src, 0, 0);
}

/* The word just loaded into r0 goes to the VIP-map key on the stack (r10 - 16 + 4 * word). */
static void key_word(as *a, int word)
{
    emit(a, BPF_STX | BPF_W | BPF_MEM, R10, R0, (int16_t)(-16 + 4 * word), 0);
}

/* r9 = the VIP map's entry for the key on the stack, or NULL (the packet goes to a VIP). */
static void vip_lookup(as *a, int map_fd)
{
    emit(a, BPF_LD | BPF_DW | BPF_IMM, R1, BPF_PSEUDO_MAP_FD, 0, map_fd);
    emit(a, 0, 0, 0, 0, 0);
    mov_reg(a, R2, R10);
    emit(a, BPF_ALU64 | BPF_ADD | BPF_K, R2, 0, 0, -16);
    emit(a, BPF_JMP | BPF_CALL, 0, 0, 0, BPF_FUNC_map_lookup_elem);
    mov_reg(a, R9, R0);
}

/*
 * Registers: r6 the skb (LD_ABS/LD_IND need it there), r7 an offset into the packet, r8 the
 * protocol and then the client's port, r9 the VIP-map entry (NULL: not to a VIP) and then the
 * client's folded address.  The tail hashes r9 and r8 exactly as lvs_steer_hash.
 */
static int assemble(as *a, int map_fd)
{
    memset(a, 0, sizeof(*a));
    for (int i = 0; i < L_COUNT; i++)
        a->at[i] = -1;
    mov_reg(a, R6, R1);
    ld_abs(a, BPF_B, 0);
    alu32_imm(a, BPF_AND, R0, 0xf0);
    jmp(a, BPF_JEQ, R0, 0x40, L_V4);
    jmp(a, BPF_JEQ, R0, 0x60, L_V6);
    mov_imm(a, R0, 0);
    emit(a, BPF_JMP | BPF_EXIT, 0, 0, 0, 0);

    /* ---- IPv4 ---- */
    label(a, L_V4);
    abs_to(a, R8, BPF_B, 9);
    ld_abs(a, BPF_B, 0);
    alu32_imm(a, BPF_AND, R0, 0xf);
    alu32_imm(a, BPF_LSH, R0, 2);
    mov_reg(a, R7, R0);
    ld_abs(a, BPF_W, 16);
    key_word(a, 0);
    emit(a, BPF_ST | BPF_W | BPF_MEM, R10, 0, -12, 0);
    emit(a, BPF_ST | BPF_W | BPF_MEM, R10, 0, -8, 0);
    emit(a, BPF_ST | BPF_W | BPF_MEM, R10, 0, -4, 0);
    vip_lookup(a, map_fd);
    jmp(a, BPF_JEQ, R8, 1, L_ICMP4);
    jmp(a, BPF_JEQ, R8, 6, L_PORTS4);
    jmp(a, BPF_JEQ, R8, 17, L_PORTS4);
    label(a, L_OTHER4); /* the client's address, port 0 */
    mov_imm(a, R8, 0);
    jmp(a, BPF_JEQ, R9, 0, L_OTHER4_DST);
    abs_to(a, R9, BPF_W, 12);
    jmp(a, BPF_JA, 0, 0, L_HASH);
    label(a, L_OTHER4_DST);
    abs_to(a, R9, BPF_W, 16);
    jmp(a, BPF_JA, 0, 0, L_HASH);

    label(a, L_PORTS4);
    jmp(a, BPF_JEQ, R9, 0, L_PORTS4_OUT);
    abs_to(a, R9, BPF_W, 12);
    ind_to(a, R8, BPF_H, R7, 0);
    jmp(a, BPF_JA, 0, 0, L_HASH);
    label(a, L_PORTS4_OUT);
    abs_to(a, R9, BPF_W, 16);
    ind_to(a, R8, BPF_H, R7, 2);
    jmp(a, BPF_JA, 0, 0, L_HASH);

    label(a, L_ICMP4); /* errors: the quoted packet at r7 + 8 names the connection */
    ld_ind(a, BPF_B, R7, 0);
    jmp(a, BPF_JEQ, R0, 3, L_IERR4);
    jmp(a, BPF_JEQ, R0, 4, L_IERR4);
    jmp(a, BPF_JEQ, R0, 11, L_IERR4);
    jmp(a, BPF_JEQ, R0, 12, L_IERR4);
    jmp(a, BPF_JA, 0, 0, L_OTHER4);
    label(a, L_IERR4);
    jmp(a, BPF_JEQ, R9, 0, L_IERR4_SRC);
    ld_ind(a, BPF_W, R7, 8 + 16); /* to a VIP: about a packet to the client */
    mov_reg(a, R9, R0);
    mov_imm(a, R8, 2);
    jmp(a, BPF_JA, 0, 0, L_IERR4_PROTO);
    label(a, L_IERR4_SRC);
    ind_to(a, R9, BPF_W, R7, 8 + 12);
    mov_imm(a, R8, 0);
    label(a, L_IERR4_PROTO);
    ld_ind(a, BPF_B, R7, 8 + 9);
    jmp(a, BPF_JEQ, R0, 6, L_IERR4_PORTS);
    jmp(a, BPF_JEQ, R0, 17, L_IERR4_PORTS);
    mov_imm(a, R8, 0);
    jmp(a, BPF_JA, 0, 0, L_HASH);
    label(a, L_IERR4_PORTS);
    ld_ind(a, BPF_B, R7, 8);
    alu32_imm(a, BPF_AND, R0, 0xf);
    alu32_imm(a, BPF_LSH, R0, 2);
    emit(a, BPF_ALU64 | BPF_ADD | BPF_X, R7, R0, 0, 0);
    emit(a, BPF_ALU64 | BPF_ADD | BPF_X, R7, R8, 0, 0);
    ind_to(a, R8, BPF_H, R7, 8);
    jmp(a, BPF_JA, 0, 0, L_HASH);

    /* ---- IPv6 (no extension-header walk: such packets hash the address alone) ---- */
    label(a, L_V6);
    abs_to(a, R8, BPF_B, 6);
    for (int w = 0; w < 4; w++) {
        ld_abs(a, BPF_W, 24 + 4 * w);
        key_word(a, w);
    }
    vip_lookup(a, map_fd);
    jmp(a, BPF_JEQ, R8, 58, L_ICMP6);
    jmp(a, BPF_JEQ, R8, 6, L_PORTS6);
    jmp(a, BPF_JEQ, R8, 17, L_PORTS6);
    label(a, L_OTHER6);
    mov_imm(a, R8, 0);
    mov_imm(a, R7, 8);
    jmp(a, BPF_JEQ, R9, 0, L_OTHER6_DST);
    jmp(a, BPF_JA, 0, 0, L_FOLD6);
    label(a, L_OTHER6_DST);
    mov_imm(a, R7, 24);
    jmp(a, BPF_JA, 0, 0, L_FOLD6);

    label(a, L_PORTS6);
    jmp(a, BPF_JEQ, R9, 0, L_PORTS6_OUT);
    abs_to(a, R8, BPF_H, 40);
    mov_imm(a, R7, 8);
    jmp(a, BPF_JA, 0, 0, L_FOLD6);
    label(a, L_PORTS6_OUT);
    abs_to(a, R8, BPF_H, 42);
    mov_imm(a, R7, 24);
    jmp(a, BPF_JA, 0, 0, L_FOLD6);

    label(a, L_ICMP6); /* errors (type < 128) quote the packet at 48 */
    ld_abs(a, BPF_B, 40);
    jmp(a, BPF_JGE, R0, 128, L_OTHER6);
    ld_abs(a, BPF_B, 48 + 6);
    jmp(a, BPF_JEQ, R0, 6, L_I6_PORTS);
    jmp(a, BPF_JEQ, R0, 17, L_I6_PORTS);
    mov_imm(a, R8, 0);
    mov_imm(a, R7, 48 + 24);
    jmp(a, BPF_JEQ, R9, 0, L_I6_NOPORT_SRC);
    jmp(a, BPF_JA, 0, 0, L_FOLD6);
    label(a, L_I6_NOPORT_SRC);
    mov_imm(a, R7, 48 + 8);
    jmp(a, BPF_JA, 0, 0, L_FOLD6);
    label(a, L_I6_PORTS);
    jmp(a, BPF_JEQ, R9, 0, L_I6_SRC);
    abs_to(a, R8, BPF_H, 88 + 2);
    mov_imm(a, R7, 48 + 24);
    jmp(a, BPF_JA, 0, 0, L_FOLD6);
    label(a, L_I6_SRC);
    abs_to(a, R8, BPF_H, 88);
    mov_imm(a, R7, 48 + 8);

    label(a, L_FOLD6); /* r9 = the XOR of the four words of the address at r7 */
    ind_to(a, R9, BPF_W, R7, 0);
    for (int w = 1; w < 4; w++) {
        ld_ind(a, BPF_W, R7, 4 * w);
        emit(a, BPF_ALU64 | BPF_XOR | BPF_X, R9, R0, 0, 0);
    }

    /* ---- the hash (lvs_steer_hash) ---- */
    label(a, L_HASH);
    alu32_reg(a, BPF_MOV, R0, R9);
    alu32_imm(a, BPF_MUL, R0, (int32_t)0x9E3779B1u);
    alu32_reg(a, BPF_XOR, R0, R8);
    alu32_imm(a, BPF_MUL, R0, (int32_t)0x85EBCA6Bu);
    alu32_reg(a, BPF_MOV, R1, R0);
    alu32_imm(a, BPF_RSH, R1, 16);
    alu32_reg(a, BPF_XOR, R0, R1);
    alu32_imm(a, BPF_AND, R0, 0xffff);
    emit(a, BPF_JMP | BPF_EXIT, 0, 0, 0, 0);

    if (a->overflow)
        return -E2BIG;
    for (int i = 0; i < a->nfix; i++) {
        int to = a->at[a->fix[i].to];
        if (to < 0)
            return -EINVAL;
        a->insn[a->fix[i].insn].off = (int16_t)(to - a->fix[i].insn - 1);
    }
    return 0;
}

lvs_steer *lvs_steer_new(int *err)
{
    union bpf_attr attr;
    lvs_steer *s = calloc(1, sizeof(*s));
    as *a = calloc(1, sizeof(*a));
    int rc = -ENOMEM;
    if (!s || !a)
        goto fail;
    s->prog_fd = -1;
    s->map_fd = lvs_bpf_hash_map(16, 4, MAX_VIPS, "pylvs_vips");
    if (s->map_fd < 0) {
        rc = s->map_fd;
        goto fail;
    }
    rc = assemble(a, s->map_fd);
    if (rc < 0)
        goto fail;
    static const char license[] = "GPL";
    memset(&attr, 0, sizeof(attr));
    attr.prog_type = BPF_PROG_TYPE_SOCKET_FILTER;
    attr.insns = (uint64_t)(uintptr_t)a->insn;
    attr.insn_cnt = (uint32_t)a->n;
    attr.license = (uint64_t)(uintptr_t)license;
    memcpy(attr.prog_name, "pylvs_steer", sizeof("pylvs_steer"));
    s->prog_fd = (int)lvs_sys_bpf(BPF_PROG_LOAD, &attr);
    if (s->prog_fd < 0) {
        rc = -errno;
        goto fail;
    }
    free(a);
    return s;
fail:
    free(a);
    if (s && s->map_fd >= 0)
        close(s->map_fd);
    free(s);
    if (err)
        *err = rc;
    return NULL;
}

void lvs_steer_free(lvs_steer *s)
{
    if (!s)
        return;
    close(s->prog_fd);
    close(s->map_fd);
    free(s);
}

int lvs_steer_attach(const lvs_steer *s, int tun_fd)
{
    int fd = s->prog_fd;
    return ioctl(tun_fd, TUNSETSTEERINGEBPF, &fd) < 0 ? -errno : 0;
}

int lvs_steer_set_vip(lvs_steer *s, const uint32_t addr[4], int present)
{
    uint32_t key[4] = {addr[0], addr[1], addr[2], addr[3]};
    uint32_t one = 1;
    union bpf_attr attr;
    memset(&attr, 0, sizeof(attr));
    attr.map_fd = (uint32_t)s->map_fd;
    attr.key = (uint64_t)(uintptr_t)key;
    if (present) {
        attr.value = (uint64_t)(uintptr_t)&one;
        attr.flags = BPF_ANY;
        return lvs_sys_bpf(BPF_MAP_UPDATE_ELEM, &attr) < 0 ? -errno : 0;
    }
    if (lvs_sys_bpf(BPF_MAP_DELETE_ELEM, &attr) < 0 && errno != ENOENT)
        return -errno;
    return 0;
}

int64_t lvs_steer_test_run(const lvs_steer *s, const uint8_t *pkt, uint32_t len)
{
    /* A socket filter's test run takes an Ethernet frame and starts the program after its
     * header, where a TUN's skb starts. */
    uint8_t *frame = calloc(1, (size_t)len + ETH_HLEN);
    if (!frame)
        return -ENOMEM;
    int v6 = len > 0 && (pkt[0] >> 4) == 6;
    frame[12] = v6 ? 0x86 : 0x08;
    frame[13] = v6 ? 0xdd : 0x00;
    memcpy(frame + ETH_HLEN, pkt, len);
    union bpf_attr attr;
    memset(&attr, 0, sizeof(attr));
    attr.test.prog_fd = (uint32_t)s->prog_fd;
    attr.test.data_in = (uint64_t)(uintptr_t)frame;
    attr.test.data_size_in = len + ETH_HLEN;
    attr.test.repeat = 1;
    long r = lvs_sys_bpf(BPF_PROG_TEST_RUN, &attr);
    int e = errno;
    free(frame);
    return r < 0 ? -(int64_t)e : (int64_t)attr.test.retval;
}
