"""Interval level labels (contract.forecast.level_label): unchanged for the usual levels, exact
and unambiguous for the rest."""

from __future__ import annotations

import pytest

from contract.forecast import level_label, level_labels


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


def test_each_level_once_is_one_rule() -> None:
    assert level_labels([95, 80, 99.99999999]) == ["95", "80", "99.99999999"]
    assert level_labels([80, 80.0000000001]) == ["80", "80.0000000001"]
    with pytest.raises(ValueError, match=r"^80 and 80\.0 are the same level \(lo-80\); send"):
        level_labels([80, 80.0])


def test_the_service_and_the_rest_route_use_the_contract_rule(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import app.api.oip_models as oip_models
    import app.api.routes.forecast as route
    import app.services.forecast as service
    import contract.forecast as contract
    from app.errors import InvalidInput

    for module in (route, service, oip_models):
        assert module.level_labels is contract.level_labels  # imported, not rewritten
    with pytest.raises(InvalidInput, match=r"^level: 80 and 80\.0 are the same level"):
        service.check_levels([80, 80.0])
    calls: list[list[float]] = []
    monkeypatch.setattr(route, "level_labels", lambda v: calls.append(list(v)) or [])
    route.ForecastRequest(series=[{"values": [1.0, 2.0]}], level=[90, 50])
    assert calls == [[90, 50]]
