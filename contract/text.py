"""Padding of token ids, the rule training and serving share (numpy only).

The exported graphs read the pad id as the end of a text, so a batch is the texts' ids
right-padded with the pad id to the longest of them; training's batches, the parity check and
serving's batches are all built here.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def pad_right(seqs: Sequence[Sequence[int] | np.ndarray], pad_id: int) -> np.ndarray:
    """int64 [len(seqs), longest]: every sequence right-padded with ``pad_id``."""
    width = max(len(s) for s in seqs)
    out = np.full((len(seqs), width), pad_id, dtype=np.int64)
    for row, s in enumerate(seqs):
        out[row, : len(s)] = s
    return out


def pad_sorted(seqs: list[np.ndarray], pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    """Sort by length and right-pad; returns (matrix, order) so results can be put back."""
    if len(seqs) == 1:
        return seqs[0][None, :], np.zeros(1, dtype=np.int64)
    order = np.argsort([len(s) for s in seqs], kind="stable")
    return pad_right([seqs[i] for i in order], pad_id), order
