"""The one exception type beanwatch raises for problems it can name."""


class BeanwatchError(Exception):
    """A problem with input, host or kernel, described in one line for the operator."""


class Unreadable(BeanwatchError):
    """A file of a process that beanwatch may not read (EACCES, EPERM): /proc/PID/smaps_rollup
    of a process whose capabilities beanwatch's do not cover, without CAP_SYS_PTRACE, or
    one an LSM guards. One process's file: never a reason to stop enforcing for others."""
