"""RunConfig: strict value types (issue: truthy strings and rounded epochs ran silently) and presets."""
from __future__ import annotations

import re

import pytest

from s3rec.config import PRESETS, SEED_MAX, PretrainConfig, RunConfig, is_seed, parse_variant


@pytest.mark.parametrize("settings, message", [
    ({"finetune": {"negatives_exclude_heldout": "false"}}, "'finetune.negatives_exclude_heldout': expected true or false, got 'false' (str)"),
    ({"finetune": {"epochs": 1.5}}, "'finetune.epochs': expected an integer, got 1.5 (float)"),
    ({"finetune": {"epochs": "ten"}}, "'finetune.epochs': expected an integer, got 'ten' (str)"),
    ({"finetune": {"epochs": True}}, "'finetune.epochs': expected an integer, got True (bool)"),
    ({"pretrain": {"lr": "1e-3"}}, "'pretrain.lr': expected a number"),
    ({"model": {"rank": "16"}}, "'model.rank': expected an integer or null"),
    ({"model": {"low_rank_heads": "aap"}}, "'model.low_rank_heads': expected a list of strings"),
    ({"eval": {"protocols": [1]}}, "'eval.protocols': expected a list of strings"),
    ({"finetune": {"batching": "random"}}, "finetune.batching: expected padded or bucketed"),
    ({"finetune": {"early_stopping_metric": "NDCG@3"}}, "finetune.early_stopping_metric: expected one of"),
    ({"finetune": {"epochs": 0}}, "finetune.epochs: expected a positive integer, got 0"),
    ({"threads": 0}, "threads: expected an integer >= 1 or null (torch's default), got 0"),
    ({"seed": -1}, "seed: expected an integer in [0, 4294967295], got -1"),
    ({"seed": 2**32}, "seed: expected an integer in [0, 4294967295], got 4294967296"),
    ({"device": "gpu"}, "device: expected auto, cpu, cuda, cuda:N or cuda:any, got 'gpu'"),
    # the schema's minItems and uniqueItems: before, a run without any protocol wrote empty metrics
    ({"eval": {"protocols": []}}, "eval.protocols: expected full and/or sampled, each once, got []"),
    ({"eval": {"protocols": ["full", "full"]}}, "eval.protocols: expected full and/or sampled, each once"),
    ({"model": {"low_rank_heads": ["aap", "aap"]}}, "model.low_rank_heads: expected each head once"),
    # the authors' history at score 0 replaces the scores of items exclude_history picks out
    ({"eval": {"history_score": 0.0, "exclude_history": False}}, "eval.history_score 0.0: expected a finite number"),
    ({"eval": {"history_score": float("nan")}}, "eval.history_score nan: expected a finite number"),
    ({"eval": {"history_score": "0"}}, "'eval.history_score': expected a number or null"),
    # null only where the annotation takes it (`int | None`): unchecked, a null epochs failed in
    # check_ranges as a TypeError (None >= 1), a null device as a TypeError in the device pattern
    ({"finetune": {"epochs": None}}, "'finetune.epochs': expected an integer, got None (NoneType)"),
    ({"device": None}, "'device': expected a string, got None (NoneType)"),
    # a name the workflow's schema never checks: finetune.loss is a study axis there
    ({"finetune": {"loss": "mse"}}, "finetune.loss: expected bce or ce, got 'mse'"),
    ({"model": {"low_rank_heads": ["aap", "nsp"]}}, "model.low_rank_heads: unknown head 'nsp'"),
])
def test_a_value_of_the_wrong_type_is_an_error_naming_key_value_and_type(settings, message):
    with pytest.raises(ValueError) as error:
        RunConfig.from_dict(settings)
    assert message in str(error.value)


def test_numbers_keep_their_meaning():
    cfg = RunConfig.from_dict({"pretrain": {"lr": 1}, "finetune": {"negatives_exclude_heldout": False}})
    assert cfg.pretrain.lr == 1.0 and isinstance(cfg.pretrain.lr, float)
    assert cfg.finetune.negatives_exclude_heldout is False


def test_presets_fill_their_values_and_explicit_settings_win():
    seed = RunConfig.from_dict({}).pretrain
    assert (seed.batch_size, seed.epochs, seed.lr, seed.aap_weight, seed.mip_weight) == (256, 100, 1e-3, 1.0, 0.2)
    paper = RunConfig.from_dict({"pretrain": {"preset": "paper", "batch_size": 64}}).pretrain
    assert (paper.batch_size, paper.batching, paper.pair_loss, paper.aap_weight) == (64, "padded", "sigmoid_difference", 0.2)
    for values in PRESETS.values():  # every preset key is a real field
        RunConfig.from_dict({"pretrain": values})


def test_defaults_are_the_authors_finetuning():
    f = RunConfig().finetune
    assert (f.batching, f.early_stopping_metric, f.patience, f.batch_size, f.lr) == ("padded", "NDCG@20", 10, 256, 1e-3)


def test_variants():
    assert parse_variant("authors") == (True, None)
    assert parse_variant("r8") == (True, 8)
    with pytest.raises(ValueError, match="expected none, full, authors or r<rank>"):
        parse_variant("r0")


@pytest.mark.parametrize("variant", ["r016", "r0", "r", "R16", "r16a", "full16"])
def test_a_rank_the_config_refuses_is_no_rank_in_the_report_either(variant):
    """The config, the run labels and the report read ranks by one pattern (config.RANK_PATTERN):
    before, the report's sort key and `pretrained_here` took r016 as rank 16, a variant the config
    refuses and whose folder the workflow never makes."""
    from s3rec import labels
    with pytest.raises(ValueError, match="expected none, full, authors or r<rank>"):
        parse_variant(variant)
    assert labels.variant_rank(variant) is None
    assert not labels.pretrained_here(variant)
    assert labels.split_pretraining(f"seed-{variant}") == (None, f"seed-{variant}")
    assert labels.variant_rank("r16") == 16 and labels.pretrained_here("r16")


@pytest.mark.parametrize("settings, key", [
    ({"finetune": {"lr": float("inf")}}, "finetune.lr: expected a finite number > 0, got inf"),
    ({"pretrain": {"aap_weight": float("inf")}}, "pretrain.aap_weight: expected a finite number >= 0, got inf"),
    ({"pretrain": {"weight_decay": float("inf")}}, "pretrain.weight_decay: expected a finite number >= 0"),
])
def test_infinite_numbers_are_refused_naming_the_key(settings, key):
    """Before, an infinite weight passed and training diverged at epoch 1, blamed on the learning rate."""
    with pytest.raises(ValueError, match=re.escape(key)):
        RunConfig.from_dict(settings)


def test_a_settings_key_given_twice_is_refused():
    """Before, json kept the last: {"finetune": {"epochs": 1, "epochs": 1000}} ran past epoch 1."""
    import argparse

    from s3rec import cli
    with pytest.raises(argparse.ArgumentTypeError, match="key 'epochs' given twice in one object"):
        cli.json_object('{"finetune": {"epochs": 1, "epochs": 1000}}')
    with pytest.raises(argparse.ArgumentTypeError, match="key 'finetune' given twice"):
        cli.json_object('{"finetune": {"epochs": 1}, "finetune": {"lr": 0.1}}')
    assert cli.json_object('{"finetune": {"epochs": 1}, "pretrain": {"epochs": 1}}')["pretrain"] == {"epochs": 1}


def test_a_seed_is_an_integer_from_0_to_seed_max_and_never_a_bool():
    assert SEED_MAX == 4294967295
    assert is_seed(0) and is_seed(4294967295)
    assert not any(is_seed(value) for value in (-1, 4294967296, True, False, 1.0, "1", None))


@pytest.mark.parametrize("section", [5, "epochs"])
def test_a_section_that_is_no_mapping_is_an_error_naming_it(section):
    """Unchecked, 5 was a TypeError (set(5)) and "epochs" an unknown key 'c' (one of its letters)."""
    with pytest.raises(ValueError, match=re.escape(f"config key 'finetune': expected a mapping, got {section!r}")):
        RunConfig.from_dict({"finetune": section})


def test_lists_read_from_json_are_the_tuples_a_config_built_in_python_holds():
    """A list is never equal to the tuple: a config read from --settings compared unequal to the
    same config built in Python."""
    cfg = RunConfig.from_dict({"model": {"low_rank_heads": ["mip"]}, "eval": {"protocols": ["full"]}})
    assert cfg.model.low_rank_heads == ("mip",) and cfg.eval.protocols == ("full",)


@pytest.mark.parametrize("rank, ok", [(0, False), (1, True), (16, True), (17, False)])
def test_a_rank_runs_from_1_to_hidden_size(rank, ok):
    settings = {"model": {"hidden_size": 16, "rank": rank}}
    if ok:
        assert RunConfig.from_dict(settings).model.rank == rank
    else:
        with pytest.raises(ValueError, match=f"^model.rank must be in 1..16, got {rank}$"):
            RunConfig.from_dict(settings)


def test_the_seed_preset_is_the_defaults():
    """PretrainConfig's defaults are the seed preset's values: a preset drifting from them made a
    config read from {} another run than RunConfig()."""
    assert RunConfig.from_dict({}) == RunConfig()
    assert RunConfig.from_dict({"pretrain": {"preset": "seed"}}).pretrain == PretrainConfig()
