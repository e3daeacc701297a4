"""The stress-ng matrix: no estimate below RSS, and the kill decision matches RSS vs limit.

Each case runs stress-ng (always --oomable, so a killed stressor is not respawned, and
--timeout) in a fresh cgroup, under `beanwatch watch --action kill` and, beside it,
`beanwatch verify`, which samples every process's estimate against /proc.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import os

import pytest

MiB = 1 << 20

# name, stress-ng arguments, limit, killed? (None: as the exact figure says, either way)
CASES = [
    # 2 workers of 64 MiB each (--vm-bytes is shared between them) and their parents, ~140
    # MiB counted once (PSS); 160M was passed only by the RSS sum, which counts stress-ng's
    # shared pages once per process (issue 11): the limit is under the real usage
    ("vm-keep-over", ["--vm", "2", "--vm-bytes", "128M", "--vm-keep"], "120M", True),
    ("vm-keep-under", ["--vm", "1", "--vm-bytes", "64M", "--vm-keep"], "1G", False),
    ("mmap", ["--mmap", "2", "--mmap-bytes", "32M"], "1G", False),
    ("mmapmany", ["--mmapmany", "1"], "1G", False),
    # stress-ng 0.15's brk stressor grows the break by GiBs and touches a little of it: RSS
    # mostly stays near 2 MiB, but in a full suite run it reached 166 MiB (PSS 82) within
    # 0.1 s, and was rightly killed. Either outcome, as long as it follows the exact figure.
    ("brk", ["--brk", "1"], "64M", None),
    # the data segment grows far past the limit but is never touched: slow mode, no kill
    ("brk-notouch", ["--brk", "1", "--brk-notouch"], "192M", False),
    ("bigheap", ["--bigheap", "1"], "64M", True),
    ("mremap", ["--mremap", "1", "--mremap-bytes", "64M"], "1G", False),
    ("mmapfork", ["--mmapfork", "1"], "256M", True),
    ("fork", ["--fork", "4"], "1G", False),
]


@pytest.fixture(scope="module")
def stress_ng():
    exe = shutil.which("stress-ng") or pytest.skip("stress-ng is not installed")
    return exe


def beanwatch(*args):
    exe = shutil.which("beanwatch", path=os.path.dirname(sys.executable)) or "beanwatch"
    return [exe, *args]


@pytest.mark.parametrize("name,args,limit,killed", CASES, ids=[c[0] for c in CASES])
def test_stress_ng(cgroups, watcher, stress_ng, name, args, limit, killed):
    cg = cgroups.make(name)
    w = watcher("--limit", f"{cg}={limit}", "--action", "kill", "--interval", "0.2")
    verify = subprocess.Popen(beanwatch("verify", "--cgroup", cg, "--json", "--interval", "0.1",
                                        "--duration", "9"),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        w.started()
        # verify is attached once it says so: only then may the workload start
        while "verifying" not in (line := verify.stderr.readline()) and line:
            pass
        p = cgroups.spawn(cg, [stress_ng, *args, "--oomable", "--timeout", "4", "--quiet"],
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        code = p.wait(timeout=60)
    finally:
        out, err = verify.communicate(timeout=60)
    records = [json.loads(line) for line in out.splitlines()]
    violations = [r for r in records if r["event"] == "violation"]
    samples = [r for r in records if r["event"] == "verify" and r["processes"]]
    errors = [r for r in records if r["event"] in ("error", "lost")]
    checks = w.of("check", cg)
    actions = w.of("action", cg)
    over = [c for c in checks if c["exact_bytes"] > c["limit_bytes"]]
    if killed is None:
        killed = bool(over)
    assert verify.returncode == 0 and not violations, (violations[:3], errors[:3], err)
    # a stressor killed within verify's first interval leaves no sample; the others must
    assert samples or killed, (
        f"verify saw no process of {name}: stress-ng exited {code}, "
        f"{sum(r['event'] == 'verify' for r in records)} samples, actions {actions[:2]}, "
        f"checks {checks[-2:]}, errors {errors[:3]}: {err}")
    if killed:
        assert actions and actions[0]["action"] == "kill" and actions[0]["ok"], checks[-3:]
        assert code == -9
        assert over, "a kill without an exact check above the limit"
    else:
        assert not actions, actions
        assert not over
        assert code == 0
    if name.startswith("brk"):
        assert any(r["mode"] == "slow" for r in w.of("mode", cg)), "never went slow"
    if name == "brk-notouch":   # never touched: the exact figure stays small
        assert checks and max(c["exact_bytes"] for c in checks) < 192 * MiB
    drift = max((abs(s["drift_bytes"]) for s in samples), default=0)
    print(f"{name}: {len(samples)} samples, max drift {drift / MiB:.1f} MiB, "
          f"{len(checks)} exact checks, switches {w.of('snapshot', cg)[-1]['switches']}")
    assert w.stop() == 0
