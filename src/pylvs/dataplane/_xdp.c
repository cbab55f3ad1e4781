/*
 * _xdp.c — attach, maps and test runs of the XDP SYN-cookie responder
 * (bpf/xdp_synproxy.bpf.c), with bare bpf(2) calls.  Loading the object file (its ELF, BTF and
 * map relocations) is libbpf's job, done from dataplane/xdp.py.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <string.h>

#include "_bpf.h"
#include "_xdp.h"

int lvs_xdp_link(int prog_fd, int ifindex, uint32_t flags)
{
    union bpf_attr attr;
    memset(&attr, 0, sizeof(attr));
    attr.link_create.prog_fd = (uint32_t)prog_fd;
    attr.link_create.target_ifindex = (uint32_t)ifindex;
    attr.link_create.attach_type = BPF_XDP;
    attr.link_create.flags = flags;
    long fd = lvs_sys_bpf(BPF_LINK_CREATE, &attr);
    return fd < 0 ? -errno : (int)fd;
}

int lvs_xdp_map_update(int map_fd, const void *key, const void *value)
{
    return lvs_bpf_map_op(BPF_MAP_UPDATE_ELEM, map_fd, key, (void *)value, BPF_ANY);
}

int lvs_xdp_map_delete(int map_fd, const void *key)
{
    int rc = lvs_bpf_map_op(BPF_MAP_DELETE_ELEM, map_fd, key, NULL, 0);
    return rc == -ENOENT ? 0 : rc;
}

int lvs_xdp_map_lookup(int map_fd, const void *key, void *value)
{
    return lvs_bpf_map_op(BPF_MAP_LOOKUP_ELEM, map_fd, key, value, 0);
}

int lvs_xdp_test_run(int prog_fd, const uint8_t *frame, uint32_t len, uint8_t *out,
                     uint32_t cap, uint32_t *out_len)
{
    return lvs_bpf_test_run(prog_fd, frame, len, out, cap, out_len, NULL, 0);
}
