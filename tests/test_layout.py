"""The shape of the code, checked on its source: which package may import what, and
that every package is installed.

- A database driver (`apsw`, `psycopg`) is imported only inside its own backend
  package, so everything else works through the catalog protocol and sees only
  `casfs.errors`.
- `casfs/` (the core) imports no FUSE code, and never `casfs.mount` or `casfs.tools`.
- pyproject.toml lists every package: one left out would be silently missing from a
  real install (an editable install hides that).
"""

from __future__ import annotations

import ast
import tomllib
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SOURCES = {"casfs": REPO / "casfs", "casfs.mount": REPO / "mount", "casfs.tools": REPO / "tools"}
DRIVERS = {"apsw": "casfs.catalog.sqlite", "psycopg": "casfs.catalog.postgres",
           "obstore": "casfs.blobs.s3"}


def modules() -> Iterator[tuple[str, Path]]:
    """(module name, file) of every source file, as installed."""
    for package, root in SOURCES.items():
        for path in sorted(root.rglob("*.py")):
            relative = path.relative_to(root)
            if package == "casfs" and relative.parts[0] in ("mount", "tools"):
                continue  # the links to mount/ and tools/
            parts = [*package.split("."), *relative.with_suffix("").parts]
            if parts[-1] == "__init__":
                parts.pop()
            yield ".".join(parts), path


def imports(path: Path, module: str) -> Iterator[str]:
    """Every module name `path` imports (relative imports resolved)."""
    tree = ast.parse(path.read_text(), str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - node.level + 1]
                yield ".".join([*base, node.module] if node.module else base)
            elif node.module:
                yield node.module


def test_drivers_are_imported_only_by_their_backends() -> None:
    offenders = []
    for module, path in modules():
        for name in imports(path, module):
            top = name.split(".")[0]
            home = DRIVERS.get(top)
            if home and not (module == home or module.startswith(home + ".")):
                offenders.append(f"{module} imports {name}")
    assert not offenders, offenders
    assert any(True for _ in modules())


def test_the_core_imports_no_fuse_and_no_front_end() -> None:
    offenders = []
    for module, path in modules():
        if module.startswith(("casfs.mount", "casfs.tools")):
            continue
        for name in imports(path, module):
            if name.split(".")[0] in ("pyfuse3", "trio") or \
                    name.startswith(("casfs.mount", "casfs.tools")):
                offenders.append(f"{module} imports {name}")
    assert not offenders, offenders


def test_pyproject_lists_every_package() -> None:
    config = tomllib.loads((REPO / "pyproject.toml").read_text())
    listed = set(config["tool"]["setuptools"]["packages"])
    found = {module for module, path in modules() if path.name == "__init__.py"}
    assert listed == found


def test_commands_that_do_not_mount_load_no_fuse_and_no_driver_they_do_not_use() -> None:
    """`casfs --version`, `casfs search` ... start fast: the parser loads no FUSE, no
    trio, no PostgreSQL or S3 client (each command loads what it uses when it runs)."""
    import subprocess
    import sys

    code = ("import sys, casfs.tools.cli as cli; cli.build_parser(); "
            "print(sorted(m for m in ('pyfuse3', 'trio', 'psycopg', 'obstore') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "[]"
