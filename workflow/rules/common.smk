"""Config validation, wildcard constraints and the helper functions the rules use."""

import json
import shlex
from pathlib import Path

from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

# Fails before any job with the offending key; fills every default into `config`.
validate(config, schema="../schemas/config.schema.yaml")


wildcard_constraints:
    dataset=r"[A-Za-z0-9_-]+",
    variant=r"none|full|r\d+",
    seed=r"\d+",


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
    "s3rec": ("sequences", "attributes"),
    "amazon": ("reviews", "meta"),
}


# ---------------------------------------------------------------- config queries


def variants():
    """none (no pretraining), full (dense heads), then one r<rank> per configured rank."""
    return ["none", "full"] + [f"r{rank}" for rank in config["ranks"]]


def pretrained_variants():
    return [variant for variant in variants() if variant != "none"]


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
    return {kind: spec[kind] for kind in RAW_FILES[spec["source"]]}


def check_raw_files(name):
    """Raise, saying how to get it, if a raw file is missing and cannot be downloaded."""
    spec = dataset_spec(name)
    for kind, path in raw_files(name).items():
        if download_spec(path) is not None:
            if not path.startswith("resources/raw/"):
                raise WorkflowError(
                    f"datasets.{name}.{kind}: a file with a download url must live under "
                    f"resources/raw/, got {path!r}"
                )
        elif not Path(path).is_file():
            raise WorkflowError(
                f"datasets.{name}.{kind}: input file {path!r} does not exist "
                f"(looked in {Path(path).absolute()}). {SOURCE_HINTS[spec['source']]}; "
                f"or point datasets.{name}.{kind} at your copy (config/README.md)."
            )


def check_config():
    """Consistency the schema cannot express; runs once, at parse time."""
    hidden = config["settings"]["model"]["hidden_size"]
    too_large = [rank for rank in config["ranks"] if rank > hidden]
    if too_large:
        raise WorkflowError(
            f"ranks: rank {too_large[0]} exceeds settings.model.hidden_size = {hidden}"
        )
    for name in config["run_on"]:
        check_raw_files(name)


check_config()


# ---------------------------------------------------------------- paths


def run_files(dataset, filename, variant_list=None):
    """results/<dataset>/<variant>/seed<seed>/<filename> (one name or a list) of every run."""
    return expand(
        "results/{dataset}/{variant}/seed{seed}/{filename}",
        dataset=dataset,
        variant=variant_list or variants(),
        seed=config["seeds"],
        filename=filename,
    )


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
REPORT_CODE = ["s3rec/report.py", "s3rec/plots.py"]


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


def study_report_files():
    return [path for name in config["run_on"] for path in report_files(name)]


PRETRAIN_FILES = ["pretrain.pt", "pretrain_history.csv", "pretrain_run.json"]
FINETUNE_FILES = [
    "finetune.pt",
    "finetune_history.csv",
    "metrics.json",
    "ranks.parquet",
]


def study_files():
    """Every output of the study. Listed in `rule all` (not only reached through the report)
    so that a deleted run file is made again, with everything that reads it."""
    files = []
    for name in config["run_on"]:
        files += run_files(name, PRETRAIN_FILES, pretrained_variants())
        files += run_files(name, FINETUNE_FILES)
        files += expand(
            "results/{dataset}/popularity/{file}",
            dataset=name,
            file=["metrics.json", "ranks.parquet"],
        )
    return files + study_report_files()


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
    """pretrain.pt of the same data set, variant and seed; nothing for `none`."""
    if wildcards.variant == "none":
        return []
    return f"results/{wildcards.dataset}/{wildcards.variant}/seed{wildcards.seed}/pretrain.pt"


def dataset_metrics(wildcards):
    """metrics.json of every run of a data set, then of the popularity baseline."""
    return run_files(wildcards.dataset, "metrics.json") + [
        f"results/{wildcards.dataset}/popularity/metrics.json"
    ]


def dataset_ranks(wildcards):
    return run_files(wildcards.dataset, "ranks.parquet") + [
        f"results/{wildcards.dataset}/popularity/ranks.parquet"
    ]


def pretrain_histories(wildcards):
    return run_files(wildcards.dataset, "pretrain_history.csv", pretrained_variants())


def finetune_histories(wildcards):
    return run_files(wildcards.dataset, "finetune_history.csv")


def pretrain_checkpoints(wildcards):
    return run_files(wildcards.dataset, "pretrain.pt", pretrained_variants())


# ---------------------------------------------------------------- params


def settings_json(sections):
    """Shell-quoted --settings JSON of config sections. Null values are left out, so that
    RunConfig decides them (the pretraining preset's loss weights)."""
    settings = config["settings"]
    chosen = {
        section: {k: v for k, v in settings[section].items() if v is not None}
        for section in sections
    }
    return shlex.quote(json.dumps(chosen, sort_keys=True))


def pretrain_settings(wildcards):
    return settings_json(["model", "pretrain"])


def finetune_settings(wildcards):
    """The pretraining section too for pretrained variants, so metrics.json records it."""
    if wildcards.variant == "none":
        return settings_json(["model", "finetune", "eval"])
    return settings_json(["model", "pretrain", "finetune", "eval"])


def eval_settings(wildcards):
    return settings_json(["eval"])


def pretrained_argument(wildcards):
    path = pretrained_checkpoint(wildcards)
    return f"--pretrained {path}" if path else ""


def prepare_arguments(wildcards):
    """Command-line arguments of scripts/prepare_data.py for one data set."""
    spec = dataset_spec(wildcards.dataset)
    source = spec["source"]
    if source == "synthetic":
        args = ["--users", spec["users"], "--items", spec["items"]]
        args += ["--attributes", spec["attributes"], "--seed", spec["seed"]]
    elif source == "s3rec":
        args = ["--sequences", spec["sequences"], "--attributes", spec["attributes"]]
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
