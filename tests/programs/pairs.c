/* Lazy shrinking (probes/accounting.c, vm_shrink_waits), step by step: reserves SIZE MiB
 * (PROT_NONE, nothing resident), then on each line read from stdin takes the next step and
 * prints "ready STEP" (then "done" and exits):
 *   reserved  the reservation is made
 *   pairs     N mmap+munmap pairs of 64, 128 and 256 KiB, then N brk pairs of 256 KiB
 *   small     the last 512 KiB of the reservation unmapped (a shrink within the slack)
 *   big       the first half of the reservation unmapped (far past the slack)
 * End of input ends it at any step. No stdio: its buffers would grow the heap between steps.
 * usage: pairs SIZE_MIB N */
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

static void say(const char *s)
{
	if (write(1, s, strlen(s)) < 0)
		exit(1);
}

static void step(const char *name)
{
	char c;
	say("ready ");
	say(name);
	say("\n");
	while (read(0, &c, 1) == 1)
		if (c == '\n')
			return;
	exit(0);
}

int main(int argc, char **argv)
{
	if (argc < 3) {
		say("usage: pairs SIZE_MIB N\n");
		return 2;
	}
	size_t size = (size_t)atol(argv[1]) << 20;
	long n = atol(argv[2]);
	char *r = mmap(NULL, size, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (r == MAP_FAILED)
		return 1;
	step("reserved");
	for (long i = 0; i < n; i++) {
		size_t s = (64 << 10) << (i % 3);
		void *p = mmap(NULL, s, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		if (p == MAP_FAILED)
			return 1;
		munmap(p, s);
	}
	unsigned long base = syscall(SYS_brk, 0);
	for (long i = 0; i < n; i++) {
		syscall(SYS_brk, base + (256 << 10));
		syscall(SYS_brk, base);
	}
	step("pairs");
	munmap(r + size - (512 << 10), 512 << 10);
	step("small");
	munmap(r, size / 2);
	step("big");
	say("done\n");
	return 0;
}
