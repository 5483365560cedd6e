"""Interval level labels (contract.forecast.level_label): unchanged for the usual levels, exact
and unambiguous for the rest."""

from __future__ import annotations

import pytest

from contract.forecast import level_label


@pytest.mark.parametrize(
    ("level", "label"),
    [(80, "80"), (80.0, "80"), (95, "95"), (50, "50"), (99, "99"), (99.5, "99.5"), (97.5, "97.5")],
)
def test_usual_levels_keep_their_labels(level: float, label: str) -> None:
    assert level_label(level) == label == f"{level:g}"


@pytest.mark.parametrize("level", [99.99999999, 80.0000000001, 99.99999999999999, 1e-5, 33.3333333])
def test_labels_give_the_level_back_exactly(level: float) -> None:
    label = level_label(level)
    assert float(label) == level and label != "100"


def test_different_levels_never_share_a_label() -> None:
    levels = [80, 80.0000000001, 80.000001, 99.99999999, 99.999999999, 99.9999999999]
    assert len({level_label(v) for v in levels}) == len(levels)
