"""beanwatch: on-demand per-cgroup memory accounting with eBPF."""

__version__ = "0.1.0"
