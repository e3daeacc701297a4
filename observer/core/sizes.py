"""Parsing and formatting memory sizes (bytes, or K/M/G/T/P/E in powers of 1024)."""

from __future__ import annotations

import os
import re

from .errors import BeanwatchError

_UNITS = {"": 0, "K": 1, "M": 2, "G": 3, "T": 4, "P": 5, "E": 6}
_SIZE = re.compile(r"(\d+)(?:\.(\d+))?(?:([KMGTPE])(?:I?B)?|B)?", re.IGNORECASE | re.ASCII)
MAX_SIZE = 2**63 - 1  # sizes travel through signed 64-bit BPF map fields


# The kernel counts memory in pages (statm, the probes' counters and bounds); everything
# above it speaks bytes. These are the one conversion between the two.
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


def to_pages(n_bytes: int) -> int:
    """Whole pages in n_bytes (rounded down)."""
    return n_bytes // PAGE_SIZE


def to_bytes(n_pages: int) -> int:
    return n_pages * PAGE_SIZE


class SizeError(BeanwatchError):
    """A size the operator wrote cannot be read."""


def parse_size(text: str) -> int:
    """'512M' -> 536870912. Decimals are allowed with a unit ('1.5G'); results are bytes."""
    if not isinstance(text, str):
        raise SizeError(f"size must be text, not {type(text).__name__}")
    s = text.strip()
    m = _SIZE.fullmatch(s)
    if not s or m is None:
        raise SizeError(f"bad size {text!r}: expected a number of bytes or a number with K, M, G, T, P or E")
    whole, frac, unit = m.group(1), m.group(2) or "", (m.group(3) or "").upper()
    if frac and not unit:
        raise SizeError(f"bad size {text!r}: a fraction of a byte")
    if len(whole) + len(frac) > 40:
        raise SizeError(f"bad size {text!r}: too large")
    scale = 1024 ** _UNITS[unit]
    value = (int(whole + frac) * scale) // (10 ** len(frac))
    if value > MAX_SIZE:
        raise SizeError(f"bad size {text!r}: above {MAX_SIZE} bytes")
    return value


def format_size(n: int | None, exact: bool = False) -> str:
    """536870912 -> '512M'. Readable by default: a whole number of the largest unit below
    10000 where one fits, else one decimal ('1.0G'). exact=True never rounds, so that
    parse_size(format_size(n, exact=True)) == n."""
    if n is None:
        return "-"
    if n < 0:
        return "-" + format_size(-n, exact)
    for unit in "EPTGMK":
        scale = 1024 ** _UNITS[unit]
        if n >= scale and n % scale == 0 and (exact or n // scale < 10000):
            return f"{n // scale}{unit}"
    if exact:
        return str(n)
    for unit in "EPTGMK":
        scale = 1024 ** _UNITS[unit]
        if n >= scale:
            return f"{n / scale:.1f}{unit}"
    return str(n)
