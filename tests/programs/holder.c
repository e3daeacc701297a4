/* Maps SIZE MiB of anonymous memory, untouched, prints its address, and waits for stdin to
 * close: its resident pages are made by someone else (process_vm_writev from outside). */
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>

int main(int argc, char **argv)
{
	size_t size = (size_t)atol(argc > 1 ? argv[1] : "1024") << 20;
	char *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED) {
		perror("mmap");
		return 1;
	}
	printf("%lu\n", (unsigned long)p);
	fflush(stdout);
	while (getchar() != EOF)
		;
	return 0;
}
