"""The Debian package, built for real by scripts/build-deb.sh (`make deb`) into a temporary
directory: its contents (every module and probe, no tests), its control fields and
conffiles, lintian, and the installed layout finding its probes. Root: build dependencies
missing from the host are installed from the Debian archive, and the build runs in a
network namespace of its own. Install, upgrade and purge are the systemd image's job."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time

import pytest

import observer

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def run(cmd, **kw):
    kw.setdefault("capture_output", True)
    kw.setdefault("text", True)
    kw.setdefault("timeout", 900)
    return subprocess.run(cmd, **kw)


@pytest.fixture(scope="module")
def deb(tmp_path_factory) -> str:
    if shutil.which("dpkg-buildpackage") is None:
        pytest.fail("dpkg-buildpackage is missing: apt-get install dpkg-dev")
    out = tmp_path_factory.mktemp("dist")
    env = dict(os.environ, DIST=str(out), LINTIAN="0")
    res = run(["bash", os.path.join(ROOT, "scripts", "build-deb.sh")], env=env)
    assert res.returncode == 0, res.stdout + res.stderr
    path = out / f"beanwatch_{observer.__version__}_all.deb"
    assert path.is_file(), os.listdir(out)
    return str(path)


def archive(deb: str, part: str) -> bytes:
    """The package's data (--fsys-tarfile) or control (--ctrl-tarfile) tar archive."""
    res = subprocess.run(["dpkg-deb", part, deb], capture_output=True, timeout=60)
    assert res.returncode == 0, res.stderr
    return res.stdout


def contents(deb: str) -> set[str]:
    res = subprocess.run(["tar", "-tf", "-"], input=archive(deb, "--fsys-tarfile"),
                         capture_output=True, timeout=60)
    assert res.returncode == 0, res.stderr
    return {n.decode().removeprefix("./") for n in res.stdout.splitlines()}


def test_package_holds_every_module_and_probe_and_no_tests(deb):
    names = contents(deb)
    site = "usr/lib/python3/dist-packages/"
    for dirpath, _, files in os.walk(os.path.join(ROOT, "observer")):
        rel = os.path.relpath(dirpath, ROOT)
        for f in files:
            if f.endswith(".py"):
                assert f"{site}{rel}/{f}" in names, f"{rel}/{f} is not in the package"
    for f in os.listdir(os.path.join(ROOT, "probes")):
        if f.endswith((".c", ".h", ".py")):
            assert f"{site}observer/probes/{f}" in names, f"probes/{f} is not in the package"
    for path in ("usr/bin/beanwatch", "lib/systemd/system/beanwatch.service",
                 "etc/beanwatch/beanwatch.toml", "usr/share/man/man1/beanwatch.1.gz",
                 "usr/share/doc/beanwatch/examples/beanwatch.toml.example",
                 "usr/share/doc/beanwatch/README.Debian"):
        assert path in names, path
    assert not [n for n in names if "/tests/" in f"/{n}" or "test_" in os.path.basename(n)]
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]


def test_control_fields_and_conffiles(deb):
    fields = run(["dpkg-deb", "-f", deb, "Package", "Version", "Architecture", "Depends"]).stdout
    assert f"Version: {observer.__version__}\n" in fields and "Architecture: all\n" in fields
    for dep in ("python3-bpfcc", "python3-click", "python3-pyroute2", "python3-prometheus-client"):
        assert dep in fields
    res = subprocess.run(["tar", "-xOf", "-", "./conffiles"], capture_output=True,
                         input=archive(deb, "--ctrl-tarfile"), timeout=60)
    assert res.returncode == 0, res.stderr
    assert res.stdout.decode().split() == ["/etc/beanwatch/beanwatch.toml"]


def test_packaged_unit_runs_usr_bin_beanwatch(deb, tmp_path):
    assert run(["dpkg-deb", "-x", deb, str(tmp_path)]).returncode == 0
    unit = (tmp_path / "lib/systemd/system/beanwatch.service").read_text()
    assert "\nExecStart=/usr/bin/beanwatch watch --config /etc/beanwatch/beanwatch.toml " in unit
    assert (tmp_path / "usr/bin/beanwatch").read_text().startswith("#!/usr/bin/python3\n")


def test_installed_layout_finds_its_probes(deb, tmp_path):
    assert run(["dpkg-deb", "-x", deb, str(tmp_path)]).returncode == 0
    site = tmp_path / "usr/lib/python3/dist-packages"
    # -S: no site directories, so that observer can only come from the package.
    res = run(["/usr/bin/python3", "-S", "-c",
               "import importlib.resources as r, observer; "
               "p = r.files('observer.probes').joinpath('accounting.c'); "
               "print(observer.__file__); print(p.is_file())"],
              env={"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin"}, cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert res.stdout.split() == [str(site / "observer/__init__.py"), "True"]


def test_lintian_reports_nothing_but_overridden_tags(deb):
    if shutil.which("lintian") is None:
        pytest.skip("lintian is not installed (apt-get install lintian)")
    res = run(["lintian", "--pedantic", "--info", deb])
    tags = [line for line in res.stdout.splitlines() if line[:2] in ("E:", "W:", "I:", "P:")]
    assert res.returncode == 0 and tags == [], res.stdout + res.stderr


def postrm_copy(tmp_path) -> tuple[str, str, str]:
    """debian/beanwatch.postrm with its ledger directory and /etc/beanwatch moved under
    tmp_path (nothing else changed), so that it runs for real without touching the host's."""
    run_dir, etc_dir = tmp_path / "run", tmp_path / "etc"
    run_dir.mkdir()
    etc_dir.mkdir()
    (etc_dir / "beanwatch.toml").write_text("")
    text = open(os.path.join(ROOT, "debian", "beanwatch.postrm")).read()
    assert text.count("\nledger_dir=/run/beanwatch\n") == 1 and "/etc/beanwatch" in text
    text = text.replace("\nledger_dir=/run/beanwatch\n", f"\nledger_dir={run_dir}\n")
    text = text.replace("/etc/beanwatch", str(etc_dir))
    script = tmp_path / "postrm"
    script.write_text(text)
    return str(script), str(run_dir), str(etc_dir)


def test_postrm_thaws_what_a_dead_beanwatch_froze_then_purge_removes_the_rest(cgroups, tmp_path):
    script, run_dir, etc_dir = postrm_copy(tmp_path)
    ours, recreated = cgroups.make("frozen"), cgroups.make("recreated")
    for rel in (ours, recreated):
        cgroups.spawn(rel, ["sleep", "300"])
        with open(os.path.join(cgroups.path(rel), "cgroup.freeze"), "w") as f:
            f.write("1")
    dead = 4194304 + 1   # above any pid_max: no such process
    ledger = [{"cgroup": ours, "id": os.stat(cgroups.path(ours)).st_ino},
              {"cgroup": recreated, "id": 1},          # another cgroup by now: left alone
              {"cgroup": ours + "-gone", "id": 7}]      # removed meanwhile: skipped
    with open(os.path.join(run_dir, f"frozen.{dead}.json"), "w") as f:
        json.dump(ledger, f)
    live = os.path.join(run_dir, f"frozen.{os.getpid()}.json")   # a running beanwatch's
    with open(live, "w") as f:
        json.dump([{"cgroup": recreated, "id": os.stat(cgroups.path(recreated)).st_ino}], f)

    res = run(["sh", script, "remove"])
    assert res.returncode == 0, res.stderr
    assert f"thawed {ours}" in res.stderr
    deadline = time.time() + 5
    while cgroups.events(ours)["frozen"] and time.time() < deadline:
        time.sleep(0.05)
    assert cgroups.events(ours)["frozen"] == 0
    assert cgroups.events(recreated)["frozen"] == 1
    assert sorted(os.listdir(run_dir)) == [os.path.basename(live)]
    assert os.path.exists(etc_dir)   # remove keeps the config

    res = run(["sh", script, "purge"])
    assert res.returncode == 0, res.stderr
    assert not os.path.exists(run_dir) and not os.path.exists(etc_dir)
    assert cgroups.events(recreated)["frozen"] == 1   # a live beanwatch's: not ours to thaw
