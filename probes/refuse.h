/* --vm-limit: growth of a cgroup's mapped total past its limit fails with ENOMEM.
 *
 * Compiled in only with -DVM_LIMITS (`watch --vm-limit`): the loader pastes this file into
 * accounting.c in place of its #include (bcc rewrites map calls only in the main text); without
 * it nothing here exists and the accounting programs are unchanged. With it, the one
 * addition to accounting is vm_limit_add() in leaf_add_vm: a cgroup's change also goes
 * to the total of the vm-limited cgroup that covers it (one map lookup per change).
 *
 * The mapped total of a vm-limited cgroup L is ctl.base + cnt.delta (pages): Python maps
 * each cgroup under L to L (vm_leaf_limit), then sets base to what the counters and its
 * seed summed to, less the delta at that moment (read twice until stable); after that the
 * kernel keeps it exact by itself.
 *
 * Which hook sees which growth, with its size (see README, "Refusal or kill"):
 *   lsm/mmap_file   every mmap(2) (anonymous or file, private or shared, PROT_NONE
 *                   reservations) and shmat(2), before anything is mapped. Its arguments
 *                   carry no length: the syscall's own are read from the task's pt_regs
 *                   (mmap: len; shmat: the segment's size, its inode's i_size).
 *   lsm/mmap_addr   an address picked for a mapping: mremap(2) moving a mapping (growth
 *                   new_len - old_len).
 *   fmod_ret on security_vm_enough_memory_mm (a trampoline, not an LSM program: the
 *                   vm_enough_memory LSM hook cannot refuse, its verdict only decides the
 *                   admin reserve, and BPF may not attach to it from 6.10 on): brk(2) and
 *                   mremap(2) growing in place. Only growth the kernel commits (private
 *                   writable) passes there; attached where the kernel allows it.
 * Not refused (counted): stack growth (its commit check cannot be told apart from tmpfs
 * and memfd page commits there), exec's own mappings, fork's copy, a move into the cgroup,
 * aio rings, 32-bit (compat) syscalls. */
#ifndef BEANWATCH_REFUSE_H
#define BEANWATCH_REFUSE_H

#define VM_ENOMEM 12
/* x86-64 syscall numbers (refusal is x86-64 only: the loader says so elsewhere) */
#define NR_MMAP   9
#define NR_BRK    12
#define NR_MREMAP 25
#define NR_SHMAT  30
/* struct pt_regs on x86-64: si (2nd argument), dx (3rd), orig_ax (the syscall number) */
#define PT_REGS_OFF_SI      104
#define PT_REGS_OFF_DX      96
#define PT_REGS_OFF_ORIG_AX 120

/* per vm-limited cgroup, written by Python */
struct vm_limit_ctl {
	long long limit;           /* pages: growth that would take the total past it fails */
	long long barrier;         /* pages: growth past it is counted (0: no barrier) */
	long long base;            /* pages: total = base + vm_limit_cnt.delta */
};

/* per vm-limited cgroup, written by BPF with atomic adds (Python only creates it) */
struct vm_limit_cnt {
	long long delta;           /* pages: changes of its cgroups since Python mapped them */
	unsigned long long refused;        /* growths refused with ENOMEM */
	unsigned long long refused_pages;  /* what they asked for */
	unsigned long long over_barrier;   /* growths allowed past the barrier */
};

BPF_HASH(vm_leaf_limit, u64, u64, MAX_LEAVES);   /* cgroup -> the vm-limited cgroup covering it */
BPF_HASH(vm_limit_ctl, u64, struct vm_limit_ctl, MAX_VM_LIMITS);
BPF_HASH(vm_limit_cnt, u64, struct vm_limit_cnt, MAX_VM_LIMITS);

static __always_inline void vm_limit_add(u64 leaf, long long delta)
{
	u64 *lid = vm_leaf_limit.lookup(&leaf);
	if (!lid)
		return;
	struct vm_limit_cnt *cnt = vm_limit_cnt.lookup(lid);
	if (cnt)
		__sync_fetch_and_add(&cnt->delta, delta);
}

/* 0, or -ENOMEM when growing the current task's cgroup by pages would pass its vm limit. */
static __always_inline int vm_refuse(long long pages)
{
	if (pages <= 0)
		return 0;
	u64 leaf = bpf_get_current_cgroup_id();
	u64 *lid = vm_leaf_limit.lookup(&leaf);
	if (!lid)
		return 0;
	struct vm_limit_ctl *ctl = vm_limit_ctl.lookup(lid);
	struct vm_limit_cnt *cnt = vm_limit_cnt.lookup(lid);
	if (!ctl || !cnt)
		return 0;
	long long after = ctl->base + cnt->delta + pages;
	if (after > ctl->limit) {
		__sync_fetch_and_add(&cnt->refused, 1);
		__sync_fetch_and_add(&cnt->refused_pages, pages);
		return -VM_ENOMEM;
	}
	if (ctl->barrier > 0 && after > ctl->barrier)
		__sync_fetch_and_add(&cnt->over_barrier, 1);
	return 0;
}

/* The system call the current task is in (-1 or an error code in an exception), with its
 * 2nd and 3rd arguments, from the registers saved at kernel entry. */
static __always_inline long refuse_syscall_args(unsigned long *arg2, unsigned long *arg3)
{
	char *regs = (char *)bpf_task_pt_regs(bpf_get_current_task_btf());
	long nr = -1;
	if (!regs)
		return -1;
	bpf_probe_read_kernel(&nr, sizeof(nr), regs + PT_REGS_OFF_ORIG_AX);
	bpf_probe_read_kernel(arg2, sizeof(*arg2), regs + PT_REGS_OFF_SI);
	bpf_probe_read_kernel(arg3, sizeof(*arg3), regs + PT_REGS_OFF_DX);
	return nr;
}

static __always_inline long long pages_of(unsigned long bytes)
{
	return (long long)((bytes + 4095) >> 12);
}

/* mremap(addr, old_len, new_len, ...): what it grows by */
static __always_inline long long mremap_growth(unsigned long old_len, unsigned long new_len)
{
	return new_len > old_len ? pages_of(new_len - old_len) : 0;
}

/* Every mmap(2) and shmat(2), before the mapping is made. MAP_FIXED over existing mappings
 * is judged by its whole length (what it replaces is not known yet). */
LSM_PROBE(mmap_file, void *file, unsigned long reqprot, unsigned long prot, unsigned long flags)
{
	unsigned long len = 0, arg3 = 0;
	long nr = refuse_syscall_args(&len, &arg3);
	if (nr == NR_MMAP)
		return vm_refuse(pages_of(len));
	if (nr == NR_SHMAT && file) {
		void *inode = 0;
		long long size = 0;
		bpf_probe_read_kernel(&inode, sizeof(inode), (char *)file + OFF_FILE_INODE);
		if (!inode)
			return 0;
		bpf_probe_read_kernel(&size, sizeof(size), (char *)inode + OFF_INODE_SIZE);
		return vm_refuse(pages_of(size));
	}
	return 0;
}

/* An address chosen for a new mapping: mremap(2) moving a mapping to grow it. */
LSM_PROBE(mmap_addr, unsigned long addr)
{
	unsigned long old_len = 0, new_len = 0;
	if (refuse_syscall_args(&old_len, &new_len) != NR_MREMAP)
		return 0;
	return vm_refuse(mremap_growth(old_len, new_len));
}

/* brk(2) and mremap(2) growing in place: the kernel's commit check, which no LSM program
 * can turn into a refusal. Attached by the loader where fmod_ret on it is allowed. Other
 * callers (mprotect, fork, shmget, tmpfs pages, stack growth) pass untouched. */
KMOD_RET(security_vm_enough_memory_mm, void *mm, long pages, int ret)
{
	if (ret)
		return ret;
	unsigned long old_len = 0, new_len = 0;
	long nr = refuse_syscall_args(&old_len, &new_len);
	if (nr == NR_BRK)
		return vm_refuse(pages);
	if (nr == NR_MREMAP)
		return vm_refuse(mremap_growth(old_len, new_len));
	return 0;
}

#endif
