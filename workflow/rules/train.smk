# A pretraining job per seed (pretrain_model), or, with pretrain_seeds_per_job > 1, a job per
# group of seeds trained as one stacked model (pretrain_stacked, into
# results/{dataset}/{preset}-{variant}/stacked-seeds{group}/seed{seed}/), whose files
# unstack_pretraining copies to each seed's own folder: everything downstream reads the same paths.
if not stacked_pretraining():

    rule pretrain_model:
        input:
            unpack(prepared_data),
            script=code_file("scripts/pretrain.py"),
        output:
            model="results/{dataset}/{preset}-{variant}/seed{seed}/pretrain.pt",
            history="results/{dataset}/{preset}-{variant}/seed{seed}/pretrain_history.csv",
            run="results/{dataset}/{preset}-{variant}/seed{seed}/pretrain_run.json",
        log:
            "logs/results/{dataset}/{preset}-{variant}/seed{seed}/pretrain.log",
        benchmark:
            "logs/benchmarks/results/{dataset}/{preset}-{variant}/seed{seed}/pretrain.tsv"
        conda:
            "../../environment.yml"
        threads: 1
        resources:
            mem_mb=4000,
            # 100 epochs of Beauty on one CPU core: ~2 h (seed preset), ~3.5 h (paper, padded)
            runtime=480,
            **gpu_resources(),  # gpu=1 with a cuda device only (common.smk, GPU)
        params:
            data=subpath(input.sequences, parent=True),
            out_dir=subpath(output.model, parent=True),
            settings=pretrain_settings,
            device=config["device"],
            compile=config["compile"],
        shell:
            "python {input.script} --data {params.data} --variant {wildcards.variant}"
            " --seed {wildcards.seed} --out-dir {params.out_dir} --settings {params.settings}"
            " --device {params.device} --threads {threads} --compile {params.compile} > {log} 2>&1"

else:

    rule pretrain_stacked:
        input:
            unpack(prepared_data),
            script=code_file("scripts/pretrain.py"),
        output:
            done=touch("results/{dataset}/{preset}-{variant}/stacked-seeds{seeds}/pretrained"),
        log:
            "logs/results/{dataset}/{preset}-{variant}/stacked-seeds{seeds}/pretrain.log",
        benchmark:
            "logs/benchmarks/results/{dataset}/{preset}-{variant}/stacked-seeds{seeds}/pretrain.tsv"
        conda:
            "../../environment.yml"
        # on a GPU, one core more per seed: each seed's batches are drawn in a process of its own
        threads: stacked_cores
        resources:
            mem_mb=4000,
            runtime=lambda wildcards: 480 * len(wildcards.seeds.split("-")),  # on a CPU: seeds one after another
            **gpu_resources(),
            # SLURM's --cpus-per-task. Snakemake caps `threads` at --cores, the submitting
            # machine's cores (profiles/default: cores: all), even for a job that runs elsewhere;
            # the SLURM plugin takes this resource instead, uncapped, when it is set.
            **({"cpus_per_task": stacked_cores} if uses_cuda() else {}),
        params:
            data=subpath(input.sequences, parent=True),
            seeds=lambda wildcards: wildcards.seeds.replace("-", " "),
            out_dirs=lambda wildcards, output: " ".join(
                f"{Path(output.done).parent}/seed{seed}" for seed in wildcards.seeds.split("-")
            ),
            settings=pretrain_settings,
            device=config["device"],
            compile=config["compile"],
        shell:
            "python {input.script} --data {params.data} --variant {wildcards.variant}"
            " --seed {params.seeds} --out-dir {params.out_dirs} --settings {params.settings}"
            " --device {params.device} --threads {threads} --compile {params.compile} > {log} 2>&1"

    rule unstack_pretraining:
        """A seed's files from its group's pretrain_stacked job, copied to the seed's own folder."""
        input:
            done=lambda wildcards: (
                f"results/{wildcards.dataset}/{wildcards.preset}-{wildcards.variant}/"
                f"stacked-seeds{seed_group(wildcards.seed)}/pretrained"
            ),
        output:
            model="results/{dataset}/{preset}-{variant}/seed{seed}/pretrain.pt",
            history="results/{dataset}/{preset}-{variant}/seed{seed}/pretrain_history.csv",
            run="results/{dataset}/{preset}-{variant}/seed{seed}/pretrain_run.json",
        log:
            "logs/results/{dataset}/{preset}-{variant}/seed{seed}/unstack.log",
        localrule: True
        conda:
            "../../environment.yml"
        params:
            source=lambda wildcards, input: f"{Path(input.done).parent}/seed{wildcards.seed}",
        shell:
            "(cp {params.source}/pretrain_history.csv {output.history}"
            " && cp {params.source}/pretrain_run.json {output.run}"
            " && cp {params.source}/pretrain.pt {output.model}"
            " && echo \"$(date -Is) copied pretrain.pt, pretrain_history.csv and pretrain_run.json"
            " from {params.source}\") > {log} 2>&1"


rule finetune_model:
    # Before further pretrainings (priority 0) whenever both are ready: a finished pretraining's
    # finetunings run next, so a long study's results arrive per run, not all after the last
    # pretraining; the total work is the same.
    priority: 1
    input:
        unpack(prepared_data),
        script=code_file("scripts/finetune.py"),
        pretrained=pretrained_checkpoint,
    output:
        model="results/{dataset}/{pretraining}/seed{seed}/{loss}/finetune.pt",
        history="results/{dataset}/{pretraining}/seed{seed}/{loss}/finetune_history.csv",
        metrics="results/{dataset}/{pretraining}/seed{seed}/{loss}/metrics.json",
        ranks="results/{dataset}/{pretraining}/seed{seed}/{loss}/ranks.parquet",
    log:
        "logs/results/{dataset}/{pretraining}/seed{seed}/{loss}/finetune.log",
    benchmark:
        "logs/benchmarks/results/{dataset}/{pretraining}/seed{seed}/{loss}/finetune.tsv"
    conda:
        "../../environment.yml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=240,
        **gpu_resources(),  # gpu=1 with a cuda device only (common.smk, GPU)
    params:
        data=subpath(input.sequences, parent=True),
        out_dir=subpath(output.metrics, parent=True),
        pretrained=pretrained_argument,
        variant=finetune_variant,
        settings=finetune_settings,
        device=config["device"],
        compile=config["compile"],
    shell:
        "python {input.script} --data {params.data} --variant {params.variant}"
        " --seed {wildcards.seed} --out-dir {params.out_dir} {params.pretrained}"
        " --settings {params.settings} --device {params.device} --threads {threads}"
        " --compile {params.compile} > {log} 2>&1"


rule import_authors_checkpoint:
    """The S3Rec authors' released pretrained model as this project's pretrain.pt (variant
    `authors`): one import per data set, finetuned with every seed."""
    input:
        unpack(prepared_data),
        checkpoint=authors_checkpoint_file,
        script=code_file("scripts/import_checkpoint.py"),
    output:
        model="results/{dataset}/authors/pretrain.pt",
    log:
        "logs/results/{dataset}/authors/import_checkpoint.log",
    conda:
        "../../environment.yml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=30,
    params:
        data=subpath(input.sequences, parent=True),
    shell:
        "python {input.script} --authors {input.checkpoint:q} --data {params.data}"
        " --out {output.model} --variant authors > {log} 2>&1"


rule rank_popularity:
    input:
        unpack(prepared_data),
        script=code_file("scripts/popularity.py"),
    output:
        metrics="results/{dataset}/popularity/metrics.json",
        ranks="results/{dataset}/popularity/ranks.parquet",
    log:
        "logs/results/{dataset}/popularity/rank_popularity.log",
    benchmark:
        "logs/benchmarks/results/{dataset}/popularity/rank_popularity.tsv"
    conda:
        "../../environment.yml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=30,
    params:
        data=subpath(input.sequences, parent=True),
        out_dir=subpath(output.metrics, parent=True),
        settings=eval_settings,
    shell:
        "python {input.script} --data {params.data} --out-dir {params.out_dir}"
        " --settings {params.settings} --threads {threads} > {log} 2>&1"


# A GPU that the profile requests for a training rule while device is cpu: stop, naming it.
check_gpu_requests()
