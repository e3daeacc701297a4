"""Structured records to the systemd journal, over its native datagram protocol."""

from __future__ import annotations

import collections
import json
import socket
import struct

from .render import describe

JOURNAL_SOCKET = "/run/systemd/journal/socket"

# syslog priorities: what an operator filters on (journalctl -p warning)
PRIORITY = {"exceeded": 4, "action": 4, "lost": 4, "error": 3, "barrier": 5, "reload": 5,
            "thaw": 5, "hook": 5, "mode": 6, "check": 6, "oom_kill": 4, "barrier_action": 5}


def encode(fields: dict[str, str]) -> bytes:
    """KEY=value lines; a value holding a newline (a cgroup name may) goes length-prefixed."""
    out = bytearray()
    for key, value in fields.items():
        data = value.encode("utf-8", "backslashreplace")
        if b"\n" in data:
            out += key.encode() + b"\n" + struct.pack("<Q", len(data)) + data + b"\n"
        else:
            out += key.encode() + b"=" + data + b"\n"
    return bytes(out)


def fields_of(record: dict) -> dict[str, str]:
    try:
        message = describe(record)
    except (KeyError, TypeError, ValueError):  # a record of a shape describe() does not know
        cgroup = record.get("cgroup")
        message = (f"{cgroup}: " if cgroup is not None else "") + str(record.get("event"))
    fields = {"MESSAGE": message,
              "PRIORITY": str(PRIORITY.get(record["event"], 6)),
              "SYSLOG_IDENTIFIER": "beanwatch"}
    for key, value in record.items():
        name = "BEANWATCH_" + "".join(c if c.isalnum() else "_" for c in key.upper())
        fields[name] = value if isinstance(value, str) else json.dumps(value)
    return fields


# One datagram per record: journald reads datagrams of any size its socket takes, but the
# sender's buffer bounds one (net.core.wmem_default, 208 KiB here); stay well under it.
MAX_DATAGRAM = 48 * 1024
QUEUE_LIMIT = 256      # records kept while journald is slow; the oldest go first
LIST_FIELDS = ("pids", "rss_by_pid", "pss_by_pid", "peak")   # per-pid fields, cut together


def fit(record: dict, limit: int = MAX_DATAGRAM) -> bytes:
    """The record as one datagram of at most `limit` bytes: a pid list too long is cut
    (pids_total says how many there were, pids_truncated how many were left out), then any
    text field still too long."""
    data = encode(fields_of(record))
    pids = record.get("pids")
    if len(data) <= limit:
        return data
    rec = dict(record)
    if isinstance(pids, list) and pids:
        keep_lo, keep_hi = 0, len(pids)
        while keep_lo < keep_hi:               # the most pids that fit, by bisection
            mid = (keep_lo + keep_hi + 1) // 2
            if len(encode(fields_of(_cut(record, mid)))) <= limit:
                keep_lo = mid
            else:
                keep_hi = mid - 1
        rec = _cut(record, keep_lo)
        data = encode(fields_of(rec))
    if len(data) > limit:                      # a text field itself is the problem
        rec = {k: (v[:1024] + "...") if isinstance(v, str) and len(v) > 1024 else v
               for k, v in rec.items()}
        rec = {k: v for k, v in rec.items() if not isinstance(v, (list, dict))}
        data = encode(fields_of(rec))[:limit]
    return data


def _cut(record: dict, keep: int) -> dict:
    pids = record["pids"]
    kept = pids[:keep]
    rec = dict(record, pids=kept, pids_total=len(pids), pids_truncated=len(pids) - keep)
    wanted = {str(p) for p in kept}
    for key in LIST_FIELDS[1:]:
        if isinstance(record.get(key), dict):
            rec[key] = {p: v for p, v in record[key].items() if str(p) in wanted}
    return rec


class JournalSink:
    """Sends every record but snapshots (one per cgroup per interval would flood it).

    Never blocks enforcement: the socket is non-blocking; a record journald cannot take now
    (EAGAIN) waits in a bounded queue, sent by the next record or flush() (the loop calls
    it); past QUEUE_LIMIT the oldest is dropped. A journal that is absent drops the record.
    Every drop is counted (`dropped`, in the metrics and the closing message)."""

    def __init__(self, path: str = JOURNAL_SOCKET, queue_limit: int = QUEUE_LIMIT,
                 max_datagram: int = MAX_DATAGRAM):
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX,
                                  socket.SOCK_DGRAM | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC)
        self.queue: collections.deque[bytes] = collections.deque()
        self.queue_limit = queue_limit
        self.max_datagram = max_datagram
        self.dropped = 0
        self.sent = 0
        self.truncated = 0   # records whose pid list was cut to fit one datagram

    def problem(self) -> str | None:
        """Why records cannot reach the journal now (no journald listening), else None."""
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        try:
            probe.connect(self.path)
        except OSError as e:
            return f"no systemd journal at {self.path} ({e.strerror or e})"
        finally:
            probe.close()
        return None

    def __call__(self, record: dict) -> None:
        if record.get("event") == "snapshot":
            return
        try:
            data = fit(record, self.max_datagram)
        except Exception:  # noqa: BLE001 - a record that cannot be encoded is a drop
            self.dropped += 1
            return
        if b"\nBEANWATCH_PIDS_TRUNCATED=" in data:
            self.truncated += 1
        if len(self.queue) >= self.queue_limit:
            self.queue.popleft()
            self.dropped += 1
        self.queue.append(data)
        self.flush()

    def flush(self) -> None:
        """Sends what is queued, until journald would make us wait."""
        while self.queue:
            try:
                self.sock.sendto(self.queue[0], self.path)
            except BlockingIOError:
                return                  # journald is behind: the record waits its turn
            except OSError:
                self.dropped += 1       # ENOENT, ECONNREFUSED (no journald), EMSGSIZE
            else:
                self.sent += 1
            self.queue.popleft()

    def close(self) -> None:
        self.sock.close()
