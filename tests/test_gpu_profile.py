"""GPU jobs: the training rules take a `gpu` resource only when `device` is cuda, cuda:N or
cuda:any; profiles/gpu lets 4 local training jobs share the node's cards (cuda:any); profiles/slurm asks SLURM for a GPU per
job (`sbatch --gpus=1`) or, with its commented shard lines, for one shard of a shared card.

Planning is checked with `snakemake -n` on the tiny study of test_workflow.py. The SLURM test
submits for real; it needs a cluster whose node has GPU gres. The local test cluster of
../shared/slurm-local has none: `bash tests/slurm_fake_gpu.sh` gives it two fake cards (with 4
shards each) and `bash tests/slurm_fake_gpu.sh restore` takes them away again.
"""
from __future__ import annotations

import re
import subprocess

import pytest
import yaml

from conftest import slurm_available
from test_workflow import (REPO, TINY, run_snakemake, sacct_fields, slurm_job_ids,  # noqa: F401
                           workdir, write_config)

TRAINING = {"pretrain_model", "finetune_model"}


def planned_resources(out: str) -> dict[str, list[dict[str, str]]]:
    """{rule: [resources of each job]} from the job listing of a dry run."""
    jobs: dict[str, list[dict[str, str]]] = {}
    rule = None
    for line in out.splitlines():
        match = re.match(r"(?:local)?rule (\w+):$", line.strip())
        if match:
            rule = match.group(1)
            jobs.setdefault(rule, []).append({})
        elif rule and line.strip().startswith("resources:"):
            pairs = line.strip()[len("resources:"):].split(",")
            jobs[rule][-1] = dict(pair.strip().split("=", 1) for pair in pairs if "=" in pair)
    return jobs


def plan(workdir, *args, device=None):
    config = dict(TINY) if device is None else {**TINY, "device": device}
    result = run_snakemake(workdir, "-n", *args, "--configfile", write_config(workdir, config))
    return planned_resources(result.stdout + result.stderr)


def assert_gpu_on_training_jobs_only(jobs, value="1"):
    assert TRAINING <= set(jobs), jobs.keys()
    for rule, resources in jobs.items():
        for job in resources:
            if rule in TRAINING:
                assert job.get("gpu") == value, (rule, job)
            else:
                assert "gpu" not in job, (rule, job)


@pytest.mark.parametrize("device", ["cuda", "cuda:1", "cuda:12", "cuda:any"])  # cuda:12: a card number of two digits
def test_training_jobs_take_a_gpu_on_cuda(workdir, device):
    assert_gpu_on_training_jobs_only(plan(workdir, device=device))


@pytest.mark.parametrize("device", ["cpu", "auto"])
def test_no_job_takes_a_gpu_on_cpu_or_auto(workdir, device):
    jobs = plan(workdir, device=device)
    assert TRAINING <= set(jobs)
    assert not [job for resources in jobs.values() for job in resources if "gpu" in job]


def test_stacked_pretraining_takes_a_gpu_and_the_slurm_profiles_size(workdir):
    """pretrain_seeds_per_job 2: pretrain_stacked takes a GPU on cuda like pretrain_model, the
    SLURM profile sizes it; unstack_pretraining (a copy, run locally) takes nothing."""
    stacked = {**TINY, "device": "cuda", "pretrain_seeds_per_job": 2,
               "settings": {**TINY["settings"], "pretrain": {"epochs": 1, "batching": "padded"}}}
    result = run_snakemake(workdir, "-n", "--profile", "profiles/slurm", "--configfile", write_config(workdir, stacked))
    jobs = planned_resources(result.stdout + result.stderr)
    assert "pretrain_model" not in jobs and jobs["unstack_pretraining"]
    # cpus_per_task (SLURM's --cpus-per-task): the threads below, which snakemake would cap at
    # this machine's two cores
    assert {(job.get("gpu"), job.get("mem_mb"), job.get("runtime"), job.get("cpus_per_task"))
            for job in jobs["pretrain_stacked"]} == {("1", "8000", "720", "3")}
    assert not [job for job in jobs["unstack_pretraining"] if "gpu" in job]
    # a core for the training and one for each seed's batch drawing (worker processes on a GPU)
    for device in ("cuda", "cpu"):
        config = write_config(workdir, {**stacked, "device": device})
        out = run_snakemake(workdir, "-n", "--cores", "8", "--configfile", config).stdout
        found = re.findall(r"rule pretrain_stacked:\n(?:    .*\n)*?    threads: (\d+)", out)  # (1 is not printed)
        assert found == (["3"] * 3 if device == "cuda" else []), found  # TINY's three pretrainings, seeds 0-1
        assert ("cpus_per_task=3" in out) == (device == "cuda")


def test_gpu_profile_puts_the_training_jobs_on_cuda_with_4_slots(workdir):
    profile = yaml.safe_load((REPO / "profiles/gpu/config.yaml").read_text())
    assert profile["config"] == ["device=cuda:any"] and profile["resources"] == ["gpu=4"]
    # TINY says device cpu: the profile's --config wins over the config file.
    tiny = write_config(workdir, TINY)
    result = run_snakemake(workdir, "-n", "--printshellcmds", "--profile", "profiles/gpu", "--configfile", tiny)
    out = result.stdout + result.stderr
    assert_gpu_on_training_jobs_only(planned_resources(out))
    assert "--device cuda:any " in out and "--device cpu" not in out
    # Another slot count on the command line.
    run_snakemake(workdir, "-n", "--profile", "profiles/gpu", "--resources", "gpu=8", "--configfile", tiny)


def test_gpu_slots_without_cuda_stop_with_two_lines(workdir):
    """A --config on the command line replaces the profile's device=cuda: snakemake stops."""
    tiny = write_config(workdir, TINY)
    result = run_snakemake(workdir, "-n", "--profile", "profiles/gpu", "--configfile", tiny,
                           "--config", "run_on=[tiny]", check=False)
    out = result.stdout + result.stderr
    assert result.returncode != 0
    lines = out[out.index("config: device"):].splitlines()
    assert lines[0].startswith("config: device = 'cpu' with --resources gpu=4"), lines[0]
    assert "add device=cuda" in lines[1]
    # With device=cuda repeated it plans.
    run_snakemake(workdir, "-n", "--profile", "profiles/gpu", "--configfile", tiny,
                  "--config", "run_on=[tiny]", "device=cuda")


def slurm_profile_with(workdir, keys, name="slurm-gpu"):
    """A copy of profiles/slurm with its commented GPU lines `keys` (e.g. gpu_model) uncommented."""
    text = (REPO / "profiles/slurm/config.yaml").read_text()
    pattern = re.compile(rf"^(\s+)# ({'|'.join(keys)}): (\S+).*$", flags=re.M)
    text, count = pattern.subn(r"\1\2: \3", text)
    assert count == 2 * len(keys), f"expected {keys} under pretrain_model and finetune_model"
    (workdir / "profiles" / name).mkdir()
    (workdir / "profiles" / name / "config.yaml").write_text(text)
    return f"profiles/{name}"


def test_slurm_profile_gpu_lines(workdir):
    """Uncommented, the profile's GPU lines give the training jobs a GPU model or a shard; with
    device cpu they stop snakemake (a card that the job would not use)."""
    model = slurm_profile_with(workdir, ["gpu_model"], "slurm-model")
    jobs = plan(workdir, "--profile", model, device="cuda")
    assert_gpu_on_training_jobs_only(jobs)
    assert {job.get("gpu_model") for rule in TRAINING for job in jobs[rule]} == {"a100"}
    shard = slurm_profile_with(workdir, ["gpu", "gres"], "slurm-shard")
    jobs = plan(workdir, "--profile", shard, device="cuda")
    assert {(job.get("gpu"), job.get("gres")) for rule in TRAINING for job in jobs[rule]} == {("0", "shard:1")}
    assert not [job for rule in set(jobs) - TRAINING for job in jobs[rule] if "gres" in job or "gpu" in job]
    for profile, key in ((model, "gpu_model='a100'"), (shard, "gres='shard:1'")):
        result = run_snakemake(workdir, "-n", "--profile", profile, "--configfile", write_config(workdir, TINY),
                               check=False)
        out = result.stdout + result.stderr
        assert result.returncode != 0 and f"config: device = 'cpu' but the profile gives pretrain_model {key}" in out
    # The profile as committed (GPU lines commented) asks for nothing on CPU.
    assert not [job for resources in plan(workdir, "--profile", "profiles/slurm").values() for job in resources
                if {"gpu", "gpu_model", "gres"} & set(job)]


# ---------------------------------------------------------------- real SLURM


def sinfo(column: str) -> list[str]:
    """One sinfo column (e.g. %G gres, %c cpus), a value per node line."""
    return subprocess.run(["sinfo", "-h", "-o", column], capture_output=True, text=True, timeout=20).stdout.split()


def gpu_gres_or_skip() -> str:
    """The SLURM node's gres, e.g. gpu:2,shard:8; skips the test without a cluster or a GPU gres."""
    reason = slurm_available()
    if reason:
        pytest.skip(reason)
    gres = " ".join(sinfo("%G")).replace("(null)", "")
    if "gpu" not in gres:
        pytest.skip(f"the SLURM node has no GPU gres ({gres or 'none'}); bash tests/slurm_fake_gpu.sh adds fake ones")
    return gres


def submit_without_cuda(workdir, target, profile, config, log) -> tuple[dict[str, list[str]], str]:
    """Submit `target` through `profile`: ({rule: SLURM job ids}, the output's tail). Without CUDA
    on the node the training job fails, which is accepted when its log (`log`, under
    logs/results/) says so."""
    result = run_snakemake(workdir, target, "--profile", profile, "--retries", "0", "--jobs", "2",
                           "--configfile", config, check=False, timeout=900)
    out = result.stdout + result.stderr
    if result.returncode != 0:
        text = (workdir / "logs/results" / log).read_text()
        assert "CUDA is not available" in text, text[-2000:]
    return slurm_job_ids(out), out[-3000:]


def alloc_tres(job_ids) -> dict[str, str]:
    """{job id: AllocTRES} of the jobs that have ended, polled until every job has ended with one."""
    def ended(row):
        return row["State"] not in ("PENDING", "RUNNING")
    rows = sacct_fields(job_ids, ["State", "AllocTRES"],
                        lambda rows: all(j in rows and ended(rows[j]) and rows[j]["AllocTRES"] for j in job_ids))
    return {job: row["AllocTRES"] for job, row in rows.items() if ended(row)}


@pytest.mark.slurm
@pytest.mark.slow
def test_slurm_profile_requests_a_gpu_per_training_job(workdir):
    """With device cuda, profiles/slurm submits each training job with --gpus=1 (sacct: gres/gpu=1)
    and the other jobs without; with the shard lines, one shard (gres/shard=1). Without CUDA on
    the node the training job then fails (runtime.choose_device), which is accepted: what is
    checked is what SLURM allocated."""
    gres = gpu_gres_or_skip()
    config = write_config(workdir, {**TINY, "seeds": [0], "device": "cuda"})
    target = "results/tiny/seed-full/seed0/pretrain.pt"
    profiles = [("profiles/slurm", "gres/gpu=1")]
    if "shard" in gres:
        profiles.append((slurm_profile_with(workdir, ["gpu", "gres"]), "gres/shard=1"))
    for profile, expected in profiles:
        jobs, out = submit_without_cuda(workdir, target, profile, config, "tiny/seed-full/seed0/pretrain.log")
        assert jobs.get("pretrain_model"), out
        tres = alloc_tres([i for ids in jobs.values() for i in ids])
        for job in jobs["pretrain_model"]:
            assert expected in tres[job].split(","), tres
            assert "gres/" not in tres[job].replace(expected, ""), tres
        for job in jobs.get("prepare_data", []):
            assert "gres/" not in tres[job], tres


@pytest.mark.slurm
@pytest.mark.slow
def test_slurm_gives_a_stacked_gpu_job_a_core_per_seed(workdir):
    """pretrain_seeds_per_job 2 on cuda: profiles/slurm submits the group with one GPU and
    1 + 2 cpus (one for training, one for each seed's batch-drawing worker), and SLURM allocates
    them (sacct AllocTRES: cpu=3, gres/gpu=1), although snakemake caps the job's threads at the
    cores of the submitting machine (two here): the rule's cpus_per_task asks for them.
    Needs a node with GPU gres and >= 3 cpus: on the 2-core test machine,
    `SLURM_LOCAL_CPUS=4 bash ../shared/slurm-local/start-slurm.sh` (the node then stays `inval`),
    `echo SlurmdParameters=config_overrides >> /etc/slurm/slurm.conf`, `bash tests/slurm_fake_gpu.sh`.
    Without CUDA the job then fails, saying so; what is checked is what SLURM allocated."""
    gpu_gres_or_skip()
    cpus = sinfo("%c")
    if not cpus or max(int(c.rstrip("+")) for c in cpus) < 3:
        pytest.skip(f"the SLURM node has {cpus} cpus, fewer than the 3 the job asks (see the docstring)")
    config = write_config(workdir, {**TINY, "device": "cuda", "seeds": [0, 1], "pretrain_seeds_per_job": 2,
                                    "settings": {**TINY["settings"], "pretrain": {"epochs": 1, "batching": "padded"}}})
    jobs, out = submit_without_cuda(workdir, "results/tiny/seed-full/seed1/pretrain.pt", "profiles/slurm", config,
                                    "tiny/seed-full/stacked-seeds0-1/pretrain.log")
    assert len(jobs.get("pretrain_stacked", [])) == 1, out
    tres = alloc_tres(jobs["pretrain_stacked"])[jobs["pretrain_stacked"][0]].split(",")
    assert "cpu=3" in tres and "gres/gpu=1" in tres, tres


def slurm_profile_adding(workdir, rule, line, name):
    """A copy of profiles/slurm with `line` (e.g. gres: "tmp:1") added to the set-resources of `rule`."""
    text = (REPO / "profiles/slurm/config.yaml").read_text()
    text, count = re.subn(rf"^(  {rule}:.*\n)", rf"\g<1>    {line}\n", text, flags=re.M)
    assert count == 1, rule
    (workdir / "profiles" / name).mkdir()
    (workdir / "profiles" / name / "config.yaml").write_text(text)
    return f"profiles/{name}"


def test_the_checks_of_the_profiles_gpu_lines_follow_what_asks_for_a_gpu(workdir):
    """Hand mutants of common.smk's check_gpu_requests survived: with device auto the GPU lines
    plan (auto takes a GPU where there is one); a gres of no GPU (a node's local disk) asks for no
    card and plans on cpu; with seeds stacked, the GPU line of pretrain_stacked, the training rule
    then, stops a cpu run as pretrain_model's does."""
    model = slurm_profile_with(workdir, ["gpu_model"], "slurm-model")
    assert {job.get("gpu_model") for job in plan(workdir, "--profile", model, device="auto")["finetune_model"]} == {
        "a100"}
    tmp = slurm_profile_adding(workdir, "pretrain_model", 'gres: "tmp:1"', "slurm-tmp")
    assert {job.get("gres") for job in plan(workdir, "--profile", tmp, device="cpu")["pretrain_model"]} == {"tmp:1"}
    stacked = {**TINY, "pretrain_seeds_per_job": 2,
               "settings": {**TINY["settings"], "pretrain": {"epochs": 1, "batching": "padded"}}}
    profile = slurm_profile_adding(workdir, "pretrain_stacked", 'gpu_model: "a100"', "slurm-stacked")
    result = run_snakemake(workdir, "-n", "--profile", profile, "--configfile", write_config(workdir, stacked),
                           check=False)
    out = result.stdout + result.stderr
    assert result.returncode != 0
    assert "config: device = 'cpu' but the profile gives pretrain_stacked gpu_model='a100'" in out, out[-2000:]
