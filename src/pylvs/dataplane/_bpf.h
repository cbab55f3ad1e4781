/* _bpf.h — the bpf(2) system call for the dataplane's programs (_steer.c, _xdp.c); glibc has
 * no wrapper. */
#ifndef PYLVS_BPF_H
#define PYLVS_BPF_H
#include <linux/bpf.h>
#include <sys/syscall.h>
#include <unistd.h>

static inline long lvs_sys_bpf(int cmd, union bpf_attr *attr)
{
    return syscall(__NR_bpf, cmd, attr, sizeof(*attr));
}

#endif
