"""No import cycle between the product's modules, on the layout a wheel installs.

The check is `.ci/lint_imports.py`'s (so `make lint` and this test agree); the second test plants
a cycle to show the check can fail.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

pytest.importorskip("grimp", reason="grimp comes with import-linter (the test extra)")


def _lint_module():
    spec = importlib.util.spec_from_file_location("lint_imports", ROOT / ".ci" / "lint_imports.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


LINT = _lint_module()


def _installed_layout(tmp: Path) -> Path:
    LINT.mirror(LINT.package_sources(ROOT / "pyproject.toml"), tmp)
    return tmp


def _cycles(layout: Path) -> list[list[str]]:
    """In a fresh interpreter: grimp finds ``vadpipe`` through sys.modules when it is already imported."""
    code = (
        "import importlib.util, json, sys\n"
        f"spec = importlib.util.spec_from_file_location('lint_imports', {str(ROOT / '.ci' / 'lint_imports.py')!r})\n"
        "lint = importlib.util.module_from_spec(spec); spec.loader.exec_module(lint)\n"
        f"print(json.dumps(lint.import_cycles(__import__('pathlib').Path({str(layout)!r}))))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(done.stdout)


def test_no_module_imports_itself_back_through_a_cycle(tmp_path: Path) -> None:
    cycles = _cycles(_installed_layout(tmp_path))
    assert cycles == [], "import cycles: " + "; ".join(", ".join(cycle) for cycle in cycles)


def test_a_planted_cycle_is_found_even_inside_a_function(tmp_path: Path) -> None:
    layout = _installed_layout(tmp_path)
    errors = layout / "vadpipe" / "errors.py"  # a leaf: everything may import it, it imports nothing of ours
    errors.write_text(errors.read_text() + "\n\ndef _planted():\n    from vadpipe.extract import cache  # noqa\n")
    cycles = _cycles(layout)
    assert any({"vadpipe.errors", "vadpipe.extract.cache"} <= set(cycle) for cycle in cycles), cycles
