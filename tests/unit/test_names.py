"""Cgroup paths to the names operators know: systemd units, containers, Kubernetes pods."""

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from observer.core.names import KINDS, QOS_CLASSES, CgroupName, describe_cgroup, display_name

PROPS = settings(database=None, deadline=None, max_examples=500)

CID = "3f2a1b9c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f8"   # 64 hex
CID2 = "9e8d7c6b5a4f3e2d1c0b9a8f7e6d5c4b3a2f1e0d9c8b7a6f5e4d3c2b1a0f9e8d"
UID = "1234abcd-5e6f-4a7b-8c9d-0123456789ab"
UID_ = UID.replace("-", "_")
STATIC = "6ee4c8d2a4f5e16d2b5c09e3f4a6bd0a"   # a static pod's uid: its config hash, no dashes
POD = f"pod {UID} / container {CID[:12]}"

K8S_SYSTEMD = "/kubepods.slice/kubepods-{q}.slice/kubepods-{q}-pod{u}.slice/{scope}"


def k(name, uid=UID, qos="burstable", runtime="containerd", cid=CID, unit=None):
    return CgroupName("kubernetes", name, unit, cid, uid, qos, runtime)


CASES = [
    # --- systemd units and scopes -------------------------------------------------------------
    ("/system.slice/nginx.service", CgroupName("systemd-unit", "nginx.service", "nginx.service")),
    ("system.slice/nginx.service", CgroupName("systemd-unit", "nginx.service", "nginx.service")),
    ("/system.slice/nginx.service/", CgroupName("systemd-unit", "nginx.service", "nginx.service")),
    ("/system.slice", CgroupName("systemd-unit", "system.slice", "system.slice")),
    ("/init.scope", CgroupName("systemd-scope", "init.scope", "init.scope")),
    ("/system.slice/system-getty.slice/getty@tty1.service",
     CgroupName("systemd-unit", "getty@tty1.service", "getty@tty1.service")),
    ("/system.slice/postgresql@15-main.service/worker",     # a delegated subtree
     CgroupName("systemd-unit", "postgresql@15-main.service/worker", "postgresql@15-main.service")),
    ("/machine.slice/machine-qemu\\x2d1\\x2dvm1.scope",     # systemctl's escaping, kept
     CgroupName("systemd-scope", "machine-qemu\\x2d1\\x2dvm1.scope", "machine-qemu\\x2d1\\x2dvm1.scope")),
    ("/machine.slice/systemd-nspawn@web.service",
     CgroupName("systemd-unit", "systemd-nspawn@web.service", "systemd-nspawn@web.service")),
    ("/system.slice/home.mount", CgroupName("systemd-unit", "home.mount", "home.mount")),
    # --- login sessions and user managers -----------------------------------------------------
    ("/user.slice/user-1000.slice/session-3.scope",
     CgroupName("user-session", "user 1000 session 3", "session-3.scope")),
    ("/user.slice/user-113.slice/session-c1.scope",          # lightdm's greeter session
     CgroupName("user-session", "user 113 session c1", "session-c1.scope")),
    ("/user.slice/user-1000.slice/user@1000.service",
     CgroupName("systemd-unit", "user@1000.service", "user@1000.service")),
    ("/user.slice/user-1000.slice/user@1000.service/app.slice/app-gnome-firefox-4242.scope",
     CgroupName("systemd-scope", "app-gnome-firefox-4242.scope", "app-gnome-firefox-4242.scope")),
    ("/session-3.scope", CgroupName("systemd-scope", "session-3.scope", "session-3.scope")),
    # --- docker, containerd, cri-o, podman outside Kubernetes -------------------------------
    (f"/system.slice/docker-{CID}.scope", CgroupName("docker", f"docker {CID[:12]}", None, CID, runtime="docker")),
    (f"/docker/{CID}", CgroupName("docker", f"docker {CID[:12]}", None, CID, runtime="docker")),
    (f"/docker/{CID}/docker/{CID2}",                          # docker in docker: the inner one
     CgroupName("docker", f"docker {CID2[:12]}", None, CID2, runtime="docker")),
    (f"/system.slice/docker-{CID}.scope/system.slice/nginx.service",   # systemd in a container
     CgroupName("docker", f"docker {CID[:12]} / nginx.service", "nginx.service", CID, runtime="docker")),
    (f"/system.slice/nerdctl-{CID}.scope",
     CgroupName("containerd", f"containerd {CID[:12]}", None, CID, runtime="containerd")),
    (f"/machine.slice/libpod-{CID}.scope", CgroupName("podman", f"podman {CID[:12]}", None, CID, runtime="podman")),
    (f"/machine.slice/libpod-{CID}.scope/container",
     CgroupName("podman", f"podman {CID[:12]}/container", None, CID, runtime="podman")),
    (f"/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-{CID}.scope",   # rootless
     CgroupName("podman", f"podman {CID[:12]}", None, CID, runtime="podman")),
    (f"/machine.slice/libpod-conmon-{CID}.scope",
     CgroupName("podman", f"podman {CID[:12]} conmon", None, CID, runtime="podman")),
    (f"/libpod_parent/libpod-{CID}", CgroupName("podman", f"podman {CID[:12]}", None, CID, runtime="podman")),
    (f"/system.slice/crio-{CID}.scope", CgroupName("cri-o", f"cri-o {CID[:12]}", None, CID, runtime="cri-o")),
    # --- Kubernetes, systemd cgroup driver ----------------------------------------------------
    (K8S_SYSTEMD.format(q="burstable", u=UID_, scope=f"cri-containerd-{CID}.scope"), k(POD)),
    (K8S_SYSTEMD.format(q="besteffort", u=UID_, scope=f"crio-{CID}.scope"),
     k(POD, qos="besteffort", runtime="cri-o")),
    (K8S_SYSTEMD.format(q="burstable", u=UID_, scope=f"crio-conmon-{CID}.scope"),
     k(f"pod {UID} / conmon {CID[:12]}", runtime="cri-o")),
    (K8S_SYSTEMD.format(q="burstable", u=UID_, scope=f"docker-{CID}.scope"), k(POD, runtime="docker")),
    (f"/kubepods.slice/kubepods-pod{UID_}.slice/cri-containerd-{CID}.scope", k(POD, qos="guaranteed")),
    (f"/kubepods.slice/kubepods-pod{UID_}.slice", k(f"pod {UID}", qos="guaranteed", runtime=None, cid=None)),
    (f"/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{STATIC}.slice",
     k(f"pod {STATIC}", uid=STATIC, runtime=None, cid=None)),
    ("/kubepods.slice/kubepods-burstable.slice",
     CgroupName("systemd-unit", "kubepods-burstable.slice", "kubepods-burstable.slice")),
    # --- Kubernetes, cgroupfs driver ----------------------------------------------------------
    (f"/kubepods/burstable/pod{UID}/{CID}", k(POD, runtime=None)),
    (f"/kubepods/besteffort/pod{UID}/{CID}", k(POD, qos="besteffort", runtime=None)),
    (f"/kubepods/pod{UID}/{CID}", k(POD, qos="guaranteed", runtime=None)),
    (f"/kubepods/pod{UID}", k(f"pod {UID}", qos="guaranteed", runtime=None, cid=None)),
    ("/kubepods/burstable", CgroupName("other", "/kubepods/burstable")),
    (f"/elsewhere/pod{UID}/{CID}", CgroupName("other", f"/elsewhere/pod{UID}/{CID}")),
    # --- nested: a kind/k3d node is a container; the pod inside it wins ----------------------
    (f"/system.slice/docker-{CID2}.scope/kubelet.slice/kubelet-kubepods.slice/"
     f"kubelet-kubepods-besteffort.slice/kubelet-kubepods-besteffort-pod{UID_}.slice/cri-containerd-{CID}.scope",
     k(POD, qos="besteffort")),
    (f"/docker/{CID2}/kubepods/burstable/pod{UID}/{CID}", k(POD, runtime=None)),
    (f"/system.slice/containerd.service/kubepods-burstable-pod{UID_}.slice:cri-containerd:{CID}", k(POD)),
    # --- nothing known --------------------------------------------------------------------------
    ("/", CgroupName("other", "/")),
    ("", CgroupName("other", "")),
    ("/beanwatch-test/a/b", CgroupName("other", "/beanwatch-test/a/b")),
    (f"/system.slice/docker-{CID[:63]}.scope",                # an id one digit short is a scope
     CgroupName("systemd-scope", f"docker-{CID[:63]}.scope", f"docker-{CID[:63]}.scope")),
    (f"/docker/{CID.upper()}", CgroupName("other", f"/docker/{CID.upper()}")),
    ("/batch\njob", CgroupName("other", "/batch\\x0ajob")),
]


@pytest.mark.parametrize("path,expected", CASES, ids=[c[0][-48:] or "empty" for c in CASES])
def test_describe_cgroup(path, expected):
    assert describe_cgroup(path) == expected
    assert display_name(path) == expected.name


def test_display_name_keeps_an_unknown_path_as_it_is():
    assert display_name("/beanwatch-1234/hog") == "/beanwatch-1234/hog"


def test_hostile_names_stay_one_printable_line():
    bad = f"/system.slice/docker-{CID}.scope/\x1b[2J\nevil\r"
    name = display_name(bad)
    assert name == f"docker {CID[:12]}/\\x1b[2J\\x0aevil\\x0d"
    assert name.isprintable()


@PROPS
@given(st.text(st.characters(blacklist_categories=())))
@example(f"/kubepods/pod{UID}/{CID}")
@example("/kubepods.slice/kubepods-pod.slice")
@example("pod/pod/kubepods/burstable/pod")
@example("/a.slice:crio:" + CID)
def test_describe_never_raises_and_stays_on_one_line(path):
    got = describe_cgroup(path)
    assert got.kind in KINDS
    assert got.qos_class in QOS_CLASSES + (None,)
    assert "\n" not in display_name(path) and "\r" not in display_name(path)
    assert display_name(path).isprintable()
    if got.container_id is not None:
        assert len(got.container_id) == 64


@PROPS
@given(st.lists(st.sampled_from(["kubepods", "burstable", "besteffort", f"pod{UID}", "kubepods.slice",
                                 f"kubepods-burstable-pod{UID_}.slice", f"docker-{CID}.scope", CID,
                                 "docker", "session-1.scope", "user-0.slice", "x.service", "",
                                 f"crio-conmon-{CID2}.scope", "a\nb"]), max_size=8))
def test_any_arrangement_of_real_components(parts):
    path = "/" + "/".join(parts)
    got = describe_cgroup(path)
    assert got.kind in KINDS and display_name(path).isprintable()
    if got.kind == "other":
        assert got.name == path.replace("\n", "\\x0a")
