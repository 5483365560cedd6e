"""Recurrent text classifier whose output does not depend on batch padding.

The cell is picked by name (Elman ``rnn``, ``lstm``, ``gru``). Sequences are right-padded with
``pad_id``; the mask is derived from the ids inside the graph, so the exported ONNX model takes
only ``input_ids``. A bidirectional layer runs its backward direction over each sequence's
*valid* tokens reversed in place (padding stays at the end), so neither direction ever reads
padding before a real token; pooling is masked. Together that makes every example's output
independent of how much padding its batch adds — exactly, and in the exported graph too.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

CELLS = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}
POOLINGS = ("max", "mean", "maxmean", "last")


@dataclass
class ClassifierConfig:
    vocab_size: int
    num_labels: int
    cell: str = "lstm"
    bidirectional: bool = True
    layers: int = 1
    emb_dim: int = 200
    hidden: int = 192
    dropout: float = 0.5
    pooling: str = "maxmean"
    pad_id: int = 0

    def __post_init__(self) -> None:
        if self.cell not in CELLS:
            raise ValueError(f"cell must be one of {sorted(CELLS)}, got {self.cell!r}")
        if self.pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got {self.pooling!r}")


def reverse_valid(x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Reverse each sequence's first ``lengths[b]`` steps, leaving padding in place.

    Applying it twice is the identity, so it also maps backward outputs to original positions.
    """
    steps = torch.arange(x.shape[1], device=x.device).unsqueeze(0)  # [1, T]
    lens = lengths.unsqueeze(1)  # [B, 1]
    idx = torch.where(steps < lens, lens - 1 - steps, steps)  # [B, T]
    return torch.gather(x, 1, idx.unsqueeze(-1).expand(-1, -1, x.shape[2]))


class RNNClassifier(nn.Module):
    def __init__(self, cfg: ClassifierConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.embedding = nn.Embedding(cfg.vocab_size, cfg.emb_dim, padding_idx=cfg.pad_id)
        rnn_cls = CELLS[cfg.cell]
        self.forward_layers = nn.ModuleList()
        self.backward_layers = nn.ModuleList()
        dirs = 2 if cfg.bidirectional else 1
        for layer in range(cfg.layers):
            in_dim = cfg.emb_dim if layer == 0 else cfg.hidden * dirs
            self.forward_layers.append(rnn_cls(in_dim, cfg.hidden, batch_first=True))
            if cfg.bidirectional:
                self.backward_layers.append(rnn_cls(in_dim, cfg.hidden, batch_first=True))
        self.dropout = nn.Dropout(cfg.dropout)
        pooled = cfg.hidden * dirs * (2 if cfg.pooling == "maxmean" else 1)
        self.head = nn.Linear(pooled, cfg.num_labels)

    def encode(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Padding-invariant sentence vector [B, pooled]."""
        mask = input_ids != self.cfg.pad_id  # [B, T]
        lengths = mask.long().sum(1).clamp(min=1)
        x = self.dropout(self.embedding(input_ids))
        for i, fwd in enumerate(self.forward_layers):
            out, _ = fwd(x)
            if self.cfg.bidirectional:
                back, _ = self.backward_layers[i](reverse_valid(x, lengths))
                out = torch.cat([out, reverse_valid(back, lengths)], dim=-1)
            x = self.dropout(out) if i < len(self.forward_layers) - 1 else out
        return self._pool(x, mask, lengths)

    def _pool(self, x: torch.Tensor, mask: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        m = mask.unsqueeze(-1).to(x.dtype)
        parts = []
        if self.cfg.pooling in ("max", "maxmean"):
            parts.append(x.masked_fill(m == 0, -1e4).max(dim=1).values)
        if self.cfg.pooling in ("mean", "maxmean"):
            parts.append((x * m).sum(1) / lengths.unsqueeze(1).to(x.dtype))
        if self.cfg.pooling == "last":
            # Forward direction: last valid step; backward direction: its step 0 output.
            idx = (lengths - 1).view(-1, 1, 1).expand(-1, 1, x.shape[2])
            last = torch.gather(x, 1, idx).squeeze(1)
            if self.cfg.bidirectional:
                h = self.cfg.hidden
                last = torch.cat([last[:, :h], x[:, 0, h:]], dim=-1)
            parts.append(last)
        return torch.cat(parts, dim=-1)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Logits [B, num_labels]."""
        return self.head(self.dropout(self.encode(input_ids)))


class EnsembleClassifier(nn.Module):
    """Averages the members' probabilities: one exported graph, one session in serving."""

    def __init__(self, members: list[RNNClassifier], temperature: float = 1.0) -> None:
        super().__init__()
        self.members = nn.ModuleList(members)
        self.temperature = temperature  # calibration: softmax(log p / T) after the mean

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        probs = [torch.softmax(m(input_ids), dim=-1) for m in self.members]
        mean = torch.stack(probs, 0).mean(0)
        if self.temperature == 1.0:
            return mean
        return torch.softmax(torch.log(mean.clamp_min(1e-30)) / self.temperature, dim=-1)
