"""The Debian source package (debian/), read statically: dependencies, version, the unit,
the conffile, the maintainer scripts, lintian overrides and the man page. Fast: no build.
The built package itself is checked by tests/integration/test_deb.py."""

from __future__ import annotations

import os
import re
import subprocess

import pytest

import observer
from observer.app.cli import cli

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEBIAN = os.path.join(ROOT, "debian")

# Test tools (setup-host.sh, the tests, the benchmarks) that the package must never pull in.
TEST_TOOLS = {"stress-ng", "gcc", "gcc-multilib", "tmux", "prometheus", "strace", "bpftrace",
              "bpftool", "make", "python3-pytest", "python3-hypothesis", "python3-yaml"}


def read(name: str) -> str:
    with open(os.path.join(DEBIAN, name)) as f:
        return f.read()


def pyproject() -> dict:
    try:
        import tomllib
    except ModuleNotFoundError:  # Python < 3.11
        import tomli as tomllib
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        return tomllib.load(f)


def paragraphs(text: str) -> list[dict[str, str]]:
    """deb822: paragraphs of fields, continuation lines joined."""
    out = []
    for block in re.split(r"\n\s*\n", text.strip()):
        fields: dict[str, str] = {}
        key = None
        for line in block.splitlines():
            if line.startswith("#"):
                continue
            if line[:1] in (" ", "\t") and key:
                fields[key] += "\n" + line.strip()
            else:
                key, _, value = line.partition(":")
                fields[key] = value.strip()
        out.append(fields)
    return out


def relations(field: str) -> list[list[tuple[str, str]]]:
    """'a (>= 1), b | c' -> [[('a', '>= 1')], [('b', ''), ('c', '')]]; substvars dropped."""
    out = []
    for group in field.replace("\n", " ").split(","):
        alts = []
        for alt in group.split("|"):
            m = re.fullmatch(r"\s*([a-z0-9][a-z0-9+.-]+)\s*(?:\(([^)]*)\))?\s*", alt)
            if m:
                alts.append((m.group(1), (m.group(2) or "").strip()))
            else:
                assert re.fullmatch(r"\s*(\$\{[a-z0-9:]+\})?\s*", alt, re.I), f"cannot read {alt!r}"
        if alts:
            out.append(alts)
    return out


@pytest.fixture(scope="module")
def control():
    source, *binaries = paragraphs(read("control"))
    assert [b["Package"] for b in binaries] == ["beanwatch"]
    return source, binaries[0]


def test_source_and_binary_fields(control):
    source, binary = control
    assert source["Source"] == "beanwatch"
    assert binary["Architecture"] == "all"
    build = {name for group in relations(source["Build-Depends"]) for name, _ in group}
    assert {"debhelper-compat", "dh-python", "python3-all", "python3-setuptools",
            "pybuild-plugin-pyproject"} <= build
    assert [("debhelper-compat", "= 13")] in relations(source["Build-Depends"])
    assert "${python3:Depends}" in binary["Depends"] and "${misc:Depends}" in binary["Depends"]


def test_depends_are_debians_own_packages_with_pyprojects_minimums(control):
    _, binary = control
    depends = {g[0][0]: g[0][1] for g in relations(binary["Depends"]) if len(g) == 1}
    assert "python3-bpfcc" in depends   # bcc is not on PyPI: only the distribution has it
    specs = pyproject()["project"]["dependencies"]
    assert specs
    for spec in specs:
        name, minimum = re.fullmatch(r"([A-Za-z0-9_.-]+)>=([0-9.]+)", spec).groups()
        deb = "python3-" + name.lower().replace("_", "-")
        assert deb in depends, f"{deb} (from pyproject's {spec}) is not in Depends"
        assert depends[deb] == f">= {minimum}", f"{deb}: {depends[deb]!r}, pyproject: {spec}"
    assert {"python3-click", "python3-pyroute2", "python3-prometheus-client"} <= set(depends)


def test_no_test_tools_in_any_runtime_relation(control):
    _, binary = control
    for field in ("Depends", "Pre-Depends", "Recommends", "Suggests"):
        names = {name for group in relations(binary.get(field, "")) for name, _ in group}
        assert not names & TEST_TOOLS, f"{field}: {names & TEST_TOOLS}"


def test_kernel_headers_are_a_documented_recommends(control):
    _, binary = control
    headers = [g for g in relations(binary["Recommends"])
               if any(name.startswith("linux-headers") for name, _ in g)]
    assert len(headers) == 1 and ("linux-headers-amd64", "") in headers[0]
    assert "Recommends, not Depends" in read("README.Debian")


def test_changelog_version_is_the_codes():
    top = read("changelog").splitlines()[0]
    m = re.fullmatch(r"beanwatch \(([^)]+)\) [a-z-]+; urgency=[a-z]+", top)
    assert m, top
    assert m.group(1) == observer.__version__
    assert read("source/format").strip() == "3.0 (native)"   # native: no Debian revision


def test_copyright_is_dep5_apache_like_pyproject():
    text = read("copyright")
    assert text.startswith("Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/")
    assert re.search(r"^Files: \*\n(?:.+\n)*?License: Apache-2\.0$", text, re.M)
    with open(os.path.join(ROOT, "pyproject.toml")) as f:
        assert 'license = {text = "Apache-2.0"}' in f.read()


def test_the_packages_unit_is_the_shared_one_with_usr_bin():
    with open(os.path.join(ROOT, "packaging", "beanwatch.service")) as f:
        shared = f.read()
    ours = read("beanwatch.service")
    starts = re.findall(r"^ExecStart=(.*)$", ours, re.M)
    assert len(starts) == 1 and starts[0].split()[:2] == ["/usr/bin/beanwatch", "watch"]
    assert "--config /etc/beanwatch/beanwatch.toml" in starts[0]
    assert ours == shared.replace("ExecStart=/usr/local/bin/beanwatch ",
                                  "ExecStart=/usr/bin/beanwatch "), \
        "debian/beanwatch.service drifted from packaging/beanwatch.service: make debian/beanwatch.service"


def test_rules_use_pybuild_and_install_the_example_as_the_conffile():
    rules = read("rules")
    assert re.search(r"^\tdh \$@ --with python3 --buildsystem=pybuild$", rules, re.M)
    assert os.access(os.path.join(DEBIAN, "rules"), os.X_OK)
    # Every file under /etc is a conffile (dh_installdeb): the example goes there as the config.
    m = re.search(r"^\tinstall -D -m (\d+) packaging/beanwatch\.toml\.example \\\n"
                  r"\t\tdebian/beanwatch/etc/beanwatch/beanwatch\.toml$", rules, re.M)
    assert m, "rules no longer install the config as /etc/beanwatch/beanwatch.toml"
    assert not int(m.group(1), 8) & 0o022   # beanwatch refuses a group/other-writable config
    assert os.path.isfile(os.path.join(ROOT, "packaging", "beanwatch.toml.example"))
    assert "packaging/beanwatch.toml.example" in read("beanwatch.examples").split()


def test_pyproject_ships_the_probes_and_no_tests():
    tool = pyproject()["tool"]["setuptools"]
    packages = tool.get("packages", [])
    assert "observer.probes" in packages and not any(p.startswith("tests") for p in packages)
    assert tool["package-dir"]["observer.probes"] == "probes"
    assert {"*.c", "*.h"} <= set(tool["package-data"]["observer.probes"])


def test_postrm_purges_config_and_ledger_and_keeps_debhelpers_part():
    text = read("beanwatch.postrm")
    res = subprocess.run(["sh", "-n", os.path.join(DEBIAN, "beanwatch.postrm")],
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    purge = re.search(r"^\tpurge\)\n(.*?)^\t\t;;", text, re.M | re.S).group(1)
    assert "rm -rf \"$ledger_dir\" /etc/beanwatch" in purge and "thaw_orphans" in purge
    assert "ledger_dir=/run/beanwatch" in text
    assert text.count("#DEBHELPER#") == 1
    assert os.access(os.path.join(DEBIAN, "beanwatch.postrm"), os.X_OK)


def test_every_lintian_override_has_a_reason():
    lines = read("beanwatch.lintian-overrides").splitlines()
    tags = [i for i, line in enumerate(lines) if line.startswith("beanwatch: ")]
    assert tags
    for i in tags:
        assert i > 0 and lines[i - 1].startswith("# "), f"no comment above {lines[i]!r}"


def test_man_page_names_every_command():
    page = read("beanwatch.1")
    assert read("beanwatch.manpages").split() == ["debian/beanwatch.1"]
    for name in cli.commands:
        assert re.search(rf"^\.B {name}$", page, re.M), f"beanwatch.1 lacks the command {name}"
