localrules:
    report,
    aggregate_results,
    plot_accuracy_vs_rank,
    plot_params_vs_accuracy,
    plot_pretrain_losses,
    plot_finetune_validation,
    plot_head_spectra,
    plot_data_distributions,


rule report:
    """Target: every table and figure, rebuilt from finished runs (snakemake report), and any
    run file deleted from a finished job (as rule all)."""
    input:
        study_files(),


rule aggregate_results:
    input:
        script=code_file("scripts/aggregate.py"),
        code=REPORT_CODE,
        metrics=dataset_metrics,
        ranks=dataset_ranks,
    output:
        results_csv=report(
            "results/{dataset}/report/tables/results.csv",
            caption="../report/results_table.rst",
            category="{dataset}",
            subcategory="Tables",
        ),
        results_md="results/{dataset}/report/tables/results.md",
        results_tex="results/{dataset}/report/tables/results.tex",
        difference_csv=report(
            "results/{dataset}/report/tables/difference.csv",
            caption="../report/difference_table.rst",
            category="{dataset}",
            subcategory="Tables",
        ),
        difference_md="results/{dataset}/report/tables/difference.md",
        difference_tex="results/{dataset}/report/tables/difference.tex",
    log:
        "logs/results/{dataset}/report/aggregate_results.log",
    conda:
        "../../environment.yml"
    resources:
        mem_mb=4000,
        runtime=30,
    params:
        out_dir=subpath(output.results_csv, parent=True),
        settings=report_settings,
    shell:
        "python {input.script} --metrics {input.metrics} --out-dir {params.out_dir}"
        " --settings {params.settings} > {log} 2>&1"


rule plot_accuracy_vs_rank:
    input:
        script=code_file("scripts/plot_report.py"),
        code=REPORT_CODE,
        data=differences_and_metrics,
    output:
        png=report(
            "results/{dataset}/report/figures/accuracy_vs_rank.png",
            caption="../report/accuracy_vs_rank.rst",
            category="{dataset}",
            subcategory="Accuracy",
        ),
        pdf="results/{dataset}/report/figures/accuracy_vs_rank.pdf",
    log:
        "logs/results/{dataset}/report/figures/accuracy_vs_rank.log",
    conda:
        "../../environment.yml"
    params:
        settings=figure_settings,
    shell:
        "python {input.script} accuracy_vs_rank --inputs {input.data}"
        " --out {output.png} {output.pdf} --settings {params.settings} > {log} 2>&1"


rule plot_params_vs_accuracy:
    input:
        script=code_file("scripts/plot_report.py"),
        code=REPORT_CODE,
        data=dataset_metrics,
    output:
        png=report(
            "results/{dataset}/report/figures/params_vs_accuracy.png",
            caption="../report/params_vs_accuracy.rst",
            category="{dataset}",
            subcategory="Accuracy",
        ),
        pdf="results/{dataset}/report/figures/params_vs_accuracy.pdf",
    log:
        "logs/results/{dataset}/report/figures/params_vs_accuracy.log",
    conda:
        "../../environment.yml"
    params:
        settings=figure_settings,
    shell:
        "python {input.script} params_vs_accuracy --inputs {input.data}"
        " --out {output.png} {output.pdf} --settings {params.settings} > {log} 2>&1"


rule plot_pretrain_losses:
    input:
        script=code_file("scripts/plot_report.py"),
        code=REPORT_CODE,
        data=pretrain_histories,
    output:
        png=report(
            "results/{dataset}/report/figures/pretrain_losses.png",
            caption="../report/pretrain_losses.rst",
            category="{dataset}",
            subcategory="Training",
        ),
        pdf="results/{dataset}/report/figures/pretrain_losses.pdf",
    log:
        "logs/results/{dataset}/report/figures/pretrain_losses.log",
    conda:
        "../../environment.yml"
    shell:
        "python {input.script} pretrain_losses --inputs {input.data}"
        " --out {output.png} {output.pdf} > {log} 2>&1"


rule plot_finetune_validation:
    input:
        script=code_file("scripts/plot_report.py"),
        code=REPORT_CODE,
        data=finetune_histories,
    output:
        png=report(
            "results/{dataset}/report/figures/finetune_validation.png",
            caption="../report/finetune_validation.rst",
            category="{dataset}",
            subcategory="Training",
        ),
        pdf="results/{dataset}/report/figures/finetune_validation.pdf",
    log:
        "logs/results/{dataset}/report/figures/finetune_validation.log",
    conda:
        "../../environment.yml"
    params:
        settings=figure_settings,
    shell:
        "python {input.script} finetune_validation --inputs {input.data}"
        " --out {output.png} {output.pdf} --settings {params.settings} > {log} 2>&1"


rule plot_head_spectra:
    input:
        script=code_file("scripts/plot_report.py"),
        code=REPORT_CODE,
        data=pretrain_checkpoints,
    output:
        png=report(
            "results/{dataset}/report/figures/head_spectra.png",
            caption="../report/head_spectra.rst",
            category="{dataset}",
            subcategory="Training",
        ),
        pdf="results/{dataset}/report/figures/head_spectra.pdf",
    log:
        "logs/results/{dataset}/report/figures/head_spectra.log",
    conda:
        "../../environment.yml"
    shell:
        "python {input.script} head_spectra --inputs {input.data}"
        " --out {output.png} {output.pdf} > {log} 2>&1"


rule plot_data_distributions:
    input:
        unpack(prepared_data),
        script=code_file("scripts/plot_report.py"),
        code=REPORT_CODE,
    output:
        png=report(
            "results/{dataset}/report/figures/data_distributions.png",
            caption="../report/data_distributions.rst",
            category="{dataset}",
            subcategory="Data",
        ),
        pdf="results/{dataset}/report/figures/data_distributions.pdf",
    log:
        "logs/results/{dataset}/report/figures/data_distributions.log",
    conda:
        "../../environment.yml"
    shell:
        "python {input.script} data_distributions"
        " --inputs {input.sequences} {input.attributes}"
        " --out {output.png} {output.pdf} > {log} 2>&1"
