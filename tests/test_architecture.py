"""tfbig's layering, read from its source: which package may import which, and no circles.

Every import counts, the ones inside functions too (a lazy import is still a dependency),
and so does a module named in a string in a package's `__init__` (`"tfbig.serving.client"` in
a lazy export table, which `importlib` imports on first use). Nothing is imported here: the
modules are parsed.

`ALLOWED` is the README's "Architecture" table. A unit is a package (`tfbig/train/`) or a
top-level module (`tfbig/cli.py`); `LEAVES` are top-level modules that import nothing of tfbig,
so every unit may use them.
"""

from __future__ import annotations

import ast
import pathlib
import re

import pytest

from readme import README

ROOT = pathlib.Path(__file__).resolve().parent.parent / "tfbig"

# Import nothing of tfbig; anything may import them.
LEAVES = ("tfbig", "errors", "atoi", "files", "rundir", "protocol", "lazy", "keras2", "startup", "saved_model",
          "summaries")

# unit -> the units it may import, in the order data flows through them.
ALLOWED = {
    "config": (),
    "distribute": ("config",),
    "data": ("config",),
    "models": ("config", "data"),
    "train": ("config", "data", "models", "distribute"),
    "compress": ("config", "data", "models", "distribute", "train", "export"),
    "export": ("config", "data", "models", "train"),
    "serving": ("config", "distribute", "export"),
    "lifecycle": ("export", "serving"),
    "report": (),
    "monitor": ("export", "serving", "report"),
    "pipeline": ("config", "data", "models", "distribute", "train", "compress", "export", "serving",
                 "lifecycle", "report"),
    "cli": ("config", "data", "models", "distribute", "train", "compress", "export", "serving",
            "lifecycle", "report", "monitor", "pipeline"),
    **{leaf: () for leaf in LEAVES},
}

# (unit, unit it must never reach, through any chain of imports), and why.
NEVER = [
    ("monitor", "train", "a monitor reads logs and exported files: it runs where no training code is"),
    ("serving", "train", "the exported SavedModel is the only contract between training and serving"),
    ("export", "compress", "compression methods sit below export: a compressed run exports like any run"),
]

_MODULE_NAME = re.compile(r"^tfbig(\.\w+)*$")


def module_files() -> dict[str, pathlib.Path]:
    """Dotted module name -> file, for every module of the tfbig package."""
    modules = {}
    for path in sorted(ROOT.rglob("*.py")):
        parts = path.relative_to(ROOT.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join(parts)] = path
    return modules


MODULES = module_files()


def unit_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def _existing(name: str) -> str:
    """`name`, or the nearest enclosing module that exists (an attribute of it was imported)."""
    while name not in MODULES and "." in name:
        name = name.rsplit(".", 1)[0]
    return name


def _imported(module: str, node: ast.AST) -> list[str]:
    """The tfbig modules the statement `node` of `module` imports (explicitly)."""
    if isinstance(node, ast.Import):
        names = [alias.name for alias in node.names]
    elif isinstance(node, ast.ImportFrom):
        if node.level:  # relative: from the package of `module`
            package = module.split(".")
            if not MODULES[module].name == "__init__.py":
                package = package[:-1]
            base = ".".join(package[:len(package) - node.level + 1] + ([node.module] if node.module else []))
        else:
            base = node.module or ""
        # `from a import b` imports the module a.b when there is one, else takes b from a.
        names = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base
                 for alias in node.names]
    elif (isinstance(node, ast.Constant) and isinstance(node.value, str)
          and MODULES[module].name == "__init__.py" and _MODULE_NAME.match(node.value)):
        names = [node.value] if node.value in MODULES else []
    else:
        return []
    return [_existing(name) for name in names if name == "tfbig" or name.startswith("tfbig.")]


def _walk_top_level(node: ast.AST):
    """The nodes that run when the module is imported: all but function bodies."""
    for child in ast.iter_child_nodes(node):
        if not isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            yield child
            yield from _walk_top_level(child)


def import_edges(*, top_level_only: bool = False) -> dict[str, dict[str, int]]:
    """module -> {module it imports explicitly: first line}, without self-imports.

    `top_level_only`: only the imports that run when the module itself is imported."""
    edges = {}
    for module, path in MODULES.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        targets: dict[str, int] = {}
        for node in (_walk_top_level(tree) if top_level_only else ast.walk(tree)):
            if top_level_only and isinstance(node, ast.Constant):
                continue  # a lazy export table imports on first use, not with the package
            for target in _imported(module, node):
                if target != module:
                    targets.setdefault(target, node.lineno)
        edges[module] = targets
    return edges


EDGES = import_edges()
TOP_LEVEL_EDGES = import_edges(top_level_only=True)


def _where(module: str, target: str) -> str:
    return f"{MODULES[module].relative_to(ROOT.parent)}:{EDGES[module][target]} imports {target}"


def test_every_unit_is_placed():
    units = {unit_of(module) for module in MODULES}
    assert units - set(ALLOWED) == set(), "place the new package or module in ALLOWED (and the README)"
    assert set(ALLOWED) - units == set(), "ALLOWED names a package or module that no longer exists"


def test_every_import_is_allowed():
    wrong = [f"{_where(module, target)}, but {unit_of(module)} may import only "
             f"{', '.join(ALLOWED[unit_of(module)]) or 'the leaf modules'}"
             for module, targets in EDGES.items() for target in targets
             if unit_of(target) != unit_of(module) and unit_of(target) not in LEAVES
             and unit_of(target) not in ALLOWED[unit_of(module)]]
    assert wrong == []


def test_the_allowed_table_is_layered():
    """ALLOWED itself has no circle, so following it always goes down."""
    assert _circles({unit: set(allowed) for unit, allowed in ALLOWED.items()}) == []


def test_no_import_circles_between_modules():
    """Neither at import time nor through a function's import: each module can be read alone.

    (A package's `__init__` importing its own modules is not a circle; a module taking a name
    from its package's `__init__` is.)"""
    circles = _circles({module: set(targets) for module, targets in EDGES.items()})
    assert circles == [], "\n".join(" -> ".join(circle) for circle in circles)


@pytest.mark.parametrize("unit, forbidden, why", NEVER, ids=[f"{u}-{f}" for u, f, _ in NEVER])
def test_never_reaches(unit, forbidden, why):
    """No chain of imports from `unit` reaches `forbidden`, counting the package `__init__`s
    that importing a module runs (importing tfbig.export.warmup runs tfbig/export/__init__.py,
    though only its own top-level imports: its lazy names are imported by who asks for them)."""
    chains = {(module, True): [module] for module in MODULES if unit_of(module) == unit}
    todo = list(chains)
    while todo:
        module, explicit = todo.pop()
        targets = [(target, True) for target in (EDGES if explicit else TOP_LEVEL_EDGES)[module]]
        for target in targets + [(package, False) for package in _packages_of(module)]:
            if target not in chains and (target[0], True) not in chains:
                chains[target] = chains[(module, explicit)] + [target[0]]
                todo.append(target)
    reached = sorted(" -> ".join(chain) for (module, _), chain in chains.items() if unit_of(module) == forbidden)
    assert reached[:3] == [], f"{unit} must never import {forbidden}: {why}"


def test_readme_architecture_table_is_allowed():
    """The README's Architecture table says what ALLOWED says, package by package."""
    with open(README, encoding="utf-8") as f:
        section = f.read().split("\n## Architecture\n", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| `tfbig/(\w+)(?:/|\.py)` \| (.*?) \|", section, re.M)
    table = {unit: tuple(re.findall(r"`(\w+)`", allowed)) for unit, allowed in rows}
    assert table == {unit: allowed for unit, allowed in ALLOWED.items() if unit not in LEAVES}
    leaves = section.split("\nLeaf modules", 1)[1].split("\n\n", 1)[0]
    assert set(re.findall(r"`tfbig/(\w+)\.py`", leaves)) == set(LEAVES) - {"tfbig"}


def _packages_of(module: str) -> list[str]:
    """The packages whose `__init__` runs before `module`: tfbig.a.b -> tfbig, tfbig.a."""
    parts = module.split(".")
    return [package for i in range(1, len(parts)) if (package := ".".join(parts[:i])) in MODULES]


def _circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of `graph` with more than one node (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    circles = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while stack[-1] != node:
                component.append(stack.pop())
            component.append(stack.pop())
            if len(component) > 1:
                circles.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return circles
