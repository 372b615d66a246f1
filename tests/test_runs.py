"""Whole runs through the scripts: pretrain -> finetune, determinism, resume, provenance."""
from __future__ import annotations

import json
import logging
import re

import polars as pl
import pytest
import torch

from s3rec import cli, files, runs, runtime, stacked
from s3rec.data import load_dataset, write_prepared
from s3rec.encoder import Encoder
from s3rec.synthetic import SyntheticSpec, generate
from s3rec.training import LoopState, resumed_processes, time_left
from scripts_import import load_script

SETTINGS = {"model": {"hidden_size": 16, "num_heads": 2, "max_len": 12},
            "pretrain": {"epochs": 2, "batch_size": 32},
            "finetune": {"epochs": 2, "batch_size": 32},
            "eval": {"sampled_negatives": 20}}


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    out = tmp_path_factory.mktemp("data") / "tiny"
    write_prepared(generate(SyntheticSpec(users=60, items=40, attributes=8, seed=5, max_length=15)), out)
    return out


def pretrain(data, out, seed=0, variant="r4", stop_after=None):
    cfg = runs.resolve_config(SETTINGS, variant, seed, device="cpu")
    return runs.pretrain(data, out, cfg, variant, stop_after=stop_after)


def test_pretraining_is_deterministic_and_resumable(tiny_data, tmp_path, caplog):
    whole = pretrain(tiny_data, tmp_path / "whole")
    assert pretrain(tiny_data, tmp_path / "parts", stop_after=1) is None
    assert not (tmp_path / "parts" / "pretrain.pt").exists()
    checkpoint = tmp_path / "parts" / "pretrain.state.pt"
    with caplog.at_level(logging.INFO, logger="s3rec"):
        pretrain(tiny_data, tmp_path / "parts")
    # resumed, not started again: a rerun from epoch 1 would end with the same weights too
    assert f"resuming from {checkpoint} after epoch 1" in caplog.text
    a = files.load_torch(tmp_path / "whole" / "pretrain.pt")["state_dict"]
    b = files.load_torch(tmp_path / "parts" / "pretrain.pt")["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    history = pl.read_csv(tmp_path / "whole" / "pretrain_history.csv")
    assert {"epoch", "loss", "aap", "mip", "map", "sp", "seconds", "instances", "instances_per_s"} <= set(history.columns)
    assert history.height == 2
    assert whole["parameters"]["heads"] == {"aap": 2 * 16 * 4 + 16, "mip": 16 * 16 + 16, "map": 2 * 16 * 4 + 16,
                                            "sp": 16 * 16 + 16}
    assert set(a) >= {"heads.aap.U", "heads.aap.V", "heads.map.U", "heads.mip.weight", "heads.sp.weight"}


DESCRIBE_EXECUTION = runtime.describe_execution


def on_machine(monkeypatch, name):
    """Processes from here on describe themselves as computing on CPU `name`."""
    monkeypatch.setattr(runtime, "describe_execution", lambda device: DESCRIBE_EXECUTION(device) | {"cpu": name})


def test_a_run_resumed_elsewhere_lists_the_processes_that_trained_it(tiny_data, tmp_path, monkeypatch):
    """execution and provenance are the last process's; a resumed run's files also list every
    process that trained epochs, from which epoch on (a run parked on one machine, resumed on
    another). A run trained by one process lists none."""
    whole = pretrain(tiny_data, tmp_path / "whole")
    assert "processes" not in whole and "processes" not in files.load_torch(tmp_path / "whole" / "pretrain.pt")
    on_machine(monkeypatch, "machine A")
    assert pretrain(tiny_data, tmp_path / "parts", stop_after=1) is None
    on_machine(monkeypatch, "machine B")
    resumed = pretrain(tiny_data, tmp_path / "parts")
    assert [(p["first_epoch"], p["execution"]["cpu"]) for p in resumed["processes"]] == [(1, "machine A"), (2, "machine B")]
    assert all(p["provenance"]["versions"]["torch"] == torch.__version__ for p in resumed["processes"])
    assert resumed["execution"]["cpu"] == "machine B"
    assert json.loads((tmp_path / "parts" / "pretrain_run.json").read_text())["processes"] == resumed["processes"]

    def finetune(out, **kwargs):
        cfg = runs.resolve_config(SETTINGS, "r4", 0, device="cpu")
        return runs.finetune(tiny_data, out, cfg, "r4", pretrained=tmp_path / "whole" / "pretrain.pt", **kwargs)

    assert "processes" not in finetune(tmp_path / "bce")
    on_machine(monkeypatch, "machine A")
    assert finetune(tmp_path / "bce-parts", stop_after=1) is None
    on_machine(monkeypatch, "machine C")
    metrics = finetune(tmp_path / "bce-parts")
    assert [(p["first_epoch"], p["execution"]["cpu"]) for p in metrics["processes"]] == [(1, "machine A"), (2, "machine C")]
    assert json.loads((tmp_path / "bce-parts" / "metrics.json").read_text())["processes"] == metrics["processes"]


def test_only_a_run_trained_by_the_process_writing_it_lists_no_processes():
    a, b = {"execution": {"cpu": "A"}}, {"execution": {"cpu": "B"}}
    rows = [{"epoch": 1}, {"epoch": 2}]
    assert resumed_processes(LoopState(epoch=2, history=rows, processes=[{"first_epoch": 1, **a}]), a) == {}
    # resumed after its last epoch (killed before its files): B wrote them, A trained it
    assert resumed_processes(LoopState(epoch=2, history=rows, processes=[{"first_epoch": 1, **a}]), b) == {
        "processes": [{"first_epoch": 1, **a}]}
    # a checkpoint from before processes were recorded, resumed: only the later ones are known
    assert resumed_processes(LoopState(epoch=2, history=rows, processes=[{"first_epoch": 2, **a}]), a) == {
        "processes": [{"first_epoch": 2, **a}]}
    # ... and resumed after its last epoch: which processes trained it is unknown, not "this one"
    assert resumed_processes(LoopState(epoch=2, history=rows, processes=[]), a) == {"processes": []}


def test_a_rerun_into_a_finished_folder_removes_the_outputs_it_replaces(tiny_data, tmp_path, caplog):
    """Before: a rerun by hand (here interrupted) left the earlier run's pretrain.pt and
    pretrain_run.json beside its own one-epoch history, read together as one run; finetuning
    outputs in the same folder, of no pretraining file, stay."""
    out = tmp_path / "run"
    pretrain(tiny_data, out)
    (out / "metrics.json").write_text("{}")
    assert pretrain(tiny_data, out, stop_after=1) is None
    assert not (out / "pretrain.pt").exists() and not (out / "pretrain_run.json").exists()
    assert (out / "metrics.json").exists()
    assert pl.read_csv(out / "pretrain_history.csv")["epoch"].to_list() == [1]
    assert f"earlier finished run this run replaces: {out / 'pretrain.pt'}, {out / 'pretrain_run.json'}" in caplog.text
    caplog.clear()
    assert pretrain(tiny_data, out) is not None  # the resume finds nothing to remove
    assert "earlier finished run" not in caplog.text and (out / "pretrain.pt").exists()


def test_a_killed_write_leaves_no_temporary_in_the_finished_folder(tiny_data, tmp_path, caplog):
    """A SIGKILL (or SLURM's SIGTERM) inside atomic_write skips its clean-up: before, only the
    checkpoint's temporaries were removed, and a history's or metrics' stayed for good."""
    out = tmp_path / "run"
    out.mkdir()
    stale = [out / ".pretrain_history.csv.0616d848.tmp", out / ".pretrain.pt.13836264.tmp",
             out / ".pretrain_run.json.9cc4d64d.tmp"]
    for path in stale:
        path.write_bytes(b"half")
    keep = out / ".notes.1234abcd.tmp"  # not a temporary of this run's files
    keep.write_bytes(b"someone's")
    assert pretrain(tiny_data, out) is not None
    assert not any(path.exists() for path in stale) and keep.exists()
    assert "removing" in caplog.text and ".pretrain_run.json.9cc4d64d.tmp" in caplog.text


def test_a_run_resumed_after_its_last_epoch_writes_its_history(tiny_data, tmp_path, monkeypatch):
    """Killed while writing its outputs after the last epoch, its history then lost (a parked run
    carries the checkpoint alone): before, the rerun finished without pretrain_history.csv."""
    out = tmp_path / "run"
    with monkeypatch.context() as patch:
        patch.setattr(runs, "write_pretrained", lambda *args, **kwargs: (_ for _ in ()).throw(KeyboardInterrupt))
        with pytest.raises(KeyboardInterrupt):
            pretrain(tiny_data, out)
    assert (out / "pretrain.state.pt").exists()
    (out / "pretrain_history.csv").unlink()
    assert pretrain(tiny_data, out) is not None
    assert pl.read_csv(out / "pretrain_history.csv")["epoch"].to_list() == [1, 2]


def test_a_truncated_resume_checkpoint_is_set_aside_and_the_rerun_completes(tiny_data, tmp_path, caplog):
    """A pretrain.state.pt cut short (a killed write, a full disk) once blocked every rerun."""
    out = tmp_path / "run"
    assert pretrain(tiny_data, out, stop_after=1) is None
    checkpoint = out / "pretrain.state.pt"
    checkpoint.write_bytes(checkpoint.read_bytes()[:1000])
    assert pretrain(tiny_data, out) is not None
    assert (out / "pretrain.pt").exists() and (out / "pretrain.state.pt.corrupt").exists()
    assert "pretrain.state.pt" in caplog.text and "starting from epoch 1" in caplog.text
    assert pl.read_csv(out / "pretrain_history.csv")["epoch"].to_list() == [1, 2]


def test_scripts_pretrain_then_finetune(tiny_data, tmp_path):
    out = tmp_path / "r4" / "seed0"
    settings = json.dumps(SETTINGS)
    common = ["--data", str(tiny_data), "--variant", "r4", "--seed", "0", "--out-dir", str(out),
              "--device", "cpu", "--threads", "1"]
    assert load_script("pretrain").main(common + ["--settings", settings]) == 0
    # the finetuning is told nothing of how its checkpoint was pretrained (as the workflow tells
    # an `authors` finetuning: the checkpoint says it)
    finetune_settings = json.dumps({k: v for k, v in SETTINGS.items() if k != "pretrain"})
    assert load_script("finetune").main(common + ["--settings", finetune_settings,
                                                  "--pretrained", str(out / "pretrain.pt")]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["variant"] == "r4" and metrics["seed"] == 0
    assert metrics["wall_seconds"]["pretrain"] > 0
    # which weights it started from: those the pretraining recorded, a digest of pretrain.pt's tensors
    pretrained = json.loads((out / "pretrain_run.json").read_text())["weights_sha256"]
    assert metrics["pretrained_weights_sha256"] == pretrained
    assert pretrained == runtime.weights_digest(files.load_torch(out / "pretrain.pt")["state_dict"])
    # the finetuned model names its data set, as the pretrained one does (authors_ranking checks it)
    data = runtime.digest(runs.data_files(tiny_data))
    assert files.load_torch(out / "finetune.pt")["data_digest"] == data
    # both finetuning records name the settings the checkpoint was pretrained with, not the
    # finetuning's own pretrain section (a default that trained nothing)
    pretrain_settings = files.load_torch(out / "pretrain.pt")["config"]["pretrain"]
    assert json.loads(json.dumps(files.load_torch(out / "finetune.pt")["config"])) == metrics["config"]
    assert metrics["config"]["pretrain"] == pretrain_settings
    # and both run records, which the study folder keeps (park_runs restore checks them)
    assert metrics["data_sha256"] == json.loads((out / "pretrain_run.json").read_text())["data_sha256"] == data
    assert metrics["provenance"]["versions"]["torch"] == torch.__version__  # with its build: +cpu, +cu130
    assert metrics["provenance"]["git_sha"]
    ranks = pl.read_parquet(out / "ranks.parquet")
    assert ranks.height == 60 * 2 * 2  # users x splits x protocols
    assert set(ranks.columns) == {"user_id", "split", "protocol", "rank"}


def test_the_weights_digest_is_of_names_dtypes_shapes_and_values():
    weights = {"b": torch.arange(6.0).reshape(2, 3), "a": torch.tensor(1.5)}
    digest = runtime.weights_digest(weights)
    assert runtime.weights_digest(dict(reversed(weights.items()))) == digest  # key order: none
    assert runtime.weights_digest({**weights, "b": weights["b"].t().contiguous().t()}) == digest  # memory layout: none
    changed = [{**weights, "b": weights["b"] + torch.eye(2, 3) * 1e-7}, {**weights, "b": weights["b"].reshape(3, 2)},
               {**weights, "b": weights["b"].double()}, {"c": weights["b"], "a": weights["a"]}]
    assert len({digest, *map(runtime.weights_digest, changed)}) == 5


def test_provenance_names_the_code_a_run_started_with(tiny_data, tmp_path, monkeypatch):
    # A study run takes hours; commits made meanwhile must not be recorded as the code that ran.
    head = {"sha": "started-at"}
    monkeypatch.setattr(runtime, "git_sha", lambda: head["sha"])
    train = runs.run_epochs

    def commit_while_training(**kwargs):
        head["sha"] = "committed-later"
        return train(**kwargs)

    monkeypatch.setattr(runs, "run_epochs", commit_while_training)
    assert pretrain(tiny_data, tmp_path)["provenance"]["git_sha"] == "started-at"
    head["sha"] = "started-at"
    cfg = runs.resolve_config(SETTINGS, "r4", 0, device="cpu")
    result = runs.finetune(tiny_data, tmp_path / "bce", cfg, "r4", pretrained=tmp_path / "pretrain.pt")
    assert result["provenance"]["git_sha"] == "started-at"


def test_epoch_lines_say_how_long_the_rest_takes(tiny_data, tmp_path, caplog):
    caplog.set_level("INFO", logger="s3rec")
    pretrain(tiny_data, tmp_path / "pre")
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("epoch ")]
    assert lines[0].startswith("epoch 1/2 ") and " eta=0h00m" in lines[0]
    assert lines[1].startswith("epoch 2/2 ") and "eta" not in lines[1]
    caplog.clear()
    cfg = runs.resolve_config(SETTINGS, "r4", 0, device="cpu")
    runs.finetune(tiny_data, tmp_path / "bce", cfg, "r4", pretrained=tmp_path / "pre" / "pretrain.pt")
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("epoch ")]
    assert "eta<=0h00m (or stops after " in lines[0] and "eta" not in lines[-1]


def test_time_left_is_the_mean_epoch_time_the_remaining_epochs():
    assert time_left(600.0, 2, 25, None) == " eta=2h05m"  # 300 s an epoch, 25 left
    assert time_left(600.0, 2, 25, 7) == " eta<=2h05m (or stops after 7 epochs without a better score)"
    assert time_left(600.0, 2, 0, None) == ""  # the last epoch
    assert time_left(600.0, 2, 25, 0) == ""  # early stopping ends the run now


def test_script_reports_a_config_typo_by_name(tiny_data, tmp_path, caplog):
    args = ["--data", str(tiny_data), "--variant", "full", "--out-dir", str(tmp_path),
            "--settings", '{"pretrain": {"epochz": 1}}']
    with pytest.raises(SystemExit) as exit_info:
        load_script("pretrain").main(args)
    assert exit_info.value.code == 2
    assert "unknown config key pretrain.'epochz'" in caplog.text


@pytest.mark.parametrize("variant, message", [
    ("none", "variant 'none' is not pretrained"),
    # before: pretrained with dense heads and labelled authors, the authors' model in the report
    ("authors", "variant 'authors' is the S3Rec authors' released model, not pretrained here"),
])
def test_pretraining_refuses_a_variant_it_does_not_pretrain(tiny_data, tmp_path, variant, message):
    with pytest.raises(ValueError, match=message):
        pretrain(tiny_data, tmp_path / "run", variant=variant)
    assert not (tmp_path / "run").exists()


def test_pretraining_checks_the_finetunings_evaluation_only_when_settings_give_it(tiny_data, tmp_path, caplog):
    """40 items leave fewer than the default 99 sampled negatives. Before, scripts/pretrain.py
    refused every workflow pretraining of such a data set: the workflow gives pretraining jobs
    no eval section, so the check ran on the defaults, not on the study's eval settings."""
    pretrain_script = load_script("pretrain")
    settings = {"model": SETTINGS["model"], "pretrain": {"epochs": 1, "batch_size": 32}}
    common = ["--data", str(tiny_data), "--variant", "r4", "--device", "cpu", "--threads", "1"]
    assert pretrain_script.main([*common, "--out-dir", str(tmp_path / "a"), "--settings", json.dumps(settings)]) == 0
    assert (tmp_path / "a" / "pretrain.pt").exists()
    with pytest.raises(SystemExit) as stop:  # an eval section is the finetunings': checked before pretraining
        pretrain_script.main([*common, "--out-dir", str(tmp_path / "b"), "--settings",
                              json.dumps({**settings, "eval": {"sampled_negatives": 99}})])
    assert stop.value.code == 2 and "eval.sampled_negatives needs 99" in caplog.text
    assert not (tmp_path / "b" / "pretrain_history.csv").exists()


@pytest.mark.parametrize("settings, message", [
    ({"seed": 7}, "--settings: seed 7, but the run's seed is 0 (--seed): give it there"),
    ({"model": {"rank": 8}}, "--settings: model.rank 8, but variant 'r4' has rank 4: the variant sets it"),
])
def test_a_seed_or_rank_in_settings_other_than_the_flags_is_refused(settings, message):
    """Before, both were replaced without a word: the run logged and recorded seed 0 and rank 4."""
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        runs.resolve_config(settings, "r4", 0)
    assert runs.resolve_config({"seed": 0, "model": {"rank": 4}}, "r4", 0).model.rank == 4  # the same: taken


def test_the_flags_replace_what_the_settings_say_of_where_and_how_a_run_executes():
    """--seed, --device, --threads and --compile win over the settings; the variant sets the rank,
    and a dense variant records no factorised head."""
    settings = {"device": "cuda", "threads": 4, "compile": "eager"}
    cfg = runs.resolve_config(settings, "full", 3, device="cpu", threads=2, compile="default")
    assert (cfg.seed, cfg.device, cfg.threads, cfg.compile) == (3, "cpu", 2, "default")
    assert (cfg.model.rank, cfg.model.low_rank_heads) == (None, ())
    kept = runs.resolve_config(settings, "r8", 5)  # no flags: the settings' values
    assert (kept.seed, kept.device, kept.threads, kept.compile) == (5, "cuda", 4, "eager")
    assert (kept.model.rank, kept.model.low_rank_heads) == (8, ("aap", "map"))


@pytest.mark.parametrize("flags, message", [
    ({"device": "gpu"}, "device: expected auto, cpu, cuda, cuda:N or cuda:any, got 'gpu'"),
    ({"threads": 0}, "threads: expected an integer >= 1 or null"),
    ({"compile": "fast"}, "compile: expected one of none, eager"),
])
def test_the_flags_are_checked_as_the_settings_are(flags, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        runs.resolve_config({}, "full", 0, **flags)


def test_a_diverged_pretraining_stops_at_its_first_non_finite_epoch(tiny_data, tmp_path, caplog):
    """Before, lr 1e30 gave NaN losses every epoch and a pretrain.pt of NaN weights, exit 0; the
    finetuning then failed with 'score_fn returned NaN for a target item', naming no file."""
    settings = {**SETTINGS, "pretrain": {**SETTINGS["pretrain"], "lr": 1e30}}
    with pytest.raises(SystemExit) as stop:
        load_script("pretrain").main(["--data", str(tiny_data), "--variant", "r4", "--device", "cpu", "--threads", "1",
                                      "--out-dir", str(tmp_path / "p"), "--settings", json.dumps(settings)])
    assert stop.value.code == 2
    assert "training loss nan: the run diverged (learning rate 1e+30); nothing of this epoch was saved" in caplog.text
    assert not (tmp_path / "p" / "pretrain.pt").exists()


def finetune(data, out, variant="r4", seed=0, pretrained=None, stop_after=None, settings=SETTINGS):
    cfg = runs.resolve_config(settings, variant, seed, device="cpu")
    return runs.finetune(data, out, cfg, variant, pretrained=pretrained, stop_after=stop_after)


def test_a_finetuning_without_pretraining_takes_no_checkpoint(tiny_data, tmp_path):
    with pytest.raises(ValueError, match="^variant 'none' takes no --pretrained checkpoint"):
        finetune(tiny_data, tmp_path / "run", "none", pretrained=tmp_path / "pretrain.pt")


class Started(Exception):
    pass


def test_a_finetunings_initial_weights_are_drawn_from_its_seed_alone(tiny_data, tmp_path, monkeypatch):
    """(seed, 0), as the pretraining's: two seeds of `none` start from different weights."""
    initial = {}

    def started(**kwargs):
        initial[kwargs["seed"]] = {k: v.clone() for k, v in kwargs["model"].state_dict().items()}
        raise Started

    monkeypatch.setattr(runs, "run_epochs", started)
    for seed in (0, 1):
        with pytest.raises(Started):
            finetune(tiny_data, tmp_path / str(seed), "none", seed=seed)
        runtime.epoch_generators(seed, 0)
        expected = Encoder(runs.resolve_config(SETTINGS, "none", seed).model, 40).state_dict()  # tiny_data: 40 items
        assert all(torch.equal(initial[seed][k], expected[k]) for k in expected)
    assert not torch.equal(initial[0]["item_embeddings.weight"], initial[1]["item_embeddings.weight"])


def test_a_finetuning_checkpoint_resumes_only_from_the_same_pretrained_weights(tiny_data, tmp_path, caplog):
    """The pretrain.pt is one of a finetuning's inputs: rewritten with other weights (a pretraining
    run again), the finetuning starts afresh instead of resuming the old weights' epochs."""
    pretrain(tiny_data, tmp_path)
    assert finetune(tiny_data, tmp_path / "bce", pretrained=tmp_path / "pretrain.pt", stop_after=1) is None
    saved = files.load_torch(tmp_path / "pretrain.pt")
    saved["state_dict"] = {k: v + 1 if k.startswith("encoder.item") else v for k, v in saved["state_dict"].items()}
    files.save_torch(tmp_path / "pretrain.pt", saved)
    caplog.set_level(logging.INFO, logger="s3rec")
    assert finetune(tiny_data, tmp_path / "bce", pretrained=tmp_path / "pretrain.pt", stop_after=1) is None
    checkpoint = tmp_path / "bce" / "finetune.state.pt"
    assert f"not resuming from {checkpoint} (after epoch 1)" in caplog.text
    assert f"resuming from {checkpoint} after epoch 1" not in caplog.text


def test_an_interrupted_rerun_of_a_finished_finetuning_leaves_only_its_own_files(tiny_data, tmp_path):
    out = tmp_path / "none"
    assert finetune(tiny_data, out, "none") is not None
    assert finetune(tiny_data, out, "none", stop_after=1) is None
    assert sorted(path.name for path in out.iterdir()) == ["finetune.state.pt", "finetune_history.csv"]


def test_validation_ranks_as_the_evaluation_does_with_the_history_left_in(tiny_data, tmp_path):
    """eval.exclude_history false: the best epoch's history row is metrics.json's validation (a
    validation that left the history out anyway would stop on other numbers)."""
    settings = {**SETTINGS, "finetune": {**SETTINGS["finetune"], "epochs": 1}, "eval": {**SETTINGS["eval"],
                                                                                      "exclude_history": False}}
    result = finetune(tiny_data, tmp_path / "none", "none", settings=settings)
    row = pl.read_csv(tmp_path / "none" / "finetune_history.csv").row(0, named=True)
    for metric, value in result["metrics"]["full"]["valid"].items():
        assert row[f"valid_{metric}"] == pytest.approx(value, rel=1e-9, abs=1e-12), metric


def test_a_dict_without_weights_is_no_pretrain_pt(tiny_data, tmp_path):
    path = tmp_path / "pretrain.pt"
    files.save_torch(path, {"config": {}, "variant": "full", "seed": 0})
    encoder = Encoder(runs.resolve_config(SETTINGS, "full", 0).model, 40)
    with pytest.raises(ValueError, match=re.escape(f"{path}: not a pretrain.pt (expected a dict with `variant`")):
        runs.load_pretrained_encoder(encoder, path, "full", 0, runs.digest_of_data(tiny_data))


def test_a_pretraining_model_of_other_data_is_refused_naming_both(tiny_data, tmp_path):
    pretrain(tiny_data, tmp_path / "run", stop_after=1)
    dataset = load_dataset(tiny_data)
    model, about = runs.load_pretraining_model(tmp_path / "run" / "pretrain.state.pt", dataset, tiny_data)
    assert about == {"variant": "r4", "epoch": 1} and not model.training
    other = tmp_path / "other"
    write_prepared(generate(SyntheticSpec(users=60, items=40, attributes=8, seed=6, max_length=15)), other)
    message = (f"{tmp_path / 'run' / 'pretrain.state.pt'} was trained on other data than sequences.parquet + "
               f"item_attributes.parquet of {other}")
    with pytest.raises(ValueError, match=re.escape(message)):
        runs.load_pretraining_model(tmp_path / "run" / "pretrain.state.pt", dataset, other)


def test_the_training_scripts_pass_their_flags_and_settings_to_s3rec(monkeypatch, tmp_path):
    """What scripts/pretrain.py and finetune.py hand on (the runs replaced by a record of their
    call): the data, out dir(s) and variant; a config of --settings with --seed, --device,
    --threads and --compile over it, and without --compile the settings' mode (not none); the
    finetuning's checkpoint; the finetunings' evaluation checked before a pretraining, one seed
    or stacked, only when --settings has an eval section; logging set up for the job's log."""
    calls, logged = [], []
    monkeypatch.setattr(cli, "setup_logging", lambda *args: logged.append(args))
    for module, name in ((runs, "pretrain"), (stacked, "pretrain_stacked"), (runs, "finetune")):
        monkeypatch.setattr(module, name, lambda *args, name=name, **kwargs: calls.append((name, args, kwargs)))
    data, out = tmp_path / "data", [tmp_path / "a", tmp_path / "b"]
    settings = {"compile": "eager", "threads": 4}
    common = ["--data", str(data), "--variant", "r4", "--settings"]

    def call(script, *args):
        assert load_script(script).main([*common, *args]) == 0
        assert logged.pop() == ()  # INFO lines with the time (cli.setup_logging)
        name, args, kwargs = calls.pop()
        cfg = args[2]
        return name, args[:2] + args[3:], kwargs, (cfg.seed, cfg.device, cfg.threads, cfg.compile, cfg.model.rank)

    assert call("pretrain", json.dumps(settings), "--seed", "3", "--out-dir", str(out[0]), "--device", "cpu",
                "--threads", "2") == ("pretrain", (data, out[0], "r4"), {"check_evaluation": False},
                                      (3, "cpu", 2, "eager", 4))
    with_eval = json.dumps({**settings, "eval": {"sampled_negatives": 20}})
    assert call("pretrain", with_eval, "--out-dir", str(out[0]), "--compile", "none") == (
        "pretrain", (data, out[0], "r4"), {"check_evaluation": True}, (0, "auto", 4, "none", 4))
    for given, check in ((settings, False), ({**settings, "eval": {}}, True)):  # each seed's config its own
        assert call("pretrain", json.dumps({**given, "compile": "none"}), "--seed", "5", "6", "--out-dir",
                    *map(str, out))[:3] == ("pretrain_stacked", (data, out, "r4", [5, 6]), {"check_evaluation": check})
    checkpoint = tmp_path / "pretrain.pt"
    assert call("finetune", json.dumps(settings), "--seed", "7", "--out-dir", str(out[1]), "--pretrained",
                str(checkpoint), "--device", "cpu", "--threads", "1") == (
        "finetune", (data, out[1], "r4"), {"pretrained": checkpoint}, (7, "cpu", 1, "eager", 4))
    assert call("finetune", json.dumps(settings), "--out-dir", str(out[1]), "--compile", "default")[1:] == (
        (data, out[1], "r4"), {"pretrained": None}, (0, "auto", 4, "default", 4))
