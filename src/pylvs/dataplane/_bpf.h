/* _bpf.h — the bpf(2) system call for the dataplane's programs (_steer.c, _xdp.c,
 * _fastpath.c); glibc has no wrapper.  Plus the few calls all of them make. */
#ifndef PYLVS_BPF_H
#define PYLVS_BPF_H
#include <errno.h>
#include <linux/bpf.h>
#include <stdint.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

static inline long lvs_sys_bpf(int cmd, union bpf_attr *attr)
{
    return syscall(__NR_bpf, cmd, attr, sizeof(*attr));
}

/* One element call (BPF_MAP_UPDATE_ELEM, _LOOKUP_ELEM, _DELETE_ELEM, _LOOKUP_AND_DELETE_ELEM):
 * 0 or -errno. */
static inline int lvs_bpf_map_op(int cmd, int map_fd, const void *key, void *value,
                                 uint64_t flags)
{
    union bpf_attr attr;
    memset(&attr, 0, sizeof(attr));
    attr.map_fd = (uint32_t)map_fd;
    attr.key = (uint64_t)(uintptr_t)key;
    attr.value = (uint64_t)(uintptr_t)value;
    attr.flags = flags;
    return lvs_sys_bpf(cmd, &attr) < 0 ? -errno : 0;
}

/* A hash map allocated as it fills (BPF_F_NO_PREALLOC): its fd or -errno. */
static inline int lvs_bpf_hash_map(uint32_t key_size, uint32_t value_size, uint32_t max_entries,
                                   const char *name)
{
    union bpf_attr attr;
    memset(&attr, 0, sizeof(attr));
    attr.map_type = BPF_MAP_TYPE_HASH;
    attr.key_size = key_size;
    attr.value_size = value_size;
    attr.max_entries = max_entries;
    attr.map_flags = BPF_F_NO_PREALLOC;
    if (name)
        strncpy(attr.map_name, name, sizeof(attr.map_name) - 1);
    long fd = lvs_sys_bpf(BPF_MAP_CREATE, &attr);
    return fd < 0 ? -errno : (int)fd;
}

/* Run a program once on data (BPF_PROG_TEST_RUN), with an optional context: its return value
 * (the verdict), the data as it left it in out (*out_len bytes), or -errno. */
static inline int lvs_bpf_test_run(int prog_fd, const void *data, uint32_t len, void *out,
                                   uint32_t cap, uint32_t *out_len, const void *ctx,
                                   uint32_t ctx_size)
{
    union bpf_attr attr;
    memset(&attr, 0, sizeof(attr));
    attr.test.prog_fd = (uint32_t)prog_fd;
    attr.test.data_in = (uint64_t)(uintptr_t)data;
    attr.test.data_size_in = len;
    attr.test.data_out = (uint64_t)(uintptr_t)out;
    attr.test.data_size_out = cap;
    attr.test.ctx_in = (uint64_t)(uintptr_t)ctx;
    attr.test.ctx_size_in = ctx_size;
    attr.test.repeat = 1;
    if (lvs_sys_bpf(BPF_PROG_TEST_RUN, &attr) < 0)
        return -errno;
    *out_len = attr.test.data_size_out;
    return (int)attr.test.retval;
}

#endif
