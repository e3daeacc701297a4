/* The toucher with a progress log, for reaction times: maps SIZE MiB (THP off) and writes one
 * byte per page as fast as it can; after every STEP KiB it stores CLOCK_MONOTONIC (ns) in a
 * shared log file, so that how far it got, and when, can be read after it is killed. If it
 * gets through everything, it waits to be killed.
 * Log: u64 step_bytes, base_rss_bytes, start_ns, steps_done, then one u64 per step.
 * usage: toucher_ts SIZE_MIB LOGFILE [STEP_KIB] */
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

static uint64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + ts.tv_nsec;
}

static uint64_t rss_bytes(void)
{
	unsigned long size = 0, resident = 0;
	FILE *f = fopen("/proc/self/statm", "r");
	if (f) {
		if (fscanf(f, "%lu %lu", &size, &resident) != 2)
			resident = 0;
		fclose(f);
	}
	return (uint64_t)resident * sysconf(_SC_PAGESIZE);
}

int main(int argc, char **argv)
{
	if (argc < 3) {
		fprintf(stderr, "usage: toucher_ts SIZE_MIB LOGFILE [STEP_KIB]\n");
		return 2;
	}
	size_t size = (size_t)strtoull(argv[1], NULL, 10) << 20;
	size_t step = (argc > 3 ? strtoull(argv[3], NULL, 10) : 256) << 10;
	size_t steps = size / step;
	size_t log_bytes = (4 + steps) * sizeof(uint64_t);
	long page = sysconf(_SC_PAGESIZE);
	int fd = open(argv[2], O_RDWR | O_CREAT | O_TRUNC, 0600);
	if (fd < 0 || ftruncate(fd, log_bytes) < 0) {
		perror(argv[2]);
		return 1;
	}
	volatile uint64_t *log = mmap(NULL, log_bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	char *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (log == MAP_FAILED || p == MAP_FAILED) {
		perror("mmap");
		return 1;
	}
	madvise(p, size, MADV_NOHUGEPAGE);
	for (size_t i = 0; i < log_bytes; i += page)   /* the log's own pages count before we start */
		((volatile char *)log)[i] = 0;
	log[0] = step;
	log[1] = rss_bytes();
	log[2] = now_ns();
	for (size_t i = 0; i < steps; i++) {
		char *s = p + i * step;
		for (size_t off = 0; off < step; off += page)
			s[off] = 1;
		log[4 + i] = now_ns();
		log[3] = i + 1;
	}
	for (;;)
		pause();
}
