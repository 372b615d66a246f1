rule pretrain_model:
    input:
        unpack(prepared_data),
        script="scripts/pretrain.py",
    output:
        model="results/{dataset}/{variant}/seed{seed}/pretrain.pt",
        history="results/{dataset}/{variant}/seed{seed}/pretrain_history.csv",
        run="results/{dataset}/{variant}/seed{seed}/pretrain_run.json",
    log:
        "logs/results/{dataset}/{variant}/seed{seed}/pretrain.log",
    benchmark:
        "logs/benchmarks/results/{dataset}/{variant}/seed{seed}/pretrain.tsv"
    wildcard_constraints:
        variant=r"full|r\d+",
    conda:
        "../../environment.yml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=240,
        **gpu_resources(),  # gpu=1 with device cuda[:N] only (common.smk, GPU)
    params:
        data=subpath(input.sequences, parent=True),
        out_dir=subpath(output.model, parent=True),
        settings=pretrain_settings,
        device=config["device"],
    shell:
        "python {input.script} --data {params.data} --variant {wildcards.variant}"
        " --seed {wildcards.seed} --out-dir {params.out_dir} --settings {params.settings}"
        " --device {params.device} --threads {threads} > {log} 2>&1"


rule finetune_model:
    input:
        unpack(prepared_data),
        script="scripts/finetune.py",
        pretrained=pretrained_checkpoint,
    output:
        model="results/{dataset}/{variant}/seed{seed}/finetune.pt",
        history="results/{dataset}/{variant}/seed{seed}/finetune_history.csv",
        metrics="results/{dataset}/{variant}/seed{seed}/metrics.json",
        ranks="results/{dataset}/{variant}/seed{seed}/ranks.parquet",
    log:
        "logs/results/{dataset}/{variant}/seed{seed}/finetune.log",
    benchmark:
        "logs/benchmarks/results/{dataset}/{variant}/seed{seed}/finetune.tsv"
    conda:
        "../../environment.yml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=240,
        **gpu_resources(),  # gpu=1 with device cuda[:N] only (common.smk, GPU)
    params:
        data=subpath(input.sequences, parent=True),
        out_dir=subpath(output.metrics, parent=True),
        pretrained=pretrained_argument,
        settings=finetune_settings,
        device=config["device"],
    shell:
        "python {input.script} --data {params.data} --variant {wildcards.variant}"
        " --seed {wildcards.seed} --out-dir {params.out_dir} {params.pretrained}"
        " --settings {params.settings} --device {params.device} --threads {threads}"
        " > {log} 2>&1"


rule import_authors_checkpoint:
    """The S3Rec authors' released pretrained model as this project's pretrain.pt (variant
    `authors`): one import per data set, finetuned with every seed."""
    input:
        unpack(prepared_data),
        checkpoint=authors_checkpoint_file,
        script="scripts/import_checkpoint.py",
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
        "python {input.script} --authors {input.checkpoint} --data {params.data}"
        " --out {output.model} --variant authors > {log} 2>&1"


rule rank_popularity:
    input:
        unpack(prepared_data),
        script="scripts/popularity.py",
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
