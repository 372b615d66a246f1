"""The Snakemake workflow: dry runs, a real tiny run of the whole DAG, reruns, and SLURM.

Every test works in a copy of the workflow in tmp_path (workflow/, config/, profiles/,
scripts/, s3rec/), so nothing touches the repository's resources/ or results/. PYTHONPATH
points at the copy, so its scripts import the copy's s3rec.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from conftest import commit_all, slurm_available, snakemake_env

REPO = Path(__file__).resolve().parents[1]
COPIED = ("workflow", "config", "profiles", "scripts", "s3rec", "environment.yml")

# The whole study in miniature: every rule, two seeds, both axes (presets seed and paper, losses
# bce and ce), the study folder. Runs: none; seed-full, seed-r4, paper-full; x 2 seeds x 2 losses.
TINY = {
    "run_on": ["tiny"],
    "datasets": {"tiny": {"source": "synthetic", "users": 300, "items": 200, "attributes": 20, "seed": 0}},
    "ranks": [4],
    "seeds": [0, 1],
    "pretraining": {"seed": "all", "paper": ["full"]},
    "finetune_losses": ["bce", "ce"],
    "study_dir": "study",
    "device": "cpu",
    "settings": {"model": {"hidden_size": 16}, "pretrain": {"epochs": 1},
                 "finetune": {"epochs": 2, "patience": 2}},
    "report": {"bootstrap_samples": 200},
}


def run_snakemake(cwd, *args, check=True, timeout=900, env=None):
    """snakemake in `cwd`, in snakemake_env with the code of `cwd` unless `env` is given."""
    result = subprocess.run([sys.executable, "-m", "snakemake", *args], cwd=cwd,
                            env=env or snakemake_env(PYTHONPATH=str(cwd)), capture_output=True, text=True,
                            timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(args)} failed:\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}")
    return result


def job_counts(output: str) -> dict[str, int]:
    """{rule: jobs} from the 'Job stats' table of a (dry) run; {} when nothing is to be done."""
    counts = {}
    table = output.split("Job stats:", 1)[1] if "Job stats:" in output else ""
    for line in table.splitlines()[3:]:
        match = re.fullmatch(r"(\w+)\s+(\d+)", line.strip())
        if not match:
            break
        counts[match.group(1)] = int(match.group(2))
    counts.pop("total", None)
    return counts


JOB_EVENT = re.compile(r"^(?:local)?rule (\w+):\n(?:    .*\n)*?    jobid: (\d+)\n(?:    .*\n)*?    wildcards: (.*)\n"
                       r"|^Finished jobid: (\d+) \(Rule: (\w+)\)", re.M)


def finetunings_overtaken(output: str) -> list[str]:
    """The finetunings a pretraining started ahead of, from a snakemake run's log: each was ready
    (its data prepared, and its pretraining or the authors' import finished) and not started when
    a pretrain_model job started (rule priorities put finetunings first)."""
    made, started, overtaken, jobs = set(), set(), [], {}
    events = [(m[1], int(m[2]), dict(kv.split("=", 1) for kv in m[3].split(", "))) if m[1] else ("end", int(m[4]), None)
              for m in JOB_EVENT.finditer(output)]
    finetunings = [w for rule, _, w in events if rule == "finetune_model"]
    for rule, jobid, wildcards in events:
        if rule == "end":
            if jobid in jobs:  # not `all`, which has no wildcards
                made.add(jobs[jobid])
            continue
        run = wildcards.get("pretraining") or f"{wildcards.get('preset')}-{wildcards.get('variant')}"
        jobs[jobid] = (rule, run if rule == "pretrain_model" else None, wildcards.get("seed"))
        if rule == "finetune_model":
            started.add((run, wildcards["seed"], wildcards["loss"]))
        elif rule == "pretrain_model":
            for f in finetunings:
                before = {"none": set(), "authors": {("import_authors_checkpoint", None, None)}}.get(
                    f["pretraining"], {("pretrain_model", f["pretraining"], f["seed"])})
                ready = ("prepare_data", None, None) in made and before <= made
                if ready and (f["pretraining"], f["seed"], f["loss"]) not in started:
                    overtaken.append(f"{f['pretraining']} seed {f['seed']} {f['loss']} by {run} seed {wildcards['seed']}")
    return overtaken


def planned(cwd, *args) -> dict[str, int]:
    result = run_snakemake(cwd, "-n", *args)
    return job_counts(result.stdout + result.stderr)


def copy_workflow(folder: Path) -> Path:
    """The workflow's files (COPIED) copied into `folder`, made if missing."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in COPIED:
        source = REPO / name
        if source.is_dir():
            shutil.copytree(source, folder / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(source, folder / name)
    return folder


@pytest.fixture
def workdir(tmp_path):
    return copy_workflow(tmp_path)


def write_config(workdir, config, name="tiny.yaml"):
    path = workdir / name
    path.write_text(yaml.safe_dump(config))
    return path.name


def test_dry_run_of_the_default_study(workdir):
    counts = planned(workdir)
    variants, seeds = 5, 2  # none, full, r8, r16, r32
    assert counts["prepare_data"] == 1 and counts["rank_popularity"] == 1
    assert counts["pretrain_model"] == (variants - 1) * seeds
    assert counts["finetune_model"] == variants * seeds
    assert counts["aggregate_results"] == 1
    assert {r for r in counts if r.startswith("plot_")} == {
        "plot_accuracy_vs_rank", "plot_params_vs_accuracy", "plot_pretrain_losses", "plot_finetune_validation",
        "plot_head_spectra", "plot_data_distributions"}


def test_dry_run_passes_settings_and_checkpoints(workdir):
    result = run_snakemake(workdir, "-n", "--printshellcmds", "results/synthetic/seed-r16/seed1/bce/metrics.json")
    out = result.stdout
    assert "--variant r16 --seed 1 --out-dir results/synthetic/seed-r16/seed1/bce" in out
    assert "--pretrained results/synthetic/seed-r16/seed1/pretrain.pt" in out
    settings = json.loads(re.search(r"scripts/finetune.py .*--settings '(\{.*?\})'", out).group(1))
    default = yaml.safe_load((REPO / "config/config.yaml").read_text())["settings"]
    assert settings["finetune"]["epochs"] == default["finetune"]["epochs"]
    assert settings["pretrain"]["preset"] == "seed" and settings["finetune"]["loss"] == "bce"  # the axes
    pretrain = json.loads(re.search(r"scripts/pretrain.py .*--settings '(\{.*?\})'", out).group(1))
    assert pretrain["pretrain"]["preset"] == "seed" and "finetune" not in pretrain
    assert settings["finetune"]["weight_decay"] == 0.0  # a schema default, passed explicitly
    assert "aap_weight" not in settings["pretrain"]  # null in the config: the preset decides


BEAUTY = REPO.parent / "shared/data/s3rec/Beauty.txt"
AUTHORS = REPO.parent / "shared/authors/Beauty-epochs-150.pt"  # config/beauty.yaml's authors_checkpoint


@pytest.mark.skipif(not (BEAUTY.exists() and AUTHORS.exists()),
                    reason=f"the authors' Beauty files are not at {BEAUTY.parent} and {AUTHORS.parent}")
def test_dry_run_of_beauty():
    """In the repository itself: config/beauty.yaml's relative ../shared paths must resolve."""
    result = run_snakemake(REPO, "-n", "--nolock", "--configfile", "config/beauty.yaml")
    out = result.stdout + result.stderr
    counts = job_counts(out)
    # Pretrained: seed-full, seed-r8, seed-r16, seed-r32, paper-full, paper-r16; finetuned: those,
    # none and authors; three seeds each, finetuned with bce and with ce; one authors' import.
    if "Nothing to be done" not in out:
        assert counts["pretrain_model"] <= 6 * 3 and counts["finetune_model"] <= 8 * 3 * 2
    planned_runs = run_snakemake(REPO, "-n", "--nolock", "--configfile", "config/beauty.yaml", "--forceall")
    counts = job_counts(planned_runs.stdout + planned_runs.stderr)
    assert counts["pretrain_model"] == 6 * 3 and counts["finetune_model"] == 8 * 3 * 2
    assert counts["export_finetuning"] == 8 * 3 * 2 and counts["report_study"] == 1


LASTFM = [REPO.parent / "shared/data/s3rec" / name for name in ("LastFM.txt", "LastFM_item2attributes.json",
                                                               "LastFM_sample.txt")]
LASTFM_AUTHORS = REPO.parent / "shared/authors/LastFM-epochs-150.pt"


@pytest.mark.skipif(not all(p.exists() for p in [*LASTFM, LASTFM_AUTHORS]),
                    reason=f"the authors' LastFM files are not at {LASTFM[0].parent} and {LASTFM_AUTHORS.parent}")
def test_dry_run_of_lastfm():
    """config/lastfm.yaml plans Beauty's design on LastFM, its relative ../shared paths resolving,
    and its finetunings rank the sampled protocol against the authors' negatives file."""
    planned = run_snakemake(REPO, "-n", "--nolock", "-p", "--configfile", "config/lastfm.yaml", "--forceall")
    out = planned.stdout + planned.stderr
    counts = job_counts(out)
    assert counts["pretrain_model"] == 6 * 3 and counts["finetune_model"] == 8 * 3 * 2
    assert counts["import_authors_checkpoint"] == 1 and counts["report_study"] == 1
    assert "--negatives ../shared/data/s3rec/LastFM_sample.txt" in out
    finetunings = [line for line in out.splitlines() if line.startswith("Shell command: python scripts/finetune.py")]
    assert len(finetunings) == 48 and all('"negatives": "file"' in line for line in finetunings)
    assert all('"batch_size": 256' in line for line in finetunings)  # not config.yaml's 64


def documented_commands():
    """Every `snakemake ...` line of the bash blocks in README.md's workflow section and in
    config/README.md (comments cut), except `--report` (needs finished runs) and lines with
    [optional] parts."""
    readme = (REPO / "README.md").read_text()
    sections = [readme[readme.index("## The workflow"):readme.index("## The scripts")],
                (REPO / "config/README.md").read_text()]
    commands = []
    for text in sections:
        for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
            for line in block.splitlines():
                line = line.split(" # ")[0].strip()
                if line.startswith("snakemake") and "[" not in line and "--report" not in line:
                    commands.append(line)
    return sorted(set(commands))


def test_documented_commands_parse_and_plan(tmp_path):
    """The documented command forms, with -n added right after `snakemake` (so that the order of
    targets and --configfile is kept), plan the study. In the repository itself, as the Beauty
    and LastFM forms need ../shared; those are skipped where their files are absent."""
    if not os.access(REPO, os.W_OK):
        pytest.skip(f"the documented commands keep snakemake's records (.snakemake/) in the clone they run in, and "
                    f"{REPO} is read-only to this user (README: --directory)")
    commands = documented_commands()
    assert any("--configfile config/beauty.yaml -- report" in c for c in commands)
    assert any(c.startswith("snakemake report --configfile") for c in commands)
    assert any("--directory" in c for c in commands)
    for command in commands:
        if "beauty" in command and not (BEAUTY.exists() and AUTHORS.exists()):
            continue
        if "lastfm" in command and not all(p.exists() for p in [*LASTFM, LASTFM_AUTHORS]):
            continue
        args = command.split()[1:]
        if "--directory" in args:  # the reader's scratch folder: one of the test's instead
            args[args.index("--directory") + 1] = str(tmp_path / "scratch")
        result = run_snakemake(REPO, "-n", "--nolock", *args, check=False)
        out = result.stdout + result.stderr
        if "--directory" in args and any(char.isspace() for char in os.path.relpath(REPO, tmp_path)):
            assert "a path with a space, which the jobs' command lines cannot take" in out, out[-3000:]
            continue  # this clone's path has a space: refused by design (common.smk, code_file)
        assert result.returncode == 0, f"{command}:\n{out[-3000:]}"
        # planned: jobs to run, or none where this clone has made them already (a prepared Beauty)
        assert "FileNotFoundError" not in out and ("Job stats" in out or "Nothing to be done" in out), command


def test_a_target_after_configfile_is_read_as_a_config_file(workdir):
    """Why the documentation puts targets first: snakemake's argument parser, not the workflow."""
    result = run_snakemake(workdir, "-n", "--configfile", "config/config.yaml", "all", check=False)
    assert result.returncode != 0 and "No such file or directory: 'all'" in result.stdout + result.stderr
    assert planned(workdir, "--configfile", "config/config.yaml", "--", "all")["finetune_model"] == 10


@pytest.mark.parametrize("pretraining, message", [
    ({"seed": ["full", "r12"]}, "pretraining.seed: variant 'r12' is neither full nor a rank of `ranks`"),
    ({"sed": "all"}, "config: pretraining"),
])
def test_a_bad_pretraining_axis_is_named(workdir, pretraining, message):
    config = {"pretraining": pretraining}
    result = run_snakemake(workdir, "-n", "--configfile", write_config(workdir, config), check=False)
    assert result.returncode != 0 and message in result.stdout + result.stderr


AMAZON_DOWNLOADED = {"source": "amazon", "reviews": "resources/raw/x/reviews.json.gz", "meta": "resources/raw/meta.json.gz",
                     "download": {"reviews": {"url": "https://example.org/r"}, "meta": {"url": "https://example.org/m"}}}


@pytest.mark.parametrize("text, line, key", [
    ("seeds: [0]\nranks: [8]\nseeds: [1]\n", 3, "seeds"),
    # after a merge key too: the check stopped at `<<` (lr 0.2 planned, silently)
    ("settings:\n  pretrain: &p {epochs: 1}\n  finetune:\n    <<: *p\n    lr: 0.1\n    lr: 0.2\n", 6, "lr"),
], ids=["top level", "after a merge key"])
def test_a_key_given_twice_in_a_config_file_is_refused(workdir, text, line, key):
    """YAML keeps the last: before, `seeds: [0]` then `seeds: [1]` planned seed 1 alone, silently."""
    path = workdir / "twice.yaml"
    path.write_text(text)
    result = run_snakemake(workdir, "-n", "--configfile", str(path), check=False)
    assert result.returncode != 0
    assert f"config: {path}:{line}: key '{key}' given twice in one mapping" in result.stdout + result.stderr


def test_a_merged_key_given_again_is_no_repeat(workdir):
    """`<<: *anchor` then one of its keys: YAML's override, not a key given twice."""
    path = workdir / "merged.yaml"
    path.write_text("settings:\n  pretrain: &p {epochs: 1}\n  finetune:\n    <<: *p\n    epochs: 2\n")
    result = run_snakemake(workdir, "-n", "--configfile", str(path), check=False)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]


@pytest.mark.parametrize("config, message", [
    # each planned, then failed in a job (or made a seed0.0/ path, or an argparse error), before
    ({"compile": "cuda-graph", "device": "cpu"},
     "compile: cuda-graph records CUDA graphs and needs a CUDA device, not device: cpu"),
    ({"seeds": [0.0, 1]}, "config: seeds[0] = 0.0: expected a value of type integer (write it without a decimal point)"),
    ({"pretrain_seeds_per_job": 2.0}, "config: pretrain_seeds_per_job = 2.0: expected a value of type integer"),
    ({"datasets": {"synthetic": {"users": 300.0}}}, "config: datasets.synthetic.users = 300.0: expected a value of"),
    ({"pretraining": {"seed": []}}, "pretraining: {'seed': []} pretrains nothing"),
    ({"pretraining": {"foo": "all"}}, "config: pretraining: the name 'foo' is not allowed: expected one of "),
    ({"study_dir": "null"}, "config: study_dir = 'null': this value is not allowed here"),
    ({"run_on": ["a"], "datasets": {"a": AMAZON_DOWNLOADED}},
     "datasets.a.reviews: a file with a download url must live directly in resources/raw/ (no subfolder)"),
    ({"settings": {"eval": {"negatives": "file"}}},
     "source synthetic has none: leave it out of run_on, or use eval.negatives: seeded"),
    ({"datasets": {"synthetic": {"items": 50}}},
     "datasets.synthetic.items: 50 items leave a user of 30 items (the synthetic sequences' longest) fewer than"),
    ({"settings": {"pretrain": {"aap_weight": float("inf")}}},
     "settings.pretrain.aap_weight: expected a finite number >= 0, got inf"),
])
def test_what_would_fail_in_a_job_stops_snakemake_before_any(workdir, config, message):
    result = run_snakemake(workdir, "-n", "--configfile", write_config(workdir, config), check=False)
    assert result.returncode != 0 and message in result.stdout + result.stderr, (result.stdout + result.stderr)[-2000:]


def test_a_preset_is_left_out_with_an_empty_list(workdir):
    """config/config.yaml's {seed: all} is merged into every config file: before, `pretraining:
    {paper: [full]}` also pretrained the four seed variants, and there was no way to drop them
    (and stacking them was refused for the seed preset's bucketed batches)."""
    assert planned(workdir, "--configfile", write_config(workdir, {"pretraining": {"seed": [], "paper": ["full"]}}))[
        "pretrain_model"] == 2
    stacked = {"pretraining": {"seed": [], "paper": "all"}, "pretrain_seeds_per_job": 2}
    assert planned(workdir, "--configfile", write_config(workdir, stacked))["pretrain_stacked"] == 4


def test_missing_input_file_says_where_to_get_it(workdir):
    config = {"run_on": ["mine"], "datasets": {"mine": {"source": "s3rec", "sequences": "data/Mine.txt",
                                                        "attributes": "data/Mine_item2attributes.json"}}}
    result = run_snakemake(workdir, "-n", "--configfile", write_config(workdir, config), check=False)
    assert result.returncode != 0
    message = result.stderr + result.stdout
    assert "datasets.mine.sequences" in message and "data/Mine.txt" in message
    assert "does not exist" in message and "github.com/RUCAIBox/CIKM2020-S3Rec" in message
    (workdir / "data" / "Mine.txt").mkdir(parents=True)  # before: "does not exist" too
    result = run_snakemake(workdir, "-n", "--configfile", write_config(workdir, config), check=False)
    assert result.returncode != 0
    assert "datasets.mine.sequences: 'data/Mine.txt' is a folder; expected a file" in result.stderr + result.stdout


def test_authors_checkpoint_adds_the_authors_variant(workdir):
    """datasets.<name>.authors_checkpoint: one import, finetuned with every seed, no pretraining."""
    for name in ("Mine.txt", "Mine_item2attributes.json", "Mine-epochs-150.pt"):
        (workdir / name).write_text("placeholder")  # only their existence is checked when planning
    spec = {"source": "s3rec", "sequences": "Mine.txt", "attributes": "Mine_item2attributes.json"}
    config = {"run_on": ["mine"], "datasets": {"mine": {**spec, "authors_checkpoint": "Mine-epochs-150.pt"}}}
    result = run_snakemake(workdir, "-n", "--printshellcmds", "--configfile", write_config(workdir, config))
    out = result.stdout + result.stderr
    counts = job_counts(out)
    assert counts["import_authors_checkpoint"] == 1
    assert counts["finetune_model"] == 6 * 2 and counts["pretrain_model"] == 4 * 2  # + authors; not pretrained
    assert "--out-dir results/mine/authors/seed1/bce --pretrained results/mine/authors/pretrain.pt" in out
    assert ("scripts/import_checkpoint.py --authors Mine-epochs-150.pt --data resources/mine"
            " --out results/mine/authors/pretrain.pt --variant authors") in out
    finetune = re.search(r"scripts/finetune.py --data resources/mine --variant authors --seed 1 (.*)", out).group(1)
    assert "--pretrained results/mine/authors/pretrain.pt" in finetune
    assert '"pretrain"' not in finetune  # pretrained by the authors, not with this study's settings
    # Left out (null, the default): no authors variant.
    config["datasets"]["mine"] = spec
    assert "import_authors_checkpoint" not in planned(workdir, "--configfile", write_config(workdir, config))
    # A checkpoint that is not there stops snakemake naming the key.
    config["datasets"]["mine"] = {**spec, "authors_checkpoint": "missing.pt"}
    result = run_snakemake(workdir, "-n", "--configfile", write_config(workdir, config), check=False)
    # (snakemake 9.2 prints a WorkflowError on stderr, later versions on stdout)
    assert result.returncode != 0 and ("datasets.mine.authors_checkpoint: 'missing.pt' does not exist"
                                       in result.stdout + result.stderr)
    # A path with a space is quoted in the command (before, it was split into two arguments).
    (workdir / "my models").mkdir()
    (workdir / "my models" / "Mine-epochs-150.pt").write_text("placeholder")
    config["datasets"]["mine"] = {**spec, "authors_checkpoint": "my models/Mine-epochs-150.pt"}
    out = run_snakemake(workdir, "-n", "--printshellcmds", "--configfile", write_config(workdir, config)).stdout
    assert "scripts/import_checkpoint.py --authors 'my models/Mine-epochs-150.pt' --data" in out


def test_an_authors_checkpoint_of_other_model_settings_is_refused_before_any_job(workdir):
    """The `authors` variant finetunes with settings.model: a checkpoint of other settings failed
    every one of its finetunings, after the import, each naming only the checkpoint."""
    import torch
    from test_authors import authors_state_dict

    for name in ("Mine.txt", "Mine_item2attributes.json"):
        (workdir / name).write_text("placeholder")
    torch.save(authors_state_dict(num_items=30, num_attributes=7), workdir / "Mine-epochs-150.pt")  # d 16, 2 layers
    spec = {"source": "s3rec", "sequences": "Mine.txt", "attributes": "Mine_item2attributes.json",
            "authors_checkpoint": "Mine-epochs-150.pt"}
    config = {"run_on": ["mine"], "datasets": {"mine": spec}, "ranks": [8],
              "settings": {"model": {"hidden_size": 32}}}
    result = run_snakemake(workdir, "-n", "--configfile", write_config(workdir, config), check=False)
    out = result.stdout + result.stderr
    assert result.returncode != 0
    assert ("config: datasets.mine.authors_checkpoint: Mine-epochs-150.pt has other model settings than "
            "settings.model (hidden_size 16 there, 32 here)" in out), out[-2000:]
    assert "authors_checkpoint: null" in out
    config["settings"]["model"] = {"hidden_size": 16, "num_heads": 4}  # no shape shows the heads: theirs are 2
    result = run_snakemake(workdir, "-n", "--configfile", write_config(workdir, config), check=False)
    assert result.returncode != 0 and "(num_heads 2 there, 4 here)" in result.stdout + result.stderr
    config["settings"]["model"] = {"hidden_size": 16, "num_layers": 2}  # the checkpoint's: planned
    assert planned(workdir, "--configfile", write_config(workdir, config))["import_authors_checkpoint"] == 1


def test_a_negatives_file_reaches_prepare_data_and_eval_file_needs_one(workdir):
    """datasets.<name>.negatives: the authors' <Name>_sample.txt, an input of prepare_data."""
    for name in ("Mine.txt", "Mine_item2attributes.json", "Mine_sample.txt"):
        (workdir / name).write_text("placeholder")  # only their existence is checked when planning
    spec = {"source": "s3rec", "sequences": "Mine.txt", "attributes": "Mine_item2attributes.json"}
    config = {"run_on": ["mine"], "datasets": {"mine": {**spec, "negatives": "Mine_sample.txt"}},
              "settings": {"eval": {"negatives": "file"}}}
    out = run_snakemake(workdir, "-n", "--printshellcmds", "--configfile", write_config(workdir, config)).stdout
    assert ("scripts/prepare_data.py --format s3rec --sequences Mine.txt --attributes Mine_item2attributes.json"
            " --negatives Mine_sample.txt --out resources/mine") in out
    settings = json.loads(re.search(r"scripts/finetune.py .*--settings '(\{.*?\})'", out).group(1))
    assert settings["eval"]["negatives"] == "file"
    config["datasets"]["mine"] = spec  # no negatives file, but runs told to use one: stopped at once
    result = run_snakemake(workdir, "-n", "--configfile", write_config(workdir, config), check=False)
    assert result.returncode != 0
    assert "settings.eval.negatives is file, but datasets.mine has no `negatives` file" in result.stdout + result.stderr


def test_data_with_new_mtimes_but_the_same_bytes_reruns_nothing(workdir):
    """A data file over snakemake's default checksum limit (1 MB; Beauty.txt is 1.09 MB) copied
    again with a new mtime: the workflow profile's max-checksum-file-size makes snakemake compare
    its checksum, so prepare_data (and every pretraining after it) is not rerun; new bytes are."""
    rng = np.random.default_rng(0)
    lines = (" ".join(map(str, [user, *rng.integers(1, 2001, 10)])) for user in range(1, 25_001))
    sequences = workdir / "Mine.txt"
    sequences.write_text("\n".join(lines) + "\n")
    assert sequences.stat().st_size > 1_000_000
    (workdir / "Mine_item2attributes.json").write_text(json.dumps({str(i): [i % 7 + 1] for i in range(1, 2001)}))
    config = write_config(workdir, {"run_on": ["mine"], "datasets": {"mine": {
        "source": "s3rec", "sequences": "Mine.txt", "attributes": "Mine_item2attributes.json"}}})
    target = "resources/mine/stats.json"
    run_snakemake(workdir, target, "--cores", "1", "--configfile", config)
    time.sleep(1)  # a visibly newer mtime, also where mtimes have whole seconds
    os.utime(sequences)  # touched: newer than the prepared files, bytes unchanged
    assert "Nothing to be done" in run_snakemake(workdir, target, "-n", "--configfile", config).stdout
    with open(sequences, "a") as f:
        f.write("25001 1 2 3 4 5\n")
    assert planned(workdir, target, "--configfile", config) == {"prepare_data": 1}


@pytest.mark.slow
def test_a_parked_pretraining_is_not_rerun_on_a_fresh_machine(workdir):
    """README's procedure for a study moving machines: park; on a fresh machine (only the tracked
    study/ is left) make the data, restore, then the study: a pretraining that had finished is
    not run again, its finetuning runs from the restored pretrain.pt. (Data made after the
    restore would be newer than the restored pretrain.pt, and snakemake, with no record of it on
    this machine, would rerun the pretraining; restore refuses to run before the data exist.)"""
    tiny = write_config(workdir, {**TINY, "seeds": [0]})
    pretrained = "results/tiny/seed-full/seed0/pretrain.pt"
    run_snakemake(workdir, "--cores", "1", "--configfile", tiny, "--", pretrained, "study/tiny/plan.json")
    park = [sys.executable, "scripts/park_runs.py"]
    subprocess.run([*park, "park", "tiny"], cwd=workdir, check=True, capture_output=True)
    assert (workdir / "study/unfinished/tiny/seed-full/seed0/pretrain.pt").is_file()
    for folder in ("results", "resources", ".snakemake", "logs"):
        shutil.rmtree(workdir / folder)
    run_snakemake(workdir, "--cores", "1", "--configfile", tiny, "--", "resources/tiny/stats.json")
    subprocess.run([*park, "restore", "tiny"], cwd=workdir, check=True, capture_output=True)
    finetuning = ("--configfile", tiny, "--", "results/tiny/seed-full/seed0/bce/metrics.json")
    assert planned(workdir, *finetuning) == {"finetune_model": 1}
    run_snakemake(workdir, "--cores", "1", *finetuning)
    assert (workdir / "results/tiny/seed-full/seed0/bce/metrics.json").is_file()


@pytest.mark.slow
def test_a_study_half_done_continues_on_a_fresh_clone_without_running_its_runs_again(workdir):
    """README's procedure on a fresh clone of a study half done (the tracked study folder only):
    the data, restore, `snakemake study`: only the run the folder lacks runs; the pretraining it
    holds is neither run again nor rewritten, and the plan is written again from the config run
    with (snakemake has no record of its parameters on a clone). Without restore, the data made
    after the clone date the folder's runs as outdated, and snakemake plans them all again."""
    config = {**TINY, "seeds": [0], "pretraining": {"seed": ["full"]}, "finetune_losses": ["bce"]}
    tiny = write_config(workdir, config)
    run_snakemake(workdir, "--cores", "1", "--configfile", tiny, "--", "study")
    pretraining = workdir / "study/tiny/seed-full/seed0/pretrain_run.json"
    recorded = pretraining.read_bytes()
    shutil.rmtree(workdir / "study/tiny/none/seed0/bce")  # a run the study has not done yet
    for folder in ("results", "resources", ".snakemake", "logs"):
        shutil.rmtree(workdir / folder)
    run_snakemake(workdir, "--cores", "1", "--configfile", tiny, "--", "resources/tiny/stats.json")
    study = ("--configfile", tiny, "--", "study")
    assert planned(workdir, *study)["pretrain_model"] == 1
    restore = [sys.executable, "scripts/park_runs.py", "restore", "tiny"]
    log = subprocess.run(restore, cwd=workdir, check=True, capture_output=True, text=True).stderr
    assert "3 finished runs kept" in log and "no data digest" not in log  # seed-full and its bce, popularity
    counts = planned(workdir, *study)
    assert counts["finetune_model"] == 1 and counts["export_finetuning"] == 1 and "pretrain_model" not in counts
    assert counts["study_plan"] == 1  # restore dated the plan: written again from the config run with
    time.sleep(1)  # a visibly newer mtime, also where mtimes have whole seconds
    os.utime(workdir / "scripts/export_study.py")  # the copier edited, or changed by a pull: no run planned
    assert planned(workdir, *study) == counts
    os.utime(workdir / "scripts/finetune.py")  # a training script: its runs are outdated, until a second restore
    assert planned(workdir, *study)["finetune_model"] == 2
    subprocess.run(restore, cwd=workdir, check=True, capture_output=True)
    assert planned(workdir, *study) == counts
    write_config(workdir, {**config, "report": {"bootstrap_samples": 100}})  # the config changed since the plan
    run_snakemake(workdir, "--cores", "1", *study)
    assert json.loads((workdir / "study/tiny/plan.json").read_text())["report"]["tables"]["bootstrap_samples"] == 100
    assert pretraining.read_bytes() == recorded and not (workdir / "results/tiny/seed-full").exists()
    assert "**2 of 2 finetunings, 1 of 1 pretrainings**" in (workdir / "study/tiny/report/runs.md").read_text()


def test_outputs_go_to_another_working_directory_and_the_code_runs_from_the_clone(tmp_path):
    """`snakemake --directory <scratch>` from the clone: data, results and logs in <scratch>, the
    scripts run from the clone, named relative to <scratch> (here both in a folder whose name has
    a space, which that relative path avoids). A relative path with a space is refused, naming it:
    the jobs' command lines take it unquoted (common.smk, code_file)."""
    code, scratch = copy_workflow(tmp_path / "my study" / "code"), tmp_path / "my study" / "scratch"
    scratch.mkdir()
    tiny = write_config(code, {**TINY, "seeds": [0]})
    target = "results/tiny/none/seed0/bce/metrics.json"
    result = run_snakemake(code, target, "--directory", str(scratch), "--cores", "1", "-p", "--configfile", tiny)
    assert "python ../code/scripts/finetune.py --data resources/tiny" in result.stdout + result.stderr
    assert (scratch / target).is_file() and (scratch / "resources/tiny/stats.json").is_file()
    assert "test full NDCG@10" in (scratch / "logs/results/tiny/none/seed0/bce/finetune.log").read_text()
    assert not any((code / name).exists() for name in ("resources", "results", "logs", ".snakemake"))
    again = run_snakemake(code, target, "--directory", str(scratch), "-n", "--configfile", tiny)
    assert "Nothing to be done" in again.stdout
    # the whole study plans there too, its script inputs found
    assert planned(code, "--directory", str(scratch), "--configfile", tiny)["pretrain_model"] == 3
    (tmp_path / "other scratch").mkdir()
    refused = run_snakemake(code, "--directory", str(tmp_path / "other scratch"), "-n", "--configfile", tiny,
                            check=False)
    output = refused.stdout + refused.stderr
    assert refused.returncode != 0 and "reaches the project's code as '../my study/code/" in output


def write_module_snakefile(folder: Path, snakefile: str) -> None:
    """folder/workflow/Snakefile importing this workflow from `snakefile` (a Snakemake expression)."""
    (folder / "workflow").mkdir(parents=True)
    (folder / "workflow/Snakefile").write_text(
        f"module s3rec:\n    snakefile: {snakefile}\n    config: config\n\nuse rule * from s3rec\n")


def test_the_workflow_runs_as_a_module_of_another(tmp_path):
    """A researcher's own Snakefile that imports this one (`module ...: snakefile:`, `use rule *`,
    as snakedeploy sets it up). Before, planning stopped with FileNotFoundError: the schema and the
    code were looked for beside the importing Snakefile (workflow.basedir is the main workflow's),
    not beside this one. The config given overrides the clone's config/config.yaml, as with
    --configfile (a module's own configfile directive is not read: before, a partial config was a
    KeyError 'eval')."""
    code, mine = copy_workflow(tmp_path / "code"), tmp_path / "mine"
    write_module_snakefile(mine, f'"{code / "workflow/Snakefile"}"')
    tiny = write_config(mine, {**TINY, "seeds": [0]})
    target = "results/tiny/none/seed0/bce/metrics.json"
    result = run_snakemake(mine, target, "--cores", "1", "-p", "--configfile", tiny)
    assert "python ../code/scripts/finetune.py --data resources/tiny" in result.stdout + result.stderr
    assert (mine / target).is_file() and not (code / "results").exists()
    assert planned(mine, "--configfile", tiny)["pretrain_model"] == 3  # seed-full, seed-r4, paper-full; 1 seed


def test_a_module_read_from_a_git_ref_is_refused_naming_it(tmp_path):
    """Imported from a git ref (gitfile(...); github(...) alike) there is no clone on disk whose
    scripts the jobs could run: before, a TypeError from pathlib in validate.smk."""
    code, mine = copy_workflow(tmp_path / "code"), tmp_path / "mine"
    commit_all(code)
    write_module_snakefile(mine, f'gitfile(repo_path="{code}", path="workflow/Snakefile", ref="HEAD")')
    result = run_snakemake(mine, "-n", check=False)
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "this workflow runs the scripts of its own clone, so it is imported from a clone on disk" in output
    assert f"not git+file://{code}/workflow@HEAD" in output


def test_use_conda_runs_each_job_in_an_environment_without_the_project(workdir):
    """`snakemake --use-conda`: each job in an environment made from environment.yml, which holds
    the dependencies, not this project. Before, every job stopped with "No module named 's3rec'"
    (snakemake clears PYTHONPATH for such jobs); common.smk now sets it to the clone in each
    command's prefix. conda is stood in for by tests/fake_conda (conda-forge is not reachable
    from this project's machines), whose environment sees this venv's packages but not s3rec."""
    tiny = write_config(workdir, {**TINY, "seeds": [0]})
    target = "results/tiny/none/seed0/bce/metrics.json"
    env = snakemake_env(str(REPO / "tests/fake_conda/bin"), PYTHONPATH=str(workdir),
                        FAKE_CONDA_PYTHON=sys._base_executable, FAKE_CONDA_PACKAGES=sysconfig.get_paths()["purelib"])
    result = run_snakemake(workdir, target, "--use-conda", "--cores", "1", "--configfile", tiny, env=env)
    output = result.stdout + result.stderr
    assert output.count("Activating conda environment") == 2  # prepare_data, finetune_model
    assert "test full NDCG@10" in (workdir / "logs/results/tiny/none/seed0/bce/finetune.log").read_text()
    [python] = workdir.glob(".snakemake/conda/*/bin/python")  # the stand-in is faithful: no s3rec there
    bare = subprocess.run([str(python), "-c", "import numpy, torch; import s3rec"], capture_output=True, text=True,
                          env={key: value for key, value in env.items() if key != "PYTHONPATH"}, cwd=python.parent,
                          timeout=120)  # (not in a folder that holds s3rec/: `python -c` imports from there)
    assert "No module named 's3rec'" in bare.stderr, bare.stderr


def test_snakemake_where_the_project_cannot_be_imported_says_where_to_install_it(workdir):
    """Planning imports s3rec (and so polars): a snakemake of its own environment (as some
    --use-conda users keep it) stopped with a bare ModuleNotFoundError in common.smk."""
    hidden = workdir / "hidden" / "polars"  # an environment without polars, as far as this run can tell
    hidden.mkdir(parents=True)
    (hidden / "__init__.py").write_text("raise ModuleNotFoundError(\"No module named 'polars'\", name='polars')\n")
    result = run_snakemake(workdir, "-n", check=False,
                           env=snakemake_env(PYTHONPATH=os.pathsep.join([str(hidden.parent), str(workdir)])))
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert ("snakemake runs in an environment without this project (No module named 'polars'): the workflow "
            "plans with its code") in output


def test_target_study_needs_a_study_folder(workdir):
    tiny = write_config(workdir, {**TINY, "study_dir": None})
    result = run_snakemake(workdir, "-n", "--configfile", tiny, "--", "study", check=False)
    assert result.returncode != 0 and "target study: config study_dir is not set" in result.stdout + result.stderr


@pytest.mark.parametrize("target", ["results/tiny/seed-r016/seed0/pretrain_run.json",
                                    "results/tiny/seed-r0/seed0/pretrain_run.json",
                                    "results/tiny/seed-r016/seed0/bce/metrics.json"])
def test_a_run_path_outside_the_label_grammar_names_no_job(workdir, target):
    """r016 is not the r16 the report and a study folder read (labels.PRETRAINED_HERE): asked
    for by path, no rule makes it, rather than a pretraining in a folder nothing reads."""
    tiny = write_config(workdir, TINY)
    result = run_snakemake(workdir, "-n", "--configfile", tiny, "--", target, check=False)
    assert result.returncode != 0 and "MissingRuleException" in result.stdout + result.stderr
    good = target.replace("r016", "r4").replace("r0/", "r4/")
    assert job_counts(run_snakemake(workdir, "-n", "--configfile", tiny, "--", good).stdout)


STACKED = {**TINY, "seeds": [0, 1, 2], "pretrain_seeds_per_job": 2,
           "settings": {**TINY["settings"], "pretrain": {"epochs": 1, "batching": "padded"}}}


def test_dry_run_of_stacked_seeds(workdir):
    """pretrain_seeds_per_job 2 over seeds 0, 1, 2: a pretrain_stacked job for seeds 0-1 and one
    for seed 2, per pretraining; each seed's files copied to its folder by unstack_pretraining."""
    result = run_snakemake(workdir, "-n", "--printshellcmds", "--configfile", write_config(workdir, STACKED))
    counts = job_counts(result.stdout + result.stderr)
    assert "pretrain_model" not in counts
    assert counts["pretrain_stacked"] == 3 * 2 and counts["unstack_pretraining"] == 3 * 3
    assert counts["finetune_model"] == 4 * 3 * 2
    group = "results/tiny/seed-r4/stacked-seeds0-1"
    assert f"--variant r4 --seed 0 1 --out-dir {group}/seed0 {group}/seed1 --settings" in result.stdout
    assert "--variant r4 --seed 2 --out-dir results/tiny/seed-r4/stacked-seeds2/seed2 --settings" in result.stdout


@pytest.mark.parametrize("change, message", [
    ({"settings": {"pretrain": {"epochs": 1}}},
     "which needs settings.pretrain.batching: padded (got none set, so preset seed's own: bucketed)"),
    ({"settings": {"pretrain": {"epochs": 1, "batching": "bucketed"}}}, "batching: padded (got 'bucketed')"),
    ({"compile": "eager"}, "which takes compile none or cuda-graph, not 'eager'"),
])
def test_stacked_seeds_refuse_what_they_cannot_train(workdir, change, message):
    result = run_snakemake(workdir, "-n", "--configfile", write_config(workdir, {**STACKED, **change}), check=False)
    assert result.returncode != 0 and message in result.stdout + result.stderr


def test_stacked_seeds_train_finetune_and_rerun_nothing(workdir):
    """A real stacked job (seeds 0 and 1 of seed-r4) up to seed 1's finetuning; the copied files
    are up to date: a second run has nothing to do."""
    stacked = write_config(workdir, STACKED)
    target = ("--configfile", stacked, "--", "results/tiny/seed-r4/seed1/bce/metrics.json")
    assert planned(workdir, *target) == {"prepare_data": 1, "pretrain_stacked": 1, "unstack_pretraining": 1,
                                         "finetune_model": 1}
    run_snakemake(workdir, "--cores", "1", *target)
    run = json.loads((workdir / "results/tiny/seed-r4/seed1/pretrain_run.json").read_text())
    assert (run["seed"], run["stacked"]["seeds"]) == (1, [0, 1])
    assert json.loads((workdir / "results/tiny/seed-r4/seed1/bce/metrics.json").read_text())["seed"] == 1
    assert (workdir / "results/tiny/seed-r4/stacked-seeds0-1/seed0/pretrain.pt").is_file()
    copied = (workdir / "logs/results/tiny/seed-r4/seed1/unstack.log").read_text()  # every job logs
    assert "copied pretrain.pt, pretrain_history.csv and pretrain_run.json from results/tiny/seed-r4/stacked-seeds0-1/seed1" in copied
    assert "Nothing to be done" in "".join(run_snakemake(workdir, "-n", *target).stdout.splitlines(True))


def expected_outputs(dataset, pretrainings, finetunings, seeds, losses):
    files = [f"resources/{dataset}/{name}" for name in ("sequences.parquet", "item_attributes.parquet", "stats.json")]
    for seed in seeds:
        for pretraining in pretrainings:
            run = f"results/{dataset}/{pretraining}/seed{seed}"
            files += [f"{run}/{name}" for name in ("pretrain.pt", "pretrain_history.csv", "pretrain_run.json")]
            files += [f"logs/{run}/pretrain.log", f"logs/benchmarks/{run}/pretrain.tsv"]
            study = f"study/{dataset}/{pretraining}/seed{seed}"
            files += [f"{study}/{name}" for name in ("pretrain_history.csv", "pretrain_run.json", "heads.pt")]
        for start in finetunings:
            for loss in losses:
                run = f"results/{dataset}/{start}/seed{seed}/{loss}"
                files += [f"{run}/{name}" for name in ("finetune.pt", "finetune_history.csv", "metrics.json",
                                                       "ranks.parquet")]
                files += [f"logs/{run}/finetune.log", f"logs/benchmarks/{run}/finetune.tsv"]
                study = f"study/{dataset}/{start}/seed{seed}/{loss}"
                files += [f"{study}/{name}" for name in ("finetune_history.csv", "metrics.json", "ranks.parquet")]
    for root in ("results", "study"):
        files += [f"{root}/{dataset}/popularity/{name}" for name in ("metrics.json", "ranks.parquet")]
        files += [f"{root}/{dataset}/report/tables/{t}.{ext}" for t in ("results", "difference")
                  for ext in ("csv", "md", "tex")]
        files += [f"{root}/{dataset}/report/figures/{f}.{ext}" for ext in ("png", "pdf") for f in (
            "accuracy_vs_rank", "params_vs_accuracy", "pretrain_losses", "finetune_validation", "head_spectra")]
    files += [f"results/{dataset}/report/figures/data_distributions.{ext}" for ext in ("png", "pdf")]
    files += [f"study/{dataset}/plan.json", f"study/{dataset}/report/runs.md"]
    return files


def metric_values(workdir, dataset="tiny"):
    """{run directory: metrics} of every metrics.json under results/<dataset>."""
    return {str(path.parent.relative_to(workdir)): json.loads(path.read_text())["metrics"]
            for path in sorted((workdir / "results" / dataset).glob("**/metrics.json"))}


STARTS = ["none", "seed-full", "seed-r4", "paper-full"]  # what TINY finetunes


@pytest.mark.slow
def test_end_to_end_tiny_study_and_reruns(workdir):
    tiny = write_config(workdir, TINY)
    first = run_snakemake(workdir, "--cores", "2", "--configfile", tiny)
    missing = [f for f in expected_outputs("tiny", ["seed-full", "seed-r4", "paper-full"], STARTS, [0, 1],
                                           ["bce", "ce"]) if not (workdir / f).exists()]
    assert not missing
    # Rule all prints its message instead of its inputs: it used to list its ~100 inputs twice,
    # as `input:` and in snakemake's `Reason:` line (which lists them anyway).
    output = first.stdout + first.stderr
    assert "localrule all:" not in output
    # A ready finetuning runs before another pretraining (priorities): results arrive run by run.
    assert "Finished jobid" in output and finetunings_overtaken(output) == []
    block = output.split("the study of tiny: tables and figures of every run", 1)[1].split("\n[", 1)[0]
    assert "Reason:" in block and "input:" not in block, block[:300]
    # Every log says what it did, with timestamps.
    for figure in ("accuracy_vs_rank", "params_vs_accuracy", "pretrain_losses", "finetune_validation",
                   "head_spectra", "data_distributions"):
        log = (workdir / f"logs/results/tiny/report/figures/{figure}.log").read_text()
        assert re.match(r"\d\d:\d\d:\d\d INFO", log) and " drew " in log and "done in" in log, figure
    popularity_log = (workdir / "logs/results/tiny/popularity/rank_popularity.log").read_text()
    assert re.match(r"\d\d:\d\d:\d\d INFO", popularity_log)
    # Each run was trained with its preset and loss.
    for start in STARTS:
        for loss in ("bce", "ce"):
            result = json.loads((workdir / f"results/tiny/{start}/seed1/{loss}/metrics.json").read_text())
            assert result["finetune"]["loss"] == loss and result["seed"] == 1
            preset = result["config"].get("pretrain", {}).get("preset")
            assert preset == (None if start == "none" else start.split("-")[0])
    # The tiny runs end at their 2-epoch cap: marked in the tables, CPU time reported.
    results_md = (workdir / "results/tiny/report/tables/results.md").read_text()
    assert "† Finetuning ended at the epoch cap (2 epochs)" in results_md
    assert "CPU time (s), pretrain + finetune" in results_md
    assert "runs_at_cap" in (workdir / "results/tiny/report/tables/results.csv").read_text().splitlines()[0]
    for start in STARTS:
        for loss in ("bce", "ce"):
            assert re.search(rf"\| {loss} +\| {start}† +\|", results_md), (start, loss)
    assert re.search(r"\| popularity +\|", results_md)
    assert r"\toprule" in (workdir / "results/tiny/report/tables/difference.tex").read_text()
    # The study folder's report is the results/ report, from the copied small files alone, and
    # scripts/report_study.py remakes its tables byte for byte without results/.
    for table in ("results", "difference"):
        for ext in ("csv", "md", "tex"):
            made = (workdir / f"study/tiny/report/tables/{table}.{ext}").read_bytes()
            assert made == (workdir / f"results/tiny/report/tables/{table}.{ext}").read_bytes(), (table, ext)
    assert "none" in (workdir / "study/tiny/report/runs.md").read_text()
    study_report = {path: path.read_bytes() for path in sorted((workdir / "study/tiny/report").rglob("*.*"))}
    shutil.rmtree(workdir / "study/tiny/report")
    shutil.move(workdir / "results", workdir / "results.away")
    env = {**os.environ, "PYTHONPATH": str(workdir)}
    subprocess.run([sys.executable, "scripts/report_study.py", "study/tiny"], cwd=workdir, env=env, check=True,
                   capture_output=True, timeout=300)
    remade = {path: path.read_bytes() for path in sorted((workdir / "study/tiny/report").rglob("*.*"))}
    assert remade.keys() == study_report.keys()
    assert [path.name for path in remade if remade[path] != study_report[path]] == []
    shutil.move(workdir / "results.away", workdir / "results")

    # A second invocation has nothing to do.
    assert "Nothing to be done" in run_snakemake(workdir, "-n", "--configfile", tiny).stdout

    # A deleted metrics.json reruns its finetuning job and what reads it, nothing upstream.
    (workdir / "results/tiny/seed-r4/seed0/bce/metrics.json").unlink()
    assert planned(workdir, "--configfile", tiny) == {
        "finetune_model": 1, "aggregate_results": 1, "plot_accuracy_vs_rank": 1, "plot_params_vs_accuracy": 1,
        "plot_finetune_validation": 1, "export_finetuning": 1, "report_study": 1, "all": 1}
    run_snakemake(workdir, "--cores", "2", "--configfile", tiny)
    assert (workdir / "results/tiny/seed-r4/seed0/bce/metrics.json").exists()
    assert "Nothing to be done" in run_snakemake(workdir, "-n", "--configfile", tiny).stdout

    # A deleted file that no report reads (finetune.pt) is made again too, by its job.
    finetuned = workdir / "results/tiny/seed-full/seed1/ce/finetune.pt"
    shutil.copy2(finetuned, workdir / "kept.pt")
    finetuned.unlink()
    assert planned(workdir, "--configfile", tiny)["finetune_model"] == 1
    shutil.copy2(workdir / "kept.pt", finetuned)  # put back (same mtime): nothing to do again
    assert "Nothing to be done" in run_snakemake(workdir, "-n", "--configfile", tiny).stdout

    # Target `report` remakes such a file too (it planned nothing), and files deleted from the
    # study folder are copied again (they were never remade: the committed report then no longer
    # matched its folder).
    deleted = ["results/tiny/seed-full/seed1/ce/metrics.json", "study/tiny/seed-r4/seed1/heads.pt",
               "study/tiny/seed-full/seed0/bce/ranks.parquet", "study/tiny/plan.json"]
    for path in deleted:
        shutil.copy2(workdir / path, workdir / Path(path).name.replace(".", "-kept."))
        (workdir / path).unlink()
    assert planned(workdir, "--configfile", tiny, "--", "report")["finetune_model"] == 1
    shutil.copy2(workdir / "metrics-kept.json", workdir / deleted[0])  # the same mtime: no rerun
    assert planned(workdir, "--configfile", tiny) == {
        "export_pretraining": 1, "export_finetuning": 1, "study_plan": 1, "report_study": 1, "all": 1}
    for path in deleted[1:]:
        shutil.copy2(workdir / Path(path).name.replace(".", "-kept."), workdir / path)
    assert "Nothing to be done" in run_snakemake(workdir, "-n", "--configfile", tiny).stdout

    # An edited script reruns its jobs (and their consumers), no training.
    time.sleep(1)  # a visibly newer mtime
    with open(workdir / "scripts/popularity.py", "a") as f:
        f.write("# edited\n")
    assert planned(workdir, "--configfile", tiny) == {
        "rank_popularity": 1, "aggregate_results": 1, "plot_accuracy_vs_rank": 1, "plot_params_vs_accuracy": 1,
        "export_popularity": 1, "report_study": 1, "all": 1}
    run_snakemake(workdir, "--cores", "2", "--configfile", tiny)

    # Changed settings rerun the jobs that take them: bootstrap settings the tables and the one
    # figure drawing their intervals (and the study's plan and report), finetuning settings the
    # finetuning jobs but not pretraining.
    more = write_config(workdir, {**TINY, "report": {"bootstrap_samples": 300}}, "more.yaml")
    changed = planned(workdir, "--configfile", more)
    assert changed == {"aggregate_results": 1, "plot_accuracy_vs_rank": 1, "study_plan": 1, "report_study": 1,
                       "all": 1}
    settings = {**TINY["settings"], "finetune": {"epochs": 3, "patience": 2}}
    changed = planned(workdir, "--configfile", write_config(workdir, {**TINY, "settings": settings}, "more.yaml"))
    assert changed["finetune_model"] == 16 and "pretrain_model" not in changed

    # `snakemake report` (tables and figures from finished runs) and the HTML report.
    run_snakemake(workdir, "report", "--cores", "2", "--configfile", tiny)
    run_snakemake(workdir, "--configfile", tiny, "--report", "report.html")
    assert (workdir / "report.html").stat().st_size > 10_000

    # An edit to the report's code in s3rec/ (common.smk's REPORT_CODE) reruns every table and
    # figure and the study's report, and no training.
    with open(workdir / "s3rec/intervals.py", "a") as f:
        f.write("# edited\n")
    report_rules = {"aggregate_results", "plot_accuracy_vs_rank", "plot_params_vs_accuracy", "plot_pretrain_losses",
                    "plot_finetune_validation", "plot_head_spectra", "plot_data_distributions", "report_study"}
    assert set(planned(workdir, "--configfile", tiny)) == report_rules | {"all"}


# ---------------------------------------------------------------- SLURM


def slurm_job_ids(snakemake_output: str) -> dict[str, list[str]]:
    """{rule: SLURM job ids} from the executor's "submitted with SLURM jobid N (log: .../rule_<rule>/...)"."""
    jobs: dict[str, list[str]] = {}
    for job_id, rule in re.findall(r"submitted with SLURM jobid (\d+) \(log: \S*?/slurm_logs/rule_(\w+)/",
                                   snakemake_output):
        jobs.setdefault(rule, []).append(job_id)
    return jobs


def sacct_fields(job_ids, fields: list[str], ready, attempts=15) -> dict[str, dict[str, str]]:
    """{job id: {field: value}} from sacct (the jobs, not their steps), polled until
    `ready(rows)` holds or the attempts run out, because slurmdbd records lag a little."""
    rows: dict[str, dict[str, str]] = {}
    for _ in range(attempts):
        out = subprocess.run(["sacct", "-n", "-X", "-P", "-o", ",".join(["JobID", *fields]), "-j", ",".join(job_ids)],
                             capture_output=True, text=True, timeout=30).stdout
        values = [line.split("|") for line in out.splitlines()]
        rows = {v[0]: dict(zip(fields, v[1:])) for v in values if len(v) == len(fields) + 1}
        if ready(rows):
            break
        time.sleep(2)
    return rows


def sacct_states(job_ids) -> dict[str, str]:
    """{job id: state}, polled until every job has COMPLETED (or the attempts run out)."""
    rows = sacct_fields(job_ids, ["State"],
                        lambda rows: all(rows.get(j, {}).get("State", "").startswith("COMPLETED") for j in job_ids))
    return {job: row["State"] for job, row in rows.items()}


def assert_completed(jobs: dict[str, list[str]]) -> None:
    """Every SLURM job of `jobs` (slurm_job_ids) COMPLETED, as sacct says."""
    ids = [i for ids in jobs.values() for i in ids]
    states = sacct_states(ids)
    assert all(states.get(i, "").startswith("COMPLETED") for i in ids), states


@pytest.mark.slurm
@pytest.mark.slow
def test_slurm_profile(tmp_path):
    """The tiny study through profiles/slurm: jobs run as SLURM jobs and give the local run's metrics."""
    reason = slurm_available()
    if reason:
        pytest.skip(reason)
    config = {**TINY, "seeds": [0], "pretraining": {"seed": "all"}, "finetune_losses": ["bce"], "study_dir": None}
    results = {}
    for mode in ("local", "slurm"):
        workdir = copy_workflow(tmp_path / mode)
        tiny = write_config(workdir, config)
        if mode == "local":
            run_snakemake(workdir, "--cores", "2", "--configfile", tiny)
        else:
            slurm = run_snakemake(workdir, "--profile", "profiles/slurm", "--jobs", "2", "--configfile", tiny,
                                  timeout=1500)
        results[mode] = metric_values(workdir)
    jobs = slurm_job_ids(slurm.stdout + slurm.stderr)
    for rule in ("prepare_data", "pretrain_model", "finetune_model", "rank_popularity"):
        assert jobs.get(rule), f"no SLURM job for {rule}: {jobs}"
    assert_completed(jobs)
    assert len(results["slurm"]) == 4  # none, full, r4 and popularity
    assert results["slurm"] == results["local"]  # deterministic on CPU: identical metrics


@pytest.mark.slurm
@pytest.mark.slow
def test_slurm_profile_runs_a_stacked_group(tmp_path):
    """pretrain_seeds_per_job through profiles/slurm: the group is one SLURM job, the copy runs
    locally, and seed 1's finetuning gives the metrics of the same target run locally."""
    reason = slurm_available()
    if reason:
        pytest.skip(reason)
    target = "results/tiny/seed-r4/seed1/bce/metrics.json"
    results = {}
    for mode in ("local", "slurm"):
        workdir = copy_workflow(tmp_path / mode)
        stacked = write_config(workdir, STACKED)
        executor = ("--cores", "2") if mode == "local" else ("--profile", "profiles/slurm", "--jobs", "2")
        result = run_snakemake(workdir, *executor, "--configfile", stacked, "--", target, timeout=1500)
        results[mode] = json.loads((workdir / target).read_text())["metrics"]
    jobs = slurm_job_ids(result.stdout + result.stderr)
    assert jobs.get("pretrain_stacked") and jobs.get("finetune_model") and not jobs.get("unstack_pretraining"), jobs
    assert_completed(jobs)
    assert results["slurm"] == results["local"]
