"""ONNX against PyTorch on several shapes, and a run split in two halves with the state
carried over against the whole run: serving's carried state is only right if both agree."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from training.common.onnx_utils import max_abs_diff, ort_session
from training.lm.graphs import state_names
from training.lm.model import RNNModel, State

PARITY_TOLERANCE = 1e-4  # max abs diff on log-probs, ONNX fp32 vs PyTorch
PARITY_SHAPES = [(1, 1), (1, 23), (3, 9), (8, 40)]  # (batch, seq)


def _torch_run(
    model: RNNModel, ids: torch.Tensor, targets: torch.Tensor, state: State
) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
    """PyTorch's last-position log-probs, target log-probs and new state (the reference)."""
    with torch.no_grad():
        out, new_state = model.features(ids, state)
        last = model.log_prob(out[:, -1]).numpy()
        full = model.log_prob(out.reshape(-1, out.size(-1)))
        token = full.gather(1, targets.reshape(-1, 1)).reshape(targets.shape).numpy()
    return last, token, [s.numpy() for s in new_state]


def _ort_run(
    next_sess: Any,
    score_sess: Any,
    ids: np.ndarray,
    targets: np.ndarray,
    state: list[np.ndarray],
    s_in: list[str],
    s_out: list[str],
) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
    """The same three from model.onnx and score.onnx."""
    feeds = dict(zip(s_in, state, strict=True))
    nxt = next_sess.run(["log_probs", *s_out], {"input_ids": ids, **feeds})
    sc = score_sess.run(
        ["token_log_probs", *s_out], {"input_ids": ids, "target_ids": targets, **feeds}
    )
    return nxt[0], sc[0], list(nxt[1:])


def check_parity(
    model: RNNModel, model_path: Path, score_path: Path, threads: int = 1, seed: int = 0
) -> dict[str, Any]:
    """Max abs differences ONNX vs PyTorch, halves-with-carried-state vs whole, score vs gather."""
    s_in, s_out = state_names(model)
    next_sess, score_sess = ort_session(model_path, threads), ort_session(score_path, threads)
    gen = torch.Generator().manual_seed(seed)
    cases, worst = (
        [],
        {
            "log_probs": 0.0,
            "token_log_probs": 0.0,
            "state": 0.0,
            "split_state": 0.0,
            "score_vs_gather": 0.0,
        },
    )
    layers, hidden, vocab = (model.config.layers, model.config.hidden_size, model.config.vocab_size)
    for batch, seq in PARITY_SHAPES:
        ids = torch.randint(0, vocab, (batch, seq + 1), generator=gen)
        inputs, targets = ids[:, :-1], ids[:, 1:]
        state = tuple(0.5 * torch.randn(layers, batch, hidden, generator=gen) for _ in s_in)
        t_last, t_tok, t_state = _torch_run(model, inputs, targets, state)
        st_np = [s.numpy() for s in state]
        o_last, o_tok, o_state = _ort_run(
            next_sess, score_sess, inputs.numpy(), targets.numpy(), st_np, s_in, s_out
        )
        case = {
            "batch": batch,
            "seq": seq,
            "log_probs": max_abs_diff(o_last, t_last),
            "token_log_probs": max_abs_diff(o_tok, t_tok),
            "state": max(max_abs_diff(a, b) for a, b in zip(o_state, t_state, strict=True)),
            # the score graph's last position = model.onnx's distribution gathered at it
            "score_vs_gather": max_abs_diff(
                o_tok[:, -1], np.take_along_axis(o_last, targets.numpy()[:, -1:], 1)[:, 0]
            ),
        }
        if seq >= 2:
            half = seq // 2
            a_last, a_tok, a_state = _ort_run(
                next_sess,
                score_sess,
                inputs[:, :half].numpy(),
                targets[:, :half].numpy(),
                st_np,
                s_in,
                s_out,
            )
            b_last, b_tok, b_state = _ort_run(
                next_sess,
                score_sess,
                inputs[:, half:].numpy(),
                targets[:, half:].numpy(),
                a_state,
                s_in,
                s_out,
            )
            case["split_state"] = max(
                max_abs_diff(b_last, o_last),
                max_abs_diff(np.concatenate([a_tok, b_tok], axis=1), o_tok),
                *(max_abs_diff(x, y) for x, y in zip(b_state, o_state, strict=True)),
            )
        for key in worst:
            worst[key] = max(worst[key], float(case.get(key, 0.0)))
        cases.append(case)
    return {
        "max_abs_diff": worst,
        "tolerance": PARITY_TOLERANCE,
        "cases": cases,
        "passed": all(v <= PARITY_TOLERANCE for v in worst.values()),
    }
