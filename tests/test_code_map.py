"""README's "The code" table maps what to change to the module that holds it: every module of
the core package is in it, and every module it names exists (a module added, split or renamed
without the map fails here); and every module that only the report scripts import is an input of
the report rules, so that an edit to it reruns the tables and figures."""
from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def code_map() -> str:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    return readme.split("\n## The code\n", 1)[1].split("\n## ", 1)[0]


def test_the_code_map_names_every_module_of_the_core_package():
    named = set(re.findall(r"`([a-z_]+\.py)`", code_map()))
    modules = {p.name for p in (ROOT / "s3rec").glob("*.py")} - {"__init__.py"}
    assert modules - named == set(), "modules missing from README's code map"
    assert named - modules == set(), "README's code map names modules that do not exist"


def s3rec_imports(path: Path) -> set[str]:
    """The s3rec modules a file imports (`from s3rec import a, b`, `from s3rec.a import x`,
    `import s3rec.a`), at any depth of the file (lazy imports included)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module == "s3rec":
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("s3rec."):
            found.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            found |= {a.name.split(".")[1] for a in node.names if a.name.startswith("s3rec.")}
    return found


def closure(scripts: list[str]) -> set[str]:
    """Every s3rec module the scripts reach, through the modules they import."""
    seen: set[str] = set()
    todo = set().union(*(s3rec_imports(ROOT / "scripts" / s) for s in scripts))
    while todo:
        module = todo.pop()
        seen.add(module)
        todo |= s3rec_imports(ROOT / "s3rec" / f"{module}.py") - seen
    return seen


REPORT_SCRIPTS = ["aggregate.py", "plot_report.py", "report_study.py"]
# The scripts whose outputs are data and runs, the report's inputs.
TRAINING_SCRIPTS = ["prepare_data.py", "pretrain.py", "finetune.py", "popularity.py", "import_checkpoint.py"]


def test_every_module_only_the_report_imports_reruns_the_report():
    """An edit to a module of the report's own reruns the tables and figures (common.smk's
    REPORT_CODE, an input of each report rule); a module that splits off report.py and is
    left out of it would let a report go stale after its edit."""
    common = (ROOT / "workflow" / "rules" / "common.smk").read_text(encoding="utf-8")
    listed = set(re.findall(r'"s3rec/([a-z_]+)\.py"', common.split("REPORT_CODE = [", 1)[1].split("]", 1)[0]))
    assert set(REPORT_SCRIPTS + TRAINING_SCRIPTS) <= {p.name for p in (ROOT / "scripts").glob("*.py")}
    report_only = closure(REPORT_SCRIPTS) - closure(TRAINING_SCRIPTS)
    assert {"report", "plots", "differences"} <= report_only  # the walk finds the report's modules
    assert report_only - listed == set(), "report modules missing from REPORT_CODE in common.smk"
    assert listed - report_only == set(), "REPORT_CODE names modules the report does not import, or training does"
