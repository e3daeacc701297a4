"""Journal records: the native protocol, received by a real datagram socket."""

from __future__ import annotations

import socket
import struct

from observer.output.journal import JournalSink, encode


def decode(data: bytes) -> dict[str, str]:
    out, i = {}, 0
    while i < len(data):
        nl = data.index(b"\n", i)
        line = data[i:nl]
        if b"=" in line:
            k, v = line.split(b"=", 1)
            out[k.decode()] = v.decode()
            i = nl + 1
        else:
            (n,) = struct.unpack_from("<Q", data, nl + 1)
            out[line.decode()] = data[nl + 9:nl + 9 + n].decode()
            i = nl + 9 + n + 1
    return out


def test_encode_plain_and_length_prefixed():
    data = encode({"A": "x=1", "B": "two\nlines"})
    assert data == b"A=x=1\nB\n" + struct.pack("<Q", 9) + b"two\nlines\n"
    assert decode(data) == {"A": "x=1", "B": "two\nlines"}


def test_records_reach_a_journal_socket(tmp_path):
    path = str(tmp_path / "journal.sock")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    server.bind(path)
    server.settimeout(2)
    sink = JournalSink(path)
    sink({"event": "snapshot", "ts": 1.0, "cgroup": "/a"})
    sink({"event": "action", "ts": 2.0, "cgroup": "/job\nx", "action": "kill", "pids": [5, 6],
          "ok": True, "held_bytes": 300, "detail": "cgroup.kill written"})
    got = decode(server.recv(65536))
    assert got["PRIORITY"] == "4" and got["SYSLOG_IDENTIFIER"] == "beanwatch"
    assert got["BEANWATCH_EVENT"] == "action" and got["BEANWATCH_PIDS"] == "[5, 6]"
    assert got["BEANWATCH_CGROUP"] == "/job\nx"
    assert "kill" in got["MESSAGE"] and "\n" not in got["MESSAGE"]
    server.settimeout(0.2)
    try:
        server.recv(65536)
        raise AssertionError("the snapshot went to the journal")
    except socket.timeout:
        pass
    sink.close()
    server.close()


def test_a_missing_journal_is_counted_not_fatal(tmp_path):
    sink = JournalSink(str(tmp_path / "nothing-here"))
    sink({"event": "action", "ts": 1.0, "cgroup": "/a"})
    assert sink.dropped == 1
