"""RunConfig.compile: pretraining steps padded to max_len, their losses by grid_forward, the
whole loss through torch.compile. On the CPU the path is rehearsed with dynamo's eager backend
(`compile: eager`: traced as one graph, run uncompiled), which checks everything but the
compiler: that a run trains as the eager step does, is deterministic, resumes across modes
and records its mode; scripts/pretrain.py and the workflow pass the mode on."""
from __future__ import annotations

import json

import polars as pl
import pytest
import torch
import yaml

from s3rec import files, runs
from s3rec.config import COMPILE_MODES, RunConfig
from s3rec.data import write_prepared
from s3rec.pretraining import LOSS_NAMES
from s3rec.synthetic import SyntheticSpec, generate
from scripts_import import load_script
from test_workflow import REPO, TINY, run_snakemake, workdir, write_config  # noqa: F401 (workdir: a fixture)

# Dropout off: the padded step draws dropout masks of another shape, hence other masks.
SETTINGS = {"model": {"hidden_size": 16, "num_heads": 2, "max_len": 12, "hidden_dropout": 0.0,
                      "attention_dropout": 0.0},
            "pretrain": {"epochs": 2, "batch_size": 32, "preset": "paper", "batching": "padded"},
            "eval": {"sampled_negatives": 20}}
LOSS_COLUMNS = ["loss", *LOSS_NAMES]


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    out = tmp_path_factory.mktemp("data") / "tiny"
    write_prepared(generate(SyntheticSpec(users=60, items=40, attributes=8, seed=5, max_length=15)), out)
    return out


def pretrain(data, out, compile, stop_after=None, settings=SETTINGS):
    cfg = runs.resolve_config(settings, "r4", 0, device="cpu", compile=compile)
    return runs.pretrain(data, out, cfg, "r4", stop_after=stop_after)


def history(out):
    return pl.read_csv(out / "pretrain_history.csv").select(LOSS_COLUMNS).to_numpy()


def weights(out):
    return files.load_torch(out / "pretrain.pt")["state_dict"]


@pytest.mark.filterwarnings("ignore:.*torch.jit.script_method.*:DeprecationWarning")  # torch.compile's own imports
def test_the_compiled_step_trains_as_the_eager_one(tiny_data, tmp_path, monkeypatch):
    """Two epochs: the same losses every epoch and the same weights, to float32 rounding. The
    eager step as on a GPU, one chunk a step: on a CPU it builds a batch in chunks of similar
    length, one after another, which draws the same distributions in another order."""
    monkeypatch.setattr(runs, "chunk_bounds", lambda device: ())
    eager = pretrain(tiny_data, tmp_path / "none", "none")
    traced = pretrain(tiny_data, tmp_path / "eager", "eager")
    assert eager["config"]["compile"] == "none" and traced["config"]["compile"] == "eager"
    torch.testing.assert_close(torch.tensor(history(tmp_path / "eager")), torch.tensor(history(tmp_path / "none")),
                               rtol=1e-5, atol=1e-6)
    a, b = weights(tmp_path / "none"), weights(tmp_path / "eager")
    assert a.keys() == b.keys()  # compiling a method leaves the module's state dict as it was
    for name in a:
        torch.testing.assert_close(b[name], a[name], rtol=1e-4, atol=5e-5, msg=name)


@pytest.mark.filterwarnings("ignore:.*torch.jit.script_method.*:DeprecationWarning")
def test_compiled_runs_are_deterministic_and_resume_from_an_eager_checkpoint(tiny_data, tmp_path):
    settings = {**SETTINGS, "model": {**SETTINGS["model"], "hidden_dropout": 0.3}}  # with dropout this time
    pretrain(tiny_data, tmp_path / "whole", "eager", settings=settings)
    assert pretrain(tiny_data, tmp_path / "parts", "eager", stop_after=1, settings=settings) is None
    pretrain(tiny_data, tmp_path / "parts", "eager", settings=settings)
    whole, parts = weights(tmp_path / "whole"), weights(tmp_path / "parts")
    assert all(torch.equal(whole[k], parts[k]) for k in whole)
    # compile is an execution setting: an eager run's checkpoint resumes (its epoch is kept).
    assert pretrain(tiny_data, tmp_path / "mixed", "none", stop_after=1, settings=settings) is None
    first = history(tmp_path / "mixed")
    pretrain(tiny_data, tmp_path / "mixed", "eager", settings=settings)
    assert history(tmp_path / "mixed").shape == (2, len(LOSS_COLUMNS))
    assert (history(tmp_path / "mixed")[0] == first[0]).all()


def test_a_compile_mode_is_checked():
    with pytest.raises(ValueError, match="compile: expected one of none, eager, default, reduce-overhead"):
        RunConfig.from_dict({"compile": "fast"})
    with pytest.raises(ValueError, match="compile: expected one of"):
        runs.resolve_config(SETTINGS, "r4", 0, compile="fast")
    with pytest.raises(SystemExit):
        load_script("pretrain").main(["--data", "x", "--variant", "r4", "--out-dir", "y", "--compile", "fast"])


def test_cuda_graph_steps_need_a_cuda_device(tiny_data, tmp_path):
    """compile: cuda-graph (s3rec/cuda_graphs.py; tests/test_cuda.py runs it): a clear error on a
    CPU, before any epoch, and nothing written."""
    with pytest.raises(ValueError, match="compile: cuda-graph records CUDA graphs and needs a CUDA device; this run "
                                         "is on cpu"):
        pretrain(tiny_data, tmp_path / "run", "cuda-graph")
    assert not (tmp_path / "run" / "pretrain_history.csv").exists()


@pytest.mark.filterwarnings("ignore:.*torch.jit.script_method.*:DeprecationWarning")
def test_the_script_takes_compile_and_records_it(tiny_data, tmp_path):
    out = tmp_path / "run"
    load_script("pretrain").main(["--data", str(tiny_data), "--variant", "r4", "--seed", "0", "--out-dir", str(out),
                                  "--settings", json.dumps(SETTINGS), "--device", "cpu", "--compile", "eager"])
    run = json.loads((out / "pretrain_run.json").read_text())
    assert run["config"]["compile"] == "eager" and run["epochs"] == 2


def test_the_workflow_passes_compile_to_the_training_jobs(workdir):
    schema = yaml.safe_load((REPO / "workflow/schemas/config.schema.yaml").read_text())
    assert schema["properties"]["compile"]["enum"] == list(COMPILE_MODES)
    assert yaml.safe_load((REPO / "config/config.yaml").read_text())["compile"] == "none"
    for mode in ("none", "reduce-overhead"):
        result = run_snakemake(workdir, "-n", "--printshellcmds", "--configfile",
                               write_config(workdir, {**TINY, "compile": mode}))
        commands = [line for line in result.stdout.splitlines() if line.startswith("Shell command: python ")]
        training = [line for line in commands if "scripts/pretrain.py" in line or "scripts/finetune.py" in line]
        assert {"pretrain", "finetune"} <= {line.split("scripts/")[1].split(".py")[0] for line in training}
        assert all(f"--compile {mode} " in line for line in training)
        assert not [line for line in commands if "--compile" in line and line not in training]
    bad = run_snakemake(workdir, "-n", "--configfile", write_config(workdir, {**TINY, "compile": "fast"}), check=False)
    assert bad.returncode != 0 and "compile" in bad.stdout + bad.stderr


def test_finetuning_takes_cuda_graph_on_cuda_only_and_trains_the_eager_step_under_other_modes(tiny_data, tmp_path):
    """compile reaches finetuning too (scripts/finetune.py --compile): cuda-graph records its
    steps (tests/test_cuda.py), and is an error on a CPU before anything is written; the
    torch.compile modes leave finetuning eager, and the run records the mode."""
    settings = {**SETTINGS, "finetune": {"epochs": 1, "batch_size": 32}}
    cfg = runs.resolve_config(settings, "none", 0, device="cpu", compile="cuda-graph")
    with pytest.raises(ValueError, match="compile: cuda-graph records CUDA graphs and needs a CUDA device"):
        runs.finetune(tiny_data, tmp_path / "graph", cfg, "none")
    assert not (tmp_path / "graph").exists()
    out = tmp_path / "eager"
    load_script("finetune").main(["--data", str(tiny_data), "--variant", "none", "--seed", "0", "--out-dir", str(out),
                                  "--settings", json.dumps(settings), "--device", "cpu", "--compile", "default"])
    assert json.loads((out / "metrics.json").read_text())["config"]["compile"] == "default"
