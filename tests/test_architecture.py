"""The layering contract (pyproject.toml, [tool.importlinter]): imports point down the layers, no cycles
between sibling modules, and the trainer / evaluator / predictor reach the estimator kinds only through
the protocol. Every package of poseforge must sit in a layer, so a new one cannot slip past the contract."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _contracts() -> list[dict]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]


def _lint(config: Path, cwd: Path, pythonpath: Path | None = None) -> subprocess.CompletedProcess:
    """import-linter in a child process (it reconfigures logging, which would silence this process's)."""
    code = ("import sys; from importlinter.cli import lint_imports; "
            f"sys.exit(lint_imports(config_filename={str(config)!r}, no_cache=True))")
    env = {**os.environ, "PYTHONPATH": str(pythonpath)} if pythonpath is not None else None
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, env=env, timeout=300)


def test_the_import_contracts_hold():
    pytest.importorskip("importlinter", reason="import-linter is a [dev] extra")
    proc = _lint(ROOT / "pyproject.toml", ROOT)
    assert proc.returncode == 0, f"an import breaks the layering contract:\n{proc.stdout[-3000:]}"


def test_every_package_is_in_a_layer():
    (layers,) = [c for c in _contracts() if c["type"] == "layers"]
    named = {name.strip() for layer in layers["layers"] for name in layer.split("|")}
    present = {p.stem for p in (ROOT / "poseforge").iterdir()
               if (p.suffix == ".py" and p.stem != "__init__") or (p.is_dir() and (p / "__init__.py").is_file())}
    assert present <= named, f"not in any layer of the contract: {sorted(present - named)}"


def test_the_contract_catches_an_upward_import(tmp_path):
    """The contract is not vacuous: a copy of the package with one upward import (models -> train) breaks it."""
    pytest.importorskip("importlinter", reason="import-linter is a [dev] extra")
    copy = tmp_path / "src"
    shutil.copytree(ROOT / "poseforge", copy / "poseforge", ignore=shutil.ignore_patterns("__pycache__", "assets"))
    (copy / "poseforge" / "assets").mkdir()
    (copy / "poseforge" / "assets" / "__init__.py").write_text((ROOT / "poseforge" / "assets" / "__init__.py").read_text())
    zoo = copy / "poseforge" / "models" / "zoo.py"
    zoo.write_text(zoo.read_text() + "\n\ndef _upward():\n    from ..train import engine  # noqa: F401\n")
    config = tmp_path / "contract.toml"
    config.write_text((ROOT / "pyproject.toml").read_text())
    proc = _lint(config, copy, pythonpath=copy)
    assert proc.returncode != 0 and "poseforge.models.zoo -> poseforge.train.engine" in proc.stdout, proc.stdout[-2000:]
