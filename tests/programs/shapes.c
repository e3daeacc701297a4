/* Ways a process's address space and RSS change, one scenario per argument.
 * Each scenario stops at checkpoints: it prints "ready NAME" on stdout and waits for a
 * line on stdin before going on, so a test can compare beanwatch with /proc in a known
 * state. At the end it prints "done" and waits for stdin to close.
 * usage: shapes SCENARIO [ARGS] */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ipc.h>
#include <sys/mman.h>
#include <sys/shm.h>
#include <sys/wait.h>
#include <unistd.h>

#define MiB (1UL << 20)

static long page;

static void finish(void)
{
	char line[64];
	printf("done\n");
	fflush(stdout);
	while (fgets(line, sizeof(line), stdin))
		;
}

static void checkpoint(const char *name)
{
	char line[64];
	printf("ready %s\n", name);
	fflush(stdout);
	if (!fgets(line, sizeof(line), stdin))
		exit(0);
}

static void die(const char *what)
{
	perror(what);
	exit(1);
}

static char *map(size_t size, int prot, int flags)
{
	char *p = mmap(NULL, size, prot, flags, -1, 0);
	if (p == MAP_FAILED)
		die("mmap");
	return p;
}

static void touch(char *p, size_t size)
{
	for (size_t off = 0; off < size; off += page)
		p[off] = 1;
}

static volatile char sink;

static void read_pages(const char *p, size_t size, size_t step)
{
	for (size_t off = 0; off < size; off += step)
		sink = p[off];
}

static int temp_file(size_t size)
{
	char path[] = "/tmp/beanwatch-shapes-XXXXXX";
	int fd = mkstemp(path);
	if (fd < 0)
		die("mkstemp");
	unlink(path);
	if (ftruncate(fd, size))
		die("ftruncate");
	char buf[65536];
	memset(buf, 7, sizeof(buf));
	for (size_t off = 0; off < size; off += sizeof(buf))
		if (write(fd, buf, sizeof(buf)) < 0)
			die("write");
	return fd;
}

#define RW (PROT_READ | PROT_WRITE)
#define ANON (MAP_PRIVATE | MAP_ANONYMOUS)

static void *thread_main(void *arg)
{
	(void)arg;
	char *p = map(16 * MiB, RW, ANON);
	touch(p, 16 * MiB);
	return NULL;
}

static size_t grow_stack(size_t depth_kib)
{
	volatile char frame[1024];
	frame[0] = (char)depth_kib;
	if (depth_kib <= 1)
		return frame[0];
	return grow_stack(depth_kib - 1) + frame[0];
}

int main(int argc, char **argv)
{
	/* static stdio buffers: the brk scenario moves the break under malloc's feet */
	static char outbuf[4096], inbuf[4096];
	page = sysconf(_SC_PAGESIZE);
	setvbuf(stdout, outbuf, _IOLBF, sizeof(outbuf));
	setvbuf(stdin, inbuf, _IOLBF, sizeof(inbuf));
	if (argc < 2) {
		fprintf(stderr, "usage: shapes SCENARIO\n");
		return 2;
	}
	const char *s = argv[1];
	if (!strcmp(s, "mmap-anon")) {
		char *p = map(64 * MiB, RW, ANON);
		checkpoint("reserved");
		touch(p, 32 * MiB);
		checkpoint("touched");
	} else if (!strcmp(s, "mmap-file")) {
		int fd = temp_file(32 * MiB);
		char *p = mmap(NULL, 32 * MiB, PROT_READ, MAP_SHARED, fd, 0);
		if (p == MAP_FAILED)
			die("mmap file");
		read_pages(p, 32 * MiB, page);
		checkpoint("read");
	} else if (!strcmp(s, "fault-around")) {
		/* one read fault maps up to 16 pages of a cached file */
		int fd = temp_file(64 * MiB);
		char *p = mmap(NULL, 64 * MiB, PROT_READ, MAP_PRIVATE, fd, 0);
		if (p == MAP_FAILED)
			die("mmap file");
		read_pages(p, 64 * MiB, 16 * page);
		checkpoint("read");
	} else if (!strcmp(s, "shared-anon")) {
		char *p = map(32 * MiB, RW, MAP_SHARED | MAP_ANONYMOUS);
		touch(p, 32 * MiB);
		checkpoint("touched");
	} else if (!strcmp(s, "populate")) {
		map(32 * MiB, RW, ANON | MAP_POPULATE);
		checkpoint("populated");
	} else if (!strcmp(s, "fixed-over")) {
		char *p = map(64 * MiB, RW, ANON);
		touch(p, 64 * MiB);
		checkpoint("mapped");
		if (mmap(p + 16 * MiB, 32 * MiB, RW, ANON | MAP_FIXED, -1, 0) == MAP_FAILED)
			die("mmap fixed");
		checkpoint("replaced");
	} else if (!strcmp(s, "munmap")) {
		char *p = map(64 * MiB, RW, ANON);
		touch(p, 64 * MiB);
		checkpoint("mapped");
		munmap(p + 16 * MiB, 16 * MiB);
		checkpoint("partial");
		/* three mappings that cannot merge (different protections), one range over all */
		char *q = map(48 * MiB, RW, ANON);
		touch(q, 48 * MiB);
		mprotect(q + 16 * MiB, 16 * MiB, PROT_READ);
		checkpoint("three");
		munmap(q, 48 * MiB);
		checkpoint("spanning");
		/* a range with nothing mapped in it */
		char *hole = map(16 * MiB, RW, ANON);
		munmap(hole, 16 * MiB);
		munmap(hole, 16 * MiB);
		checkpoint("never-mapped");
	} else if (!strcmp(s, "brk")) {
		char *base = sbrk(0);
		if (sbrk(64 * MiB) == (void *)-1)
			die("sbrk");
		touch(base, 64 * MiB);
		checkpoint("grown");
		if (sbrk(-(long)(32 * MiB)) == (void *)-1)
			die("sbrk shrink");
		checkpoint("shrunk");
		for (int i = 0; i < 4096; i++) {
			char *b = sbrk(page);
			if (b == (void *)-1)
				die("sbrk step");
			b[0] = 1;
		}
		checkpoint("steps");
		/* malloc shares the break with these sbrk calls: leave without freeing */
		finish();
		_exit(0);
	} else if (!strcmp(s, "malloc")) {
		for (int i = 0; i < 20000; i++) {
			char *b = malloc(4000);
			if (!b)
				die("malloc");
			b[0] = 1;
		}
		checkpoint("allocated");
	} else if (!strcmp(s, "mremap")) {
		char *p = map(16 * MiB, RW, ANON);
		touch(p, 16 * MiB);
		checkpoint("mapped");
		p = mremap(p, 16 * MiB, 64 * MiB, MREMAP_MAYMOVE);
		if (p == MAP_FAILED)
			die("mremap grow");
		touch(p, 64 * MiB);
		checkpoint("grown");
		p = mremap(p, 64 * MiB, 8 * MiB, 0);
		if (p == MAP_FAILED)
			die("mremap shrink");
		checkpoint("shrunk");
		char *dst = map(8 * MiB, RW, ANON);
		p = mremap(p, 8 * MiB, 8 * MiB, MREMAP_MAYMOVE | MREMAP_FIXED, dst);
		if (p == MAP_FAILED)
			die("mremap move");
		checkpoint("moved");
	} else if (!strcmp(s, "fork")) {
		char *p = map(64 * MiB, RW, ANON);
		touch(p, 32 * MiB);
		pid_t child = fork();
		if (child == 0) {
			touch(p, 64 * MiB); /* copy-on-write: the child's own pages */
			pause();
			_exit(0);
		}
		usleep(300000);
		checkpoint("forked");
		kill(child, SIGKILL);
		waitpid(child, NULL, 0);
		checkpoint("reaped");
	} else if (!strcmp(s, "vfork-exec")) {
		char *p = map(64 * MiB, RW, ANON);
		touch(p, 64 * MiB);
		pid_t child = vfork();
		if (child == 0) {
			execl("/bin/sleep", "sleep", "1000", (char *)NULL);
			_exit(127);
		}
		checkpoint("execed");
		kill(child, SIGKILL);
		waitpid(child, NULL, 0);
	} else if (!strcmp(s, "exec")) {
		/* the program loader maps the new image: no mmap syscall of ours */
		if (argc < 3) {
			fprintf(stderr, "exec needs a program\n");
			return 2;
		}
		checkpoint("before");
		execv(argv[2], argv + 2);
		die("execv");
	} else if (!strcmp(s, "threads")) {
		pthread_t t[4];
		for (int i = 0; i < 4; i++)
			pthread_create(&t[i], NULL, thread_main, NULL);
		for (int i = 0; i < 4; i++)
			pthread_join(t[i], NULL);
		checkpoint("threads");
	} else if (!strcmp(s, "shm")) {
		int id = shmget(IPC_PRIVATE, 32 * MiB, IPC_CREAT | 0600);
		if (id < 0)
			die("shmget");
		char *p = shmat(id, NULL, 0);
		shmctl(id, IPC_RMID, NULL);
		if (p == (void *)-1)
			die("shmat");
		touch(p, 32 * MiB);
		checkpoint("attached");
		shmdt(p);
		checkpoint("detached");
	} else if (!strcmp(s, "memfd")) {
		int fd = memfd_create("shapes", 0);
		if (fd < 0 || ftruncate(fd, 32 * MiB))
			die("memfd");
		char *p = mmap(NULL, 32 * MiB, RW, MAP_SHARED, fd, 0);
		if (p == MAP_FAILED)
			die("mmap memfd");
		touch(p, 32 * MiB);
		checkpoint("touched");
	} else if (!strcmp(s, "thp")) {
		size_t size = 64 * MiB;
		char *raw = map(size + 2 * MiB, RW, ANON);
		char *p = (char *)(((unsigned long)raw + 2 * MiB - 1) & ~(2 * MiB - 1));
		madvise(p, size, MADV_HUGEPAGE);
		for (size_t off = 0; off < size; off += 2 * MiB)
			p[off] = 1; /* one fault per 2 MiB where THP is granted */
		checkpoint("touched");
	} else if (!strcmp(s, "stack")) {
		/* grows the main stack by ~6 MiB through faults, with no mapping syscall */
		sink = (char)grow_stack(6 * 1024);
		checkpoint("grown");
	} else if (!strcmp(s, "hold")) {
		size_t mib = argc > 2 ? strtoul(argv[2], NULL, 10) : 64;
		char *p = map(mib * MiB, RW, ANON);
		touch(p, mib * MiB);
		checkpoint("holding");
	} else {
		fprintf(stderr, "unknown scenario %s\n", s);
		return 2;
	}
	finish();
	return 0;
}
