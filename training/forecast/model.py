"""The forecaster: a recurrent net that reads whole days and corrects the seasonal-naive forecast.

* Input scaling: ``floorlog`` (the default) or ``affine`` — the host feeds each window in
  units of its own (``contract.forecast.Scaling``), so forecasts are shift- and
  scale-equivariant; ``log``
  (versions 1-2, inside the graph) — ``level = max(mean(last period values), EPS)``,
  ``z = log(max(x / level, RATIO_FLOOR))``.
* The window of ``W`` hours is read as ``W / period`` steps of ``period`` values each (14 steps
  of 24 for a 336-hour window): much faster than one hour per step and works better.
* Output (log-ratio space): median = seasonal naive (last period of ``z`` repeated) + correction;
  lower/upper quantiles = median -/+ softplus(...) so they never cross.
* :class:`ForecastEnsemble` wraps the members, the scaling and the median over members into one
  module that maps raw values to forecasts in the original scale; that is what gets exported.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F  # noqa: N812

from contract.forecast import Scaling

EPS = 1e-6  # floor of the level, so zero / constant-zero windows don't divide by zero
RATIO_FLOOR = 1e-4  # floor of x / level before the log (values <= 0 can't be logged)
CELLS = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}


def level_of(values: torch.Tensor, period: int) -> torch.Tensor:
    """[B, W] -> [B, 1] recent level (mean of the last period), clamped away from zero."""
    return values[:, -period:].mean(dim=1, keepdim=True).clamp(min=EPS)


def to_log_ratio(values: torch.Tensor, level: torch.Tensor) -> torch.Tensor:
    return torch.log((values / level).clamp(min=RATIO_FLOOR))


class ForecastNet(nn.Module):
    """One member: log-ratio window [B, W] -> log-ratio quantiles [B, H, 3] (lo, median, hi)."""

    def __init__(
        self,
        cell: str = "gru",
        window: int = 336,
        period: int = 24,
        hidden: int = 64,
        layers: int = 1,
        horizon: int = 48,
        dropout: float = 0.0,
        linear_skip: bool = False,
        views: float = 0.0,
    ):
        super().__init__()
        if cell not in CELLS:
            raise ValueError(f"unknown cell {cell!r}; choose one of {sorted(CELLS)}")
        if window % period:
            raise ValueError(f"window {window} must be a multiple of the period {period}")
        self.cell, self.window, self.period, self.horizon = cell, window, period, horizon
        # views > 0 (floorlog inputs u = ln(v + views), v = (x - min) / std): the net also reads
        # v's affine view (v minus its last-period mean) and ln(v + 1), both derived in-graph
        # from u, so it sees the window relative to its floor and in plain units at once
        self.views = views
        channels = 3 if views > 0 else 1
        kwargs = {"nonlinearity": "tanh"} if cell == "rnn" else {}
        self.rnn = CELLS[cell](
            input_size=period * channels,
            hidden_size=hidden,
            num_layers=layers,
            batch_first=True,
            dropout=dropout if layers > 1 else 0.0,
            **kwargs,
        )
        self.head = nn.Linear(hidden, horizon * 3)
        # Start as the seasonal-naive forecast with a moderate interval.
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)
        # Optional direct linear map window -> median correction (learns e.g. weekly naive).
        self.linear = nn.Linear(window, horizon) if linear_skip else None
        if self.linear is not None:
            nn.init.zeros_(self.linear.weight)
            nn.init.zeros_(self.linear.bias)
        # Index of the seasonal-naive source for each horizon step (last period, repeated).
        idx = torch.arange(horizon) % period + (window - period)
        self.snaive_idx: torch.Tensor
        self.register_buffer("snaive_idx", idx, persistent=False)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        b = z.shape[0]
        days = self.window // self.period
        steps = z.reshape(b, days, self.period)
        if self.views > 0:
            v = torch.exp(z) - self.views
            flat = v - v[:, -self.period :].mean(dim=1, keepdim=True)
            wide = torch.log1p(v.clamp(min=0.0))
            steps = torch.cat(
                [steps, flat.reshape(b, days, self.period), wide.reshape(b, days, self.period)],
                dim=2,
            )
        out, _ = self.rnn(steps)
        d = self.head(out[:, -1]).reshape(b, self.horizon, 3)
        base = z.index_select(1, self.snaive_idx)
        mid = base + d[..., 1]
        if self.linear is not None:
            mid = mid + self.linear(z)
        lo = mid - F.softplus(d[..., 0])
        hi = mid + F.softplus(d[..., 2])
        return torch.stack([lo, mid, hi], dim=-1)


def median_over_members(outs: torch.Tensor) -> torch.Tensor:
    """Median along dim 0 (mean of the two middle values for an even count); export-friendly."""
    m = outs.shape[0]
    if m == 1:
        return outs[0]
    srt = torch.sort(outs, dim=0).values
    if m % 2:
        return srt[m // 2]
    return 0.5 * (srt[m // 2 - 1] + srt[m // 2])


class ForecastEnsemble(nn.Module):
    """``scaling=None`` (versions 1-2): raw values [B, W] -> (median [B, H], quantiles
    [B, H, 3]) in the (shifted) original scale, the log scaling inside. With a
    ``contract.forecast.Scaling``: the window in graph units (``Scaling.encode``, on the host
    in float64) -> median and quantiles of the future in graph units; the host maps them back
    (``Scaling.decode``)."""

    def __init__(self, members: list[ForecastNet], scaling: Scaling | None = None):
        super().__init__()
        if not members:
            raise ValueError("an ensemble needs at least one member")
        self.members = nn.ModuleList(members)
        self.period = members[0].period
        self.scaling = scaling  # None: the log scaling inside the graph

    def forward(self, values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.scaling is not None:
            outs = torch.stack([m(values) for m in self.members], dim=0)
            qz = median_over_members(outs)
            return qz[..., 1], qz
        level = level_of(values, self.period)
        z = to_log_ratio(values, level)
        outs = torch.stack([m(z) for m in self.members], dim=0)
        q = torch.exp(median_over_members(outs)) * level.unsqueeze(-1)
        return q[..., 1], q
