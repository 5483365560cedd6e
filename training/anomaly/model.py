"""The anomaly forecaster: one GRU layer over the normalised series, one step at a time.

At step t it reads u[t] and the lagged values (shape [batch, time, features], feature 0 = u[t])
and outputs a Gaussian for u[t+1]:
``mean = u[t] + head_0`` (a correction on the last value) and ``log_scale = clamp(head_1)``.
The whole series runs in one recurrent pass; outputs at every step.
"""

from __future__ import annotations

import torch
from torch import nn

LOG_SCALE_MIN, LOG_SCALE_MAX = -7.0, 4.0


class AnomalyNet(nn.Module):
    def __init__(self, hidden: int = 32, layers: int = 1, cell: str = "gru", features: int = 1):
        super().__init__()
        self.hidden, self.layers, self.cell, self.features = hidden, layers, cell, features
        rnn = {"gru": nn.GRU, "lstm": nn.LSTM}[cell]
        self.rnn = rnn(features, hidden, num_layers=layers, batch_first=True)
        self.head = nn.Linear(hidden, 2)

    def forward_state(
        self, x: torch.Tensor, state: torch.Tensor | tuple[torch.Tensor, torch.Tensor] | None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | tuple[torch.Tensor, torch.Tensor]]:
        """(mean [B, T], log_scale [B, T], final state) from x [B, T, F] and a start state."""
        h, state = self.rnn(x, state)
        out = self.head(h)
        mean = x[..., 0] + out[..., 0]
        log_scale = torch.clamp(out[..., 1], LOG_SCALE_MIN, LOG_SCALE_MAX)
        return mean, log_scale, state

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean, log_scale, _ = self.forward_state(x, None)
        return mean, log_scale


def nll(mean: torch.Tensor, log_scale: torch.Tensor, y: torch.Tensor, dist: str) -> torch.Tensor:
    """Mean negative log-likelihood (constants dropped) of y under Gaussian / Laplace."""
    if dist == "gaussian":
        return (0.5 * ((y - mean) * torch.exp(-log_scale)) ** 2 + log_scale).mean()
    if dist == "laplace":
        return (torch.abs(y - mean) * torch.exp(-log_scale) + log_scale).mean()
    raise ValueError(f"unknown distribution {dist!r}")
