/* pylvs_bpf.h — what every pylvs BPF program needs (xdp_synproxy.bpf.c, tc_fastpath.bpf.c)
 * without libbpf's headers: the section and map-definition macros libbpf reads, the helpers
 * both call, and byte swaps. */
#ifndef PYLVS_BPF_PROG_H
#define PYLVS_BPF_PROG_H
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>

#define SEC(name) __attribute__((section(name), used))
#define __uint(name, val) int (*name)[val]
#define __type(name, val) __typeof__(val) *name
#define INLINE static inline __attribute__((always_inline))

static void *(*bpf_map_lookup_elem)(void *map, const void *key) = (void *)BPF_FUNC_map_lookup_elem;
static __u64 (*bpf_ktime_get_ns)(void) = (void *)BPF_FUNC_ktime_get_ns;

#define bswap16(x) __builtin_bswap16(x)
#define bswap32(x) __builtin_bswap32(x)

#endif
