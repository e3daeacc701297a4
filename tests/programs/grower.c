/* Grows its address space one known step at a time, for `beanwatch trace` tests.
 * Reads one command a line on stdin, does it, then prints "ok" (after fork: "ok CHILDPID")
 * and waits for the next. Each step is one change of total_vm, so the test can compare the
 * traced bytes with VmSize before and after.
 *   mmap N     an anonymous private mapping of N bytes
 *   brk N      the heap grown by N bytes (sbrk)
 *   mremap N   the last mapping grown in place or moved, by N bytes
 *   shm N      a SysV segment of N bytes attached
 *   stack N    the stack grown by about N bytes in one page fault (its lowest byte first)
 *   touch N    the next N bytes of the last mapping written, one byte a page (no huge
 *              pages): resident memory grows by N, the address space not at all
 *   fork       a child that lives until this process exits
 *   exec PATH  exec PATH (no arguments)
 * usage: grower (commands on stdin) */
#define _GNU_SOURCE
#include <alloca.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ipc.h>
#include <sys/mman.h>
#include <sys/shm.h>
#include <unistd.h>

static char *last;
static size_t last_size;
static size_t touched;   /* bytes of the last mapping written so far, from its start */
static volatile char sink;

static void die(const char *what)
{
	perror(what);
	exit(1);
}

static void __attribute__((noinline)) grow_stack(size_t n)
{
	volatile char *p = alloca(n);
	p[0] = 1;   /* the lowest address first: one fault grows the stack by all of it */
	sink = p[n / 2];
}

int main(void)
{
	char line[4096], arg[4000];
	unsigned long n;
	setvbuf(stdout, NULL, _IOLBF, 0);
	printf("ok\n");
	while (fgets(line, sizeof(line), stdin)) {
		if (sscanf(line, "mmap %lu", &n) == 1) {
			last = mmap(NULL, n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
			if (last == MAP_FAILED)
				die("mmap");
			last_size = n;
			touched = 0;
		} else if (sscanf(line, "brk %lu", &n) == 1) {
			if (sbrk(n) == (void *)-1)
				die("sbrk");
		} else if (sscanf(line, "mremap %lu", &n) == 1) {
			char *p = mremap(last, last_size, last_size + n, MREMAP_MAYMOVE);
			if (p == MAP_FAILED)
				die("mremap");
			last = p;
			last_size += n;
		} else if (sscanf(line, "shm %lu", &n) == 1) {
			int id = shmget(IPC_PRIVATE, n, IPC_CREAT | 0600);
			if (id < 0)
				die("shmget");
			if (shmat(id, NULL, 0) == (void *)-1)
				die("shmat");
			shmctl(id, IPC_RMID, NULL);
		} else if (sscanf(line, "touch %lu", &n) == 1) {
			size_t page = (size_t)sysconf(_SC_PAGESIZE);
			if (!last || touched + n > last_size) {
				fprintf(stderr, "grower: touch past the last mapping\n");
				return 2;
			}
			if (!touched)   /* best effort: EINVAL without transparent huge pages */
				(void)madvise(last, last_size, MADV_NOHUGEPAGE);
			for (size_t off = touched; off < touched + n; off += page)
				last[off] = 1;
			touched += n;
		} else if (sscanf(line, "stack %lu", &n) == 1) {
			grow_stack(n);
		} else if (strncmp(line, "fork", 4) == 0) {
			int fds[2];
			if (pipe(fds))
				die("pipe");
			pid_t pid = fork();
			if (pid < 0)
				die("fork");
			if (pid == 0) {   /* lives until the parent is gone (the pipe's end closes) */
				close(fds[1]);
				while (read(fds[0], arg, 1) > 0)
					;
				_exit(0);
			}
			close(fds[0]);
			printf("ok %d\n", pid);
			continue;
		} else if (sscanf(line, "exec %3999s", arg) == 1) {
			fflush(stdout);
			execl(arg, arg, (char *)NULL);
			die("exec");
		} else {
			fprintf(stderr, "grower: unknown command %s", line);
			return 2;
		}
		printf("ok\n");
	}
	return 0;
}
