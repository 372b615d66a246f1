"""benchmarks/authors_ranking.py: the authors' full-sort ranking re-implemented, on hand cases and
on one model saved in both layouts."""
from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch

from s3rec import files
from s3rec.authors import check_shapes, convert_state_dict, model_settings
from s3rec.data import leave_one_out, load_dataset, write_prepared
from s3rec.encoder import Encoder
from s3rec.config import ModelConfig
from s3rec.evaluation import full_ranking_ranks
from s3rec.finetuning import score_function
from s3rec.metrics import metrics_from_ranks
from s3rec.synthetic import SyntheticSpec, generate
from scripts_import import load_script
from test_authors import D, authors_state_dict

authors_ranking = load_script("authors_ranking", folder="benchmarks")


# --- s3rec/authors.py: their state dict read -----------------------------------------------------


@pytest.mark.parametrize("extra", ["item_encoder.layer.0.attention.extra.weight",  # a module of no S3RecModel
                                   "item_encoder.layer.0.attention.dense.weight_g"])  # not .weight itself
def test_a_key_of_another_model_is_named_not_dropped(extra):
    theirs = {**authors_state_dict(5, 3), extra: torch.zeros(D)}
    with pytest.raises(ValueError, match=f"unexpected key '{re.escape(extra)}': not part of the authors' S3RecModel"):
        convert_state_dict(theirs)


def test_a_layer_without_its_value_projection_is_named():
    theirs = authors_state_dict(5, 3)
    del theirs["item_encoder.layer.1.attention.value.bias"]
    with pytest.raises(ValueError, match=r"layer 1: attention bias lacks \['value'\]"):
        convert_state_dict(theirs)


def test_model_settings_fall_back_to_the_authors_defaults():
    assert model_settings(authors_state_dict(5, 3)) == {"hidden_size": D, "num_layers": 2}
    assert model_settings({}) == {"hidden_size": 64, "num_layers": 2}
    one_layer = {k: v for k, v in authors_state_dict(5, 3).items() if ".layer.1." not in k}
    assert model_settings(one_layer) == {"hidden_size": D, "num_layers": 1}


@pytest.mark.parametrize("change, message", [
    (lambda s: s.pop("attribute_embeddings.weight"), "no 'attribute_embeddings.weight': not an S3RecModel state dict"),
    (lambda s: s.update({"position_embeddings.weight": torch.zeros(40, D)}),
     "position_embeddings.weight has 40 rows, the prepared data set needs 50 = model.max_len"),
])
def test_check_shapes_names_a_table_missing_or_of_other_rows(change, message):
    theirs = authors_state_dict(5, 3)
    assert check_shapes(theirs, 5, 3, 50) == D  # the hidden size d
    change(theirs)
    with pytest.raises(ValueError, match=re.escape(message)):
        check_shapes(theirs, 5, 3, 50)


def scores_row(**items: float) -> np.ndarray:
    """25 columns (padding 0, items 1..23, [MASK] 24): -1 but where given (i<n>=score); padding 0."""
    row = np.full((1, 25), -1.0, dtype=np.float32)
    row[0, 0] = 0.0
    for name, value in items.items():
        row[0, int(name[1:])] = value
    return row


def test_history_items_are_zeroed_not_removed():
    above = {f"i{n}": 0.6 + 0.1 * (n - 10) for n in range(10, 16)}  # six items above the target
    row = scores_row(i3=2.0, i7=1.0, i5=0.5, **above)
    # target 5 after history [3, 7]: 3 and 7 drop to 0, below it; the six items stay above it
    assert authors_ranking.authors_positions(row, [np.array([3, 7])], np.array([5])).tolist() == [6]
    # target 3 is itself in the history: its 2.0 becomes 0, behind the six and item 5 (0.5), tied
    # with item 7 and the padding row; this project ranks it by its own score instead (rank 1)
    position = authors_ranking.authors_positions(row, [np.array([3, 7])], np.array([3]))[0]
    assert position in (7, 8, 9)
    ours = full_ranking_ranks(lambda h: torch.from_numpy(row[:, :24]), [np.array([3, 7])], np.array([3]), 23)
    assert ours.tolist() == [1]


def test_a_target_below_zero_loses_to_the_padding_and_mask_rows():
    # 18 items at 0.1 and the padding row (0) and [MASK] (0.05) above a target at -0.5: 20 rows
    row = scores_row(i5=-0.5, i24=0.05, **{f"i{n}": 0.1 for n in range(6, 24)})
    assert authors_ranking.authors_positions(row, [np.array([1])], np.array([5])).tolist() == [authors_ranking.TOP]
    # this project ranks among items 1..M only: 18 items above it, history item 1 left out
    ours = full_ranking_ranks(lambda h: torch.from_numpy(row[:, :24]), [np.array([1])], np.array([5]), 23)
    assert ours.tolist() == [19]


def test_a_target_twentieth_is_in_their_top_20_and_twenty_first_is_not():
    row = scores_row(i5=0.5, **{f"i{n}": 1.0 + n / 100 for n in range(6, 25)})  # 19 rows above, [MASK] one of them
    assert authors_ranking.authors_positions(row, [np.array([1])], np.array([5])).tolist() == [19]
    row[0, 2] = 0.6  # a twentieth row above it
    assert authors_ranking.authors_positions(row, [np.array([1])], np.array([5])).tolist() == [authors_ranking.TOP]


def test_authors_metrics_of_an_authors_model_of_one_layer_and_ten_positions(tmp_path, capsys, torch_threads):
    """257 users (two batches of scores, the second of one user), histories longer than the
    model's 10 positions (their last 10 read): each split's `authors` metrics are their top-20
    positions (ranks 1..20, else beyond) through this project's metric formulas, `ours` those of
    the project's evaluation, with the counts of targets below 0 and among the earlier items."""
    data = tmp_path / "tiny"
    write_prepared(generate(SyntheticSpec(users=257, items=30, attributes=7, seed=5, max_length=15)), data)
    dataset = load_dataset(data)
    theirs = {k: v for k, v in authors_state_dict(dataset.num_items, dataset.num_attributes, seed=2).items()
              if ".layer.1." not in k}
    theirs["position_embeddings.weight"] = theirs["position_embeddings.weight"][:10]
    torch.save(theirs, tmp_path / "Finetune_full-Tiny-0.pt")
    torch.set_num_threads(2)
    assert authors_ranking.main(["--data", str(data), str(tmp_path / "Finetune_full-Tiny-0.pt")]) == 0
    assert torch.get_num_threads() == 1  # --threads 1 by default
    report = json.loads(capsys.readouterr().out)[str(tmp_path / "Finetune_full-Tiny-0.pt")]
    assert list(report) == ["valid", "test"]

    encoder = Encoder(ModelConfig(hidden_size=D, num_layers=1, max_len=10), dataset.num_items)
    encoder.load_state_dict({k.removeprefix("encoder."): v for k, v in convert_state_dict(theirs).items()
                             if k.startswith("encoder.")})
    encoder.eval()
    split = leave_one_out(dataset.sequences)
    assert max(len(h) for h in split.train) > 10
    for name in ("valid", "test"):
        histories, targets = authors_ranking.split_inputs(split, name)
        [(start, scores)] = authors_ranking.all_scores(encoder, histories, batch_size=1000)  # one batch
        assert start == 0 and scores.shape == (257, dataset.num_items + 2)  # [MASK]'s row too
        ours = score_function(encoder, torch.device("cpu"))(histories).numpy()
        np.testing.assert_allclose(scores[:, :dataset.num_items + 1], ours, rtol=1e-5, atol=1e-5)
        positions = authors_ranking.authors_positions(scores, histories, targets)
        ranks = np.where(positions < authors_ranking.TOP, positions + 1, 1000)
        expected = metrics_from_ranks(ranks)
        got = report[name]
        assert got["authors"] == pytest.approx({m: expected[m] for m in ("NDCG@10", "HR@10", "NDCG@20", "HR@20")})
        assert 0 < got["authors"]["HR@20"] < 1
        ranks = full_ranking_ranks(score_function(encoder, torch.device("cpu")), histories, targets, dataset.num_items)
        assert got["ours"] == {m: v for m, v in metrics_from_ranks(ranks).items() if m in got["ours"]}
        assert got["users"] == 257
        assert got["target_scores_below_0"] == int((scores[np.arange(257), targets] < 0).sum())
        assert got["target_in_history"] == sum(int(t in h) for h, t in zip(histories, targets))
    assert report["valid"]["ours"] != report["test"]["ours"]


def test_both_layouts_of_one_model_give_one_report(tmp_path, capsys):
    data = tmp_path / "tiny"
    write_prepared(generate(SyntheticSpec(users=80, items=30, attributes=7, seed=5, max_length=15)), data)
    dataset = load_dataset(data)
    theirs = authors_state_dict(dataset.num_items, dataset.num_attributes)
    torch.save(theirs, tmp_path / "Finetune_full-Tiny-0.pt")
    state = {k.removeprefix("encoder."): v for k, v in convert_state_dict(theirs).items() if k.startswith("encoder.")}
    config = {"model": {"hidden_size": D}}
    files.save_torch(tmp_path / "finetune.pt", {"config": config, "variant": "none", "best_epoch": 1, "state_dict": state})

    assert authors_ranking.main(["--data", str(data), str(tmp_path / "Finetune_full-Tiny-0.pt"),
                                 str(tmp_path / "finetune.pt")]) == 0
    report = json.loads(capsys.readouterr().out)
    first, second = (report[str(tmp_path / name)] for name in ("Finetune_full-Tiny-0.pt", "finetune.pt"))
    assert first == second

    # `ours` is the evaluation finetune.py reports
    encoder = Encoder(ModelConfig(hidden_size=D), dataset.num_items)
    encoder.load_state_dict(state)
    split = leave_one_out(dataset.sequences)
    ranks = full_ranking_ranks(score_function(encoder.eval(), torch.device("cpu")), split.train,
                               split.valid_target, dataset.num_items)
    assert first["valid"]["ours"]["NDCG@10"] == metrics_from_ranks(ranks)["NDCG@10"]
    # the authors' scores are the same next-item scores (two layers: a causal encoder's), plus [MASK]'s
    [(_, scores)] = authors_ranking.all_scores(encoder, split.train)
    ours = score_function(encoder, torch.device("cpu"))(split.train).numpy()
    np.testing.assert_allclose(scores[:, :dataset.num_items + 1], ours, rtol=1e-5, atol=1e-5)
    zeroed = full_ranking_ranks(score_function(encoder.eval(), torch.device("cpu")), split.train,
                                split.valid_target, dataset.num_items, history_score=0.0)
    assert first["valid"]["ours_history_0"]["MRR"] == metrics_from_ranks(zeroed)["MRR"]
    assert first["valid"]["ranks_differ_ours_history_0"] == int((ranks != zeroed).sum())
    assert first["valid"]["users"] == 80 and 0 <= first["valid"]["target_scores_below_0"] <= 80


def test_a_file_that_is_no_finetuned_model_of_the_data_is_named(tmp_path, caplog):
    import pytest

    data = tmp_path / "tiny"
    write_prepared(generate(SyntheticSpec(users=20, items=30, attributes=7, seed=5, max_length=15)), data)
    dataset = load_dataset(data)
    state = {k.removeprefix("encoder."): v for k, v in
             convert_state_dict(authors_state_dict(dataset.num_items + 5, dataset.num_attributes)).items()
             if k.startswith("encoder.")}
    cases = {"tensor.pt": (torch.zeros(3), "expected a finetune.pt or a state dict of the authors' model"),
             "other.pt": ({"config": {"model": {"hidden_size": D}}, "state_dict": state},  # 5 items more
                          f"does not fit a finetuned encoder of the {dataset.num_items} items of --data: size mismatch "
                          "for item_embeddings.weight"),
             "theirs.pt": ({"bert.weight": torch.zeros(2)}, "unexpected key 'bert.weight'"),
             # the same item count, other interactions: before, scored without a word
             "other-data.pt": ({"config": {"model": {"hidden_size": D}}, "data_digest": "0" * 64, "state_dict": {}},
                               "was trained on other data than sequences.parquet + item_attributes.parquet")}
    for name, (saved, message) in cases.items():  # were: an AttributeError, a torch traceback, a ValueError's
        torch.save(saved, tmp_path / name)
        with pytest.raises(SystemExit) as stop:
            authors_ranking.main(["--data", str(data), str(tmp_path / name)])
        assert stop.value.code == 2 and f"{tmp_path / name}" in caplog.text and message in caplog.text
