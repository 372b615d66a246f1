"""Finding the epochs in which pretraining's SP head stalled at ln 2 (s3rec/stalls.py)."""
import logging

from s3rec.stalls import segment_head_stalled, stalled_spans, warn_if_segment_head_stalled

# SP losses per epoch from Beauty pretrainings with the paper preset: two that learn
# (paper-full seed 0 and paper-r16 seed 0, both near ln 2 for two epochs) and one that stalled
# (paper-full seed 2: ln 2 in epochs 1-21, then it learned).
LEARNING = [[0.6935, 0.6933, 0.6679, 0.6311, 0.5935, 0.582], [0.6936, 0.6932, 0.656, 0.6114, 0.5974, 0.5888]]
STALLED = [0.6935, 0.6931, 0.6932, 0.6931, 0.6931, 0.6931]
RECOVERED = [0.6935] + [0.6931] * 20 + [0.6652, 0.5719, 0.5644]


def test_segment_head_stalled_flags_only_three_epochs_at_ln2_under_the_authors_loss():
    for losses in LEARNING:
        assert not any(segment_head_stalled(losses[:n], "sigmoid_difference") for n in range(len(losses) + 1))
        assert stalled_spans(losses, "sigmoid_difference") == []
    assert [segment_head_stalled(STALLED[:n], "sigmoid_difference") for n in range(1, 7)] == [
        False, False, True, True, True, True]
    assert not segment_head_stalled(STALLED, "logsigmoid")  # that loss cannot stall this way
    assert stalled_spans(STALLED, "logsigmoid") == []
    assert not segment_head_stalled(RECOVERED, "sigmoid_difference")  # it left ln 2 again ...
    assert stalled_spans(RECOVERED, "sigmoid_difference") == [(1, 21)]  # ... but had stalled
    assert stalled_spans(STALLED + [0.6] + STALLED[:2] + [0.6] + STALLED[:3], "sigmoid_difference") == [(1, 6), (11, 13)]


def test_a_stalled_segment_head_is_logged_once(caplog):
    seen: list[float] = []
    with caplog.at_level(logging.WARNING, logger="s3rec"):
        for loss in STALLED:
            warn_if_segment_head_stalled(seen, loss, "sigmoid_difference")
    assert seen == STALLED
    warnings = [r for r in caplog.records if "SP loss has been ln 2" in r.getMessage()]
    assert len(warnings) == 1 and "learns nothing until" in warnings[0].getMessage()
    caplog.clear()
    seen = []
    with caplog.at_level(logging.WARNING, logger="s3rec"):
        for loss in LEARNING[0]:
            warn_if_segment_head_stalled(seen, loss, "sigmoid_difference")
    assert len(seen) == len(LEARNING[0]) and not caplog.records


def test_only_losses_within_the_tolerance_of_ln2_count_and_an_unrecorded_pair_loss_is_not_flagged():
    # ln 2 = 0.693147: 0.6936 and 0.6927 are within 5e-4 of it, a head learning slowly at 0.6905 to
    # 0.6895 (0.0027 to 0.0037 below) is not stalled
    assert stalled_spans([0.6936, 0.6927, 0.6936], "sigmoid_difference") == [(1, 3)]
    assert stalled_spans([0.6905, 0.6900, 0.6895], "sigmoid_difference") == []
    assert stalled_spans([0.6905, 0.6900, 0.6895], "sigmoid_difference", tolerance=5e-3) == [(1, 3)]
    # a run whose recorded config lacks pretrain.pair_loss (read as "" by scripts/report_study.py)
    assert stalled_spans(STALLED, "") == [] and not segment_head_stalled(STALLED, "")
    # segment_head_stalled passes its own epochs and tolerance on
    assert segment_head_stalled(STALLED[:2], "sigmoid_difference", epochs=2)
    assert not segment_head_stalled([0.6905, 0.6900, 0.6895], "sigmoid_difference")
    assert segment_head_stalled([0.6905, 0.6900, 0.6895], "sigmoid_difference", tolerance=5e-3)
