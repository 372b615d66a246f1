"""pyproject.toml and environment.yml list the same packages with the same version bounds."""
from __future__ import annotations

import os
import re
import subprocess
import tomllib

import pytest
import yaml

from conftest import REPO
from scripts_import import load_script

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


def lower_bounds_script():
    return load_script("lower_bounds", folder=".ci")


def test_the_lower_bounds_check_pins_every_declared_dependency_at_its_bound():
    """.ci/lower_bounds.py installs what pyproject.toml declares, each at its lower bound: a
    dependency added to pyproject.toml is in the check without an edit of the script."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    declared = dict(split(r) for r in project["dependencies"] + project["optional-dependencies"]["test"])
    script = lower_bounds_script()
    assert script.declared_pins() == {name: bound.removeprefix(">=") for name, bound in declared.items()}
    assert script.WITHOUT_DEPENDENCIES <= declared.keys()


def test_a_package_installed_without_dependencies_gets_what_nothing_provides_at_its_lower_bound():
    script = lower_bounds_script()
    requires = ["numpy<3,>=2.4.5", "snakemake_executor_plugin_slurm_jobstep<1,>=0.6.0", "throttler (>=1.2.2)",
                'pytest-mock>=3; extra == "test"']
    assert script.missing_requirements(requires, {"numpy"}) == {
        "snakemake-executor-plugin-slurm-jobstep": "0.6.0", "throttler": "1.2.2"}
    with pytest.raises(ValueError, match="'throttler': expected a lower bound"):
        script.missing_requirements(["throttler"], set())


@pytest.mark.parametrize("installed, pin, same", [("2.13.0+cpu", "2.13", True), ("6.0", "6.0", True),
                                                  ("0.13.2", "0.13", False), ("3.8.0", "3.8", True),
                                                  ("1.26.4", "1.26", False)])
def test_an_installed_version_is_its_pin_with_zeros_padded_and_local_labels_ignored(installed, pin, same):
    assert lower_bounds_script().same_version(installed, pin) is same


def test_the_lower_bounds_check_wants_a_new_folder(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        lower_bounds_script().main(["--venv", str(tmp_path)])
    assert exit_info.value.code == 2 and f"--venv {tmp_path}: exists" in capsys.readouterr().err


def test_the_lower_bounds_check_runs_the_test_command_in_the_venv_it_built(tmp_path, monkeypatch):
    """A relative --venv is the caller's, though pytest runs from the repository's root."""
    script = lower_bounds_script()
    built, ran = [], []
    monkeypatch.setattr(script, "build", lambda venv: built.append(venv) or venv / "bin" / "python")
    monkeypatch.setattr(script.subprocess, "run", lambda command, cwd: ran.append((command, cwd))
                        or subprocess.CompletedProcess(command, 3))
    monkeypatch.chdir(tmp_path)
    assert script.main(["--venv", "lower", "--", "-x", "tests/test_metrics.py"]) == 3  # pytest's status
    assert built == [tmp_path / "lower"]
    assert ran == [([str(tmp_path / "lower" / "bin" / "python"), "-m", "pytest", "-x", "tests/test_metrics.py"], REPO)]


def test_a_clone_made_with_autocrlf_has_lf_line_endings(tmp_path):
    """Git for Windows (and some WSL setups) set core.autocrlf=true: such a clone checked every
    text file out with CRLF, and `bash .ci/run` stopped at once ("set: pipefail\\r: invalid
    option name"). .gitattributes keeps LF; binary study files stay as committed."""
    if not (REPO / ".git").exists():
        pytest.skip("not a git checkout: nothing to clone")
    clone = tmp_path / "clone"
    # a user's git configuration as Git for Windows writes it; safe.directory: a clone another user
    # owns (a shared one) is cloned too (its code runs here anyway; `git -c` does not reach the
    # process that reads it)
    config = tmp_path / "gitconfig"
    config.write_text("[core]\n\tautocrlf = true\n[safe]\n\tdirectory = *\n")
    subprocess.run(["git", "clone", "-q", str(REPO), str(clone)], check=True,
                   env={**os.environ, "GIT_CONFIG_GLOBAL": str(config), "GIT_CONFIG_NOSYSTEM": "1"})
    tracked = subprocess.run(["git", "ls-files", "-z"], cwd=clone, capture_output=True, check=True).stdout
    binary = (".parquet", ".pt", ".png", ".pdf")
    with_cr = [name for name in tracked.decode().split("\0")
               if name and not name.endswith(binary) and b"\r" in (clone / name).read_bytes()]
    assert with_cr == []
    assert subprocess.run(["bash", "-n", str(clone / ".ci" / "run")], capture_output=True).returncode == 0
