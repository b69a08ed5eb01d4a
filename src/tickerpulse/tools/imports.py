"""`python -m tickerpulse.tools.imports`: proves the package's import rules from its source (stdlib `ast`).

The stages form one line, and a module imports only from its own stage or an earlier one, so a change to a
stage can only affect what comes after it (`LAYERS`):

    ground floor (the package's __init__, task, models, config, paths, _optional)
    -> data -> distill -> train -> evaluate -> export -> serve -> stream
    -> recipe, cli, demo, tools (above every stage)

and no module is part of an import circle. Every import counts: at module level, inside functions (a lazy
import still runs, only later), under `if TYPE_CHECKING:` (a type is a dependency too) and
`importlib.import_module` / `__import__` with a literal name. Names computed at run time
(`import_module(mods[name])`) are out of reach of a source check.

Prints each violation as `path:line: ...` and exits 1; exits 0 with a one-line summary when there is none.
"""

from __future__ import annotations

import argparse
import ast
import sys
from collections import defaultdict, deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

# One tuple per layer, earliest first; "" is the package's own __init__. Peers on one layer may import each
# other (the circle check still applies); a new top-level module or folder must be placed here.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("", "task", "models", "config", "paths", "_optional"),
    ("data",), ("distill",), ("train",), ("evaluate",), ("export",), ("serve",), ("stream",),
    ("recipe", "cli", "demo", "tools"),
)
RANK = {stage: i for i, layer in enumerate(LAYERS) for stage in layer}


@dataclass(frozen=True)
class Import:
    """One import of a module of the package by another, where it is written."""

    source: str
    target: str
    path: str
    line: int
    lazy: bool = False  # inside a function
    type_only: bool = False  # under `if TYPE_CHECKING:`

    def describe(self) -> str:
        how = ", ".join(k for k, on in (("lazy", self.lazy), ("type-only", self.type_only)) if on)
        return f"{self.path}:{self.line}: {self.source} imports {self.target}" + (f" ({how})" if how else "")


@dataclass
class Report:
    """What `check` found: the package's internal imports and the ones that break the rules."""

    modules: dict[str, str]  # dotted name -> path as printed
    imports: list[Import]
    upward: list[Import] = field(default_factory=list)
    circles: list[list[Import]] = field(default_factory=list)  # one shortest circle per strongly connected set
    unplaced: dict[str, str] = field(default_factory=dict)  # stage not in LAYERS -> path of one of its modules

    @property
    def ok(self) -> bool:
        return not (self.upward or self.circles or self.unplaced)

    def lines(self) -> list[str]:
        out = [f"{path}: stage {stage!r} is not in the stage order (add it to LAYERS in {__name__})"
               for stage, path in sorted(self.unplaced.items())]
        for imp in self.upward:
            src, dst = stage_of(imp.source), stage_of(imp.target)
            out.append(f"{imp.describe()}: upward: {_label(src)} comes before {_label(dst)}")
        for circle in self.circles:
            chain = " -> ".join([circle[0].source] + [imp.target for imp in circle])
            out.append(f"{circle[0].path}:{circle[0].line}: import circle: {chain}")
            out += [f"  {imp.describe()}" for imp in circle]
        if self.ok:
            out.append(f"ok: {len(self.modules)} modules, {len(self.imports)} imports inside the package: "
                       "every stage imports only itself or earlier stages, no import circles")
        return out


def stage_of(module: str) -> str:
    """`tickerpulse.serve.app` -> `serve`; the package itself -> ``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _label(stage: str) -> str:
    return "the package's __init__" if stage == "" else stage


def _display(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def find_modules(root: Path) -> dict[str, Path]:
    """Dotted name -> file of every module below the package folder `root` (its name is the package's)."""
    out = {}
    for path in sorted(root.rglob("*.py")):
        parts = [root.name, *path.relative_to(root).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


class _Imports(ast.NodeVisitor):
    """The imports of one module that name modules of the package."""

    def __init__(self, name: str, is_package: bool, known: Iterable[str], path: str) -> None:
        self.name, self.path, self.known = name, path, set(known)
        self.package = name if is_package else name.rpartition(".")[0]
        self.functions = self.type_checking = 0
        self.found: list[Import] = []

    def _module(self, dotted: str | None) -> str | None:
        """The longest prefix of `dotted` that is a module of the package (None: outside it)."""
        parts = (dotted or "").split(".")
        while parts and ".".join(parts) not in self.known:
            parts.pop()
        return ".".join(parts) or None

    def _add(self, node: ast.AST, target: str | None) -> None:
        if target is not None and target != self.name:
            self.found.append(Import(self.name, target, self.path, node.lineno,  # type: ignore[attr-defined]
                                     self.functions > 0, self.type_checking > 0))

    def _function(self, node: ast.AST) -> None:
        self.functions += 1
        self.generic_visit(node)
        self.functions -= 1

    visit_FunctionDef = visit_AsyncFunctionDef = visit_Lambda = _function

    def visit_If(self, node: ast.If) -> None:
        if not _is_type_checking(node.test):
            self.generic_visit(node)
            return
        self.type_checking += 1
        for child in node.body:
            self.visit(child)
        self.type_checking -= 1
        for child in node.orelse:
            self.visit(child)

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self._add(node, self._module(alias.name))

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        base = node.module or ""
        if node.level:
            parts = self.package.split(".")
            parts = parts[: len(parts) - (node.level - 1)]
            base = ".".join(parts + ([node.module] if node.module else []))
        targets = []  # `from pkg import mod` imports the submodule; `from mod import a, b` the module (once)
        for alias in node.names:
            sub = f"{base}.{alias.name}"
            targets.append(sub if sub in self.known else self._module(base))
        for target in dict.fromkeys(targets):
            self._add(node, target)

    def visit_Call(self, node: ast.Call) -> None:
        func = node.func
        called = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
        if (called in ("import_module", "__import__") and node.args and isinstance(node.args[0], ast.Constant)
                and isinstance(node.args[0].value, str)):
            self._add(node, self._module(node.args[0].value))
        self.generic_visit(node)


def find_imports(modules: dict[str, Path]) -> list[Import]:
    """Every import between modules of the package, in file and line order. SyntaxError if a file has one."""
    found: list[Import] = []
    for name, path in modules.items():
        tree = ast.parse(path.read_text("utf-8"), filename=str(path))
        visitor = _Imports(name, path.name == "__init__.py", modules, _display(path))
        visitor.visit(tree)
        found += sorted(visitor.found, key=lambda imp: imp.line)
    return found


def strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's strongly connected components with more than one member (iterative: no recursion limit)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph.get(start, ()))))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                members = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    members.append(member)
                    if member == node:
                        break
                if len(members) > 1:
                    out.append(sorted(members))
    return out


def shortest_circle(members: Sequence[str], graph: dict[str, set[str]],
                    edges: dict[tuple[str, str], Import]) -> list[Import]:
    """A shortest import circle through the first member, staying inside its strongly connected set."""
    inside, start = set(members), members[0]
    came_from: dict[str, str] = {}
    queue = deque([start])
    while queue:
        node = queue.popleft()
        for nxt in sorted(graph[node] & inside):
            if nxt == start:  # walk back from node to start
                path = [edges[(node, start)]]
                while node != start:
                    path.append(edges[(came_from[node], node)])
                    node = came_from[node]
                return path[::-1]
            if nxt not in came_from:
                came_from[nxt] = node
                queue.append(nxt)
    raise AssertionError(f"no circle through {start} in {members}")  # a strongly connected set always has one


def check(root: Path) -> Report:
    """Check the package folder `root` (e.g. src/tickerpulse) against the stage order and for circles."""
    modules = find_modules(root)
    imports = find_imports(modules)
    report = Report({name: _display(path) for name, path in modules.items()}, imports)
    for name in modules:
        stage = stage_of(name)
        if stage not in RANK:
            report.unplaced.setdefault(stage, _display(modules[name]))
    report.upward = [imp for imp in imports if stage_of(imp.source) in RANK and stage_of(imp.target) in RANK
                     and RANK[stage_of(imp.target)] > RANK[stage_of(imp.source)]]
    graph: dict[str, set[str]] = defaultdict(set)
    edges: dict[tuple[str, str], Import] = {}
    for imp in imports:  # the first import of a pair stands for it
        graph[imp.source].add(imp.target)
        edges.setdefault((imp.source, imp.target), imp)
    report.circles = [shortest_circle(members, graph, edges) for members in strongly_connected(graph)]
    return report


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tickerpulse.tools.imports",
        description="Check from the source that every stage imports only itself or earlier stages and that no "
                    "modules import each other in a circle (the order: LAYERS in this module).")
    parser.add_argument("--root", type=Path, default=Path(__file__).resolve().parents[1],
                        help="the package folder to check (default: this tickerpulse)")
    args = parser.parse_args(argv)
    if not (args.root / "__init__.py").is_file():
        parser.error(f"{args.root} is not a package folder (no __init__.py)")
    try:
        report = check(args.root)
    except SyntaxError as exc:  # nothing can be proven about a module that does not parse
        print(f"{exc.filename}:{exc.lineno}: {exc.msg}")
        return 1
    print("\n".join(report.lines()))
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
