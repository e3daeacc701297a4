/* Kernel OOM kills: oom:mark_victim, taken raw, fires once per victim the kernel's OOM
 * killer chose (memory.max of a cgroup, or the whole machine). It runs at no other time, so
 * it costs nothing until the kernel kills. Included at the end of accounting.c, whose ring
 * buffer, maps and helpers it uses; the loader defines HAS_OOM_TP where the tracepoint
 * exists, and OOM_VICTIM_TASK where its first argument is the victim task (its
 * btf_trace_mark_victim typedef, or a `comm` field in its format, says so: Debian's 5.10,
 * 6.1 and 6.12 and later kernels). Older kernels pass only the victim's pid: its cgroup is
 * then the one its pages are counted in (procs), and its comm is known only when the
 * victim is the task that ran out of memory (current); Python reads /proc otherwise. */
#ifdef HAS_OOM_TP
struct oom_event {
	struct event head;
	char comm[OOM_COMM_LEN];
};

RAW_TRACEPOINT_PROBE(mark_victim)
{
	stat_inc(STAT_OOM_KILLS);
	struct oom_event *e = events_reserve(sizeof(struct oom_event));
	if (!e) {
		stat_inc(STAT_RINGBUF_FULL);
		return 0;
	}
	__builtin_memset(e->comm, 0, OOM_COMM_LEN);
#ifdef OOM_VICTIM_TASK
	void *task = (void *)ctx->args[0];
	int pid = 0, tgid = 0;
	bpf_probe_read_kernel(&pid, sizeof(pid), (char *)task + OFF_TASK_PID);
	bpf_probe_read_kernel(&tgid, sizeof(tgid), (char *)task + OFF_TASK_TGID);
	e->head.tgid = tgid;
	e->head.value = pid;
	e->head.cgid = task_cgroup_id(task);
	e->head.aux = 1;
	bpf_probe_read_kernel_str(e->comm, OOM_COMM_LEN, (char *)task + OFF_TASK_COMM);
#else
	u32 key = (u32)ctx->args[0];
	struct proc_state *p = proc_of(key);
	e->head.tgid = key;
	e->head.value = key;
	e->head.cgid = p ? p->cgid : 0;
	e->head.aux = 0;
	if ((u32)(bpf_get_current_pid_tgid() >> 32) == key)
		bpf_get_current_comm(e->comm, OOM_COMM_LEN);
#endif
	e->head.kind = EV_OOM_KILL;
	e->head.ts_ns = bpf_ktime_get_ns();
	e->head.extra = 0;
	events_submit(e);
	return 0;
}
#endif
