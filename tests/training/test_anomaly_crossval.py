"""The NAB cross-validation harness (training.anomaly.crossval) and its fast scorer
(training.anomaly.nabscore) on a small fake catalogue: no NAB data needed."""

from __future__ import annotations

import datetime as dt
from collections import Counter

import numpy as np
import pytest

from training.anomaly import crossval, nabscore
from training.anomaly.data import NAB_DIR, NabSeries

CATS = {"artificialNoAnomaly": 5, "artificialWithAnomaly": 6, "realAdExchange": 6, "realX": 7}


def fake_keys() -> list[str]:
    return [f"{c}/s{i}.csv" for c, n in CATS.items() for i in range(n)]


@pytest.mark.parametrize("folds", [2, 3])
@pytest.mark.parametrize("seed", [0, 1, 7])
def test_folds_partition_and_are_stratified_by_category(folds, seed):
    keys = fake_keys()
    split = crossval.stratified_folds(keys, folds, seed)
    assert len(split) == folds
    flat = sorted(i for f in split for i in f)
    assert flat == list(range(len(keys)))  # a partition
    sizes = [len(f) for f in split]
    assert max(sizes) - min(sizes) <= 1
    for cat, n in CATS.items():
        per_fold = [sum(keys[i].startswith(cat + "/") for i in f) for f in split]
        assert max(per_fold) - min(per_fold) <= 1, (cat, per_fold)
        assert sum(per_fold) == n


def test_folds_depend_on_the_seed_only():
    keys = fake_keys()
    assert crossval.stratified_folds(keys, 2, 3) == crossval.stratified_folds(keys, 2, 3)
    assert len({repr(crossval.stratified_folds(keys, 2, s)) for s in range(6)}) > 1
    with pytest.raises(ValueError):
        crossval.stratified_folds(keys, 1, 0)


def test_grid_expansion_drops_knobs_of_switched_off_detectors():
    grid = [{"long": [400, 1000], "shift_short": [0, 10], "shift_scale": [1.0, 2.0]}]
    settings = crossval.expand(grid)
    assert len(settings) == 2 * (1 + 2)
    assert {"long": 400, "shift_short": 0} in settings
    with pytest.raises(ValueError):
        crossval.expand([{"warmup": [100, 150]}])  # would change the graph's input


# --- a fake NAB corpus --------------------------------------------------------------------


def stamps(n: int) -> list[str]:
    t0 = dt.datetime(2020, 1, 1)
    return [(t0 + dt.timedelta(minutes=5 * i)).strftime("%Y-%m-%d %H:%M:%S") for i in range(n)]


def fake_corpus(n_series: int = 8, n: int = 1200, seed: int = 0):
    """Series with one labelled window each (half the series), spikes inside the windows."""
    rng = np.random.default_rng(seed)
    nab, windows = [], {}
    for k in range(n_series):
        cat = ["catA", "catB"][k % 2]
        ts = stamps(n)
        v = 10 + rng.normal(0, 1, n)
        key = f"{cat}/s{k}.csv"
        if k % 4 != 3:
            lo = 700 + 30 * k
            v[lo + 20] += 15
            windows[key] = [[ts[lo] + ".000000", ts[lo + 60] + ".000000"]]
        else:
            windows[key] = []
        nab.append(NabSeries(key, ts, v))
    return nab, windows


def test_fast_scorer_perfect_null_and_false_positives():
    nab, windows = fake_corpus()
    files = nabscore.nab_files(nab, windows)
    null = [np.full(len(s.values), 0.5) for s in nab]
    assert nabscore.score(files, null)["standard"] == pytest.approx(0.0)
    perfect = []
    for f, s in zip(files, nab, strict=True):
        sc = np.zeros(len(s.values))
        if f.windows:
            sc[f.start + int(np.flatnonzero(f.window == 0)[0])] = 1.0  # a window's first row
        perfect.append(sc)
    got = nabscore.score(files, perfect, nabscore.PROFILE_WEIGHTS)
    assert got["standard"] == pytest.approx(100.0)
    assert got["reward_low_FN_rate"] == pytest.approx(100.0)
    late = [p.copy() for p in perfect]
    for sc in late:
        hit = np.flatnonzero(sc)
        if len(hit):
            sc[hit[0]] = 0.0
            sc[hit[0] + 55] = 1.0  # late in the window: less reward
    assert 0 < nabscore.score(files, late)["standard"] < 100
    noisy = [p.copy() for p in perfect]
    noisy[3][1000] = 1.0  # a false positive in a series without windows
    assert nabscore.score(files, noisy)["standard"] < 100
    # probationary rows never count
    early = [p.copy() for p in perfect]
    early[3][10] = 1.0
    assert nabscore.score(files, early)["standard"] == pytest.approx(100.0)


def test_crossvalidate_chooses_knobs_on_the_training_part_only():
    nab, windows = fake_corpus(n_series=8)
    card = {
        "scoring": {"warmup": 100, "long": 300, "min_history": 30, "spatial_tolerance": 0.0},
        "threshold": 0.4,
    }
    # a causal stand-in for the graph outputs: yesterday's value, unit scale
    outputs = []
    for s in nab:
        from contract.anomaly import normalise

        u = normalise(s.values, {**crossval_defaults(), **card["scoring"]})
        outputs.append({"mean": u.astype(np.float32), "log_scale": np.zeros(len(u), np.float32)})
    settings = crossval.expand([{"threshold": [0.4, 0.99], "suppress": [20]}])
    rep = crossval.crossvalidate(
        nab, outputs, card, settings, windows, (0, 1), 2, None, log=lambda m: None
    )
    files = nabscore.nab_files(nab, windows)
    for split in rep["splits"]:
        held = [f["held_out"] for f in split["folds"]]
        assert sorted(k for h in held for k in h) == sorted(s.key for s in nab)
        for f in split["folds"]:
            train = [i for i, s in enumerate(nab) if s.key not in f["held_out"]]
            best = max(
                settings,
                key=lambda k: nabscore.score(
                    [files[i] for i in train],
                    [crossval.setting_scores(nab, outputs, card, k)[i] for i in train],
                )["standard"],
            )
            assert f["knobs"] == best
        assert Counter(k.split("/")[0] for k in held[0]) == Counter({"catA": 2, "catB": 2})
    assert rep["spread"]["splits"] == 2
    assert rep["splits"][0]["pooled_fast"]["standard"] > 50  # the spikes are found


def crossval_defaults() -> dict:
    from contract.anomaly import DEFAULT_SCORING

    return dict(DEFAULT_SCORING)


@pytest.mark.skipif(not (NAB_DIR / "windows.json").is_file(), reason="no NAB data")
def test_fast_scorer_equals_the_official_scorer(tmp_path):
    from training.anomaly.data import nab_windows, read_nab

    nab = read_nab()
    rng = np.random.default_rng(0)
    scores = []
    for s in nab:  # sparse random alarms: a result set with TPs, FPs and misses
        sc = np.zeros(len(s.values))
        hit = rng.random(len(sc)) < 0.002
        sc[hit] = rng.uniform(0.3, 1.0, int(hit.sum()))
        scores.append(sc)
    got = nabscore.check_against_official(nab, nab_windows(), scores, tmp_path)
    for p, v in got["official"].items():
        assert got["fast"][p] == pytest.approx(v, abs=0.006)
