/* Fills cgroups with idle processes for scale runs: for each cgroup directory given, N
 * children are born in it (clone3 with CLONE_INTO_CGROUP, no migration) and pause. Prints
 * "ready TOTAL" once all exist, then waits; the cgroups are killed to end them.
 * usage: spawner N DIR... */
#define _GNU_SOURCE
#include <fcntl.h>
#include <linux/sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	if (argc < 3) {
		fprintf(stderr, "usage: spawner N DIR...\n");
		return 2;
	}
	int n = atoi(argv[1]);
	long total = 0;
	signal(SIGCHLD, SIG_IGN);   /* children are reaped by the kernel */
	for (int d = 2; d < argc; d++) {
		int fd = open(argv[d], O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		if (fd < 0) {
			perror(argv[d]);
			return 1;
		}
		for (int i = 0; i < n; i++) {
			struct clone_args args;
			memset(&args, 0, sizeof(args));
			args.flags = CLONE_INTO_CGROUP;
			args.exit_signal = SIGCHLD;
			args.cgroup = fd;
			long pid = syscall(SYS_clone3, &args, sizeof(args));
			if (pid < 0) {
				perror("clone3");
				return 1;
			}
			if (pid == 0) {
				for (;;)
					syscall(SYS_pause);
			}
			total++;
		}
		close(fd);
	}
	printf("ready %ld\n", total);
	fflush(stdout);
	for (;;)
		pause();
}
