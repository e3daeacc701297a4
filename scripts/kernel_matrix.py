#!/usr/bin/env python3
"""`make test-kernels`: beanwatch under each kernel, one guest boot per kernel, and a matrix.

For each kernel (5.10, 6.1, 6.12, sid: see scripts/vm.sh; `host` runs on this host's own kernel
under the host lock) this runs, in one boot:

    beanwatch check --json
    beanwatch demo --json
    pytest -m kernel tests/integration

and prints kernel x (check, demo, tests passed/failed, hook, kill path, slow-mode source,
seconds). The hook, kill path and slow-mode source come from whichever JSON record on check's
(else demo's) stdout has the keys vm_hook, kill_path, slow_source; "?" where none has them.
The matrix is also written as JSON (--json). Exits 1 if any cell failed.

Inside a guest the same script runs with --guest and prints one line "BW-MATRIX {json}".
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import re
import subprocess
import sys
import time
import xml.etree.ElementTree as ET

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MARK = "BW-MATRIX "
KEYS = ("vm_hook", "kill_path", "slow_source")


# --- inside the guest (or on the host for `host`) ---------------------------------------------

def run_step(argv: list[str], timeout: float) -> dict:
    t0 = time.monotonic()
    try:
        p = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                           stdin=subprocess.DEVNULL)
        rc, out, err = p.returncode, p.stdout, p.stderr
    except subprocess.TimeoutExpired as e:
        rc = None
        out = e.stdout.decode(errors="replace") if isinstance(e.stdout, bytes) else (e.stdout or "")
        err = (e.stderr.decode(errors="replace") if isinstance(e.stderr, bytes) else (e.stderr or ""))
        err += f"\n(timed out after {timeout:.0f}s)"
    secs = round(time.monotonic() - t0, 1)
    # the step's own output, for the log the host keeps
    sys.stderr.write(f"=== {' '.join(argv)} -> exit {rc} in {secs}s\n{out}{err}\n")
    sys.stderr.flush()
    return {"rc": rc, "seconds": secs, "stdout": out, "stderr_tail": err[-2000:]}


def json_records(text: str) -> list[dict]:
    recs = []
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("{"):
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if isinstance(rec, dict):
                recs.append(rec)
    return recs


def features(*outputs: str) -> dict:
    """vm_hook, kill_path, slow_source from the first record that has each."""
    found = {k: None for k in KEYS}
    for text in outputs:
        for rec in json_records(text):
            for k in KEYS:
                if found[k] is None and rec.get(k) not in (None, ""):
                    found[k] = str(rec[k])
    return found


def junit_counts(path: str) -> dict:
    counts = {"passed": 0, "failed": 0, "skipped": 0, "failed_names": []}
    try:
        root = ET.parse(path).getroot()
    except (OSError, ET.ParseError):
        return counts
    for case in root.iter("testcase"):
        kinds = {child.tag for child in case}
        if kinds & {"failure", "error"}:
            counts["failed"] += 1
            counts["failed_names"].append(f"{case.get('classname', '')}::{case.get('name', '')}")
        elif "skipped" in kinds:
            counts["skipped"] += 1
        else:
            counts["passed"] += 1
    return counts


def guest(args) -> int:
    venv = os.path.join(ROOT, ".venv", "bin")
    beanwatch, python = os.path.join(venv, "beanwatch"), os.path.join(venv, "python")
    junit = os.path.join(os.environ.get("TMPDIR", "/tmp"), f"bw-kernel-junit-{os.getpid()}.xml")
    res = {"kernel": os.uname().release}
    res["check"] = run_step([beanwatch, "check", "--json"], args.step_timeout)
    res["demo"] = run_step([beanwatch, "demo", "--json"], args.step_timeout)
    res["tests"] = run_step([python, "-m", "pytest", "-m", "kernel", "tests/integration", "-q",
                             "-rA", "-p", "no:cacheprovider", f"--junitxml={junit}",
                             *args.pytest_args], args.tests_timeout)
    res["tests"].update(junit_counts(junit))
    with contextlib.suppress(OSError):
        os.unlink(junit)
    res["features"] = features(res["check"]["stdout"], res["demo"]["stdout"])
    for step in ("check", "demo", "tests"):
        res[step]["stdout"] = res[step]["stdout"][-4000:]
    print(MARK + json.dumps(res), flush=True)
    return 0


# --- on the host ------------------------------------------------------------------------------

def lock_holders(path: str, locks: str = "/proc/locks") -> set[int]:
    """PIDs holding (not waiting for) a flock on the file at path, from /proc/locks."""
    st = os.stat(path)
    dev = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    out = set()
    with open(locks) as f:
        for line in f:
            # "2: FLOCK  ADVISORY  WRITE 11047 fe:00:2147879 0 EOF"; waiters have "->"
            parts = line.split()
            if len(parts) >= 6 and parts[1] == "FLOCK" and parts[5] == dev:
                out.add(int(parts[4]))
    return out


def ancestors(pid: int) -> list[int]:
    """pid's parent, grandparent, ... up to init."""
    out = []
    while pid > 1:
        try:
            with open(f"/proc/{pid}/stat", "rb") as f:
                pid = int(f.read().rsplit(b")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            break
        out.append(pid)
    return out


@contextlib.contextmanager
def locked(path: str | None):
    """Holds the lock at path while running a guest. If one of our ancestors holds it
    already (`flock /tmp/bw-vm.lock make test-kernels`, or CI wrapped in the lock), the lock
    is ours: taking it again would wait for ourselves forever."""
    if not path:
        yield
        return
    with open(path, "a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            mine = lock_holders(path) & set(ancestors(os.getpid()))
            if mine:
                print(f"kernel_matrix: {path} is held by our ancestor {min(mine)}: "
                      "running under it", file=sys.stderr, flush=True)
                yield
                return
            fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


# Guests boot as Debian ships them. Active LSMs then (/sys/kernel/security/lsm, 2026-11-30):
# 5.10 lockdown,capability,yama,apparmor,tomoyo (no bpf: the refusal tests skip);
# 6.1 lockdown,capability,landlock,yama,apparmor,tomoyo,bpf; 6.12 the same plus ipe,ima,evm
# (bpf active: the refusal tests run). `make test-kernels VM_APPEND=<GUEST_LSM>` makes bpf active
# on 5.10 too. The 6.12 guest deaths of session 3 blamed on it were QEMU's multi-threaded TCG
# (see scripts/vm.sh, VM_TCG_THREAD), not the LSM list.
GUEST_LSM = "lsm=lockdown,capability,landlock,yama,apparmor,bpf"


def guest_env() -> dict:
    return dict(os.environ)


def run_kernel(kernel: str, args, log) -> dict:
    guest_argv = [".venv/bin/python", "scripts/kernel_matrix.py", "--guest",
                  "--step-timeout", str(args.step_timeout), "--tests-timeout", str(args.tests_timeout)]
    if args.pytest_args:
        guest_argv += ["--", *args.pytest_args]
    if kernel == "host":
        argv, lock = [os.path.join(ROOT, ".venv/bin/python"), *guest_argv[1:]], args.host_lock
    else:
        argv, lock = [os.path.join(ROOT, "scripts/vm.sh"), kernel, *guest_argv], args.vm_lock
    t0 = time.monotonic()
    with locked(lock):
        t_locked = time.monotonic()
        p = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, env=guest_env())
    secs = round(time.monotonic() - t_locked, 1)
    log.write(f"##### {kernel}: {' '.join(argv)} (waited {t_locked - t0:.0f}s for {lock})\n"
              f"{p.stderr}\n{p.stdout}\n")
    log.flush()
    res = None
    for line in p.stdout.splitlines():
        if line.startswith(MARK):
            res = json.loads(line[len(MARK):])
    row = {"kernel": kernel, "seconds": secs, "runner_rc": p.returncode}
    m = re.search(r"boot ([0-9.]+)s", p.stderr)
    row["boot_seconds"] = float(m.group(1)) if m else None
    if res is None:
        tail = "\n".join((p.stderr or "").strip().splitlines()[-15:])
        row.update(error=f"no result from the guest (runner exit {p.returncode})", error_tail=tail,
                   release=None, check_ok=False, demo_ok=False, passed=0, failed=0, skipped=0,
                   failed_names=[], **{k: None for k in KEYS})
        return row
    t = res["tests"]
    row.update(release=res["kernel"], check_ok=res["check"]["rc"] == 0, demo_ok=res["demo"]["rc"] == 0,
               check_seconds=res["check"]["seconds"], demo_seconds=res["demo"]["seconds"],
               tests_seconds=t["seconds"], tests_rc=t["rc"], passed=t["passed"],
               failed=t["failed"], skipped=t["skipped"], failed_names=t["failed_names"],
               **res["features"])
    if not row["check_ok"]:
        row["check_error"] = res["check"]["stderr_tail"].strip().splitlines()[-1:] or [""]
        row["check_error"] = row["check_error"][0]
    return row


def row_ok(row: dict) -> bool:
    # pytest exits 5 when no test is selected: a kernel with no kernel test run proves nothing
    return (row.get("error") is None and row["check_ok"] and row["demo_ok"]
            and row.get("tests_rc") == 0 and row["failed"] == 0 and row["passed"] > 0)


def table(rows: list[dict]) -> str:
    head = ["kernel", "release", "check", "demo", "tests", "hook", "kill path", "slow source",
            "boot s", "total s", "result"]
    lines = [head]
    for r in rows:
        tests = f"{r['passed']} passed, {r['failed']} failed"
        if r.get("tests_rc") not in (0, 1, None):
            tests += f" (pytest exit {r['tests_rc']})"
        lines.append([r["kernel"], r.get("release") or "?", "ok" if r["check_ok"] else "FAIL",
                      "ok" if r["demo_ok"] else "FAIL", tests,
                      *[r.get(k) or "?" for k in KEYS],
                      "?" if r.get("boot_seconds") is None else f"{r['boot_seconds']:.0f}",
                      f"{r['seconds']:.0f}", "ok" if row_ok(r) else "FAIL"])
    widths = [max(len(str(line[i])) for line in lines) for i in range(len(head))]
    out = ["  ".join(str(c).ljust(w) for c, w in zip(line, widths)).rstrip() for line in lines]
    out.insert(1, "  ".join("-" * w for w in widths))
    for r in rows:
        if r.get("error"):
            out.append(f"{r['kernel']}: {r['error']}\n{r['error_tail']}")
        if r.get("check_error"):
            out.append(f"{r['kernel']}: check: {r['check_error']}")
        for name in r.get("failed_names", []):
            out.append(f"{r['kernel']}: FAILED {name}")
    return "\n".join(out)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--kernels", default=os.environ.get("KERNELS", "5.10 6.1 6.12"),
                    help='space-separated, e.g. "host 5.10 6.1 6.12" (default: $KERNELS or "5.10 6.1 6.12")')
    cache = os.environ.get("BW_VM_CACHE", "/var/lib/beanwatch-vm")
    ap.add_argument("--json", default=os.path.join(cache, "results", "kernel-matrix.json"),
                    help="where to write the matrix as JSON (default: %(default)s)")
    ap.add_argument("--log", default=None, help="full output of every run (default: next to --json)")
    ap.add_argument("--vm-lock", default="/tmp/bw-vm.lock", help="held during each guest run ('' for none)")
    ap.add_argument("--host-lock", default="/tmp/bw-host.lock", help="held during the `host` run ('' for none)")
    ap.add_argument("--step-timeout", type=float, default=900, help="seconds for check and for demo")
    ap.add_argument("--tests-timeout", type=float, default=3600, help="seconds for the pytest run")
    ap.add_argument("--guest", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("pytest_args", nargs="*", help="extra pytest arguments (after --)")
    args = ap.parse_args(argv)
    if args.guest:
        return guest(args)

    kernels = args.kernels.split()
    if not kernels:
        ap.error("no kernels given")
    for k in kernels:
        if k not in ("host", "5.10", "6.1", "6.12", "sid", "bullseye", "bookworm", "trixie", "unstable"):
            ap.error(f"unknown kernel {k!r} (host, 5.10, 6.1, 6.12, sid)")
    if os.geteuid() != 0:
        print("kernel_matrix: run as root", file=sys.stderr)
        return 2
    os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
    log_path = args.log or re.sub(r"(\.json)?$", ".log", args.json, count=1)
    rows = []
    with open(log_path, "w") as log:
        for k in kernels:
            print(f"kernel_matrix: {k} ...", file=sys.stderr, flush=True)
            row = run_kernel(k, args, log)
            rows.append(row)
            print(f"kernel_matrix: {k}: {'ok' if row_ok(row) else 'FAIL'} in {row['seconds']:.0f}s",
                  file=sys.stderr, flush=True)
    for r in rows:
        r["ok"] = row_ok(r)
    doc = {"date": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "host_kernel": os.uname().release,
           "accel": "kvm" if os.environ.get("VM_KVM") == "1" else "tcg", "rows": rows}
    tmp = args.json + ".tmp"
    with open(tmp, "w") as f:
        json.dump(doc, f, indent=1)
        f.write("\n")
    os.replace(tmp, args.json)
    print(table(rows))
    print(f"matrix: {args.json}  full output: {log_path}")
    return 0 if all(r["ok"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
