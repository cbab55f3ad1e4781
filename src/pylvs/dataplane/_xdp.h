/* _xdp.h — the bpf(2) calls behind the XDP SYN-cookie responder (dataplane/xdp.py loads the
 * program with libbpf; these attach it, keep its maps and run it in tests).  Mirrored in
 * _xdp.cdef beside it.  Every call returns 0 (or a non-negative result) or -errno. */
#ifndef PYLVS_XDP_H
#define PYLVS_XDP_H
#include <stdint.h>

/* Attach prog_fd to the interface as an XDP program through a BPF link (BPF_LINK_CREATE):
 * the link's fd, whose last close detaches the program, so a director killed with -9 leaves
 * nothing attached.  flags: XDP_FLAGS_DRV_MODE (native) or XDP_FLAGS_SKB_MODE (generic). */
int lvs_xdp_link(int prog_fd, int ifindex, uint32_t flags);
/* BPF_MAP_UPDATE_ELEM (BPF_ANY), BPF_MAP_DELETE_ELEM (an absent key is not an error),
 * BPF_MAP_LOOKUP_ELEM (a per-CPU map fills one value per possible CPU). */
int lvs_xdp_map_update(int map_fd, const void *key, const void *value);
int lvs_xdp_map_delete(int map_fd, const void *key);
int lvs_xdp_map_lookup(int map_fd, const void *key, void *value);
/* Run the program once on an Ethernet frame (BPF_PROG_TEST_RUN): its verdict (XDP_PASS,
 * XDP_TX ...), with the frame as the program left it in out (*out_len bytes). */
int lvs_xdp_test_run(int prog_fd, const uint8_t *frame, uint32_t len, uint8_t *out,
                     uint32_t cap, uint32_t *out_len);

#endif
