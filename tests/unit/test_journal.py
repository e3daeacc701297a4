"""Journal records: the native protocol, received by a real datagram socket."""

from __future__ import annotations

import json
import socket
import struct
import threading
import time

from observer.output.journal import MAX_DATAGRAM, JournalSink, encode, fit


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


# --- never blocking, never too big ------------------------------------------------------------

def bound(tmp_path, rcvbuf=None):
    path = str(tmp_path / "journal.sock")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    if rcvbuf is not None:
        server.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    server.bind(path)
    return path, server


def action(i=0, pids=(5, 6)):
    return {"event": "action", "ts": float(i), "cgroup": "/job", "action": "kill",
            "pids": list(pids), "ok": True, "detail": f"record {i}",
            "rss_by_pid": {str(p): 4096 for p in pids}}


def test_a_journal_that_reads_nothing_never_blocks_the_sender(tmp_path):
    """No reader: the socket's queue fills (net.unix.max_dgram_qlen datagrams), then each
    send would block. It must not: records wait in a bounded queue, the rest are dropped
    and counted, and what waited is sent once journald reads again."""
    path, server = bound(tmp_path)
    sink = JournalSink(path, queue_limit=50)
    n = 3000
    done = threading.Event()

    def send_all():
        for i in range(n):
            sink(action(i))
        done.set()
    t = threading.Thread(target=send_all, daemon=True)
    start = time.monotonic()
    t.start()
    assert done.wait(10), "the journal sink blocked"
    assert time.monotonic() - start < 5
    assert len(sink.queue) == 50
    assert sink.dropped == n - sink.sent - 50 > 0
    # journald catches up: the queue drains on the next flush, oldest first among the kept
    server.setblocking(False)
    got = []
    while True:
        try:
            got.append(decode(server.recv(1 << 20)))
        except BlockingIOError:
            if not sink.queue:
                break
            sink.flush()
    assert len(got) == sink.sent == n - sink.dropped
    kept = [g["BEANWATCH_DETAIL"] for g in got[-50:]]
    assert kept == [f"record {i}" for i in range(n - 50, n)]
    server.close()


def test_a_kill_record_larger_than_a_datagram_arrives_with_its_pid_list_cut(tmp_path):
    path, server = bound(tmp_path)
    server.settimeout(2)
    sink = JournalSink(path)
    pids = list(range(100_000, 200_000))      # ~700 KB of pids: no datagram takes that
    sink(action(pids=pids))
    got = decode(server.recv(1 << 20))
    assert sink.dropped == 0 and sink.sent == 1 and sink.truncated == 1
    assert got["BEANWATCH_EVENT"] == "action" and got["BEANWATCH_ACTION"] == "kill"
    assert got["BEANWATCH_PIDS_TOTAL"] == "100000"
    kept = json.loads(got["BEANWATCH_PIDS"])
    assert 1000 < len(kept) < 100_000 and kept == pids[:len(kept)]
    assert int(got["BEANWATCH_PIDS_TRUNCATED"]) == 100_000 - len(kept)
    assert set(json.loads(got["BEANWATCH_RSS_BY_PID"])) == {str(p) for p in kept}
    assert sum(len(k) + len(v) + 2 for k, v in got.items()) <= MAX_DATAGRAM
    server.close()


def test_a_small_record_is_not_cut():
    data = fit(action(pids=range(10)))
    got = decode(data)
    assert "BEANWATCH_PIDS_TOTAL" not in got and json.loads(got["BEANWATCH_PIDS"]) == list(range(10))


def test_no_journald_is_said_at_start_and_counted(tmp_path):
    sink = JournalSink(str(tmp_path / "nothing-here"))
    assert "no systemd journal at" in sink.problem()
    for i in range(3):
        sink(action(i))
    assert sink.dropped == 3 and not sink.queue
    path, server = bound(tmp_path)
    assert JournalSink(path).problem() is None
    server.close()
