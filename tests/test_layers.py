"""The layers of the code: every arrow points down (integrations know no Django, common/ knows no app, only the
lab's users know the lab, events/ does not know the dashboard that reads it).

Read from the source with `ast`, over every .py file git tracks (or would: new files not ignored), imports at
module level and inside functions,
relative imports resolved to their package, and `importlib.import_module("...")` / `__import__("...")` with a
literal name. A failure names the file, the line and the import.
"""

import ast
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
APPS = {"templates_app", "autoscaling", "events", "fleet", "dashboard", "demo"}
# Where the lab may be used: the lab itself, the demo (installed only with the lab), the tests and the benchmarks.
LAB_USERS = {"lab", "demo", "tests", "benchmarks"}


@dataclass(frozen=True)
class Import:
    path: str  # relative to the repository root
    line: int
    module: str  # absolute dotted name
    source: str

    def __str__(self):
        return f"{self.path}:{self.line} imports {self.module} ({self.source})"


def tracked_python_files(root=ROOT):
    try:
        listed = subprocess.run(
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard", "--", "*.py"],
            cwd=root,
            capture_output=True,
            check=True,
            timeout=30,
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        # Not a git checkout (an exported tree): every .py file but the virtualenv's and var/.
        return sorted(
            str(p.relative_to(root))
            for p in root.rglob("*.py")
            if not {".venv", "var", ".git", "node_modules"} & set(p.relative_to(root).parts)
        )
    return sorted(name for name in listed.decode().split("\0") if name and (root / name).is_file())


def _package_of(path):
    """The dotted package a file's relative imports start from (a/b/c.py and a/b/__init__.py -> a.b)."""
    return list(Path(path).parent.parts)


def imports_of(path, text):
    """Every module the file imports, as absolute dotted names."""
    found = []
    lines = text.splitlines()
    tree = ast.parse(text, filename=path)
    for node in ast.walk(tree):
        if not isinstance(node, ast.Import | ast.ImportFrom | ast.Call):
            continue
        segment = lines[node.lineno - 1].strip()
        if isinstance(node, ast.Import):
            found += [Import(path, node.lineno, alias.name, segment) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                package = _package_of(path)
                base = package[: len(package) - (node.level - 1)] if node.level > 1 else package
                module = ".".join([*base, *([node.module] if node.module else [])])
                if node.module is None:
                    found += [Import(path, node.lineno, f"{module}.{alias.name}", segment) for alias in node.names]
                    continue
            else:
                module = node.module
            found.append(Import(path, node.lineno, module, segment))
        elif isinstance(node, ast.Call) and node.args:
            name = ast.unparse(node.func)
            first = node.args[0]
            if name in {"importlib.import_module", "import_module", "__import__"} and isinstance(first, ast.Constant):
                if isinstance(first.value, str):
                    found.append(Import(path, node.lineno, first.value, segment))
    return found


def top(module):
    return module.split(".")[0]


def in_tests(path):
    return "tests" in Path(path).parts


@pytest.fixture(scope="module")
def all_imports():
    result = []
    for path in tracked_python_files():
        result += imports_of(path, (ROOT / path).read_text(encoding="utf-8"))
    return result


def violations(all_imports, *, where, forbidden):
    """Imports made by files for which where(path) holds, of modules whose top-level name is in `forbidden`."""
    return [str(imp) for imp in all_imports if where(imp.path) and top(imp.module) in forbidden]


def report(rule, found):
    return f"{rule}:\n  " + "\n  ".join(found)


def test_only_the_lab_the_demo_the_tests_and_the_benchmarks_import_the_lab(all_imports):
    found = violations(
        all_imports,
        where=lambda path: Path(path).parts[0] not in LAB_USERS and not in_tests(path),
        forbidden={"lab"},
    )
    assert not found, report("the lab is imported outside lab/, demo/, tests/, benchmarks/ and */tests/", found)


def test_integrations_know_no_django(all_imports):
    found = violations(
        all_imports,
        where=lambda path: Path(path).parts[0] == "integrations" and not in_tests(path),
        forbidden={"django", "rest_framework", "django_q", "django_filters", "drf_spectacular"},
    )
    assert not found, report("integrations/ imports Django (it must work without Django settings)", found)


def test_integrations_know_no_app_and_no_project(all_imports):
    found = violations(
        all_imports,
        where=lambda path: Path(path).parts[0] == "integrations" and not in_tests(path),
        forbidden=APPS | {"vmautoscale", "common"},
    )
    assert not found, report("integrations/ imports the portal (it is the lowest layer)", found)


def test_the_pipeline_knows_no_django_and_no_app(all_imports):
    """The step commands run on Jenkins agents, with the integrations only (and the portal imports the contract)."""
    found = violations(
        all_imports,
        where=lambda path: Path(path).parts[0] == "pipeline" and not in_tests(path),
        forbidden={"django", "rest_framework", "django_q", "vmautoscale", "common", "lab"} | APPS,
    )
    assert not found, report("pipeline/ imports Django, the portal or the lab", found)


def test_common_knows_no_app(all_imports):
    found = violations(
        all_imports, where=lambda path: Path(path).parts[0] == "common" and not in_tests(path), forbidden=APPS
    )
    assert not found, report("common/ imports an app", found)


def test_access_knows_no_app(all_imports):
    """Roles and the audit trail sit below the apps: the apps register their models with it, not the reverse."""
    found = violations(
        all_imports, where=lambda path: Path(path).parts[0] == "access" and not in_tests(path), forbidden=APPS
    )
    assert not found, report("access/ imports an app", found)


def test_events_do_not_import_the_dashboard(all_imports):
    found = violations(all_imports, where=lambda path: Path(path).parts[0] == "events", forbidden={"dashboard"})
    assert not found, report("events/ imports dashboard/ (the dashboard reads events, not the other way)", found)


def test_the_project_package_does_not_import_the_demo(all_imports):
    found = violations(all_imports, where=lambda path: Path(path).parts[0] == "vmautoscale", forbidden={"demo", "lab"})
    assert not found, report("vmautoscale/ imports the demo or the lab", found)


# --- the checker itself --------------------------------------------------------------------------------------
SAMPLE = """
import os
import lab.core as core
from lab.components import metrics
from . import sibling
from .. import parent_thing
from ..dashboard import charts


def later():
    from lab.standins.metrics import StandinError
    import importlib
    importlib.import_module("lab.components.f5")
    return __import__("django.conf")
"""


def test_the_checker_sees_every_kind_of_import():
    modules = [(imp.line, imp.module) for imp in imports_of("events/api/views.py", SAMPLE)]
    names = {module for _line, module in modules}
    assert {
        "os",
        "lab.core",
        "lab.components",
        "events.api.sibling",
        "events.parent_thing",
        "events.dashboard",
        "lab.standins.metrics",
        "importlib",
        "lab.components.f5",
        "django.conf",
    } == names
    lines = {module: line for line, module in modules}
    assert lines["lab.standins.metrics"] == 11


def test_a_violation_names_the_file_the_line_and_the_import():
    found = violations(imports_of("common/clients.py", "def f():\n    from events import services\n"),
                       where=lambda path: True, forbidden=APPS)  # fmt: skip
    assert found == ["common/clients.py:2 imports events (from events import services)"]


def test_every_tracked_file_is_read():
    files = tracked_python_files()
    assert "manage.py" in files and "tests/test_layers.py" in files
    assert any(name.startswith("integrations/") for name in files)
    assert not any(name.startswith((".venv/", "var/")) for name in files)
