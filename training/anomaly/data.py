"""Training series for the anomaly forecaster, and the NAB part used to validate the detector.

Training reads M4 hourly and the ETTh1 columns by default (any CSV that
``training.forecast.data.load_series`` reads), resampled to several sampling rates (block means
for coarser, linear interpolation plus noise for finer rates), plus synthetic series (seasonal,
random walks, square waves, spiky load, flat stretches). No NAB data and no NAB labels are used
for training.

Each training sequence is a random crop, normalised exactly as serving normalises a series
(``contract.anomaly.normalise``: scale learnt from its first ``warmup`` points),
with the warm-up length itself drawn at random so the net does not depend on one value.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from contract.anomaly import normalise

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data"
M4_PATH = SHARED / "m4_hourly" / "Hourly-train.csv"
ETTH1_PATH = SHARED / "etth1" / "ETTh1.csv"
NAB_DIR = SHARED / "nab"


# --------------------------------------------------------------------------------------------
# resampling and synthetic series


def block_mean(x: np.ndarray, k: int) -> np.ndarray:
    n = len(x) // k
    return x[: n * k].reshape(n, k).mean(axis=1)


def upsample(x: np.ndarray, k: int, rng: np.random.Generator, noise: float = 0.3) -> np.ndarray:
    """Linear interpolation to k points per step, plus noise scaled to the step-to-step spread
    (finer sampling of a real process is not a straight line)."""
    t = np.arange((len(x) - 1) * k + 1) / k
    y = np.interp(t, np.arange(len(x)), x)
    spread = float(np.std(np.diff(x))) if len(x) > 2 else 0.0
    return y + rng.normal(0.0, noise * spread / np.sqrt(k), len(y))


def synthetic(n: int, rng: np.random.Generator, profile: bool = True) -> np.ndarray:
    """One synthetic series of length n from a random family (``profile``: include the
    repeated-daily-profile family)."""
    t = np.arange(n, dtype=np.float64)
    kind = int(rng.integers(0, 7 if profile else 6))
    if not profile and kind == 5:
        kind = 6
    period = float(rng.choice([24, 48, 96, 144, 288]))
    level = rng.normal(0, 5)
    if kind == 0:  # seasonal + noise
        x = np.sin(2 * np.pi * t / period + rng.uniform(0, 6.3)) * rng.uniform(0.5, 3)
        x += rng.normal(0, rng.uniform(0.01, 0.5), n)
    elif kind == 1:  # random walk with drift
        x = np.cumsum(rng.normal(rng.normal(0, 0.01), 1, n)) * rng.uniform(0.1, 1)
    elif kind == 2:  # square wave (daily on/off)
        duty = rng.uniform(0.2, 0.8)
        x = ((t % period) / period < duty).astype(np.float64) * rng.uniform(1, 10)
        x += rng.normal(0, rng.uniform(0.0, 0.2), n)
    elif kind == 3:  # AR(1) noise
        phi = rng.uniform(0.0, 0.99)
        e = rng.normal(0, 1, n)
        x = np.zeros(n)
        for i in range(1, n):
            x[i] = phi * x[i - 1] + e[i]
    elif kind == 4:  # spiky load: low baseline with positive bursts
        x = rng.gamma(2.0, 1.0, n)
        x[rng.random(n) < rng.uniform(0.005, 0.05)] += rng.uniform(5, 30)
    elif kind == 5:  # a random daily profile repeated, with noise and slow amplitude drift
        p = int(period)
        shape = np.convolve(rng.normal(0, 1, p + 8).cumsum(), np.ones(8) / 8, "valid")[:p]
        x = np.tile(shape, n // p + 1)[:n] * (1 + 0.1 * np.sin(t / (7 * period)))
        x += rng.normal(0, rng.uniform(0.01, 0.3) * float(np.std(shape) + 1e-9), n)
    else:  # mostly flat with occasional small steps
        x = np.cumsum((rng.random(n) < 0.01) * rng.normal(0, 1, n))
        x += rng.normal(0, rng.uniform(0, 0.05), n) * (rng.random() < 0.5)
    return level + x * rng.uniform(0.1, 100)


def source_series(paths: list[str] | list[Path]) -> list[np.ndarray]:
    """The real training series: every series of every file that exists (M4 wide rows, or the
    value columns of a CSV with a time column, told apart by the header)."""
    from training.forecast.data import load_series

    out: list[np.ndarray] = []
    for path in paths:
        if Path(path).is_file():
            out += load_series(path).values
    return out


def multi_rate(
    series: list[np.ndarray],
    rng: np.random.Generator,
    min_len: int,
    factors: tuple[int, ...] | list[int] = (2, 4, 12),
) -> list[np.ndarray]:
    """Each series at several sampling rates: x1, block means /2 and /4, and linear
    interpolation by each of ``factors`` (x12: hourly -> 5-minute). Only series >= min_len
    are kept."""
    out = []
    for x in series:
        coarse = [block_mean(x, k) for k in (2, 4)]
        for v in (x, *coarse, *(upsample(x, k, rng) for k in factors)):
            if len(v) >= min_len:
                out.append(v)
    return out


# --------------------------------------------------------------------------------------------
# batches


@dataclass
class SequenceSampler:
    """Random normalised crops [B, L] (input u[0..L-1]; the target is u shifted by one)."""

    pool: list[np.ndarray]
    length: int
    warmup_range: tuple[int, int]
    clip: float
    synthetic_frac: float = 0.3
    profile: bool = True  # include the repeated-daily-profile synthetic family

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        out = np.zeros((n, self.length), dtype=np.float32)
        for i in range(n):
            if not self.pool or rng.random() < self.synthetic_frac:
                x = synthetic(self.length, rng, self.profile)
            else:
                s = self.pool[int(rng.integers(0, len(self.pool)))]
                start = int(rng.integers(0, len(s) - self.length + 1))
                x = s[start : start + self.length]
            w = int(rng.integers(self.warmup_range[0], self.warmup_range[1] + 1))
            u = normalise(x, {**_NORM, "warmup": w, "clip": self.clip})
            out[i] = np.clip(u, -self.clip, self.clip)
        return out


_NORM = {"scale_floor_rel": 1e-3, "scale_floor_abs": 1e-9}


def split_sources(
    series: list[np.ndarray], val_frac: float, rng: np.random.Generator
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Hold whole source series out for validation (before any resampling)."""
    order = rng.permutation(len(series))
    n_val = max(1, int(round(val_frac * len(series)))) if len(series) > 1 else 0
    val = [series[i] for i in order[:n_val]]
    train = [series[i] for i in order[n_val:]]
    return train, val


# --------------------------------------------------------------------------------------------
# NAB (validation of the detector only: values for scoring, never for training)


@dataclass
class NabSeries:
    key: str  # "<category>/<file>.csv"
    timestamps: list[str]
    values: np.ndarray


def read_nab(nab_dir: str | Path = NAB_DIR) -> list[NabSeries]:
    root = Path(nab_dir) / "data"
    out = []
    for path in sorted(root.glob("*/*.csv")):
        with open(path, newline="") as fh:
            rows = list(csv.DictReader(fh))
        vals = np.asarray([float(r["value"]) for r in rows], dtype=np.float64)
        key = f"{path.parent.name}/{path.name}"
        out.append(NabSeries(key, [r["timestamp"] for r in rows], vals))
    return out


def nab_windows(nab_dir: str | Path = NAB_DIR) -> dict[str, list[list[str]]]:
    data: dict[str, list[list[str]]] = json.loads((Path(nab_dir) / "windows.json").read_text())
    return data
