"""The library's layering, read from its source: no import cycle, the model
and the evaluation code never reach up to the trainer, the model never
reaches the back-end choice, and nothing imports the experiments."""

import ast
import pathlib

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "vit_jax"
# The trainer and what is built around it: the layer above models/ and evaluate/.
TRAINER = ("vit_jax.train", "vit_jax.step", "vit_jax.config", "vit_jax.objectives")


def module_files() -> dict[str, pathlib.Path]:
    modules = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join(parts)] = path
    return modules


def imported(name: str, path: pathlib.Path, modules) -> set[str]:
    """The modules `name` imports, anywhere in its file (function-level
    imports too); `from package import module` counts as the module."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parent, *([node.module] if node.module else [])])
            for alias in node.names:
                submodule = f"{base}.{alias.name}"
                found.add(submodule if submodule in modules else base)
    return {m for m in found if m != name and (m in modules or m.split(".")[0] == "experiments")}


def import_graph() -> dict[str, set[str]]:
    modules = module_files()
    return {name: imported(name, path, modules) for name, path in modules.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(node):
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph.get(node, ()):
            if nxt not in graph:
                continue
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def edges(graph, source_prefix, target_prefixes):
    return sorted(
        (source, target)
        for source, targets in graph.items()
        if source == source_prefix or source.startswith(source_prefix + ".")
        for target in targets
        if any(target == t or target.startswith(t + ".") for t in target_prefixes)
    )


def test_the_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_cycle():
    assert cycles(import_graph()) == []


def test_models_and_evaluation_do_not_reach_up_to_the_trainer():
    graph = import_graph()
    assert edges(graph, "vit_jax.models", TRAINER) == []
    assert edges(graph, "vit_jax.evaluate", TRAINER) == []


def test_the_model_never_imports_the_back_end_choice():
    assert edges(import_graph(), "vit_jax.models", ("vit_jax.kernels",)) == []


def test_the_library_never_imports_the_experiments():
    assert edges(import_graph(), "vit_jax", ("experiments",)) == []
