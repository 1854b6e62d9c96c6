"""Check the import contract in pyproject.toml ([tool.importlinter]) on the installed layout.

Why not plain `lint-imports`: setuptools maps `vadpipe` -> pipeline/ and each stage to its own
folder (`vadpipe.extract` -> extract/, ...). grimp finds a package's modules by walking the
folder of its top-level package, so on the source tree or an editable install it sees pipeline/
only and would pass while checking none of the stages. This script copies the sources into the
layout a wheel installs (read from [tool.setuptools] package-dir and packages) in a temporary
folder and runs import-linter there. It also refuses a source package that `packages` does not
list: a wheel would ship without it, and the contract would not see it.

It then looks for import cycles between modules (grimp's graph counts every import statement:
module level, inside functions and under TYPE_CHECKING); the layers contract cannot see a cycle
inside one layer. tests/test_import_cycles.py runs the same check.

Usage: python .ci/lint_imports.py   (exit status 0 when every contract is kept and no cycle exists)
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: the import-linter releases for it depend on tomli
    import tomli as tomllib

ROOT = Path(__file__).resolve().parent.parent


def package_sources(pyproject: Path) -> dict[str, Path]:
    """Map each package the wheel installs to its source folder, as setuptools resolves it."""
    setup = tomllib.loads(pyproject.read_text())["tool"]["setuptools"]
    package_dir: dict[str, str] = setup.get("package-dir", {})
    sources: dict[str, Path] = {}
    for package in setup["packages"]:
        parts = package.split(".")
        for cut in range(len(parts), 0, -1):  # the longest mapped prefix wins
            prefix = ".".join(parts[:cut])
            if prefix in package_dir:
                sources[package] = ROOT / package_dir[prefix] / Path(*parts[cut:])
                break
        else:
            sources[package] = ROOT / Path(*parts)
    return sources


def unlisted_packages(sources: dict[str, Path]) -> list[Path]:
    """Folders with an __init__.py under a listed package that are not listed themselves."""
    listed = {path.resolve() for path in sources.values()}
    return sorted(
        init.parent
        for path in sources.values()
        for init in path.rglob("__init__.py")
        if init.parent.resolve() not in listed and "__pycache__" not in init.parts
    )


def mirror(sources: dict[str, Path], target: Path) -> None:
    """Copy each package's own .py files to where the wheel would put them."""
    for package, source in sources.items():
        dest = target / Path(*package.split("."))
        dest.mkdir(parents=True, exist_ok=True)
        for module in source.glob("*.py"):
            shutil.copy2(module, dest / module.name)


def import_cycles(layout: Path, package: str = "vadpipe") -> list[list[str]]:
    """Every set of modules that import each other, directly or around a loop (Tarjan's SCCs).

    ``layout`` is a folder holding ``package`` as a wheel installs it (see ``mirror``).
    """
    import grimp

    sys.path.insert(0, str(layout))
    try:
        graph = grimp.build_graph(package, cache_dir=None)
    finally:
        sys.path.remove(str(layout))
    modules = sorted(graph.modules)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(root: str) -> None:  # iterative Tarjan: the graph may be deeper than the recursion limit
        work = [(root, iter(sorted(graph.find_modules_directly_imported_by(root))))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.find_modules_directly_imported_by(child)))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    cycles.append(sorted(component))

    for module in modules:
        if module not in index:
            visit(module)
    return sorted(cycles)


def main() -> int:
    pyproject = ROOT / "pyproject.toml"
    sources = package_sources(pyproject)
    missing = [f"{package} -> {path}" for package, path in sources.items() if not path.is_dir()]
    if missing:
        print(f"pyproject.toml lists packages without a folder: {', '.join(missing)}")
        return 1
    unlisted = unlisted_packages(sources)
    if unlisted:
        names = ", ".join(str(path.relative_to(ROOT)) for path in unlisted)
        print(f"not in [tool.setuptools] packages (a wheel would not ship them): {names}")
        return 1
    try:
        from importlinter.cli import lint_imports
    except ModuleNotFoundError:
        print("import-linter is not installed: pip install -e '.[test]' (or make setup)")
        return 2

    with tempfile.TemporaryDirectory(prefix="vadpipe-imports-") as tmp:
        mirror(sources, Path(tmp))
        os.chdir(tmp)  # lint_imports puts the working folder first on sys.path
        status = lint_imports(config_filename=str(pyproject), no_cache=True, no_logo=True)
        cycles = import_cycles(Path(tmp))
    for cycle in cycles:
        print(f"import cycle between {len(cycle)} modules: {', '.join(cycle)}")
    return status or (1 if cycles else 0)


if __name__ == "__main__":
    sys.exit(main())
