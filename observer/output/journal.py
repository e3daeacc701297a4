"""Structured records to the systemd journal, over its native datagram protocol."""

from __future__ import annotations

import json
import socket
import struct

from .render import describe

JOURNAL_SOCKET = "/run/systemd/journal/socket"

# syslog priorities: what an operator filters on (journalctl -p warning)
PRIORITY = {"exceeded": 4, "action": 4, "lost": 4, "error": 3, "barrier": 5, "reload": 5,
            "thaw": 5, "hook": 5, "mode": 6, "check": 6}


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
        message = f"{record.get('cgroup')}: {record.get('event')}"
    fields = {"MESSAGE": message,
              "PRIORITY": str(PRIORITY.get(record["event"], 6)),
              "SYSLOG_IDENTIFIER": "beanwatch"}
    for key, value in record.items():
        name = "BEANWATCH_" + "".join(c if c.isalnum() else "_" for c in key.upper())
        fields[name] = value if isinstance(value, str) else json.dumps(value)
    return fields


class JournalSink:
    """Sends every record but snapshots (one per cgroup per interval would flood it).
    A journal that is absent or full never stops the session: the record is dropped and
    counted."""

    def __init__(self, path: str = JOURNAL_SOCKET):
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.dropped = 0

    def __call__(self, record: dict) -> None:
        if record.get("event") == "snapshot":
            return
        try:
            self.sock.sendto(encode(fields_of(record)), self.path)
        except OSError:
            self.dropped += 1

    def close(self) -> None:
        self.sock.close()
