"""Netlink through pyroute2 (the only pyroute2 importer): taskstats peak memory per process."""

from __future__ import annotations


class PeakReader:
    """Peak resident and virtual size of live processes, from taskstats.

    It tells how far a process got, where /proc only tells where it is now. The socket is
    opened once (importing pyroute2 alone takes ~0.2 s) and each query costs ~0.3 ms.
    """

    def __init__(self):
        self._ts = None
        try:
            from pyroute2 import TaskStats
            ts = TaskStats()
            ts.bind()
            self._ts = ts
        except Exception:  # no taskstats (CONFIG_TASKSTATS off) or no pyroute2: go without
            self._ts = None

    def __call__(self, pid: int) -> dict | None:
        if self._ts is None:
            return None
        try:
            reply = self._ts.get_pid_stat(pid)
            stats = reply[0].get_attr("TASKSTATS_TYPE_AGGR_PID").get_attr("TASKSTATS_TYPE_STATS")
        except Exception:  # ESRCH for a process that is gone, malformed replies: no data
            return None
        # taskstats reports these in KiB
        return {"hiwater_rss_bytes": stats["hiwater_rss"] * 1024,
                "hiwater_vm_bytes": stats["hiwater_vm"] * 1024}

    def close(self) -> None:
        if self._ts is not None:
            self._ts.close()
            self._ts = None
