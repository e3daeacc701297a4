/* Touches memory as fast as it can: maps SIZE bytes (private anonymous, THP off for the
 * mapping) and writes one byte per page, then optionally holds. Used to measure how far
 * past a limit a process gets before beanwatch kills it, and fault throughput.
 * usage: toucher SIZE_MIB [thp] [hold]   (thp: ask for transparent huge pages instead) */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	if (argc < 2) {
		fprintf(stderr, "usage: toucher SIZE_MIB [thp] [hold]\n");
		return 2;
	}
	size_t size = (size_t)strtoull(argv[1], NULL, 10) << 20;
	long page = sysconf(_SC_PAGESIZE);
	char *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED) {
		perror("mmap");
		return 1;
	}
	int thp = 0, hold = 0;
	for (int i = 2; i < argc; i++) {
		thp |= !strcmp(argv[i], "thp");
		hold |= !strcmp(argv[i], "hold");
	}
	madvise(p, size, thp ? MADV_HUGEPAGE : MADV_NOHUGEPAGE);
	for (size_t off = 0; off < size; off += page)
		p[off] = 1;
	if (hold)
		pause();
	return 0;
}
