# The tracked study folder (config `study_dir`, e.g. study/): each finished run's small files are
# copied there by these rules, and the study report is built from that folder alone, so that
# `python scripts/report_study.py <study_dir>/<dataset>` remakes it on a fresh clone without
# results/. Only targets with study_dir set (rule all, rule report) bring these rules in.
STUDY = study_root()  # a path prefix for the rules even when unset
#
# The export rules take their script as `ancient`: an edit to it (or a pull that changes it)
# leaves the copies already in the study folder current. Otherwise, on a clone without results/
# (after scripts/park_runs.py restore), snakemake would plan every run again only to copy it anew,
# the copies' inputs being results/ files that only training makes: 66 runs, ~74 CPU-hours for
# Beauty. To copy again on purpose, where results/ holds the runs: --forcerun export_finetuning
# (and the other export rules).


localrules:
    study,
    export_pretraining,
    export_finetuning,
    export_authors,
    export_popularity,
    study_plan,
    report_study,


rule study:
    """Target: the study report and every run the study folder still lacks (snakemake study),
    without results/'s report. On a fresh clone, after scripts/park_runs.py restore, the runs the
    folder holds are not run again."""
    input:
        study_folder_files,
    message:
        "the study folder of {}: its report and the runs it lacks".format(", ".join(config["run_on"]))


rule export_pretraining:
    """A pretraining's histories and its pretraining heads (heads.pt, for the spectra figure)."""
    priority: 2  # a few seconds: copied to the study folder as soon as the run ends, before other jobs
    input:
        script=ancient(code_file("scripts/export_study.py")),  # ancient: top of this file
        model="results/{dataset}/{preset}-{variant}/seed{seed}/pretrain.pt",
        history="results/{dataset}/{preset}-{variant}/seed{seed}/pretrain_history.csv",
        run="results/{dataset}/{preset}-{variant}/seed{seed}/pretrain_run.json",
    output:
        history=f"{STUDY}/{{dataset}}/{{preset}}-{{variant}}/seed{{seed}}/pretrain_history.csv",
        run=f"{STUDY}/{{dataset}}/{{preset}}-{{variant}}/seed{{seed}}/pretrain_run.json",
        heads=f"{STUDY}/{{dataset}}/{{preset}}-{{variant}}/seed{{seed}}/heads.pt",
    log:
        "logs/study/{dataset}/{preset}-{variant}/seed{seed}/export.log",
    conda:
        "../../environment.yml"
    params:
        out_dir=subpath(output.heads, parent=True),
    shell:
        "(python {input.script} copy {input.history} {input.run} --to {params.out_dir}"
        " && python {input.script} heads {input.model} --out {output.heads}) > {log} 2>&1"


rule export_finetuning:
    priority: 2  # a few seconds: copied to the study folder as soon as the run ends, before other jobs
    input:
        script=ancient(code_file("scripts/export_study.py")),  # ancient: top of this file
        history="results/{dataset}/{pretraining}/seed{seed}/{loss}/finetune_history.csv",
        metrics="results/{dataset}/{pretraining}/seed{seed}/{loss}/metrics.json",
        ranks="results/{dataset}/{pretraining}/seed{seed}/{loss}/ranks.parquet",
    output:
        history=f"{STUDY}/{{dataset}}/{{pretraining}}/seed{{seed}}/{{loss}}/finetune_history.csv",
        metrics=f"{STUDY}/{{dataset}}/{{pretraining}}/seed{{seed}}/{{loss}}/metrics.json",
        ranks=f"{STUDY}/{{dataset}}/{{pretraining}}/seed{{seed}}/{{loss}}/ranks.parquet",
    log:
        "logs/study/{dataset}/{pretraining}/seed{seed}/{loss}/export.log",
    conda:
        "../../environment.yml"
    params:
        out_dir=subpath(output.metrics, parent=True),
    shell:
        "python {input.script} copy {input.history} {input.metrics} {input.ranks}"
        " --to {params.out_dir} > {log} 2>&1"


rule export_authors:
    input:
        script=ancient(code_file("scripts/export_study.py")),  # ancient: top of this file
        model="results/{dataset}/authors/pretrain.pt",
    output:
        heads=f"{STUDY}/{{dataset}}/authors/heads.pt",
    log:
        "logs/study/{dataset}/authors/export.log",
    conda:
        "../../environment.yml"
    shell:
        "python {input.script} heads {input.model} --out {output.heads} > {log} 2>&1"


rule export_popularity:
    input:
        script=ancient(code_file("scripts/export_study.py")),  # ancient: top of this file
        metrics="results/{dataset}/popularity/metrics.json",
        ranks="results/{dataset}/popularity/ranks.parquet",
    output:
        metrics=f"{STUDY}/{{dataset}}/popularity/metrics.json",
        ranks=f"{STUDY}/{{dataset}}/popularity/ranks.parquet",
    log:
        "logs/study/{dataset}/popularity/export.log",
    conda:
        "../../environment.yml"
    params:
        out_dir=subpath(output.metrics, parent=True),
    shell:
        "python {input.script} copy {input.metrics} {input.ranks} --to {params.out_dir} > {log} 2>&1"


rule study_plan:
    """plan.json: the runs the study consists of (runs.md flags those still missing) and the
    report settings, so that scripts/report_study.py needs nothing but the folder."""
    input:
        script=code_file("scripts/export_study.py"),
    output:
        plan=f"{STUDY}/{{dataset}}/plan.json",
    log:
        "logs/study/{dataset}/plan.log",
    conda:
        "../../environment.yml"
    params:
        runs=study_plan,
        settings=report_settings,
    shell:
        "python {input.script} plan --dataset {wildcards.dataset} --runs {params.runs}"
        " --settings {params.settings} --out {output.plan} > {log} 2>&1"


rule report_study:
    """The study report (tables, figures, runs.md) from the study folder alone."""
    input:
        script=code_file("scripts/report_study.py"),
        code=REPORT_CODE + [code_file("scripts/aggregate.py"), code_file("scripts/plot_report.py")],
        study=study_inputs,
    output:
        study_report("{dataset}"),
    log:
        "logs/study/{dataset}/report_study.log",
    conda:
        "../../environment.yml"
    params:
        folder=lambda wildcards: f"{STUDY}/{wildcards.dataset}",
    shell:
        "python {input.script} {params.folder} > {log} 2>&1"
