"""When pretraining's SP head stops learning: its loss at ln 2 for several epochs in a row.

Read from a run's SP losses, one per epoch: while training (a warning in the log, once) and
in a study's report (runs.md lists the stretches), from its pretrain_history.csv, which is why
it needs no torch.
"""
from __future__ import annotations

import logging
import math
from collections.abc import Sequence

log = logging.getLogger("s3rec")

SATURATED_PAIR_LOSS = math.log(2)  # softplus(0): the sigmoid_difference loss of a pair with sigma(s+) = sigma(s-)


def stalled_spans(sp_losses: Sequence[float], pair_loss: str, epochs: int = 3,
                  tolerance: float = 5e-4) -> list[tuple[int, int]]:
    """(first, last) epoch, counted from 1, of every stretch of at least `epochs` epochs in which
    SP's per-instance loss sat at ln 2 under the authors' sigmoid_difference loss.

    ln 2 means sigma(s+) = sigma(s-) on every pair: in practice both scores saturated (sigma ~ 0
    or 1), where that loss has next to no gradient, so the SP head stops learning. It is not
    always for good: on Beauty `paper-full` seed 2 sat there in epochs 1-21 (every SP score
    near -54 at epoch 21) and then learned (0.55 by epoch 25), as the encoder, trained by the
    other losses, moved its scores. SP scores one pair per instance, so its per-instance loss is
    exactly ln 2 then (MIP sums several pairs per instance: no such fixed value). A learning head
    leaves ln 2 within two or three epochs. The logsigmoid loss keeps a gradient on the wrong
    side and is never flagged."""
    if pair_loss != "sigmoid_difference":
        return []
    spans, first = [], None
    for epoch, loss in enumerate([*sp_losses, math.inf], 1):  # the sentinel closes a last stretch
        if abs(loss - SATURATED_PAIR_LOSS) < tolerance:
            first = epoch if first is None else first
            continue
        if first is not None and epoch - first >= epochs:
            spans.append((first, epoch - 1))
        first = None
    return spans


def segment_head_stalled(sp_losses: Sequence[float], pair_loss: str, epochs: int = 3, tolerance: float = 5e-4) -> bool:
    """Whether SP's loss has sat at ln 2 for (at least) the last `epochs` epochs (stalled_spans)."""
    spans = stalled_spans(sp_losses, pair_loss, epochs, tolerance)
    return bool(spans) and spans[-1][1] == len(sp_losses)


def warn_if_segment_head_stalled(sp_losses: list[float], sp_loss: float, pair_loss: str) -> None:
    """Append this epoch's SP loss; warn once, the epoch SP is first found stalled at ln 2."""
    sp_losses.append(sp_loss)
    if segment_head_stalled(sp_losses, pair_loss) and not segment_head_stalled(sp_losses[:-1], pair_loss):
        log.warning("the SP loss has been ln 2 (%.4f) for three epochs in a row: the segment head's scores have most "
                    "likely saturated, where pair_loss sigmoid_difference (the authors') has next to no gradient; SP "
                    "learns nothing until the encoder moves its scores out (pair_loss logsigmoid cannot stall this way)",
                    sp_loss)
