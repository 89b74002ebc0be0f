"""The package's import graph: no module-level cycle, and no import up a layer.

Layers, lowest first (SPEC §12): errors -> hooks (with the small base modules: selection,
sampling, tokenizer, positions, plots) -> backends -> loading -> api (model, prompts,
generation, caches, memory) -> interp / dictionaries / attribution / harvest -> cli. The
package root re-exports everything and sits on top. Function-level imports count for
layering (a lazy import is still a dependency); only module-level ones count for cycles.
"""

from __future__ import annotations

import ast
from pathlib import Path

import torch_mi

ROOT = Path(torch_mi.__file__).parent
LAYERS = {
    "errors": 0,
    "hooks": 1, "selection": 1, "sampling": 1, "tokenizer": 1, "positions": 1, "plots": 1,
    "world_tokenizer": 1,
    "backends": 2,
    "loading": 3, "download": 3,
    "model": 4, "prompts": 4, "generation": 4, "cache": 4, "memory": 4,
    "interp": 5, "dictionaries": 5, "attribution": 5, "harvest": 5,
    "cli": 6, "__main__": 6,
}


def module_name(path: Path) -> str:
    parts = ["torch_mi", *path.relative_to(ROOT).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in ROOT.rglob("*.py")}


def resolve(importer: str, is_package: bool, node: ast.ImportFrom | ast.Import) -> list[str]:
    """The torch_mi modules an import statement loads."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names if a.name.startswith("torch_mi")]
    if node.level == 0:
        if not (node.module or "").startswith("torch_mi"):
            return []
        base = node.module
    else:
        package = importer.split(".") if is_package else importer.split(".")[:-1]
        package = package[: len(package) - (node.level - 1)]
        base = ".".join(package + ([node.module] if node.module else []))
    targets = []
    for alias in node.names:  # `from . import submodule` loads the submodule
        candidate = f"{base}.{alias.name}"
        targets.append(candidate if candidate in MODULES else base)
    return targets


def imports(name: str, module_level_only: bool) -> set[str]:
    path = MODULES[name]
    tree = ast.parse(path.read_text())
    is_package = path.name == "__init__.py"
    nodes = tree.body if module_level_only else list(ast.walk(tree))
    if module_level_only:  # include imports nested in top-level if/try blocks
        nodes = [n for top in tree.body for n in ast.walk(top)
                 if not isinstance(top, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))]
    found = set()
    for node in nodes:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            found.update(t for t in resolve(name, is_package, node) if t in MODULES)
    found.discard(name)
    return found


def layer(name: str) -> int:
    parts = name.split(".")
    if len(parts) == 1:
        return 99  # the package root
    return LAYERS[parts[1]]


def test_every_top_level_module_has_a_layer():
    tops = {name.split(".")[1] for name in MODULES if "." in name}
    assert tops <= set(LAYERS), f"modules without a layer: {tops - set(LAYERS)}"


def test_no_import_goes_up_a_layer():
    upward = [f"{src} (layer {layer(src)}) imports {dst} (layer {layer(dst)})"
              for src in MODULES for dst in imports(src, module_level_only=False)
              if layer(dst) > layer(src)]
    assert upward == []


def test_no_module_level_import_cycle():
    graph = {name: imports(name, module_level_only=True) for name in MODULES}
    state: dict[str, int] = {}
    cycles: list[list[str]] = []

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append([*stack[stack.index(nxt):], nxt])
            elif nxt not in state:
                visit(nxt, [*stack, nxt])
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    assert cycles == []


def test_the_checker_sees_cycles_and_upward_imports(tmp_path):
    """The walker itself: a relative import resolves to the module it names."""
    node = ast.parse("from ..hooks.points import HookPoint").body[0]
    assert resolve("torch_mi.backends.registry", False, node) == ["torch_mi.hooks.points"]
    node = ast.parse("from . import transformer").body[0]
    assert resolve("torch_mi.backends", True, node) == ["torch_mi.backends.transformer"]
    assert "torch_mi.hooks.points" in imports("torch_mi.backends.registry", False) | imports(
        "torch_mi.backends.protocol", False)
