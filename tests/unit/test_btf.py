"""The BTF parser on synthetic blobs of every kind, and on each supported kernel's real BTF.

The real blobs in tests/data/btf are the .BTF sections of Debian's kernel packages (5.10,
6.1, 6.12; extracted from the vmlinuz of linux-image-*-amd64-unsigned) and of this
development host's 6.18, xz-compressed.
"""

from __future__ import annotations

import lzma
import os
import struct

import pytest

from observer.kernel.btf import (BTF, KIND_ARRAY, KIND_CONST, KIND_DATASEC, KIND_DECL_TAG, KIND_ENUM,
                          KIND_ENUM64, KIND_FLOAT, KIND_FUNC, KIND_FUNC_PROTO, KIND_FWD, KIND_INT,
                          KIND_PTR, KIND_RESTRICT, KIND_STRUCT, KIND_TYPE_TAG, KIND_TYPEDEF,
                          KIND_UNION, KIND_VAR, KIND_VOLATILE, BTFError)
from observer.kernel.loader import ProbeError, _rss_counters, kernel_offsets

DATA = os.path.join(os.path.dirname(__file__), "..", "data", "btf")


class Builder:
    """Writes a BTF blob type by type; add() returns the new type's id."""

    def __init__(self):
        self.types = b""
        self.strings = b"\0"
        self.count = 0

    def s(self, name: str) -> int:
        if not name:
            return 0
        off = len(self.strings)
        self.strings += name.encode() + b"\0"
        return off

    def add(self, kind, name="", size_type=0, vlen=0, kflag=0, trailer=b"") -> int:
        info = (kflag << 31) | (kind << 24) | vlen
        self.types += struct.pack("<III", self.s(name), info, size_type) + trailer
        self.count += 1
        return self.count

    def int_(self, name, size):
        return self.add(KIND_INT, name, size, trailer=struct.pack("<I", size * 8))

    def array(self, elem, n, index=1):
        return self.add(KIND_ARRAY, "", 0, trailer=struct.pack("<III", elem, index, n))

    def struct(self, name, size, members, kind=KIND_STRUCT, kflag=0):
        """members: (name, type id, bit offset[, bitfield size])"""
        body = b""
        for m in members:
            moff = m[2] | ((m[3] << 24) if kflag and len(m) > 3 else 0)
            body += struct.pack("<III", self.s(m[0]), m[1], moff)
        return self.add(kind, name, size, vlen=len(members), kflag=kflag, trailer=body)

    def blob(self) -> bytes:
        hdr = struct.pack("<HBBIIIII", 0xEB9F, 1, 0, 24, 0, len(self.types), len(self.types),
                          len(self.strings))
        return hdr + self.types + self.strings


def every_kind(b: Builder) -> None:
    """One type of every kind whose trailer the parser must skip correctly."""
    i32 = b.int_("int", 4)
    b.add(KIND_PTR, "", i32)
    b.array(i32, 3)
    b.add(KIND_ENUM, "e", 4, vlen=2, trailer=struct.pack("<IiIi", b.s("A"), 0, b.s("B"), 1))
    b.add(KIND_FWD, "fwd", 0)
    b.add(KIND_RESTRICT, "", i32)
    proto = b.add(KIND_FUNC_PROTO, "", i32, vlen=2,
                  trailer=struct.pack("<IIII", b.s("x"), i32, b.s("y"), i32))
    b.add(KIND_FUNC, "f", proto)
    var = b.add(KIND_VAR, "v", i32, trailer=struct.pack("<I", 1))
    b.add(KIND_DATASEC, ".data", 4, vlen=1, trailer=struct.pack("<III", var, 0, 4))
    b.add(KIND_FLOAT, "double", 8)
    b.add(KIND_DECL_TAG, "tag", var, trailer=struct.pack("<i", -1))
    b.add(KIND_TYPE_TAG, "user", i32)
    b.add(KIND_ENUM64, "e64", 8, vlen=1, trailer=struct.pack("<III", b.s("BIG"), 1, 2))


def test_every_kind_is_skipped_and_a_later_struct_is_read():
    b = Builder()
    every_kind(b)
    long_ = b.int_("long", 8)
    b.struct("task_struct", 16, [("pid", long_, 0), ("tgid", long_, 64)])
    btf = BTF(b.blob())
    assert btf.offset("task_struct", "tgid") == 8
    assert btf.member("task_struct", "pid").size == 8


def test_modifiers_around_an_array_and_typedef_chains():
    b = Builder()
    long_ = b.int_("long", 8)
    arr = b.array(long_, 4)
    wrapped = b.add(KIND_CONST, "", b.add(KIND_VOLATILE, "", b.add(KIND_TYPEDEF, "arr_t", arr)))
    chain = b.add(KIND_TYPEDEF, "t3", b.add(KIND_TYPEDEF, "t2", b.add(KIND_TYPEDEF, "t1", long_)))
    sid = b.struct("s", 48, [("counts", wrapped, 0), ("x", chain, 256)])
    b.add(KIND_TYPEDEF, "s_t", sid)
    btf = BTF(b.blob())
    m = btf.member("s", "counts")
    assert btf.is_array(m.type_id)
    assert btf.array_info(m.type_id) == (long_, 4)
    assert m.size == 32
    assert btf.member("s", "x").offset == 32 and btf.member("s", "x").size == 8
    assert not btf.is_array(btf.member("s", "x").type_id)
    with pytest.raises(BTFError, match="not an array"):
        btf.array_info(btf.member("s", "x").type_id)


def test_anonymous_members_sum_their_offsets():
    b = Builder()
    i32 = b.int_("int", 4)
    inner = b.struct("", 8, [("a", i32, 0), ("total_vm", i32, 32)])
    union = b.struct("", 8, [("", inner, 0), ("other", i32, 0)], kind=KIND_UNION)
    b.struct("mm_struct", 24, [("first", i32, 0), ("", union, 64)])
    btf = BTF(b.blob())
    assert btf.offset("mm_struct", "total_vm") == 8 + 4
    assert btf.offset("mm_struct", "other") == 8


def test_bitfields_with_kind_flag():
    b = Builder()
    u32 = b.int_("unsigned int", 4)
    u64 = b.int_("u64", 8)
    # kflag set: the member offset word is bitfield_size << 24 | bit_offset
    b.struct("flags", 16, [("a", u32, 0, 3), ("b", u32, 3, 5), ("after", u64, 64, 0)], kflag=1)
    btf = BTF(b.blob())
    assert btf.offset("flags", "after") == 8
    assert btf.offset("flags", "b") == 0


def test_both_rss_stat_layouts():
    # before 6.2: struct mm_rss_stat { atomic_long_t count[4]; } rss_stat;
    b = Builder()
    long_ = b.int_("long", 8)
    atomic = b.add(KIND_TYPEDEF, "atomic_long_t", b.struct("", 8, [("counter", long_, 0)]))
    stat = b.struct("mm_rss_stat", 32, [("count", b.array(atomic, 4), 0)])
    b.struct("mm_struct", 64, [("total_vm", long_, 0), ("rss_stat", stat, 128)])
    assert _rss_counters(BTF(b.blob()))[0] == 16
    # 6.2 and later: struct percpu_counter rss_stat[4];
    b = Builder()
    long_ = b.int_("long", 8)
    pc = b.struct("percpu_counter", 40, [("lock", long_, 0), ("count", long_, 64)])
    b.struct("mm_struct", 200, [("total_vm", long_, 0), ("rss_stat", b.array(pc, 4), 64)])
    base, elem = _rss_counters(BTF(b.blob()))
    assert base == 8 and elem == pc
    # too few counters is refused by name
    b = Builder()
    long_ = b.int_("long", 8)
    b.struct("mm_struct", 64, [("rss_stat", b.array(long_, 2), 0)])
    with pytest.raises(ProbeError, match="2 counters"):
        _rss_counters(BTF(b.blob()))


@pytest.mark.parametrize("blob,message", [
    (b"\x9f\xeb", "too short"),
    (b"\0" * 24, "bad magic"),
    (struct.pack("<HBBIIIII", 0xEB9F, 1, 0, 24, 0, 1000, 0, 1), "past the end"),
])
def test_malformed_blobs_are_one_error(blob, message):
    with pytest.raises(BTFError, match=message):
        BTF(blob)


def test_missing_struct_member_and_modifier_loops():
    b = Builder()
    i32 = b.int_("int", 4)
    b.struct("s", 4, [("a", i32, 0)])
    loop = b.add(KIND_TYPEDEF, "loop", 0)
    b.types = b.types[:-4] + struct.pack("<I", loop)  # a typedef of itself
    btf = BTF(b.blob())
    with pytest.raises(BTFError, match="no struct nosuch"):
        btf.offset("nosuch", "a")
    with pytest.raises(BTFError, match="has no member b"):
        btf.offset("s", "b")
    with pytest.raises(BTFError, match="too long"):
        btf.sizeof(loop)


def test_missing_file_is_one_error(tmp_path):
    with pytest.raises(BTFError, match="cannot read kernel BTF"):
        BTF.from_file(str(tmp_path / "nope"))


# Offsets the probes read, per kernel: pinned so that a parser change that moves any of them
# is seen. Layouts differ between kernels; the rss counters changed type in 6.2.
REAL = {
    "5.10": {"OFF_MM_RSS_STAT": 712, "SIZE_RSS_COUNTER": 8, "OFF_RSS_COUNT": 0,
             "OFF_MM_TOTAL_VM": 192, "OFF_TASK_MM": 2056, "OFF_KERNFS_NODE_ID": 104},
    "6.1": {"OFF_MM_RSS_STAT": 720, "SIZE_RSS_COUNTER": 8, "OFF_RSS_COUNT": 0,
            "OFF_MM_TOTAL_VM": 184, "OFF_TASK_MM": 2272, "OFF_KERNFS_NODE_ID": 104},
    "6.12": {"OFF_MM_RSS_STAT": 824, "SIZE_RSS_COUNTER": 40, "OFF_RSS_COUNT": 8,
             "OFF_MM_TOTAL_VM": 256, "OFF_TASK_MM": 2304, "OFF_KERNFS_NODE_ID": 96},
    "6.18": {"OFF_MM_RSS_STAT": 968, "SIZE_RSS_COUNTER": 40, "OFF_RSS_COUNT": 8,
             "OFF_MM_TOTAL_VM": 368, "OFF_TASK_MM": 1136, "OFF_KERNFS_NODE_ID": 96},
}


@pytest.mark.parametrize("kernel", sorted(REAL))
def test_real_kernel_btf(kernel):
    with lzma.open(os.path.join(DATA, f"vmlinux-{kernel}.btf.xz")) as f:
        btf = BTF(f.read())
    offs = kernel_offsets(btf)
    for key, value in REAL[kernel].items():
        assert offs[key] == value, key
    # every offset is inside its struct
    assert offs["OFF_TASK_MM"] < btf.sizeof(btf.struct_id("task_struct"))
    assert offs["OFF_SIGNAL_LIVE"] < btf.sizeof(btf.struct_id("signal_struct"))
    assert btf.member("kernfs_node", "id").size == 8


@pytest.mark.skipif(not os.path.exists("/sys/kernel/btf/vmlinux"), reason="no kernel BTF")
def test_raw_tracepoint_arguments_come_from_btf_trace_typedefs():
    """The TP_PROTO of a tracepoint, as a raw tracepoint program gets it: these layouts are
    what probes/accounting.c reads (the mm first; the exit's task first)."""
    btf = BTF.from_file()
    assert btf.tracepoint_args("rss_stat")[0] == "struct mm_struct *"
    assert btf.tracepoint_args("sched_process_exit")[0] == "struct task_struct *"
    assert btf.tracepoint_args("cgroup_attach_task")[2] == "struct task_struct *"
    lock = btf.tracepoint_args("mmap_lock_released")
    if lock is not None:
        # 6.1-6.12: (mm, memcg_path, write); 6.13 on: (mm, write)
        assert lock[0] == "struct mm_struct *" and lock[-1] == "_Bool"
    assert btf.tracepoint_args("no_such_event") is None
    assert btf.has_member("mm_struct", "total_vm") and not btf.has_member("mm_struct", "nope")
