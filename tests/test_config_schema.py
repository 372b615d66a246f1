"""The workflow config schema: shipped configs validate, typos and wrong types fail naming the key."""
from __future__ import annotations

import copy
import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from snakemake.exceptions import WorkflowError
from snakemake.utils import update_config, validate

from conftest import snakemake_env
from s3rec.config import PRESETS, RunConfig
from s3rec.metrics import METRICS_FULL, METRICS_SAMPLED

REPO = Path(__file__).resolve().parents[1]
SCHEMA = str(REPO / "workflow/schemas/config.schema.yaml")


def load(name):
    return yaml.safe_load((REPO / "config" / name).read_text())


def check(config):
    """Validate a copy (validation fills in defaults) and return it."""
    config = copy.deepcopy(config)
    validate(config, SCHEMA)
    return config


def snakemake(*args):
    return subprocess.run([sys.executable, "-m", "snakemake", *args], cwd=REPO, env=snakemake_env(), capture_output=True,
                          text=True, timeout=300)


def dry_run(workdir, *args):
    """snakemake -n of the repository's workflow, its records (.snakemake/) in `workdir`: not in
    the clone, which may be read-only (a shared one) or hold a study of its own."""
    return snakemake("-n", "--nolock", "--directory", str(workdir), *args)


def test_default_config_validates_and_gets_defaults():
    config = check(load("config.yaml"))
    assert config["run_on"] == ["synthetic"]
    assert config["settings"]["finetune"]["weight_decay"] == 0.0  # filled in from the schema
    assert config["settings"]["pretrain"]["aap_weight"] is None  # left to the preset


@pytest.mark.parametrize("name", ["beauty", "lastfm"])
def test_a_data_set_config_validates_on_top_of_the_default(name):
    config = load("config.yaml")
    update_config(config, load(f"{name}.yaml"))  # what `--configfile config/<name>.yaml` does
    config = check(config)
    assert config["run_on"] == [name]
    assert config["datasets"][name]["source"] == "s3rec"
    assert config["settings"]["finetune"]["batch_size"] == 256  # the paper's, not config.yaml's 64


@pytest.mark.parametrize("path, key", [
    ((), "rankz"),
    (("settings",), "modle"),
    (("settings", "pretrain"), "epoch"),
    (("settings", "eval"), "negative_seed"),
    (("datasets", "synthetic"), "userz"),
    (("report",), "bootstrap"),
])
def test_unknown_key_is_rejected_naming_it(path, key):
    config = load("config.yaml")
    target = config
    for part in path:
        target = target.setdefault(part, {})
    target[key] = 1
    with pytest.raises(WorkflowError, match=f"'{key}' was unexpected"):
        check(config)


@pytest.mark.parametrize("path, value, message", [
    (("seeds",), ["zero"], "'zero' is not of type 'integer'"),
    (("settings", "finetune", "epochs"), "ten", "'ten' is not of type 'integer'"),
    (("finetune_losses",), ["mse"], "'mse' is not one of"),
    (("pretraining",), {"seed": "some"}, "is not valid under any of the given schemas"),
    (("study_dir",), "results", "should not be valid under"),
    (("study_dir",), "results/study", "should not be valid under"),
    (("study_dir",), "study/", "does not match"),  # study//beauty/...: snakemake warns, mismatches
    (("study_dir",), "study//beauty", "does not match"),
    (("study_dir",), "study/../elsewhere", "does not match"),
    (("device",), "gpu", "does not match"),
    (("datasets", "synthetic", "source"), "csv", "'csv' is not one of"),
])
def test_wrong_type_is_rejected(path, value, message):
    config = load("config.yaml")
    target = config
    for part in path[:-1]:
        target = target[part]
    target[path[-1]] = value
    with pytest.raises(WorkflowError) as error:
        check(config)
    assert message in "\n".join(map(str, error.value.args))


def test_the_per_user_metrics_of_the_schema_are_those_of_either_protocol():
    """report.metric and early stopping take a metric of one user's rank under both protocols."""
    schema = yaml.safe_load(Path(SCHEMA).read_text())
    properties = schema["properties"]["report"]["properties"], schema["$defs"]["finetune"]["properties"]
    assert properties[0]["metric"]["enum"] == properties[1]["early_stopping_metric"]["enum"] == list(METRICS_FULL)
    assert schema["$defs"]["metric"]["enum"] == list(METRICS_SAMPLED)


def test_s3rec_dataset_requires_its_files():
    config = load("config.yaml")
    config["datasets"]["mine"] = {"source": "s3rec", "sequences": "a.txt"}
    with pytest.raises(WorkflowError, match="'attributes' is a required property"):
        check(config)


def schema_properties(schema, defs, prefix=""):
    """(dotted key, subschema with its $ref resolved) of every named property, recursively."""
    for name, sub in schema.get("properties", {}).items():
        if "$ref" in sub:
            sub = {**defs[sub["$ref"].split("/")[-1]], **{k: v for k, v in sub.items() if k != "$ref"}}
        yield f"{prefix}{name}", sub
        yield from schema_properties(sub, defs, f"{prefix}{name}.")
    for branch in schema.get("allOf", []):
        yield from schema_properties(branch.get("then", {}), defs, prefix)
    if isinstance(schema.get("additionalProperties"), dict):  # named entries, e.g. datasets.<name>
        yield from schema_properties(defs["dataset"], defs, f"{prefix}<name>.")


def test_every_key_has_a_description_and_a_default():
    schema = yaml.safe_load(Path(SCHEMA).read_text())
    missing = []
    keys = list(schema_properties(schema, schema["$defs"]))
    assert len(keys) > 60
    for key, sub in keys:
        if key.endswith("source"):  # the discriminator: required, no default
            continue
        if "description" not in sub:
            missing.append(f"{key}: description")
        required = "Required." in sub.get("description", "")
        if "default" not in sub and not required:
            missing.append(f"{key}: default")
    assert not missing


PER_RUN = {"rank", "preset", "loss"}


def test_settings_mirror_runconfig():
    """Keys and defaults of `settings` are RunConfig's, except those set per run: model.rank (the
    variant), pretrain.preset (`pretraining`) and finetune.loss (`finetune_losses`)."""
    schema = yaml.safe_load(Path(SCHEMA).read_text())
    defaults = RunConfig().to_dict()
    for section in ("model", "pretrain", "finetune", "eval"):
        properties = schema["$defs"][section]["properties"]
        fields = {f.name for f in dataclasses.fields(type(getattr(RunConfig(), section)))} - PER_RUN
        assert set(properties) == fields, section
        for key, sub in properties.items():
            expected = defaults[section][key]
            if sub["default"] is None and section == "pretrain":
                assert any(key in preset for preset in PRESETS.values()), key  # null = the preset decides
            else:
                assert sub["default"] == (list(expected) if isinstance(expected, tuple) else expected), key


def error_lines(output):
    """The lines snakemake prints for a config error, from the WorkflowError on."""
    lines = output.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("WorkflowError"))
    return lines[start:]


@pytest.mark.parametrize("text, first_line", [
    ("settings:\n  finetune:\n    epoch: 3\n",
     "config: unknown key settings.finetune.epoch; did you mean 'epochs'?"),
    ("rankz: [8]\n", "config: unknown key rankz; did you mean 'ranks'?"),
    ("finetune_losses: [mse]\n", "config: finetune_losses[0] = 'mse': expected one of bce, ce"),
    ("settings:\n  finetune:\n    loss: ce\n",
     "config: unknown key settings.finetune.loss; it is a study axis now: set `finetune_losses`"),
    ("settings:\n  pretrain:\n    preset: paper\n",
     "config: unknown key settings.pretrain.preset; it is a study axis now: set `pretraining`"),
    ("seeds: [zero]\n", "config: seeds[0] = 'zero': expected a value of type integer"),
    ("datasets:\n  raw: {source: synthetic}\n", "config: datasets: the name 'raw' is not allowed"),
    # a data set's keys depend on its source: the message says which source it read
    ("datasets:\n  synthetic: {source: synthetic, sequences: a.txt}\n",
     "config: unknown key datasets.synthetic.sequences\n"
     "  allowed under datasets.synthetic with source: synthetic: attributes, items, seed, source, users"),
    # a value of several forms: the item that fits none is named, and the forms (it said only
    # "is not valid under any of the given schemas")
    ("pretraining: {paper: [full, R16]}\n",
     "config: pretraining.paper[1] = 'R16': expected `all` or a list of distinct variants, each full or r<rank>"),
    ("pretraining: {seed: al}\n", "config: pretraining.seed = 'al': expected `all` or a list of distinct variants"),
    ("settings:\n  finetune:\n    early_stopping_metric: AUC\n",
     "config: settings.finetune.early_stopping_metric = 'AUC': expected one of HR@1"),
    # the values offered are the values taken: it offered AUC, then refused it ("not allowed here")
    ("report:\n  metric: NDCG@11\n",
     "config: report.metric = 'NDCG@11': expected one of HR@1, HR@5, HR@10, HR@20, NDCG@5, NDCG@10, NDCG@20, MRR\n"),
    ("report:\n  metric: AUC\n", "config: report.metric = 'AUC': expected one of HR@1, HR@5, HR@10, HR@20, NDCG@5"),
    # what RunConfig refuses beyond the schema: before, the first training job said it, after the data
    ("ranks: [4]\nsettings:\n  model:\n    hidden_size: 6\n    num_heads: 4\n",
     "config: settings.model.hidden_size 6 must be divisible by model.num_heads 4"),
    ("settings:\n  finetune:\n    early_stopping_protocol: sampled\n  eval:\n    protocols: [full]\n",
     "config: settings.finetune.early_stopping_protocol: sampled needs 'sampled' in eval.protocols"),
    # what the tables' check refuses beyond the schema: before, aggregate failed after every run
    ("report:\n  metrics: [AUC]\nsettings:\n  eval:\n    protocols: [full]\n",
     "config: report: metrics: expected a metric of the full ranking besides AUC"),
    # hand mutants of validate.smk's config_error_message left these lines unchecked: the key of a
    # missing one, the top level's name, a long value cut, the form's description said once, the
    # --config hint for a negative number and not for a top-level value, a schema message kept whole
    ("run_on: [mine]\ndatasets:\n  mine: {source: s3rec, sequences: a.txt}\n",
     "config: datasets.mine: 'attributes' is a required property\n  (config/README.md explains every key)"),
    ("rankz: [8]\n", "config: unknown key rankz; did you mean 'ranks'?\n  allowed under (top level): compile, datasets,"),
    (f"finetune_losses: [{'x' * 100}]\n", f"config: finetune_losses[0] = '{'x' * 76}...: expected one of bce, ce\n"),
    ("pretraining: {paper: [full, R16]}\n", "config: pretraining.paper[1] = 'R16': expected `all` or a list of distinct "
     "variants, each full or r<rank> (e.g. [full, r16])\n  (config/README.md explains every key)"),
    ("seeds: ['-1']\n", "config: seeds[0] = '-1': expected a value of type integer (from --config? it reads list"),
    ("pretrain_seeds_per_job: '2'\n", "config: pretrain_seeds_per_job = '2': expected a value of type integer\n"
     "  pretrain_seeds_per_job: Seeds of one variant pretrained together in one job, as one stacked model "
     "(s3rec/stacked.py; rule pretrain_stacked, then unstack_pretraining copies each seed...  (config/README.md"),
    ("datasets:\n  raw: {source: synthetic}\n", "config: datasets: the name 'raw' is not allowed: a name has letters, "
     "digits, _ and - only, and is not `raw` (resources/raw/ holds downloads)\n"),
    ("study_dir: study/\n", "config: study_dir = 'study/': 'study/' does not match "
     "'^[A-Za-z0-9_][A-Za-z0-9_.-]*(/[A-Za-z0-9_][A-Za-z0-9_.-]*)*$'\n"),
])
def test_snakemake_rejects_a_bad_key_with_a_short_message(tmp_path, text, first_line):
    """Before any job, a few short lines naming the key, its value and what was expected; not the
    schema and the whole config (snakemake's own message: hundreds of lines)."""
    bad = tmp_path / "bad.yaml"
    bad.write_text(text)
    result = dry_run(tmp_path, "--configfile", str(bad))
    assert result.returncode != 0
    lines = error_lines(result.stderr + result.stdout)
    assert "\n".join(lines[1:]).startswith(first_line), lines
    assert len(lines) <= 4 and all(len(line) <= 300 for line in lines), lines
    assert "config/README.md" in lines[2]


def test_a_list_of_numbers_from_the_command_line_says_why_it_is_refused(tmp_path):
    """snakemake's --config reads list items as strings: `seeds=[0, 1]` is ['0', '1']."""
    result = dry_run(tmp_path, "--config", "seeds=[0, 1]")
    assert result.returncode != 0
    lines = error_lines(result.stderr + result.stdout)
    assert lines[1] == ("config: seeds[0] = '0': expected a value of type integer (from --config? it reads list "
                        "and mapping items as strings: use a --configfile)"), lines


@pytest.mark.parametrize("extra", [None, "stacked"])
def test_lint_is_clean(tmp_path, extra):
    """Also with seeds stacked into one pretraining job: its rules exist only then."""
    options = []
    if extra == "stacked":
        stacked = tmp_path / "stacked.yaml"
        stacked.write_text("pretrain_seeds_per_job: 2\nsettings: {pretrain: {batching: padded}}\n")
        options = ["--configfile", "config/config.yaml", str(stacked)]
    result = snakemake("--lint", "--nolock", *options)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Congratulations" in result.stdout + result.stderr


def _schema_ranges():
    """(section, field, keyword, bound) for every numeric bound the schema puts on a RunConfig setting."""
    schema = yaml.safe_load(Path(SCHEMA).read_text())
    for section in ("model", "pretrain", "finetune", "eval"):
        for name, spec in schema["$defs"][section]["properties"].items():
            for keyword in ("minimum", "exclusiveMinimum", "maximum", "exclusiveMaximum"):
                if keyword in spec:
                    yield section, name, keyword, spec[keyword]


@pytest.mark.parametrize("section, name, keyword, bound", list(_schema_ranges()),
                         ids=lambda value: str(value))
def test_run_config_refuses_what_the_schema_refuses(section, name, keyword, bound):
    """Runs started from the scripts with --settings never meet the schema: RunConfig itself
    refuses a value just outside each of the schema's bounds, naming the key, and takes the bound."""
    kind = {f.name: f.type for f in dataclasses.fields(type(getattr(RunConfig(), section)))}[name]
    step = 1 if kind.startswith("int") else 0.5
    outside = {"minimum": bound - step, "exclusiveMinimum": bound, "maximum": bound + step,
               "exclusiveMaximum": bound}[keyword]
    with pytest.raises(ValueError, match=rf"^{section}\.{name}: expected"):
        RunConfig.from_dict({section: {name: outside}})
    if keyword in ("minimum", "maximum"):
        companion = {"num_heads": 1} if name == "hidden_size" else {}  # d = 1 takes one head
        RunConfig.from_dict({section: {name: bound, **companion}})


def test_run_config_takes_the_devices_the_schema_takes():
    from s3rec.config import DEVICE_PATTERN
    schema = yaml.safe_load(Path(SCHEMA).read_text())
    assert schema["properties"]["device"]["pattern"] == DEVICE_PATTERN.pattern


def test_a_preset_lists_its_variants_in_the_run_label_grammar():
    """The schema's variant of a preset is the one the run labels read (config.RANK_PATTERN): it
    took r016, which then failed later, in common.smk, as 'neither full nor a rank of ranks'."""
    from s3rec.config import PRETRAINED_VARIANT_PATTERN
    schema = yaml.safe_load(Path(SCHEMA).read_text())
    listed = schema["properties"]["pretraining"]["additionalProperties"]["oneOf"][1]["items"]["pattern"]
    assert listed == f"^({PRETRAINED_VARIANT_PATTERN})$"
    config = load("config.yaml")
    config["pretraining"] = {"paper": ["full", "r016"]}
    with pytest.raises(WorkflowError, match="r016"):
        check(config)


@pytest.mark.parametrize("folder", ["study", "studies/beauty-2026", "my_study.v2"])
def test_study_dir_takes_a_plain_relative_folder(folder):
    config = load("config.yaml")
    config["study_dir"] = folder
    assert check(config)["study_dir"] == folder


def test_every_seed_of_the_schema_stops_at_seed_max():
    """Seeds above 2^32 - 1 trained, then broke the tables' int64 seed column."""
    from s3rec.config import SEED_MAX
    schema = yaml.safe_load(Path(SCHEMA).read_text())
    dataset = schema["$defs"]["dataset"]["allOf"][0]["then"]["properties"]
    seeds = [schema["properties"]["seeds"]["items"], schema["properties"]["report"]["properties"]["bootstrap_seed"],
             schema["$defs"]["eval"]["properties"]["negatives_seed"], dataset["seed"]]
    assert [(seed["minimum"], seed["maximum"]) for seed in seeds] == [(0, SEED_MAX)] * 4


def _schema_list_rules():
    """(section, field, rule, value breaking it) for every list setting the schema constrains."""
    schema = yaml.safe_load(Path(SCHEMA).read_text())
    for section in ("model", "pretrain", "finetune", "eval"):
        for name, spec in schema["$defs"][section]["properties"].items():
            if spec.get("type") != "array":
                continue
            if spec.get("uniqueItems"):
                yield section, name, "uniqueItems", [spec["items"]["enum"][0]] * 2
            if spec.get("minItems"):
                yield section, name, "minItems", []


@pytest.mark.parametrize("section, name, rule, value", list(_schema_list_rules()), ids=str)
def test_run_config_refuses_the_lists_the_schema_refuses(section, name, rule, value):
    with pytest.raises(ValueError, match=rf"^{section}\.{name}: expected"):
        RunConfig.from_dict({section: {name: value}})


def test_the_report_checks_refuse_the_repeats_the_schema_refuses():
    """aggregate's --settings and plan.json's report.tables are checked by report_inputs, not
    the schema; a repeated metric passed there and showed its column once."""
    from s3rec.report_inputs import check_report_settings
    report = yaml.safe_load(Path(SCHEMA).read_text())["properties"]["report"]["properties"]
    unique = [name for name, spec in report.items() if spec.get("uniqueItems")]
    assert unique == ["metrics"]
    for name in unique:
        value = report[name]["default"][:1] * 2
        with pytest.raises(ValueError, match=rf"^here: {name}: expected a non-empty list without repeats"):
            check_report_settings({name: value}, "here")
        with pytest.raises(WorkflowError):
            check({**load("config.yaml"), "report": {name: value}})


def _schema_enums():
    """(section, field, allowed values) of every setting the schema restricts to named values."""
    schema = yaml.safe_load(Path(SCHEMA).read_text())
    for section in ("model", "pretrain", "finetune", "eval"):
        for name, spec in schema["$defs"][section]["properties"].items():
            if "$ref" in spec:
                spec = {**schema["$defs"][spec["$ref"].split("/")[-1]], **spec}
            if "enum" in spec:
                yield section, name, spec["enum"]


@pytest.mark.parametrize("section, name, allowed", list(_schema_enums()), ids=str)
def test_run_config_takes_exactly_the_names_the_schema_takes(section, name, allowed):
    with pytest.raises(ValueError, match=rf"^{section}\.{name}: "):
        RunConfig.from_dict({section: {name: "bogus"}})
    for value in (v for v in allowed if v is not None):  # null: the preset decides (dropped before RunConfig)
        extra = {"eval": {"protocols": ["full", "sampled"]}} if value == "sampled" else {}
        RunConfig.from_dict({**extra, section: {**extra.get(section, {}), name: value}})


# ---------------------------------------------------------------- common.smk's checks at their bounds
# Hand mutants of workflow/rules/common.smk that moved a bound of check_config by one (items of a
# synthetic data set, a rank against hidden_size), dropped the rank check, refused too few items
# also without the sampled protocol, or took a folder for the authors' checkpoint left every
# other test green.


def plan(tmp_path, config):
    """snakemake -n of the repository's workflow with `config` over config/config.yaml."""
    path = tmp_path / "probe.yaml"
    path.write_text(yaml.safe_dump(config))
    result = dry_run(tmp_path, "--configfile", str(path))
    return result.returncode, result.stdout + result.stderr


def test_a_synthetic_data_set_needs_items_for_the_sampled_negatives_and_no_more(tmp_path):
    """99 negatives (the default) beside a user's 30 items (the synthetic sequences' longest)."""
    assert plan(tmp_path, {"datasets": {"synthetic": {"items": 129}}})[0] == 0
    code, out = plan(tmp_path, {"datasets": {"synthetic": {"items": 128}}})
    assert code != 0 and "datasets.synthetic.items: 128 items leave a user of 30 items" in out
    assert "fewer than the 99 negatives of the sampled protocol" in out and "expected items >= 129," in out
    # without the sampled protocol, no negatives are drawn: few items are fine
    code, out = plan(tmp_path, {"datasets": {"synthetic": {"items": 50}}, "settings": {"eval": {"protocols": ["full"]}}})
    assert code == 0, out[-2000:]


def test_a_rank_may_be_as_large_as_hidden_size_and_no_larger(tmp_path):
    """config/README.md and the schema: each rank must be <= settings.model.hidden_size."""
    model = {"model": {"hidden_size": 16}}
    assert plan(tmp_path, {"ranks": [4, 16], "settings": model})[0] == 0
    code, out = plan(tmp_path, {"ranks": [4, 17], "settings": model})
    assert code != 0 and "ranks: rank 17 exceeds settings.model.hidden_size = 16" in out, out[-2000:]


def test_an_authors_checkpoint_that_is_a_folder_is_refused(tmp_path):
    for name in ("Mine.txt", "Mine_item2attributes.json"):
        (tmp_path / name).write_text("placeholder")  # only their existence is checked when planning
    (tmp_path / "Mine-epochs-150.pt").mkdir()
    spec = {"source": "s3rec", "sequences": str(tmp_path / "Mine.txt"),
            "attributes": str(tmp_path / "Mine_item2attributes.json"), "authors_checkpoint": str(tmp_path / "Mine-epochs-150.pt")}
    code, out = plan(tmp_path, {"run_on": ["mine"], "datasets": {"mine": spec}})
    assert code != 0 and f"datasets.mine.authors_checkpoint: {str(tmp_path / 'Mine-epochs-150.pt')!r}" in out, out[-2000:]


def test_a_target_of_an_undefined_data_set_names_the_defined_ones(tmp_path):
    """A target named by hand for a data set the config does not define (not a KeyError)."""
    result = dry_run(tmp_path, "--", "resources/nope/stats.json")
    assert result.returncode != 0
    assert ("data set 'nope' is not defined under `datasets` in the config (defined: synthetic)"
            in result.stdout + result.stderr)


@pytest.mark.parametrize("source, fix", [
    ("s3rec", "(the authors' <Name>_sample.txt); set it, or use eval.negatives: seeded"),
    ("amazon", "(the authors' <Name>_sample.txt); source amazon has none: leave it out of run_on"),
])
def test_eval_negatives_file_without_a_file_says_the_fix_of_the_source(tmp_path, source, fix):
    """An s3rec data set can be given the authors' file; an amazon one has none to give."""
    if source == "s3rec":
        for name in ("Mine.txt", "Mine_item2attributes.json"):
            (tmp_path / name).write_text("placeholder")  # only their existence is checked when planning
        spec = {"source": "s3rec", "sequences": str(tmp_path / "Mine.txt"),
                "attributes": str(tmp_path / "Mine_item2attributes.json")}
    else:
        spec = {"source": "amazon", "reviews": "resources/raw/reviews_Mine_5.json.gz",
                "meta": "resources/raw/meta_Mine.json.gz",
                "download": {"reviews": {"url": "https://example.org/r"}, "meta": {"url": "https://example.org/m"}}}
    code, out = plan(tmp_path, {"run_on": ["mine"], "datasets": {"mine": spec}, "settings": {"eval": {"negatives": "file"}}})
    assert code != 0 and f"settings.eval.negatives is file, but datasets.mine has no `negatives` file {fix}" in out


def test_a_bad_pretraining_setting_with_stacked_seeds_is_said_as_without(tmp_path):
    """The stacking check leaves a setting RunConfig refuses to run_settings_problem's one line
    (not a ValueError's traceback from the check of the batching)."""
    config = {"pretrain_seeds_per_job": 2, "settings": {"pretrain": {"batching": "padded", "aap_weight": float("inf")}}}
    code, out = plan(tmp_path, config)
    assert code != 0 and "config: settings.pretrain.aap_weight: expected a finite number >= 0, got inf" in out
    assert "Traceback" not in out, out[-2000:]
