"""Names operators know (systemd unit, container, Kubernetes pod) read from a cgroup path alone."""

from __future__ import annotations

import re
from dataclasses import dataclass

KINDS = ("systemd-unit", "systemd-scope", "docker", "containerd", "cri-o", "podman", "kubernetes",
         "user-session", "other")
QOS_CLASSES = ("guaranteed", "burstable", "besteffort")
SHORT_ID = 12   # what `docker ps` and `crictl ps` show

_HEX64 = r"[0-9a-f]{64}"
# Scope prefixes the runtimes give their containers under the systemd cgroup driver; podman
# keeps the prefix under cgroupfs too (/libpod_parent/libpod-<id>).
_RUNTIME_PREFIXES = {"docker": "docker", "cri-containerd": "containerd", "nerdctl": "containerd",
                     "crio": "cri-o", "libpod": "podman"}
_SCOPE = re.compile(rf"({'|'.join(_RUNTIME_PREFIXES)})-(conmon-)?({_HEX64})(?:\.scope)?")
# The cgroupsPath form "slice:prefix:id", seen where runc could not hand the scope to systemd.
_COLON = re.compile(rf"(.+\.slice):({'|'.join(_RUNTIME_PREFIXES)}):({_HEX64})")
_BARE_ID = re.compile(_HEX64)
# kubepods-burstable-pod<uid with "_" for "-">.slice; kind prefixes a "kubelet-" to all of it.
_POD_SLICE = re.compile(r"(?:[\w-]+-)?kubepods(?:-(burstable|besteffort))?-pod([0-9a-f_]+)\.slice")
_POD_DIR = re.compile(r"pod([0-9a-f-]+)")
_UNIT = re.compile(r"[\w:.\\@-]+\.(service|scope|slice|socket|mount|swap)")
_SESSION = re.compile(r"session-(\w+)\.scope")
_USER_SLICE = re.compile(r"user-(\d+)\.slice")


@dataclass(frozen=True)
class CgroupName:
    kind: str                       # one of KINDS
    name: str                       # short, printable, one line
    unit: str | None = None         # the innermost systemd unit, as systemctl spells it
    container_id: str | None = None  # full 64-hex id
    pod_uid: str | None = None      # with dashes, as kubectl shows it
    qos_class: str | None = None    # one of QOS_CLASSES
    runtime: str | None = None      # docker, containerd, cri-o, podman; None if the path can't tell


def printable(text: str) -> str:
    """One line: mkdir allows newlines and escapes in names (the one escaper)."""
    return "".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in text)


def _container(part: str):
    """(runtime, id, conmon) when this component names a container by its own form."""
    if m := _SCOPE.fullmatch(part):
        return _RUNTIME_PREFIXES[m[1]], m[3], bool(m[2])
    if m := _COLON.fullmatch(part):
        return _RUNTIME_PREFIXES[m[2]], m[3], False
    return None


def _pod(parts: list[str], i: int):
    """(uid, qos class) when parts[i] is a pod cgroup, under either cgroup driver."""
    part = parts[i]
    if m := _POD_SLICE.fullmatch(part.split(":")[0]):
        return m[2].replace("_", "-"), m[1] or "guaranteed"
    if m := _POD_DIR.fullmatch(part):
        # cgroupfs driver: /kubepods/pod<uid> (guaranteed) or /kubepods/<qos>/pod<uid>.
        parent = parts[i - 1] if i >= 1 else ""
        if parent == "kubepods":
            return m[1], "guaranteed"
        if parent in ("burstable", "besteffort") and i >= 2 and parts[i - 2] == "kubepods":
            return m[1], parent
    return None


def describe_cgroup(path: str) -> CgroupName:
    """What a cgroup is, judged by its path: the innermost pod, container or unit wins."""
    parts = [p for p in path.split("/") if p]
    pod = container = unit = session = None
    last = -1   # index of the last component that said something; the rest is shown as a tail
    for i, part in enumerate(parts):
        if found := _pod(parts, i):
            # A pod inside a container is a node inside a container (kind, k3d): the
            # container above the pod is the node, not the pod's.
            pod, container, unit, session = found, None, None, None
            if not _COLON.fullmatch(part):
                last = i
                continue
        if found := _container(part):
            container, unit, session, last = found, None, None, i
        elif _BARE_ID.fullmatch(part) and (pod or (i >= 1 and parts[i - 1] == "docker")):
            # cgroupfs driver: the id alone, under the pod (runtime unknown) or under /docker.
            runtime = None if pod else "docker"
            container, unit, session, last = (runtime, part, False), None, None, i
        elif _UNIT.fullmatch(part):
            unit, last = part, i
            m = _SESSION.fullmatch(part)
            user = _USER_SLICE.fullmatch(parts[i - 1]) if m and i >= 1 else None
            session = (m[1], user[1]) if user else None
    if last < 0:
        return CgroupName("other", printable(path))
    tail = "".join("/" + printable(p) for p in parts[last + 1:])
    runtime, cid, conmon = container or (None, None, False)
    what = f"{'conmon' if conmon else 'container'} {cid[:SHORT_ID]}" if cid else ""
    if unit and (pod or cid):
        tail = f" / {printable(unit)}{tail}"   # a unit inside a container: systemd running in it
    if pod:
        uid, qos = pod
        label = f"pod {uid}" + (f" / {what}" if what else "")
        return CgroupName("kubernetes", label + tail, unit, cid, uid, qos, runtime)
    if cid:
        label = f"{runtime} {cid[:SHORT_ID]}" + (" conmon" if conmon else "")
        return CgroupName(runtime, label + tail, unit, cid, runtime=runtime)   # kind = runtime
    if session:
        return CgroupName("user-session", f"user {session[1]} session {session[0]}{tail}", unit)
    kind = "systemd-scope" if unit.endswith(".scope") else "systemd-unit"
    return CgroupName(kind, printable(unit) + tail, unit)


def display_name(path: str) -> str:
    """A one-line label for a table: the operator's name, or the escaped path when there is none."""
    return describe_cgroup(path).name
