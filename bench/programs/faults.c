/* Page-fault throughput: maps CHUNK MiB of private anonymous memory (THP off), writes one
 * byte per page, and repeats up to TOTAL MiB (0: no limit) or SECONDS (0: no limit); prints
 * the faults per second spent touching, leaving out the first chunk (a warm-up: freshly freed
 * pages are faster to fault in again than pages the hypervisor took back). Each chunk is unmapped and mapped again, or, with
 * "dontneed", mapped once and emptied with MADV_DONTNEED (its mapped total never changes).
 * usage: faults TOTAL_MIB CHUNK_MIB [SECONDS] [dontneed] */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static char *map_chunk(size_t chunk)
{
	char *p = mmap(NULL, chunk, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED) {
		perror("mmap");
		exit(1);
	}
	madvise(p, chunk, MADV_NOHUGEPAGE);
	return p;
}

int main(int argc, char **argv)
{
	if (argc < 3) {
		fprintf(stderr, "usage: faults TOTAL_MIB CHUNK_MIB [SECONDS] [dontneed]\n");
		return 2;
	}
	size_t total = strtoull(argv[1], NULL, 10) << 20, chunk = strtoull(argv[2], NULL, 10) << 20;
	double seconds = argc > 3 ? atof(argv[3]) : 0;
	int dontneed = argc > 4 && !strcmp(argv[4], "dontneed");
	long page = sysconf(_SC_PAGESIZE);
	double touching = 0, start = now();
	size_t faults = 0;
	char *p = dontneed ? map_chunk(chunk) : NULL;
	for (size_t done = 0; !total || done < total + chunk; done += chunk) {
		if (seconds > 0 && now() - start >= seconds)
			break;
		if (!dontneed)
			p = map_chunk(chunk);
		double t0 = now();
		for (size_t off = 0; off < chunk; off += page)
			p[off] = 1;
		if (done) {
			touching += now() - t0;
			faults += chunk / page;
		}
		if (dontneed)
			madvise(p, chunk, MADV_DONTNEED);
		else
			munmap(p, chunk);
	}
	printf("faults %zu seconds %.6f rate %.1f\n", faults, touching, faults / touching);
	return 0;
}
