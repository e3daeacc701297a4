"""Host boundaries: /proc, cgroupfs, netlink, actions on cgroups, hooks, self-protection, state, the config file."""
