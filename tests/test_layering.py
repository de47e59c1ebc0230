"""Dependencies run one way: manifests and kernels < engine < filters, distill < pipelines.

Every module of the six packages is parsed (imports inside functions too). A package may import
only its own modules and packages of a lower layer; no module imports a private name (leading
underscore) from another module. The checker itself is tested on planted violations, so this test
can fail.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LAYER = {"manifests": 0, "kernels": 0, "engine": 1, "filters": 2, "distill": 2, "pipelines": 3}


def module_name(path: Path, root: Path = ROOT) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(source: str, module: str, is_package: bool = False) -> list[tuple[str, list[str], int]]:
    """``(imported module, names taken from it, line)`` for every project import in ``source``,
    at any depth; relative imports are resolved against ``module``."""
    out = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            out += [(a.name, [], node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            target = node.module or ""
            if node.level:
                base = module.split(".") if is_package else module.split(".")[:-1]
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            out.append((target, [a.name for a in node.names], node.lineno))
    return [(t, names, line) for t, names, line in out if t.split(".")[0] in LAYER]


def violations(source: str, module: str, is_package: bool = False) -> list[str]:
    """What breaks the layering in one module's ``source`` (empty when it is clean)."""
    own = module.split(".")[0]
    found = []
    for target, names, line in imports(source, module, is_package):
        pkg = target.split(".")[0]
        if pkg != own and LAYER[pkg] >= LAYER[own]:
            way = "up" if LAYER[pkg] > LAYER[own] else "sideways"
            found.append(f"{module}:{line} imports {target} ({way}: {own} is layer {LAYER[own]}, "
                         f"{pkg} layer {LAYER[pkg]})")
        for name in names:
            if name.startswith("_") and not name.startswith("__") and target != module:
                found.append(f"{module}:{line} imports the private name {name} from {target}")
    return found


def project_modules() -> list[Path]:
    return sorted(p for pkg in LAYER for p in (ROOT / pkg).rglob("*.py"))


def test_every_module_imports_only_lower_layers_and_public_names():
    found = [v for path in project_modules()
             for v in violations(path.read_text(encoding="utf-8"), module_name(path), path.name == "__init__.py")]
    assert not found, "layering violations:\n" + "\n".join(found)


def test_the_six_packages_are_all_there():
    assert {module_name(p).split(".")[0] for p in project_modules()} == set(LAYER)
    assert len(project_modules()) > 100


@pytest.mark.parametrize("source, module, expected", [
    ("from pipelines.actor_pool import map_stages\n", "engine.synthesize", "up"),
    ("def f():\n    from distill.models import load_student\n", "engine.lm.torch_engine", "up"),
    ("import filters.config\n", "engine.spec.schema", "up"),
    ("from filters.normalize import CHAR_LANGS\n", "distill.eval_report", "sideways"),
    ("from distill.models.attention import packed_allowed\n", "kernels.alibi_attention", "up"),
    ("from engine.teachers.lm import _hash_file\n", "pipelines.evaluate", "private name _hash_file"),
    ("from ..teachers.lm import _has_cuda\n", "engine.spec.schema", "private name _has_cuda"),
])
def test_the_checker_finds_planted_violations(source, module, expected):
    found = violations(source, module)
    assert len(found) == 1 and expected in found[0], found


@pytest.mark.parametrize("source, module", [
    ("from manifests.record import Task\nimport torch\n", "engine.task"),
    ("def f():\n    from engine.models import export\n", "distill.recipe"),
    ("from .quantize import DualCodebook\n", "engine.codec.codec"),
    ("from kernels.backend import pick\n", "kernels.vq"),
    ("from filters import FilterChain\nfrom distill.config import SAMPLING_KEYS\n", "pipelines.evaluate"),
])
def test_the_checker_accepts_downward_and_own_package_imports(source, module):
    assert violations(source, module) == []
