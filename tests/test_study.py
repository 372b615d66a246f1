"""The tracked study folder: export (copy, heads, plan) and its report (runs.md, tables, figures)."""
from __future__ import annotations

import json
import re
import logging
import shutil
import types
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch

from s3rec import files, runs, spectra, study_folder
from s3rec.data import leave_one_out, load_dataset
from scripts_import import load_script
from test_run_wiring import jobs_matching, listed_jobs, planned_study_workdir
from test_runs import SETTINGS, tiny_data  # noqa: F401  (a fixture)
from test_workflow import run_snakemake

export = load_script("export_study")
report_study = load_script("report_study")

TABLES = {"split": "test", "metric": "NDCG@10", "protocols": ["full", "sampled"], "bootstrap_samples": 200}


# ---------------------------------------------------------------- export: copy


def test_copy_writes_each_file_through_a_temporary_name(tmp_path, renames):
    sources = tmp_path / "run"
    sources.mkdir()
    (sources / "metrics.json").write_text('{"a": 1}\n')
    (sources / "ranks.parquet").write_bytes(b"\x00\x01binary")
    out = tmp_path / "study" / "toy" / "none" / "seed0" / "bce"
    assert export.main(["copy", str(sources / "metrics.json"), str(sources / "ranks.parquet"), "--to", str(out)]) == 0
    assert (out / "metrics.json").read_text() == '{"a": 1}\n'
    assert (out / "ranks.parquet").read_bytes() == b"\x00\x01binary"
    assert [dst.name for _, dst in renames] == ["metrics.json", "ranks.parquet"]
    assert all(src.name.startswith(f".{dst.name}.") and src.name.endswith(".tmp") for src, dst in renames)
    assert sorted(p.name for p in out.iterdir()) == ["metrics.json", "ranks.parquet"]  # no temporary left


def test_copy_of_a_missing_source_names_it_and_writes_nothing(tmp_path, caplog):
    (tmp_path / "metrics.json").write_text("{}")
    missing = tmp_path / "ranks.parquet"
    with pytest.raises(SystemExit) as exit_info:
        export.main(["copy", str(tmp_path / "metrics.json"), str(missing), "--to", str(tmp_path / "out")])
    assert exit_info.value.code == 2
    assert f"source file {missing} does not exist" in caplog.text
    assert not (tmp_path / "out").exists()
    missing.mkdir()  # before: "does not exist" too
    with pytest.raises(SystemExit):
        export.main(["copy", str(tmp_path / "metrics.json"), str(missing), "--to", str(tmp_path / "out")])
    assert f"source file {missing} is a folder, not a file" in caplog.text and not (tmp_path / "out").exists()


def test_copy_refuses_two_sources_of_the_same_name(tmp_path):
    for run in ("a", "b"):
        (tmp_path / run).mkdir()
        (tmp_path / run / "metrics.json").write_text("{}")
    with pytest.raises(ValueError, match="several sources are named 'metrics.json'"):
        export.copy_files([tmp_path / "a" / "metrics.json", tmp_path / "b" / "metrics.json"], tmp_path / "out")


@pytest.mark.parametrize("argv, message", [
    (["heads", "{t}/pretrain.pt", "--out", "{t}/folder"], "heads: --out {t}/folder: is a folder; expected a file"),
    (["plan", "--dataset", "toy", "--runs", "[]", "--out", "{t}/folder"], "plan: --out {t}/folder: is a folder"),
    (["copy", "{t}/pretrain.pt", "--to", "{t}/file"], "copy: --to {t}/file: is a file; expected a folder"),
    (["copy", "{t}/pretrain.pt", "--to", "{t}/file/sub"], "copy: --to {t}/file/sub: {t}/file is a file"),
], ids=["heads-out-folder", "plan-out-folder", "copy-to-file", "copy-to-below-a-file"])
def test_export_to_a_wrong_kind_of_destination_is_a_clear_error(tmp_path, caplog, argv, message):
    torch.save({"state_dict": {"heads.aap.weight": torch.eye(2)}}, tmp_path / "pretrain.pt")
    (tmp_path / "folder").mkdir()
    (tmp_path / "file").write_text("kept")
    with pytest.raises(SystemExit) as exit_info:
        export.main([arg.format(t=tmp_path) for arg in argv])
    assert exit_info.value.code == 2
    assert message.format(t=tmp_path) in caplog.text
    assert list((tmp_path / "folder").iterdir()) == [] and (tmp_path / "file").read_text() == "kept"


# ---------------------------------------------------------------- export: heads


@pytest.fixture(scope="module")
def pretrained(tiny_data, tmp_path_factory):  # noqa: F811
    """A real pretrain.pt of the tiny data set (r4: low-rank AAP/MAP heads)."""
    out = tmp_path_factory.mktemp("pretraining")
    cfg = runs.resolve_config(SETTINGS, "r4", 0, device="cpu")
    runs.pretrain(tiny_data, out, cfg, "r4")
    return out


def test_heads_keeps_the_head_tensors_and_the_metadata(pretrained, tmp_path, caplog):
    caplog.set_level(logging.INFO)
    checkpoint = pretrained / "pretrain.pt"
    out = tmp_path / "heads.pt"
    assert export.main(["heads", str(checkpoint), "--out", str(out)]) == 0
    full, heads = files.load_torch(checkpoint), files.load_torch(out)
    assert set(heads["state_dict"]) == {k for k in full["state_dict"] if k.startswith("heads.")}
    assert {"heads.aap.U", "heads.aap.V", "heads.map.U", "heads.mip.weight", "heads.sp.weight"} <= set(heads["state_dict"])
    assert all(torch.equal(heads["state_dict"][k], full["state_dict"][k]) for k in heads["state_dict"])
    assert {k: v for k, v in heads.items() if k != "state_dict"} == {k: v for k, v in full.items() if k != "state_dict"}
    assert out.stat().st_size < checkpoint.stat().st_size
    assert "heads.aap.U" in caplog.text and "bytes of the state dict" in caplog.text
    # what the head-spectra figure computes is the same from either file
    for head in ("aap", "mip"):
        np.testing.assert_allclose(spectra.head_spectrum(heads["state_dict"], head),
                                   spectra.head_spectrum(full["state_dict"], head))
    # byte-stable: a second export gives the same file (git diff shows nothing)
    again = tmp_path / "again" / "heads.pt"
    export.main(["heads", str(checkpoint), "--out", str(again)])
    assert again.read_bytes() == out.read_bytes()


def test_heads_drops_other_tensor_entries(pretrained, tmp_path):
    checkpoint = files.load_torch(pretrained / "pretrain.pt")
    checkpoint["optimizer"] = {"state": {0: {"exp_avg": torch.zeros(1000)}}, "param_groups": [{"lr": 0.001}]}
    path = tmp_path / "pretrain.pt"
    torch.save(checkpoint, path)
    heads = export.heads_checkpoint(path)
    assert "optimizer" not in heads and heads["variant"] == "r4" and heads["seed"] == 0


def test_heads_of_a_checkpoint_without_heads_is_an_error(tmp_path, caplog):
    path = tmp_path / "finetune.pt"
    torch.save({"variant": "r4", "state_dict": {"item_embeddings.weight": torch.zeros(3, 2)}}, path)
    with pytest.raises(SystemExit):
        export.main(["heads", str(path), "--out", str(tmp_path / "heads.pt")])
    assert f"{path}: no pretraining head tensor" in caplog.text
    assert not (tmp_path / "heads.pt").exists()


# ---------------------------------------------------------------- benchmarks/segment_scores.py


def test_segment_scores_of_a_pretraining_and_of_its_state_file(pretrained, tiny_data, tmp_path, capsys):  # noqa: F811
    segment_scores = load_script("segment_scores", folder="benchmarks")
    checkpoint = files.load_torch(pretrained / "pretrain.pt")
    # the same weights as a running job's pretrain.state.pt, with an SP head that scores every pair 0
    state = {k: (torch.zeros_like(v) if k.startswith("heads.sp.") else v) for k, v in checkpoint["state_dict"].items()}
    state_file = tmp_path / "pretrain.state.pt"
    torch.save({"config": {"config": checkpoint["config"], "variant": "r4", "inputs": checkpoint["data_digest"]},
                "model": state,
                "optimizer": {}, "loop": {"epoch": 3}}, state_file)
    assert segment_scores.main([str(pretrained / "pretrain.pt"), str(state_file), "--data", str(tiny_data),
                                "--instances", "32"]) == 0
    trained, zeroed = json.loads(capsys.readouterr().out)["checkpoints"]
    assert trained["epoch"] == checkpoint["epoch"] and trained["instances"] == zeroed["instances"] == 32
    assert 0 <= trained["saturated_share"] <= 1 and trained["s_pos"]["std"] > 0
    # scores of 0: sigma = 1/2 on both sides, nothing saturated; logsigmoid loss 2 ln 2 per pair
    assert zeroed["epoch"] == 3 and zeroed["pair_loss"] == "logsigmoid"
    assert zeroed["s_pos"] == zeroed["s_neg"] == {"mean": 0.0, "std": 0.0, "min": 0.0, "max": 0.0}
    assert zeroed["saturated_share"] == 0.0 and zeroed["sp_loss"] == pytest.approx(2 * np.log(2), rel=1e-6)
    bad = tmp_path / "finetune.pt"
    torch.save({"model": {}}, bad)
    with pytest.raises(ValueError, match="neither a pretrain.pt"):
        runs.load_pretraining_model(bad, load_dataset(tiny_data), tiny_data)


def sp_scores_of(n: int):
    """(s+, s-) of n pairs cycling through eight kinds: both sigmoids below 1e-4, both above
    1 - 1e-4, one of each (two ways), one above 1 - 1e-4 and one at 1/2, both at 1/2, both near 0
    but above 1e-4, and opposite mild scores (the pair loss is not symmetric in s+ and s-)."""
    pairs = [(-20.0, -20.0), (20.0, 20.0), (20.0, -20.0), (-20.0, 20.0), (20.0, 0.0), (0.0, 0.0), (-6.0, -6.0),
             (3.0, -1.0)]
    return (torch.tensor([pairs[i % 8][0] for i in range(n)]), torch.tensor([pairs[i % 8][1] for i in range(n)]))


@pytest.mark.parametrize("pair_loss", ["logsigmoid", "sigmoid_difference"])
def test_segment_scores_statistics_share_and_loss_of_known_scores(pretrained, tiny_data, tmp_path, capsys,  # noqa: F811
                                                                   monkeypatch, pair_loss):
    """The SP head made to score known pairs: each statistic, the saturated share (2 of 8 kinds
    saturated: both sigmoids below 1e-4 or both above 1 - 1e-4) and the model's own pair loss
    per instance."""
    checkpoint = files.load_torch(pretrained / "pretrain.pt")
    checkpoint["config"] = {**checkpoint["config"], "pretrain": {**checkpoint["config"]["pretrain"],
                                                                  "pair_loss": pair_loss}}
    path = tmp_path / "pretrain.pt"
    torch.save(checkpoint, path)
    load = runs.load_pretraining_model
    scored = {"calls": 0, "pairs": 0}

    def with_known_sp_scores(*args):
        model, about = load(*args)

        def score_pairs(context, segment):  # per chunk: s+ first, then s-
            side, start = scored["calls"] % 2, scored["pairs"]
            scored["calls"] += 1
            scored["pairs"] += side * len(context)
            return sp_scores_of(start + len(context))[side][start:]
        model.heads["sp"].score_pairs = score_pairs
        return model, about
    monkeypatch.setattr(runs, "load_pretraining_model", with_known_sp_scores)
    segment_scores = load_script("segment_scores", folder="benchmarks")
    assert segment_scores.main([str(path), "--data", str(tiny_data), "--instances", "80"]) == 0
    [report] = json.loads(capsys.readouterr().out)["checkpoints"]
    positive, negative = sp_scores_of(80)
    assert report["instances"] == 80 and report["pair_loss"] == pair_loss and scored["calls"] > 2  # several chunks

    def summary(values):
        values = values.double().numpy()
        return {"mean": values.mean(), "std": values.std(ddof=1), "min": values.min(), "max": values.max()}
    for name, values in (("s_pos", positive), ("s_neg", negative), ("sigmoid_s_pos", torch.sigmoid(positive)),
                         ("sigmoid_s_neg", torch.sigmoid(negative))):
        assert report[name] == pytest.approx(summary(values), rel=1e-5, abs=1e-9), name
    assert report["saturated_share"] == pytest.approx(2 / 8)
    if pair_loss == "logsigmoid":  # -log s(s+) - log(1 - s(s-))
        expected = (torch.nn.functional.softplus(-positive) + torch.nn.functional.softplus(negative)).mean()
    else:  # the authors': BCE(s(s(s+) - s(s-)), 1)
        expected = torch.nn.functional.softplus(-(torch.sigmoid(positive) - torch.sigmoid(negative))).mean()
    assert report["sp_loss"] == pytest.approx(float(expected), rel=1e-5)


def test_segment_scores_draws_a_batch_as_pretraining_does_with_the_seed_given(pretrained, tiny_data, capsys):  # noqa: F811
    """Its default batch (256 instances, or the whole corpus where smaller) of the run's own kind of
    instances, drawn as epoch 0 of a run of --seed draws them: its SP loss is the model's."""
    segment_scores = load_script("segment_scores", folder="benchmarks")
    checkpoint = pretrained / "pretrain.pt"
    assert segment_scores.main([str(checkpoint), str(checkpoint), "--data", str(tiny_data), "--seed", "1"]) == 0
    first, again = json.loads(capsys.readouterr().out)["checkpoints"]
    segment_scores.main([str(checkpoint), "--data", str(tiny_data)])
    [seed0] = json.loads(capsys.readouterr().out)["checkpoints"]
    assert first == again and first["s_pos"] != seed0["s_pos"]
    dataset = load_dataset(tiny_data)
    model, _ = runs.load_pretraining_model(checkpoint, dataset, tiny_data)
    cfg = model.cfg
    corpus = segment_scores.split_instances(dataset, leave_one_out(dataset.sequences), max_len=cfg.model.max_len,
                                            kind=cfg.pretrain.instances)
    assert first["instances"] == min(256, len(corpus.lengths)) < len(corpus.lengths)
    rng = segment_scores.runtime.epoch_generators(1, 0)
    chunks = next(segment_scores.iterate_batches(corpus, 256, rng, mask_prob=cfg.pretrain.mask_prob,
                                                 batching="padded"))
    with torch.no_grad():
        loss = sum(float(model(chunk)["sp"]) for chunk in chunks) / sum(chunk.num_instances for chunk in chunks)
    assert first["sp_loss"] == pytest.approx(loss, rel=1e-5)


def test_continue_pretraining_runs_the_batches_asked_for_across_epochs(pretrained, tiny_data, capsys):  # noqa: F811
    """Before: one epoch at most (the tiny set has a few batches of 100), points after the last
    full window dropped, and --every above --batches an empty curve with exit status 0."""
    continue_pretraining = load_script("continue_pretraining", folder="benchmarks")
    args = [str(pretrained / "pretrain.pt"), "--data", str(tiny_data), "--threads", "1"]
    dataset = load_dataset(tiny_data)
    instances = continue_pretraining.split_instances(dataset, leave_one_out(dataset.sequences), max_len=12)
    epoch = -(-len(instances) // 100)
    batches = 2 * epoch + 1
    continue_pretraining.main(args + ["--batches", str(batches), "--every", "2"])
    report = json.loads(capsys.readouterr().out)
    assert report["batches"] == batches
    assert [point["batches"] for point in report["curve"]] == [*range(2, batches, 2), batches]
    with pytest.raises(SystemExit) as exit_info:
        continue_pretraining.main(args + ["--batches", "2", "--every", "5"])
    assert exit_info.value.code == 2 and "--every 5: more than --batches 2" in capsys.readouterr().err


def continue_spied(monkeypatch):
    """continue_pretraining with its steps (model, chunks, losses) and its optimizer recorded."""
    continue_pretraining = load_script("continue_pretraining", folder="benchmarks")
    seen = {"steps": [], "optimizers": []}

    def step_losses(model, chunks):
        seen["model"] = model
        seen.setdefault("first_weights", {k: v.clone() for k, v in model.state_dict().items()})
        losses = continue_pretraining.step_losses.__wrapped__(model, chunks)
        seen["steps"].append((chunks, {k: float(v.detach()) for k, v in losses.items()}))
        return losses
    step_losses.__wrapped__ = continue_pretraining.step_losses
    monkeypatch.setattr(continue_pretraining, "step_losses", step_losses)

    def adam(params, lr, weight_decay):
        seen["optimizers"].append({"lr": lr, "weight_decay": weight_decay})
        return continue_pretraining.adam.__wrapped__(params, lr=lr, weight_decay=weight_decay)
    adam.__wrapped__ = continue_pretraining.adam
    monkeypatch.setattr(continue_pretraining, "adam", adam)
    return continue_pretraining, seen


def test_continue_pretraining_trains_the_checkpoint_with_the_preset_objective(pretrained, tiny_data, capsys,  # noqa: F811
                                                                             monkeypatch):
    """The curve and the weights after it are those of plain Adam steps (lr given, no weight
    decay) on the loaded weights under --preset's objective, dropout seeded by --seed; each
    point the training losses per instance of its window (the last one short)."""
    continue_pretraining, seen = continue_spied(monkeypatch)
    checkpoint = pretrained / "pretrain.pt"
    dataset = load_dataset(tiny_data)
    loaded, about = runs.load_pretraining_model(checkpoint, dataset, tiny_data)
    assert loaded.cfg.pretrain.preset != "paper"  # so the objective is --preset's, not the checkpoint's
    continue_pretraining.main([str(checkpoint), "--data", str(tiny_data), "--threads", "1", "--batches", "5",
                               "--every", "2", "--lr", "0.01", "--seed", "3"])
    report = json.loads(capsys.readouterr().out)
    assert (report["preset"], report["lr"], report["batches"]) == ("paper", 0.01, 5)
    assert (report["variant"], report["epoch"]) == (about["variant"], about["epoch"]) == ("r4", 2)
    assert seen["optimizers"] == [{"lr": 0.01, "weight_decay": 0.0}]
    assert all(torch.equal(seen["first_weights"][k], v) for k, v in loaded.state_dict().items())
    assert seen["model"].cfg.pretrain.preset == "paper" and seen["model"].cfg.pretrain.pair_loss == "sigmoid_difference"

    model = continue_pretraining.PretrainModel(seen["model"].cfg, dataset.num_items, dataset.num_attributes)
    model.load_state_dict(loaded.state_dict())
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01, fused=True)  # as s3rec.training.adam
    torch.manual_seed(3)
    model.train()
    per_step = []
    for chunks, _ in seen["steps"]:
        losses = continue_pretraining.step_losses.__wrapped__(model, chunks)
        optimizer.zero_grad()
        losses["loss"].backward()
        optimizer.step()
        per_step.append(({k: float(losses[k].detach()) for k in ("aap", "mip", "map", "sp")},
                         sum(chunk.num_instances for chunk in chunks)))
    for (_, recorded), (expected, _) in zip(seen["steps"], per_step):
        assert {k: recorded[k] for k in expected} == pytest.approx(expected, rel=1e-4)
    for got, want in zip(seen["model"].parameters(), model.parameters()):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6)
    assert not torch.equal(seen["model"].state_dict()["heads.sp.weight"], loaded.state_dict()["heads.sp.weight"])
    windows = [per_step[0:2], per_step[2:4], per_step[4:5]]
    expected = [{name: sum(losses[name] for losses, _ in window) / sum(n for _, n in window)
                 for name in ("aap", "mip", "map", "sp")} for window in windows]
    assert [point["batches"] for point in report["curve"]] == [2, 4, 5]
    for point, want in zip(report["curve"], expected):
        assert {k: point[k] for k in want} == pytest.approx(want, abs=2e-4)


def test_continue_pretraining_draws_padded_prefix_batches_of_100_from_its_seed(pretrained, tiny_data, capsys,  # noqa: F811
                                                                              monkeypatch):
    """Padded batches of 100 prefix instances (the model's max_len), masked with the preset's
    probability, every instance once an epoch, drawn by a generator of --seed; the same seed
    gives the same curve, another seed other batches."""
    checkpoint = pretrained / "pretrain.pt"
    dataset = load_dataset(tiny_data)
    instances = load_script("continue_pretraining", folder="benchmarks").split_instances(
        dataset, leave_one_out(dataset.sequences), max_len=12)
    epoch = -(-len(instances) // 100)
    curves, firsts = [], []
    for seed in ("0", "0", "1"):
        continue_pretraining, seen = continue_spied(monkeypatch)
        continue_pretraining.main([str(checkpoint), "--data", str(tiny_data), "--threads", "1", "--batches",
                                   str(epoch), "--every", str(epoch), "--seed", seed])
        curves.append(json.loads(capsys.readouterr().out)["curve"])
        steps = [chunks for chunks, _ in seen["steps"]]
        firsts.append(steps[0][0].items)
    assert curves[0] == curves[1] and curves[0] != curves[2]
    assert torch.equal(firsts[0], firsts[1]) and not torch.equal(firsts[0], firsts[2])
    sizes = [sum(chunk.num_instances for chunk in chunks) for chunks in steps]
    assert sizes == [100] * (epoch - 1) + [len(instances) - 100 * (epoch - 1)]
    assert max(chunk.items.shape[1] for chunks in steps for chunk in chunks) == 12  # the model's max_len
    drawn = continue_pretraining.iterate_batches(instances, 100, np.random.default_rng(1), batching="padded",
                                                 mask_prob=0.2)  # the paper preset's
    for chunks, expected in zip(steps, drawn, strict=True):
        assert [(c.items.tolist(), c.masked_items.tolist()) for c in chunks] == [
            (c.items.tolist(), c.masked_items.tolist()) for c in expected]
    # --every equal to --batches: one point
    assert len(curves[0]) == 1 and curves[0][0]["batches"] == epoch


def test_continue_pretraining_sets_the_threads_asked_for(pretrained, tiny_data, capsys, torch_threads):  # noqa: F811
    continue_pretraining = load_script("continue_pretraining", folder="benchmarks")
    threads = 2 if torch_threads == 1 else 1
    continue_pretraining.main([str(pretrained / "pretrain.pt"), "--data", str(tiny_data), "--threads",
                               str(threads), "--batches", "1", "--every", "1", "--preset", "seed"])
    assert torch.get_num_threads() == threads
    assert json.loads(capsys.readouterr().out)["preset"] == "seed"


def test_compare_pretraining_scores_every_checkpoint_on_the_same_batches(pretrained, tiny_data, tmp_path,  # noqa: F811
                                                                         capsys):
    """Checkpoints of max_len 12 and 14 (its two extra, first positions unused) on this data, whose training
    parts reach 13 items: scored on the same batches of prefix instances of at most 12, drawn
    with seed 0 (100 a batch, mask probability 0.2). Before, instances of up to 50 items: exit 2,
    'sequence length 13 exceeds model.max_len 12', for any checkpoint of max_len 12."""
    compare_pretraining = load_script("compare_pretraining", folder="benchmarks")
    checkpoint = files.load_torch(pretrained / "pretrain.pt")
    longer = {**checkpoint, "config": {**checkpoint["config"], "model": {**checkpoint["config"]["model"],
                                                                          "max_len": 14}}}
    positions = checkpoint["state_dict"]["encoder.position_embeddings.weight"]
    longer["state_dict"] = {**checkpoint["state_dict"],
                            "encoder.position_embeddings.weight": torch.cat([positions[:2], positions])}
    torch.save(longer, tmp_path / "longer.pt")
    # the same weights as a running job's pretrain.state.pt
    state_file = tmp_path / "pretrain.state.pt"
    torch.save({"config": {"config": checkpoint["config"], "variant": "r4", "inputs": checkpoint["data_digest"]},
                "model": checkpoint["state_dict"], "optimizer": {}, "loop": {"epoch": 3}}, state_file)
    paths = [str(tmp_path / "longer.pt"), str(pretrained / "pretrain.pt"), str(state_file)]
    compare_pretraining.main(["--data", str(tiny_data), *paths, "--batches", "2", "--threads", "1"])
    report = json.loads(capsys.readouterr().out)
    assert (report["max_len"], report["instances_scored"]) == (12, 200)
    longer_one, finished, running = (report["checkpoints"][path] for path in paths)
    assert (finished["variant"], finished["epoch"], running["variant"], running["epoch"]) == ("r4", 2, "r4", 3)
    scores = {k: v for k, v in finished.items() if k not in ("variant", "epoch")}
    assert {k: v for k, v in running.items() if k not in ("variant", "epoch")} == scores  # same draws, dropout too
    assert {k: v for k, v in longer_one.items() if k not in ("variant", "epoch")} == scores  # positions count from the end
    assert scores["train_mode"] != {name: scores[name] for name in ("aap", "mip", "map", "sp")}  # dropout on
    assert 0 < scores["mip_true_above_negative"] < 1
    again = compare_pretraining.compare(tiny_data, [pretrained / "pretrain.pt"], 1)
    assert again["instances_scored"] == 100 and again["checkpoints"][paths[1]]["variant"] == "r4"
    every = compare_pretraining.compare(tiny_data, [pretrained / "pretrain.pt"], 50)  # more than there are

    dataset = load_dataset(tiny_data)
    instances = compare_pretraining.split_instances(dataset, leave_one_out(dataset.sequences), max_len=12)
    rng = np.random.default_rng(0)
    assert every["instances_scored"] == len(instances) < 5000
    order = rng.permutation(len(instances))[:200]
    drawn = [compare_pretraining.build_batch(instances, order[i:i + 100], rng, mask_prob=0.2) for i in (0, 100)]
    model, _ = runs.load_pretraining_model(pretrained / "pretrain.pt", dataset, tiny_data)
    assert compare_pretraining.score(model, drawn) == {k: v for k, v in scores.items() if k != "train_mode"}
    assert compare_pretraining.train_mode_losses(model, drawn) == scores["train_mode"]


def test_compare_pretraining_score_is_each_loss_per_instance_and_the_mip_share(pretrained, tiny_data):  # noqa: F811
    """score(): each head's loss summed over the batches over their instances, and the share of
    masked positions where MIP scores the true item above its negative (none with a zero MIP
    head: a tie is not above)."""
    compare_pretraining = load_script("compare_pretraining", folder="benchmarks")
    dataset = load_dataset(tiny_data)
    instances = compare_pretraining.split_instances(dataset, leave_one_out(dataset.sequences), max_len=12)
    rng = np.random.default_rng(4)
    batches = [compare_pretraining.build_batch(instances, np.arange(start, stop), rng, mask_prob=0.3)
               for start, stop in ((0, 300), (300, len(instances)))]  # all of them: causal states differ in one
    model, _ = runs.load_pretraining_model(pretrained / "pretrain.pt", dataset, tiny_data)
    scores = compare_pretraining.score(model, batches)
    with torch.no_grad():
        losses = [model(batch) for batch in batches]
        for name in ("aap", "mip", "map", "sp"):
            assert scores[name] == pytest.approx(sum(float(loss[name]) for loss in losses) / len(instances), abs=1e-4)
        above = total = 0
        for batch in batches:
            states = model.encode(batch)[0]
            masked = batch.masked_items == model.encoder.mask_id
            embed, mip = model.encoder.item_embeddings, model.heads["mip"]
            true = mip.score_pairs(states[masked], embed(batch.items[masked]))
            negative = mip.score_pairs(states[masked], embed(batch.negative_items[masked]))
            above, total = above + int((true > negative).sum()), total + int(masked.sum())
    assert total > 10 and scores["mip_true_above_negative"] == pytest.approx(above / total, abs=1e-4)
    assert 0 < above < total
    with torch.no_grad():
        for parameter in model.heads["mip"].parameters():
            parameter.zero_()
    assert compare_pretraining.score(model, batches)["mip_true_above_negative"] == 0.0
    train_mode = compare_pretraining.train_mode_losses(model, batches, seed=5)
    assert not model.training and train_mode == compare_pretraining.train_mode_losses(model, batches, seed=5)
    assert train_mode != compare_pretraining.train_mode_losses(model, batches, seed=6)
    torch.manual_seed(5)
    with torch.no_grad():
        losses = [model.train()(batch) for batch in batches]
    for name in ("aap", "mip", "map", "sp"):
        assert train_mode[name] == pytest.approx(sum(float(loss[name]) for loss in losses) / len(instances), abs=1e-4)


def test_compare_pretraining_defaults_to_100_batches_and_sets_the_threads(tmp_path, monkeypatch, capsys,
                                                                           torch_threads):
    compare_pretraining = load_script("compare_pretraining", folder="benchmarks")
    calls = []
    monkeypatch.setattr(compare_pretraining, "compare", lambda *args: calls.append(args) or {"called": True})
    threads = 2 if torch_threads == 1 else 1
    compare_pretraining.main(["--data", str(tmp_path), str(tmp_path / "a.pt"), "--threads", str(threads)])
    assert torch.get_num_threads() == threads
    assert calls == [(tmp_path, [tmp_path / "a.pt"], 100)] and json.loads(capsys.readouterr().out) == {"called": True}


@pytest.mark.parametrize("benchmark", ["segment_scores", "compare_pretraining", "continue_pretraining"])
def test_checkpoint_benchmarks_refuse_other_data_or_another_model(pretrained, tiny_data, tmp_path, caplog,  # noqa: F811
                                                                  benchmark):
    """runs.load_pretraining_model, which the three share: before, a checkpoint of other data was
    scored (continue_pretraining, compare_pretraining) and one without heads a torch traceback."""
    checkpoint = files.load_torch(pretrained / "pretrain.pt")
    heads = [k for k in checkpoint["state_dict"] if k.startswith("heads.")]
    cases = {"other.pt": ({**checkpoint, "data_digest": "0" * 64}, " was trained on other data than"),
             "encoder.pt": ({**checkpoint, "state_dict": {k: v for k, v in checkpoint["state_dict"].items()
                                                          if k not in heads}},
                            f" does not fit a pretraining model of its own settings: {len(heads)} missing tensors"),
             "heads.pt": ({**checkpoint, "state_dict": {k: checkpoint["state_dict"][k] for k in heads}},
                          ": only the pretraining heads (a study's heads.pt"),
             "bare.pt": (checkpoint["state_dict"], ": a bare state dict (as the authors release theirs)")}
    main = load_script(benchmark, folder="benchmarks").main
    for name, (saved, message) in cases.items():
        torch.save(saved, tmp_path / name)
        with pytest.raises(SystemExit) as stop:
            main([str(tmp_path / name), "--data", str(tiny_data)])
        assert stop.value.code == 2 and f"{tmp_path / name}{message}" in caplog.text


# ---------------------------------------------------------------- export: plan


FINETUNINGS = [{"pretraining": p, "seed": s, "loss": loss}
               for p in ("seed-r4", "none", "seed-full", "authors") for s in (1, 0) for loss in ("ce", "bce")]


def test_plan_is_sorted_and_byte_stable(tmp_path):
    settings = json.dumps(TABLES)
    first, second = tmp_path / "a" / "plan.json", tmp_path / "b" / "plan.json"
    assert export.main(["plan", "--dataset", "toy", "--runs", json.dumps(FINETUNINGS), "--settings", settings,
                        "--out", str(first)]) == 0
    shuffled = {"finetunings": FINETUNINGS[::-1], "popularity": True}
    export.main(["plan", "--dataset", "toy", "--runs", json.dumps(shuffled), "--settings", settings, "--out", str(second)])
    assert first.read_bytes() == second.read_bytes()
    text = first.read_text()
    assert text.endswith("}\n") and text == json.dumps(json.loads(text), indent=2, sort_keys=True) + "\n"
    plan = json.loads(text)
    assert [(f["pretraining"], f["seed"], f["loss"]) for f in plan["finetunings"][:4]] == [
        ("none", 0, "bce"), ("none", 0, "ce"), ("none", 1, "bce"), ("none", 1, "ce")]
    assert [f["pretraining"] for f in plan["finetunings"][::4]] == ["none", "seed-full", "seed-r4", "authors"]
    assert plan["pretrainings"] == [{"pretraining": p, "seed": s} for p in ("seed-full", "seed-r4") for s in (0, 1)]
    assert plan["authors"] is True and plan["popularity"] is True and plan["dataset"] == "toy"
    assert plan["report"] == {"tables": TABLES, "figures": {k: TABLES[k] for k in ("metric", "protocols", "split")}}


def test_plan_ranks_sort_by_number_not_text():
    runs = [{"pretraining": f"paper-r{r}", "seed": 0, "loss": "ce"} for r in (32, 8, 16)]
    plan = study_folder.make_plan("toy", runs + [{"pretraining": "paper-full", "seed": 0, "loss": "ce"}], {})
    assert [f["pretraining"] for f in plan["finetunings"]] == ["paper-full", "paper-r8", "paper-r16", "paper-r32"]


@pytest.mark.parametrize("runs, message", [
    ([{"pretraining": "r8", "seed": 0, "loss": "ce"}], r"finetunings\[0\].pretraining: expected none \| authors"),
    ([{"pretraining": "none", "seed": -1, "loss": "ce"}], r"finetunings\[0\].seed: expected an integer in \[0, 4294967295\]"),
    ([{"pretraining": "none", "seed": 2**32, "loss": "ce"}], r"finetunings\[0\].seed: expected an integer in"),
    ([{"pretraining": "none", "seed": 0, "loss": "mse"}], r"finetunings\[0\].loss: expected one of \['bce', 'ce'\]"),
    ([{"pretraining": "none", "seed": 0}], r"finetunings\[0\]: expected an object with exactly the keys"),
    ([{"pretraining": "none", "seed": 0, "loss": "ce"}] * 2, "lists .* more than once"),
    ({"finetunings": [], "pretrainings": [{"pretraining": "none", "seed": 0}]}, r"pretrainings\[0\].pretraining"),
    ({"finetunings": [], "popularity": "yes"}, "popularity: expected true or false"),
    ({"finetuning": []}, "a `finetunings` list"),
    # before accepted: park_runs then left that pretraining's pretrain.pt behind
    ({"finetunings": [{"pretraining": "seed-r8", "seed": 2, "loss": "bce"}], "pretrainings": []},
     r"finetuning seed-r8 seed 2 \(bce\) starts from a pretraining that `pretrainings` does not list"),
    # s3rec/run_paths.py's run layout reads a lowercase preset only: refused here, not in the report
    ([{"pretraining": "Seed-full", "seed": 0, "loss": "ce"}],
     r"finetunings\[0\].pretraining: expected .*<preset>: lowercase letters, digits, _, first a letter.*'Seed-full'"),
    ({"finetunings": [], "pretrainings": [{"pretraining": "1x-r8", "seed": 0}]},
     r"pretrainings\[0\].pretraining: .*'1x-r8'"),
    ([{"pretraining": "seed-r016", "seed": 0, "loss": "ce"}], r"finetunings\[0\].pretraining: .*'seed-r016'"),
    # a key beyond the three (a typo of another field, or one the plan would drop unsaid)
    ([{"pretraining": "none", "seed": 0, "loss": "ce", "lr": 0.1}], r"finetunings\[0\]: expected an object with exactly"),
    ({"finetunings": [], "author": True}, "unknown key 'author'; expected finetunings, pretrainings, authors, popularity"),
])
def test_plan_rejects_bad_runs_by_name(runs, message):
    with pytest.raises(ValueError, match=message):
        study_folder.make_plan("toy", runs, {})


@pytest.mark.parametrize("settings, message", [
    ({"metrics": "NDCG@10"}, "--runs: settings: metrics: expected a non-empty list without repeats of"),
    ({"resample_seeds": "false"}, "--runs: settings: resample_seeds: expected true or false, got 'false'"),
    ({"confidence": 0}, "--runs: settings: confidence: expected a number between 0 and 1"),
    ([1], "--runs: settings: expected an object of report settings"),
])
def test_plan_rejects_report_settings_the_report_would_misread(settings, message):
    """A string for the metrics list made a column per character; "false" resampled the seeds."""
    with pytest.raises(ValueError, match=re.escape(message)):
        study_folder.make_plan("toy", [{"pretraining": "none", "seed": 0, "loss": "ce"}], settings)


# ---------------------------------------------------------------- a fabricated study folder


def write_json(path, obj):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=2) + "\n")


def fake_finetuning(folder, variant, seed, device="cpu", wall=30.0, cpu=25.0, dataset="toy"):
    metrics = {p: {s: {"NDCG@10": 0.1, "HR@10": 0.2, "MRR": 0.05} for s in ("valid", "test")} for p in ("full", "sampled")}
    write_json(folder / "metrics.json", {
        "dataset": dataset, "variant": variant, "seed": seed, "metrics": metrics,
        "parameters": {"heads_total": 0, "total": 100}, "wall_seconds": {"pretrain": 100.0, "finetune": wall},
        "cpu_seconds": {"pretrain": 90.0, "finetune": cpu}, "execution": {"device": device, "threads": 1}})
    pl.DataFrame({"user_id": [1, 2], "split": "test", "protocol": "full", "rank": [1, 3]}).write_parquet(
        folder / "ranks.parquet")
    (folder / "finetune_history.csv").write_text("epoch,loss,valid_NDCG@10\n1,0.5,0.1\n")


def fake_pretraining(folder, variant, seed, wall=100.0, cpu=90.0, sp=(0.3,), pair_loss="logsigmoid"):
    write_json(folder / "pretrain_run.json", {"dataset": "toy", "variant": variant, "seed": seed, "epochs": 4,
                                              "wall_seconds": wall, "cpu_seconds": cpu,
                                              "execution": {"device": "cuda:0", "gpu": "NVIDIA H100", "threads": 1},
                                              "config": {"pretrain": {"pair_loss": pair_loss}}})
    rows = "".join(f"{epoch},1.0,0.2,0.3,0.2,{loss}\n" for epoch, loss in enumerate(sp, 1))
    (folder / "pretrain_history.csv").write_text("epoch,loss,aap,mip,map,sp\n" + rows)
    torch.save({"variant": variant, "state_dict": {"heads.aap.weight": torch.eye(4)}}, folder / "heads.pt")


def test_execution_names_the_cpu_where_recorded():
    cpu = {"device": "cpu", "cpu": "AMD EPYC", "cpu_capability": "AVX2", "threads": 1}
    assert report_study.execution_of({"execution": cpu}) == ("cpu (AMD EPYC, AVX2)", "1")
    assert report_study.execution_of({"execution": {"device": "cpu", "threads": 2}}) == ("cpu", "2")  # before


@pytest.fixture
def fabricated_study(tmp_path):
    """Planned: none, seed-full x seeds 0, 1 x loss bce; authors; popularity. Present: all but
    none/seed1/bce (missing), seed-full/seed1 pretraining (no heads.pt: incomplete), authors/heads.pt
    (missing); extra: seed-r4/seed0/ce and a stray file."""
    study = tmp_path / "study" / "toy"
    runs_ = [{"pretraining": p, "seed": s, "loss": "bce"} for p in ("none", "seed-full", "authors") for s in (0, 1)]
    export.write_plan(study_folder.make_plan("toy", runs_, TABLES), study / "plan.json")
    for pretraining, seed in [("none", 0), ("seed-full", 0), ("seed-full", 1), ("authors", 0), ("authors", 1)]:
        fake_finetuning(study / pretraining / f"seed{seed}" / "bce", pretraining, seed)
    fake_finetuning(study / "seed-r4" / "seed0" / "ce", "r4", 0, device="cuda:0", wall=3600.0, cpu=3000.0)
    for seed in (0, 1):
        fake_pretraining(study / "seed-full" / f"seed{seed}", "full", seed)
    (study / "seed-full" / "seed1" / "heads.pt").unlink()
    fake_finetuning(study / "popularity", "popularity", 0)
    (study / "popularity" / "finetune_history.csv").unlink()
    (study / "notes.txt").write_text("a stray file")
    return study


def test_time_per_device_splits_a_run_resumed_elsewhere(fabricated_study):
    """A run file's `processes`: each process's epochs (seconds from the history) on its device,
    the final evaluation on the device that wrote the file, epochs before the first process
    listed on "not recorded"."""
    a = {"device": "cpu", "cpu": "Intel Xeon", "cpu_capability": "AVX2", "threads": 1}
    b = {"device": "cpu", "cpu": "AMD EPYC", "cpu_capability": "AVX512", "threads": 1}
    pretraining = fabricated_study / "seed-full" / "seed0"
    run = json.loads((pretraining / "pretrain_run.json").read_text())
    write_json(pretraining / "pretrain_run.json", run | {"wall_seconds": 100.0, "cpu_seconds": 90.0, "execution": b,
                                                         "processes": [{"first_epoch": 1, "execution": a},
                                                                       {"first_epoch": 4, "execution": b}]})
    (pretraining / "pretrain_history.csv").write_text("epoch,loss,aap,mip,map,sp,cpu_seconds,seconds\n" + "".join(
        f"{epoch},1.0,0.2,0.3,0.2,0.3,22.5,25.0\n" for epoch in range(1, 5)))
    finetuning = fabricated_study / "none" / "seed0" / "bce"
    metrics = json.loads((finetuning / "metrics.json").read_text())
    write_json(finetuning / "metrics.json", metrics | {"execution": b, "processes": [{"first_epoch": 2, "execution": a}]})
    (finetuning / "finetune_history.csv").write_text(
        "epoch,loss,cpu_seconds,seconds,valid_NDCG@10,valid_cpu_seconds,valid_seconds\n"
        "1,0.5,4.0,5.0,0.1,1.0,1.0\n2,0.4,4.0,5.0,0.1,1.0,1.0\n")  # the run: 30 s wall, 25 s CPU
    text = report_study.runs_markdown(study_folder.scan(fabricated_study))
    assert "| seed-full/seed0 | cpu (Intel Xeon, AVX2) | 1 | 3 | 75 | 68 | 25.0 |" in text
    assert "| seed-full/seed0 | cpu (AMD EPYC, AVX512) | 1 | 1 | 25 | 22 | 25.0 |" in text
    assert "| cpu (Intel Xeon, AVX2) | 1 | finetuning | 1 | 6 s = 0.00 h | 5 s = 0.00 h |" in text  # epoch 2
    assert "| cpu (AMD EPYC, AVX512) | 1 | finetuning | 1 | 18 s = 0.01 h | 15 s = 0.00 h |" in text  # evaluation
    assert "| not recorded | not recorded | finetuning | 1 | 6 s = 0.00 h | 5 s = 0.00 h |" in text  # epoch 1
    # the other finetunings on "cpu", as recorded, and nothing counted twice
    assert "| cpu | 1 | finetuning | 4 | 120 s = 0.03 h | 100 s = 0.03 h |" in text
    assert "A run resumed on another machine counts on each device that trained it" in text

    # resumed where it ran before: one row, as a run never stopped, and no note
    write_json(finetuning / "metrics.json", metrics | {"execution": b, "processes": [{"first_epoch": 1, "execution": b},
                                                                                     {"first_epoch": 2, "execution": b}]})
    write_json(pretraining / "pretrain_run.json", run | {"execution": b})
    text = report_study.runs_markdown(study_folder.scan(fabricated_study))
    assert "| cpu (AMD EPYC, AVX512) | 1 | finetuning | 1 | 30 s = 0.01 h | 25 s = 0.01 h |" in text
    assert "resumed on another machine" not in text


def test_time_pieces_split_by_device_and_threads_and_keep_an_unreadable_run_whole(tmp_path):
    """Pieces differ by threads too (the same CPU with 1 thread, then 2); a record the split cannot
    trust (first epochs out of order or below 1, no seconds, no history or one with a value that
    is not a number) leaves the run one row, as recorded, rather than a wrong split or an error."""
    history = tmp_path / "pretrain_history.csv"
    history.write_text("epoch,loss,cpu_seconds,seconds\n1,1.0,3.0,4.0\n2,0.9,3.0,4.0\n")
    whole = {"run": "r", "device": "cpu", "threads": "2", "stage": "pretraining", "epochs": 2, "wall": 10.0, "cpu": 8.0}
    one, two = ({"execution": {"device": "cpu", "threads": threads}} for threads in (1, 2))
    pieces = report_study.time_pieces(whole, [{"first_epoch": 1, **one}, {"first_epoch": 2, **two}], history)
    assert [(p["threads"], p["epochs"], p["wall"], p["cpu"]) for p in pieces] == [("1", 1, 4.0, 3.0), ("2", 1, 6.0, 5.0)]
    for firsts in ([2, 1], [0, 2], [1, 1], ["1", 2]):
        processes = [{"first_epoch": first, **one} for first in firsts]
        assert report_study.time_pieces(whole, processes, history) == [whole], firsts
    split = [{"first_epoch": 1, **one}, {"first_epoch": 2, **two}]
    for unknown in ("wall", "cpu"):
        assert report_study.time_pieces(whole | {unknown: None}, split, history) == [whole | {unknown: None}]
    assert report_study.time_pieces(whole, split, tmp_path / "absent.csv") == [whole]
    history.write_text("epoch,loss,cpu_seconds,seconds\n1,1.0,3.0,4.0\n2,0.9,3.0,n/a\n")
    assert report_study.time_pieces(whole, split, history) == [whole]


def test_runs_md_lists_present_missing_incomplete_and_extra_runs(fabricated_study, caplog):
    study = study_folder.scan(fabricated_study)
    text = report_study.runs_markdown(study)
    assert "**5 of 6 finetunings, 1 of 2 pretrainings**" in text
    assert "the authors' checkpoint (authors/heads.pt): missing, popularity: present" in text
    assert ("### Finetunings, loss bce\n\n| pretraining | seed 0 | seed 1 |\n|---|---|---|\n"
            "| none | ✓ | missing |\n| seed-full | ✓ | ✓ |\n| authors | ✓ | ✓ |\n") in text
    assert "### Finetunings, loss ce\n\n| pretraining | seed 0 |\n|---|---|\n| seed-r4 | ✓ (extra) |\n" in text
    assert "| seed-full | ✓ | incomplete |" in text  # the pretrainings' grid
    assert "## Missing\n\n- the authors' checkpoint (authors/heads.pt)\n- finetuning none/seed1/bce\n" in text
    assert "- pretraining seed-full/seed1: no heads.pt" in text
    assert "## Extra (not in the plan)\n\n- finetuning seed-r4/seed0/ce\n" in text
    assert "- notes.txt" in text
    assert "resumed on another machine" not in text  # said only where a run was split
    # finetune part only (pretrain seconds counted once, from pretrain_run.json); devices apart
    assert "| cpu | 1 | finetuning | 5 | 150 s = 0.04 h | 125 s = 0.03 h |" in text
    assert "| cuda:0 | 1 | finetuning | 1 | 3,600 s = 1.00 h | 3,000 s = 0.83 h |" in text
    assert "| cuda:0 (NVIDIA H100) | 1 | pretraining | 1 | 100 s = 0.03 h | 90 s = 0.03 h |" in text
    assert "| cpu |  | **total** | 6 | 180 s = 0.05 h | 150 s = 0.04 h |" in text  # 5 finetunings + popularity
    # each complete pretraining on its own line (seed1 lacks heads.pt: incomplete, not listed)
    assert ("### Each pretraining\n\n| run | device | threads | epochs | wall s | CPU s | wall s per epoch |\n"
            "|---|---|---|---:|---:|---:|---:|\n"
            "| seed-full/seed0 | cuda:0 (NVIDIA H100) | 1 | 4 | 100 | 90 | 25.0 |\n") in text
    assert str(fabricated_study) not in text  # paths relative to the study: the same on every clone
    report_study.log_problems(study)
    assert "2 missing run(s): authors; none/seed1/bce" in caplog.text
    assert "1 incomplete run(s): seed-full/seed1" in caplog.text
    assert "not in the plan (listed as extra, left out of the tables and figures): seed-r4/seed0/ce" in caplog.text



def test_runs_md_flags_pretrainings_whose_sp_loss_stalled_at_ln2(fabricated_study, caplog):
    text = report_study.runs_markdown(study_folder.scan(fabricated_study))
    assert "## Pretraining checks" in text and "None of the 1 complete pretrainings." in text
    stalled = [0.6935, 0.6931, 0.6932, 0.6931]
    fake_pretraining(fabricated_study / "seed-full" / "seed0", "full", 0, sp=stalled, pair_loss="sigmoid_difference")
    study = study_folder.scan(fabricated_study)
    text = report_study.runs_markdown(study)
    assert "- pretraining seed-full/seed0: SP stalled in epochs 1–4 (last epoch's SP loss 0.6931)" in text
    report_study.log_problems(study)
    assert "1 pretraining(s) with SP stalled at ln 2 (see runs.md): seed-full/seed0" in caplog.text
    # a stall the run left behind is listed too, with its epochs
    fake_pretraining(fabricated_study / "seed-full" / "seed0", "full", 0, sp=stalled + [0.66, 0.6931],
                     pair_loss="sigmoid_difference")
    text = report_study.runs_markdown(study_folder.scan(fabricated_study))
    assert "- pretraining seed-full/seed0: SP stalled in epochs 1–4 (last epoch's SP loss 0.6931)" in text
    # the same losses under logsigmoid are not flagged
    fake_pretraining(fabricated_study / "seed-full" / "seed0", "full", 0, sp=stalled, pair_loss="logsigmoid")
    assert "None of the 1" in report_study.runs_markdown(study_folder.scan(fabricated_study))


def test_an_sp_loss_not_recorded_in_some_epochs_is_skipped_not_an_error(fabricated_study):
    """An empty sp cell (an epoch that did not record the SP loss) is left out of the stall check;
    only a cell that is no number stops the report."""
    history = fabricated_study / "seed-full/seed0/pretrain_history.csv"
    fake_pretraining(history.parent, "full", 0, sp=[0.6935, 0.6931, "", 0.6932, 0.6931], pair_loss="sigmoid_difference")
    assert ",\n" in history.read_text()
    assert report_study.sp_column(history) == [0.6935, 0.6931, 0.6932, 0.6931]
    text = report_study.runs_markdown(study_folder.scan(fabricated_study))
    assert "- pretraining seed-full/seed0: SP stalled in epochs 1–4 (last epoch's SP loss 0.6931)" in text


@pytest.mark.parametrize("wall, listed", [(100.4, True), (100.0004, False)])
def test_pretraining_wall_times_compare_to_the_millisecond(fabricated_study, wall, listed):
    """Without recorded weights, the pretraining wall time a finetuning recorded is compared with
    the pretraining's own to 3 decimals: 0.4 s apart is another run, JSON's float noise is not."""
    fake_pretraining(fabricated_study / "seed-full" / "seed0", "full", 0, wall=wall)  # the finetuning says 100.0
    text = report_study.runs_markdown(study_folder.scan(fabricated_study))
    assert ("- finetuning seed-full/seed0/bce: it records a pretraining of 100 s wall time" in text) == listed
    assert ("None of the 6 complete finetunings." in text) != listed


def test_runs_md_lists_finetunings_from_another_pretraining_run_than_their_folders(fabricated_study, caplog):
    """Before: a pretraining run again (its first pretrain.pt not kept) and finetuned with ce, beside
    the exported files of the first, was reported with the first's heads and losses, unflagged."""
    text = report_study.runs_markdown(study_folder.scan(fabricated_study))
    assert "Finetuned from another pretraining run" in text and "None of the 6 complete finetunings." in text
    fake_pretraining(fabricated_study / "seed-full" / "seed0", "full", 0, wall=6379.9)
    study = study_folder.scan(fabricated_study)
    assert ("- finetuning seed-full/seed0/bce: it records a pretraining of 100 s wall time, seed-full/seed0 one of "
            "6,380 s (weights not recorded)") in report_study.runs_markdown(study)
    report_study.log_problems(study)
    assert "1 finetuning(s) from another pretraining run than their folder's (see runs.md): seed-full/seed0/bce" \
        in caplog.text
    # the weights, where both record them, decide: the same weights are one start whatever the times
    run_json, metrics_json = (fabricated_study / "seed-full" / "seed0" / "pretrain_run.json",
                              fabricated_study / "seed-full" / "seed0" / "bce" / "metrics.json")
    for used, expected in (("a" * 64, False), ("b" * 64, True)):
        write_json(run_json, {**json.loads(run_json.read_text()), "weights_sha256": "a" * 64})
        write_json(metrics_json, {**json.loads(metrics_json.read_text()), "pretrained_weights_sha256": used})
        text = report_study.runs_markdown(study_folder.scan(fabricated_study))
        listed = ("- finetuning seed-full/seed0/bce: its pretrained weights (sha256 bbbbbbbbbbbb…) are not those of "
                  "seed-full/seed0 (aaaaaaaaaaaa…)")
        assert (listed in text) == expected and ("None of the 6 complete finetunings." in text) != expected


def test_only_complete_planned_runs_feed_the_tables_and_figures(fabricated_study):
    """And no extra one (seed-r4/seed0/ce): before, a rank or seed dropped from the config stayed
    in the study's tables (its seeds averaged in) while results/'s report left it out, and a stale
    run with other settings stopped the workflow at report_study."""
    study = study_folder.scan(fabricated_study)
    relative = [p.relative_to(fabricated_study).as_posix() for p in report_study.metrics_files(study)]
    assert relative == ["none/seed0/bce/metrics.json", "seed-full/seed0/bce/metrics.json",
                        "seed-full/seed1/bce/metrics.json", "authors/seed0/bce/metrics.json",
                        "authors/seed1/bce/metrics.json", "popularity/metrics.json"]
    assert report_study.figure_inputs(study, None)["accuracy_vs_rank"] == []  # no tables made
    difference = fabricated_study / "report" / "tables" / "difference.csv"
    inputs = report_study.figure_inputs(study, difference)
    assert inputs["accuracy_vs_rank"] == [difference] + report_study.metrics_files(study)
    assert [p.relative_to(fabricated_study).as_posix() for p in inputs["head_spectra"]] == ["seed-full/seed0/heads.pt"]
    assert len(inputs["pretrain_losses"]) == 2 and len(inputs["finetune_validation"]) == 10
    assert not any("seed-r4" in str(path) for paths in inputs.values() for path in paths)
    # the authors' checkpoint, once there, is drawn with the pretrainings (its heads.pt only)
    fake_pretraining(fabricated_study / "authors", "authors", 0)
    heads = report_study.figure_inputs(study_folder.scan(fabricated_study), difference)["head_spectra"]
    assert [p.relative_to(fabricated_study).as_posix() for p in heads] == ["seed-full/seed0/heads.pt", "authors/heads.pt"]


def test_tables_and_figures_get_the_plans_settings_and_leave_no_temporary(fabricated_study, monkeypatch):
    """make_tables and make_figure hand plan.json's report.tables and report.figures to the
    scripts (the committed studies use the defaults, so dropping them passed every test), and each
    format's file lands under its own name, with no temporary file or folder left in report/."""
    calls = {}

    def fake_script(name):
        def main(argv):
            calls[name] = argv
            if name == "aggregate":
                out = Path(argv[argv.index("--out-dir") + 1])
                out.mkdir(parents=True)
                for table in report_study.TABLE_FILES:
                    (out / table).write_text(table)
            else:
                for out in argv[argv.index("--out") + 1:argv.index("--settings")]:
                    Path(out).write_text(Path(out).suffix)  # a file of its format's suffix
            return 0
        return types.SimpleNamespace(main=main)

    monkeypatch.setattr(report_study, "load_script", fake_script)
    path = fabricated_study / "plan.json"
    figures = {"metric": "HR@10", "split": "valid", "protocols": ["sampled"]}
    write_json(path, {**json.loads(path.read_text()), "report": {"tables": {**TABLES, "confidence": 0.9},
                                                                 "figures": figures}})
    study = study_folder.scan(fabricated_study)
    report = fabricated_study / "report"
    assert report_study.make_tables(study, report / "tables")
    argv = calls["aggregate"]
    assert json.loads(argv[argv.index("--settings") + 1]) == {**TABLES, "confidence": 0.9}
    assert sorted(p.name for p in (report / "tables").iterdir()) == sorted(report_study.TABLE_FILES)
    assert (report / "tables" / "difference.tex").read_text() == "difference.tex"
    report_study.make_figure("head_spectra", [fabricated_study / "seed-full/seed0/heads.pt"], report / "figures",
                             study.plan["report"]["figures"])
    argv = calls["plot_report"]
    assert argv[0] == "head_spectra" and json.loads(argv[argv.index("--settings") + 1]) == figures
    assert {p.name: p.read_text() for p in (report / "figures").iterdir()} == {"head_spectra.png": ".png",
                                                                               "head_spectra.pdf": ".pdf"}
    assert sorted(p.relative_to(report).as_posix() for p in report.rglob("*")) == sorted(
        ["tables", "figures", "figures/head_spectra.png", "figures/head_spectra.pdf"]
        + [f"tables/{name}" for name in report_study.TABLE_FILES])

    def failing(name):  # dies after writing its first format: that temporary file is removed too
        def main(argv):
            Path(argv[argv.index("--out") + 1]).write_text("half")
            raise SystemExit(2)
        return types.SimpleNamespace(main=main)

    monkeypatch.setattr(report_study, "load_script", failing)
    with pytest.raises(SystemExit):
        report_study.make_figure("pretrain_losses", [], report / "figures", figures)
    assert sorted(p.name for p in (report / "figures").iterdir()) == ["head_spectra.pdf", "head_spectra.png"]
    # and make_report gives every figure report.figures
    drawn = []
    monkeypatch.setattr(report_study, "make_tables", lambda study, out_dir: True)
    monkeypatch.setattr(report_study, "make_figure", lambda figure, inputs, out_dir, settings: drawn.append(settings))
    assert report_study.make_report(study) == [] and drawn == [figures] * 5


def test_runs_md_does_not_depend_on_the_order_of_files(fabricated_study, tmp_path, monkeypatch):
    first = report_study.runs_markdown(study_folder.scan(fabricated_study))
    copy = tmp_path / "copy" / "toy"
    shutil.copytree(fabricated_study, copy)
    real_rglob = type(copy).rglob
    monkeypatch.setattr(type(copy), "rglob", lambda self, pattern: reversed(list(real_rglob(self, pattern))))
    assert report_study.runs_markdown(study_folder.scan(copy)) == first


def test_report_skips_figures_without_inputs(tmp_path, caplog):
    """A plan with nothing run yet: runs.md says so, tables and figures are skipped, no crash."""
    study = tmp_path / "toy"
    export.write_plan(study_folder.make_plan("toy", [{"pretraining": "seed-full", "seed": 0, "loss": "ce"}], {}),
                      study / "plan.json")
    assert report_study.main([str(study)]) == 0
    text = (study / "report" / "runs.md").read_text()
    assert "**0 of 1 finetunings, 0 of 1 pretrainings**, popularity: missing." in text
    assert "## Time per device\n\n" in text and "\nNo complete run: no time recorded.\n" in text  # not an empty table
    assert "tables skipped" in caplog.text and "figure head_spectra skipped" in caplog.text
    assert "3 missing run(s): seed-full/seed0; seed-full/seed0/ce; popularity" in caplog.text  # main logs them
    assert not (study / "report" / "figures").exists()
    # popularity alone (it ranks by counts, finetunes nothing): before, blank accuracy and
    # parameter figures, exit 0
    fake_finetuning(study / "popularity", "popularity", 0, dataset="toy")
    caplog.clear()
    assert report_study.main([str(study)]) == 0
    assert "figure accuracy_vs_rank skipped" in caplog.text and "figure params_vs_accuracy skipped" in caplog.text
    assert not (study / "report" / "figures").exists()


@pytest.mark.parametrize("change, message", [
    (lambda s: (s / "plan.json").unlink(), "plan.json does not exist"),
    (lambda s: (s / "plan.json").write_text('{"dataset": "toy"}'), "plan.json: expected an object with the keys"),
    (lambda s: write_json(s / "plan.json", {**json.loads((s / "plan.json").read_text()), "version": 2}),
     "plan.json: version 2; this code reads version 1"),
    # the decode errors named no file
    (lambda s: (s / "plan.json").write_bytes((s / "plan.json").read_bytes() + b"\xff"), "plan.json: not valid JSON ("),
    (lambda s: (s / "seed-full/seed0/pretrain_history.csv").write_bytes(b"epoch,sp\n1,0.3\n\xff\n"),
     "seed-full/seed0/pretrain_history.csv: not UTF-8 text (invalid start byte)"),
    (lambda s: write_json(s / "plan.json", {**json.loads((s / "plan.json").read_text()),
                                            "report": {"tables": {"metrik": "HR@10"}, "figures": {}}}),
     "plan.json: report.tables: unknown key 'metrik'"),
    (lambda s: write_json(s / "plan.json", {**json.loads((s / "plan.json").read_text()),
                                            "report": {"tables": {"metrics": "NDCG@10"}, "figures": {}}}),
     "plan.json: report.tables: metrics: expected a non-empty list without repeats of"),
    (lambda s: write_json(s / "plan.json", {**json.loads((s / "plan.json").read_text()),
                                            "report": {"tables": {}, "figures": {"split": "tset"}}}),
     "plan.json: report.figures: split: expected valid | test, got 'tset'"),
    # before, a KeyError traceback, and with null every figure failing after the tables were written
    (lambda s: write_json(s / "plan.json", {**json.loads((s / "plan.json").read_text()), "report": {"tables": {}}}),
     "plan.json: report: expected an object with the keys ['figures', 'tables'], got ['tables']"),
    (lambda s: write_json(s / "plan.json", {**json.loads((s / "plan.json").read_text()),
                                            "report": {"tables": {}, "figures": None}}),
     "plan.json: report.figures: expected an object (scripts/plot_report.py's --settings), got None"),
    (lambda s: write_json(s / "none/seed0/bce/metrics.json", {"dataset": "other", "seed": 0}),
     "metrics.json: data set 'other', but the plan"),
    (lambda s: write_json(s / "none/seed0/bce/metrics.json", {"dataset": "toy", "seed": 3}),
     "metrics.json: seed 3, but its folder says seed0"),
    (lambda s: write_json(s / "none/seed0/bce/metrics.json", {"dataset": "toy", "seed": 0, "finetune": {"loss": "ce"}}),
     "metrics.json: finetuning loss 'ce', but its folder says bce"),
    # before, each was reported as the run its labels say (tables) and as its folder's (runs.md)
    (lambda s: write_json(s / "seed-full/seed0/bce/metrics.json",
                          {**json.loads((s / "seed-full/seed0/bce/metrics.json").read_text()), "variant": "r4",
                           "finetune": {"loss": "bce"}, "config": {"pretrain": {"preset": "seed"}}}),
     "seed-full/seed0/bce/metrics.json: pretraining 'seed-r4', but its folder says seed-full"),
    (lambda s: write_json(s / "seed-full/seed0/bce/metrics.json",
                          {**json.loads((s / "seed-full/seed0/bce/metrics.json").read_text()), "seed": None}),
     "seed-full/seed0/bce/metrics.json: seed None, but its folder says seed0"),  # was read as seed 0
    (lambda s: write_json(s / "seed-full/seed0/pretrain_run.json",
                          {**json.loads((s / "seed-full/seed0/pretrain_run.json").read_text()), "variant": "r4"}),
     "seed-full/seed0/pretrain_run.json: pretraining 'seed-r4', but its folder says seed-full"),
    (lambda s: write_json(s / "none/seed0/bce/metrics.json", []),
     "none/seed0/bce/metrics.json: expected a JSON object (the run's record), got list"),
    (lambda s: write_json(s / "seed-full/seed0/pretrain_run.json", []),
     "seed-full/seed0/pretrain_run.json: expected a JSON object (the run's record), got list"),
    (lambda s: (s / "seed-full/seed0/pretrain_history.csv").write_text("epoch,loss,aap,mip,map,sp\n1,1,1,1,1,0.7\n"
                                                                       "2,1,1,1,1,abc\n"),
     "seed-full/seed0/pretrain_history.csv: line 3, column sp: expected a number (the epoch's SP loss), got 'abc'"),
])
def test_bad_study_input_is_a_clear_error(fabricated_study, caplog, change, message):
    change(fabricated_study)
    with pytest.raises(SystemExit) as exit_info:
        report_study.main([str(fabricated_study)])
    assert exit_info.value.code == 2
    assert message in caplog.text
    assert not (fabricated_study / "report").exists()  # stopped before writing anything


def test_a_study_in_a_folder_named_otherwise_than_its_data_set_is_refused(fabricated_study, caplog):
    """The figures name the data set by the folder: before, a copy in study/other was drawn as
    'other' while runs.md and every run file said 'toy'."""
    moved = fabricated_study.rename(fabricated_study.with_name("other"))
    with pytest.raises(SystemExit) as exit_info:
        report_study.main([str(moved)])
    assert exit_info.value.code == 2 and not (moved / "report").exists()
    assert f"{moved}: a study of data set 'toy' ({moved / 'plan.json'}) in a folder named 'other'" in caplog.text


def test_run_of_file_takes_only_the_folder_grammar():
    """A seed written with a leading zero, or a loss folder other than bce and ce, is no run (the
    file is listed as unrecognised), not a run of seed 1 or of loss mse."""
    finetuning = study_folder.run_of_file(Path("none/seed1/bce/metrics.json"))
    assert (finetuning.kind, finetuning.pretraining, finetuning.seed, finetuning.loss) == ("finetuning", "none", 1, "bce")
    pretraining = study_folder.run_of_file(Path("seed-r8/seed10/heads.pt"))
    assert (pretraining.kind, pretraining.pretraining, pretraining.seed) == ("pretraining", "seed-r8", 10)
    for path in ("none/seed01/bce/metrics.json", "seed-full/seed01/heads.pt", "none/seed1/mse/metrics.json",
                 "none/seed1/bce/notes.txt", "none/seed1/heads.pt", "popularity/heads.pt"):
        assert study_folder.run_of_file(Path(path)) is None, path


def test_plan_figures_set_apart_from_the_tables_are_kept_with_a_warning(fabricated_study, caplog):
    path = fabricated_study / "plan.json"
    plan = json.loads(path.read_text())
    write_json(path, {**plan, "report": {"tables": plan["report"]["tables"], "figures": {"split": "valid"}}})
    with caplog.at_level(logging.WARNING, logger="s3rec"):
        assert study_folder.read_plan(fabricated_study)["report"]["figures"] == {"split": "valid"}
    assert "report.figures {'split': 'valid'} differs from what report.tables gives" in caplog.text


def test_a_pretraining_that_records_no_preset_is_checked_against_its_folders_preset(tmp_path):
    """An older pretrain_run.json has no config.pretrain.preset: its variant is checked, with the
    preset of the folder it lies in (paper-full), not some other preset's."""
    study = tmp_path / "toy"
    export.write_plan(study_folder.make_plan("toy", [{"pretraining": "paper-full", "seed": 0, "loss": "bce"}], {}),
                      study / "plan.json")
    fake_pretraining(study / "paper-full" / "seed0", "full", 0)
    scanned = study_folder.scan(study)
    assert scanned.status(study_folder.make_run("pretraining", "paper-full", 0)) == "present"
    fake_pretraining(study / "paper-full" / "seed0", "r4", 0)
    with pytest.raises(ValueError, match=r"pretrain_run.json: pretraining 'paper-r4', but its folder says paper-full"):
        study_folder.scan(study)


def test_unreadable_sections_of_a_run_file_are_reported_as_not_recorded(fabricated_study):
    path = fabricated_study / "none/seed0/bce/metrics.json"
    write_json(path, {**json.loads(path.read_text()), "finetune": [], "execution": ["cpu"]})
    text = report_study.runs_markdown(study_folder.scan(fabricated_study))
    assert "| not recorded | not recorded | finetuning | 1 |" in text


@pytest.mark.parametrize("epochs", [0, -4, "4", None])
def test_times_a_run_file_does_not_record_per_stage_are_not_recorded_not_zero(fabricated_study, epochs):
    """A finetuning's seconds are its `finetune` part: a bare number (pretraining included, or of
    an unknown stage) is not recorded, and a device none of whose runs recorded a time says so, not
    "0 s". Epochs that are no positive integer give no time per epoch (not a negative or a crash)."""
    path = fabricated_study / "none/seed0/bce/metrics.json"
    write_json(path, {**json.loads(path.read_text()), "wall_seconds": 3600.0, "cpu_seconds": 3000.0,
                      "execution": {"device": "cpu:older", "threads": 1}})
    run_json = fabricated_study / "seed-full/seed0/pretrain_run.json"
    write_json(run_json, {**json.loads(run_json.read_text()), "epochs": epochs})
    text = report_study.runs_markdown(study_folder.scan(fabricated_study))
    assert "| cpu:older | 1 | finetuning | 1 | not recorded | not recorded |" in text
    assert "| seed-full/seed0 | cuda:0 (NVIDIA H100) | 1 | not recorded | 100 | 90 | not recorded |" in text


def test_a_figure_refusing_its_input_is_logged_in_one_line(fabricated_study, caplog):
    """plot_report.py's clear error (a SystemExit) fails that figure alone, without a traceback."""
    figure = fabricated_study / "report" / "figures" / "finetune_validation.png"
    figure.parent.mkdir(parents=True)
    figure.write_bytes(b"an earlier run's figure")
    history = fabricated_study / "none/seed0/bce/finetune_history.csv"
    history.write_text("epoch,loss,valid_NDCG@10\n1,0.5,x\n")
    assert report_study.main([str(fabricated_study)]) == 1
    assert not figure.exists()  # before, the earlier copy stayed, as if drawn from these runs
    failures = [r for r in caplog.records if r.getMessage().startswith("figure finetune_validation failed")]
    assert [(r.getMessage(), r.exc_info) for r in failures] == [
        ("figure finetune_validation failed (see the error above)", None)]
    assert f"{history}: line 2, column 'valid_NDCG@10': expected a number, got 'x'" in caplog.text
    assert (fabricated_study / "report" / "runs.md").exists()


def test_failed_tables_remove_their_earlier_copy_and_skip_accuracy_vs_rank(fabricated_study, caplog):
    """The fabricated runs record no finetuning loss: aggregate.py refuses them and the tables
    fail. Their earlier files and the accuracy_vs_rank drawn from them are removed (else they stand
    in git as made from these runs), the figure is skipped for that reason, the others are made."""
    report = fabricated_study / "report"
    for name in ("tables/results.md", "tables/difference.csv", "figures/accuracy_vs_rank.png"):
        (report / name).parent.mkdir(parents=True, exist_ok=True)
        (report / name).write_text("an earlier run's file")
    assert report_study.main([str(fabricated_study)]) == 1
    assert list((report / "tables").iterdir()) == [] and not (report / "figures/accuracy_vs_rank.png").exists()
    assert "tables failed (see the error above)" in caplog.text
    assert "figure accuracy_vs_rank skipped: it draws the difference table, which failed" in caplog.text
    assert (report / "figures/head_spectra.png").exists() and (report / "runs.md").exists()


def test_a_failed_figure_alone_makes_the_exit_status_1(fabricated_study, monkeypatch, caplog):
    """With the tables out of the way (here: none to make), a figure's failure is still exit
    status 1: test_a_figure_refusing_its_input_is_logged_in_one_line got 1 from the tables."""
    monkeypatch.setattr(report_study, "make_tables", lambda study, out_dir: False)
    (fabricated_study / "none/seed0/bce/finetune_history.csv").write_text("epoch,loss,valid_NDCG@10\n1,0.5,x\n")
    assert report_study.main([str(fabricated_study)]) == 1
    [summary] = [r.getMessage() for r in caplog.records if r.getMessage().startswith("failed: ")]
    assert "finetune_validation" in summary.split(" (see")[0]


# ---------------------------------------------------------------- end to end, on real runs


@pytest.fixture(scope="module")
def real_study(tiny_data, pretrained, tmp_path_factory):  # noqa: F811
    """A study folder exported from real tiny runs: pretrainings seed-full and seed-r4 (the default
    preset is `seed`), finetunings none, seed-full and seed-r4 with bce and ce, popularity. Seed 1
    is a copy of seed 0 with its recorded seed rewritten: enough for the report, and short."""
    root = tmp_path_factory.mktemp("real")
    results, study = root / "results" / "tiny", root / "study" / "tiny"
    common = ["--data", str(tiny_data), "--seed", "0", "--device", "cpu", "--threads", "1"]
    shutil.copytree(pretrained, results / "seed-r4" / "seed0")
    load_script("pretrain").main(common + ["--variant", "full", "--settings", json.dumps(SETTINGS),
                                           "--out-dir", str(results / "seed-full" / "seed0")])
    finetunings = []
    for pretraining, variant in (("none", "none"), ("seed-full", "full"), ("seed-r4", "r4")):
        run = results / pretraining / "seed0"
        if variant != "none":
            export.main(["copy", str(run / "pretrain_history.csv"), str(run / "pretrain_run.json"),
                         "--to", str(study / pretraining / "seed0")])
            export.main(["heads", str(run / "pretrain.pt"), "--out", str(study / pretraining / "seed0" / "heads.pt")])
        for loss in ("bce", "ce"):
            settings = {**SETTINGS, "finetune": {**SETTINGS["finetune"], "loss": loss}}
            pretrained_arg = [] if variant == "none" else ["--pretrained", str(run / "pretrain.pt")]
            load_script("finetune").main(common + pretrained_arg + ["--variant", variant, "--settings",
                                                                    json.dumps(settings), "--out-dir", str(run / loss)])
            export.main(["copy", *(str(run / loss / name) for name in study_folder.FINETUNE_FILES),
                         "--to", str(study / pretraining / "seed0" / loss)])
            finetunings.append({"pretraining": pretraining, "seed": 0, "loss": loss})
    load_script("popularity").main(["--data", str(tiny_data), "--out-dir", str(results / "popularity"),
                                    "--settings", json.dumps({"eval": SETTINGS["eval"]}), "--threads", "1"])
    export.main(["copy", *(str(results / "popularity" / name) for name in study_folder.POPULARITY_FILES),
                 "--to", str(study / "popularity")])
    for folder in sorted(study.glob("*/seed0")):
        shutil.copytree(folder, folder.with_name("seed1"))
        for path in sorted(folder.with_name("seed1").rglob("*.json")):  # metrics.json, pretrain_run.json
            path.write_text(json.dumps({**json.loads(path.read_text()), "seed": 1}))
    finetunings += [{**f, "seed": 1} for f in finetunings]
    export.main(["plan", "--dataset", "tiny", "--runs", json.dumps(finetunings), "--settings", json.dumps(TABLES),
                 "--out", str(study / "plan.json")])
    return study


def test_report_study_end_to_end_is_byte_stable(real_study):
    assert report_study.main([str(real_study)]) == 0
    report_dir = real_study / "report"
    expected = (["runs.md"] + [f"tables/{n}" for n in report_study.TABLE_FILES]
                + [f"figures/{f}.{e}" for f in report_study.FIGURES for e in report_study.FIGURE_FORMATS])
    assert sorted(p.relative_to(report_dir).as_posix() for p in report_dir.rglob("*") if p.is_file()) == sorted(expected)
    first = {name: (report_dir / name).read_bytes() for name in expected}
    assert "**12 of 12 finetunings, 4 of 4 pretrainings**, popularity: present." in first["runs.md"].decode()
    assert "None of the 12 complete finetunings." in first["runs.md"].decode()  # each from its folder's weights
    assert report_study.main([str(real_study)]) == 0
    changed = [name for name in expected if (report_dir / name).read_bytes() != first[name]]
    assert changed == []


COMMITTED_STUDIES = sorted(p.parent for p in (Path(__file__).resolve().parents[1] / "study").glob("*/plan.json"))


@pytest.mark.skipif(not COMMITTED_STUDIES, reason="no study folder is committed (study/<dataset>/plan.json)")
@pytest.mark.parametrize("committed", COMMITTED_STUDIES, ids=lambda p: p.name)
def test_committed_study_report_regenerates_identically(committed, tmp_path):
    """The README's promise: report_study.py on a fresh clone remakes study/<d>/report/ and git diff
    shows nothing. Tables and runs.md byte for byte (figures may differ with the plotting libraries)."""
    copy = tmp_path / committed.name
    shutil.copytree(committed, copy, ignore=shutil.ignore_patterns("report"))
    assert report_study.main([str(copy)]) == 0
    for name in ["runs.md"] + [f"tables/{n}" for n in report_study.TABLE_FILES]:
        assert (copy / "report" / name).read_bytes() == (committed / "report" / name).read_bytes(), name


# ---------------------------------------------------------------- report.smk's and study.smk's rules
# A dry run (-n -p) of test_run_wiring's study of three data sets, with every field snakemake
# prints of each job. Hand mutants of workflow/rules/report.smk and study.smk (a figure drawn by
# another subcommand, a --out, --inputs or --to argument dropped, a log path or stderr lost, the
# report's code or an export's priority dropped, target report or study planning nothing or the
# wrong report) left every other fast test green.

REPORT_FIGURES = ["accuracy_vs_rank", "params_vs_accuracy", "pretrain_losses", "finetune_validation", "head_spectra",
                  "data_distributions"]
FIGURES_WITH_SETTINGS = {"accuracy_vs_rank", "params_vs_accuracy", "finetune_validation"}
REPORT_RULES = {"aggregate_results", *(f"plot_{figure}" for figure in REPORT_FIGURES)}
STUDY_RULES = {"export_pretraining", "export_finetuning", "export_authors", "export_popularity", "study_plan",
               "report_study"}


@pytest.fixture(scope="module")
def target_jobs(tmp_path_factory):
    """{target: its dry run's jobs} for targets report and study of test_run_wiring's PLANNED_STUDY."""
    workdir, config = planned_study_workdir(tmp_path_factory.mktemp("report_rules"))
    jobs = {}
    for target in ("report", "study"):
        result = run_snakemake(workdir, "-n", "--printshellcmds", "--configfile", config, "--", target)
        jobs[target] = listed_jobs(result.stdout + result.stderr)
    return jobs


def only_job(jobs, rule, **wildcards):
    (job,) = jobs_matching(jobs, rule, **wildcards)
    return job


def test_the_targets_report_and_study_plan_their_own_reports(target_jobs):
    """`snakemake report`: results/'s tables and figures and the study report of every data set;
    `snakemake study`: the study report and the exports, not results/'s report."""
    datasets = {"tiny", "mine", "shop"}
    report = {(job["rule"], job["wildcards"].get("dataset")) for job in target_jobs["report"]}
    assert {(rule, dataset) for rule in REPORT_RULES | {"report_study", "study_plan"} for dataset in datasets} <= report
    study = {(job["rule"], job["wildcards"].get("dataset")) for job in target_jobs["study"]}
    assert {(rule, dataset) for rule in STUDY_RULES - {"export_authors"} for dataset in datasets} <= study
    assert ("export_authors", "mine") in study
    assert not {rule for rule, _ in study} & REPORT_RULES


def test_the_tables_are_made_from_every_metrics_file_into_the_tables_folder(target_jobs):
    job = only_job(target_jobs["report"], "aggregate_results", dataset="mine")
    tables = "results/mine/report/tables"
    assert job["output"] == [f"{tables}/{name}" for name in report_study.TABLE_FILES]
    assert job["log"] == ["logs/results/mine/report/aggregate_results.log"]
    assert {"scripts/aggregate.py", "s3rec/report.py", "s3rec/intervals.py"} <= set(job["input"])
    metrics = " ".join(path for path in job["input"] if path.endswith("metrics.json"))
    assert re.fullmatch(rf"python scripts/aggregate\.py --metrics {re.escape(metrics)} --out-dir {tables}"
                        rf" --settings '\{{.*\}}' > logs/results/mine/report/aggregate_results\.log 2>&1", job["shell"])


@pytest.mark.parametrize("figure", REPORT_FIGURES)
def test_each_figure_is_drawn_by_its_own_subcommand_from_its_inputs(target_jobs, figure):
    job = only_job(target_jobs["report"], f"plot_{figure}", dataset="mine")
    out = [f"results/mine/report/figures/{figure}.{ext}" for ext in ("png", "pdf")]
    log = f"logs/results/mine/report/figures/{figure}.log"
    assert job["output"] == out and job["log"] == [log]
    code = {"scripts/plot_report.py", "s3rec/report.py", "s3rec/plots.py", "s3rec/spectra.py"}
    assert code <= set(job["input"])
    data = [path for path in job["input"] if path != "scripts/plot_report.py" and not path.startswith("s3rec/")]
    assert data and (figure != "data_distributions" or data == ["resources/mine/sequences.parquet",
                                                                 "resources/mine/item_attributes.parquet"])
    settings = r" --settings '\{.*\}'" if figure in FIGURES_WITH_SETTINGS else ""
    assert re.fullmatch(rf"python scripts/plot_report\.py {figure} --inputs {re.escape(' '.join(data))}"
                        rf" --out {re.escape(' '.join(out))}{settings} > {re.escape(log)} 2>&1", job["shell"]), job["shell"]


def test_each_export_copies_its_runs_files_into_the_study_folder(target_jobs):
    jobs = target_jobs["report"]
    run, copy = "results/mine/seed-r4/seed1", "study/mine/seed-r4/seed1"
    job = only_job(jobs, "export_pretraining", dataset="mine", preset="seed", variant="r4", seed="1")
    assert job["output"] == [f"{copy}/pretrain_history.csv", f"{copy}/pretrain_run.json", f"{copy}/heads.pt"]
    assert job["log"] == ["logs/study/mine/seed-r4/seed1/export.log"] and job["fields"]["priority"] == "2"
    assert job["shell"] == (f"(python scripts/export_study.py copy {run}/pretrain_history.csv {run}/pretrain_run.json"
                            f" --to {copy} && python scripts/export_study.py heads {run}/pretrain.pt --out {copy}/heads.pt)"
                            " > logs/study/mine/seed-r4/seed1/export.log 2>&1")
    run, copy = "results/mine/authors/seed0/ce", "study/mine/authors/seed0/ce"
    job = only_job(jobs, "export_finetuning", dataset="mine", pretraining="authors", seed="0", loss="ce")
    names = ["finetune_history.csv", "metrics.json", "ranks.parquet"]
    assert job["output"] == [f"{copy}/{name}" for name in names] and job["fields"]["priority"] == "2"
    assert job["shell"] == (f"python scripts/export_study.py copy {' '.join(f'{run}/{name}' for name in names)}"
                            f" --to {copy} > logs/study/mine/authors/seed0/ce/export.log 2>&1")
    job = only_job(jobs, "export_authors", dataset="mine")
    assert job["output"] == ["study/mine/authors/heads.pt"]
    assert job["shell"] == ("python scripts/export_study.py heads results/mine/authors/pretrain.pt"
                            " --out study/mine/authors/heads.pt > logs/study/mine/authors/export.log 2>&1")
    job = only_job(jobs, "export_popularity", dataset="mine")
    assert job["output"] == ["study/mine/popularity/metrics.json", "study/mine/popularity/ranks.parquet"]
    assert job["shell"] == ("python scripts/export_study.py copy results/mine/popularity/metrics.json"
                            " results/mine/popularity/ranks.parquet --to study/mine/popularity"
                            " > logs/study/mine/popularity/export.log 2>&1")


def test_the_study_plan_and_report_are_made_in_the_data_sets_study_folder(target_jobs):
    jobs = target_jobs["report"]
    plan = only_job(jobs, "study_plan", dataset="mine")
    assert plan["output"] == ["study/mine/plan.json"] and plan["log"] == ["logs/study/mine/plan.log"]
    assert re.fullmatch(r"python scripts/export_study\.py plan --dataset mine --runs '\{.*\}' --settings '(\{.*\})'"
                        r" --out study/mine/plan\.json > logs/study/mine/plan\.log 2>&1", plan["shell"]), plan["shell"]
    aggregate = only_job(jobs, "aggregate_results", dataset="mine")
    settings = re.search(r"--settings ('\{.*\}')", aggregate["shell"]).group(1)
    assert f" --settings {settings} --out " in plan["shell"]  # the tables' own
    job = only_job(jobs, "report_study", dataset="mine")
    assert job["shell"] == "python scripts/report_study.py study/mine > logs/study/mine/report_study.log 2>&1"
    assert {"scripts/report_study.py", "scripts/aggregate.py", "scripts/plot_report.py", "s3rec/report.py",
            "study/mine/plan.json"} <= set(job["input"])
    tables = [f"study/mine/report/tables/{name}" for name in report_study.TABLE_FILES]
    assert {"study/mine/report/runs.md", *tables} <= set(job["output"])
