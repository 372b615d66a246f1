"""Import a file of scripts/ (or benchmarks/) as a module, so tests can call its main(argv)."""
from __future__ import annotations

import importlib.util

from conftest import REPO


def load_script(name: str, folder: str = "scripts"):
    spec = importlib.util.spec_from_file_location(f"{folder}_{name}", REPO / folder / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
