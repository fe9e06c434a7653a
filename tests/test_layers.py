"""adaseg's layers hold (DESIGN.md "Layout"; the contracts are in pyproject.toml): `lint-imports`
passes; nothing under adaseg/ but ``adaseg/__main__.py`` imports ``adaseg.cli`` (cli/ is
installed as adaseg.cli through package_dir, which grimp cannot see, so the contract can only
mark it optional and this test checks it); and the contracts have not been loosened."""

from __future__ import annotations

import ast
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "adaseg"

# Highest first: each layer may import only from the layers below it ("a | b": independent).
LAYERS = [
    "__main__",
    "(cli)",
    "api",
    "analysis | bench",
    "engine | predict",
    "runs",
    "eval",
    "models",
    "data",
    "nn",
    "ops",
    "utils",
    "storage",
    "choices | exact",
]


def test_lint_imports_keeps_every_contract():
    lint_imports = Path(sys.executable).parent / "lint-imports"
    assert lint_imports.is_file(), (f"{lint_imports} is missing: import-linter is a test requirement "
                                    "(pip install --no-build-isolation -e '.[test]')")
    result = subprocess.run([str(lint_imports), "--no-cache"], cwd=ROOT, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout, result.stdout


def _imported_modules(tree: ast.Module, module: str, is_package: bool):
    """Every absolute module name ``tree`` (the source of ``module``) imports, with the line."""
    package = module if is_package else module.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            yield target, node.lineno
            for alias in node.names:  # `from adaseg import cli`
                yield f"{target}.{alias.name}", node.lineno
        elif (isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant)
              and isinstance(node.args[0].value, str)
              and getattr(node.func, "attr", getattr(node.func, "id", None)) in ("import_module", "__import__")):
            yield node.args[0].value, node.lineno


def test_only_main_imports_the_cli():
    offenders = []
    files = sorted(PACKAGE.rglob("*.py"))
    assert len(files) > 50, files  # the scan sees the package
    for path in files:
        rel = path.relative_to(ROOT)
        parts = list(rel.with_suffix("").parts)
        is_package = parts[-1] == "__init__"
        module = ".".join(parts[:-1] if is_package else parts)
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for target, line in _imported_modules(tree, module, is_package):
            if (target == "adaseg.cli" or target.startswith("adaseg.cli.")) and rel != Path("adaseg/__main__.py"):
                offenders.append(f"{rel}:{line} imports {target}")
    assert not offenders, "only adaseg/__main__.py may import adaseg.cli (the CLI sits on top):\n" + "\n".join(offenders)
    main_tree = ast.parse((PACKAGE / "__main__.py").read_text(encoding="utf-8"))
    assert any(t.startswith("adaseg.cli") for t, _ in _imported_modules(main_tree, "adaseg.__main__", False))


def _keys(value, path=()):
    """Every key anywhere in a parsed TOML value, with its path."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield key, path + (key,)
            yield from _keys(item, path + (key,))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from _keys(item, path + (i,))


def test_the_contracts_are_not_loosened():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["importlinter"]
    assert config["root_package"] == "adaseg"
    loosening = [path for key, path in _keys(config)
                 if key in ("ignore_imports", "unmatched_ignore_imports_alerting", "allow_indirect_imports")]
    assert not loosening, f"the import contracts must have no exceptions: {loosening}"
    contracts = config["contracts"]
    layers = [c for c in contracts if c["type"] == "layers"]
    assert len(layers) == 1
    assert layers[0]["containers"] == ["adaseg"] and layers[0]["exhaustive"] is True
    assert layers[0].get("exhaustive_ignores", []) == []
    assert [" | ".join(part.strip() for part in layer.split("|")) for layer in layers[0]["layers"]] == LAYERS
    acyclic = [c for c in contracts if c["type"] == "acyclic_siblings"]
    assert len(acyclic) == 1 and acyclic[0]["ancestors"] == ["adaseg"]
    assert "skip_descendants" not in acyclic[0] and "depth" not in acyclic[0]


def test_every_package_is_in_a_layer():
    """A new top-level package must be placed in the layers (``exhaustive`` enforces it too)."""
    named = {name.strip("() ") for layer in LAYERS for name in layer.split("|")}
    present = {p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").is_file()}
    present |= {p.stem for p in PACKAGE.glob("*.py") if p.stem != "__init__"}
    assert present <= named, present - named
