"""docs/operations-guide.md lists exactly the environment variables settings.py reads, and the deployment's env
template only sets variables that exist."""

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SETTINGS = ROOT / "vmautoscale" / "settings.py"
GUIDE = ROOT / "docs" / "operations-guide.md"
ENV_TEMPLATE = ROOT / "scripts" / "deploy" / "vmautoscale.env.template"
ENV_METHODS = {"str", "bool", "int", "float", "list", "networks", "url", "database", "labels"}
TABLE_HEADING = "## Environment variables"


def settings_variables():
    """Names read in settings.py: env.<method>("NAME", ...) and os.environ.get("NAME") / os.getenv("NAME")."""
    names = set()
    for node in ast.walk(ast.parse(SETTINGS.read_text())):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.args):
            continue
        first = node.args[0]
        if not (isinstance(first, ast.Constant) and isinstance(first.value, str)):
            continue
        func, owner = node.func, node.func.value
        via_env = func.attr in ENV_METHODS and isinstance(owner, ast.Name) and owner.id == "env"
        via_os = (func.attr == "get" and ast.unparse(owner) == "os.environ") or ast.unparse(func) == "os.getenv"
        if via_env or via_os:
            names.add(first.value)
    return names


def documented_variables():
    """First-column names of the table under the "Environment variables" heading."""
    text = GUIDE.read_text()
    assert TABLE_HEADING in text, f"{GUIDE} has no '{TABLE_HEADING}' section"
    section = text.split(TABLE_HEADING, 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("|")]
    assert len(rows) > 2, "the environment table is empty"
    names = []
    for row in rows[2:]:  # header and separator
        cell = row.strip("|").split("|")[0].strip()
        match = re.fullmatch(r"`([A-Z][A-Z0-9_]*)`", cell)
        assert match, f"first column must be a `NAME`: {row}"
        names.append(match.group(1))
    return names


def test_settings_parser_sees_the_known_variables():
    # Guards the parser itself: these are read in three different ways in settings.py.
    known = {"DATABASE_URL", "SECRET_KEY", "MONITORING_SSH_PORT", "LAB_ENV_FILE", "ALLOWED_HOSTS"}
    assert known <= settings_variables()


def test_guide_table_lists_exactly_the_settings_variables():
    documented = documented_variables()
    assert len(documented) == len(set(documented)), "a variable is listed twice"
    expected = settings_variables()
    missing = sorted(expected - set(documented))
    stale = sorted(set(documented) - expected)
    assert not missing, (
        f"settings.py reads variables the operations guide does not list: {missing}; add a row (name, default, "
        f"meaning) to the table under '{TABLE_HEADING}' in docs/operations-guide.md"
    )
    assert not stale, f"the operations guide lists variables settings.py no longer reads: {stale}"


def test_env_template_sets_only_known_variables():
    names = [
        line.split("=", 1)[0]
        for line in ENV_TEMPLATE.read_text().splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    assert len(names) == len(set(names))
    assert set(names) - settings_variables() == set()
    # Production must never fall back to the lab's env file, nor run with DEBUG.
    assert "LAB_ENV_FILE=" in ENV_TEMPLATE.read_text().splitlines()
    assert "DEBUG=false" in ENV_TEMPLATE.read_text().splitlines()
