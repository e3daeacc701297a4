/* Maps and unmaps on command, to move a cgroup's mapped total across a limit: reads lines
 * "map MIB", "touch KIB" (of the last mapping), "unmap" (the last mapping) or "quit" from
 * stdin and answers each with "ok T0 T1", CLOCK_REALTIME in ns just before and after.
 * usage: switcher */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

static long long now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return ts.tv_sec * 1000000000ll + ts.tv_nsec;
}

int main(void)
{
	char line[128], *maps[64];
	size_t sizes[64];
	int n = 0;
	long page = sysconf(_SC_PAGESIZE);
	setvbuf(stdout, NULL, _IOLBF, 0);
	while (fgets(line, sizeof(line), stdin)) {
		size_t arg = strtoull(line + strcspn(line, " ") , NULL, 10);
		long long t0 = now_ns(), t1;
		if (!strncmp(line, "map ", 4) && n < 64) {
			sizes[n] = arg << 20;
			maps[n] = mmap(NULL, sizes[n], PROT_READ | PROT_WRITE,
				       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
			t1 = now_ns();
			if (maps[n] == MAP_FAILED) {
				perror("mmap");
				return 1;
			}
			madvise(maps[n], sizes[n], MADV_NOHUGEPAGE);
			n++;
		} else if (!strncmp(line, "touch ", 6) && n > 0) {
			for (size_t off = 0; off < (arg << 10) && off < sizes[n - 1]; off += page)
				maps[n - 1][off] = 1;
			t1 = now_ns();
		} else if (!strncmp(line, "unmap", 5) && n > 0) {
			n--;
			munmap(maps[n], sizes[n]);
			t1 = now_ns();
		} else if (!strncmp(line, "quit", 4)) {
			return 0;
		} else {
			printf("error %s", line);
			continue;
		}
		printf("ok %lld %lld\n", t0, t1);
	}
	return 0;
}
