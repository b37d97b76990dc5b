"""The package's shape, read from its source with ``ast``: every module belongs to a layer, no
module imports against the flow config/errors -> runtime/duck/io -> data/models ->
modelcard/simulate -> train/score -> catalog -> bench/demo -> cli, no module is over 400 lines and
no function over 60. Each failure names file:line."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "lensscan"

#: layer of each top-level part of the package; a part may import its own layer and lower ones
LAYER = {"__init__": 0, "config": 0, "errors": 0,
         "runtime": 1, "duck": 1, "io": 1,
         "data": 2, "models": 2,
         "modelcard": 3, "simulate": 3,
         "train": 4, "score": 4,
         "catalog": 5,
         "bench": 6, "demo": 6,
         "cli": 7, "__main__": 7}
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60


def modules(package: Path) -> list[Path]:
    return sorted(package.rglob("*.py"))


def part_of(package: Path, path: Path) -> str:
    """The top-level part a module belongs to: ``lensscan/io/fits.py`` -> ``io``,
    ``lensscan/config.py`` -> ``config``, ``lensscan/__init__.py`` -> ``__init__``."""
    return path.relative_to(package).parts[0].removesuffix(".py")


def is_part(package: Path, name: str) -> bool:
    """Whether ``name`` is a module or subpackage at the top of the package."""
    return (package / f"{name}.py").is_file() or (package / name).is_dir()


def where(package: Path, path: Path, line: int) -> str:
    """``lensscan/io/fits.py:12``: a module's place, from the repository root."""
    return f"{path.relative_to(package.parent)}:{line}"


def imported_parts(package: Path, path: Path, node: ast.AST) -> list[str]:
    """The parts of the package that an import statement reaches (relative imports resolved)."""
    name = package.name
    if isinstance(node, ast.Import):
        targets = [a.name for a in node.names]
    elif isinstance(node, ast.ImportFrom):
        base = node.module or ""
        if node.level:  # relative: from the folder the module is in, level - 1 folders up
            folder = path.relative_to(package.parent).parts[:-1]
            up = folder[:len(folder) - node.level + 1]
            base = ".".join(up) + (f".{base}" if base else "")
        # ``from lensscan import score`` reaches the part ``score``; ``from lensscan import
        # __version__`` (a name, not a module) reaches the package's ``__init__``
        targets = [f"{base}.{a.name}" if is_part(package, a.name) else base
                   for a in node.names] if base == name else [base]
    else:
        return []
    parts = []
    for m in targets:
        dotted = m.split(".")
        if dotted[0] == name:
            parts.append(dotted[1] if len(dotted) > 1 else "__init__")
    return parts


def unlayered(package: Path) -> list[str]:
    """Modules whose part has no layer."""
    return [f"{where(package, p, 1)} part {part_of(package, p)!r} has no layer"
            for p in modules(package)
            if part_of(package, p) not in LAYER]


def against_the_flow(package: Path) -> list[str]:
    """Imports of a higher layer, or of a part with no layer, as ``file:line me -> other``."""
    found = []
    for path in modules(package):
        me = part_of(package, path)
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            for other in imported_parts(package, path, node):
                if other == me:
                    continue
                if other not in LAYER:
                    found.append(f"{where(package, path, node.lineno)} {me} -> {other} "
                                 "(a part with no layer)")
                elif me in LAYER and LAYER[other] > LAYER[me]:
                    found.append(f"{where(package, path, node.lineno)} {me} (layer {LAYER[me]}) "
                                 f"-> {other} (layer {LAYER[other]})")
    return found


def long_modules(package: Path) -> list[str]:
    found = []
    for path in modules(package):
        n = len(path.read_text().splitlines())
        if n > MAX_MODULE_LINES:
            found.append(f"{where(package, path, 1)} {n} lines (at most {MAX_MODULE_LINES})")
    return found


def long_functions(package: Path) -> list[str]:
    found = []
    for path in modules(package):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                n = node.end_lineno - node.lineno + 1
                if n > MAX_FUNCTION_LINES:
                    found.append(f"{where(package, path, node.lineno)} {node.name}() {n} "
                                 f"lines (at most {MAX_FUNCTION_LINES})")
    return found


def test_every_module_belongs_to_a_layer():
    bad = unlayered(PACKAGE)
    assert not bad, "\n".join(bad)


def test_no_import_against_the_flow():
    bad = against_the_flow(PACKAGE)
    assert not bad, "\n".join(bad)


def test_no_module_over_400_lines():
    bad = long_modules(PACKAGE)
    assert not bad, "\n".join(bad)


def test_no_function_over_60_lines():
    bad = long_functions(PACKAGE)
    assert not bad, "\n".join(bad)


@pytest.fixture
def bent_package(tmp_path) -> Path:
    """A small package named ``lensscan`` with one of each fault, and the allowed imports."""
    pkg = tmp_path / "lensscan"
    files = {
        "__init__.py": '"""top"""\n',
        "config.py": "import os\n",
        "io/__init__.py": "",
        "io/fits.py": "from lensscan import __version__, config\nfrom lensscan.errors import E\n",
        "catalog/__init__.py": "from lensscan import io, score\n",
        "io/up.py": "import json\n\n\ndef f():\n    from lensscan.score import pipeline\n",
        "io/rel.py": "from ..data import stream\nfrom . import fits\n",
        "io/top.py": "from lensscan import catalog, io\n",
        "data/__init__.py": "from .stream import read\nfrom ..io.fits import x\n",
        "score/pipeline.py": "import lensscan.models.factory\nimport lensscan.extra\n",
        "extra.py": "import lensscan\n",
        "cli/__init__.py": "from lensscan.score import pipeline\n",
        "big.py": "x = 1\n" * (MAX_MODULE_LINES + 1),
        "models/long.py": "def short():\n    pass\n\n\nasync def long():\n"
                          + "    pass\n" * MAX_FUNCTION_LINES,
    }
    for name, text in files.items():
        (pkg / name).parent.mkdir(parents=True, exist_ok=True)
        (pkg / name).write_text(text)
    return pkg


def test_the_checks_name_every_fault_by_file_and_line(bent_package):
    p = bent_package
    assert unlayered(p) == ["lensscan/big.py:1 part 'big' has no layer",
                            "lensscan/extra.py:1 part 'extra' has no layer"]
    assert against_the_flow(p) == [
        "lensscan/io/rel.py:1 io (layer 1) -> data (layer 2)",
        "lensscan/io/top.py:1 io (layer 1) -> catalog (layer 5)",
        "lensscan/io/up.py:5 io (layer 1) -> score (layer 4)",
        "lensscan/score/pipeline.py:2 score -> extra (a part with no layer)",
    ]
    assert long_modules(p) == [f"lensscan/big.py:1 {MAX_MODULE_LINES + 1} lines (at most 400)"]
    assert long_functions(p) == [f"lensscan/models/long.py:5 long() {MAX_FUNCTION_LINES + 1} "
                                 "lines (at most 60)"]


def test_the_real_package_is_read():
    """The scan sees the package's modules and their imports (it is not checking nothing)."""
    paths = modules(PACKAGE)
    assert PACKAGE / "config.py" in paths and PACKAGE / "io" / "storage.py" in paths
    fits = PACKAGE / "io" / "fits.py"
    reached = {part for node in ast.walk(ast.parse(fits.read_text()))
               for part in imported_parts(PACKAGE, fits, node)}
    assert {"errors", "io"} <= reached
