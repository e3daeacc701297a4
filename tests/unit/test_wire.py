"""The wire format: probes/observer.h and observer/kernel/wire.py must say the same thing."""

import re
import shutil
import struct
import subprocess
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from observer.kernel import wire
from observer.kernel.wire import EVENT_FORMAT, EVENT_SIZE, Event, WireError, decode, encode

HEADER = Path(__file__).resolve().parents[2] / "probes" / "observer.h"
# C type -> (struct code, size); BPF targets are LP64.
C_TYPES = {
    "unsigned int": ("I", 4), "int": ("i", 4), "u32": ("I", 4), "__u32": ("I", 4),
    "long long": ("q", 8), "s64": ("q", 8), "__s64": ("q", 8),
    "unsigned long long": ("Q", 8), "u64": ("Q", 8), "__u64": ("Q", 8),
}
PREFIXES = ("EV_", "STAT_", "GROW_", "BOUNDS_", "VM_SLACK_")


def header_text():
    text = HEADER.read_text()
    text = re.sub(r"/\*.*?\*/", " ", text, flags=re.S)
    return re.sub(r"//[^\n]*", " ", text)


def c_defines():
    found = re.findall(r"^\s*#\s*define\s+((?:EV|STAT|GROW|BOUNDS|VM_SLACK)_\w+)\s+(\S+)\s*$", header_text(), flags=re.M)
    names = [n for n, _ in found]
    assert len(names) == len(set(names)), "a constant is defined twice in observer.h"
    return {n: int(v, 0) for n, v in found}


def c_struct(name):
    m = re.search(r"\bstruct\s+" + name + r"\s*\{(.*?)\}\s*;", header_text(), flags=re.S)
    assert m, f"struct {name} not found in {HEADER}"
    members = []
    for decl in m.group(1).split(";"):
        decl = " ".join(decl.split())
        if not decl:
            continue
        dm = re.fullmatch(r"(.+?)\s+(\w+)", decl)
        assert dm and dm.group(1) in C_TYPES, f"cannot read member {decl!r} of struct {name}"
        members.append((dm.group(2), dm.group(1)))
    return members


def c_layout(members):
    """Offsets and size with natural alignment, as the C compiler lays the struct out."""
    offsets, off, align = {}, 0, 1
    for name, ctype in members:
        size = C_TYPES[ctype][1]
        off = -(-off // size) * size
        offsets[name] = off
        off += size
        align = max(align, size)
    return offsets, -(-off // align) * align


def py_constants():
    return {n: getattr(wire, n) for n in dir(wire) if n.startswith(PREFIXES)}


def test_header_is_found_and_parsed():
    assert HEADER.is_file()
    assert len(c_defines()) >= 10 and len(c_struct("event")) == 7


def test_every_constant_matches():
    c, py = c_defines(), py_constants()
    assert sorted(set(c) - set(py)) == [], "defined in observer.h, missing in wire.py"
    assert sorted(set(py) - set(c)) == [], "defined in wire.py, missing in observer.h"
    assert {n: py[n] for n in c} == c


def test_constants_are_distinct_and_dense():
    py = py_constants()
    kinds = sorted(v for n, v in py.items() if n.startswith("EV_"))
    stats = sorted(v for n, v in py.items() if n.startswith("STAT_") and n != "STAT_MAX")
    assert kinds == list(range(1, len(kinds) + 1))     # 0 is never a valid kind
    assert stats == list(range(len(stats)))
    assert py["STAT_MAX"] == len(stats)


def test_kind_names_cover_every_kind():
    kinds = {v for n, v in py_constants().items() if n.startswith("EV_")}
    assert set(wire.KIND_NAMES) == kinds
    for n, v in py_constants().items():
        if n.startswith("EV_"):
            assert wire.KIND_NAMES[v] == n[3:].lower()


def test_event_struct_matches_format():
    members = c_struct("event")
    assert EVENT_FORMAT.startswith("<")
    assert "".join(C_TYPES[t][0] for _, t in members) == EVENT_FORMAT[1:]
    assert [n for n, _ in members] == list(Event._fields)
    offsets, size = c_layout(members)
    # "<" packs without padding: the C layout must not need any either.
    assert size == EVENT_SIZE == struct.calcsize(EVENT_FORMAT) == 48
    packed = 0
    for name, ctype in members:
        assert offsets[name] == packed, f"padding before {name}"
        packed += C_TYPES[ctype][1]


@pytest.mark.parametrize("name", ["proc_state", "leaf"])
def test_other_shared_structs_are_readable_and_unpadded(name):
    members = c_struct(name)
    offsets, size = c_layout(members)
    assert size == sum(C_TYPES[t][1] for _, t in members)


@pytest.mark.skipif(shutil.which("cc") is None, reason="no C compiler")
def test_compiler_agrees_with_the_parsed_layout(tmp_path):
    """A cross-check of the regex parsing: the host compiler's sizeof and offsetof."""
    members = c_struct("event")
    prog = tmp_path / "layout.c"
    prog.write_text(
        "#include <stdio.h>\n#include <stddef.h>\n"
        f'#include "{HEADER}"\n'
        "int main(void) {\n"
        '  printf("size %zu\\n", sizeof(struct event));\n'
        + "".join(f'  printf("{n} %zu\\n", offsetof(struct event, {n}));\n' for n, _ in members)
        + '  printf("EV %d %d %d %d %d\\n", EV_NEW_LEAF, EV_VM_HIGH, EV_VM_LOW, EV_RSS_HIGH, EV_MOVED);\n'
        "  return 0;\n}\n")
    exe = tmp_path / "layout"
    subprocess.run(["cc", "-o", str(exe), str(prog)], check=True, capture_output=True)
    out = dict(line.split(" ", 1) for line in subprocess.run(
        [str(exe)], check=True, capture_output=True, text=True).stdout.splitlines())
    offsets, size = c_layout(members)
    assert int(out.pop("size")) == size == EVENT_SIZE
    assert out.pop("EV").split() == [str(v) for v in (wire.EV_NEW_LEAF, wire.EV_VM_HIGH,
                                                      wire.EV_VM_LOW, wire.EV_RSS_HIGH, wire.EV_MOVED)]
    assert {n: int(v) for n, v in out.items()} == offsets


# -- encode / decode ----------------------------------------------------------------------

U32, U64 = st.integers(0, 2**32 - 1), st.integers(0, 2**64 - 1)
events = st.builds(Event, kind=st.sampled_from(sorted(wire.KIND_NAMES)), tgid=U32, cgid=U64,
                   value=st.integers(-2**63, 2**63 - 1), aux=U64, ts_ns=U64,
                   extra=st.integers(-2**63, 2**63 - 1))


@settings(database=None, deadline=None)
@given(events)
def test_round_trip(ev):
    data = encode(ev)
    assert len(data) == EVENT_SIZE
    assert decode(data) == ev


def test_decode_known_bytes():
    data = (struct.pack("<II", wire.EV_MOVED, 4242) + (77).to_bytes(8, "little")
            + (-5).to_bytes(8, "little", signed=True) + (66).to_bytes(8, "little")
            + (10**18).to_bytes(8, "little") + (-1).to_bytes(8, "little", signed=True))
    ev = decode(data)
    assert ev == Event(wire.EV_MOVED, 4242, 77, -5, 66, 10**18, -1)
    assert ev.kind_name == "moved"


def test_decode_ignores_trailing_bytes():
    # bcc may hand over a buffer rounded up past the event; only the event is read.
    ev = Event(wire.EV_VM_HIGH, 1, 2, 3, 4, 5)
    assert decode(encode(ev) + b"\xff" * 8) == ev


@pytest.mark.parametrize("size", [0, 1, 8, EVENT_SIZE - 1])
def test_decode_short_data(size):
    with pytest.raises(WireError):
        decode(encode(Event(wire.EV_VM_LOW, 1, 2, 3, 4, 5))[:size])


@pytest.mark.parametrize("kind", [0, max(wire.KIND_NAMES) + 1, 2**32 - 1])
def test_decode_unknown_kind(kind):
    data = struct.pack(EVENT_FORMAT, kind, 1, 2, 3, 4, 5, 6)
    with pytest.raises(WireError):
        decode(data)
    assert Event(kind, 1, 2, 3, 4, 5).kind_name == f"kind{kind}"


def test_wire_error_is_a_value_error():
    assert issubclass(WireError, ValueError)
