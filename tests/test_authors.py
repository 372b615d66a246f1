"""Importing the S3Rec authors' released checkpoints (scripts/import_checkpoint.py, s3rec/authors.py).

A generated state dict in the authors' key layout is converted, and the encoder's outputs are
compared with a plain re-implementation of the authors' forward pass (their left padding to
max_len, additive -10000 masks, erf GELU, LayerNorm eps 1e-12) computed from *their* tensors.
With ../shared present, their real Beauty checkpoint is imported and its attribute heads must
recognise Beauty's item attributes (which fails if item or attribute ids were misaligned).
"""
from __future__ import annotations

import json
import logging
import math
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from s3rec import files, runs, runtime
from s3rec.config import RunConfig
from s3rec.data import load_dataset, leave_one_out, write_prepared
from s3rec.pretrain_batches import build_batch, build_instances
from s3rec.pretraining import PretrainModel
from s3rec.synthetic import SyntheticSpec, generate
from conftest import REPO, SHARED_DATA, shared_data_or_skip
from scripts_import import load_script

D, LAYERS, HEADS, MAX_LEN = 16, 2, 2, 50
import_checkpoint = load_script("import_checkpoint").import_checkpoint


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    out = tmp_path_factory.mktemp("data") / "tiny"
    write_prepared(generate(SyntheticSpec(users=60, items=30, attributes=7, seed=5, max_length=15)), out)
    return out


def authors_state_dict(num_items: int, num_attributes: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random tensors under the authors' S3RecModel names and shapes."""
    g = torch.Generator().manual_seed(seed)

    def rand(*shape):
        return torch.randn(*shape, generator=g) * 0.3

    state = {"item_embeddings.weight": rand(num_items + 2, D), "attribute_embeddings.weight": rand(num_attributes + 1, D),
             "position_embeddings.weight": rand(MAX_LEN, D), "LayerNorm.weight": 1 + rand(D), "LayerNorm.bias": rand(D)}
    for n in range(LAYERS):
        p = f"item_encoder.layer.{n}."
        for name, (out, inp) in {"attention.query": (D, D), "attention.key": (D, D), "attention.value": (D, D),
                                 "attention.dense": (D, D), "intermediate.dense_1": (4 * D, D),
                                 "intermediate.dense_2": (D, 4 * D)}.items():
            state[f"{p}{name}.weight"], state[f"{p}{name}.bias"] = rand(out, inp), rand(out)
        for norm in ("attention.LayerNorm", "intermediate.LayerNorm"):
            state[f"{p}{norm}.weight"], state[f"{p}{norm}.bias"] = 1 + rand(D), rand(D)
    for head in ("aap", "mip", "map", "sp"):
        state[f"{head}_norm.weight"], state[f"{head}_norm.bias"] = rand(D, D), rand(D)
    return state


def authors_forward(sd: dict[str, torch.Tensor], input_ids: torch.Tensor, causal: bool) -> torch.Tensor:
    """The authors' encoder, written plainly from their tensors: (B, 50) left-padded ids -> (B, 50, d)."""
    B, L = input_ids.shape

    def linear(x, name):
        return x @ sd[f"{name}.weight"].T + sd[f"{name}.bias"]

    def layer_norm(x, name):
        return F.layer_norm(x, (D,), sd[f"{name}.weight"], sd[f"{name}.bias"], eps=1e-12)

    x = layer_norm(sd["item_embeddings.weight"][input_ids] + sd["position_embeddings.weight"][torch.arange(L)], "LayerNorm")
    keep = (input_ids > 0).double()[:, None, None, :]
    if causal:
        keep = keep * torch.tril(torch.ones(L, L, dtype=torch.double))
    additive = (1.0 - keep) * -10000.0
    for n in range(LAYERS):
        p = f"item_encoder.layer.{n}."

        def heads(t):
            return t.view(B, L, HEADS, D // HEADS).transpose(1, 2)

        q, k, v = (heads(linear(x, p + f"attention.{name}")) for name in ("query", "key", "value"))
        probs = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(D // HEADS) + additive, dim=-1)
        context = (probs @ v).transpose(1, 2).reshape(B, L, D)
        x = layer_norm(linear(context, p + "attention.dense") + x, p + "attention.LayerNorm")
        inner = linear(x, p + "intermediate.dense_1")
        inner = inner * 0.5 * (1.0 + torch.erf(inner / math.sqrt(2.0)))
        x = layer_norm(linear(inner, p + "intermediate.dense_2") + x, p + "intermediate.LayerNorm")
    return x


@pytest.mark.parametrize("causal", [True, False])
def test_converted_encoder_equals_the_authors_forward_pass(tiny_data, tmp_path, causal):
    data = load_dataset(tiny_data)
    theirs = {k: v.double() for k, v in authors_state_dict(data.num_items, data.num_attributes).items()}
    torch.save(theirs, tmp_path / "Tiny-epochs-150.pt")
    out = tmp_path / "pretrain.pt"
    import_checkpoint(tmp_path / "Tiny-epochs-150.pt", tiny_data, out, settings={"model": {"hidden_size": D}})
    saved = files.load_torch(out)
    assert saved["variant"] == "full" and saved["epoch"] == 150 and saved["seed"] is None
    model = PretrainModel(RunConfig.from_dict(saved["config"]), data.num_items, data.num_attributes).double().eval()
    model.load_state_dict(saved["state_dict"])

    histories = [s[:-2][-MAX_LEN:] for s in data.sequences[:12]]
    ids_50 = torch.zeros(len(histories), MAX_LEN, dtype=torch.long)  # the authors' left padding to 50
    for row, h in enumerate(histories):
        ids_50[row, MAX_LEN - len(h):] = torch.from_numpy(np.array(h))
    longest = max(len(h) for h in histories)  # ours pads only to the longest history
    with torch.no_grad():
        want = authors_forward(theirs, ids_50, causal)
        got = model.encoder(ids_50[:, -longest:], causal=causal)
    real = ids_50[:, -longest:] > 0
    torch.testing.assert_close(got[real], want[:, -longest:][real], rtol=1e-9, atol=1e-9)
    # the heads score as the authors' nn.Linear: y . (W x + b)
    x, attributes = want[:, -longest:][real][:5], theirs["attribute_embeddings.weight"][1:]
    expected = (x @ theirs["aap_norm.weight"].T + theirs["aap_norm.bias"]) @ attributes.T
    torch.testing.assert_close(model.heads["aap"].score_all(x, model.attribute_embeddings.weight[1:]), expected)


def test_imported_checkpoint_finetunes_with_any_seed(tiny_data, tmp_path):
    data = load_dataset(tiny_data)
    torch.save(authors_state_dict(data.num_items, data.num_attributes), tmp_path / "Tiny-epochs-7.pt")
    out = tmp_path / "authors" / "pretrain.pt"
    import_checkpoint(tmp_path / "Tiny-epochs-7.pt", tiny_data, out, variant="authors", settings={"model": {"hidden_size": D}})
    for seed in (0, 3):
        cfg = runs.resolve_config({"model": {"hidden_size": D}, "finetune": {"epochs": 1},
                                   "eval": {"sampled_negatives": 10}}, "authors", seed, device="cpu")
        result = runs.finetune(tiny_data, tmp_path / f"seed{seed}", cfg, "authors", pretrained=out)
        assert result["variant"] == "authors" and result["parameters"]["heads"]["aap"] == D * D + D
        # it records the authors' pretraining, not this run's (default) pretraining settings
        assert result["config"]["pretrain"]["preset"] == "paper" and result["config"]["pretrain"]["epochs"] == 7


def test_a_finetuning_resumes_after_its_import_is_rewritten(tiny_data, tmp_path, caplog):
    # The workflow re-imports whenever the authors' file looks newer (a fresh copy of ../shared);
    # equal contents must give equal bytes, or the finetuning's checkpoint no longer matches its input.
    data = load_dataset(tiny_data)
    torch.save(authors_state_dict(data.num_items, data.num_attributes), tmp_path / "Tiny-epochs-7.pt")
    out, settings = tmp_path / "authors" / "pretrain.pt", {"model": {"hidden_size": D}}
    import_checkpoint(tmp_path / "Tiny-epochs-7.pt", tiny_data, out, variant="authors", settings=settings)
    first = out.read_bytes()
    cfg = runs.resolve_config({**settings, "finetune": {"epochs": 3, "patience": 3}, "eval": {"sampled_negatives": 10}},
                              "authors", 0, device="cpu")
    assert runs.finetune(tiny_data, tmp_path / "seed0", cfg, "authors", pretrained=out, stop_after=1) is None
    import_checkpoint(tmp_path / "Tiny-epochs-7.pt", tiny_data, out, variant="authors", settings=settings)
    assert out.read_bytes() == first
    with caplog.at_level("INFO", logger="s3rec"):
        assert runs.finetune(tiny_data, tmp_path / "seed0", cfg, "authors", pretrained=out) is not None
    assert "resuming from" in caplog.text and "after epoch 1" in caplog.text
    assert "not resuming from" not in caplog.text


def test_an_import_into_data_of_another_format_than_the_release_warns(tiny_data, tmp_path, caplog):
    """Their embedding rows are the release's ids: a generated (or raw Amazon) data set of the same
    sizes fits the tables, not the rows. The release's own format imports without a word."""
    data = load_dataset(tiny_data)
    torch.save(authors_state_dict(data.num_items, data.num_attributes), tmp_path / "Tiny-epochs-150.pt")
    release = tmp_path / "release"
    shutil.copytree(tiny_data, release)
    stats = json.loads((release / "stats.json").read_text())
    (release / "stats.json").write_text(json.dumps({**stats, "format": "s3rec"}))
    for data_dir, warned in ((tiny_data, True), (release, False)):
        caplog.clear()
        with caplog.at_level(logging.WARNING):
            import_checkpoint(tmp_path / "Tiny-epochs-150.pt", data_dir, tmp_path / data_dir.name / "pretrain.pt",
                              settings={"model": {"hidden_size": D}})
        assert (f"{data_dir} was prepared with --format synthetic: the authors' item and attribute embeddings are "
                "indexed by their release's ids" in caplog.text) == warned, caplog.text


def test_a_checkpoint_of_other_data_or_garbage_is_a_one_line_error(tiny_data, tmp_path):
    data = load_dataset(tiny_data)
    torch.save(authors_state_dict(data.num_items + 5, data.num_attributes), tmp_path / "Other-epochs-150.pt")
    (tmp_path / "Garbage-epochs-150.pt").write_bytes(np.random.default_rng(0).bytes(4000))
    expected = {"Other": "item_embeddings.weight has 37 rows, the prepared data set needs 32",
                "Garbage": "not a readable torch checkpoint"}
    for name, message in expected.items():
        result = subprocess.run([sys.executable, str(REPO / "scripts" / "import_checkpoint.py"), "--authors",
                                 str(tmp_path / f"{name}-epochs-150.pt"), "--data", str(tiny_data),
                                 "--out", str(tmp_path / name / "pretrain.pt")], capture_output=True, text=True)
        assert result.returncode == 2, result.stderr
        assert message in result.stderr and "Traceback" not in result.stderr
        assert "weights_only=False" not in result.stderr
        assert not (tmp_path / name).exists()
    # an --out that is a folder: before, refused at the write (after the conversion), naming a temporary
    torch.save(authors_state_dict(data.num_items, data.num_attributes), tmp_path / "Tiny-epochs-150.pt")
    result = subprocess.run([sys.executable, str(REPO / "scripts" / "import_checkpoint.py"), "--authors",
                             str(tmp_path / "Tiny-epochs-150.pt"), "--data", str(tiny_data), "--out", str(tmp_path)],
                            capture_output=True, text=True)
    assert result.returncode == 2 and f"--out {tmp_path}: is a folder; expected a file's path" in result.stderr


@pytest.mark.parametrize("settings, epochs, message", [
    ({"model": {"hidden_size": D}, "pretrain": {"epochs": 3}}, None, "only a `model` section"),
    ([1], None, "only a `model` section"),
    ({"model": {"hidden_size": D}}, 0, "pretrain.epochs: expected a positive integer, got 0"),
])
def test_an_import_refuses_settings_it_would_ignore(tiny_data, tmp_path, settings, epochs, message):
    """An import's pretraining settings are the paper preset and --epochs: a `pretrain` section was
    dropped without a word, and --epochs 0 fell back to the 150 of the file name."""
    data = load_dataset(tiny_data)
    torch.save(authors_state_dict(data.num_items, data.num_attributes), tmp_path / "Tiny-epochs-150.pt")
    with pytest.raises(ValueError, match=re.escape(message)):
        import_checkpoint(tmp_path / "Tiny-epochs-150.pt", tiny_data, tmp_path / "out.pt", settings=settings,
                          epochs=epochs)
    assert not (tmp_path / "out.pt").exists()


@pytest.mark.parametrize("change", ["1-D embeddings", "an int key"])
def test_an_import_names_a_state_dict_of_another_form(tiny_data, tmp_path, change):
    data = load_dataset(tiny_data)
    state = authors_state_dict(data.num_items, data.num_attributes)
    if change == "1-D embeddings":
        state["item_embeddings.weight"] = state["item_embeddings.weight"][:, 0]
    else:
        state[7] = torch.zeros(1)
    torch.save(state, tmp_path / "Tiny-epochs-150.pt")
    with pytest.raises(ValueError, match="expected a state dict of named tensors with a 2-D item_embeddings.weight"):
        import_checkpoint(tmp_path / "Tiny-epochs-150.pt", tiny_data, tmp_path / "out.pt", settings={"model": {"hidden_size": D}})


def test_authors_beauty_checkpoint_knows_beautys_attributes(tmp_path):
    """Their heads recognise the attributes of our prepared Beauty; shifting attribute ids by one
    (a misalignment) or a fresh model scores far worse."""
    shared = shared_data_or_skip()
    checkpoint = SHARED_DATA.parents[1] / "authors" / "Beauty-epochs-150.pt"
    if not checkpoint.exists():
        pytest.skip(f"needs the authors' checkpoint at {checkpoint}")
    prepared = tmp_path / "beauty"
    subprocess.run([sys.executable, str(REPO / "scripts" / "prepare_data.py"), "--format", "s3rec", "--sequences",
                    str(shared / "Beauty.txt"), "--attributes", str(shared / "Beauty_item2attributes.json"),
                    "--out", str(prepared)], check=True, capture_output=True)
    import_checkpoint(checkpoint, prepared, tmp_path / "pretrain.pt")
    data = load_dataset(prepared)
    saved = files.load_torch(tmp_path / "pretrain.pt")
    cfg = RunConfig.from_dict(saved["config"])
    split = leave_one_out(data.sequences[:2000])
    instances = build_instances(split.train, data.item_attributes, data.num_items, data.num_attributes, max_len=50)
    batch = build_batch(instances, np.arange(0, len(instances), 97), np.random.default_rng(0), mask_prob=0.2)

    def attribute_loss(state):
        model = PretrainModel(cfg, data.num_items, data.num_attributes).eval()
        if state is not None:
            model.load_state_dict(state)
        with torch.no_grad():
            losses = model(batch)
        return float(losses["aap"] + losses["map"])

    imported = attribute_loss(saved["state_dict"])
    shifted = dict(saved["state_dict"])
    shifted["attribute_embeddings.weight"] = torch.roll(shifted["attribute_embeddings.weight"], 1, dims=0)
    assert imported < 0.5 * attribute_loss(None)
    assert imported < 0.5 * attribute_loss(shifted)


def test_settings_that_do_not_fit_the_tensors_are_one_line(tiny_data, tmp_path):
    """Before, torch's strict load printed every mismatched key (38 lines for LastFM's at hidden 32)."""
    data = load_dataset(tiny_data)
    torch.save(authors_state_dict(data.num_items, data.num_attributes), tmp_path / "Tiny-epochs-150.pt")
    with pytest.raises(ValueError) as error:
        import_checkpoint(tmp_path / "Tiny-epochs-150.pt", tiny_data, tmp_path / "out.pt",
                          settings={"model": {"hidden_size": 2 * D, "num_heads": 2}})
    message = str(error.value)
    assert "\n" not in message and "does not fit a pretraining model of" in message and "size mismatch" in message
    assert not (tmp_path / "out.pt").exists()


# ---------------------------------------------------------------- found by a mutation probe
# Each test below failed a hand mutant of scripts/import_checkpoint.py that every other test let pass.


def test_an_import_records_its_data_and_its_source(tiny_data, tmp_path):
    """The data digest a finetuning checks the import against (a finetuning of other data is
    refused), and the authors' file it came from: its path as given and its bytes' digest."""
    data = load_dataset(tiny_data)
    authors = tmp_path / "Tiny-epochs-7.pt"
    torch.save(authors_state_dict(data.num_items, data.num_attributes), authors)
    saved = import_checkpoint(authors, tiny_data, tmp_path / "pretrain.pt", settings={"model": {"hidden_size": D}})
    assert saved["data_digest"] == runs.digest_of_data(tiny_data)
    assert saved["source"] == {"authors_checkpoint": str(authors), "sha256": runtime.digest([authors])}
    model = RunConfig.from_dict(saved["config"]).model
    assert "other data" in " ".join(runs.pretrained_mismatches(saved, "full", 0, "0" * 64, model))


def import_main(tmp_path, tiny_data, name, *options):
    """import_checkpoint.py's main on generated tensors saved as `name`: the pretrain.pt written."""
    data = load_dataset(tiny_data)
    torch.save(authors_state_dict(data.num_items, data.num_attributes), tmp_path / name)
    out = tmp_path / "out" / "pretrain.pt"
    assert load_script("import_checkpoint").main(["--authors", str(tmp_path / name), "--data", str(tiny_data),
                                                  "--out", str(out), "--settings",
                                                  json.dumps({"model": {"hidden_size": D}}), *options]) == 0
    return files.load_torch(out)


@pytest.mark.parametrize("name, options, epoch", [("Tiny.pt", ["--epochs", "4"], 4),
                                                  ("Tiny2-epochs-7.pt", [], 7)], ids=["--epochs", "name"])
def test_the_command_line_import_takes_its_epochs_and_variant_full(tiny_data, tmp_path, name, options, epoch):
    """--epochs is recorded (a name saying none needs it); a name's epochs are those after
    `epochs-`, not its first digits; the variant is `full` unless --variant says otherwise."""
    saved = import_main(tmp_path, tiny_data, name, *options)
    assert saved["epoch"] == epoch and saved["config"]["pretrain"]["epochs"] == epoch and saved["variant"] == "full"


def test_a_name_without_epochs_and_no_epochs_option_is_a_clear_error(tiny_data, tmp_path, caplog):
    with pytest.raises(SystemExit) as stop:
        import_main(tmp_path, tiny_data, "Tiny.pt")
    assert stop.value.code == 2
    assert "Tiny.pt: the name does not say how many epochs it was pretrained (<Data>-epochs-<N>.pt); pass --epochs" in caplog.text
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("case, error, message", [
    ("variant r4", ValueError, "--variant: expected full or authors (dense heads), got 'r4'"),
    ("missing file", FileNotFoundError, "authors' checkpoint {authors} does not exist"),
    ("a folder", FileNotFoundError, "authors' checkpoint {authors} is a folder"),
    ("this project's pretrain.pt", ValueError, "{authors}: expected a state dict of tensors (the authors' S3RecModel), got dict"),
    ("no item embeddings", ValueError, "{authors} does not fit {data}: no 'item_embeddings.weight': not an S3RecModel state dict"),
    ("a key weight of another width", ValueError, "{authors} does not fit {data}: "),
])
def test_an_import_that_cannot_be_made_says_why_in_one_line(tiny_data, tmp_path, case, error, message):
    """Each refusal by name, before anything is written: a variant of low-rank heads (their heads
    are dense), an authors' file missing or a folder, a file that is no plain state dict (a
    pretrain.pt of this project, a dict of more than tensors), a state dict without the item
    table, one whose attention tensors do not join (torch's RuntimeError, as one ValueError)."""
    data = load_dataset(tiny_data)
    authors, variant = tmp_path / "Tiny-epochs-7.pt", "full"
    state = authors_state_dict(data.num_items, data.num_attributes)
    if case == "variant r4":
        variant = "r4"
    elif case == "a folder":
        authors.mkdir()
    elif case == "this project's pretrain.pt":
        state = {"variant": "full", "state_dict": state}
    elif case == "no item embeddings":
        del state["item_embeddings.weight"]
    elif case == "a key weight of another width":
        state["item_encoder.layer.0.attention.key.weight"] = torch.zeros(D, D + 1)
    if case not in ("missing file", "a folder"):
        torch.save(state, authors)
    with pytest.raises(error) as raised:
        import_checkpoint(authors, tiny_data, tmp_path / "out.pt", variant, settings={"model": {"hidden_size": D}})
    assert str(raised.value).startswith(message.format(authors=authors, data=tiny_data)) and "\n" not in str(raised.value)
    assert not (tmp_path / "out.pt").exists()


def test_an_import_is_written_through_a_temporary_file(tiny_data, tmp_path, renames):
    """pretrain.pt is replaced whole (a temporary in its folder, then a rename), and its bytes do
    not depend on its name (torch.save given a path names its archive's folder after the file)."""
    data = load_dataset(tiny_data)
    torch.save(authors_state_dict(data.num_items, data.num_attributes), tmp_path / "Tiny-epochs-7.pt")
    for name in ("pretrain.pt", "other.pt"):
        import_checkpoint(tmp_path / "Tiny-epochs-7.pt", tiny_data, tmp_path / name, settings={"model": {"hidden_size": D}})
    assert [dst for _, dst in renames] == [tmp_path / "pretrain.pt", tmp_path / "other.pt"]
    assert all(src.parent == tmp_path and src.name.startswith(f".{dst.name}.") for src, dst in renames)
    assert (tmp_path / "pretrain.pt").read_bytes() == (tmp_path / "other.pt").read_bytes()
