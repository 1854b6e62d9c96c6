"""The repository's structural rules, read off the sources (see README "Architecture"):

- a stage package's ``__init__.py`` is a docstring only: code imports each name from the module
  that owns it, so importing ``vadpipe.model`` costs nothing and no name has two homes;
- no private name (``_x``) is imported from another module: what a second module needs is part
  of its owner's public surface;
- no module of the four packages is over 500 lines.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("extract", "model", "postprocess", "pipeline")
STAGES = ("extract", "model", "postprocess")
MAX_LINES = 500


def _modules() -> list[Path]:
    return sorted(p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py") if "__pycache__" not in p.parts)


@pytest.mark.parametrize("stage", STAGES)
def test_a_stage_package_init_is_a_docstring_only(stage: str) -> None:
    tree = ast.parse((ROOT / stage / "__init__.py").read_text())
    body = [node for node in tree.body if not (isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant))]
    assert body == [], f"{stage}/__init__.py holds code (line {body[0].lineno}): import from the owning module"


def test_no_private_name_is_imported_from_another_module() -> None:
    found = []
    for path in _modules():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                private = [a.name for a in node.names if a.name.startswith("_") and not a.name.startswith("__")]
                if private:
                    found.append(f"{path.relative_to(ROOT)}:{node.lineno} imports {', '.join(private)}")
    assert found == [], "\n".join(found)


def test_no_module_is_over_500_lines() -> None:
    long = {str(p.relative_to(ROOT)): n for p in _modules() if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert long == {}, long
