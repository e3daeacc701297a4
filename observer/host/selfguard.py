"""beanwatch's own safety on a host under memory pressure: OOM score and locked memory."""

from __future__ import annotations

import ctypes
import ctypes.util
import os

# Like systemd-oomd: far from the OOM killer's first choice, but not immune (-1000), so that
# a leak in beanwatch itself could still not take the whole host down with it.
OOM_SCORE_ADJ = -900

MCL_CURRENT, MCL_FUTURE, MCL_ONFAULT = 1, 2, 4
MADV_DONTNEED = 4
# Libraries only the BPF compiler uses: once the programs are loaded, their pages are dead
# weight in beanwatch's RSS (~90 MiB of LLVM and clang here).
COMPILER_LIBS = ("libLLVM", "libclang", "libclang-cpp")


def _compiler_ranges(smaps_text: str):
    """Read-only mappings of the compiler libraries that hold no private (anonymous) copy.
    RELRO sections are read-only too but were written at relocation: dropping those pages
    would bring back the unrelocated file contents, so any mapping with Anonymous > 0 stays."""
    current = None
    for line in smaps_text.splitlines():
        fields = line.split()
        if fields and "-" in fields[0] and len(fields) >= 5 and ":" not in fields[0]:
            current = None
            if (len(fields) >= 6 and "w" not in fields[1]
                    and any(lib in fields[5] for lib in COMPILER_LIBS)):
                start, end = (int(x, 16) for x in fields[0].split("-"))
                current = (start, end)
        elif current is not None and fields[:1] == ["Anonymous:"]:
            if fields[1] == "0":
                yield current
            current = None


def shed_compiler(smaps_path: str = "/proc/self/smaps") -> int:
    """Drops the compiler's clean read-only file pages from our page tables (they stay in
    the page cache and fault back in if ever used) and returns freed heap to the kernel.
    Returns the bytes of address range advised."""
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    libc.madvise.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
    try:
        with open(smaps_path) as f:
            text = f.read()
    except OSError:
        return 0
    advised = 0
    for start, end in _compiler_ranges(text):
        if libc.madvise(start, end - start, MADV_DONTNEED) == 0:
            advised += end - start
    try:
        libc.malloc_trim(0)
    except AttributeError:  # not glibc
        pass
    return advised


def oom_note(e: OSError) -> str:
    """One line: what failed, what it means, and whether it matters."""
    return (f"oom_score_adj stays at its inherited value, not {OOM_SCORE_ADJ} ({e.strerror}: "
            "lowering it needs CAP_SYS_RESOURCE, or OOMScoreAdjust= in the unit): if the host "
            "runs out of memory, the kernel's OOM killer may pick beanwatch like any other "
            "process; harmless unless the host itself runs short of memory")


def set_oom_score(proc_root: str = "/proc") -> str | None:
    """Writes OOM_SCORE_ADJ; the note to show where it could not."""
    try:
        with open(os.path.join(proc_root, "self", "oom_score_adj"), "w") as f:
            f.write(str(OOM_SCORE_ADJ))
    except OSError as e:
        return oom_note(e)
    return None


def protect_self(proc_root: str = "/proc") -> list[str]:
    """Applies what it can and returns a note for each thing it could not do. Call it
    after the BPF programs are loaded: the compiler's pages are shed first, then what is
    left is locked."""
    notes = []
    shed_compiler(os.path.join(proc_root, "self", "smaps"))
    if note := set_oom_score(proc_root):
        notes.append(note)
    # Lock what beanwatch touches, now and later, so that reclaim cannot page out the code
    # and data it needs to act while the host is short of memory. MCL_ONFAULT locks pages
    # as they are touched instead of populating every mapping (the compiler bcc loads is
    # large and mostly unused after start-up).
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    if libc.mlockall(MCL_CURRENT | MCL_FUTURE | MCL_ONFAULT) != 0:
        err = ctypes.get_errno()
        notes.append(f"could not lock memory (mlockall): {os.strerror(err)}")
    return notes
