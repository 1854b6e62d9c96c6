"""The import contract ([tool.importlinter] in pyproject.toml) holds, and the check is not vacuous:
a backwards import planted in a copy of the sources breaks it."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SCRIPT = Path(".ci") / "lint_imports.py"
SOURCES = ("pipeline", "extract", "model", "postprocess")


def _lint(root: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(root / SCRIPT)], capture_output=True, text=True, timeout=120)


def test_the_stages_import_only_earlier_stages() -> None:
    result = _lint(REPO)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def _copy_repo(target: Path) -> Path:
    for name in SOURCES:
        shutil.copytree(REPO / name, target / name, ignore=shutil.ignore_patterns("__pycache__"))
    (target / ".ci").mkdir()
    shutil.copy2(REPO / SCRIPT, target / SCRIPT)
    shutil.copy2(REPO / "pyproject.toml", target / "pyproject.toml")
    return target


def test_backwards_imports_and_unplaced_modules_break_the_contract(tmp_path) -> None:
    root = _copy_repo(tmp_path)
    with (root / "extract" / "__init__.py").open("a") as f:
        f.write("\nimport vadpipe.postprocess\n")
    with (root / "model" / "__init__.py").open("a") as f:
        f.write("\nimport vadpipe.cli\n")
    (root / "pipeline" / "newcommand.py").write_text("import vadpipe.errors\n")
    with (root / "pipeline" / "cmd_demo.py").open("a") as f:  # a command calling another: even in a function
        f.write("\n\ndef _planted():\n    from vadpipe.cmd_evaluate import evaluate  # noqa\n")
    with (root / "pipeline" / "detect.py").open("a") as f:  # orchestration reaching up to a command
        f.write("\nimport vadpipe.cmd_report\n")
    result = _lint(root)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "vadpipe.extract is not allowed to import vadpipe.postprocess" in result.stdout
    assert "vadpipe.model is not allowed to import vadpipe.cli" in result.stdout
    assert "- vadpipe.newcommand" in result.stdout  # exhaustive: every pipeline module is placed
    assert "vadpipe.cmd_demo is not allowed to import vadpipe.cmd_evaluate" in result.stdout
    assert "vadpipe.detect is not allowed to import vadpipe.cmd_report" in result.stdout


def test_a_source_package_missing_from_the_wheel_is_refused(tmp_path) -> None:
    root = _copy_repo(tmp_path)
    (root / "extract" / "extra").mkdir()
    (root / "extract" / "extra" / "__init__.py").write_text("")
    result = _lint(root)
    assert result.returncode == 1 and "extract/extra" in result.stdout, result.stdout + result.stderr
