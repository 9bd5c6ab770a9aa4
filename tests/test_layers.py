"""The layers stay visible and true: imports read with `ast`, every rule of kr1/__init__.py checked.

    commands   kr1.driver, kr1.eval, kr1.search, kr1.plan, kr1.coverage, kr1.serve, kr1.warm_start,
               kr1.bench.__main__: imported by nothing
    pure       kr1.retrieval, kr1.rollout, kr1.training, kr1.world and the shared kr1.config, kr1.config_checks,
               kr1.data, kr1.benchmarks, kr1.two_wiki, kr1.errors, kr1.atomic_write, kr1.logprobs: no ray, actors,
               pipelines, kr1.run, kr1.bench, kr1.cluster
    actors     one role per file: no pipelines, kr1.run, kr1.bench, command, or another role
    pipelines  thin command-line mains over kr1 (each one `run_cli(main)`): no actors, kr1.bench, command, or
               another pipelines module
    kr1.bench  no actors, pipelines or command (kr1.run is the one part of kr1 that imports actors)
    kr1.run    no pipelines, kr1.bench or command (nothing in kr1 imports pipelines: library in kr1/, commands
               in pipelines/)
    within pure, retrieval < rollout < training: a lower package never imports a higher one


Imports inside functions count as much as those at the top of a module, and no two modules
may import each other, however indirectly.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("kr1", "actors", "pipelines")
COMMANDS = frozenset({"kr1.driver", "kr1.eval", "kr1.search", "kr1.plan", "kr1.coverage", "kr1.serve",
                       "kr1.warm_start", "kr1.bench.__main__"})
PURE = ("kr1.retrieval", "kr1.rollout", "kr1.training", "kr1.world", "kr1.config", "kr1.config_checks", "kr1.data",
        "kr1.benchmarks", "kr1.two_wiki", "kr1.errors", "kr1.atomic_write", "kr1.logprobs")
MAX_LINES = 400
# the pure packages from lowest to highest (training builds on rollout, which builds on retrieval)
PURE_ORDER = ("kr1.retrieval", "kr1.rollout", "kr1.training")


def _within(module: str, prefixes: tuple[str, ...] | frozenset[str]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


def layer(module: str) -> str:
    """The layer a module of kr1, actors or pipelines belongs to."""
    if module in COMMANDS:
        return "command"
    if _within(module, PURE):
        return "pure"
    for prefix in ("kr1.run", "kr1.bench", "kr1.cluster", "actors", "pipelines"):
        if _within(module, (prefix,)):
            return prefix
    return "kr1"  # the package itself


# what each layer may not import: layer names, or top-level third-party packages
FORBIDDEN = {
    "pure": {"ray", "actors", "pipelines", "kr1.run", "kr1.bench", "kr1.cluster", "command"},
    "kr1.cluster": {"actors", "pipelines", "kr1.run", "kr1.bench", "command"},
    "actors": {"pipelines", "kr1.run", "kr1.bench", "command"},
    "pipelines": {"actors", "kr1.bench", "command", "pipelines"},
    "kr1.bench": {"actors", "pipelines", "command"},
    "kr1.run": {"pipelines", "kr1.bench", "command"},
    "command": {"actors", "pipelines", "command"},
    "kr1": {"actors", "pipelines", "kr1.run", "kr1.bench", "command"},
}


def module_files(root: Path) -> dict[str, Path]:
    """Dotted module name -> file, for every module of the three packages under `root`."""
    out = {}
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            parts = path.relative_to(root).with_suffix("").parts
            out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """Modules `name` imports anywhere in its file (top level or inside functions), relative ones resolved."""
    found: set[str] = set()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([node.module] if node.module else []))
            found.add(base)
            # `from kr1.run import loop` imports the module kr1.run.loop
            found.update(f"{base}.{alias.name}" for alias in node.names if f"{base}.{alias.name}" in known)
    return found


def import_graph(root: Path) -> dict[str, set[str]]:
    """Every module -> everything it imports (internal modules by full name, others as written)."""
    files = module_files(root)
    return {name: imports_of(name, path, set(files)) for name, path in files.items()}


def _pure_rank(module: str) -> int:
    """Position of the module's pure package in PURE_ORDER; -1 outside them."""
    return next((i for i, package in enumerate(PURE_ORDER) if _within(module, (package,))), -1)


def rule_violations(graph: dict[str, set[str]]) -> list[str]:
    """One line per import that breaks a layer rule, naming importer, imported module and rule."""
    internal = set(graph)
    out = []
    for importer, imported in sorted(graph.items()):
        mine = layer(importer)
        for target in sorted(imported):
            theirs = layer(target) if target in internal or _within(target, PACKAGES) else target.split(".")[0]
            if theirs in FORBIDDEN.get(mine, set()) and target != importer:
                out.append(f"{importer} ({mine}) imports {target} ({theirs})")
            elif mine == "actors" == theirs and target != "actors":
                out.append(f"{importer} (actors) imports {target}: one role may not import another's file")
            elif _pure_rank(target) > _pure_rank(importer) >= 0:
                out.append(f"{importer} imports {target}: upward within the pure layers ({' < '.join(PURE_ORDER)})")
    return out


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected groups of more than one internal module (Tarjan), each sorted."""
    internal = {m: sorted(t for t in targets if t in graph and t != m) for m, targets in graph.items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in internal[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                cycles.append(sorted(group))

    for node in sorted(internal):
        if node not in index:
            visit(node)
    return cycles


def test_every_import_keeps_its_layer():
    graph = import_graph(ROOT)
    assert {"kr1.run.training_run", "kr1.retrieval.index", "actors.learner", "kr1.bench.__main__"} <= set(graph)
    assert rule_violations(graph) == []


def test_no_import_cycle():
    assert import_cycles(import_graph(ROOT)) == []


def test_no_module_over_400_lines():
    lines = {name: len(path.read_text().splitlines()) for name, path in module_files(ROOT).items()}
    assert {name: n for name, n in lines.items() if n > MAX_LINES} == {}


def test_every_command_runs_as_a_module_and_the_layers_hold_each_kind():
    files = module_files(ROOT)
    for command in COMMANDS | {m for m in files if m.startswith("pipelines.")}:
        assert "run_cli(main)" in files[command].read_text(), command
    for package in ("kr1.retrieval", "kr1.rollout", "kr1.training", "kr1.run", "kr1.bench"):
        assert package in files and len([m for m in files if m.startswith(package + ".")]) >= 2, package


def _tree(tmp_path: Path, modules: dict[str, str]) -> Path:
    """Packages kr1, actors and pipelines under `tmp_path` holding these modules' sources."""
    for name, source in modules.items():
        parts = name.split(".")
        for depth in range(1, len(parts)):
            init = tmp_path.joinpath(*parts[:depth], "__init__.py")
            init.parent.mkdir(parents=True, exist_ok=True)
            init.touch()
        tmp_path.joinpath(*parts).with_suffix(".py").write_text(source)
    return tmp_path


@pytest.mark.parametrize("module, source, rule", [
    ("kr1.retrieval.scoring", "import ray\n", "kr1.retrieval.scoring (pure) imports ray (ray)"),
    ("kr1.training.batch", "def f():\n    from actors.learner import X\n",
     "kr1.training.batch (pure) imports actors.learner (actors)"),
    ("kr1.rollout.episodes", "from kr1.run.loop import train\n", "kr1.rollout.episodes (pure) imports kr1.run.loop"),
    ("kr1.config", "from kr1 import eval\n", "kr1.config (pure) imports kr1.eval (command)"),
    ("kr1.rollout.generation", "def f():\n    from kr1.training.algorithms import X\n",
     "kr1.rollout.generation imports kr1.training.algorithms: upward"),
    ("actors.learner", "from pipelines.build_index import build_index\n",
     "actors.learner (actors) imports pipelines.build_index (pipelines)"),
    ("actors.reference", "from actors.learner import X\n",
     "actors.reference (actors) imports actors.learner: one role"),
    ("pipelines.build_index", "from actors.retriever import RetrieverPool\n",
     "pipelines.build_index (pipelines) imports actors.retriever (actors)"),
    ("pipelines.prepare_corpus", "from pipelines.build_index import main\n",
     "pipelines.prepare_corpus (pipelines) imports pipelines.build_index (pipelines)"),
    ("kr1.run.assets", "def f():\n    from pipelines.build_index import build_index\n",
     "kr1.run.assets (kr1.run) imports pipelines.build_index (pipelines)"),
    ("kr1.bench.retrieval", "from actors.retriever import RetrieverPool\n",
     "kr1.bench.retrieval (kr1.bench) imports actors.retriever (actors)"),
    ("kr1.eval", "from actors.retriever import RetrieverPool\n", "kr1.eval (command) imports actors.retriever"),
    ("kr1.run.pools", "from ..bench import suite\n", "kr1.run.pools (kr1.run) imports kr1.bench.suite (kr1.bench)"),
])
def test_the_checker_names_a_broken_rule(tmp_path, module, source, rule):
    modules = {"kr1.run.loop": "", "kr1.eval": "", "kr1.bench.suite": "", "actors.retriever": "",
               "actors.learner": "", "pipelines.build_index": "", "kr1.run.pools": "", "kr1.training.algorithms": "",
               module: source}
    violations = rule_violations(import_graph(_tree(tmp_path, modules)))
    assert any(v.startswith(rule) for v in violations), violations


def test_the_checker_finds_a_lazy_import_cycle(tmp_path):
    root = _tree(tmp_path, {"kr1.errors": "from kr1.training.memory_plan import PlanError\n",
                            "kr1.training.memory_plan": "def f():\n    from kr1.errors import run_cli\n",
                            "kr1.config": "from kr1.errors import UserError\n"})
    assert import_cycles(import_graph(root)) == [["kr1.errors", "kr1.training.memory_plan"]]
