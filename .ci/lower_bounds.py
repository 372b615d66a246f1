#!/usr/bin/env python3
"""Install exactly the lower bounds of pyproject.toml's dependencies (the test extra's too) in a
new virtual environment, and run the README's test command there: the check behind "every lower
bound is a version the test suite was run with" (the comment above pyproject.toml's
dependencies). About 15 minutes on a 2-core machine; not part of .ci/run, which keeps to 20.

    python3 .ci/lower_bounds.py [--venv DIR] [-- PYTEST_ARGUMENTS...]

Exit status: pytest's; 2 when the environment cannot be built as asked.
"""
from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

# Installed without their dependencies: the SLURM plugin 2.8 asks for numpy >= 2.4.5 and pyyaml
# >= 6.0.3, above the project's own bounds, so pip cannot resolve the set with it. Its other
# requirements, where nothing installed provides them, get their own lower bounds.
WITHOUT_DEPENDENCIES = {"snakemake-executor-plugin-slurm"}


def normalised(name: str) -> str:
    """A distribution name as PEP 503 compares them."""
    return re.sub(r"[-_.]+", "-", name).lower()


def lower_bound(requirement: str) -> tuple[str, str]:
    """("numpy", "1.26") from "numpy>=1.26"; a requirement with no lower bound is an error."""
    match = re.match(r"^\s*([A-Za-z0-9_.-]+)\s*(?:\[[^]]*\])?\s*([^;]*)", requirement)
    bound = re.search(r">=\s*([0-9][A-Za-z0-9.]*)", match.group(2)) if match else None
    if bound is None:
        raise ValueError(f"{requirement!r}: expected a lower bound (>=)")
    return normalised(match.group(1)), bound.group(1)


def declared_pins(pyproject: Path = REPO / "pyproject.toml") -> dict[str, str]:
    """{distribution: its lower bound} of the dependencies and the test extra."""
    project = tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]
    return dict(lower_bound(r) for r in project["dependencies"] + project["optional-dependencies"]["test"])


def missing_requirements(requires: list[str], installed: set[str]) -> dict[str, str]:
    """Requirements of a package installed without dependencies that nothing installed provides,
    each at its lower bound; a requirement under a marker (an extra, another platform) is left out."""
    missing = {}
    for requirement in requires:
        if ";" in requirement:
            continue
        name, bound = lower_bound(requirement)
        if name not in installed:
            missing[name] = bound
    return missing


class NotBuilt(Exception):
    """The environment of the lower bounds could not be built as declared."""


def pip(python: Path, *arguments: str) -> None:
    subprocess.run([str(python), "-m", "pip", "install", "--quiet", *arguments], check=True)


def installed_versions(python: Path) -> dict[str, str]:
    listing = subprocess.run([str(python), "-m", "pip", "list", "--format", "json"], check=True,
                             capture_output=True, text=True).stdout
    return {normalised(entry["name"]): entry["version"] for entry in json.loads(listing)}


def requirements_of(python: Path, name: str) -> list[str]:
    script = f"import importlib.metadata as m, json; print(json.dumps(m.requires({name!r}) or []))"
    return json.loads(subprocess.run([str(python), "-c", script], check=True, capture_output=True,
                                     text=True).stdout)


def same_version(installed: str, pin: str) -> bool:
    """2.13.0+cpu is torch 2.13; 6.0 is pyyaml 6.0 (PEP 440: == pads with zeros)."""
    def release(version):
        parts = [int(p) for p in re.match(r"^[0-9]+(?:\.[0-9]+)*", version).group(0).split(".")]
        while parts and parts[-1] == 0:
            parts.pop()
        return parts
    return release(installed) == release(pin)


def build(venv: Path) -> Path:
    """The environment of the lower bounds; returns its python."""
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    pins = declared_pins()
    # torch first, alone: where a CPU build lies on local disk, pip takes it (README, Install)
    pip(python, f"torch=={pins['torch']}")
    pip(python, *(f"{name}=={version}" for name, version in pins.items() if name not in WITHOUT_DEPENDENCIES))
    for name in sorted(WITHOUT_DEPENDENCIES & pins.keys()):
        pip(python, "--no-deps", f"{name}=={pins[name]}")
        missing = missing_requirements(requirements_of(python, name), set(installed_versions(python)))
        if missing:
            print(f"{name}: its requirements {missing} at their lower bounds, without dependencies", flush=True)
            pip(python, "--no-deps", *(f"{n}=={v}" for n, v in missing.items()))
    pip(python, "--no-deps", "-e", str(REPO))
    versions = installed_versions(python)
    wrong = {name: versions.get(name) for name, pin in pins.items()
             if name not in versions or not same_version(versions[name], pin)}
    if wrong:
        raise NotBuilt(f"installed {wrong}, not the declared lower bounds {pins}")
    print("installed: " + ", ".join(f"{name} {versions[name]}" for name in sorted(pins)), flush=True)
    return python


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--venv", type=Path, default=REPO / ".venv-lower-bounds",
                        help="where to build the environment (must not exist yet)")
    parser.add_argument("pytest_arguments", nargs="*", help="after --: handed to pytest")
    args = parser.parse_args(argv)
    args.venv = args.venv.absolute()  # its python runs pytest from the repository's root
    if args.venv.exists():
        parser.error(f"--venv {args.venv}: exists; give a new folder (or delete this one)")
    try:
        python = build(args.venv)
    except subprocess.CalledProcessError as error:
        print(f"building {args.venv} failed: {' '.join(map(str, error.cmd))} (exit {error.returncode})",
              file=sys.stderr)
        return 2
    except NotBuilt as error:
        print(f"building {args.venv} failed: {error}", file=sys.stderr)
        return 2
    return subprocess.run([str(python), "-m", "pytest", *args.pytest_arguments], cwd=REPO).returncode


if __name__ == "__main__":
    sys.exit(main())
