"""Forecast training: metrics, preprocessing, the graph on odd inputs, ONNX parity, and the CLI
on tiny fixture datasets (M4-wide and an ETTh1-like long CSV). Runs without ../shared/data.

    pytest tests/training/test_forecast_training.py -q
"""

from __future__ import annotations

import csv
import datetime as dt
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from contract.forecast import LEVEL_GRID, interval_k, last_window, positive_shift
from training.cli import main
from training.forecast.data import (
    WindowSampler,
    calibration_split,
    load_series,
    split_holdout,
)
from training.forecast.metrics import coverage, mase, mase_scale, naive, seasonal_naive, smape
from training.forecast.model import ForecastEnsemble, ForecastNet, median_over_members
from training.forecast.train import (
    ForecastConfig,
    calibration_set,
    calibration_windows_per_series,
    conformal_table,
    intervals,
    mase_weights,
    member_plan,
    prepare,
)

WINDOW, PERIOD, HORIZON = 48, 24, 24


def _series(n: int, seed: int, offset: float = 50.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    return offset + 10 * np.sin(2 * np.pi * t / 24) + rng.normal(0, 1, n)


@pytest.fixture
def m4_csv(tmp_path: Path) -> Path:
    lengths = [200, 260, 230, 300]
    rows = [[f"H{i + 1}"] + [f"{v:.3f}" for v in _series(n, i)] for i, n in enumerate(lengths)]
    # one series that dips below zero, to exercise the shift rule
    rows.append(["H5"] + [f"{v:.3f}" for v in _series(220, 9, offset=2.0)])
    width = max(len(r) for r in rows)
    path = tmp_path / "wide.csv"
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow([f"V{i + 1}" for i in range(width)])
        for r in rows:
            w.writerow(r + [""] * (width - len(r)))
    return path


@pytest.fixture
def long_csv(tmp_path: Path) -> Path:
    path = tmp_path / "ett.csv"
    start = dt.datetime(2016, 7, 1)
    ot, hufl = _series(300, 1, offset=30.0), _series(300, 2, offset=5.0)
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["date", "HUFL", "OT"])
        for i in range(300):
            stamp = (start + dt.timedelta(hours=i)).strftime("%Y-%m-%d %H:%M:%S")
            w.writerow([stamp, f"{hufl[i]:.4f}", f"{ot[i]:.4f}"])
    return path


# ------------------------------------------------------------------ metrics and baselines


def test_smape_hand_computed() -> None:
    y = np.array([[100.0, 200.0]])
    f = np.array([[110.0, 180.0]])
    expected = 100 * (10 / 210 + 20 / 380)  # 200/h * sum, h = 2
    assert smape(y, f)[0] == pytest.approx(expected)
    assert smape(np.zeros((1, 3)), np.zeros((1, 3)))[0] == 0.0


def test_mase_hand_computed() -> None:
    hist = np.array([1.0, 2, 3, 4, 5, 6])
    assert mase_scale(hist, 2) == pytest.approx(2.0)  # |3-1|, |4-2|, ... all 2
    got = mase(np.array([[7.0, 8.0]]), np.array([[6.0, 6.0]]), np.array([2.0]))
    assert got[0] == pytest.approx(0.75)


def test_baselines() -> None:
    hist = np.array([1.0, 2, 3, 4, 5, 6])
    np.testing.assert_array_equal(seasonal_naive(hist, 5, 2), [5, 6, 5, 6, 5])
    np.testing.assert_array_equal(naive(hist, 3), [6, 6, 6])


# ------------------------------------------------------------------ preprocessing


def test_positive_shift_rule() -> None:
    x = np.array([[1.0, 2.0], [-1.0, 3.0], [0.0, 0.0], [-5.0, -5.0]])
    np.testing.assert_allclose(positive_shift(x), [0.0, 1.4, 1.0, 5.5])
    shifted = x + positive_shift(x)[:, None]
    assert (shifted > 0).all()


def test_last_window_keeps_phase() -> None:
    x = np.arange(30, dtype=float) % 24  # phase = value
    w = last_window(x, 48, 24)
    assert len(w) == 48
    np.testing.assert_array_equal(w, np.arange(-18, 30) % 24)
    np.testing.assert_array_equal(last_window(np.arange(100.0), 48, 24), np.arange(52.0, 100))


def test_loaders(m4_csv: Path, long_csv: Path) -> None:
    wide = load_series(m4_csv)
    assert wide.ids[:2] == ["H1", "H2"] and [len(v) for v in wide.values][:2] == [200, 260]
    long = load_series(long_csv, time_col="date", targets=["OT"])
    assert long.ids == ["OT"] and len(long.values[0]) == 300
    hist, fut = split_holdout(long, 24)
    assert len(hist[0]) == 276 and len(fut[0]) == 24
    with pytest.raises(ValueError, match="no column"):
        load_series(long_csv, targets=["nope"])


def test_window_sampler_contiguous_and_recent() -> None:
    hists = [np.arange(100.0), np.arange(1000.0, 1200.0)]
    rng = np.random.default_rng(0)
    x, y = WindowSampler(hists, 48, 24, 24).sample(500, rng)
    assert x.shape == (500, 48) and y.shape == (500, 24)
    full = np.concatenate([x, y], axis=1)
    np.testing.assert_array_equal(np.diff(full, axis=1), 1.0)  # one contiguous stretch
    x, y = WindowSampler(hists, 48, 24, 24, recent=30).sample(500, rng)
    ends = y[:, -1]
    assert set(np.unique(ends)) <= {93.0, 94.0, 95.0, 96.0, 97.0, 98.0, 99.0} | {
        float(v) for v in range(1193, 1200)
    }


def test_window_sampler_align_keeps_the_phase_of_the_end() -> None:
    hists = [np.arange(100.0), np.arange(1000.0, 1201.0)]
    x, y = WindowSampler(hists, 48, 24, 24, align=24).sample(2000, np.random.default_rng(0))
    assert x.shape == (2000, 48) and y.shape == (2000, 24)
    first, second = x[x[:, -1] < 1000, -1], x[x[:, -1] >= 1000, -1] - 1000
    # the input ends a multiple of 24 steps before the end of its history (99 and 200)
    assert set(((99 - first) % 24).tolist()) == {0.0} and set(((200 - second) % 24).tolist()) == {0}
    assert len(np.unique(x[:, -1])) == 2 + 6  # every aligned cut point is drawn


# ------------------------------------------------------------------ calibration split


def test_calibration_split_targets_are_disjoint_from_training_targets() -> None:
    hists = [np.arange(300.0), np.arange(1000.0, 1250.0)]
    train, full = calibration_split(hists, 2, 24)
    assert [len(h) for h in train] == [252, 202] and full[0] is hists[0]
    # every target the members can be trained on comes from the training part
    x, y = WindowSampler(train, 48, 24, 24).sample(5000, np.random.default_rng(0))
    trained = set(np.unique(y).tolist())
    held = set(hists[0][-48:].tolist()) | set(hists[1][-48:].tolist())
    assert trained.isdisjoint(held) and max(y[y < 1000]) == 251.0
    with pytest.raises(ValueError, match="cannot hold out"):
        calibration_split([np.arange(40.0)], 2, 24)
    same, _ = calibration_split(hists, 0, 24)
    assert [len(h) for h in same] == [300, 250]


def test_prepare_holds_calibration_windows_out_of_training(m4_csv: Path) -> None:
    cfg = ForecastConfig(data=str(m4_csv), window=48, horizon=24, holdout=24, calib_windows=2)
    data = prepare(cfg)
    k = data["calib_windows_per_series"]
    assert k == calibration_windows_per_series(cfg, data["hist"]) >= 1
    cx, cy, idx = calibration_set(cfg, data)
    assert len(cy) == k * len(data["hist"]) and cx.shape[1] == 48 and cy.shape[1] == 24
    series = load_series(m4_csv)
    for i, (v, h, t) in enumerate(
        zip(series.values, data["hist"], data["train_hist"], strict=True)
    ):
        assert len(h) == len(v) - 24  # validation = the last holdout points, as before
        assert len(t) == len(h) - k * 24  # the calibration stretch is cut off training
        targets = cy[idx == i]
        # the calibration targets are exactly the held-out stretch, in k windows
        np.testing.assert_array_equal(np.sort(targets.ravel()), np.sort(h[len(t) :]))
        # ... and none of them is a validation point
        assert not np.isin(v[-24:], targets).any()
    # validation windows are unchanged by the split
    x, y, _ = data["val"]
    np.testing.assert_array_equal(y[0], series.values[0][-24:])
    # in-sample (version 1's scheme): members train on everything before validation
    old = prepare(ForecastConfig(**{**cfg.__dict__, "calibration": "in-sample"}))
    assert [len(t) for t in old["train_hist"]] == [len(h) for h in old["hist"]]
    with pytest.raises(ValueError, match="calibration must be"):
        prepare(ForecastConfig(**{**cfg.__dict__, "calibration": "nope"}))


def test_calibration_windows_per_series_cap_and_floor() -> None:
    hists = [np.zeros(1000)]  # one series: wants 400 windows, the cap leaves a quarter of it
    cfg = ForecastConfig(holdout=48, calib_windows=1)
    assert calibration_windows_per_series(cfg, hists) == 250 // 48
    in_sample = ForecastConfig(holdout=48, calib_windows=1, calibration="in-sample")
    assert calibration_windows_per_series(in_sample, hists) == 400
    many = [np.zeros(1000)] * 414  # M4 hourly: one window per series is enough
    assert calibration_windows_per_series(cfg, many) == 1
    assert calibration_windows_per_series(ForecastConfig(holdout=48, calib_windows=2), many) == 2
    assert calibration_windows_per_series(cfg, [np.zeros(30)] * 500) == 1  # never 0


def test_coverage_hand_computed() -> None:
    y = np.array([[1.0, 2.0, 3.0, 4.0]])
    lo = np.array([[0.0, 2.0, 3.5, 5.0]])
    hi = np.array([[2.0, 2.0, 4.0, 6.0]])
    assert coverage(y, lo, hi) == pytest.approx(50.0)  # ends count as inside


def test_held_out_calibration_covers_where_in_sample_residuals_do_not() -> None:
    """Residuals of windows the members fitted are smaller than fresh ones: a table fitted on
    them under-covers new data; one fitted on fresh windows covers at the nominal level."""
    rng = np.random.default_rng(1)
    n, h = 3000, 4
    med = np.full((n, h), 100.0)
    q = np.stack([med * np.exp(-0.1), med, med * np.exp(0.1)], axis=-1)
    shift = np.zeros(n)
    fresh = lambda s: med * np.exp(rng.normal(0, s, (n, h)))  # noqa: E731
    fitted, cal, new = fresh(0.06), fresh(0.1), fresh(0.1)
    for table, expect_lo, expect_hi in (
        (conformal_table(cal, med, q, shift), 78.0, 82.0),
        (conformal_table(fitted, med, q, shift), 0.0, 70.0),
    ):
        lo, hi = intervals(med, q, shift, table, 80)
        assert expect_lo <= coverage(new, lo, hi) <= expect_hi


def test_member_plan_mixes_plain_and_mase_weighted_members() -> None:
    assert member_plan(ForecastConfig(members=3)) == [(0, "none"), (1, "none"), (2, "none")]
    mixed = member_plan(ForecastConfig(members=5, mase_members=2, seed=7))
    assert mixed == [(7, "none"), (8, "none"), (9, "none"), (7, "mase"), (8, "mase")]
    assert {w for _, w in member_plan(ForecastConfig(members=2, loss_weight="mase"))} == {"mase"}


def test_mase_weights() -> None:
    t = np.arange(72)
    calm = 100 + np.sin(2 * np.pi * t / 24) + 0.01 * t  # small seasonal changes vs its level
    wild = 100 + 30 * np.random.default_rng(0).normal(size=72)
    w = mase_weights(np.stack([calm, wild, wild]), 24, cap=1e9)
    assert w.mean() == pytest.approx(1.0) and w[0] > 10 * w[1] and w[1] == pytest.approx(w[2])
    capped = mase_weights(np.stack([calm, wild, wild]), 24, cap=3.0)
    assert capped[0] / capped[1] == pytest.approx(3.0)
    assert np.isfinite(mase_weights(np.full((2, 48), 5.0), 24)).all()  # constant windows


# ------------------------------------------------------------------ model and graph


def _ensemble(n: int, cell: str = "gru") -> ForecastEnsemble:
    torch.manual_seed(0)
    nets = [ForecastNet(cell, WINDOW, PERIOD, hidden=8, horizon=HORIZON) for _ in range(n)]
    for net in nets:  # the head starts at zero; make members differ
        torch.nn.init.normal_(net.head.weight, std=0.3)
        torch.nn.init.normal_(net.head.bias, std=0.3)
    return ForecastEnsemble(nets).eval()


def test_median_over_members_matches_numpy() -> None:
    for m in (1, 2, 3, 4):
        a = torch.randn(m, 5, 6)
        np.testing.assert_allclose(
            median_over_members(a).numpy(), np.median(a.numpy(), 0), rtol=1e-6, atol=1e-6
        )


def test_skip_connection_starts_at_seasonal_naive() -> None:
    net = ForecastNet("lstm", WINDOW, PERIOD, hidden=4, horizon=HORIZON + 5)
    ens = ForecastEnsemble([net]).eval()
    x = torch.from_numpy(_series(WINDOW, 3).astype(np.float32))[None]
    with torch.no_grad():
        med, q = ens(x)
    expected = seasonal_naive(x[0].numpy(), HORIZON + 5, PERIOD)
    np.testing.assert_allclose(med[0].numpy(), expected, rtol=1e-5)
    assert (q[..., 0] <= q[..., 1]).all() and (q[..., 1] <= q[..., 2]).all()


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_constant_and_zero_windows_are_finite(cell: str) -> None:
    ens = _ensemble(3, cell)
    x = torch.stack([torch.zeros(WINDOW), torch.full((WINDOW,), 7.0), torch.full((WINDOW,), 1e-9)])
    with torch.no_grad():
        med, q = ens(x)
    assert torch.isfinite(med).all() and torch.isfinite(q).all()
    assert med[0].abs().max() < 1e-3  # a zero series stays (about) zero


@pytest.mark.parametrize("members", [2, 3])
def test_onnx_parity_and_odd_inputs(tmp_path: Path, members: int) -> None:
    from training.common.onnx_utils import ort_session
    from training.forecast.export import export_onnx, rel_diff

    ens = _ensemble(members)
    path = export_onnx(ens, tmp_path / "m.onnx", WINDOW)
    sess = ort_session(path)
    assert [i.name for i in sess.get_inputs()] == ["values"]
    assert [o.name for o in sess.get_outputs()] == ["median", "quantiles"]
    assert sess.get_outputs()[1].shape[1:] == [HORIZON, 3]
    rng = np.random.default_rng(0)
    for b in (1, 4, 33):
        x = (rng.random((b, WINDOW)) * 100 + 1).astype(np.float32)
        med_o, q_o = sess.run(None, {"values": x})
        with torch.no_grad():
            med_t, q_t = ens(torch.from_numpy(x))
        assert med_o.shape == (b, HORIZON) and q_o.shape == (b, HORIZON, 3)
        assert rel_diff(med_o, med_t.numpy()) <= 1e-4
        assert rel_diff(q_o, q_t.numpy()) <= 1e-4
    odd = np.stack([np.zeros(WINDOW), np.full(WINDOW, 3.0)]).astype(np.float32)
    med_o, q_o = sess.run(None, {"values": odd})
    assert np.isfinite(med_o).all() and np.isfinite(q_o).all()


# ------------------------------------------------------------------ intervals


def test_intervals_monotone_and_calibrated_on_synthetic() -> None:
    rng = np.random.default_rng(0)
    n, h = 4000, 3
    med = np.full((n, h), 100.0)
    spread = 0.1
    q = np.stack([med * np.exp(-spread), med, med * np.exp(spread)], axis=-1)
    y = med * np.exp(rng.normal(0, spread / 1.2816, (n, h)))  # q10/q90 exactly right
    shift = np.zeros(n)
    table = conformal_table(y, med, q, shift)
    assert table.shape == (h, len(LEVEL_GRID))
    assert interval_k(table, 80)[0] == pytest.approx(1.0, abs=0.06)
    widths = []
    for lev in (10, 50, 80, 95, 99.5, 99.99):
        lo, hi = intervals(med, q, shift, table, lev)
        assert (lo <= med).all() and (med <= hi).all()
        widths.append(float((hi - lo).mean()))
    assert widths == sorted(widths) and len(set(widths)) == len(widths)
    lo, hi = intervals(med, q, shift, table, 80)
    assert 0.78 < np.mean((y >= lo) & (y <= hi)) < 0.82
    with pytest.raises(ValueError):
        interval_k(table, 100)


# ------------------------------------------------------------------ CLI


TINY = ["--window", str(WINDOW), "--horizon", str(HORIZON), "--holdout", str(HORIZON)]


def test_cli_m4_wide_dry_run(
    tmp_path: Path,
    m4_csv: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A dry run publishes the next free version of <file>-<cell> under its run folder only."""
    from contract import card as cards

    monkeypatch.chdir(tmp_path)
    run = tmp_path / "run"
    argv = ["forecast", "train", "--data", str(m4_csv), "--dry-run", *TINY, "--cell", "lstm"]
    argv += ["--mase-members", "1", "--run-dir", str(run)]
    assert main(argv) == 0
    out = run / "models/forecast/wide-lstm/1"
    assert not (tmp_path / "models").exists()
    assert isinstance(cards.read(out), cards.ForecastCard)
    card = json.loads((out / "card.json").read_text())
    assert card["schema_version"] == 2 and (card["name"], card["version"]) == ("wide-lstm", "1")
    assert (card["training"]["name"], card["training"]["version"]) == ("wide-lstm", "1")
    assert card["task"] == "forecast" and card["cell"] == "lstm"
    assert card["window"] == WINDOW and card["max_horizon"] == HORIZON
    assert card["onnx"]["inputs"][0]["name"] == "values"
    assert [o["name"] for o in card["onnx"]["outputs"]] == ["median", "quantiles"]
    assert isinstance(card["datasets"], list) and card["datasets"][0]["file"] == "wide.csv"
    assert card["parity"]["passed"] is True
    assert len(card["metrics"]["members"]) == 2
    assert len(card["intervals"]["table"]) == HORIZON
    iv = card["intervals"]
    assert iv["calibration_mode"] == "held-out"
    assert "held out of member training" in iv["calibration"]
    assert card["members"]["loss_weights"] == ["none", "mase"]
    assert "'mase' by one graph unit" in card["training"]["loss"]
    assert card["preprocessing"]["normalise"]["rule"] == "floorlog"
    ps = card["intervals"]["per_series"]
    assert ps["rule"] == "scaled" and (ps["min_origins"], ps["max_origins"]) == (1, 1)
    assert ps["min_scores"] == HORIZON // 2
    assert card["experiments"][-1]["variant"] == "shipped"
    assert set(card["experiments"][-1]["validation"]) >= {"smape", "mase", "coverage"}
    for f in ("model.onnx", "curves.png", "parity.png"):
        assert (out / f).stat().st_size > 0
    assert (run / "ckpt.pt").exists()
    # the run folder now holds a run: a second one there is refused unless asked for
    assert main(argv) == 2
    assert "already holds a run" in capsys.readouterr().err
    # a second dry run takes the next version beside the first, never over it
    assert main([*argv, "--overwrite-run"]) == 0
    assert sorted(p.name for p in (run / "models/forecast/wide-lstm").iterdir()) == ["1", "2"]
    # --dry-run never writes into a models folder
    assert main([*argv, "--out", str(tmp_path / "m/forecast/x/1")]) == 2


def test_cli_long_csv_train_evaluate_export(
    tmp_path: Path,
    long_csv: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)
    run = tmp_path / "run"
    rc = main(
        [
            "forecast",
            "train",
            "--data",
            str(long_csv),
            "--time-col",
            "date",
            "--targets",
            "OT",
            "--dry-run",
            *TINY,
            "--members",
            "1",
            "--no-export",
            "--val-windows",
            "2",
            "--run-dir",
            str(run),
        ]
    )
    assert rc == 0
    assert "seqserve-train forecast export --checkpoint" in capsys.readouterr().out
    assert not (run / "models").exists()
    ckpt = str(run / "ckpt.pt")
    assert main(["forecast", "evaluate", "--checkpoint", ckpt, "--json"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert set(metrics) >= {"ensemble", "seasonal_naive", "naive", "interval_coverage"}
    assert np.isfinite(metrics["ensemble"]["smape"])
    out = tmp_path / "models/forecast/ett/1"
    assert main(["forecast", "export", "--checkpoint", ckpt, "--out", str(out)]) == 0
    assert f"Published ett:1 to {out}" in capsys.readouterr().out
    card = json.loads((out / "card.json").read_text())
    assert (card["name"], card["version"]) == ("ett", "1")
    assert card["datasets"][0]["file"] == "ett.csv" and card["freq"] == "h"
    assert card["metrics"]["seasonal_naive"]["smape"] > 0
    assert "(2 windows of 24)" in card["metrics"]["validation"]
    # no flags: the checkpoint's name (<file>-<cell>), next free version; a dry run's
    # checkpoint stays under its run folder unless a models folder is named
    assert main(["forecast", "export", "--checkpoint", ckpt]) == 0
    assert "holds a dry run" in capsys.readouterr().out
    assert json.loads((run / "models/forecast/ett-gru/1/card.json").read_text())["name"]
    assert not (tmp_path / "models/forecast/ett-gru").exists()
    assert main(["forecast", "export", "--checkpoint", ckpt, "--models-dir", "models"]) == 0
    assert json.loads((tmp_path / "models/forecast/ett-gru/1/card.json").read_text())["name"]
    # a published version is never written over
    before = (out / "card.json").read_bytes()
    assert main(["forecast", "export", "--checkpoint", ckpt, "--out", str(out)]) == 2
    assert f"{out} already exists" in capsys.readouterr().err
    assert (out / "card.json").read_bytes() == before


def test_few_calibration_windows_still_give_wider_intervals_at_higher_levels() -> None:
    """Six windows cannot tell 80% from 95% apart (both would be the largest residual): the
    levels they do not resolve continue on the tail rule, so 95% stays wider than 80%."""
    from training.forecast.train import resolved_level

    rng = np.random.default_rng(0)
    y = rng.lognormal(3, 0.2, (6, 24))
    med, shift = np.full((6, 24), np.exp(3)), np.zeros(6)
    q = np.stack([med * 0.8, med, med * 1.25], axis=-1)
    table = conformal_table(y, med, q, shift)
    assert resolved_level(6) == 70
    assert np.all(np.diff(table[:, LEVEL_GRID.index(70) :], axis=1) > 0)
    assert np.all(interval_k(table, 95) > interval_k(table, 80))
    assert resolved_level(414) == LEVEL_GRID[-1]  # the shipped models' calibration: unchanged
