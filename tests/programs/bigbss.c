/* A program whose image is large: 192 MiB of .bss mapped by the kernel's program loader
 * at exec, of which 64 MiB is touched. Prints "ready bss" and waits for stdin to close. */
#include <stdio.h>
#include <unistd.h>

volatile char bss[192 << 20];

int main(void)
{
	long page = sysconf(_SC_PAGESIZE);
	for (long off = 0; off < (64 << 20); off += page)
		bss[off] = 1;
	printf("ready bss\n");
	fflush(stdout);
	char line[64];
	while (fgets(line, sizeof(line), stdin))
		;
	return 0;
}
