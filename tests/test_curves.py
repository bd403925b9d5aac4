"""The training-curve figure: loss-axis ticks that label narrow ranges, distinct step labels, and a drawing
of both panels."""
from __future__ import annotations

import numpy as np

from poseforge.train.curves import _fmt, _log_ticks, _nice_ticks, draw_curves


def test_log_ticks_use_1_2_5_per_decade_over_wide_ranges():
    assert _log_ticks(0.004, 0.013) == [0.004, 0.005, 0.006, 0.007, 0.008, 0.009, 0.01]
    assert _log_ticks(0.0009, 1.2) == [0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1]


def test_log_ticks_label_a_loss_that_spans_less_than_a_decade():
    ticks = _log_ticks(0.52, 1.21)  # a SimCC KL loss falling from 1.1 to 0.57
    assert ticks == [0.6, 0.7, 0.8, 0.9, 1]


def test_tick_labels_of_a_step_axis_are_distinct():
    labels = [_fmt(t) for t in _nice_ticks(0.0, 2500.0)]
    assert labels == ["0", "500", "1k", "1.5k", "2k", "2.5k"]
    assert _fmt(3_250_000) == "3.25M" and _fmt(0.005) == "5e-03" and _fmt(0.25) == "0.25"


def test_epoch_axis_ticks_are_whole_epochs():
    assert _nice_ticks(0.0, 11.0, integer=True) == [0, 2, 4, 6, 8, 10]
    assert _nice_ticks(0.0, 3.0, integer=True) == [0, 1, 2, 3]
    assert _nice_ticks(0.0, 210.0, integer=True) == [0, 50, 100, 150, 200]
    assert 2.5 in _nice_ticks(0.0, 11.0)  # a step axis may take half steps


def test_draw_curves_draws_both_panels():
    records = [{"kind": "train", "step": s, "loss": 1.1 - 0.5 * s / 100} for s in range(1, 101)]
    records += [{"kind": "val", "epoch": e, "AP": 0.1 * e} for e in (1, 2, 3)]
    image = draw_curves(records, title="t")
    assert image.ndim == 3 and image.shape[2] == 3
    left, right = image[:, : image.shape[1] // 2], image[:, image.shape[1] // 2:]
    assert (left != left[0, 0]).any() and (right != right[0, 0]).any()
    assert not np.array_equal(left, draw_curves(records[:50], title="t")[:, : image.shape[1] // 2])
