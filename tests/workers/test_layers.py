"""The dependency between tasks/ and workers/ runs one way: tasks/ import workers/, never the
reverse, not even lazily inside a function or under TYPE_CHECKING.

The worker loads the task modules by name (workers.factory.TASK_MODULES) and what only tasks
use at run time is declared by tasks/runtime.py as runtime parts (workers/runtime.py), so
nothing in workers/ (or celeryconfig.py, which workers/ builds its app from) names tasks/.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# package (or top-level module) -> the packages it must never import
FORBIDDEN = {"workers": "tasks", "celeryconfig.py": "tasks"}


def imported_modules(path: Path, package: str) -> Iterator[tuple[int, str]]:
    """(line, absolute module name) of every import statement in the file, wherever it is."""
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolved inside the package
                yield node.lineno, f"{package}.{node.module or ''}"
            else:
                yield node.lineno, node.module or ""


def violations(root: Path, forbidden: dict[str, str]) -> list[str]:
    found = []
    for source, target in forbidden.items():
        base = root / source
        files = sorted(base.rglob("*.py")) if base.is_dir() else [base]
        for path in files:
            for line, module in imported_modules(path, source):
                if module == target or module.startswith(target + "."):
                    found.append(f"{path.relative_to(root)}:{line} imports {module}")
    return found


def test_workers_never_import_tasks() -> None:
    assert violations(ROOT, FORBIDDEN) == []


def test_tasks_do_import_workers() -> None:
    """The direction chosen: tasks/ read the routing table and the runtime from workers/."""
    importers = {
        path.name
        for path in (ROOT / "tasks").rglob("*.py")
        for _, module in imported_modules(path, "tasks")
        if module.startswith("workers")
    }
    assert {"maintenance.py", "runtime.py", "warmup.py"} <= importers


def test_the_check_sees_every_kind_of_import(tmp_path: Path) -> None:
    """A lazy import in a function, a TYPE_CHECKING import and a from-import are all caught."""
    package = tmp_path / "workers"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "lazy.py").write_text("def f():\n    import tasks.sources\n")
    (package / "typed.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from tasks.records import R\n"
    )
    (package / "plain.py").write_text("from tasks import warming\nimport taskset\n")
    assert violations(tmp_path, {"workers": "tasks"}) == [
        "workers/lazy.py:2 imports tasks.sources",
        "workers/plain.py:1 imports tasks",
        "workers/typed.py:3 imports tasks.records",
    ]
