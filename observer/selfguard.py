"""beanwatch's own safety on a host under memory pressure: OOM score and locked memory."""

from __future__ import annotations

import ctypes
import ctypes.util
import os

# Like systemd-oomd: far from the OOM killer's first choice, but not immune (-1000), so that
# a leak in beanwatch itself could still not take the whole host down with it.
OOM_SCORE_ADJ = -900

MCL_CURRENT, MCL_FUTURE, MCL_ONFAULT = 1, 2, 4


def protect_self(proc_root: str = "/proc") -> list[str]:
    """Applies what it can and returns a note for each thing it could not do."""
    notes = []
    try:
        with open(os.path.join(proc_root, "self", "oom_score_adj"), "w") as f:
            f.write(str(OOM_SCORE_ADJ))
    except OSError as e:
        notes.append(f"could not set oom_score_adj to {OOM_SCORE_ADJ}: {e.strerror}")
    # Lock what beanwatch touches, now and later, so that reclaim cannot page out the code
    # and data it needs to act while the host is short of memory. MCL_ONFAULT locks pages
    # as they are touched instead of populating every mapping (the compiler bcc loads is
    # large and mostly unused after start-up).
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    if libc.mlockall(MCL_CURRENT | MCL_FUTURE | MCL_ONFAULT) != 0:
        err = ctypes.get_errno()
        notes.append(f"could not lock memory (mlockall): {os.strerror(err)}")
    return notes
