"""The house's rules, checked on the source: floors, no cycles, Gradio only in the tabs, one name each.

(That nothing outside ``studio/models`` reaches into a network's blocks is checked in test_models.py.)

These read the code (with ``ast``), so they fail the moment a change breaks a rule that
docs/ARCHITECTURE.md states.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

STUDIO = Path(__file__).resolve().parents[1] / "studio"

# Each module's floor (docs/ARCHITECTURE.md); a module may import its own floor or any floor below.
FLOORS = {
    "storage": 0, "limits": 0, "spaces_gpu": 0,
    "models": 1,
    "latent": 2, "augment": 2, "media": 2, "metrics": 2, "bending": 2, "precision": 2, "audio": 2,
    "zoo": 3,
    "sampling": 4, "recipe": 4, "train": 4, "data": 4, "directions": 4, "remix": 4, "projection": 4,
    "engine": 5, "jobs": 5, "hub": 5, "animation": 5, "loadtest": 5, "bench": 5, "music": 5,
    "ray_backend": 5,
    "ui.owners": 6, "ui.scratch": 6, "ui.files": 6, "ui.errors": 6, "ui.controls": 6, "ui.explore_logic": 6,
    "ui.interpolate_logic": 6, "ui.music_logic": 6, "ui.finetune_logic": 6, "ui.share_logic": 6,
    "ui.project_logic": 6,
    "ui.explore": 7, "ui.interpolate": 7, "ui.music": 7, "ui.finetune": 7, "ui.share": 7, "ui.engine_panel": 7,
    "ui": 8, "__main__": 8, "bench_parser": 8,
}
# Modules that may import Gradio at their top: the tabs' layout and wiring, and the studio they make.
GRADIO_MODULES = {"ui", "ui.explore", "ui.interpolate", "ui.music", "ui.finetune", "ui.share", "ui.engine_panel",
                  "ui.controls"}
TAB_BUILDERS = {"ui/explore.py": "build_explore_tab", "ui/interpolate.py": "build_interpolate_tab",
                "ui/music.py": "build_music_tab", "ui/finetune.py": "build_finetune_tab", "ui/share.py": "build_share_tab"}
MAX_BUILDER_LINES = 120


def module_name(path: Path) -> str:
    """``studio/ui/explore.py`` -> ``ui.explore``; a package's ``__init__`` is the package."""
    parts = list(path.relative_to(STUDIO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


MODULES = {module_name(p): p for p in STUDIO.rglob("*.py") if module_name(p)}


def floor(module: str) -> int:
    """The floor of ``module``: its own entry, else its package's (``models.convert`` -> ``models``)."""
    while module not in FLOORS:
        module = module.rpartition(".")[0]
    return FLOORS[module]


def _type_checking_only(tree: ast.Module) -> set[int]:
    """Line numbers of the imports under ``if TYPE_CHECKING:`` (they never run)."""
    lines = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            lines |= {child.lineno for child in ast.walk(node) if isinstance(child, (ast.Import, ast.ImportFrom))}
    return lines


def _short(name: str | None) -> str:
    """``studio.ui.files`` -> ``ui.files``; a name outside the studio -> ""."""
    name = name or ""
    return name.removeprefix("studio.") if name.startswith("studio.") else ""


def studio_imports(module: str, top_level_only: bool = False) -> set[str]:
    """The studio modules ``module`` imports (``from studio import x`` counts as ``x``)."""
    tree = ast.parse(MODULES[module].read_text())
    skipped = _type_checking_only(tree) if top_level_only else set()
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    found = set()
    for node in nodes:
        if not isinstance(node, (ast.Import, ast.ImportFrom)) or node.lineno in skipped:
            continue
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        else:  # from X import Y: module X.Y if there is one, else X (Y is a name in it)
            names = [f"{node.module}.{alias.name}" if _short(f"{node.module}.{alias.name}") in MODULES else node.module
                     for alias in node.names]
        found |= {_short(name) for name in names if _short(name) in MODULES and _short(name) != module}
    return found


def test_every_module_has_a_floor() -> None:
    assert [m for m in MODULES if not any(m == f or m.startswith(f + ".") for f in FLOORS)] == []


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_run_downwards(module: str) -> None:
    upward = {target: floor(target) for target in studio_imports(module) if floor(target) > floor(module)}
    assert upward == {}, f"{module} (floor {floor(module)}) imports from above"


def test_no_import_cycles() -> None:
    graph = {m: studio_imports(m, top_level_only=True) for m in MODULES}
    state: dict[str, str] = {}

    def visit(module: str, path: list[str]) -> None:
        state[module] = "open"
        for target in graph[module]:
            assert state.get(target) != "open", f"import cycle: {' -> '.join([*path, module, target])}"
            if target not in state:
                visit(target, [*path, module])
        state[module] = "done"

    for module in graph:
        if module not in state:
            visit(module, [])


def test_gradio_is_imported_by_the_tabs_only() -> None:
    importers = set()
    for module, path in MODULES.items():
        for node in ast.parse(path.read_text()).body:
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            if any(name.split(".")[0] == "gradio" for name in names):
                importers.add(module)
    assert importers <= GRADIO_MODULES, importers - GRADIO_MODULES


@pytest.mark.parametrize(("file", "builder"), sorted(TAB_BUILDERS.items()))
def test_tab_builders_are_short(file: str, builder: str) -> None:
    tree = ast.parse((STUDIO / file).read_text())
    node = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == builder)
    assert node.end_lineno - node.lineno + 1 < MAX_BUILDER_LINES


def test_public_names_are_defined_once_across_modules() -> None:
    defined = defaultdict(list)
    for module, path in MODULES.items():
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, (ast.FunctionDef, ast.ClassDef)) and not node.name.startswith("_"):
                defined[node.name].append(module)
    assert {name: where for name, where in defined.items() if len(where) > 1} == {}
