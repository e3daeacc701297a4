/* Oscillates a cgroup's mapped total across a limit: keeps BASE MiB mapped (untouched) and,
 * HZ times a second, maps EXTRA MiB, touches TOUCH KiB of it, and unmaps it half a period
 * later; for SECONDS. Prints the cycles done.
 * usage: oscillator BASE_MIB EXTRA_MIB HZ SECONDS [TOUCH_KIB] */
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

static void add_ns(struct timespec *t, long long ns)
{
	ns += t->tv_nsec;
	t->tv_sec += ns / 1000000000ll;
	t->tv_nsec = ns % 1000000000ll;
}

static void *map_anon(size_t size)
{
	void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (p == MAP_FAILED) {
		perror("mmap");
		exit(1);
	}
	madvise(p, size, MADV_NOHUGEPAGE);
	return p;
}

int main(int argc, char **argv)
{
	if (argc < 5) {
		fprintf(stderr, "usage: oscillator BASE_MIB EXTRA_MIB HZ SECONDS [TOUCH_KIB]\n");
		return 2;
	}
	size_t base = strtoull(argv[1], NULL, 10) << 20, extra = strtoull(argv[2], NULL, 10) << 20;
	double hz = atof(argv[3]), seconds = atof(argv[4]);
	size_t touch = (argc > 5 ? strtoull(argv[5], NULL, 10) : 64) << 10;
	long page = sysconf(_SC_PAGESIZE);
	long long half = (long long)(5e8 / hz);
	long cycles = (long)(hz * seconds);
	if (base)
		map_anon(base);
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	for (long i = 0; i < cycles; i++) {
		char *p = map_anon(extra);
		for (size_t off = 0; off < touch && off < extra; off += page)
			p[off] = 1;
		add_ns(&t, half);
		clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &t, NULL);
		munmap(p, extra);
		add_ns(&t, half);
		clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &t, NULL);
	}
	printf("cycles %ld\n", cycles);
	return 0;
}
