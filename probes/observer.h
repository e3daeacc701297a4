/* Types and constants shared by the BPF programs in probes/ and observer/wire.py.
 * Keep in sync with observer/wire.py: tests/unit/test_wire.py parses this file and
 * compares every constant and struct layout with the Python side. */
#ifndef BEANWATCH_OBSERVER_H
#define BEANWATCH_OBSERVER_H

/* event kinds, sent through the ring buffer */
#define EV_NEW_LEAF   1 /* first address-space change seen in a cgroup Python has not configured */
#define EV_VM_HIGH    2 /* a cgroup's mapped total rose above the bound Python set */
#define EV_VM_LOW     3 /* ... fell below the bound Python set */
#define EV_RSS_HIGH   4 /* a slow-mode cgroup's resident growth passed the bound Python set */
#define EV_MOVED      5 /* a known process moved to another cgroup */
/* `beanwatch trace` only (sent while trace_min[0] > 0): one change of a process's total_vm
 * reached trace_min pages. value: the change (pages); aux: its cgroup's kernel-side count
 * after it (pages, Python adds its seed); extra: the syscall in progress (EV_GROW). */
#define EV_GROW       6 /* at an mmap-lock release (or a mapping syscall's exit) */
#define EV_GROW_EXEC  7 /* exec built a new address space */
#define EV_GROW_FORK  8 /* fork copied the parent's address space into the child */

/* EV_GROW's extra when no syscall number is known: */
#define GROW_NO_SYSCALL  -1 /* not in a syscall: a page fault from user mode (stack growth) */
#define GROW_UNKNOWN     -2 /* this kernel or architecture does not say */

#define EV_OOM_KILL   9 /* the kernel's OOM killer chose a victim (probes/oom.c); tgid: the
                         * victim's process, cgid: its cgroup, value: its thread id, aux: 1
                         * when the cgroup was read from the task (else from procs); the
                         * event is followed by the victim's comm (OOM_COMM_LEN bytes) */

/* indexes into the per-CPU stats array */
#define STAT_RINGBUF_FULL  0 /* ringbuf_reserve failed: an event was lost */
#define STAT_PROCS_FULL    1 /* procs map full: a process is not accounted */
#define STAT_LEAVES_FULL   2 /* leaf maps full: a cgroup is not accounted */
#define STAT_VM_UPDATES    3 /* address-space changes accounted */
#define STAT_FAULTS        4 /* page faults followed in slow-mode cgroups */
#define STAT_LEAVES_FREED  5 /* per-cgroup entries freed at rmdir */
#define STAT_OOM_KILLS     6 /* OOM victims marked by the kernel, in any cgroup */
#define STAT_MAX           7

/* What apply_bounds returns (keep in sync with wire.BOUNDS_*) */
#define BOUNDS_OK          0
#define BOUNDS_FULL        1 /* the leaves map is full: the cgroup is not accounted */
#define BOUNDS_GONE        2 /* the cgroup was removed (its id is among the dead): no entry made */

struct event {
	unsigned int kind;
	unsigned int tgid;
	unsigned long long cgid;   /* cgroup2 id (inode of the cgroup directory) */
	long long value;           /* kind-specific: pages */
	unsigned long long aux;    /* kind-specific: old cgroup id for EV_MOVED */
	unsigned long long ts_ns;  /* bpf_ktime_get_ns() */
	long long extra;           /* kind-specific: the syscall number for EV_GROW */
};

#define OOM_COMM_LEN 16            /* TASK_COMM_LEN */

/* Shrinks settled lazily (probes/accounting.c, vm_shrink_waits): a process's recorded total
 * (proc_state.vm_pages) is a high-water mark. Growth above it is counted at once; a shrink to
 * vm pages is counted only when the recorded total is more than
 * min(max(vm >> VM_SLACK_SHIFT, VM_SLACK_MIN), VM_SLACK_MAX) pages above vm, and then in
 * full. So a recorded total is never below the process's total_vm and at most 1/64 of it or
 * 256 KiB, whichever is more, above it (16 MiB at most). The floor is for small processes,
 * whose allocator's churn (glibc trims its heap and maps big blocks from 128 KiB on) would
 * otherwise be counted twice per malloc+free. Read by observer/kernel/wire.py (vm_slack). */
#define VM_SLACK_SHIFT 6
#define VM_SLACK_MIN   64
#define VM_SLACK_MAX   4096

/* one entry per process (thread group): what is counted for it in its cgroup */
struct proc_state {
	long long vm_pages;        /* mm->total_vm when last counted: its high-water mark
				    * since, within VM_SLACK of it (see above) */
	unsigned long long cgid;   /* the cgroup its pages are counted in */
	long long rss_pages;       /* resident pages when last seen in slow mode */
	unsigned int gen;          /* leaf.gen when rss_pages was taken */
	unsigned int pad;
};

/* per cgroup: the counters BPF adds to (atomic adds), and the bounds that wake Python up.
 * Python writes the bounds through the apply_bounds program (run by BPF_PROG_TEST_RUN),
 * field by field into this same entry: a write never overwrites a count, and the hot path
 * finds counters and bounds with one lookup. */
struct leaf {
	long long vm_pages;        /* sum of changes in total_vm seen by BPF (Python adds its seed) */
	long long rss_growth;      /* sum of resident-page changes seen in slow mode */
	long long vm_high;         /* wake when vm_pages rises above */
	long long vm_low;          /* wake when vm_pages falls below */
	long long rss_high;        /* wake when rss_growth rises above */
	unsigned int slow;         /* follow resident growth of this cgroup */
	unsigned int gen;          /* bumped by Python on each switch to slow mode */
	unsigned int vm_fired;     /* set by BPF when it sent EV_VM_HIGH/LOW, cleared by Python */
	unsigned int rss_fired;    /* set by BPF when it sent EV_RSS_HIGH, cleared by Python */
};

#endif
