localrules:
    download_raw_file,  # compute nodes often have no internet access


rule prepare_data:
    input:
        unpack(prepare_inputs),
        script=code_file("scripts/prepare_data.py"),
    output:
        sequences="resources/{dataset}/sequences.parquet",
        attributes="resources/{dataset}/item_attributes.parquet",
        stats="resources/{dataset}/stats.json",
    log:
        "logs/resources/{dataset}/prepare_data.log",
    benchmark:
        "logs/benchmarks/resources/{dataset}/prepare_data.tsv"
    conda:
        "../../environment.yml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=30,
    params:
        arguments=prepare_arguments,
        out_dir=subpath(output.stats, parent=True),
    shell:
        "python {input.script} {params.arguments} --out {params.out_dir} > {log} 2>&1"


rule download_raw_file:
    output:
        "resources/raw/{filename}",
    log:
        "logs/resources/raw/{filename}.log",
    wildcard_constraints:
        filename=r"[^/]+",
    conda:
        "../../environment.yml"
    resources:
        mem_mb=500,
        runtime=60,
    params:
        url=download_url,
        sha256=download_sha256,
    shell:
        "(curl --fail --location --retry 3 --output {output} {params.url}"
        " && if [ -n '{params.sha256}' ];"
        " then echo '{params.sha256}  {output}' | sha256sum --check -; fi) > {log} 2>&1"
