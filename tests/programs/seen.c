/* The mmap-lock program's per-process record of what it last counted (probes/accounting.c,
 * SEEN_CACHE), where it could go stale. Each mode ends by printing "ready" and waiting for
 * end of input; VmSize is then what counts.
 * (exec needs no case here: the new image's loading releases the new mm's lock in the
 * task's own context, which records its total again, and exec bumps the epoch as well.)
 *   moves    maps 64 pages, unmaps 25 of them (a shrink that waits: the entry keeps the
 *            high-water mark H), prints "ready shrunk" and reads a line (meanwhile the test
 *            moves it to another cgroup and back: a move records the exact total, H - 25
 *            pages), then maps 25 pages again, back to H. Had the moves not invalidated
 *            the record (H, this cgroup), that release would have looked unchanged and
 *            the entry stayed 25 pages under VmSize.
 *   threads  maps 64 MiB; a second thread unmaps half of it (counted at once: far past the
 *            slack); the first thread maps 32 MiB again, back to the total it last saw.
 *            A record per thread would have called that unchanged: one per process does not.
 *            The threads run on different CPUs (where there are two): the first CPU's slot
 *            (LOCK_SLOT) still holds the total it last saw, so the other CPU's shrink must
 *            invalidate it.
 *   shared   pinned to one CPU, clones a process that shares its memory (CLONE_VM, not a
 *            thread) and prints "ready <its pid>"; meanwhile the test moves that process to
 *            another cgroup. At a line, the first maps 64 MiB; then the second unmaps a
 *            range where nothing is mapped (a release at the new total, which it never
 *            recorded; on kernels without mmap_lock tracepoints, a munmap exit) and prints
 *            "ready". A slot the first had filled, its cgroup the mm owner's, would
 *            have called the second's release unchanged: its entry 64 MiB under its VmSize.
 * No stdio: its buffers would grow the heap.
 * usage: seen moves|threads|shared */
#define _GNU_SOURCE
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <sys/wait.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

static void say(const char *s)
{
	if (write(1, s, strlen(s)) < 0)
		exit(1);
}

static void hold(void)
{
	char c;
	say("ready\n");
	while (read(0, &c, 1) == 1)
		;
	exit(0);
}

static void map_pages(long pages)
{
	if (pages > 0 && mmap(NULL, pages * sysconf(_SC_PAGESIZE), PROT_READ | PROT_WRITE,
			      MAP_PRIVATE | MAP_ANONYMOUS, -1, 0) == MAP_FAILED)
		exit(1);
}

static char *half;

/* pins the calling thread to this CPU, where there is one */
static void pin(int cpu)
{
	cpu_set_t set;
	CPU_ZERO(&set);
	CPU_SET(cpu, &set);
	if (cpu < sysconf(_SC_NPROCESSORS_ONLN))
		sched_setaffinity(0, sizeof(set), &set);
}

static void *unmap_half(void *arg)
{
	(void)arg;
	pin(1);
	munmap(half, 32 << 20);
	return NULL;
}

static volatile int mapped;
static char *hole;

static int sharer(void *arg)
{
	(void)arg;
	while (!mapped)
		usleep(1000);
	if (munmap(hole, sysconf(_SC_PAGESIZE)))
		_exit(1);
	say("ready\n");
	char c;
	while (read(0, &c, 1) == 1)
		;
	_exit(0);   /* not exit(): the atexit handlers are the first process's */
}

int main(int argc, char **argv)
{
	if (argc >= 2 && !strcmp(argv[1], "moves")) {
		long page = sysconf(_SC_PAGESIZE);
		char *region = mmap(NULL, 64 * page, PROT_READ | PROT_WRITE,
				    MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		if (region == MAP_FAILED)
			return 1;
		munmap(region + 39 * page, 25 * page);
		say("ready shrunk\n");
		char c;
		while (read(0, &c, 1) == 1 && c != '\n')
			;
		map_pages(25);
		hold();
	}
	if (argc >= 2 && !strcmp(argv[1], "threads")) {
		pin(0);
		char *all = mmap(NULL, 64 << 20, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		if (all == MAP_FAILED)
			return 1;
		half = all + (32 << 20);
		pthread_t t;
		if (pthread_create(&t, NULL, unmap_half, NULL) || pthread_join(t, NULL))
			return 1;
		if (mmap(half, 32 << 20, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0)
		    == MAP_FAILED)
			return 1;
		hold();
	}
	if (argc >= 2 && !strcmp(argv[1], "shared")) {
		pin(0);
		long size = 1 << 20;
		char *stack = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
				   -1, 0);
		/* the middle page of three: no later mapping of 64 MiB can fill that hole */
		long page = sysconf(_SC_PAGESIZE);
		char *three = mmap(NULL, 3 * page, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		hole = three + page;
		if (stack == MAP_FAILED || three == MAP_FAILED || munmap(hole, page))
			return 1;
		int pid = clone(sharer, stack + size, CLONE_VM | SIGCHLD, NULL);
		if (pid < 0)
			return 1;
		char line[32];
		snprintf(line, sizeof(line), "ready %d\n", pid);
		say(line);
		char c;
		while (read(0, &c, 1) == 1 && c != '\n')
			;
		map_pages((64 << 20) / sysconf(_SC_PAGESIZE));
		mapped = 1;
		while (read(0, &c, 1) == 1)
			;
		int status;
		if (waitpid(pid, &status, 0) != pid || !WIFEXITED(status))
			return 1;
		return WEXITSTATUS(status);
	}
	say("usage: seen moves|threads|shared\n");
	return 2;
}
