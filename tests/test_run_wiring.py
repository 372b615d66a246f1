"""How the pieces are wired into a run, where hand mutants survived the unit tests: the best
epoch's weights are the ones evaluated, early stopping watches the validation item, the
negatives setting reaches the batches, the length cut of finetuning and scoring, the logits'
columns, the recorded parameter counts, the popularity scores, a tie in validation, the patience
count, each epoch's random generators and each epoch's timing columns; and, in a dry run of the
workflow, the runs, inputs and arguments that workflow/rules/common.smk gives each job."""
from __future__ import annotations

import json
import re
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch

from s3rec import runs, runtime, training
from s3rec.batching import chunk_bounds
from s3rec.config import ModelConfig, RunConfig
from s3rec.data import Prepared, write_prepared
from s3rec.encoder import Encoder
from s3rec.finetuning import item_logits, make_batch, score_function
from s3rec.pretraining import PretrainModel
from conftest import snakemake_env
from scripts_import import load_script
from test_runs import tiny_data  # noqa: F401 - the fixture: 60 generated users
from test_workflow import STARTS, TINY, copy_workflow, run_snakemake, write_config

SETTINGS = {"model": {"hidden_size": 16, "num_heads": 2, "max_len": 12},
            "finetune": {"epochs": 30, "batch_size": 16, "patience": 2, "lr": 0.01},
            "eval": {"sampled_negatives": 20}}


@pytest.fixture(scope="module")
def finished(tiny_data, tmp_path_factory):
    """`none` finetuned until early stopping: (metrics.json, finetune_history.csv)."""
    out = tmp_path_factory.mktemp("none")
    runs.finetune(tiny_data, out, runs.resolve_config(SETTINGS, "none", 0, device="cpu"), "none")
    return json.loads((out / "metrics.json").read_text()), pl.read_csv(out / "finetune_history.csv")


def test_the_best_epoch_is_the_one_evaluated_on_the_validation_item(finished):
    """Evaluating the last epoch instead of the best, or validating on the test item, left every
    other test green: the final validation metrics must be the best epoch's history row."""
    result, history = finished
    assert result["early_stopped"] and result["best_epoch"] < result["epochs_run"]
    best = history.row(result["best_epoch"] - 1, named=True)
    valid, test = result["metrics"]["full"]["valid"], result["metrics"]["full"]["test"]
    for metric, value in valid.items():
        assert best[f"valid_{metric}"] == pytest.approx(value, rel=1e-9, abs=1e-12), metric
    assert any(best[f"valid_{metric}"] != pytest.approx(test[metric]) for metric in test)


@pytest.mark.parametrize("heldout", [False, True])
def test_the_negatives_setting_reaches_the_finetuning_batches(tiny_data, tmp_path, monkeypatch, heldout):
    seen = []
    original = runs.excluded_negatives
    monkeypatch.setattr(runs, "excluded_negatives", lambda *args: seen.append(args[2]) or original(*args))
    settings = {**SETTINGS, "finetune": {**SETTINGS["finetune"], "epochs": 1, "negatives_exclude_heldout": heldout}}
    result = runs.finetune(tiny_data, tmp_path, runs.resolve_config(settings, "none", 0, device="cpu"), "none")
    assert seen == [heldout] and result["finetune"]["negatives_exclude_heldout"] is heldout


def test_a_long_sequence_is_cut_to_its_last_max_len_inputs_and_targets():
    train = [np.arange(1, 21, dtype=np.int32)]
    batch = make_batch(np.array([0]), train, train, num_items=30, max_len=5, rng=np.random.default_rng(0))
    assert batch.inputs.tolist() == [[15, 16, 17, 18, 19]] and batch.targets.tolist() == [[16, 17, 18, 19, 20]]


def test_scores_read_the_last_max_len_items_of_a_history():
    torch.manual_seed(0)
    encoder = Encoder(ModelConfig(hidden_size=16, num_heads=2, max_len=5), num_items=30).eval()
    score = score_function(encoder, torch.device("cpu"))
    history = np.arange(1, 9)
    assert torch.equal(score([history]), score([history[-5:]]))
    assert not torch.allclose(score([history]), score([history[-4:]]))
    assert score([history]).shape == (1, 31)  # padding column 0, items 1..30: [MASK] is no candidate


def test_item_logits_cover_the_real_items_only():
    encoder = Encoder(ModelConfig(hidden_size=16, num_heads=2, max_len=5), num_items=30)
    states = torch.randn(7, 16)
    logits = item_logits(encoder, states)
    assert logits.shape == (7, 30)
    assert torch.allclose(logits[:, 0], states @ encoder.item_embeddings.weight[1])


@pytest.mark.parametrize("variant", ["full", "r4"])
def test_recorded_parameter_counts_are_the_models(variant):
    cfg = runs.resolve_config(SETTINGS, variant, 0, device="cpu")
    counts = runs.parameter_counts(cfg, num_items=40, num_attributes=8, pretrained=True)
    model = PretrainModel(cfg, 40, 8)
    assert counts["total"] == sum(p.numel() for p in model.parameters())
    assert counts["attribute_embeddings"] == model.attribute_embeddings.weight.numel()
    assert counts["encoder"] == sum(p.numel() for p in model.encoder.parameters())
    none = runs.parameter_counts(RunConfig.from_dict(SETTINGS), 40, 8, pretrained=False)
    assert none["total"] == sum(p.numel() for p in Encoder(cfg.model, 40).parameters())


def test_fixed_shapes_given_decide_the_step_layout_over_the_compile_mode(tiny_data):
    """benchmarks/speed.py times the gathered and the fixed-shape steps of one mode side by side:
    `fixed_shapes` decides, cfg.compile (here none: gathered) only when it is not given."""
    cfg = runs.resolve_config(SETTINGS, "r4", 0, device="cpu")
    setup = runs.pretraining_setup(tiny_data, cfg, "r4", "seed 0", check_evaluation=False)
    model = PretrainModel(cfg, setup.dataset.num_items, setup.dataset.num_attributes)
    optimizer = training.adam(model.parameters(), lr=1e-3, weight_decay=0.0)

    def layout(**fixed_shapes):
        return runs.pretraining_steps(model, optimizer, setup.instances, cfg, "cpu", **fixed_shapes)[1]

    assert layout() == layout(fixed_shapes=False) == {"bounds": chunk_bounds("cpu")}
    assert layout(fixed_shapes=True) == {"bounds": (), "length": 12}


def test_popularity_scores_count_the_training_parts_only(tmp_path):
    popularity = load_script("popularity")
    assert popularity.popularity_scores([np.array([1, 1, 2])], 3).tolist() == [0.0, 2.0, 1.0, 0.0]
    # training counts 1: 4, 2: 4, 3: 1, 4 and 5: 0 (the held-out items). Ranked for the validation
    # item 4 among what is not history: users 1, 2 {3 above, 5 tied} -> rank 3, user 3 {5 tied} ->
    # rank 2. Counted from whole sequences (4 and 5 lead) or negated, every rank would be 2.
    sequences = [np.array([1, 2, 1, 4, 5]), np.array([2, 1, 2, 4, 5]), np.array([1, 2, 3, 4, 5])]
    write_prepared(Prepared(format="synthetic", user_ids=np.arange(1, 4, dtype=np.int32), sequences=sequences,
                            item_attributes=[np.zeros(0, dtype=np.int32)] + [np.array([1], dtype=np.int32)] * 5,
                            num_attributes=1), tmp_path / "data")
    assert popularity.main(["--data", str(tmp_path / "data"), "--out-dir", str(tmp_path / "out"), "--settings",
                            json.dumps({"eval": {"protocols": ["full"]}})]) == 0
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())["metrics"]["full"]
    assert metrics["valid"]["MRR"] == pytest.approx((1 / 3 + 1 / 3 + 1 / 2) / 3)


def run_loop(tmp_path, train_epoch, epochs, scores=None, patience=None, validate=None):
    """training.run_epochs on a one-weight model, seed 7; `scores`: validation scores, epoch by
    epoch (or `validate` itself)."""
    model = torch.nn.Linear(1, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    if scores is not None:
        def validate():
            return next(scores), {}
    return training.run_epochs(model=model, optimizer=optimizer, epochs=epochs, seed=7, train_epoch=train_epoch,
                               checkpoint=tmp_path / "state.pt", config={}, history_path=tmp_path / "history.csv",
                               validate=validate, patience=patience)


def test_a_tie_in_validation_keeps_the_first_best_epoch(tmp_path):
    """The docstring's "first epoch with the best score": a >= in place of > survived, as no
    history held a tie."""
    scores = iter([0.5, 0.5, 0.4, 0.4, 0.3])
    state = run_loop(tmp_path, lambda rng: {"loss": 1.0}, epochs=5, scores=scores, patience=2)
    assert (state.best_epoch, state.epoch) == (1, 3)


def test_patience_counts_the_epochs_since_the_last_improvement(tmp_path):
    """Scores .5 .4 .6 .5 .4, patience 2: epoch 2 is one bad epoch, epoch 3 a new best that starts
    the count again, epochs 4 and 5 make two: the run stops after epoch 5 with epoch 3 best (a
    count never reset would stop after epoch 4, having waited one epoch since the best)."""
    scores = iter([0.5, 0.4, 0.6, 0.5, 0.4, 0.3, 0.2])
    state = run_loop(tmp_path, lambda rng: {"loss": 1.0}, epochs=7, scores=scores, patience=2)
    assert (state.best_epoch, state.epoch, state.bad_epochs) == (3, 5, 2)


def test_each_epoch_draws_from_its_seed_and_its_own_number(tmp_path):
    """Epoch k (1-based, as the history numbers it) gets runtime.epoch_generators(seed, k): the
    numpy generator it is handed and torch's global RNG. Epoch 0's are the initial weights'
    (runs.pretrain and runs.finetune seed them with (seed, 0)): drawn again in epoch 1, its
    dropout would repeat the initialisation's random stream."""
    drawn = []
    state = run_loop(tmp_path, lambda rng: drawn.append((rng.integers(1 << 30), torch.rand(1).item())) or {},
                     epochs=3)
    expected = []
    for epoch in (1, 2, 3):
        rng = runtime.epoch_generators(7, epoch)
        expected.append((rng.integers(1 << 30), torch.rand(1).item()))
    assert drawn == expected and [row["epoch"] for row in state.history] == [1, 2, 3]


def test_the_history_times_each_epoch_on_its_own(tmp_path, monkeypatch):
    """seconds is one epoch's training, valid_seconds its validation, instances_per_s the epoch's
    instances over its seconds (CONTRACTS.md's history columns). On a clock that training moves
    10 s an epoch and validation 3 s: 10, 3 and 500 / 10 = 50 in every row, the second too (not
    20 s counted from the start of the loop)."""
    clock = [0.0]

    def train_epoch(rng):
        clock[0] += 10.0
        return {"loss": 1.0, "instances": 500}

    def validate():
        clock[0] += 3.0
        return 0.5, {}

    monkeypatch.setattr(training, "time", types.SimpleNamespace(perf_counter=lambda: clock[0]))
    state = run_loop(tmp_path, train_epoch, epochs=2, validate=validate)
    history = pl.read_csv(tmp_path / "history.csv")
    assert history["seconds"].to_list() == [10.0, 10.0] and history["valid_seconds"].to_list() == [3.0, 3.0]
    assert history["instances_per_s"].to_list() == [50.0, 50.0] and state.epoch == 2


# ---------------------------------------------------------------- input checks no test reached


def negatives_folder(tmp_path, frame: pl.DataFrame):
    frame.write_parquet(tmp_path / "sampled_negatives.parquet")
    return tmp_path


@pytest.mark.parametrize("frame, message", [
    (pl.DataFrame({"user_id": [2, 1], "negatives": [[3, 4], [3, 4]]}), "user_id: expected the users of"),
    (pl.DataFrame({"user_id": [1, 2], "negatives": [[3, 4], [3]]}), "expected the same number of negatives"),
    (pl.DataFrame({"user_id": [1, 2], "negatives": [[3, 4], None]}), "expected no null values"),
])
def test_a_damaged_negatives_file_is_refused_naming_it(tmp_path, frame, message):
    from s3rec.data import NEGATIVES_SCHEMA, DataError, load_sampled_negatives
    folder = negatives_folder(tmp_path, frame.cast(NEGATIVES_SCHEMA))
    with pytest.raises(DataError, match=f"sampled_negatives.parquet: .*{message}"):
        load_sampled_negatives(folder, np.array([1, 2], dtype=np.int32))


def test_an_attribute_id_0_in_the_prepared_attributes_is_refused(tiny_data, tmp_path):
    import shutil

    from s3rec.data import DataError, load_dataset
    copy = tmp_path / "copy"
    shutil.copytree(tiny_data, copy)
    path = copy / "item_attributes.parquet"
    frame = pl.read_parquet(path)
    frame.with_columns(pl.when(pl.col("item_id") == 1).then(pl.lit([0], dtype=frame.schema["attributes"]))
                       .otherwise(pl.col("attributes")).alias("attributes")).write_parquet(path)
    with pytest.raises(DataError, match=r"item_attributes\.parquet: attributes: expected attribute ids >= 1"):
        load_dataset(copy)


def test_a_sampled_negative_equal_to_the_target_is_refused():
    from s3rec.evaluation import sampled_ranks
    with pytest.raises(ValueError, match="a sampled negative equals its user's target"):
        sampled_ranks(lambda histories: torch.zeros(len(histories), 6), [np.array([1, 2])], np.array([4]),
                      np.array([[4, 1, 2]]))


def test_the_bootstrap_states_the_mean_difference():
    from s3rec.intervals import paired_bootstrap
    assert paired_bootstrap(np.array([[0.0, 0.0, 3.0]]), samples=50)[0] == 1.0  # the median would say 0


# ---------------------------------------------------------------- the DAG's runs and arguments
# One dry run (-n -p) of a study of three data sets, one of each source: what common.smk's input
# and param functions give each job. Hand mutants of common.smk (a seed, a loss or the popularity
# baseline dropped from an input list or the study plan, an argument of prepare_data or a
# download's sha256 lost, the split of the figures fixed) left every other test green.

PLANNED_STUDY = {  # test_workflow's TINY study (pretrainings PRETRAINED) on a data set of each source
    **TINY,
    "run_on": ["tiny", "mine", "shop"],
    "datasets": {
        "tiny": {**TINY["datasets"]["tiny"], "seed": 7},  # 7: not the default seed 0
        "mine": {"source": "s3rec", "sequences": "Mine.txt", "attributes": "Mine_item2attributes.json",
                 "authors_checkpoint": "Mine-epochs-150.pt"},
        "shop": {"source": "amazon", "reviews": "resources/raw/reviews_Shop_5.json.gz",
                 "meta": "resources/raw/meta_Shop.json.gz", "k_core": 3,
                 "download": {"reviews": {"url": "https://example.org/r?a=1&b=2", "sha256": "0" * 64},
                              "meta": {"url": "https://example.org/m"}}},
    },
    "report": {**TINY["report"], "split": "valid", "metric": "HR@10"},
}
PRETRAINED = [start for start in STARTS if start != "none"]


def listed_jobs(out):
    """[{rule, wildcards, input, output, log (lists), shell ('' for a job without one), fields (every
    line of the job's listing)}] of a dry run's output (-n --printshellcmds)."""
    jobs = []
    for rule, block, shell in re.findall(r"^(?:local)?rule (\w+):\n((?:    .*\n)+)(?:Shell command: (.*)$)?", out,
                                         flags=re.M):
        fields = dict(re.findall(r"^    (\w+): (.*)$", block, flags=re.M))
        jobs.append({"rule": rule, "shell": shell, "fields": fields,
                     **{name: fields[name].split(", ") if name in fields else [] for name in ("input", "output", "log")},
                     "wildcards": dict(kv.split("=", 1) for kv in fields.get("wildcards", "").split(", ") if kv)})
    return jobs


def planned_study_workdir(folder):
    """A copy of the workflow in `folder` with PLANNED_STUDY's config: (workdir, config path)."""
    workdir = copy_workflow(folder)
    for name in ("Mine.txt", "Mine_item2attributes.json", "Mine-epochs-150.pt"):
        (workdir / name).write_text("placeholder")  # only their existence is checked when planning
    return workdir, write_config(workdir, PLANNED_STUDY)


@pytest.fixture(scope="module")
def planned_jobs(tmp_path_factory):
    """listed_jobs of every job of PLANNED_STUDY's dry run, and the files of target `all` (the
    reason line of its job 0 lists them all in a fresh folder)."""
    workdir, config = planned_study_workdir(tmp_path_factory.mktemp("planned"))
    # a job with an output deleted (popularity's ranks.parquet), a pretraining done but not exported
    for path in ["results/tiny/popularity/metrics.json",
                 *(f"results/tiny/seed-full/seed0/{name}" for name in ("pretrain.pt", "pretrain_history.csv",
                                                                      "pretrain_run.json"))]:
        (workdir / path).parent.mkdir(parents=True, exist_ok=True)
        (workdir / path).write_text("placeholder")
    result = run_snakemake(workdir, "-n", "--printshellcmds", "--configfile", config)
    out = result.stdout + result.stderr
    targets = re.search(r"^Job 0: .*\nReason: Input files updated by another job: (.*)$", out, flags=re.M)
    return listed_jobs(out), set(targets.group(1).split(", "))


def jobs_matching(jobs, rule, **wildcards):
    return [job for job in jobs if job["rule"] == rule and all(job["wildcards"].get(k) == v for k, v in wildcards.items())]


def jobs_of(planned_jobs, rule, **wildcards):
    return jobs_matching(planned_jobs[0], rule, **wildcards)


def shell_json(shell, option):
    return json.loads(re.search(rf"{option} '(\{{.*?\}})'(?: |$)", shell).group(1))


def finetuned(dataset, starts, name):
    return {f"results/{dataset}/{start}/seed{seed}/{loss}/{name}"
            for start in starts for seed in (0, 1) for loss in ("bce", "ce")}


def test_prepare_data_gets_each_sources_arguments(planned_jobs):
    (tiny,) = jobs_of(planned_jobs, "prepare_data", dataset="tiny")
    assert "prepare_data.py --format synthetic --users 300 --items 200 --attributes 20 --seed 7 --out" in tiny["shell"]
    (shop,) = jobs_of(planned_jobs, "prepare_data", dataset="shop")
    assert ("prepare_data.py --format amazon --reviews resources/raw/reviews_Shop_5.json.gz"
            " --meta resources/raw/meta_Shop.json.gz --k-core 3 --out resources/shop") in shop["shell"]


def test_a_download_gets_its_url_quoted_and_its_sha256_checked(planned_jobs):
    (reviews,) = jobs_of(planned_jobs, "download_raw_file", filename="reviews_Shop_5.json.gz")
    assert "--output resources/raw/reviews_Shop_5.json.gz 'https://example.org/r?a=1&b=2' &&" in reviews["shell"]
    assert f"echo '{'0' * 64}  resources/raw/reviews_Shop_5.json.gz' | sha256sum --check -" in reviews["shell"]
    (meta,) = jobs_of(planned_jobs, "download_raw_file", filename="meta_Shop.json.gz")
    assert "if [ -n '' ];" in meta["shell"]  # no sha256 given: not checked


def test_each_finetuning_gets_its_loss_variant_and_start(planned_jobs):
    finetunings = jobs_of(planned_jobs, "finetune_model", dataset="mine")
    assert len(finetunings) == 5 * 2 * 2  # none, the three pretrained, authors
    for job in finetunings:
        w = job["wildcards"]
        settings = shell_json(job["shell"], "--settings")
        assert settings["finetune"]["loss"] == w["loss"], job["shell"]
        variant = w["pretraining"].split("-")[-1]
        assert f"--variant {variant} --seed {w['seed']} " in job["shell"]
        preset = w["pretraining"].split("-")[0] if "-" in w["pretraining"] else None
        assert settings.get("pretrain", {}).get("preset") == preset


def test_popularity_takes_the_eval_settings_alone(planned_jobs):
    """A change to the model or finetuning settings does not rerun the popularity baseline."""
    (popularity,) = jobs_of(planned_jobs, "rank_popularity", dataset="tiny")
    assert set(shell_json(popularity["shell"], "--settings")) == {"eval"}


def test_the_study_plan_lists_every_run(planned_jobs):
    for dataset, authors in (("tiny", False), ("mine", True)):
        (plan,) = jobs_of(planned_jobs, "study_plan", dataset=dataset)
        runs = shell_json(plan["shell"], "--runs")
        assert runs["authors"] is authors and runs["popularity"] is True
        assert sorted((r["pretraining"], r["seed"]) for r in runs["pretrainings"]) == sorted(
            (p, s) for p in PRETRAINED for s in (0, 1))
        starts = ["none", *PRETRAINED] + (["authors"] if authors else [])
        assert sorted((r["pretraining"], r["seed"], r["loss"]) for r in runs["finetunings"]) == sorted(
            (p, s, loss) for p in starts for s in (0, 1) for loss in ("bce", "ce"))


def test_the_tables_and_figures_read_every_run_and_the_baseline(planned_jobs):
    starts = ["none", *PRETRAINED, "authors"]
    (aggregate,) = jobs_of(planned_jobs, "aggregate_results", dataset="mine")
    assert set(aggregate["input"]) >= finetuned("mine", starts, "metrics.json") | finetuned(
        "mine", starts, "ranks.parquet") | {"results/mine/popularity/metrics.json", "results/mine/popularity/ranks.parquet"}
    (accuracy,) = jobs_of(planned_jobs, "plot_accuracy_vs_rank", dataset="mine")
    assert set(accuracy["input"]) >= finetuned("mine", starts, "metrics.json") | {
        "results/mine/report/tables/difference.csv", "results/mine/popularity/metrics.json"}
    (params,) = jobs_of(planned_jobs, "plot_params_vs_accuracy", dataset="mine")
    assert set(params["input"]) >= finetuned("mine", starts, "metrics.json") | {"results/mine/popularity/metrics.json"}
    (validation,) = jobs_of(planned_jobs, "plot_finetune_validation", dataset="mine")
    assert set(validation["input"]) >= finetuned("mine", starts, "finetune_history.csv") | finetuned(
        "mine", starts, "metrics.json")
    pretrained = {f"results/mine/{p}/seed{s}" for p in PRETRAINED for s in (0, 1)}
    (losses,) = jobs_of(planned_jobs, "plot_pretrain_losses", dataset="mine")
    assert set(losses["input"]) >= {f"{run}/{name}" for run in pretrained
                                    for name in ("pretrain_history.csv", "pretrain_run.json")}
    (spectra,) = jobs_of(planned_jobs, "plot_head_spectra", dataset="mine")
    assert set(spectra["input"]) >= {f"{run}/pretrain.pt" for run in pretrained} | {"results/mine/authors/pretrain.pt"}


def test_the_study_report_reads_every_exported_run(planned_jobs):
    (report,) = jobs_of(planned_jobs, "report_study", dataset="mine")
    starts = ["none", *PRETRAINED, "authors"]
    assert set(report["input"]) >= {f"study/mine/{p}/seed{s}/pretrain_run.json" for p in PRETRAINED for s in (0, 1)} | {
        path.replace("results/", "study/", 1) for path in finetuned("mine", starts, "metrics.json")} | {
        "study/mine/plan.json", "study/mine/authors/heads.pt", "study/mine/popularity/metrics.json"}
    assert len(jobs_of(planned_jobs, "export_pretraining", dataset="mine")) == 3 * 2
    assert len(jobs_of(planned_jobs, "export_finetuning", dataset="mine")) == 5 * 2 * 2


def test_the_tables_and_figures_get_the_report_settings(planned_jobs):
    (aggregate,) = jobs_of(planned_jobs, "aggregate_results", dataset="tiny")
    settings = shell_json(aggregate["shell"], "--settings")
    assert (settings["split"], settings["metric"], settings["protocols"]) == ("valid", "HR@10", ["full", "sampled"])
    for figure in ("accuracy_vs_rank", "params_vs_accuracy", "finetune_validation"):
        (job,) = jobs_of(planned_jobs, f"plot_{figure}", dataset="tiny")
        assert shell_json(job["shell"], "--settings") == {"split": "valid", "metric": "HR@10",
                                                            "protocols": ["full", "sampled"]}, figure


def test_target_all_is_every_table_figure_and_study_report(planned_jobs):
    figures = ["accuracy_vs_rank", "params_vs_accuracy", "pretrain_losses", "finetune_validation", "head_spectra",
               "data_distributions"]
    expected = {f"study/{dataset}/report/runs.md" for dataset in ("tiny", "mine", "shop")}
    for dataset in ("tiny", "mine", "shop"):
        expected |= {f"results/{dataset}/report/tables/{table}.{ext}"
                     for table in ("results", "difference") for ext in ("csv", "md", "tex")}
        expected |= {f"results/{dataset}/report/figures/{figure}.{ext}" for figure in figures for ext in ("png", "pdf")}
    assert expected <= planned_jobs[1], sorted(expected - planned_jobs[1])


def test_target_all_names_the_files_missing_from_a_finished_job(planned_jobs):
    """incomplete_job_outputs: a file deleted from a job whose other outputs are there, the study
    copies of a finished run and the plan are targets of `all` (else not made again)."""
    targets = planned_jobs[1]
    assert "results/tiny/popularity/ranks.parquet" in targets
    assert {f"study/tiny/seed-full/seed0/{name}" for name in ("pretrain_history.csv", "pretrain_run.json",
                                                               "heads.pt")} <= targets
    assert {"study/tiny/plan.json", "study/mine/plan.json", "study/shop/plan.json"} <= targets
    assert not [path for path in targets if path.startswith(("results/tiny/seed-r4/", "study/tiny/seed-r4/"))]


# ---------------------------------------------------------------- the rules' own wiring
# Hand mutants of workflow/rules/data.smk, train.smk and the Snakefile (a log or benchmark path
# moved, a command's redirect, --threads or --compile dropped, a script left out of a job's
# inputs, a finetuning's checkpoint input or priority lost, a stacked job's runtime or cores not
# scaled with its seeds, unstack_pretraining copying a file to another's name) left every other
# dry-run test green.

LOGGED = {  # rule: its log's name in the folder of its outputs, and whether snakemake benchmarks it
    "prepare_data": ("prepare_data", True), "pretrain_model": ("pretrain", True),
    "pretrain_stacked": ("pretrain", True), "unstack_pretraining": ("unstack", False),
    "finetune_model": ("finetune", True), "import_authors_checkpoint": ("import_checkpoint", False),
    "rank_popularity": ("rank_popularity", True)}


def assert_logged_beside_its_outputs(job):
    """README's `logs/`: one log per job beside the path of its outputs, logs/benchmarks/ the
    same; the command's output and errors go to it."""
    folder = job["output"][0].rsplit("/", 1)[0]
    name, benchmarked = LOGGED[job["rule"]]
    assert job["log"] == [f"logs/{folder}/{name}.log"], job
    assert job["fields"].get("benchmark") == (f"logs/benchmarks/{folder}/{name}.tsv" if benchmarked else None), job
    assert job["shell"].endswith(f" > {job['log'][0]} 2>&1"), job["shell"]


def test_each_job_logs_and_benchmarks_beside_its_outputs(planned_jobs):
    for rule in LOGGED.keys() - {"pretrain_stacked", "unstack_pretraining"}:
        jobs = jobs_of(planned_jobs, rule)
        assert jobs, rule
        for job in jobs:
            assert_logged_beside_its_outputs(job)
    downloads = jobs_of(planned_jobs, "download_raw_file")
    assert sorted(job["output"] for job in downloads) == [["resources/raw/meta_Shop.json.gz"],
                                                          ["resources/raw/reviews_Shop_5.json.gz"]]
    for job in downloads:
        [output] = job["output"]
        log = f"logs/{output}.log"
        assert job["log"] == [log] and job["shell"].endswith(f") > {log} 2>&1"), job
        assert job["shell"].startswith(f"(curl --fail --location --retry 3 --output {output} ")


SETTINGS_JSON = r"'\{.*\}'"


def test_each_script_job_reads_its_script_and_its_data_and_runs_on_one_thread(planned_jobs):
    """A script among a job's inputs reruns the job when the script changes; --threads is the
    job's one thread (a core of `cores: all`), --compile the config's."""
    for rule, script in (("prepare_data", "prepare_data"), ("pretrain_model", "pretrain"),
                         ("finetune_model", "finetune"), ("import_authors_checkpoint", "import_checkpoint"),
                         ("rank_popularity", "popularity")):
        for job in jobs_of(planned_jobs, rule):
            assert f"scripts/{script}.py" in job["input"] and "threads" not in job["fields"], job
            if rule != "prepare_data":
                data = f"resources/{job['wildcards']['dataset']}"
                assert {f"{data}/sequences.parquet", f"{data}/item_attributes.parquet"} <= set(job["input"]), job
                assert job["shell"].startswith(f"python scripts/{script}.py ") and f" --data {data} " in job["shell"], job
    pretrainings = jobs_of(planned_jobs, "pretrain_model")
    assert len(pretrainings) == 3 * len(PRETRAINED) * 2  # three data sets, two seeds
    for job in pretrainings:
        w = job["wildcards"]
        run = f"results/{w['dataset']}/{w['preset']}-{w['variant']}/seed{w['seed']}"
        assert re.fullmatch(rf"python scripts/pretrain.py --data resources/{w['dataset']} --variant {w['variant']}"
                            rf" --seed {w['seed']} --out-dir {run} --settings {SETTINGS_JSON} --device cpu"
                            rf" --threads 1 --compile none > logs/{run}/pretrain.log 2>&1", job["shell"]), job["shell"]
    for job in jobs_of(planned_jobs, "finetune_model"):
        assert re.search(rf"--out-dir results/\S+ +(--pretrained \S+ )?--settings {SETTINGS_JSON} --device cpu"
                         rf" --threads 1 --compile none > ", job["shell"]), job["shell"]
    (popularity,) = jobs_of(planned_jobs, "rank_popularity", dataset="mine")
    assert re.fullmatch(rf"python scripts/popularity.py --data resources/mine --out-dir results/mine/popularity"
                        rf" --settings {SETTINGS_JSON} --threads 1 > \S+ 2>&1", popularity["shell"]), popularity["shell"]
    (authors,) = jobs_of(planned_jobs, "import_authors_checkpoint")
    assert "Mine-epochs-150.pt" in authors["input"]


def test_a_finetuning_waits_for_its_checkpoint_and_goes_before_pretrainings(planned_jobs):
    """Its checkpoint among its inputs: else snakemake may start it before the pretraining ends
    (or not rerun it after one); priority 1 puts a ready finetuning before the next pretraining."""
    finetunings = jobs_of(planned_jobs, "finetune_model")
    assert len(finetunings) == 3 * 4 * 2 * 2 + 2 * 2  # tiny, mine, shop: none and PRETRAINED; mine: authors
    for job in finetunings:
        w = job["wildcards"]
        checkpoint = {"none": None, "authors": f"results/{w['dataset']}/authors/pretrain.pt"}.get(
            w["pretraining"], f"results/{w['dataset']}/{w['pretraining']}/seed{w['seed']}/pretrain.pt")
        assert [path for path in job["input"] if path.endswith(".pt")] == ([checkpoint] if checkpoint else []), job
        assert job["fields"].get("priority") == "1", job
    assert not [job for job in jobs_of(planned_jobs, "pretrain_model") if "priority" in job["fields"]]


@pytest.fixture(scope="module")
def stacked_jobs(tmp_path_factory):
    """listed_jobs of a dry run of seeds 0, 1, 2 in groups of 2 on CUDA (seed-r4, bce), with
    --cores 8 so that snakemake caps no job's threads at this machine's cores."""
    workdir = copy_workflow(tmp_path_factory.mktemp("stacked"))
    config = {**TINY, "seeds": [0, 1, 2], "pretrain_seeds_per_job": 2, "pretraining": {"seed": ["r4"]},
              "finetune_losses": ["bce"], "device": "cuda", "compile": "cuda-graph", "study_dir": None,
              "settings": {**TINY["settings"], "pretrain": {"epochs": 1, "batching": "padded"}}}
    result = run_snakemake(workdir, "-n", "--printshellcmds", "--cores", "8", "--configfile",
                           write_config(workdir, config))
    return listed_jobs(result.stdout + result.stderr)


def resources(job):
    return dict(pair.split("=", 1) for pair in job["fields"]["resources"].split(", "))


def test_a_stacked_pretraining_takes_a_core_and_the_runtime_of_each_seed(stacked_jobs):
    """On a GPU a core for the training and one for each seed's batch drawing, as threads and as
    SLURM's cpus_per_task; the seeds train one after another on a CPU: 480 minutes each."""
    jobs = {job["wildcards"]["seeds"]: job for job in stacked_jobs if job["rule"] == "pretrain_stacked"}
    assert sorted(jobs) == ["0-1", "2"]
    for seeds, job in jobs.items():
        n = len(seeds.split("-"))
        assert job["fields"]["threads"] == str(1 + n), job
        assert {key: resources(job).get(key) for key in ("runtime", "cpus_per_task", "gpu", "mem_mb")} == {
            "runtime": str(480 * n), "cpus_per_task": str(1 + n), "gpu": "1", "mem_mb": "4000"}, job
        assert "scripts/pretrain.py" in job["input"] and "resources/tiny/sequences.parquet" in job["input"]
        group = f"results/tiny/seed-r4/stacked-seeds{seeds}"
        assert job["output"] == [f"{group}/pretrained"]
        out_dirs = " ".join(f"{group}/seed{seed}" for seed in seeds.split("-"))
        assert re.fullmatch(rf"python scripts/pretrain.py --data resources/tiny --variant r4 --seed {seeds.replace('-', ' ')}"
                            rf" --out-dir {out_dirs} --settings {SETTINGS_JSON} --device cuda --threads {1 + n}"
                            rf" --compile cuda-graph > \S+ 2>&1", job["shell"]), job["shell"]
        assert_logged_beside_its_outputs(job)


def test_unstack_copies_each_file_of_its_seed_under_its_own_name(stacked_jobs):
    jobs = {job["wildcards"]["seed"]: job for job in stacked_jobs if job["rule"] == "unstack_pretraining"}
    assert sorted(jobs) == ["0", "1", "2"]
    names = ("pretrain.pt", "pretrain_history.csv", "pretrain_run.json")
    for seed, job in jobs.items():
        source = f"results/tiny/seed-r4/stacked-seeds{'2' if seed == '2' else '0-1'}"
        run = f"results/tiny/seed-r4/seed{seed}"
        assert job["input"] == [f"{source}/pretrained"], job
        assert job["output"] == [f"{run}/{name}" for name in names]
        for name in names:
            assert f"cp {source}/seed{seed}/{name} {run}/{name}" in job["shell"], job["shell"]
        assert "gpu" not in resources(job) and "threads" not in job["fields"]
        assert_logged_beside_its_outputs(job)


def test_finetunings_get_the_device_and_the_compile_mode_of_the_config(stacked_jobs, tmp_path):
    finetunings = [job for job in stacked_jobs if job["rule"] == "finetune_model"]
    assert len(finetunings) == 2 * 3
    for job in finetunings:
        assert " --device cuda --threads 1 --compile cuda-graph > " in job["shell"], job["shell"]
        assert resources(job)["gpu"] == "1"
    # and a pretraining of its own, compiled eagerly on another card
    workdir = copy_workflow(tmp_path)
    config = write_config(workdir, {**TINY, "device": "cuda:1", "compile": "eager"})
    result = run_snakemake(workdir, "-n", "--printshellcmds", "--configfile", config, "--",
                           "results/tiny/seed-r4/seed1/pretrain_run.json")
    (job,) = [job for job in listed_jobs(result.stdout + result.stderr) if job["rule"] == "pretrain_model"]
    assert " --device cuda:1 --threads 1 --compile eager > " in job["shell"], job["shell"]


WORKFLOW_RULES = """
import hashlib, json, sys
from pathlib import Path
from snakemake.api import SnakemakeApi
from snakemake.settings.types import ConfigSettings, OutputSettings, ResourceSettings, StorageSettings
with SnakemakeApi(OutputSettings()) as api:
    workflow = api.workflow(resource_settings=ResourceSettings(), storage_settings=StorageSettings(),
                            config_settings=ConfigSettings(configfiles=[Path(name) for name in sys.argv[1:]]),
                            snakefile=Path("workflow/Snakefile"), workdir=Path("."))._workflow
    print(json.dumps({"rules": sorted(rule.name for rule in workflow.rules), "local": sorted(workflow._localrules),
                      "shell": {rule.name: hashlib.sha256(rule.shellcmd.encode()).hexdigest()[:16]
                                for rule in workflow.rules if rule.shellcmd}}))
"""


def workflow_rules(workdir: Path, *configfiles: str) -> dict:
    """The workflow's rules, its local rules and a digest of each rule's shell command, read
    through snakemake's API (a dry run says none of these) with these config files."""
    result = subprocess.run([sys.executable, "-c", WORKFLOW_RULES, *configfiles], cwd=workdir, capture_output=True,
                            text=True, env=snakemake_env(PYTHONPATH=str(workdir)), timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_the_copies_downloads_and_target_all_run_where_snakemake_runs_and_training_jobs_do_not(tmp_path):
    """On SLURM a local rule runs on the submitting machine: a download (compute nodes often have
    no internet access), the unstacking copy, `all` and the report's and study's light jobs; a
    training job submitted there would hold the login node. (A dry run does not say which jobs are
    local: the workflow's own list, read through snakemake's API.)"""
    workdir = copy_workflow(tmp_path)
    write_config(workdir, {**TINY, "pretrain_seeds_per_job": 2, "settings": {
        **TINY["settings"], "pretrain": {"epochs": 1, "batching": "padded"}}}, name="stacked.yaml")
    listed = workflow_rules(workdir, "stacked.yaml")
    training = {"prepare_data", "pretrain_stacked", "finetune_model", "import_authors_checkpoint", "rank_popularity"}
    local = {"all", "download_raw_file", "unstack_pretraining",
             # the tables, figures and study copies: seconds of work each, reading the results folder
             "report", "aggregate_results", "plot_accuracy_vs_rank", "plot_params_vs_accuracy", "plot_pretrain_losses",
             "plot_finetune_validation", "plot_head_spectra", "plot_data_distributions", "study", "export_pretraining",
             "export_finetuning", "export_authors", "export_popularity", "study_plan", "report_study"}
    assert training | local <= set(listed["rules"])
    assert set(listed["local"]) == local


# sha256 (first 16 hex digits) of each rule's shell command as written in workflow/rules/
SHELL_COMMAND_DIGESTS = {
    "aggregate_results": "1f449b303f59b868",
    "download_raw_file": "40f84ff3abfcf6a8",
    "export_authors": "6b95d87961c00cbc",
    "export_finetuning": "9716e3652dded0ae",
    "export_popularity": "46da81aaaa3a7ccf",
    "export_pretraining": "07d50148f306c105",
    "finetune_model": "9e5dd663828ea1da",
    "import_authors_checkpoint": "1830e01f285308f4",
    "plot_accuracy_vs_rank": "d68a8a8dc8422821",
    "plot_data_distributions": "38f47c3c6dc294db",
    "plot_finetune_validation": "307407b113a35d6b",
    "plot_head_spectra": "002a3b1ab27c1348",
    "plot_params_vs_accuracy": "9531810725caafea",
    "plot_pretrain_losses": "449857900d55b4b7",
    "prepare_data": "3690f309b73dff25",
    "pretrain_model": "e4707f4f7162dbd1",
    "pretrain_stacked": "8a3acadda15baa2e",
    "rank_popularity": "5207010495fa50b4",
    "report_study": "19ccb5ec7a0654b6",
    "study_plan": "c450bcc6859ab206",
    "unstack_pretraining": "75b8618d54c0071b",
}


def test_no_rules_shell_command_changes_unnoticed(tmp_path):
    """Snakemake records the text of each job's shell command and reruns every job of a rule
    whose text has changed (its `code` rerun trigger, on by default): an edit to a training rule's
    command, pulled into a clone with a study in progress, reruns all its runs (Beauty: about 74
    CPU-hours). Quoting the scripts' paths (`{input.script:q}`) nearly did (2026-12-07). Change a
    command only on purpose: then update its digest here and say in the commit what reruns."""
    workdir = copy_workflow(tmp_path)
    write_config(workdir, {"pretrain_seeds_per_job": 2, "settings": {"pretrain": {"batching": "padded"}}},
                 name="stacked.yaml")
    # the default config has pretrain_model; stacked.yaml pretrain_stacked and unstack_pretraining
    digests = workflow_rules(workdir)["shell"] | workflow_rules(workdir, "stacked.yaml")["shell"]
    changed = sorted(rule for rule in digests.keys() | SHELL_COMMAND_DIGESTS.keys()
                     if digests.get(rule) != SHELL_COMMAND_DIGESTS.get(rule))
    assert changed == [], f"shell commands changed (each reruns every job of its rule): {changed}"


def test_a_data_sets_own_files_in_a_folder_of_resources_raw_are_read_not_downloaded(tmp_path):
    """download_raw_file makes resources/raw/<file> alone (no subfolder): matching any path under
    resources/raw/, it claimed a data set's own files kept in a folder there and stopped the plan
    with "needed but no datasets.<name>.download entry names it"."""
    workdir = copy_workflow(tmp_path)
    files = {"sequences": "resources/raw/mine/Mine.txt", "attributes": "resources/raw/mine/Mine_item2attributes.json"}
    for path in files.values():
        (workdir / path).parent.mkdir(parents=True, exist_ok=True)
        (workdir / path).write_text("placeholder")  # only their existence is checked when planning
    config = write_config(workdir, {"run_on": ["mine"], "datasets": {"mine": {"source": "s3rec", **files}}})
    result = run_snakemake(workdir, "-n", "--printshellcmds", "--configfile", config, "--", "resources/mine/stats.json")
    (job,) = listed_jobs(result.stdout + result.stderr)
    assert job["rule"] == "prepare_data" and set(files.values()) <= set(job["input"]), job


def test_each_job_asks_slurm_for_its_minutes_and_memory(planned_jobs):
    """The runtime (minutes) and memory a SLURM submission asks for: 100 epochs of Beauty on a CPU
    core take ~2–3.5 h of pretraining, a finetuning less; too little and SLURM kills the job."""
    asked = {(job["rule"], resources(job).get("runtime"), resources(job).get("mem_mb")) for job in planned_jobs[0]
             if "resources" in job["fields"]}
    expected = {"prepare_data": ("30", "4000"), "pretrain_model": ("480", "4000"),
                "finetune_model": ("240", "4000"), "import_authors_checkpoint": ("30", "4000")}
    for rule, want in expected.items():
        assert {(runtime, mem) for name, runtime, mem in asked if name == rule} == {want}, rule
