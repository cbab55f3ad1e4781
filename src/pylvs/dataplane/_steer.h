/* _steer.h — the TUN steering program (dataplane/_steer.c): both directions of a connection
 * go to one queue, so one worker sees all of a connection's packets.  Mirrored in _steer.cdef
 * beside it. */
#ifndef PYLVS_STEER_H
#define PYLVS_STEER_H
#include <stdint.h>

typedef struct lvs_steer lvs_steer;

/* Build and load the program and its VIP map (bpf(2)); NULL with *err = -errno when the kernel
 * refuses (no CAP_BPF, no BPF syscall, the verifier). */
lvs_steer *lvs_steer_new(int *err);
void lvs_steer_free(lvs_steer *s);
/* TUNSETSTEERINGEBPF on one queue fd of the device (it applies to every queue): 0 or -errno. */
int lvs_steer_attach(const lvs_steer *s, int tun_fd);
/* Add (present = 1) or remove a VIP: addr as lvs_addr (host-order words; IPv4 = {ip, 0, 0, 0}).
 * 0 or -errno (removing an absent VIP is not an error). */
int lvs_steer_set_vip(lvs_steer *s, const uint32_t addr[4], int present);
/* Run the loaded program on one IP packet (BPF_PROG_TEST_RUN): its return value, which the
 * TUN reduces modulo the queue count; -errno on failure.  For tests. */
int64_t lvs_steer_test_run(const lvs_steer *s, const uint8_t *pkt, uint32_t len);
/* What the program computes, in C: the client's address (folded as the schedulers fold it,
 * lvs_addr_fold) and port, hashed to 16 bits.  The queue is this modulo the queue count. */
uint32_t lvs_steer_hash(uint8_t af, const uint32_t addr[4], uint16_t port);

#endif
