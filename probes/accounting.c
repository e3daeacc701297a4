/* beanwatch kernel side: per-process address-space totals, per-cgroup sums, and the
 * bounds at which Python is woken up. Nothing is sent per page fault or per mmap:
 * an event goes out only when a cgroup crosses a bound Python programmed.
 *
 * Struct offsets (OFF_*) come from the running kernel's BTF via -D flags; the installed
 * headers may be another kernel's, so no struct member is dereferenced by name here. */
#include <uapi/linux/ptrace.h>
#include "observer.h"

#define S64_MAX 0x7fffffffffffffffLL

/* Atomic add-and-fetch and exchange came to BPF in 5.12. Before (NO_ATOMIC_FETCH, found by
 * the loader's probe), only an atomic add exists: an exchange becomes a read and an atomic
 * add of the difference, so a process entry and its cgroup's sum still change by the same
 * delta and stay consistent; a change racing another thread's on the same process may leave
 * the entry off by that change until the process's next event re-reads total_vm. */
#ifdef NO_ATOMIC_FETCH
#define ADD_FETCH(p, d) ({ __sync_fetch_and_add((p), (d)); *(p); })
#define SWAP(p, n) ({ long long __old = *(p); __sync_fetch_and_add((p), (n) - __old); __old; })
#else
#define ADD_FETCH(p, d) (__sync_fetch_and_add((p), (d)) + (d))
#define SWAP(p, n) __sync_lock_test_and_set((p), (n))
#endif

BPF_HASH(procs, u32, struct proc_state, MAX_PROCS);
BPF_HASH(leaves, u64, struct leaf, MAX_LEAVES);
/* ids of cgroup2 cgroups removed lately: no entry is made again for one of them */
BPF_TABLE("lru_hash", u64, u8, dead_leaves, 4096);
BPF_PERCPU_ARRAY(stats, u64, STAT_MAX);
/* `beanwatch trace`: one change of total_vm of at least this many pages is sent as EV_GROW*
 * (0: off, the default; watch never sets it) */
BPF_ARRAY(trace_min, long long, 1);
BPF_RINGBUF_OUTPUT(events, RINGBUF_PAGES);
#ifdef SEEN_CACHE
/* What the mmap-lock program last left in a process's entry (its recorded total_vm and
 * cgroup), kept in the task storage of the process's group leader: a release that finds
 * total_vm equal to it, or below it by a shrink that waits, and the same cgroup, would
 * change nothing, and returns without the procs lookup. Sound while the entry cannot have
 * changed since: only this program (under the mmap lock, so threads agree) writes an
 * entry's total for a live process save two others, which bump seen_epoch after they write:
 * a move (cgroup_attach_task: its total may be read before a concurrent change) and exec
 * (a new mm: a later total equal to the old one must not be taken as unchanged). A stale
 * epoch sends the next release through the full path. A new process (fork) is a new task
 * with no storage; a process without an entry (the map full) gets none either. */
struct seen {
	long long recorded;
	u64 cgid;
	u32 epoch;
};
BPF_TASK_STORAGE(seen, struct seen);
BPF_ARRAY(seen_epoch, u32, 1);

#ifdef LOCK_SLOT
/* A first level before the record, per CPU and without a helper call: the mm this CPU last
 * saw released with its process's entry confirmed (by the record or the full path), that
 * entry's total and cgroup, and slot_gen then. A release of the same mm, with total_vm equal
 * to it or below it by a shrink that waits, the same cgroup (read from the mm's owner) and
 * slot_gen unchanged, returns at once. Other CPUs (threads) may change the entry meanwhile,
 * so every write that could leave an entry below a slot's total, or make the slot's mm
 * another process's, bumps slot_gen (slot_invalidate): a new entry (fork; a reused mm
 * address), a shrink counted, a cgroup change, a removal (exit), a move, exec. A growth
 * does not: the entry stays at or above every slot's total. A slot is written only while
 * no other process shares the mm (CLONE_VM without threads: slot_fill); a clone that starts
 * sharing bumps slot_gen (a new entry) after it takes its mm reference. slot_gen has 64 bits:
 * it cannot wrap back to a stale slot's value. The program runs as a BTF tracepoint (tp_btf: its mm argument typed, so
 * total_vm is a direct load), loaded by the loader itself (bcc 0.26 does not). */
struct lock_slot {
	u64 mm;
	u64 cgid;
	long long recorded;
	u64 gen;
};
BPF_PERCPU_ARRAY(lock_slot, struct lock_slot, 1);
BPF_ARRAY(slot_gen, u64, 1);

static __always_inline void slot_invalidate(void)
{
	u32 zero = 0;
	u64 *g = slot_gen.lookup(&zero);
	if (g)
		__sync_fetch_and_add(g, 1);
}
#else
static __always_inline void slot_invalidate(void)
{
}
#endif

static __always_inline void seen_invalidate(void)
{
	u32 zero = 0;
	u32 *ep = seen_epoch.lookup(&zero);
	if (ep)
		__sync_fetch_and_add(ep, 1);
	slot_invalidate();
}
#else
static __always_inline void slot_invalidate(void)
{
}

static __always_inline void seen_invalidate(void)
{
}
#endif

static __always_inline void stat_inc(int idx)
{
	u64 *v = stats.lookup(&idx);
	if (v)
		(*v)++;
}

static __always_inline void *read_ptr(void *base, unsigned long off)
{
	void *p = 0;
	bpf_probe_read_kernel(&p, sizeof(p), (char *)base + off);
	return p;
}

static __always_inline void *task_mm(void *task)
{
	return read_ptr(task, OFF_TASK_MM);
}

static __always_inline long long mm_total_vm(void *mm)
{
	unsigned long v = 0;
	bpf_probe_read_kernel(&v, sizeof(v), (char *)mm + OFF_MM_TOTAL_VM);
	return (long long)v;
}

/* Resident pages as /proc's VmRSS counts them: file + anon + shmem. Each counter is a
 * percpu_counter whose global count lags the per-CPU deltas by at most a batch per CPU. */
static __always_inline long long mm_rss(void *mm)
{
	long long file = 0, anon = 0, shmem = 0;
	char *base = (char *)mm + OFF_MM_RSS_STAT + OFF_RSS_COUNT;
	bpf_probe_read_kernel(&file, sizeof(file), base + 0 * SIZE_RSS_COUNTER);
	bpf_probe_read_kernel(&anon, sizeof(anon), base + 1 * SIZE_RSS_COUNTER);
	bpf_probe_read_kernel(&shmem, sizeof(shmem), base + 3 * SIZE_RSS_COUNTER);
	long long sum = file + anon + shmem;
	return sum > 0 ? sum : 0;
}

/* task->cgroups->dfl_cgrp->kn->id: the task's cgroup2 id, what bpf_get_current_cgroup_id()
 * returns for current. Needed for tasks other than current (fork child, moved task). */
static __always_inline u64 task_cgroup_id(void *task)
{
	void *cset = read_ptr(task, OFF_TASK_CGROUPS);
	void *cgrp = read_ptr(cset, OFF_CSS_SET_DFL_CGRP);
	void *kn = read_ptr(cgrp, OFF_CGROUP_KN);
	u64 id = 0;
	bpf_probe_read_kernel(&id, sizeof(id), (char *)kn + OFF_KERNFS_NODE_ID);
	return id;
}

#ifdef TASK_BTF
/* The current task's mm, as a BTF pointer the verifier lets the program load through.
 * After `if (mm == arg)` the compiler may load through either register in the branch, and
 * the verifier refuses loads through the event's scalar argument (nor may a pointer be
 * xor-ed or subtracted to compare it): so the mm is compared, then loaded again (volatile:
 * the compiler cannot know the second load equals the argument). Only the task itself
 * changes its own mm (exec, exit), so both loads read the same pointer. */
static __always_inline char *btf_current_mm_if(char *task, u64 arg)
{
	char *mm = *(char **)(task + OFF_TASK_MM);
	if (!mm || (u64)mm != arg)
		return 0;
	return *(char * volatile *)(task + OFF_TASK_MM);
}

/* Helper calls are most of what a run costs here (each call and return pays for the CPU's
 * speculation mitigations): where the kernel has bpf_get_current_task_btf (5.11+), the hot
 * programs read the current task, its mm and cgroup by direct loads through BTF pointers,
 * which the verifier checks against the kernel's own types (a faulting load reads 0),
 * instead of probe reads and helpers. */
static __always_inline u64 btf_cgroup_id(char *task)
{
	char *cset = *(char **)(task + OFF_TASK_CGROUPS);
	char *cgrp = *(char **)(cset + OFF_CSS_SET_DFL_CGRP);
	char *kn = *(char **)(cgrp + OFF_CGROUP_KN);
	return *(u64 *)(kn + OFF_KERNFS_NODE_ID);
}

/* mm_rss() by direct loads, for the BTF pointer of the current task's mm. Before 6.2 the
 * counters are an array of atomic_long_t, a typedef the verifier of those kernels cannot
 * walk into ("Type 'atomic_long_t' is not a struct", 6.1): probe reads there. */
static __always_inline long long btf_mm_rss(char *mm)
{
#if SIZE_RSS_COUNTER > 8
	char *base = mm + OFF_MM_RSS_STAT + OFF_RSS_COUNT;
	long long sum = *(long long *)(base + 0 * SIZE_RSS_COUNTER)
		      + *(long long *)(base + 1 * SIZE_RSS_COUNTER)
		      + *(long long *)(base + 3 * SIZE_RSS_COUNTER);
	return sum > 0 ? sum : 0;
#else
	return mm_rss(mm);
#endif
}
#endif

static __always_inline void emit_extra(u32 kind, u32 tgid, u64 cgid, long long value, u64 aux,
				       long long extra)
{
	struct event *e = events.ringbuf_reserve(sizeof(struct event));
	if (!e) {
		stat_inc(STAT_RINGBUF_FULL);
		return;
	}
	e->kind = kind;
	e->tgid = tgid;
	e->cgid = cgid;
	e->value = value;
	e->aux = aux;
	e->ts_ns = bpf_ktime_get_ns();
	e->extra = extra;
	/* These events are rare (a bound crossed): wake the reader at once rather than let
	 * the ring buffer batch wake-ups, so a kill is never late by a batching decision. */
	events.ringbuf_submit(e, BPF_RB_FORCE_WAKEUP);
}

static __always_inline void emit(u32 kind, u32 tgid, u64 cgid, long long value, u64 aux)
{
	emit_extra(kind, tgid, cgid, value, aux, 0);
}

/* The entry of a cgroup: its counters and bounds. A cgroup seen for the first time gets one
 * that never fires, marked fired so that exactly one EV_NEW_LEAF goes out until Python
 * configures it. */
static __always_inline struct leaf *leaf_of(u64 id)
{
	struct leaf *l = leaves.lookup(&id);
	if (l)
		return l;
	if (dead_leaves.lookup(&id))
		return 0;
	struct leaf init = {};
	init.vm_high = S64_MAX;
	init.vm_low = -S64_MAX;
	init.rss_high = S64_MAX;
	init.vm_fired = 1;
	init.rss_fired = 1;
	if (leaves.insert(&id, &init) == 0)
		emit(EV_NEW_LEAF, 0, id, 0, 0);
	l = leaves.lookup(&id);
	if (!l)
		stat_inc(STAT_LEAVES_FULL);
	return l;
}

#ifdef VM_LIMITS
#include "refuse.h"     /* --vm-limit only: pasted in here by the loader (probe_text) */
#endif

/* Adds a change to a cgroup's mapped total, its entry found: one lookup serves the count
 * and the check against the bound. Returns the total after it. */
static __always_inline long long leaf_add_vm_to(struct leaf *l, u64 leaf, u32 tgid, long long delta)
{
	long long now = ADD_FETCH(&l->vm_pages, delta);
#ifdef VM_LIMITS
	vm_limit_add(leaf, delta);
#endif
	if (l->vm_fired)
		return now;
	if ((delta > 0 && now > l->vm_high) || (delta < 0 && now < l->vm_low)) {
		l->vm_fired = 1;
		emit(delta > 0 ? EV_VM_HIGH : EV_VM_LOW, tgid, leaf, now, 0);
	}
	return now;
}

/* Adds a change to a cgroup's mapped total; returns the total after it. */
static __always_inline long long leaf_add_vm(u64 leaf, u32 tgid, long long delta)
{
	if (!delta)
		return 0;
	struct leaf *l = leaf_of(leaf);
	if (!l)
		return 0;
	return leaf_add_vm_to(l, leaf, tgid, delta);
}

/* Where account() was called from, for `beanwatch trace` (SRC_NONE: never traced) */
#define SRC_NONE     0
#define SRC_LOCK     1 /* an mmap-lock release: the syscall in progress is read from pt_regs */
#define SRC_SYSCALL  2 /* a mapping syscall's exit: its number is in the tracepoint record */
#define SRC_RSS      3 /* a resident-count change (syscall hook): stack growth or compat */
#define SRC_EXEC     4
#define SRC_FORK     5

/* The syscall the current task is in: orig_ax of its user registers (x86-64, 5.15+). */
static __always_inline long long current_syscall(void)
{
#ifdef HAS_TASK_PT_REGS
	struct task_struct *t = (struct task_struct *)bpf_get_current_task_btf();
	struct pt_regs *regs = (struct pt_regs *)bpf_task_pt_regs(t);
	long long nr = GROW_UNKNOWN;
	if (bpf_probe_read_kernel(&nr, sizeof(nr), &regs->orig_ax))
		return GROW_UNKNOWN;
	return nr < 0 ? GROW_NO_SYSCALL : nr;
#else
	return GROW_UNKNOWN;
#endif
}

/* One change of at least trace_min pages (trace running): sent with what caused it. The only
 * cost on the hot path is the look-up of trace_min and one comparison, on a change only. */
static __always_inline void trace_change(void *ctx, int src, u32 tgid, u64 leaf,
					 long long delta, long long now)
{
	if (src == SRC_NONE || delta <= 0)
		return;
	int zero = 0;
	long long *min = trace_min.lookup(&zero);
	if (!min || *min <= 0 || delta < *min)
		return;
	if (src == SRC_EXEC) {
		emit_extra(EV_GROW_EXEC, tgid, leaf, delta, now, 0);
	} else if (src == SRC_FORK) {
		emit_extra(EV_GROW_FORK, tgid, leaf, delta, now, 0);
	} else if (src == SRC_LOCK) {
		emit_extra(EV_GROW, tgid, leaf, delta, now, current_syscall());
	} else if (src == SRC_SYSCALL) {
		/* syscalls:sys_exit_*: common fields (8 bytes), then int __syscall_nr */
		int nr = GROW_UNKNOWN;
		bpf_probe_read_kernel(&nr, sizeof(nr), (char *)ctx + 8);
		emit_extra(EV_GROW, tgid, leaf, delta, now, nr);
	} else {
		emit_extra(EV_GROW, tgid, leaf, delta, now, GROW_UNKNOWN);
	}
}

static __always_inline void leaf_add_rss(u64 leaf, struct leaf *l, u32 tgid, long long delta)
{
	if (!delta)
		return;
	long long now = ADD_FETCH(&l->rss_growth, delta);
	if (delta > 0 && !l->rss_fired && now > l->rss_high) {
		l->rss_fired = 1;
		emit(EV_RSS_HIGH, tgid, leaf, now, 0);
	}
}

/* Slow mode: bring the process's resident count (rss) up to date in its cgroup's growth sum.
 * The first look after Python bumped the cgroup's gen only takes a baseline: Python
 * measured the cgroup from /proc at that switch, so growth counts from there. */
static __always_inline void follow_rss_value(struct proc_state *p, struct leaf *l, u64 leaf,
					     u32 tgid, long long rss)
{
	if (p->gen != l->gen) {
		p->gen = l->gen;
		p->rss_pages = rss;
		return;
	}
	long long old = SWAP(&p->rss_pages, rss);
	leaf_add_rss(leaf, l, tgid, rss - old);
}

static __always_inline void follow_rss(struct proc_state *p, struct leaf *l, u64 leaf,
				       u32 tgid, void *mm)
{
	follow_rss_value(p, l, leaf, tgid, mm_rss(mm));
}

/* Only growth on the hot path: a shrink of a process's total_vm (vm, below what is recorded
 * for it) waits while it is small, at most 1/64 of vm or VM_SLACK_MIN pages, whichever is
 * more, and at most VM_SLACK_MAX pages (see observer.h): the entry and its cgroup's sum keep
 * the higher value, still an upper bound.
 * A steady stream of small mmap+munmap or brk pairs then costs one comparison per release
 * after its first pair, not a cgroup lookup and an atomic add at each. A bigger shrink is
 * counted in full at once. Only at mmap-lock releases and mapping syscalls (exec and fork
 * record the total exactly), and never with VM_EXACT (`trace`: each change's exact size;
 * --vm-limit: refusal against the exact total). */
static __always_inline int vm_shrink_waits(int src, long long recorded, long long vm)
{
#ifdef VM_EXACT
	return 0;
#else
	if (src != SRC_LOCK && src != SRC_SYSCALL && src != SRC_RSS)
		return 0;
	long long slack = vm >> VM_SLACK_SHIFT;
	if (slack < VM_SLACK_MIN)
		slack = VM_SLACK_MIN;
	if (slack > VM_SLACK_MAX)
		slack = VM_SLACK_MAX;
	return vm < recorded && recorded - vm <= slack;
#endif
}

/* Nothing to count: total_vm is what is recorded, or below it by a shrink that waits */
static __always_inline int vm_unchanged(int src, long long recorded, long long vm)
{
	return recorded == vm || vm_shrink_waits(src, recorded, vm);
}

/* Record a process's current total_vm (vm, read from mm) and cgroup, moving the difference
 * into the sums. */
static __always_inline long long account_vm(void *ctx, int src, u32 tgid, void *mm, u64 leaf,
					    long long vm)
{
	struct proc_state *p = procs.lookup(&tgid);
	if (!p) {
		struct proc_state fresh = {};
		fresh.vm_pages = vm;
		fresh.cgid = leaf;
		if (procs.insert(&tgid, &fresh) != 0) {
			p = procs.lookup(&tgid);
			if (!p) {
				stat_inc(STAT_PROCS_FULL);
				return -1;
			}
		} else {
			slot_invalidate();
			stat_inc(STAT_VM_UPDATES);
			long long now = leaf_add_vm(leaf, tgid, vm);
			/* a new entry is one change only for a fork's child (a process seen first at
			 * a later change was running before: its whole address space is not a change) */
			if (src == SRC_FORK)
				trace_change(ctx, src, tgid, leaf, vm, now);
			return vm;
		}
	}
	if (p->cgid != leaf) {
		/* moved since last seen: take everything out of the old cgroup first */
		u64 old_leaf = p->cgid;
		long long old_vm = SWAP(&p->vm_pages, vm);
		p->cgid = leaf;
		p->gen = 0;
		slot_invalidate();
		leaf_add_vm(old_leaf, tgid, -old_vm);
		leaf_add_vm(leaf, tgid, vm);
		stat_inc(STAT_VM_UPDATES);
		return vm;
	}
	long long recorded = p->vm_pages;
	if (!vm_unchanged(src, recorded, vm)) {
		recorded = vm;
		long long old = SWAP(&p->vm_pages, vm);
		if (vm < old)
			slot_invalidate();
		long long now = leaf_add_vm(leaf, tgid, vm - old);
		stat_inc(STAT_VM_UPDATES);
		/* a fork's child under a reused PID: its whole copy is the change */
		trace_change(ctx, src, tgid, leaf, src == SRC_FORK ? vm : vm - old, now);
	}
#ifndef FOLLOW_RSS_STAT
	/* No kmem:rss_stat here: resident growth the faults did not show (MAP_POPULATE, mlock)
	 * is caught at the next release of the mmap lock instead. */
	struct leaf *l = leaves.lookup(&leaf);
	if (l && l->slow)
		follow_rss(p, l, leaf, tgid, mm);
#endif
	return recorded;
}

static __always_inline void account(void *ctx, int src, u32 tgid, void *mm, u64 leaf)
{
	account_vm(ctx, src, tgid, mm, leaf, mm_total_vm(mm));
}

static __always_inline int account_current(void *ctx, int src)
{
	void *task = (void *)bpf_get_current_task();
	void *mm = task_mm(task);
	if (!mm)
		return 0;
	account(ctx, src, bpf_get_current_pid_tgid() >> 32, mm, bpf_get_current_cgroup_id());
	return 0;
}

/* A tracepoint about some mm: account it when it is the current task's own. */
static __always_inline int account_mm_if_current(void *ctx, int src, void *mm)
{
	if (!mm || mm != task_mm((void *)bpf_get_current_task()))
		return 0;
	account(ctx, src, bpf_get_current_pid_tgid() >> 32, mm, bpf_get_current_cgroup_id());
	return 0;
}

#ifdef VM_HOOK_MMAP_LOCK
/* total_vm changes only under the mmap write lock, and every way it changes ends in a
 * release of that lock: mmap, munmap, brk, mremap, shmat, aio rings, 32-bit syscalls, and
 * stack growth in a page fault (taken for writing, downgraded, released as a reader).
 * The tracepoint fires before the lock is dropped, so the total read here cannot be
 * overtaken by another thread's change. Unlike syscall tracepoints, this puts nothing on
 * the path of unrelated syscalls. Changes made to another process's mm (fork's copy, the
 * new mm being built by exec) are taken by the fork and exec programs instead. */
#ifdef TASK_BTF
#ifdef LOCK_SLOT
/* The slot is written only while no other process shares the mm. signal->live never exceeds
 * the mm users this process's own threads hold (a new thread takes its mm reference before it
 * counts as live, an exiting one stops being live before it drops its reference), so users
 * at most live means none is another process's; a reference held for a moment (a /proc
 * reader) only leaves the slot empty. */
static __always_inline void slot_fill(struct lock_slot *slot, u64 gen, char *task, char *mm,
				      u64 leaf, long long recorded)
{
	char *sig = *(char **)(task + OFF_TASK_SIGNAL);
	int live = *(volatile int *)(sig + OFF_SIGNAL_LIVE);
	int users = *(volatile int *)(mm + OFF_MM_USERS);
	if (users > live) {
		slot->mm = 0;
		return;
	}
	slot->mm = (u64)mm;
	slot->cgid = leaf;
	slot->recorded = recorded;
	slot->gen = gen;
}
#endif

/* A release of the mmap lock of the mm at arg: account it when it is the current task's.
 * With LOCK_SLOT, slot is this CPU's slot and gen slot_gen read before anything else. */
static __always_inline int lock_released(void *ctx, u64 arg, void *slot, u64 gen)
{
	char *task = (char *)bpf_get_current_task_btf();
	char *mm = btf_current_mm_if(task, arg);
	if (!mm)
		return 0;
	u64 leaf = btf_cgroup_id(task);
	long long vm = *(long long *)(mm + OFF_MM_TOTAL_VM);
#ifdef SEEN_CACHE
	/* the epoch is read first: a move or exec that bumps it later leaves this run's
	 * record stale, to be redone at the next release */
	u32 zero = 0;
	u32 *ep = seen_epoch.lookup(&zero);
	if (!ep)
		return 0;
	u32 epoch = *(volatile u32 *)ep;
	char *leader = *(char **)(task + OFF_TASK_GROUP_LEADER);
	struct seen *s = seen.task_storage_get(leader, 0, 0);
	long long recorded;
	if (s && s->cgid == leaf && s->epoch == epoch && vm_unchanged(SRC_LOCK, s->recorded, vm)) {
		recorded = s->recorded;
	} else {
		recorded = account_vm(ctx, SRC_LOCK, *(u32 *)(task + OFF_TASK_TGID), mm, leaf, vm);
		if (recorded < 0)
			return 0;
		if (!s)
			s = seen.task_storage_get(leader, 0, BPF_LOCAL_STORAGE_GET_F_CREATE);
		if (s) {
			s->recorded = recorded;
			s->cgid = leaf;
			s->epoch = epoch;
		}
	}
#ifdef LOCK_SLOT
	slot_fill((struct lock_slot *)slot, gen, task, mm, leaf, recorded);
#endif
#else
	account_vm(ctx, SRC_LOCK, *(u32 *)(task + OFF_TASK_TGID), mm, leaf, vm);
#endif
	return 0;
}
#endif

#ifdef LOCK_SLOT
/* mmap_lock_released as a BTF tracepoint (ctx: the TP_PROTO's arguments, the mm first and
 * typed): the slot first, then the path of the raw tracepoint below. */
int lock_released_btf(u64 *ctx)
{
	char *mm = (char *)ctx[0];
	if (!mm)
		return 0;
	u32 zero = 0;
	struct lock_slot *c = lock_slot.lookup(&zero);
	u64 *g = slot_gen.lookup(&zero);
	if (!c || !g)
		return 0;
	u64 gen = *(volatile u64 *)g;
	long long vm = *(long long *)(mm + OFF_MM_TOTAL_VM);
	if (c->mm == (u64)mm && c->gen == gen && vm_unchanged(SRC_LOCK, c->recorded, vm)) {
		char *owner = *(char **)(mm + OFF_MM_OWNER);
		if (owner && btf_cgroup_id(owner) == c->cgid)
			return 0;
	}
	return lock_released(ctx, (u64)mm, c, gen);
}
#else
RAW_TRACEPOINT_PROBE(mmap_lock_released)
{
	/* A raw tracepoint: its arguments are the kernel's TP_PROTO, not a formatted copy.
	 * The mm is the first on every kernel (6.1-6.12: mm, memcg_path, write; 6.13 on: mm,
	 * write); the loader checks that in BTF. Read releases are not left out: munmap, brk
	 * and mremap shrinking and stack growth change total_vm under the write lock, downgrade
	 * it, and release it as readers. An unchanged process costs one map lookup, or with
	 * SEEN_CACHE only a read of its record in task storage. */
#ifdef TASK_BTF
	return lock_released(ctx, ctx->args[0], 0, 0);
#else
	return account_mm_if_current(ctx, SRC_LOCK, (void *)ctx->args[0]);
#endif
}
#endif
#else
/* Attached to sys_exit of every syscall that can change total_vm (see observer/loader.py),
 * where the kernel has no mmap_lock tracepoints. */
int on_vm_syscall(void *ctx)
{
	return account_current(ctx, SRC_SYSCALL);
}

#ifdef HAS_RSS_STAT_TP
/* Syscall tracepoints miss two ways total_vm grows: stack growth in a page fault, and the
 * syscalls of 32-bit (compat) processes. Both can only matter once pages become resident,
 * and every change of an mm's resident count passes here (before 6.2, a thread's faults are
 * batched: at least every 64 of them): re-reading total_vm then keeps the estimate at or
 * above the resident count the kernel reports. Only the current task's own mm is taken. */
RAW_TRACEPOINT_PROBE(rss_stat)
{
	return account_mm_if_current(ctx, SRC_RSS, (void *)ctx->args[0]);
}
#endif
#endif

/* exec replaced the address space: the program loader's mappings are counted here */
TRACEPOINT_PROBE(sched, sched_process_exec)
{
	account_current(args, SRC_EXEC);
	seen_invalidate();
	return 0;
}

/* A new process starts with a copy of its parent's address space (dup_mmap has run when
 * this fires). Threads share their leader's mm and are not counted again. */
RAW_TRACEPOINT_PROBE(sched_process_fork)
{
	void *child = (void *)ctx->args[1];
	int pid = 0, tgid = 0;
	bpf_probe_read_kernel(&pid, sizeof(pid), (char *)child + OFF_TASK_PID);
	bpf_probe_read_kernel(&tgid, sizeof(tgid), (char *)child + OFF_TASK_TGID);
	if (pid != tgid)
		return 0;
	void *mm = task_mm(child);
	if (!mm)
		return 0;
	/* a stale entry under a reused PID is replaced, its pages taken out of its cgroup */
	account(ctx, SRC_FORK, tgid, mm, task_cgroup_id(child));
	/* a new mm, perhaps at the address of one a CPU's slot still names */
	slot_invalidate();
	return 0;
}

/* The last thread of a process is exiting: its address space goes away. A raw tracepoint:
 * its arguments are the kernel's (task, and since 6.16 group_dead), so no field layout of the
 * formatted event is assumed. Where group_dead is not passed, signal->live tells: do_exit
 * decrements it before this tracepoint fires, and it reaches 0 with the last thread (two
 * threads exiting together may both see 0: removing the entry is idempotent). */
RAW_TRACEPOINT_PROBE(sched_process_exit)
{
#ifdef EXIT_HAS_GROUP_DEAD
	if (!(ctx->args[1] & 0xff))
		return 0;
#else
	void *sig = read_ptr((void *)ctx->args[0], OFF_TASK_SIGNAL);
	int live = 1;
	if (!sig || bpf_probe_read_kernel(&live, sizeof(live), (char *)sig + OFF_SIGNAL_LIVE))
		return 0;
	if (live != 0)
		return 0;
#endif
	u32 tgid = bpf_get_current_pid_tgid() >> 32;
	struct proc_state *p = procs.lookup(&tgid);
	if (!p)
		return 0;
	u64 leaf = p->cgid;
	long long vm = p->vm_pages;
	struct leaf *l = leaves.lookup(&leaf);
	if (l && l->slow && p->gen == l->gen)
		leaf_add_rss(leaf, l, tgid, -p->rss_pages);
	procs.delete(&tgid);
	slot_invalidate();
	if (l && vm)
		leaf_add_vm_to(l, leaf, tgid, -vm);
	else
		leaf_add_vm(leaf, tgid, -vm);
	return 0;
}

/* A task was moved to another cgroup (any hierarchy; only cgroup2 moves change its id). */
RAW_TRACEPOINT_PROBE(cgroup_attach_task)
{
	void *task = (void *)ctx->args[2];
	int tgid = 0;
	bpf_probe_read_kernel(&tgid, sizeof(tgid), (char *)task + OFF_TASK_TGID);
	void *mm = task_mm(task);
	if (!mm)
		return 0;
	u32 key = tgid;
	u64 leaf = task_cgroup_id(task);
	struct proc_state *p = procs.lookup(&key);
	u64 old_leaf = p ? p->cgid : 0;
	if (p && old_leaf == leaf)
		return 0;
	account(ctx, SRC_NONE, key, mm, leaf);
	seen_invalidate();
	emit(EV_MOVED, key, leaf, mm_total_vm(mm), old_leaf);
	return 0;
}

#ifdef HAS_CGROUP_RMDIR
/* A cgroup was removed: free its entries, so churn (sessions, timers, containers, a tenant's
 * loop of mkdir and rmdir) cannot fill the maps. Only cgroup2's (hierarchy 0): v1 hierarchies
 * number their cgroups on their own. No live process is left in a removed cgroup (the exit
 * program runs before a task leaves its cgroup), and the id is remembered as dead so that a
 * stale process entry pointing at it cannot make the entries again. */
TRACEPOINT_PROBE(cgroup, cgroup_rmdir)
{
	if (args->root != 0)
		return 0;
	u64 id = args->id;
	u8 one = 1;
	dead_leaves.update(&id, &one);
	if (leaves.delete(&id) == 0)
		stat_inc(STAT_LEAVES_FREED);
	return 0;
}
#endif

/* Slow mode only (attached while some cgroup is slow): follow resident growth per fault.
 * The tracepoint fires before the fault is handled, so the count read here includes every
 * earlier fault; one fault may map many pages (THP, fault-around) and that shows up here. */
int on_page_fault(void *ctx)
{
	u64 leaf = bpf_get_current_cgroup_id();
	struct leaf *ctl = leaves.lookup(&leaf);
	if (!ctl || !ctl->slow)
		return 0;
	u32 tgid = bpf_get_current_pid_tgid() >> 32;
	struct proc_state *p = procs.lookup(&tgid);
	if (!p)
		return 0;
	void *mm = task_mm((void *)bpf_get_current_task());
	if (!mm)
		return 0;
	stat_inc(STAT_FAULTS);
	follow_rss(p, ctl, leaf, tgid, mm);
	return 0;
}

#ifdef FOLLOW_RSS_STAT
/* Slow mode only (attached while some cgroup is slow): kmem:rss_stat, taken raw, fires at
 * every change of an mm's resident counters (before 6.2, a thread's own faults are batched
 * into them at least every 64), whoever makes it: the process's own faults, the kernel on
 * its behalf (MAP_POPULATE, mlock, a read() into an untouched buffer), or another process
 * (process_vm_writev, ptrace), or a kernel thread (khugepaged). The change is read from the
 * mm the event is about (the first argument on every kernel: mm, member[, count]), after it
 * was made. A change to the current task's own mm is looked up by its cgroup first, so the
 * tasks of fast cgroups cost one lookup; another mm is found through its owner task. */
int on_rss_change(struct bpf_raw_tracepoint_args *ctx)
{
	void *mm = (void *)ctx->args[0];
	if (!mm)
		return 0;
	u32 tgid;
	u64 leaf;
	struct proc_state *p;
	struct leaf *ctl;
#ifdef TASK_BTF
	char *task = (char *)bpf_get_current_task_btf();
	char *cur = btf_current_mm_if(task, (u64)mm);
	if (cur) {
		leaf = btf_cgroup_id(task);
		ctl = leaves.lookup(&leaf);
		if (!ctl || !ctl->slow)
			return 0;
		tgid = *(u32 *)(task + OFF_TASK_TGID);
		p = procs.lookup(&tgid);
		if (!p)
			return 0;
		stat_inc(STAT_FAULTS);
		follow_rss_value(p, ctl, leaf, tgid, btf_mm_rss(cur));
		return 0;
	}
#else
	void *task = (void *)bpf_get_current_task();
	if (mm == task_mm(task)) {
		leaf = bpf_get_current_cgroup_id();
		ctl = leaves.lookup(&leaf);
		if (!ctl || !ctl->slow)
			return 0;
		tgid = bpf_get_current_pid_tgid() >> 32;
		p = procs.lookup(&tgid);
		if (!p)
			return 0;
		stat_inc(STAT_FAULTS);
		follow_rss(p, ctl, leaf, tgid, mm);
		return 0;
	}
#endif
#ifdef OFF_MM_OWNER
	void *owner = read_ptr(mm, OFF_MM_OWNER);
	int t = 0;
	if (!owner || bpf_probe_read_kernel(&t, sizeof(t), (char *)owner + OFF_TASK_TGID) || t <= 0)
		return 0;
	tgid = t;
	p = procs.lookup(&tgid);
	if (!p)
		return 0;
	leaf = p->cgid;
	ctl = leaves.lookup(&leaf);
	if (!ctl || !ctl->slow)
		return 0;
	stat_inc(STAT_FAULTS);
	follow_rss(p, ctl, leaf, tgid, mm);
#endif
	return 0;
}
#endif

/* Python writes a cgroup's bounds by running this program (BPF_PROG_TEST_RUN; never attached)
 * with the arguments (cgroup id, vm_high, vm_low, rss_high, slow | gen << 32). The bounds go
 * field by field into the entry BPF counts in, so no count is lost to the write, and the
 * wake-ups are re-armed. Returns BOUNDS_FULL when the map is full, BOUNDS_GONE for a cgroup
 * removed already: its entry is not made again (a churning tenant's cgroups are mostly gone by
 * the time Python bounds them; each such write left an entry that nothing would ever free). */
int apply_bounds(struct bpf_raw_tracepoint_args *ctx)
{
	u64 id = ctx->args[0];
	struct leaf *l = leaves.lookup(&id);
	if (!l) {
		if (dead_leaves.lookup(&id))
			return BOUNDS_GONE;
		struct leaf init = {};
		init.vm_high = ctx->args[1];
		init.vm_low = ctx->args[2];
		init.rss_high = ctx->args[3];
		init.slow = ctx->args[4] & 1;
		init.gen = ctx->args[4] >> 32;
		if (leaves.insert(&id, &init) == 0)
			return BOUNDS_OK;
		l = leaves.lookup(&id);   /* made by BPF meanwhile */
		if (!l)
			return BOUNDS_FULL;
	}
	l->vm_high = ctx->args[1];
	l->vm_low = ctx->args[2];
	l->rss_high = ctx->args[3];
	l->slow = ctx->args[4] & 1;
	l->gen = ctx->args[4] >> 32;
	l->vm_fired = 0;
	l->rss_fired = 0;
	return BOUNDS_OK;
}

/* Kernel OOM kills in their own file, with this file's ring buffer and maps. bcc rewrites
 * map calls (events.ringbuf_reserve, procs.lookup) in this file only: included files reach
 * the maps through these. */
static __always_inline void *events_reserve(u64 size)
{
	return events.ringbuf_reserve(size);
}

static __always_inline void events_submit(void *e)
{
	events.ringbuf_submit(e, BPF_RB_FORCE_WAKEUP);
}

static __always_inline struct proc_state *proc_of(u32 tgid)
{
	return procs.lookup(&tgid);
}

#include "oom.c"
