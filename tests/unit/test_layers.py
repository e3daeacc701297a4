"""The package's layers, enforced from the source: imports only go downward.

core (pure) <- kernel, host (boundaries, apart from each other) <- output <- app; the
CLI sits on top and nothing imports it. Every module is parsed (ast), so a new import
that breaks the layering fails here, not in a reviewer's memory.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "observer"
RANK = {"core": 0, "kernel": 1, "host": 1, "output": 2, "app": 3}
CLI = "observer.app.cli"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> set[str]:
    """Every observer module that path imports (relative imports resolved, at any depth)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[:len(package.split(".")) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module
            found.add(mod)
            found |= {f"{mod}.{a.name}" for a in node.names}   # "from . import render"
    modules = {module_name(p) for p in PACKAGE.rglob("*.py")}
    return {m for m in found if m in modules and m != name}


def layer(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in RANK else None


MODULES = sorted(PACKAGE.rglob("*.py"))
EDGES = {module_name(p): imports(p) for p in MODULES}


def test_the_parser_sees_the_imports():
    # a test that cannot fail is a defect: the reader must find edges that are known to exist
    assert "observer.core.config" in EDGES["observer.app.runtime"]
    assert "observer.output.render" in EDGES["observer.app.cli"]          # from ..output import render
    assert "observer.kernel.wire" in EDGES["observer.kernel.loader"]      # from . import wire
    assert all(layer(m) for m in EDGES if m.count(".") >= 2), "a module outside the layers"


@pytest.mark.parametrize("module", sorted(EDGES))
def test_imports_go_downward(module):
    mine = layer(module)
    for target in EDGES[module]:
        theirs = layer(target)
        if mine is None or theirs is None:
            continue   # the package's face (__init__, __main__) and the probes
        assert RANK[theirs] < RANK[mine] or theirs == mine, f"{module} imports {target} (up or sideways)"


def test_the_core_imports_no_boundary_and_no_io_library():
    for module, targets in EDGES.items():
        if layer(module) == "core":
            assert {layer(t) for t in targets} <= {"core"}, (module, targets)
    for path in (PACKAGE / "core").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            for n in names:
                assert n.split(".")[0] not in {"subprocess", "socket", "bcc", "pyroute2",
                                               "click", "prometheus_client"}, (path.name, n)


def test_nothing_imports_the_cli():
    users = [m for m, targets in EDGES.items() if CLI in targets]
    assert users == ["observer.__main__"]


def test_demo_uses_the_runtime_not_the_cli():
    assert "observer.app.runtime" in EDGES["observer.app.demo"]
    assert CLI not in EDGES["observer.app.demo"]


def test_every_module_says_what_it_owns():
    for path in MODULES:
        if path.name == "__main__.py":
            continue
        doc = ast.get_docstring(ast.parse(path.read_text()))
        assert doc and doc.strip(), f"{path} has no docstring"


def test_no_two_test_modules_share_a_basename():
    """pytest (rootdir without packages) stops at collection when tests/unit and
    tests/integration hold modules of the same name: `make test` ran nothing, twice."""
    import collections
    import pathlib
    root = pathlib.Path(__file__).resolve().parents[1]
    names = collections.Counter(p.name for p in root.rglob("test_*.py"))
    assert not [n for n, c in names.items() if c > 1]
