"""The house (issue 31 item 4): `stm_lib`'s modules depend on each other one way. Every `import`
and `from ... import` in the package is read with `ast`, at module level and inside functions (a
lazy import is still a dependency), into a graph of modules; the graph has no cycle, and no
module imports from a floor above its own."""
from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "stm_lib"
# lowest first; a module may import its own floor and those below. The command line (`stm_lib.cli`,
# every `*.cli` module) and the package's face (`stm_lib/__init__.py`) are above them all.
FLOORS = [
    ("stm_lib.config", "stm_lib.io", "stm_lib.provenance"),
    ("stm_lib.models",),
    ("stm_lib.data",),
    ("stm_lib.engine", "stm_lib.profile"),
    ("stm_lib.pretrain", "stm_lib.bench"),
    ("stm_lib.book",),
    ("stm_lib.reproduce", "stm_lib.launch", "stm_lib.runpack"),
]


def modules() -> dict[str, Path]:
    out = {}
    for f in sorted(PKG.rglob("*.py")):
        parts = list(f.relative_to(PKG.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = f
    return out


def graph() -> dict[str, dict[str, int]]:
    """module -> {module it imports: line}. `from pkg import name` depends on `pkg.name` when that
    is a module, else on `pkg` itself; a module's own package `__init__`, which Python runs first,
    counts only when imported by name."""
    mods = modules()
    g: dict[str, dict[str, int]] = {m: {} for m in mods}
    for m, f in mods.items():
        pkg = m if f.name == "__init__.py" else m.rpartition(".")[0]
        for node in ast.walk(ast.parse(f.read_text(), str(f))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = pkg.split(".")[: len(pkg.split(".")) - node.level + 1]
                    base = ".".join(up + ([base] if base else []))
                names = [f"{base}.{a.name}" if f"{base}.{a.name}" in mods else base for a in node.names]
            else:
                continue
            for name in names:
                while name and name not in mods:   # a name inside a module: the module
                    name = name.rpartition(".")[0]
                if name and name != m:
                    g[m].setdefault(name, node.lineno)
    return g


def find_cycle(g: dict[str, dict[str, int]]) -> list[str] | None:
    """One cycle of `g` as [a, b, ..., a], or None (depth-first search, three colours)."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        stack.append(m)
        for n in sorted(g.get(m, {})):
            if state.get(n) == 1:
                return stack[stack.index(n):] + [n]
            if n not in state and (c := visit(n)):
                return c
        stack.pop()
        state[m] = 2
        return None

    for m in sorted(g):
        if m not in state and (c := visit(m)):
            return c
    return None


def _floor(m: str) -> int | None:
    if m == "stm_lib" or m == "stm_lib.cli" or m.endswith(".cli"):
        return None   # the command line and the package's face: above every floor
    for i, floor in enumerate(FLOORS):
        if any(m == f or m.startswith(f + ".") for f in floor):
            return i
    raise AssertionError(f"{m} is on no floor: add it to FLOORS in {Path(__file__).name}")


def test_the_walker_sees_lazy_imports_and_finds_a_planted_cycle():
    g = graph()
    assert "stm_lib.models" in g["stm_lib"]   # `from stm_lib import models` inside __getattr__
    assert "stm_lib.book.migrate" not in g["stm_lib.book.result"]   # the circle issue 31 broke
    assert "stm_lib.engine.train" in g["stm_lib.engine.pipeline_bench"]
    planted = {**g, "stm_lib.config": {**g["stm_lib.config"], "stm_lib.book.runner": 1}}
    c = find_cycle(planted)
    assert c and c[0] == c[-1] and "stm_lib.config" in c and "stm_lib.book.runner" in c


def test_stm_lib_imports_have_no_cycle():
    g = graph()
    c = find_cycle(g)
    assert c is None, "import cycle: " + " -> ".join(
        f"{a} (line {g[a][b]})" for a, b in zip(c, c[1:])) + f" -> {c[-1]}"


def test_every_import_points_down_or_level():
    g = graph()
    up = [f"{a} (floor {_floor(a)}) imports {b} (floor {_floor(b)}) at line {line}"
          for a, deps in g.items() for b, line in deps.items()
          if _floor(a) is not None and _floor(b) is not None and _floor(b) > _floor(a)]
    assert not up, "\n".join(up)
