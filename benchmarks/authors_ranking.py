"""One model, two full-ranking evaluators: this project's and the authors' full-sort code.

    python benchmarks/authors_ranking.py --data resources/beauty MODEL [MODEL ...] [--threads 1]

MODEL is a finetuned model: this project's finetune.pt, or a state dict in the authors' layout
(what their run_finetune_full.py saves as Finetune_full-<Data>-<ckp>.pt). Each is scored on the
validation and test splits twice, by the same weights:

- `ours`: s3rec.evaluation (README "Evaluation"): the target ranked among items 1..M, the
  user's earlier items left out of the ranking, except the target itself; ties pessimistic.
- `ours_history_0`: s3rec.evaluation with `eval.history_score: 0.0`, the earlier items ranked
  at score 0 as the authors do, within items 1..M, ties pessimistic.
- `authors`: what their FinetuneTrainer does (read from their trainers.py, re-implemented
  here): every row of the item table is a candidate, padding (0) and [MASK] (M + 1) included;
  the earlier items' scores are *set to 0*, not removed (a target the user had before scores 0
  too); the top 20 come from numpy's argpartition and argsort on float32 scores, as theirs.

Prints one JSON object: per model and split, NDCG@10/20 and HR@10/20 of each evaluator (and
MRR of the two that rank every item), the users where they can disagree (target among the
earlier items; target scoring below 0, where the zeroed items and the padding row outrank it),
and the users whose rank `ours` and `ours_history_0` differ on.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from s3rec import cli, files, runs, runtime
from s3rec.authors import convert_state_dict
from s3rec.batching import pad_left
from s3rec.config import ModelConfig
from s3rec.data import leave_one_out, load_dataset
from s3rec.encoder import Encoder
from s3rec.evaluation import SPLITS, full_ranking_ranks, split_inputs
from s3rec.finetuning import score_function
from s3rec.metrics import metrics_from_ranks

TOP = 20  # their full-sort keeps the top 20 only
KS = (10, 20)


def load_encoder(path: Path, num_items: int, data_dir: Path) -> Encoder:
    saved = files.load_torch(path)
    if not isinstance(saved, dict):
        raise ValueError(f"{path}: expected a finetune.pt or a state dict of the authors' model, "
                         f"got {type(saved).__name__}")
    if "state_dict" in saved:  # this project's finetune.pt; it records its data set since data_digest exists
        runs.check_same_data(path, saved.get("data_digest"), runtime.digest(runs.data_files(data_dir)), str(data_dir))
        state, model = saved["state_dict"], saved.get("config", {}).get("model", {})
    else:  # the authors' S3RecModel state dict: keep the encoder's tensors
        prefix = "encoder."
        try:
            state = {k[len(prefix):]: v for k, v in convert_state_dict(saved).items() if k.startswith(prefix)}
        except ValueError as error:
            raise ValueError(f"{path}: {error}") from None
        layers = {key.split(".")[1] for key in state if key.startswith("layers.")}
        model = {"hidden_size": int(state["item_embeddings.weight"].shape[1]), "num_layers": len(layers),
                 "max_len": int(state["position_embeddings.weight"].shape[0])}
    encoder = Encoder(ModelConfig(**model), num_items)
    files.load_state(encoder, state, path, f"a finetuned encoder of the {num_items} items of --data")
    return encoder.eval()


@torch.no_grad()
def all_scores(encoder: Encoder, histories: list[np.ndarray], batch_size: int = 256):
    """(B, M + 2) float32 scores of every row of the item table, batch by batch. Like
    s3rec.finetuning.score_function, but with the [MASK] row, which their ranking includes."""
    for start in range(0, len(histories), batch_size):
        rows = histories[start:start + batch_size]
        length = min(max(len(h) for h in rows), encoder.cfg.max_len)
        _, last = encoder.forward_ends(torch.from_numpy(pad_left(rows, length)), causal=True)
        yield start, (last @ encoder.item_embeddings.weight.T).numpy()


def authors_positions(scores: np.ndarray, histories: list[np.ndarray], targets: np.ndarray) -> np.ndarray:
    """0-based position of each target in their top-20 list, TOP where it is not in it."""
    scores = scores.copy()
    for row, history in enumerate(histories):
        scores[row, history] = 0  # their `rating_pred[train_matrix > 0] = 0`
    top = np.argpartition(scores, -TOP)[:, -TOP:]
    order = np.argsort(scores[np.arange(len(scores))[:, None], top])[:, ::-1]
    ranked = top[np.arange(len(scores))[:, None], order]
    hit = ranked == targets[:, None]
    return np.where(hit.any(1), hit.argmax(1), TOP)


def evaluate(encoder: Encoder, histories: list[np.ndarray], targets: np.ndarray, num_items: int) -> dict:
    """`ours` is exactly the ranking finetune.py reports (score_function, full_ranking_ranks, which
    batches users its own way); `authors` ranks a second pass's scores, which include [MASK]."""
    score = score_function(encoder, torch.device("cpu"))
    ours = full_ranking_ranks(score, histories, targets, num_items)
    zeroed = full_ranking_ranks(score, histories, targets, num_items, history_score=0.0)
    positions = np.empty(len(targets), dtype=np.int64)
    below_zero = 0
    for start, scores in all_scores(encoder, histories):
        index = slice(start, start + len(scores))
        positions[index] = authors_positions(scores, histories[index], targets[index])
        below_zero += int((scores[np.arange(len(scores)), targets[index]] < 0).sum())
    theirs = {}
    for k in KS:
        hit = positions < k
        theirs[f"NDCG@{k}"] = float(np.where(hit, 1 / np.log2(positions + 2.0), 0).mean())
        theirs[f"HR@{k}"] = float(hit.mean())
    names = [f"{m}@{k}" for k in KS for m in ("NDCG", "HR")] + ["MRR"]
    ours_metrics, zeroed_metrics = metrics_from_ranks(ours), metrics_from_ranks(zeroed)
    repeats = int(sum(t in set(h.tolist()) for h, t in zip(histories, targets)))
    return {"ours": {m: ours_metrics[m] for m in names}, "ours_history_0": {m: zeroed_metrics[m] for m in names},
            "authors": theirs, "users": len(targets), "target_in_history": repeats,
            "target_scores_below_0": below_zero, "ranks_differ_ours_history_0": int((ours != zeroed).sum())}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("models", nargs="+", type=Path)
    parser.add_argument("--data", type=Path, required=True, help="a prepared data set (scripts/prepare_data.py)")
    parser.add_argument("--threads", type=cli.positive_int, default=1)
    args = parser.parse_args(argv)
    cli.paths_once(parser, "models", args.models)
    cli.setup_logging()
    runtime.set_threads(args.threads)
    started = time.perf_counter()
    report = {}
    with cli.clear_errors():  # a file that is no finetuned model, or of other data: its message alone
        dataset = load_dataset(args.data)
        split = leave_one_out(dataset.sequences)
        for path in args.models:
            encoder = load_encoder(path, dataset.num_items, args.data)
            report[str(path)] = {name: evaluate(encoder, *split_inputs(split, name), dataset.num_items)
                                 for name in SPLITS}
    report["seconds"] = round(time.perf_counter() - started, 1)
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
