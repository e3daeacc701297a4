"""Reads struct member offsets from the kernel's BTF (/sys/kernel/btf/vmlinux).

The BPF programs are compiled against whatever kernel headers are installed, and those
headers may describe another kernel. Struct layouts therefore come from the running
kernel's own type information, parsed here, and reach the C code as -D constants.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from ..core.errors import BeanwatchError

BTF_MAGIC = 0xEB9F

KIND_INT, KIND_PTR, KIND_ARRAY, KIND_STRUCT, KIND_UNION = 1, 2, 3, 4, 5
KIND_ENUM, KIND_FWD, KIND_TYPEDEF, KIND_VOLATILE, KIND_CONST = 6, 7, 8, 9, 10
KIND_RESTRICT, KIND_FUNC, KIND_FUNC_PROTO, KIND_VAR, KIND_DATASEC = 11, 12, 13, 14, 15
KIND_FLOAT, KIND_DECL_TAG, KIND_TYPE_TAG, KIND_ENUM64 = 16, 17, 18, 19

# Bytes that follow the 12-byte btf_type header, per kind: fixed part and per-vlen item.
_TRAILER = {
    KIND_INT: (4, 0), KIND_ARRAY: (12, 0), KIND_STRUCT: (0, 12), KIND_UNION: (0, 12),
    KIND_ENUM: (0, 8), KIND_FUNC_PROTO: (0, 8), KIND_VAR: (4, 0), KIND_DATASEC: (0, 12),
    KIND_DECL_TAG: (4, 0), KIND_ENUM64: (0, 12),
}
_MODIFIERS = (KIND_TYPEDEF, KIND_VOLATILE, KIND_CONST, KIND_RESTRICT, KIND_TYPE_TAG)


class BTFError(BeanwatchError):
    """The BTF blob is malformed or lacks a type or member we need."""


@dataclass(frozen=True)
class Member:
    """Where a struct member lives: byte offset from the struct start, and its type's size."""

    offset: int
    size: int
    type_id: int


class BTF:
    """Type table of one BTF blob; only what offset lookups need is decoded."""

    def __init__(self, blob: bytes):
        if len(blob) < 24:
            raise BTFError("BTF blob is too short")
        magic, _version, _flags, hdr_len = struct.unpack_from("<HBBI", blob, 0)
        if magic != BTF_MAGIC:
            raise BTFError("not a BTF blob (bad magic)")
        type_off, type_len, str_off, str_len = struct.unpack_from("<IIII", blob, 8)
        self._blob = blob
        self._strings = hdr_len + str_off
        self._str_end = self._strings + str_len
        # _types[id] = (kind, vlen, kind_flag, name_off, size_or_type, trailer_offset)
        self._types: list[tuple[int, int, int, int, int, int]] = [(0, 0, 0, 0, 0, 0)]
        self._structs: dict[str, int] = {}
        pos, end = hdr_len + type_off, hdr_len + type_off + type_len
        if end > len(blob) or self._str_end > len(blob):
            raise BTFError("BTF sections run past the end of the blob")
        unpack = struct.unpack_from
        while pos < end:
            name_off, info, size_type = unpack("<III", blob, pos)
            kind, vlen, kflag = (info >> 24) & 0x1F, info & 0xFFFF, info >> 31
            fixed, per_item = _TRAILER.get(kind, (0, 0))
            self._types.append((kind, vlen, kflag, name_off, size_type, pos + 12))
            if kind in (KIND_STRUCT, KIND_UNION) and name_off:
                self._structs.setdefault(self._name(name_off), len(self._types) - 1)
            pos += 12 + fixed + per_item * vlen

    @classmethod
    def from_file(cls, path: str = "/sys/kernel/btf/vmlinux") -> "BTF":
        try:
            with open(path, "rb") as f:
                return cls(f.read())
        except OSError as e:
            raise BTFError(f"cannot read kernel BTF at {path}: {e.strerror}") from None

    def _name(self, off: int) -> str:
        start = self._strings + off
        stop = self._blob.index(b"\0", start, self._str_end)
        return self._blob[start:stop].decode("ascii", "replace")

    def _resolve(self, type_id: int) -> int:
        """Skips typedefs and qualifiers."""
        for _ in range(64):
            kind, _, _, _, size_type, _ = self._types[type_id]
            if kind not in _MODIFIERS:
                return type_id
            type_id = size_type
        raise BTFError(f"type {type_id}: modifier chain too long")

    def sizeof(self, type_id: int) -> int:
        type_id = self._resolve(type_id)
        kind, _, _, _, size_type, trailer = self._types[type_id]
        if kind == KIND_PTR:
            return 8
        if kind == KIND_ARRAY:
            elem, _index, nelems = struct.unpack_from("<III", self._blob, trailer)
            return self.sizeof(elem) * nelems
        return size_type

    def is_array(self, type_id: int) -> bool:
        return self._types[self._resolve(type_id)][0] == KIND_ARRAY

    def array_info(self, type_id: int) -> tuple[int, int]:
        """(element type id, element count) of an array type."""
        type_id = self._resolve(type_id)
        kind, _, _, _, _, trailer = self._types[type_id]
        if kind != KIND_ARRAY:
            raise BTFError(f"type {type_id} is not an array")
        elem, _index, nelems = struct.unpack_from("<III", self._blob, trailer)
        return elem, nelems

    def struct_id(self, name: str) -> int:
        try:
            return self._structs[name]
        except KeyError:
            raise BTFError(f"kernel BTF has no struct {name}") from None

    def _find(self, type_id: int, member: str) -> Member | None:
        """Depth-first through anonymous struct/union members, summing offsets."""
        type_id = self._resolve(type_id)
        kind, vlen, kflag, _, _, trailer = self._types[type_id]
        if kind not in (KIND_STRUCT, KIND_UNION):
            return None
        for i in range(vlen):
            name_off, mtype, moff = struct.unpack_from("<III", self._blob, trailer + 12 * i)
            bit_offset = moff & 0xFFFFFF if kflag else moff
            if name_off == 0:
                inner = self._find(mtype, member)
                if inner is not None:
                    return Member(inner.offset + bit_offset // 8, inner.size, inner.type_id)
            elif self._name(name_off) == member:
                return Member(bit_offset // 8, self.sizeof(mtype), mtype)
        return None

    def member_of(self, type_id: int, member: str) -> Member:
        """A member of the struct or union type_id (through typedefs and qualifiers)."""
        found = self._find(type_id, member)
        if found is None:
            raise BTFError(f"kernel BTF: type {type_id} has no member {member}")
        return found

    def member(self, struct_name: str, member: str) -> Member:
        found = self._find(self.struct_id(struct_name), member)
        if found is None:
            raise BTFError(f"kernel BTF: struct {struct_name} has no member {member}")
        return found

    def offset(self, struct_name: str, member: str) -> int:
        return self.member(struct_name, member).offset

    def describe(self, type_id: int) -> str:
        """A type as C spells it, without qualifiers: "struct mm_struct *", "_Bool", "void *"."""
        type_id = self._resolve(type_id)
        if type_id == 0:
            return "void"
        kind, _, _, name_off, size_type, _ = self._types[type_id]
        if kind == KIND_PTR:
            return self.describe(size_type) + " *"
        name = self._name(name_off) if name_off else "?"
        if kind == KIND_STRUCT:
            return f"struct {name}"
        if kind == KIND_UNION:
            return f"union {name}"
        return name

    def tracepoint_args(self, event: str) -> list[str] | None:
        """The arguments a raw tracepoint program gets (its TP_PROTO, in order), from the
        kernel's `btf_trace_EVENT` typedef: a pointer to a function whose first parameter is
        the tracepoint's private data, the rest the event's arguments. None when absent."""
        tid = self.tracepoint_id(event)
        if tid is None:
            return None
        ptr = self._types[tid][4]
        kind, _, _, _, proto, _ = self._types[ptr]
        if kind != KIND_PTR:
            return None
        kind, vlen, _, _, _, trailer = self._types[proto]
        if kind != KIND_FUNC_PROTO:
            return None
        params = [struct.unpack_from("<II", self._blob, trailer + 8 * i)[1] for i in range(vlen)]
        return [self.describe(t) for t in params[1:]]

    def tracepoint_id(self, event: str) -> int | None:
        """The type id of the `btf_trace_EVENT` typedef: what a BTF tracepoint program
        (tp_btf) names as the place it attaches to. None when absent."""
        return self._typedefs().get(f"btf_trace_{event}")

    def _typedefs(self) -> dict[str, int]:
        if not hasattr(self, "_typedef_ids"):
            self._typedef_ids = {self._name(t[3]): i for i, t in enumerate(self._types)
                                 if t[0] == KIND_TYPEDEF and t[3]}
        return self._typedef_ids

    def has_member(self, struct_name: str, member: str) -> bool:
        try:
            return self._find(self.struct_id(struct_name), member) is not None
        except BTFError:
            return False

    def func_id(self, name: str) -> int | None:
        """The type id of a kernel function (BTF FUNC) by name, or None: what a BPF program
        of type LSM or tracing names as the place it attaches to."""
        if not hasattr(self, "_func_ids"):
            self._func_ids = {self._name(t[3]): i for i, t in enumerate(self._types)
                              if t[0] == KIND_FUNC and t[3]}
        return self._func_ids.get(name)
