"""Anomaly training pipeline on tiny synthetic data (no ../shared needed): data, BPTT
training, ONNX export with dynamic batch/time axes and parity, NAB results layout, CLI."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from contract import anomaly as sc
from training.anomaly import data as D


def test_multi_rate_and_synthetic_shapes():
    rng = np.random.default_rng(0)
    x = np.sin(np.arange(600) / 5.0)
    pool = D.multi_rate([x], rng, min_len=200)
    assert sorted(len(p) for p in pool) == [300, 600, 1199, 2397, 7189]
    assert len(D.multi_rate([x], rng, min_len=200, factors=[2])) == 3
    for i in range(24):
        s = D.synthetic(500, rng, profile=i % 2 == 0)
        assert s.shape == (500,) and np.all(np.isfinite(s))


def test_sampler_normalises_like_serving():
    rng = np.random.default_rng(1)
    pool = [np.cumsum(rng.normal(size=2000)) + 100]
    sampler = D.SequenceSampler(pool, 256, (60, 60), 20.0, synthetic_frac=0.0)
    batch = sampler.sample(3, np.random.default_rng(2))
    assert batch.shape == (3, 256) and batch.dtype == np.float32
    assert np.abs(batch).max() <= 20.0
    # each row is a crop normalised by its own first 60 points: mean ~0, std ~1 there
    assert np.all(np.abs(np.median(batch[:, :60], axis=1)) < 1e-5)


def test_split_sources_is_disjoint():
    series = [np.full(10, float(i)) for i in range(20)]
    train, val = D.split_sources(series, 0.2, np.random.default_rng(0))
    assert len(val) == 4 and len(train) == 16
    assert {s[0] for s in train}.isdisjoint({s[0] for s in val})


def _tiny_config(tmp_path: Path):
    from training.anomaly.train import AnomalyConfig

    rng = np.random.default_rng(0)
    csv_path = tmp_path / "m4.csv"
    with open(csv_path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["V1"] + [f"V{i}" for i in range(2, 402)])
        for k in range(6):
            v = 50 + 10 * np.sin(np.arange(400) * 2 * np.pi / 24 + k) + rng.normal(0, 1, 400)
            w.writerow([f"H{k}"] + [f"{x:.3f}" for x in v])
    return AnomalyConfig(
        data=[str(csv_path)],
        hidden=8,
        seq_len=200,
        chunk=50,
        batch_size=4,
        steps=16,
        eval_every=8,
        val_batches=1,
        warmup_min=40,
        warmup_max=60,
    )


def _fake_nab(root: Path) -> None:
    """A two-series NAB-like folder (data + windows.json) for the results layout."""
    rng = np.random.default_rng(0)
    windows = {}
    for cat, name in (("catA", "one.csv"), ("catB", "two.csv")):
        (root / "data" / cat).mkdir(parents=True)
        n = 400
        v = 10 + np.sin(np.arange(n) / 8) + rng.normal(0, 0.1, n)
        v[300] += 10
        stamps = [
            f"2020-01-{1 + i // 288:02d} {(i % 288) // 12:02d}:{(i % 12) * 5:02d}:00"
            for i in range(n)
        ]
        with open(root / "data" / cat / name, "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["timestamp", "value"])
            w.writerows(zip(stamps, v, strict=True))
        windows[f"{cat}/{name}"] = [[stamps[290] + ".000000", stamps[310] + ".000000"]]
    (root / "windows.json").write_text(json.dumps(windows))


@pytest.mark.slow
def test_train_export_parity_and_scores(tmp_path):
    import onnx

    from training.anomaly.export import export_model
    from training.anomaly.train import load_checkpoint, run_training, save_checkpoint

    cfg = _tiny_config(tmp_path)
    ckpt = run_training(cfg, log=lambda *_: None)
    assert ckpt["history"] and np.isfinite(ckpt["best_val_nll"])
    path = save_checkpoint(ckpt, tmp_path / "ckpt.pt")
    ckpt = load_checkpoint(path)

    out = tmp_path / "models" / "anomaly" / "tiny" / "1"
    scoring = {"warmup": 60, "long": 200, "min_history": 20}
    card = export_model(
        ckpt, out, scoring=scoring, nab_dir=tmp_path / "no-nab", log=lambda *_: None
    )
    assert card["task"] == "anomaly" and card["name"] == "tiny" and card["version"] == "1"
    assert card["metrics"]["parity"]["passed"]
    assert card["metrics"]["parity"]["right_padding_max_abs_diff"] <= 1e-5
    assert card["scoring"]["warmup"] == 60 and "threshold" in card
    assert len(card["onnx"]["sha256"]) == 64
    ops = {n.op_type for n in onnx.load(str(out / "model.onnx")).graph.node}
    assert "GRU" in ops  # one fused recurrent op, not an unrolled loop
    assert (out / "curves.png").exists()

    # serving path: dynamic batch and time, scores in [0, 1], prefix-consistent
    from training.anomaly.evaluate import ort_runner, run_graph
    from training.common.onnx_utils import ort_session

    run = ort_runner(ort_session(out / "model.onnx"), card)
    rng = np.random.default_rng(5)
    vals = [10 + rng.normal(0, 1, n) for n in (90, 300, 301)]
    outs = run_graph(run, [sc.prepare(v, card) for v in vals])
    scores = [sc.finish(v, o, card) for v, o in zip(vals, outs, strict=True)]
    assert [len(s) for s in scores] == [90, 300, 301]
    assert all(np.all((s >= 0) & (s <= 1)) for s in scores)
    alone = run_graph(run, [sc.prepare(vals[1][:200], card)])[0]
    np.testing.assert_allclose(sc.finish(vals[1][:200], alone, card), scores[1][:200], atol=1e-6)


@pytest.mark.slow
def test_nab_results_layout(tmp_path):
    from training.anomaly.data import read_nab
    from training.anomaly.evaluate import score_all, write_results

    _fake_nab(tmp_path / "nab")
    nab = read_nab(tmp_path / "nab")
    card = {"scoring": {"warmup": 60, "long": 200, "min_history": 20}}

    def persistence(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return x[..., 0], np.zeros(x.shape[:2], np.float32)

    scores, timing = score_all(persistence, [s.values for s in nab], card)
    assert timing["points"] == 800
    write_results(tmp_path / "res", "seqserve", nab, scores)
    with open(tmp_path / "res" / "catA" / "seqserve_one.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 400 and list(rows[0]) == ["timestamp", "value", "anomaly_score"]
    assert all(0.0 <= float(r["anomaly_score"]) <= 1.0 for r in rows)
    assert float(rows[300]["anomaly_score"]) > 0.3


@pytest.mark.slow
def test_cli_dry_run_trains_and_publishes_under_the_run_folder(tmp_path, capsys):
    from training.cli import main

    cfg = _tiny_config(tmp_path)
    rc = main(
        [
            "anomaly",
            "train",
            "--data",
            *cfg.data,
            "--dry-run",
            "--name",
            "cli-tiny",
            "--run-dir",
            str(tmp_path / "run"),
            "--scoring",
            json.dumps({"warmup": 60}),
        ]
    )
    assert rc == 0
    out = tmp_path / "run" / "models" / "anomaly" / "cli-tiny" / "1"
    card = json.loads((out / "card.json").read_text())
    assert card["schema_version"] == 2 and card["name"] == "cli-tiny" and card["version"] == "1"
    assert card["task"] == "anomaly" and card["scoring"]["warmup"] == 60
    assert "nab" not in card["metrics"]  # a dry run skips NAB scoring
    assert [(d["file"], d["role"]) for d in card["datasets"]] == [("m4.csv", "train")]
    assert card["training"]["data"] == cfg.data and card["training"]["steps"] == 16
    assert (tmp_path / "run" / "ckpt.pt").exists()
    assert "Published cli-tiny:1 to" in capsys.readouterr().out


@pytest.mark.slow
def test_cli_dry_run_without_default_data_trains_on_synthetic_series(tmp_path, capsys, monkeypatch):
    """A checkout without ../shared: the default files are skipped with a note."""
    from training.anomaly import train
    from training.cli import main

    missing = str(tmp_path / "shared" / "data" / "m4_hourly" / "Hourly-train.csv")
    monkeypatch.setattr(train, "DEFAULT_DATA", [missing])
    run = tmp_path / "run"
    rc = main(["anomaly", "train", "--dry-run", "--data", missing, "--run-dir", str(run)])
    assert rc == 0
    out = capsys.readouterr().out
    assert f"default data not found, skipped: {missing}" in out
    assert "training on synthetic series only" in out
    card = json.loads((run / "models" / "anomaly" / "nab-gru" / "1" / "card.json").read_text())
    assert card["datasets"] == [] and "synthetic series only" in card["limitations"][-1]


def test_cli_refuses_missing_data_file(tmp_path, capsys):
    from training.cli import main

    rc = main(["anomaly", "train", "--dry-run", "--data", str(tmp_path / "nope.csv")])
    assert rc == 2
    assert "nope.csv" in capsys.readouterr().err


def test_old_checkpoint_config_still_loads():
    from training.anomaly.train import config_from_dict

    old = {"m4": "a.csv", "etth1": None, "hidden": 16, "name": "nab-gru", "version": "1"}
    cfg = config_from_dict(old)
    assert cfg.data == ["a.csv"] and cfg.hidden == 16


def test_cli_registers_anomaly():
    from training.cli import build_parser

    args = build_parser().parse_args(["anomaly", "evaluate", "--model", "x"])
    assert args.task == "anomaly" and args.command == "evaluate"
