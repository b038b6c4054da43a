"""The house as the README draws it: every module imports only modules listed before it (no circles, no
import from a higher floor back down), and no private name crosses a module boundary."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "hf_distill"

# The README's "Layout" list, from the ground floor up.
FLOORS = [
    "errors",
    "kinds",
    "data",
    "prompts",
    "st_format",
    "metrics",
    "teachers.models",
    "teachers.runner",
    "teachers.vllm_backend",
    "teachers",
    "students",
    "collators",
    "losses",
    "training_args",
    "trainer",
    "model_loading",
    "evaluation",
    "reports",
    "retrieval",
    "mining",
    "model_card",
    "hub",
    "cli",
    "recipe",
]


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> list[tuple[str, list[str]]]:
    """(imported hf_distill module, names taken from it) for every import in the file, lazy ones included."""
    module = _module_name(path)
    package = module.rsplit(".", 1)[0] if "." in module and path.name != "__init__.py" else module
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package if path.name == "__init__.py" else (module.rsplit(".", 1)[0] if "." in module else "")
                for _ in range(node.level - 1):
                    base = base.rsplit(".", 1)[0] if "." in base else ""
                target = ".".join(part for part in (base, node.module or "") if part)
            elif node.module and node.module.startswith("hf_distill"):
                target = node.module[len("hf_distill.") :] if node.module != "hf_distill" else ""
            else:
                continue
            found.append((target, [alias.name for alias in node.names]))
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("hf_distill."):
                    found.append((alias.name[len("hf_distill.") :], []))
    return found


def test_every_module_is_on_the_readme_layout():
    modules = {_module_name(path) for path in PACKAGE.rglob("*.py")} - {""}
    assert modules == set(FLOORS)


def test_imports_only_point_to_lower_floors():
    upward = []
    for path in PACKAGE.rglob("*.py"):
        module = _module_name(path)
        if not module:
            continue  # the package face re-exports everything, lazily
        for target, _ in _imports(path):
            if target and FLOORS.index(target) >= FLOORS.index(module):
                upward.append(f"{module} -> {target}")
    assert not upward


def test_no_private_name_is_imported_across_modules():
    crossing = [
        f"{_module_name(path)} takes {name} from {target}"
        for path in PACKAGE.rglob("*.py")
        for target, names in _imports(path)
        for name in names
        if name.startswith("_") and target != _module_name(path)
    ]
    assert not crossing
