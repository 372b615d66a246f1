"""pyproject.toml and environment.yml list the same packages with the same version bounds."""
from __future__ import annotations

import re
import tomllib

import yaml

from conftest import REPO

# conda-forge names where they differ from PyPI's
CONDA_NAMES = {"torch": "pytorch", "matplotlib": "matplotlib-base"}  # -base: without a GUI toolkit


def split(requirement: str) -> tuple[str, str]:
    name, bound = re.match(r"^([A-Za-z0-9_.-]+)\s*(.*)$", requirement).groups()
    return name.lower(), bound.replace(" ", "")


def test_environment_yml_matches_pyproject():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    pip_deps = dict(split(r) for r in project["dependencies"] + project["optional-dependencies"]["test"])
    pip_deps = {CONDA_NAMES.get(name, name): bound for name, bound in pip_deps.items()}
    conda = yaml.safe_load((REPO / "environment.yml").read_text())["dependencies"]
    conda_deps = dict(split(d) for d in conda if isinstance(d, str))
    python = conda_deps.pop("python")
    assert python == ">=" + project["requires-python"].lstrip(">=")
    assert conda_deps == pip_deps


def test_every_dependency_has_a_lower_bound():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    for requirement in project["dependencies"] + project["optional-dependencies"]["test"]:
        name, bound = split(requirement)
        assert bound.startswith(">="), f"{name}: no lower bound ({requirement!r})"


def test_report_dependency_is_declared():
    """`snakemake --report` (README) fails with 'Python package pygments must be installed'
    unless pygments is there; nothing else pulls it in (pytest 8.0 does not)."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert "pygments" in dict(split(r) for r in project["dependencies"])


def test_snakefile_asks_for_the_declared_snakemake():
    """An older snakemake than the bound stops at min_version with the version it needs; without
    it snakemake 9.10 read the workflow and then failed `--profile profiles/gpu` in common.smk
    with "'int' object has no attribute 'value'"."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    bound = dict(split(r) for r in project["dependencies"])["snakemake"]
    asked = re.findall(r'^min_version\("([^"]+)"\)', (REPO / "workflow/Snakefile").read_text(), re.M)
    assert [">=" + v for v in asked] == [bound]
