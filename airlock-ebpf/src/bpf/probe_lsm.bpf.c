// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* Loaded and attached once at start: proves the kernel runs BPF LSM programs. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

char LICENSE[] SEC("license") = "Dual BSD/GPL";

SEC("lsm/bprm_check_security")
int BPF_PROG(airlock_probe_lsm, struct linux_binprm *bprm, int ret)
{
	return ret;
}
