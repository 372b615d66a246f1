"""Wildcard constraints, the checks of the config the schema cannot express (validate.smk
checks it against the schema first), and the helper functions the rules use."""

import json
import os
import re
import shlex
from pathlib import Path

from snakemake.exceptions import WorkflowError
from snakemake.settings.types import DeploymentMethod

# The one grammar of run labels (s3rec/labels.py, its variants from s3rec/config.py): a run path
# the report or a study folder would refuse (seed-r016, seed-r0) names no job here either.
# STUDY_*_FILES, the outputs of rules export_pretraining and export_finetuning (study.smk) per run
# folder, are what study_folder reads.
# Planning reads the config through the project's code, so snakemake runs where it is installed,
# also with --use-conda (whose environments are the jobs', not snakemake's).
try:
    from s3rec.config import PRETRAINED_VARIANT_PATTERN
    from s3rec.labels import PRESET_PATTERN, split_pretraining
    from s3rec.study_folder import FINETUNE_FILES as STUDY_FINETUNE_FILES, PRETRAIN_FILES as STUDY_PRETRAIN_FILES
except ImportError as error:
    raise WorkflowError(
        f"snakemake runs in an environment without this project ({error}): the workflow plans with "
        "its code, so run snakemake where the project is installed (README, Set up and run: "
        "pip install -e . in the environment that has snakemake), with --use-conda too"
    ) from None

# With --use-conda (--sdm conda) each job runs in an environment made from environment.yml: the
# dependencies, not this project, so its scripts import s3rec from this clone. Snakemake clears
# PYTHONPATH for such jobs, and editing the rules' commands would rerun every job (code_file), so
# it is set in the prefix of every command, after the environment's activation; a prefix is no
# part of the command text snakemake records. It replaces snakemake's own, which is
# "set -euo pipefail; " under bash and none under another shell.
if DeploymentMethod.CONDA in workflow.deployment_settings.deployment_method:
    _clone = shlex.quote(str(CODE_ROOT)).replace("{", "{{").replace("}", "}}")  # the prefix is formatted too
    _strict = "set -euo pipefail; " if os.path.basename(shell.get_executable() or "") == "bash" else ""
    shell.prefix(f"{_strict}export PYTHONPATH={_clone}; ")


def code_file(path):
    """A file of the project's code (e.g. "scripts/pretrain.py"), relative to the working directory.
    The shell commands name it unquoted. Snakemake records each command's text and reruns every
    job of a changed one (its `code` trigger), so quoting them would rerun each study in
    progress; a path with a space is refused instead (tests/test_run_wiring.py pins the texts)."""
    relative = os.path.relpath(CODE_ROOT / path, os.path.realpath(os.getcwd()))
    if any(char.isspace() for char in relative):
        raise WorkflowError(
            f"the working directory {os.getcwd()} reaches the project's code as {relative!r}, a path "
            "with a space, which the jobs' command lines cannot take: choose a working directory "
            "whose way to the clone has none (e.g. beside the clone, in the same folder)"
        )
    return relative


wildcard_constraints:
    dataset=r"[A-Za-z0-9_-]+",
    preset=PRESET_PATTERN,
    variant=PRETRAINED_VARIANT_PATTERN,
    pretraining=rf"none|authors|{PRESET_PATTERN}-(?:{PRETRAINED_VARIANT_PATTERN})",
    seed=r"\d+",
    seeds=r"\d+(?:-\d+)*",
    loss=r"[a-z]+",


# Where to get the raw files of each source, for the message about a missing file.
SOURCE_HINTS = {
    "s3rec": (
        "It is part of the S3Rec authors' release: download data/<Name>.txt and "
        "data/<Name>_item2attributes.json from https://github.com/RUCAIBox/CIKM2020-S3Rec "
        "and put them there (config/beauty.yaml expects them in ../shared/data/s3rec/)"
    ),
    "amazon": (
        "It is an Amazon 2014 review file (reviews_<Category>_5.json.gz, meta_<Category>.json.gz) "
        "from https://cseweb.ucsd.edu/~jmcauley/datasets/amazon/links.html: put it there, or "
        "give datasets.<name>.download.<file>.url to let the workflow fetch it into resources/raw/"
    ),
}
RAW_FILES = {
    "synthetic": (),
    "s3rec": ("sequences", "attributes", "negatives"),  # negatives: optional
    "amazon": ("reviews", "meta"),
}


# ---------------------------------------------------------------- config queries


def authors_checkpoint(dataset):
    """datasets.<name>.authors_checkpoint: the S3Rec authors' released model, or None."""
    return config["datasets"].get(dataset, {}).get("authors_checkpoint")


def preset_variants(preset):
    """The variants pretrained with a preset: `all` = full and r<rank> of every rank."""
    chosen = config["pretraining"][preset]
    return ["full"] + [f"r{rank}" for rank in config["ranks"]] if chosen == "all" else chosen


def pretrainings(dataset):
    """<preset>-<variant> of every pretraining this workflow runs, e.g. seed-full, paper-r16."""
    return [f"{preset}-{variant}" for preset in config["pretraining"] for variant in preset_variants(preset)]


def finetunings(dataset):
    """What each finetuning starts from: none (no pretraining, the SASRec control), every
    pretraining, and `authors` (the authors' checkpoint) when the data set names one."""
    extra = ["authors"] if authors_checkpoint(dataset) else []
    return ["none"] + pretrainings(dataset) + extra


def dataset_spec(name):
    if name not in config["datasets"]:
        raise WorkflowError(
            f"data set {name!r} is not defined under `datasets` in the config "
            f"(defined: {', '.join(sorted(config['datasets']))})"
        )
    return config["datasets"][name]


def download_spec(path):
    """The datasets.<name>.download.<file> entry whose file is `path`, or None."""
    for spec in config["datasets"].values():
        for kind, entry in spec.get("download", {}).items():
            if entry and spec[kind] == path:
                return entry
    return None


def raw_files(name):
    """{argument: path} of the raw files a data set is prepared from."""
    spec = dataset_spec(name)
    return {kind: spec[kind] for kind in RAW_FILES[spec["source"]] if spec.get(kind)}


def check_raw_files(name):
    """Raise, saying how to get it, if a raw file is missing and cannot be downloaded."""
    spec = dataset_spec(name)
    for kind, path in raw_files(name).items():
        if download_spec(path) is not None:
            if not re.fullmatch(r"resources/raw/[^/]+", path):  # rule download_raw_file's output
                raise WorkflowError(
                    f"datasets.{name}.{kind}: a file with a download url must live directly in "
                    f"resources/raw/ (no subfolder), got {path!r}"
                )
        elif Path(path).is_dir():
            raise WorkflowError(f"datasets.{name}.{kind}: {path!r} is a folder; expected a file ({kind} of a "
                                f"{spec['source']} data set, config/README.md)")
        elif not Path(path).is_file():
            raise WorkflowError(
                f"datasets.{name}.{kind}: input file {path!r} does not exist "
                f"(looked in {Path(path).absolute()}). {SOURCE_HINTS[spec['source']]}; "
                f"or point datasets.{name}.{kind} at your copy (config/README.md)."
            )


def check_synthetic_negatives(name):
    """A synthetic data set with too few items for the sampled protocol's negatives: before, said
    by the first popularity or finetuning job, after the pretrainings had run."""
    from s3rec.synthetic import SyntheticSpec

    spec, evaluation = dataset_spec(name), config["settings"]["eval"]  # the schema filled its defaults
    if spec["source"] != "synthetic" or "sampled" not in evaluation["protocols"]:
        return
    negatives = evaluation["sampled_negatives"]
    longest = SyntheticSpec.max_length  # a user's items: at most this many distinct ones
    if spec["items"] - longest < negatives:
        raise WorkflowError(
            f"datasets.{name}.items: {spec['items']} items leave a user of {longest} items (the synthetic "
            f"sequences' longest) fewer than the {negatives} negatives of the sampled protocol "
            f"(settings.eval.sampled_negatives); expected items >= {negatives + longest}, or fewer negatives"
        )


def check_config():
    """Consistency the schema cannot express; runs once, at parse time."""
    known = [f"r{rank}" for rank in config["ranks"]]
    for preset, chosen in config["pretraining"].items():
        unknown = [variant for variant in (chosen if chosen != "all" else []) if variant not in ["full"] + known]
        if unknown:
            raise WorkflowError(
                f"pretraining.{preset}: variant {unknown[0]!r} is neither full nor a rank of `ranks` "
                f"({', '.join(known) or 'none'})"
            )
    if not any(preset_variants(preset) for preset in config["pretraining"]):  # the figures would have no input
        raise WorkflowError(
            f"pretraining: {config['pretraining']} pretrains nothing (an empty list is no variant of that "
            "preset); give at least one preset a variant, e.g. {seed: all}"
        )
    hidden = config["settings"]["model"]["hidden_size"]
    too_large = [rank for rank in config["ranks"] if rank > hidden]
    if too_large:
        raise WorkflowError(
            f"ranks: rank {too_large[0]} exceeds settings.model.hidden_size = {hidden}"
        )
    if config["compile"] == "cuda-graph" and config["device"] == "cpu":  # else every training job fails so
        raise WorkflowError(
            "compile: cuda-graph records CUDA graphs and needs a CUDA device, not device: cpu "
            "(set device: cuda, cuda:N, cuda:any or auto on a GPU node, or compile: none)"
        )
    if stacked_pretraining():
        check_stacked_pretraining()
    from_file = config["settings"].get("eval", {}).get("negatives") == "file"
    for name in config["run_on"]:
        check_raw_files(name)
        check_synthetic_negatives(name)
        if from_file and not dataset_spec(name).get("negatives"):
            fix = ("set it, or use eval.negatives: seeded" if dataset_spec(name)["source"] == "s3rec" else
                   f"source {dataset_spec(name)['source']} has none: leave it out of run_on, or use "
                   "eval.negatives: seeded")
            raise WorkflowError(
                f"settings.eval.negatives is file, but datasets.{name} has no `negatives` file "
                f"(the authors' <Name>_sample.txt); {fix}"
            )
        authors = authors_checkpoint(name)
        if authors and not Path(authors).is_file():
            raise WorkflowError(
                f"datasets.{name}.authors_checkpoint: {authors!r} does not exist (looked in "
                f"{Path(authors).absolute()}). The S3Rec authors release their pretrained models "
                "(<Data>-epochs-150.pt) with RUCAIBox/CIKM2020-S3Rec; set the key to null in a config "
                "file (--config cannot give a nested null) to leave the `authors` variant out."
            )
        if authors and (problem := authors_architecture_problem(name, authors)):
            raise WorkflowError(problem)


def authors_architecture_problem(name, path):
    """The `authors` variant is finetuned with the study's settings.model, so a checkpoint of
    another architecture would fail every one of its finetunings, after the import. Said here,
    before any job. The file is read (torch, about 2 s) only when settings.model leaves the
    defaults, which are the authors' (d 64, 2 layers, 2 heads, 50 positions) and so theirs."""
    from s3rec.config import ARCHITECTURE, ModelConfig, architecture_differences

    study = ModelConfig(**{key: config["settings"]["model"][key] for key in ARCHITECTURE})  # the schema fills them
    defaults = {key: getattr(ModelConfig(), key) for key in ARCHITECTURE}
    if not architecture_differences(defaults, study):
        return None
    from s3rec import authors, files

    try:
        theirs = {**defaults, **authors.model_settings(files.load_torch(Path(path)))}
    except Exception:  # not a state dict: the import job says what it is
        return None
    differences = architecture_differences(theirs, study)
    if not differences:
        return None
    return (f"config: datasets.{name}.authors_checkpoint: {path} has other model settings than settings.model "
            f"({'; '.join(differences)})\n"
            "  the `authors` variant is finetuned with settings.model: set it to the checkpoint's, or leave "
            "the variant out with authors_checkpoint: null in a config file")


def run_settings_problem():
    """What RunConfig refuses beyond the schema (s3rec/config.py validate: a hidden_size that
    num_heads does not divide, early stopping on a protocol not evaluated), and what the tables'
    settings check refuses (report_inputs.check_report_settings), or None: checked
    once per preset and loss, so that it is said before any job rather than by the first
    training job, after the data are prepared."""
    from s3rec.config import RunConfig

    settings = settings_sections(["model", "pretrain", "finetune", "eval"])  # as the jobs get them
    for preset in config["pretraining"]:
        for loss in config["finetune_losses"]:
            run = {**settings, "pretrain": {**settings.get("pretrain", {}), "preset": preset},
                   "finetune": {**settings.get("finetune", {}), "loss": loss}}
            try:
                RunConfig.from_dict(run)
            except ValueError as error:  # "model.hidden_size ..." -> "config: settings.model.hidden_size ..."
                where = "settings." if str(error).split(".")[0] in settings else "settings: "
                return f"config: {where}{error}\n  (config/README.md explains every key)"
    from s3rec.report_inputs import check_report_settings

    try:  # what the tables' own check refuses beyond the schema (e.g. only AUC without sampled)
        check_report_settings({**config["report"], "protocols": config["settings"]["eval"]["protocols"]}, "report")
    except ValueError as error:
        return f"config: {error}\n  (config/README.md explains every key)"
    return None


def stacked_pretraining():
    return config["pretrain_seeds_per_job"] > 1


def check_stacked_pretraining():
    """What s3rec/stacked.py refuses, said before any job."""
    from s3rec.config import STACKED_COMPILE_MODES, RunConfig

    per_job = config["pretrain_seeds_per_job"]
    # null values left out, as the jobs get them (settings_sections): RunConfig decides them
    pretrain = {k: v for k, v in config["settings"].get("pretrain", {}).items() if v is not None}
    for preset in (preset for preset in config["pretraining"] if preset_variants(preset)):
        try:  # the preset's own batching where settings leave it unset (seed: bucketed, paper: padded)
            batching = RunConfig.from_dict({"pretrain": {**pretrain, "preset": preset}}).pretrain.batching
        except ValueError:
            continue  # a bad setting: run_settings_problem says which
        if batching != "padded":
            got = repr(batching) if "batching" in pretrain else f"none set, so preset {preset}'s own: {batching}"
            raise WorkflowError(
                f"pretrain_seeds_per_job: {per_job} stacks seeds, which needs settings.pretrain.batching: "
                f"padded (got {got}): every seed's step must have the same size"
            )
    if config["compile"] not in STACKED_COMPILE_MODES:
        raise WorkflowError(
            f"pretrain_seeds_per_job: {per_job} stacks seeds, which takes compile "
            f"{' or '.join(STACKED_COMPILE_MODES)}, not {config['compile']!r}"
        )


def seed_groups():
    """The seeds in groups of pretrain_seeds_per_job, in config order (the last may be smaller)."""
    size, seeds = config["pretrain_seeds_per_job"], config["seeds"]
    return [seeds[i : i + size] for i in range(0, len(seeds), size)]


def stacked_cores(wildcards):
    """A pretrain_stacked job's cores: on a GPU one for training and one for each seed's
    batch-drawing worker process, on a CPU one (the seeds' batches are drawn in process)."""
    return 1 + len(wildcards.seeds.split("-")) if uses_cuda() else 1


def seed_group(seed):
    """Seed `seed`'s group as its folder name's part, e.g. 0-1-2."""
    group = next(("-".join(map(str, g)) for g in seed_groups() if int(seed) in g), None)
    if group is None:  # a target named by hand: stacked seeds are pretrained only in their groups
        raise WorkflowError(f"seed {seed} is not in `seeds` ({config['seeds']}): with pretrain_seeds_per_job "
                            f"{config['pretrain_seeds_per_job']} seeds are pretrained in groups of `seeds`; "
                            "add it there")
    return group


try:
    check_config()
except WorkflowError as error:  # raised again here: snakemake then shows this line, not the checks' frames
    raise WorkflowError(str(error)) from None


# ---------------------------------------------------------------- GPU
# A training job (pretrain_model, pretrain_stacked, finetune_model) declares the resource
# `gpu: 1` only when `device` is cuda, cuda:N or cuda:any. What one unit means depends on the executor:
#   local:  a slot of `--resources gpu=N`: at most N training jobs at once on the node; with
#           cuda:any (profiles/gpu) each job takes the card the fewest jobs hold (s3rec/cards.py),
#           so gpu=4 per card spreads them evenly; cuda = the first card, cuda:N card N.
#   SLURM:  snakemake-executor-plugin-slurm turns `gpu: 1` into `sbatch --gpus=1`, a whole card
#           per job (`gpu_model` -> --gpus=<model>:1; a shared card: gpu 0 and gres "shard:1").
# With cpu or auto no job declares it, so CPU runs are scheduled exactly as before.
TRAINING_RULES = ("pretrain_stacked" if stacked_pretraining() else "pretrain_model", "finetune_model")
GPU_REQUESTS = ("gpu", "gpu_model", "gres")  # what makes the SLURM plugin ask for a GPU


def uses_cuda():
    return re.fullmatch(r"cuda(:([0-9]+|any))?", config["device"]) is not None


def gpu_resources():
    """{"gpu": 1} on CUDA, else {}: the resources of a training job on the configured device."""
    return {"gpu": 1} if uses_cuda() else {}


def resource_value(resources, name):
    """The value of resource `name` in a snakemake Resources mapping, None when absent."""
    resource = resources.get(name)
    if resource is None:
        return None
    try:
        return resource.value
    except ValueError:  # a function of the job, evaluated later: set all the same
        return resource.raw or "(set per job)"


def check_gpu_slots():
    """GPU slots (`--resources gpu=N`, profiles/gpu) only make sense with a CUDA device: the
    profile's device=cuda:any is lost when a --config on the command line replaces its `config`."""
    slots = resource_value(workflow.resource_settings.resources, "gpu")
    if slots is not None and not uses_cuda():
        raise WorkflowError(
            f"config: device = {config['device']!r} with --resources gpu={slots} (GPU slots, "
            "profiles/gpu): training jobs take a GPU slot only with device cuda, cuda:N or cuda:any\n"
            "  a --config on the command line replaces the profile's: add device=cuda:any to it "
            "(config/README.md)"
        )


def check_gpu_requests():
    """With device cpu, a GPU asked for by the profile (set-resources gpu, gpu_model or gres of a
    training rule) would hold a card that the job never uses."""
    if config["device"] != "cpu":
        return
    for name in TRAINING_RULES:
        resources = workflow.get_rule(name).resources
        for key in GPU_REQUESTS:
            value = resource_value(resources, key)
            if value and (key != "gres" or re.search(r"gpu|shard|mps", str(value))):
                raise WorkflowError(
                    f"config: device = 'cpu' but the profile gives {name} {key}={value!r}, "
                    "a GPU on SLURM that the job would not use\n"
                    "  set device=cuda (or auto), or comment out the GPU lines of the profile's "
                    "set-resources (config/README.md)"
                )


check_gpu_slots()


# ---------------------------------------------------------------- paths


def pretrain_runs(dataset):
    """results/<dataset>/<preset>-<variant>/seed<seed> of every pretraining."""
    return expand(
        "results/{dataset}/{pretraining}/seed{seed}",
        dataset=dataset,
        pretraining=pretrainings(dataset),
        seed=config["seeds"],
    )


def finetune_runs(dataset):
    """results/<dataset>/<pretraining>/seed<seed>/<loss> of every finetuning."""
    return expand(
        "results/{dataset}/{pretraining}/seed{seed}/{loss}",
        dataset=dataset,
        pretraining=finetunings(dataset),
        seed=config["seeds"],
        loss=config["finetune_losses"],
    )


def in_runs(runs, names):
    """<run>/<name> for every run and name."""
    return [f"{run}/{name}" for run in runs for name in names]


def authors_import(dataset):
    """[results/<dataset>/authors/pretrain.pt] when the data set has an authors' checkpoint."""
    return [f"results/{dataset}/authors/pretrain.pt"] if authors_checkpoint(dataset) else []


FIGURES = [
    "accuracy_vs_rank",
    "params_vs_accuracy",
    "pretrain_losses",
    "finetune_validation",
    "head_spectra",
    "data_distributions",
]
TABLES = ["results", "difference"]
# Library code of the report rules: an edit reruns tables and figures (cheap). Training code
# in s3rec/ is deliberately not an input: retrain with --forcerun after changing it.
# (tests/test_code_map.py checks that every module only the report scripts import is here.)
REPORT_CODE = [
    code_file("s3rec/report.py"),
    code_file("s3rec/labels.py"),
    code_file("s3rec/run_paths.py"),
    code_file("s3rec/differences.py"),
    code_file("s3rec/intervals.py"),
    code_file("s3rec/spectra.py"),
    code_file("s3rec/plots.py"),
    code_file("s3rec/report_inputs.py"),
    code_file("s3rec/study_folder.py"),
]


def report_files(dataset):
    """Every table and figure of one data set."""
    return expand(
        "results/{dataset}/report/tables/{table}.{ext}",
        dataset=dataset,
        table=TABLES,
        ext=["csv", "md", "tex"],
    ) + expand(
        "results/{dataset}/report/figures/{figure}.{ext}",
        dataset=dataset,
        figure=FIGURES,
        ext=["png", "pdf"],
    )


PRETRAIN_FILES = ["pretrain.pt", "pretrain_history.csv", "pretrain_run.json"]
FINETUNE_FILES = [
    "finetune.pt",
    "finetune_history.csv",
    "metrics.json",
    "ranks.parquet",
]
POPULARITY_FILES = ["metrics.json", "ranks.parquet"]

# ------------------------------------------------- the tracked study folder (config study_dir)
# Each finished run's small files are copied to <study_dir>/<dataset>/, in the layout of
# results/<dataset>/ (pretrain.pt becomes heads.pt: only the pretraining heads, for the spectra),
# and the study report is built there from them alone: `python scripts/report_study.py
# <study_dir>/<dataset>` remakes it on a fresh clone, without results/.
STUDY_FIGURES = [figure for figure in FIGURES if figure != "data_distributions"]  # needs resources/


def study_root():
    return config["study_dir"] or "study"  # the rules' prefix even when unset (study.smk)


def study_dir(dataset):
    return f"{study_root()}/{dataset}"


def study_path(results_path):
    """The study folder's copy of a results/ path."""
    return study_root() + results_path.removeprefix("results")


def study_report(dataset):
    """The study report: tables, figures and runs.md, built from the study folder alone."""
    folder = f"{study_dir(dataset)}/report"
    return (
        [f"{folder}/runs.md"]
        + expand("{folder}/tables/{table}.{ext}", folder=folder, table=TABLES, ext=["csv", "md", "tex"])
        + expand("{folder}/figures/{figure}.{ext}", folder=folder, figure=STUDY_FIGURES, ext=["png", "pdf"])
    )


def study_reports():
    """The study report of every data set of run_on (its runs.md stands for all of it: rule
    report_study writes every file at once)."""
    return [f"{study_dir(name)}/report/runs.md" for name in config["run_on"]]


def study_report_files():
    """Tables and figures of every data set of run_on; with study_dir, also the study report."""
    files = [path for name in config["run_on"] for path in report_files(name)]
    return files + (study_reports() if config["study_dir"] else [])


def job_outputs(dataset):
    """The outputs of every training job of a data set, one list per job."""
    jobs = [[f"{run}/{name}" for name in PRETRAIN_FILES] for run in pretrain_runs(dataset)]
    jobs += [[f"{run}/{name}" for name in FINETUNE_FILES] for run in finetune_runs(dataset)]
    jobs.append([f"results/{dataset}/popularity/{name}" for name in POPULARITY_FILES])
    return jobs


def export_jobs(dataset):
    """(the results/ files of a finished run, their copies in the study folder) per export job."""
    jobs = [(in_runs([run], PRETRAIN_FILES), in_runs([study_path(run)], STUDY_PRETRAIN_FILES))
            for run in pretrain_runs(dataset)]
    jobs += [(in_runs([run], FINETUNE_FILES), in_runs([study_path(run)], STUDY_FINETUNE_FILES))
             for run in finetune_runs(dataset)]
    authors = authors_import(dataset)
    if authors:
        jobs.append((authors, [f"{study_dir(dataset)}/authors/heads.pt"]))
    popularity = f"results/{dataset}/popularity"
    jobs.append((in_runs([popularity], POPULARITY_FILES), in_runs([study_path(popularity)], POPULARITY_FILES)))
    return jobs


def incomplete_job_outputs():
    """Outputs missing from a job whose other outputs exist (e.g. a deleted finetune.pt), and,
    with study_dir, a finished run's study copies or the plan deleted from the study folder.

    The report rules read (and so bring about) every other run file; a job is in the DAG, and
    remakes all its outputs, only when one of them is needed: snakemake does not remake a
    deleted file that only feeds outputs that are up to date. Listing just these files in the
    targets `all` and `report`, not all ~100 run files, keeps their input and reason lines short.
    """
    missing = []
    for name in config["run_on"]:
        for outputs in job_outputs(name):
            present = [Path(path).exists() for path in outputs]
            if any(present) and not all(present):
                missing += [path for path, there in zip(outputs, present) if not there]
        if not config["study_dir"]:
            continue
        for sources, copies in export_jobs(name):
            if all(Path(path).exists() for path in sources):
                missing += [path for path in copies if not Path(path).exists()]
        if not Path(f"{study_dir(name)}/plan.json").exists():
            missing.append(f"{study_dir(name)}/plan.json")
    return missing


def study_folder_files(wildcards):
    """Target `study`: the study report of each data set, which brings about every run the study
    folder lacks, and not results/'s report, which needs every run in results/ (on a fresh clone
    it would run again the runs the study folder holds; scripts/park_runs.py restore first)."""
    if not config["study_dir"]:
        raise WorkflowError("target study: config study_dir is not set (e.g. study_dir: study): there is no study "
                            "folder to continue; `snakemake` or `snakemake report` runs and reports from results/")
    return study_reports() + incomplete_job_outputs()


def study_files():
    """Every table and figure (which need every run), plus any run file deleted from a finished
    job, so that it is made again with everything that reads it."""
    return study_report_files() + incomplete_job_outputs()


# ---------------------------------------------------------------- input functions


def prepare_inputs(wildcards):
    check_raw_files(wildcards.dataset)
    return raw_files(wildcards.dataset)


def prepared_data(wildcards):
    return {
        "sequences": f"resources/{wildcards.dataset}/sequences.parquet",
        "attributes": f"resources/{wildcards.dataset}/item_attributes.parquet",
    }


def pretrained_checkpoint(wildcards):
    """pretrain.pt of the same data set, pretraining and seed; the one import for `authors`
    (any seed); nothing for `none`."""
    if wildcards.pretraining == "none":
        return []
    if wildcards.pretraining == "authors":
        return f"results/{wildcards.dataset}/authors/pretrain.pt"
    return f"results/{wildcards.dataset}/{wildcards.pretraining}/seed{wildcards.seed}/pretrain.pt"


def authors_checkpoint_file(wildcards):
    path = authors_checkpoint(wildcards.dataset)
    if not path:
        raise WorkflowError(
            f"results/{wildcards.dataset}/authors/ is needed but datasets.{wildcards.dataset}"
            ".authors_checkpoint is not set"
        )
    return path


def dataset_metrics(wildcards):
    """metrics.json of every finetuning of a data set, then of the popularity baseline."""
    return in_runs(finetune_runs(wildcards.dataset), ["metrics.json"]) + [
        f"results/{wildcards.dataset}/popularity/metrics.json"
    ]


def dataset_ranks(wildcards):
    return in_runs(finetune_runs(wildcards.dataset), ["ranks.parquet"]) + [
        f"results/{wildcards.dataset}/popularity/ranks.parquet"
    ]


def pretrain_histories(wildcards):
    """pretrain_history.csv and pretrain_run.json (task weights) of every pretraining."""
    return in_runs(pretrain_runs(wildcards.dataset), ["pretrain_history.csv", "pretrain_run.json"])


def finetune_histories(wildcards):
    """finetune_history.csv and metrics.json (best epoch, how it stopped) of every finetuning."""
    return in_runs(finetune_runs(wildcards.dataset), ["finetune_history.csv", "metrics.json"])


def pretrain_checkpoints(wildcards):
    return in_runs(pretrain_runs(wildcards.dataset), ["pretrain.pt"]) + authors_import(wildcards.dataset)


def differences_and_metrics(wildcards):
    """difference.csv (the bootstrap intervals of the tables) and every metrics.json."""
    return [
        f"results/{wildcards.dataset}/report/tables/difference.csv"
    ] + dataset_metrics(wildcards)


def study_inputs(wildcards):
    """The plan and one file of each export job (which writes its files together): enough to
    order and rerun the study report, while snakemake's job lines stay short."""
    dataset = wildcards.dataset
    return (
        [f"{study_dir(dataset)}/plan.json"]
        + in_runs(map(study_path, pretrain_runs(dataset)), ["pretrain_run.json"])
        + in_runs(map(study_path, finetune_runs(dataset)), ["metrics.json"])
        + ([f"{study_dir(dataset)}/authors/heads.pt"] if authors_checkpoint(dataset) else [])
        + [f"{study_dir(dataset)}/popularity/metrics.json"]
    )


# ---------------------------------------------------------------- params


def settings_sections(sections):
    """Config sections for --settings. Null values are left out, so that RunConfig decides them
    (the pretraining preset's loss weights)."""
    settings = config["settings"]
    return {
        section: {k: v for k, v in settings[section].items() if v is not None}
        for section in sections
    }


# raised here, not in a function, so that snakemake prints the message and one traceback line
SETTINGS_PROBLEM = run_settings_problem()
if SETTINGS_PROBLEM:
    raise WorkflowError(SETTINGS_PROBLEM)


def settings_json(settings):
    """Shell-quoted JSON."""
    return shlex.quote(json.dumps(settings, sort_keys=True))


def pretrain_settings(wildcards):
    """model and pretrain sections, with the preset of the pretraining (a study axis)."""
    settings = settings_sections(["model", "pretrain"])
    settings["pretrain"]["preset"] = wildcards.preset
    return settings_json(settings)


def finetune_settings(wildcards):
    """model, finetune and eval sections with the loss (a study axis); the pretraining section
    too for what was pretrained here, so that metrics.json records it (not for `none`, never
    pretrained, nor `authors`, pretrained by the authors' code)."""
    preset, _ = split_pretraining(wildcards.pretraining)
    sections = ["model", "finetune", "eval"] + (["pretrain"] if preset else [])
    settings = settings_sections(sections)
    settings["finetune"]["loss"] = wildcards.loss
    if preset:
        settings["pretrain"]["preset"] = preset
    return settings_json(settings)


def eval_settings(wildcards):
    return settings_json(settings_sections(["eval"]))


def pretrained_argument(wildcards):
    path = pretrained_checkpoint(wildcards)
    return f"--pretrained {path}" if path else ""


def finetune_variant(wildcards):
    """--variant of scripts/finetune.py: none, authors, full or r<rank>."""
    return split_pretraining(wildcards.pretraining)[1]


def study_plan(wildcards):
    """--runs JSON of scripts/export_study.py plan: every planned pretraining and finetuning."""
    dataset = wildcards.dataset
    plan = {
        "pretrainings": [
            {"pretraining": p, "seed": s} for p in pretrainings(dataset) for s in config["seeds"]
        ],
        "finetunings": [
            {"pretraining": p, "seed": s, "loss": loss}
            for p in finetunings(dataset)
            for s in config["seeds"]
            for loss in config["finetune_losses"]
        ],
        "authors": bool(authors_checkpoint(dataset)),
        "popularity": True,
    }
    return settings_json(plan)


def prepare_arguments(wildcards):
    """Command-line arguments of scripts/prepare_data.py for one data set."""
    spec = dataset_spec(wildcards.dataset)
    source = spec["source"]
    if source == "synthetic":
        args = ["--users", spec["users"], "--items", spec["items"]]
        args += ["--attributes", spec["attributes"], "--seed", spec["seed"]]
    elif source == "s3rec":
        args = ["--sequences", spec["sequences"], "--attributes", spec["attributes"]]
        if spec.get("negatives"):
            args += ["--negatives", spec["negatives"]]
    else:
        args = [
            "--reviews",
            spec["reviews"],
            "--meta",
            spec["meta"],
            "--k-core",
            spec["k_core"],
        ]
    return shlex.join(["--format", source] + [str(arg) for arg in args])


def download_url(wildcards):
    entry = download_spec(f"resources/raw/{wildcards.filename}")
    if entry is None:
        raise WorkflowError(
            f"resources/raw/{wildcards.filename} is needed but no "
            "datasets.<name>.download entry names it"
        )
    return shlex.quote(entry["url"])


def download_sha256(wildcards):
    """Expected sha256 of a download, or "" (not checked)."""
    entry = download_spec(f"resources/raw/{wildcards.filename}")
    return (entry or {}).get("sha256") or ""


def report_settings(wildcards):
    """--settings JSON of scripts/aggregate.py: the `report` section and the protocols."""
    settings = {
        **config["report"],
        "protocols": config["settings"]["eval"]["protocols"],
    }
    return shlex.quote(json.dumps(settings, sort_keys=True))


def figure_settings(wildcards):
    """--settings JSON of scripts/plot_report.py: only what figures use, so that e.g. a new
    bootstrap setting reruns the tables but no figure."""
    settings = {
        "metric": config["report"]["metric"],
        "split": config["report"]["split"],
        "protocols": config["settings"]["eval"]["protocols"],
    }
    return shlex.quote(json.dumps(settings, sort_keys=True))
