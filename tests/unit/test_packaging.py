"""Packaging, offline and without touching the host: the wheel (probes inside, console
script, works from any directory, shell completion), the systemd unit (systemd-analyze),
the example config, and scripts/install.sh into a temporary root.

Needs: systemd-analyze (Debian package systemd), python3-venv (ensurepip), setuptools>=61
and wheel importable by this Python (python3-setuptools and python3-wheel through the
venv's --system-site-packages). No network: fresh venvs get --no-deps installs, and the
runtime dependencies the console script imports are lent from this interpreter (lent_deps)."""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
import sys
import zipfile

import pytest

import observer
from observer.host.configfile import parse_config
from observer.host.selfguard import OOM_SCORE_ADJ
from observer.host.state import DEFAULT_STATE_DIR

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
UNIT = os.path.join(ROOT, "packaging", "beanwatch.service")
EXAMPLE = os.path.join(ROOT, "packaging", "beanwatch.toml.example")
INSTALL = os.path.join(ROOT, "scripts", "install.sh")
BASE_PYTHON = getattr(sys, "_base_executable", sys.executable)

# What the unit grants, and why, is documented in the unit itself.
UNIT_CAPABILITIES = {"CAP_BPF", "CAP_PERFMON", "CAP_SYS_ADMIN", "CAP_SYSLOG",
                     "CAP_DAC_OVERRIDE", "CAP_KILL", "CAP_NET_ADMIN", "CAP_SYS_PTRACE"}


def run(cmd, **kw):
    kw.setdefault("capture_output", True)
    kw.setdefault("text", True)
    kw.setdefault("timeout", 300)
    return subprocess.run(cmd, **kw)


def require_tool(name: str, package: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is missing: install the Debian package {package} (scripts/setup-host.sh)")
    return path


def runtime_requirements() -> list[str]:
    """The distribution names of [project] dependencies in pyproject.toml."""
    try:
        import tomllib
    except ModuleNotFoundError:  # Python < 3.11
        import tomli as tomllib
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        deps = tomllib.load(f)["project"]["dependencies"]
    return [re.match(r"[A-Za-z0-9_.-]+", d).group(0) for d in deps]


def dist_top_level_paths(dist) -> list[str]:
    """Where a distribution's importable top-level packages and modules live. A wheel lists
    its files (RECORD); Debian's packages often ship an egg-info without one (python3-click,
    python3-prometheus-client), so its top_level.txt, or else its own name, is looked up."""
    import importlib.util
    tops = {str(f).split("/")[0] for f in dist.files or ()}
    tops = {t.removesuffix(".py") for t in tops
            if not t.endswith((".dist-info", ".egg-info", ".pth")) and t not in ("..", "__pycache__")}
    if not tops:
        listed = dist.read_text("top_level.txt") or dist.metadata["Name"].replace("-", "_")
        tops = {t.strip() for t in listed.split() if t.strip()}
    paths = []
    for top in sorted(t for t in tops if t.isidentifier()):
        spec = importlib.util.find_spec(top)
        if spec is None or spec.origin in (None, "built-in", "frozen"):
            continue
        origin = spec.origin
        paths.append(os.path.dirname(origin) if origin.endswith("__init__.py") else origin)
    assert paths, f"cannot find the files of {dist.metadata['Name']}"
    return paths


@pytest.fixture(scope="module")
def lent_deps(tmp_path_factory) -> str:
    """A directory holding only beanwatch's runtime dependencies (click, pyroute2, ...),
    linked from this interpreter, for PYTHONPATH: the console script of a --no-deps
    install can then run offline, while observer itself can only come from the venv
    under test (neither the checkout nor this venv is on its path)."""
    from importlib import metadata
    d = tmp_path_factory.mktemp("deps")
    for name in runtime_requirements():
        for src in dist_top_level_paths(metadata.distribution(name)):
            dst = d / os.path.basename(src)
            if not dst.exists():
                os.symlink(src, dst)
    return str(d)


def clean_env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PYTHON", "VIRTUAL_ENV", "_BEANWATCH"))}
    env.update(extra)
    return env


# --- the systemd unit ---------------------------------------------------------------------

def unit_settings(path: str = UNIT) -> dict[str, list[str]]:
    """Key -> values ("Section.Key"), repeated keys kept in order, as systemd reads them."""
    out: dict[str, list[str]] = {}
    section = None
    for raw in open(path):
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        out.setdefault(f"{section}.{key.strip()}", []).append(value.strip())
    return out


def one(settings, key) -> str:
    values = settings.get(key, [])
    assert len(values) == 1, f"{key}: {values}"
    return values[0]


@pytest.fixture(scope="module")
def verifiable_unit(tmp_path_factory) -> str:
    """The unit with ExecStart pointing at a stub, since verify checks that it exists.
    Kept under the name beanwatch.service: verify reports by unit name."""
    d = tmp_path_factory.mktemp("unit")
    stub = d / "bin" / "beanwatch"
    stub.parent.mkdir()
    stub.write_text("#!/bin/sh\nexit 0\n")
    stub.chmod(0o755)
    text = open(UNIT).read()
    assert text.count("ExecStart=/usr/local/bin/beanwatch ") == 1
    (d / "beanwatch.service").write_text(text.replace("ExecStart=/usr/local/bin/beanwatch ",
                                                      f"ExecStart={stub} "))
    return str(d / "beanwatch.service")


def test_systemd_analyze_verify_passes_without_a_warning(verifiable_unit):
    tool = require_tool("systemd-analyze", "systemd")
    res = run([tool, "verify", verifiable_unit])
    # verify exits 0 even for unknown keys and unparsable values: read what it says.
    about_us = [line for line in (res.stdout + res.stderr).splitlines()
                if "beanwatch" in line]
    assert res.returncode == 0, res.stdout + res.stderr
    assert about_us == []


def test_systemd_analyze_verify_would_catch_a_typo(tmp_path, verifiable_unit):
    """The check above can fail: a misspelt key is reported."""
    tool = require_tool("systemd-analyze", "systemd")
    broken = tmp_path / "beanwatch.service"
    broken.write_text(open(verifiable_unit).read().replace("ProtectHome=yes", "ProtectHomes=yes"))
    res = run([tool, "verify", str(broken)])
    assert "Unknown key 'ProtectHomes'" in res.stdout + res.stderr


def test_systemd_security_exposure_stays_low(verifiable_unit):
    """systemd's own review of the sandboxing: 3.9 ("OK") when written; a change that
    loosens it past 4.5 fails here."""
    tool = require_tool("systemd-analyze", "systemd")
    res = run([tool, "security", "--offline=true", "--threshold=45", verifiable_unit])
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr


def test_unit_grants_exactly_the_documented_capabilities():
    s = unit_settings()
    assert set(one(s, "Service.CapabilityBoundingSet").split()) == UNIT_CAPABILITIES
    # A root service: ambient capabilities would add nothing.
    assert "Service.AmbientCapabilities" not in s
    assert "Service.User" not in s and "Service.DynamicUser" not in s
    for cap in UNIT_CAPABILITIES:
        assert re.search(rf"^#\s+{cap}\s+\S", open(UNIT).read(), re.M), f"{cap} is not explained"


def seconds(value: str) -> float:
    m = re.fullmatch(r"(\d+(?:\.\d+)?)(ms|s|min)?", value)
    assert m, f"not a simple time span: {value}"
    return float(m.group(1)) * {"ms": 0.001, "s": 1, None: 1, "min": 60}[m.group(2)]


def test_unit_is_notify_with_a_watchdog_and_a_stop_timeout_above_the_hooks():
    """READY=1 marks the probes attached; the loop feeds the watchdog; a stop that lands
    while an on-action hook runs (for at most the largest --hook-timeout) still ends
    cleanly; a death by SIGHUP is restarted."""
    from observer.app.cli import watch
    s = unit_settings()
    assert one(s, "Service.Type") == "notify"
    assert one(s, "Service.NotifyAccess") == "main"
    hook_max = next(p for p in watch.params if p.name == "hook_timeout").type.max
    assert seconds(one(s, "Service.TimeoutStopSec")) >= hook_max + 10
    assert seconds(one(s, "Service.WatchdogSec")) >= 10
    assert one(s, "Service.Restart") == "on-failure"
    assert "SIGHUP" in one(s, "Service.RestartForceExitStatus").split()


# Every system call seen under `strace -f -c` of `beanwatch check`, `beanwatch status`, a
# bcc compile with a ctypes ring-buffer callback, a taskstats query, mlockall and a pidfd
# signal, plus what attaching (bpf, perf_event_open, ioctl) and mounting tracefs take.
BEANWATCH_SYSCALLS = (
    "access arch_prctl bind bpf brk chdir close close_range dup dup2 epoll_create1 "
    "epoll_ctl epoll_wait execve fcntl futex getcwd getdents64 getegid geteuid getgid "
    "getpeername getpid getrandom getsockname getsockopt gettid getuid ioctl lseek "
    "memfd_create mlockall mmap mount mprotect mremap munmap newfstatat openat "
    "perf_event_open pidfd_open pidfd_send_signal pipe2 pread64 prlimit64 read readlink "
    "recvfrom rseq rt_sigaction rt_sigprocmask sendto set_robust_list set_tid_address "
    "setsockopt socket socketpair statfs sysinfo uname vfork wait4 write clock_nanosleep "
    "kill setsid mkdir rmdir").split()


def expand_syscall_group(tool: str, name: str, seen: set[str]) -> set[str]:
    if not name.startswith("@"):
        return {name}
    if name in seen:
        return set()
    seen.add(name)
    res = run([tool, "syscall-filter", "--no-pager", name])
    assert res.returncode == 0, res.stderr
    out = set()
    for line in res.stdout.splitlines()[1:]:   # the first line is the group itself
        item = line.strip()
        if item and not item.startswith("#"):
            out |= expand_syscall_group(tool, item, seen)
    return out


def test_syscall_filter_allows_every_call_beanwatch_makes():
    tool = require_tool("systemd-analyze", "systemd")
    allowed, seen = set(), set()
    for item in one(unit_settings(), "Service.SystemCallFilter").split():
        allowed |= expand_syscall_group(tool, item, seen)
    assert set(BEANWATCH_SYSCALLS) - allowed == set()


def test_unit_runs_the_documented_command():
    s = unit_settings()
    start = one(s, "Service.ExecStart").split()
    assert start[:2] == ["/usr/local/bin/beanwatch", "watch"]
    assert start[start.index("--config") + 1] == "/etc/beanwatch/beanwatch.toml"
    assert "--json" in start
    from observer.app.cli import cli
    params = cli.commands["watch"].make_context("watch", start[2:]).params   # parsed, not run
    assert params["config_path"] == "/etc/beanwatch/beanwatch.toml" and params["as_json"]
    assert one(s, "Service.ExecReload") == "/bin/kill -HUP $MAINPID"
    assert one(s, "Service.Restart") == "on-failure"
    assert one(s, "Install.WantedBy") == "multi-user.target"


def test_unit_sandbox_leaves_beanwatch_what_it_uses():
    s = unit_settings()
    assert one(s, "Service.ProtectSystem") == "strict"
    assert "/sys/fs/cgroup" in one(s, "Service.ReadWritePaths").split()
    # the state directory beanwatch writes is the one systemd makes, and outlives a crash
    assert "/run/" + one(s, "Service.RuntimeDirectory") == DEFAULT_STATE_DIR
    assert one(s, "Service.RuntimeDirectoryPreserve") == "yes"
    assert one(s, "Service.OOMScoreAdjust") == str(OOM_SCORE_ADJ)
    assert one(s, "Service.LimitMEMLOCK") == "infinity"
    assert one(s, "Service.NoNewPrivileges") == "yes"
    assert one(s, "Service.MemoryDenyWriteExecute") == "yes"
    assert set(one(s, "Service.RestrictAddressFamilies").split()) == {
        "AF_UNIX", "AF_NETLINK", "AF_INET", "AF_INET6"}
    assert {"bpf", "perf_event_open"} <= set(one(s, "Service.SystemCallFilter").split())
    # each of these would break beanwatch (see the unit's comments)
    for key in ("ProtectKernelModules", "ProtectKernelTunables", "ProtectKernelLogs",
                "ProtectControlGroups", "ProtectProc", "ProcSubset", "PrivateUsers",
                "PrivateNetwork", "DynamicUser"):
        assert f"Service.{key}" not in s, key


# --- the example config --------------------------------------------------------------------

def uncommented(text: str) -> str:
    """The example with its commented-out tables and keys switched on."""
    out = []
    for line in text.splitlines():
        if re.match(r"# (\[cgroup\.|[a-z]+ = )", line):
            line = line[2:]
        out.append(line)
    return "\n".join(out) + "\n"


def test_example_config_parses_as_is_and_with_every_example_switched_on():
    text = open(EXAMPLE).read()
    live = parse_config(text, source=EXAMPLE)
    assert [c.cgroup for c in live.cgroups] == ["system.slice"]   # every systemd host has it
    assert live.cgroups[0].limit.action.value == "report"   # safe out of the box
    assert live.interval == 1.0
    every = parse_config(uncommented(text), source=EXAMPLE)
    assert {c.limit.action.value for c in every.cgroups} == {"report", "freeze", "kill"}
    assert len(every.cgroups) == 3


def test_example_config_documents_every_key_the_parser_takes():
    from observer.host import configfile
    text = open(EXAMPLE).read()
    for key in configfile._DEFAULT_KEYS + configfile._CGROUP_KEYS:
        assert re.search(rf"^#?\s*{key}\b", text, re.M), key


# --- scripts/install.sh into a temporary root ------------------------------------------------

@pytest.fixture(scope="module")
def installed(tmp_path_factory, lent_deps):
    """Two runs of install.sh into one DESTDIR, offline; the config edited in between."""
    root = tmp_path_factory.mktemp("destdir")
    fake = tmp_path_factory.mktemp("fakebin")
    calls = fake / "calls"
    (fake / "systemctl").write_text(f'#!/bin/sh\necho "$*" >> {calls}\n')
    (fake / "systemctl").chmod(0o755)
    env = clean_env(DESTDIR=str(root), PYTHON=BASE_PYTHON, PIP_NO_INDEX="1", PIP_NO_DEPS="1",
                    PYTHONPATH=lent_deps, PATH=f"{fake}:{os.environ['PATH']}")
    # `make install` with DESTDIR: the Makefile's own recipe, which then skips the host set-up
    first = run(["make", "-s", "-C", ROOT, "install", f"DESTDIR={root}"], env=env, cwd="/")
    assert first.returncode == 0, first.stdout + first.stderr
    config = root / "etc/beanwatch/beanwatch.toml"
    config.write_text(config.read_text() + "# edited by the operator\n")
    second = run(["bash", INSTALL], env=env, cwd="/")
    assert second.returncode == 0, second.stdout + second.stderr
    return root, first, second, calls, env


def mode(path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def test_install_lays_out_the_tree(installed):
    root, first, _, _, _ = installed
    venv = root / "opt/beanwatch/venv"
    assert "include-system-site-packages = true" in (venv / "pyvenv.cfg").read_text()
    link = root / "usr/local/bin/beanwatch"
    assert os.readlink(link) == "../../../opt/beanwatch/venv/bin/beanwatch"
    assert os.path.samefile(link, venv / "bin/beanwatch")
    unit = root / "etc/systemd/system/beanwatch.service"
    assert unit.read_text() == open(UNIT).read() and mode(unit) == 0o644
    assert mode(root / "etc/beanwatch") == 0o755
    config = root / "etc/beanwatch/beanwatch.toml"
    assert mode(config) == 0o600
    if os.geteuid() == 0:
        assert os.stat(config).st_uid == 0 and os.stat(config).st_gid == 0
    assert (root / "etc/beanwatch/beanwatch.toml.example").read_text() == open(EXAMPLE).read()
    completion = root / "usr/local/share/bash-completion/completions/beanwatch"
    assert "complete -o nosort -F _beanwatch_completion beanwatch" in completion.read_text()
    assert "wrote /etc/beanwatch/beanwatch.toml" in first.stdout


def test_install_is_idempotent_and_keeps_the_operators_config(installed):
    root, _, second, _, _ = installed
    config = root / "etc/beanwatch/beanwatch.toml"
    assert config.read_text().endswith("# edited by the operator\n")
    assert mode(config) == 0o600
    assert "kept /etc/beanwatch/beanwatch.toml" in second.stdout
    assert "created" not in second.stdout   # the venv was reused


def test_install_under_destdir_leaves_systemd_alone(installed):
    _, first, second, calls, _ = installed
    assert not calls.exists()
    assert "no daemon-reload" in second.stdout


def test_installed_command_runs_from_another_directory(installed, tmp_path):
    root, _, _, _, env = installed
    res = run([str(root / "usr/local/bin/beanwatch"), "--version"], env=env, cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == f"beanwatch, version {observer.__version__}"
    res = run([str(root / "opt/beanwatch/venv/bin/python"), "-c",
               "import observer.kernel.loader; print(observer.kernel.loader.probe_source())"],
              env=env, cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == str(
        root / "opt/beanwatch/venv/lib" / f"python{sys.version_info.major}.{sys.version_info.minor}"
        / "site-packages/observer/probes/accounting.c")


SETUP = os.path.join(ROOT, "scripts", "setup-host.sh")
# Tools only the tests, the demo's checks and the benchmarks use: never on a production host.
TEST_TOOLS = {"stress-ng", "prometheus", "tmux", "strace", "gcc", "gcc-multilib", "bpftool",
              "make"}


def setup_packages(*args) -> list[str]:
    res = run(["bash", SETUP, *args, "--list"], env=clean_env(), cwd="/")
    assert res.returncode == 0, res.stderr
    return res.stdout.split()


def test_runtime_setup_installs_no_test_tool():
    runtime, full = setup_packages("--runtime"), setup_packages()
    assert {"python3-bpfcc", "libbpfcc", "python3-venv"} <= set(runtime)
    assert not set(runtime) & TEST_TOOLS, set(runtime) & TEST_TOOLS
    # the test host gets everything: `make test` and `make demo` work on a fresh host
    assert set(runtime) < set(full) and TEST_TOOLS <= set(full)
    res = run(["bash", SETUP, "--bogus"], env=clean_env(), cwd="/")
    assert res.returncode == 2 and "unknown argument" in res.stderr


def make_dry_run(target: str, *args) -> list[str]:
    res = run(["make", "-n", "-C", ROOT, target, *args], env=clean_env(), cwd="/")
    assert res.returncode == 0, res.stderr
    return [line for line in res.stdout.splitlines() if not line.startswith("make")]


def test_make_install_sets_up_the_runtime_only():
    lines = make_dry_run("install")
    setups = [line for line in lines if "setup-host.sh" in line]
    assert setups and all("setup-host.sh --runtime" in line for line in setups), lines
    assert any("scripts/install.sh" in line for line in lines)
    # and the test and demo targets the whole test set (no --runtime)
    for target in ("test", "demo"):
        lines = make_dry_run(target)
        assert any(re.search(r"setup-host\.sh\s*$", line) for line in lines), (target, lines)
        assert not any("--runtime" in line for line in lines), (target, lines)


def test_install_refuses_a_relative_destdir(tmp_path):
    res = run(["bash", INSTALL], env=clean_env(DESTDIR="relative/root"), cwd=tmp_path)
    assert res.returncode == 1
    assert "DESTDIR must be an absolute path" in res.stderr
    assert not (tmp_path / "relative").exists()


# --- the wheel ------------------------------------------------------------------------------

def _ignore(_dir, names):
    junk = {".venv", ".git", "build", "dist", ".hypothesis", ".pytest_cache", "__pycache__"}
    return [n for n in names if n in junk or n.endswith(".egg-info")]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> str:
    """Built as `pip wheel --no-deps --no-build-isolation` from a clean copy of the tree:
    setuptools' build/ directory in the checkout could hold files deleted since."""
    work = tmp_path_factory.mktemp("wheel")
    shutil.copytree(ROOT, work / "src", ignore=_ignore, symlinks=True)
    res = run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
               "--disable-pip-version-check", "-q", "-w", str(work / "dist"), str(work / "src")],
              env=clean_env(PIP_NO_INDEX="1"))
    assert res.returncode == 0, res.stdout + res.stderr
    wheels = list((work / "dist").glob("beanwatch-*.whl"))
    assert len(wheels) == 1, wheels
    return str(wheels[0])


def test_wheel_carries_the_probes_and_every_module(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    for probe in ("accounting.c", "observer.h", "__init__.py"):
        assert f"observer/probes/{probe}" in names
    with zipfile.ZipFile(wheel) as z:
        assert z.read("observer/probes/accounting.c") == open(
            os.path.join(ROOT, "probes", "accounting.c"), "rb").read()
    modules = {os.path.relpath(os.path.join(d, f), ROOT)
               for d, _, files in os.walk(os.path.join(ROOT, "observer")) for f in files
               if f.endswith(".py")}
    assert len(modules) > 20 and modules <= names, sorted(modules - names)
    tops = {n.split("/")[0] for n in names}
    assert tops == {"observer", f"beanwatch-{observer.__version__}.dist-info"}, tops


def test_wheel_metadata_entry_point_and_dependencies(wheel):
    with zipfile.ZipFile(wheel) as z:
        info = f"beanwatch-{observer.__version__}.dist-info"
        entry_points = z.read(f"{info}/entry_points.txt").decode()
        metadata = z.read(f"{info}/METADATA").decode()
    assert re.search(r"^\[console_scripts\]\s*\nbeanwatch = observer\.app\.cli:main$", entry_points, re.M)
    requires = re.findall(r"^Requires-Dist: ([A-Za-z0-9_.-]+)(.*)$", metadata, re.M)
    plain = {name.lower().replace("_", "-") for name, rest in requires if "extra ==" not in rest}
    assert plain == {n.lower().replace("_", "-") for n in runtime_requirements()}
    assert {"click", "pyroute2"} <= plain and "bcc" not in plain   # bcc is the distribution's
    assert f"\nVersion: {observer.__version__}\n" in metadata


@pytest.fixture(scope="module")
def fresh_venv(tmp_path_factory, wheel) -> str:
    d = tmp_path_factory.mktemp("fresh") / "venv"
    res = run([BASE_PYTHON, "-m", "venv", "--system-site-packages", str(d)], env=clean_env())
    assert res.returncode == 0, res.stderr
    res = run([str(d / "bin/python"), "-m", "pip", "install", "--no-deps", "--no-index",
               "--disable-pip-version-check", "-q", wheel], env=clean_env())
    assert res.returncode == 0, res.stdout + res.stderr
    return str(d)


def test_installed_wheel_finds_its_probes_from_any_directory(fresh_venv, tmp_path):
    res = run([os.path.join(fresh_venv, "bin/python"), "-c",
               "import observer, observer.kernel.loader as l; print(observer.__file__); print(l.probe_source())"],
              cwd=tmp_path, env=clean_env())
    assert res.returncode == 0, res.stderr
    module, probe = res.stdout.split()
    assert module.startswith(fresh_venv + "/") and probe.startswith(fresh_venv + "/")
    assert open(probe).read() == open(os.path.join(ROOT, "probes", "accounting.c")).read()


def test_console_script_version_and_print_bpf(fresh_venv, lent_deps, tmp_path):
    exe = os.path.join(fresh_venv, "bin/beanwatch")
    env = clean_env(PYTHONPATH=lent_deps)
    res = run([exe, "--version"], cwd=tmp_path, env=env)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == f"beanwatch, version {observer.__version__}"
    # the hidden --print-bpf reads the probe source through the package, needs no root
    res = run([exe, "watch", "--print-bpf"], cwd=tmp_path, env=env)
    assert res.returncode == 0, res.stderr
    assert res.stdout.rstrip("\n") == open(os.path.join(ROOT, "probes", "accounting.c")).read().rstrip("\n")


@pytest.mark.parametrize("shell, marker", [
    ("bash", "complete -o nosort -F _beanwatch_completion beanwatch"),
    ("zsh", "#compdef beanwatch"),
    ("fish", "complete --no-files --command beanwatch"),
])
def test_completion_script_is_produced(fresh_venv, lent_deps, tmp_path, shell, marker):
    res = run([os.path.join(fresh_venv, "bin/beanwatch")], cwd=tmp_path,
              env=clean_env(PYTHONPATH=lent_deps, _BEANWATCH_COMPLETE=f"{shell}_source"))
    assert res.returncode == 0, res.stderr
    assert marker in res.stdout


@pytest.mark.parametrize("words, cword, expected", [
    ("beanwatch wa", 1, {"plain,watch"}),
    ("beanwatch watch --act", 2, {"plain,--action"}),
    ("beanwatch watch --action ", 3, {"plain,report", "plain,freeze", "plain,kill"}),
])
def test_bash_completion_answers(fresh_venv, lent_deps, tmp_path, words, cword, expected):
    """What the bash function asks the command for, and the command's answers."""
    res = run([os.path.join(fresh_venv, "bin/beanwatch")], cwd=tmp_path,
              env=clean_env(PYTHONPATH=lent_deps, _BEANWATCH_COMPLETE="bash_complete",
                            COMP_WORDS=words, COMP_CWORD=str(cword)))
    assert res.returncode == 0, res.stderr
    assert set(res.stdout.split()) == expected
