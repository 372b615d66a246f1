"""README's "The code" table maps what to change to the module that holds it: every module of
the core package is in it, and every module it names exists (a module added, split or renamed
without the map fails here)."""
from __future__ import annotations

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
