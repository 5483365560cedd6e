"""``RNNModel``: embedding -> RNN/LSTM/GRU -> (adaptive) softmax, plus its JSON-able config.

The same module serves training (``loss``), export of the next-word graph (``last_log_probs``)
and of the scoring graph (``target_log_probs``), so PyTorch and ONNX share one code path.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from training.common.config_cli import option

CELLS = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}
State = tuple[torch.Tensor, ...]


@dataclass
class LMConfig:
    """Architecture; saved in the checkpoint and the model card. Each field with help is a flag
    of ``lm train`` (``training.common.config_cli``), so its default is written only here."""

    vocab_size: int = 0  # set from the training text
    cell: str = option("lstm", "recurrent cell type", choices=sorted(CELLS))
    emb_size: int = option(400, "word embedding size")
    hidden_size: int = option(400, "hidden units per layer")
    layers: int = option(2, "number of recurrent layers")
    dropout: float = option(0.4, "dropout on embeddings, between layers and before the softmax")
    tie_weights: bool = option(
        False,
        "tie embedding and output weights (needs --softmax full, emb size == hidden size)",
        flag="--tied",
    )
    softmax: str = option(
        "adaptive",
        "adaptive softmax (fast for a 33k vocabulary) or a full softmax",
        choices=["adaptive", "full"],
    )
    cutoffs: list[int] = option(
        [2000, 10000],
        "adaptive softmax cluster boundaries (ids are frequency-sorted; scaled down to fit a "
        "small vocabulary)",
    )
    div_value: float = option(4.0, "adaptive softmax: tail projection shrink factor per cluster")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LMConfig:
        return cls(**data)

    def validate(self) -> None:
        if self.cell not in CELLS:
            raise ValueError(f"unknown cell {self.cell!r}; choose one of {sorted(CELLS)}")
        if self.softmax not in ("adaptive", "full"):
            raise ValueError(f"unknown softmax {self.softmax!r}; choose 'adaptive' or 'full'")
        if self.tie_weights:
            if self.softmax != "full":
                raise ValueError(
                    "tied embeddings need --softmax full (the adaptive softmax has "
                    "no single output matrix to share)"
                )
            if self.emb_size != self.hidden_size:
                raise ValueError(
                    f"tied embeddings need emb size == hidden size, got "
                    f"emb {self.emb_size} and hidden {self.hidden_size}"
                )
        if self.softmax == "adaptive":
            c = self.cutoffs
            if not c or sorted(set(c)) != list(c) or c[0] < 1 or c[-1] > self.vocab_size - 1:
                raise ValueError(
                    f"cutoffs {c} must be increasing integers in [1, "
                    f"{self.vocab_size - 1}] for a vocabulary of {self.vocab_size}"
                )


class RNNModel(nn.Module):
    def __init__(self, config: LMConfig) -> None:
        super().__init__()
        config.validate()
        self.config = config
        self.drop = nn.Dropout(config.dropout)
        self.encoder = nn.Embedding(config.vocab_size, config.emb_size)
        inter_dropout = config.dropout if config.layers > 1 else 0.0
        self.rnn = CELLS[config.cell](
            config.emb_size,
            config.hidden_size,
            config.layers,
            dropout=inter_dropout,
            batch_first=True,
        )
        self.asm: nn.AdaptiveLogSoftmaxWithLoss | None = None
        self.decoder: nn.Linear | None = None
        if config.softmax == "adaptive":
            self.asm = nn.AdaptiveLogSoftmaxWithLoss(
                config.hidden_size, config.vocab_size, config.cutoffs, div_value=config.div_value
            )
        else:
            self.decoder = nn.Linear(config.hidden_size, config.vocab_size)
            if config.tie_weights:
                self.decoder.weight = self.encoder.weight
        nn.init.uniform_(self.encoder.weight, -0.1, 0.1)

    @property
    def is_lstm(self) -> bool:
        return self.config.cell == "lstm"

    def init_hidden(self, batch_size: int) -> State:
        shape = (self.config.layers, batch_size, self.config.hidden_size)
        weight = self.encoder.weight
        n = 2 if self.is_lstm else 1
        return tuple(weight.new_zeros(shape) for _ in range(n))

    def features(self, input_ids: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        """Top-layer outputs [batch, seq, hidden] and the new state."""
        emb = self.drop(self.encoder(input_ids))
        if self.is_lstm:
            out, (h, c) = self.rnn(emb, (state[0], state[1]))
            return self.drop(out), (h, c)
        out, h = self.rnn(emb, state[0])
        return self.drop(out), (h,)

    def log_prob(self, hidden: torch.Tensor) -> torch.Tensor:
        """Full log-distribution [N, vocab] for hidden vectors [N, hidden]."""
        if self.asm is not None:
            return self.asm.log_prob(hidden)
        assert self.decoder is not None
        return F.log_softmax(self.decoder(hidden), dim=-1)

    def target_log_prob(self, hidden: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """log p(target) [N] without building the [N, vocab] output (one cluster at a time)."""
        if self.asm is None:
            return self.log_prob(hidden).gather(1, targets.unsqueeze(1)).squeeze(1)
        asm = self.asm
        head_lp = F.log_softmax(asm.head(hidden), dim=-1)
        shortlist = asm.shortlist_size
        idx = targets.clamp(max=shortlist - 1).unsqueeze(1)
        result = head_lp.gather(1, idx).squeeze(1)
        for i, tail in enumerate(asm.tail):
            lo, hi = asm.cutoffs[i], asm.cutoffs[i + 1]
            logits = tail(hidden)
            local = (targets - lo).clamp(min=0, max=hi - lo - 1).unsqueeze(1)
            in_cluster = logits.gather(1, local).squeeze(1) - torch.logsumexp(logits, dim=-1)
            candidate = head_lp[:, shortlist + i] + in_cluster
            result = torch.where((targets >= lo) & (targets < hi), candidate, result)
        return result

    def loss(
        self, input_ids: torch.Tensor, targets: torch.Tensor, state: State
    ) -> tuple[torch.Tensor, State]:
        """Mean negative log-likelihood over all positions, and the new state."""
        out, state = self.features(input_ids, state)
        flat = out.reshape(-1, out.size(-1))
        if self.asm is not None:
            return self.asm(flat, targets.reshape(-1)).loss, state
        assert self.decoder is not None
        return F.cross_entropy(self.decoder(flat), targets.reshape(-1)), state


def repackage(state: State) -> State:
    """Detach the carried state so BPTT stops at the chunk boundary."""
    return tuple(s.detach() for s in state)
