/* Address-space churn: N mmap+munmap pairs or brk grow+shrink pairs of SIZE KiB, untouched;
 * prints pairs per second. With RATE (0: full speed), paces itself at RATE pairs/s for N
 * pairs. With RESERVE_MIB, first reserves that much address space (PROT_NONE, nothing
 * resident), as a process with a few thread arenas or a runtime's heap reservation has: the
 * process's total_vm, not only the pairs, decides whether beanwatch lets a shrink wait.
 * usage: vmops mmap|brk N SIZE_KIB [RATE [RESERVE_MIB]] */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
	if (argc < 4) {
		fprintf(stderr, "usage: vmops mmap|brk N SIZE_KIB [RATE [RESERVE_MIB]]\n");
		return 2;
	}
	int use_brk = !strcmp(argv[1], "brk");
	long n = atol(argv[2]);
	size_t size = strtoull(argv[3], NULL, 10) << 10;
	double rate = argc > 4 ? atof(argv[4]) : 0;
	size_t reserve = argc > 5 ? strtoull(argv[5], NULL, 10) << 20 : 0;
	if (reserve && mmap(NULL, reserve, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
			    -1, 0) == MAP_FAILED) {
		perror("mmap");
		return 1;
	}
	unsigned long base = syscall(SYS_brk, 0);
	double t0 = now();
	for (long i = 0; i < n; i++) {
		if (use_brk) {
			syscall(SYS_brk, base + size);
			syscall(SYS_brk, base);
		} else {
			void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
			if (p == MAP_FAILED) {
				perror("mmap");
				return 1;
			}
			munmap(p, size);
		}
		if (rate > 0 && (i & 63) == 63) {
			double ahead = (i + 1) / rate - (now() - t0);
			if (ahead > 0) {
				struct timespec ts = { (time_t)ahead, (long)((ahead - (time_t)ahead) * 1e9) };
				nanosleep(&ts, NULL);
			}
		}
	}
	double dt = now() - t0;
	printf("pairs %ld seconds %.6f rate %.1f\n", n, dt, n / dt);
	return 0;
}
