"""Structure rules, checked on the source text (nothing is imported): no import cycles, no long functions.

Import graph.  Every `import x` / `from x import y` / relative import in a module counts, at module level
or inside a function or class: a function-level import that closes a cycle still ties the modules
together (they cannot be understood, tested or moved apart), it only hides the cycle until runtime.
Only project modules (the packages in PACKAGES) are nodes.  `from pkg import name` points at the
submodule `pkg.name` when there is one, else at `pkg`.  One statement is not an edge: a plain
`import elmo_paddle` inside elmo_paddle's own modules (done for the environment it sets before paddle
loads).  Python imports a package before any of its modules, so that statement only binds a name and
cannot take part in a cycle; counting it would turn every lazy export of the package into a false cycle.

Function length.  No function or method over MAX_FUNCTION_LINES lines, `def` to last line, docstring and
nested functions included: a function a reader must scroll is a function to split.
"""
from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("elmo_paddle", "tasks")
MAX_FUNCTION_LINES = 80


# ------------------------------------------------------------------ reading the source
def project_modules(root: Path = REPO) -> dict[str, Path]:
    """Dotted module name -> file, for every .py under the packages (a package is its __init__.py)."""
    out = {}
    for pkg in PACKAGES:
        for f in sorted((root / pkg).rglob("*.py")):
            parts = list(f.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            out[".".join(parts)] = f
    return out


def _known_prefix(dotted: str, known) -> str | None:
    """The longest prefix of `dotted` that is a project module (`import a.b.c` imports a.b.c)."""
    parts = dotted.split(".")
    for n in range(len(parts), 0, -1):
        name = ".".join(parts[:n])
        if name in known:
            return name
    return None


def _from_base(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    """The absolute module a `from ... import` statement reads from (relative levels resolved)."""
    if not node.level:
        return node.module or ""
    package = module if is_package else module.rpartition(".")[0]
    for _ in range(node.level - 1):
        package = package.rpartition(".")[0]
    return f"{package}.{node.module}" if node.module else package


def imports_of(module: str, path: Path, known) -> set[str]:
    """The project modules that `module` imports anywhere in its text."""
    is_package = path.name == "__init__.py"
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                target = _known_prefix(alias.name, known)
                own_package = alias.name == target and module.startswith(target + ".")
                if target and not own_package:
                    out.add(target)
        elif isinstance(node, ast.ImportFrom):
            base = _from_base(module, is_package, node)
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                target = sub if sub in known else _known_prefix(base, known)
                if target:
                    out.add(target)
    out.discard(module)
    return out


def import_graph(root: Path = REPO) -> dict[str, set[str]]:
    known = project_modules(root)
    return {m: imports_of(m, f, known) for m, f in known.items()}


# ------------------------------------------------------------------ cycles
def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle (first node repeated at the end) per strongly connected component that has one."""
    return [_cycle_in(c, graph) for c in cyclic_components(graph)]


def cyclic_components(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components that hold a cycle (2+ nodes, or a self-loop), members sorted.

    Tarjan's algorithm, iterative (no recursion limit on deep graphs); nodes and edges are visited in
    sorted order so the report is stable.
    """
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph.get(start, ()))))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, edges = work[-1]
            nxt = next(edges, None)
            if nxt is None:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    comp = []
                    while True:
                        w = stack.pop()
                        on_stack.discard(w)
                        comp.append(w)
                        if w == node:
                            break
                    components.append(comp)
            elif nxt not in index:
                index[nxt] = low[nxt] = len(index)
                stack.append(nxt)
                on_stack.add(nxt)
                work.append((nxt, iter(sorted(graph.get(nxt, ())))))
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
    return [sorted(c) for c in components if len(c) > 1 or c[0] in graph.get(c[0], ())]


def _cycle_in(component: list[str], graph: dict[str, set[str]]) -> list[str]:
    """A cycle through the component's first node: breadth-first back to it, staying inside."""
    members, start = set(component), component[0]
    parent: dict[str, str] = {}
    frontier = [start]
    while frontier:
        nxt_frontier = []
        for node in frontier:
            for succ in sorted(graph.get(node, ())):
                if succ == start:
                    path = [node]
                    while path[-1] != start:
                        path.append(parent[path[-1]])
                    return [start, *reversed(path[:-1]), start]
                if succ in members and succ not in parent:
                    parent[succ] = node
                    nxt_frontier.append(succ)
        frontier = nxt_frontier
    raise AssertionError(f"no cycle through {start} in its component")  # Tarjan guarantees one


def test_find_cycles_on_a_small_graph():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": set(), "e": {"a", "f"}, "f": {"e"}, "g": {"g"},
             "h": {"a"}}
    assert sorted(find_cycles(graph)) == [["a", "b", "c", "a"], ["e", "f", "e"], ["g", "g"]]
    assert find_cycles({"a": {"b", "c"}, "b": {"c"}, "c": set(), "d": {"a"}}) == []
    # the shortest way back: a -> c -> a, not a -> b -> c -> a
    assert find_cycles({"a": {"b", "c"}, "b": {"c"}, "c": {"a"}}) == [["a", "c", "a"]]


def test_import_graph_reads_relative_function_level_and_from_imports(tmp_path):
    pkg = tmp_path / "elmo_paddle"
    (pkg / "sub").mkdir(parents=True)
    (tmp_path / "tasks").mkdir()
    (pkg / "__init__.py").write_text("import os\n\ndef __getattr__(name):\n    from .a import A\n    return A\n")
    (pkg / "a.py").write_text("from . import b\nimport elmo_paddle\nfrom .sub.c import f\n")
    (pkg / "b.py").write_text("def g():\n    from elmo_paddle import a\n")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "sub" / "c.py").write_text("from .. import b as _b\nfrom ..a import x\nimport elmo_paddle.sub\n")
    (tmp_path / "tasks" / "t.py").write_text("import elmo_paddle.sub.c as c\nfrom elmo_paddle import errors\n")
    graph = import_graph(tmp_path)
    assert graph == {"elmo_paddle": {"elmo_paddle.a"}, "elmo_paddle.a": {"elmo_paddle.b", "elmo_paddle.sub.c"},
                     "elmo_paddle.b": {"elmo_paddle.a"}, "elmo_paddle.sub": set(),
                     "elmo_paddle.sub.c": {"elmo_paddle.b", "elmo_paddle.a"},  # not its own package
                     "tasks.t": {"elmo_paddle.sub.c", "elmo_paddle"}}
    assert find_cycles(graph) == [["elmo_paddle.a", "elmo_paddle.b", "elmo_paddle.a"]]


def test_no_import_cycles():
    graph = import_graph()
    report = []
    for comp in cyclic_components(graph):
        cycle = _cycle_in(comp, graph)
        more = f"   (the modules tied together: {', '.join(comp)})" if len(comp) > len(cycle) - 1 else ""
        report.append("  " + " -> ".join(cycle) + more)
    assert not report, "import cycles:\n" + "\n".join(report)


# ------------------------------------------------------------------ function length
def long_functions(root: Path = REPO, limit: int = MAX_FUNCTION_LINES) -> list[str]:
    """'path:line name (N lines)' for every function or method longer than `limit` lines."""
    out = []
    for module, path in project_modules(root).items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                if n > limit:
                    out.append(f"{path.relative_to(root)}:{node.lineno} {node.name} ({n} lines)")
    return sorted(out)


def test_long_functions_are_found(tmp_path):
    (tmp_path / "elmo_paddle").mkdir()
    (tmp_path / "tasks").mkdir()
    (tmp_path / "tasks" / "m.py").write_text(
        "def short():\n    return 1\n\n\n"
        "class C:\n"
        "    def long(self):\n"  # line 6: 5 lines, the nested function included
        "        def inner():\n"  # line 7: 3 lines
        "            a = 1\n"
        "            return a\n"
        "        return inner()\n")
    assert long_functions(tmp_path, limit=3) == ["tasks/m.py:6 long (5 lines)"]
    assert long_functions(tmp_path, limit=2) == ["tasks/m.py:6 long (5 lines)", "tasks/m.py:7 inner (3 lines)"]


def test_no_long_functions():
    offenders = long_functions()
    assert not offenders, f"functions over {MAX_FUNCTION_LINES} lines (split them):\n  " + "\n  ".join(offenders)
