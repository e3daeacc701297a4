"""--vm-limit without a kernel: parsing, the config keys, nesting, the start-time refusal
where the kernel cannot enforce it, and app/vmlimits against a fake of the kernel maps."""

from __future__ import annotations

import inspect

import pytest
from click.testing import CliRunner

import observer.app.cli as cli_module
import observer.app.runtime as runtime_module
from observer.app.cli import cli
from observer.app.vmlimits import VmLimits, subtree
from observer.core.config import (ConfigError, VmLimit, check_vm_limits_disjoint,
                                  parse_vm_limit_spec)
from observer.core.model import Account
from observer.core.sizes import PAGE_SIZE
from observer.host.configfile import ConfigFileError, parse_config
from observer.kernel import loader

MiB = 1 << 20


# -- parsing ---------------------------------------------------------------------------------

def test_vm_limit_spec_parses_like_limit_and_names_its_option():
    spec = parse_vm_limit_spec("job=1G:768M")
    assert (spec.cgroup, spec.limit, spec.barrier) == ("job", 1 << 30, 768 * MiB)
    with pytest.raises(ConfigError, match=r"bad --vm-limit 'job=64'.*bytes"):
        parse_vm_limit_spec("job=64")
    with pytest.raises(ConfigError, match="--vm-limit.*barrier"):
        parse_vm_limit_spec("job=1G:2G")
    with pytest.raises(ConfigError, match="expected CGROUP=SIZE"):
        parse_vm_limit_spec("1G")


def test_vm_limits_may_not_nest():
    check_vm_limits_disjoint(["/a", "/b", "/ab"])
    with pytest.raises(ConfigError, match="nest"):
        check_vm_limits_disjoint(["/a", "/a/b"])
    with pytest.raises(ConfigError, match="nest"):
        check_vm_limits_disjoint(["/", "/x"])


def test_config_takes_vm_limit_with_or_without_limit():
    cfg = parse_config('[cgroup.a]\nvm_limit = "1G"\nvm_barrier = "900M"\n'
                       '[cgroup.b]\nlimit = "2G"\nvm_limit = "3G"\n')
    assert cfg.vm_limits() == [("a", VmLimit(1 << 30, 900 * MiB)), ("b", VmLimit(3 << 30))]
    assert [c for c, _ in cfg.limits()] == ["b"]     # a has no --limit of its own


@pytest.mark.parametrize("text, fragment", [
    ('[cgroup.a]\nvm_barrier = "1G"\n', "vm_barrier needs a vm_limit"),
    ('[cgroup.a]\nvm_limit = "1G"\nvm_barrier = "2G"\n', "vm_barrier 2G is above vm_limit 1G"),
    ('[cgroup.a]\nvm_limit = 64\n', "vm_limit 64 is 64 bytes"),
    ('[cgroup.a]\nvm_limit = "1G"\nbarrier = "1G"\n', "barrier needs a limit"),
    ('[cgroup.a]\naction = "kill"\n', "limit is required"),
])
def test_config_refuses_bad_vm_limits(text, fragment):
    with pytest.raises(ConfigFileError) as err:
        parse_config(text)
    assert fragment in str(err.value)


# -- never silently unenforced ---------------------------------------------------------------

def invoke(*args):
    if "mix_stderr" in inspect.signature(CliRunner.__init__).parameters:
        runner = CliRunner(mix_stderr=False)
    else:
        runner = CliRunner()
    return runner.invoke(cli, list(args), prog_name="beanwatch")


def test_vm_limit_where_refusal_is_unavailable_exits_2_in_one_line(monkeypatch, tmp_path):
    reached = []
    monkeypatch.setattr(cli_module, "require_root", lambda: None)
    monkeypatch.setattr(runtime_module, "refusal_problem",
                        lambda: "bpf is not an active LSM (lockdown,capability)")
    for name in ("open_host", "run_watch", "build_session"):
        monkeypatch.setattr(runtime_module, name, lambda *a, _n=name, **k: reached.append(_n))
    res = invoke("watch", "--vm-limit", "job=1G")
    assert res.exit_code == 2, res.output
    lines = res.stderr.strip().splitlines()
    assert lines == ["beanwatch: --vm-limit cannot be enforced here: bpf is not an active "
                     "LSM (lockdown,capability)"]
    assert reached == []
    # the same from a config file's vm_limit
    import os
    path = tmp_path / "c.toml"
    path.write_text('[cgroup.job]\nvm_limit = "1G"\n')
    os.chmod(path, 0o600)
    monkeypatch.setattr("observer.host.configfile.check_file", lambda *a, **k: None)
    res = invoke("watch", "--config", str(path))
    assert res.exit_code == 2 and "cannot be enforced" in res.stderr, res.output


def test_refusal_problem_reads_the_active_lsms():
    assert "boot with lsm=lockdown,capability,bpf" in loader.refusal_problem(
        lsms=["lockdown", "capability"])


def test_refusal_problem_names_missing_hooks():
    class NoHooks:
        def func_id(self, name):
            return None
    problem = loader.refusal_problem(btf=NoHooks(), lsms=["capability", "bpf"])
    assert problem == "the kernel has no BPF LSM hook for mmap_file, mmap_addr"


# -- the session side, against a fake of the maps --------------------------------------------

class FakeMaps:
    """The kernel side of refuse.h: leaf counters, the mapping, ctl and cnt per limit.
    change() is what leaf_add_vm does: the leaf's count, and its limit's delta if mapped."""

    def __init__(self):
        self.leaf = {}
        self.mapped = {}
        self.ctl = {}
        self.cnt = {}
        self.during_read = None   # a change made between the two delta reads, once

    def change(self, leaf, pages):
        self.leaf[leaf] = self.leaf.get(leaf, 0) + pages
        lid = self.mapped.get(leaf)
        if lid in self.cnt:
            self.cnt[lid][0] += pages

    def set_vm_limit(self, lid, limit, barrier, base):
        self.cnt.setdefault(lid, [0, 0, 0, 0])
        self.ctl[lid] = (limit, barrier, base)

    def drop_vm_limit(self, lid):
        self.ctl.pop(lid, None)
        self.cnt.pop(lid, None)

    def map_vm_leaf(self, leaf, lid):
        if lid is None:
            self.mapped.pop(leaf, None)
        else:
            self.mapped[leaf] = lid

    def vm_delta(self, lid):
        return self.cnt[lid][0]

    def leaf_vm(self, leaf):
        if self.during_read:
            change, self.during_read = self.during_read, None
            self.change(*change)
        return self.leaf.get(leaf, 0)

    def vm_limit_counts(self):
        return {lid: tuple(c) for lid, c in self.cnt.items()}

    def total(self, lid):
        return self.ctl[lid][2] + self.cnt[lid][0]


TREE = {1: "/", 10: "/job", 11: "/job/a", 12: "/job/b", 20: "/other", 21: "/jobs"}


def test_subtree_is_the_cgroup_and_what_is_under_it():
    assert subtree(TREE, "/job") == {10, 11, 12}
    assert subtree(TREE, "/") == set(TREE)


def test_the_kernel_total_counts_the_subtree_with_its_seed_and_stays_exact():
    k = FakeMaps()
    k.change(11, 100)           # counted before beanwatch mapped it
    k.change(20, 999)           # elsewhere
    records = []
    vm = VmLimits([("/job", VmLimit(1 << 30, 512 * MiB))], k, records.append, lambda: 5.0)
    vm.sync(TREE, {12: 50})
    assert k.mapped == {10: 10, 11: 10, 12: 10}
    assert k.total(10) == 150
    assert k.ctl[10][:2] == ((1 << 30) // PAGE_SIZE, (512 * MiB) // PAGE_SIZE)
    k.change(12, 30)            # after: the kernel adds it to the total by itself
    k.change(20, 5)
    assert k.total(10) == 180


def test_a_change_during_the_rebase_is_counted_once():
    k = FakeMaps()
    k.change(11, 100)
    vm = VmLimits([("/job", VmLimit(1 << 30))], k, lambda r: None, lambda: 0.0)
    k.during_read = (11, 7)     # lands between the two reads of the delta
    vm.sync(TREE, {})
    assert k.total(10) == 107


def test_a_new_cgroup_under_the_vm_limit_is_mapped_and_its_pages_counted():
    k = FakeMaps()
    vm = VmLimits([("/job", VmLimit(1 << 30))], k, lambda r: None, lambda: 0.0)
    vm.sync(TREE, {})
    k.change(13, 40)            # made before the next walk: not mapped yet
    vm.sync({**TREE, 13: "/job/c"}, {})
    assert k.mapped[13] == 10 and k.total(10) == 40
    vm.sync(TREE, {})           # removed again
    assert 13 not in k.mapped


def test_refusals_count_in_failcnt_and_one_record_per_tick_tells_them():
    k = FakeMaps()
    records = []
    vm = VmLimits([("/job", VmLimit(1 << 30, 512 * MiB))], k, records.append, lambda: 7.0)
    vm.sync(TREE, {})
    acc = Account("/job", 10, None)
    vm.collect([acc])
    assert records == [] and acc.failcnt == 0
    k.cnt[10][1:] = [3, 3 * 256, 2]     # three refusals of 1 MiB, two growths past the barrier
    vm.collect([acc])
    vm.collect([acc])                   # nothing new: no record
    assert acc.failcnt == 5
    assert len(records) == 1
    rec = records[0]
    assert (rec["event"], rec["cgroup"], rec["refusals"], rec["over_vm_barrier"]) == \
        ("refused", "/job", 3, 2)
    assert rec["refused_bytes"] == 3 * 256 * PAGE_SIZE
    assert rec["vm_limit_bytes"] == 1 << 30 and rec["failcnt"] == 5


def test_a_recreated_cgroup_starts_afresh():
    k = FakeMaps()
    vm = VmLimits([("/job", VmLimit(1 << 30))], k, lambda r: None, lambda: 0.0)
    vm.sync(TREE, {})
    tree = {1: "/", 30: "/job"}
    vm.sync(tree, {})
    assert 10 not in k.ctl and k.mapped == {30: 30}


def test_the_refusal_source_is_pasted_in_only_with_vm_limits():
    """bcc rewrites map calls only in the main text: refuse.h must not stay an #include."""
    plain, refusing = loader.probe_text(), loader.probe_text(vm_limits=True)
    assert loader.REFUSE_INCLUDE in plain and "LSM_PROBE(mmap_file" not in plain
    assert loader.REFUSE_INCLUDE not in refusing and "LSM_PROBE(mmap_file" in refusing
    with open(loader.probe_source()) as f:
        assert plain == f.read()
