"""Word-level LM: tokenizer, model, dry-run train + export through the CLI, ONNX parity.

Runs on a tiny WikiText-style corpus written into tmp_path, so it needs no shared data.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.helpers import train_and_export_lm
from training.cli import main
from training.lm.data import build_vocab, read_tokens
from training.lm.model import LMConfig, RNNModel
from training.lm.tokenizer import build_tokenizer, round_trip_mismatches
from training.lm.tokens import EOS, UNK

onnxruntime = pytest.importorskip("onnxruntime")

LINES = [
    " = Happy birthday = ",
    " ",
    " Happy birthday , my friend ! The well @-@ known band played for 1 @,@ 000 people . ",
    " I don 't think John 's car cost 3 @.@ 5 million dollars in the U.S. , Mr. Smith said . ",
    " The players ' fees rose ; the team 's <unk> ( a new stadium ) was \" great \" ... ",
    ' My friend said : " Happy birthday ! " and the band played again . ',
    " In 1998 the U.S. band was well @-@ known for a 2 @,@ 500 @-@ seat show . ",
]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("wikitext")
    train = root / "train.txt"
    valid = root / "valid.txt"
    train.write_text("\n".join(LINES * 12) + "\n", encoding="utf-8")
    valid.write_text("\n".join(LINES[2:] * 4) + "\n", encoding="utf-8")
    return {"train": train, "valid": valid, "root": root}


@pytest.fixture(scope="module")
def vocab(corpus: dict[str, Path]) -> list[str]:
    return build_vocab(read_tokens(corpus["train"]))


def _names(tensors: list[dict[str, object]]) -> list[object]:
    return [t["name"] for t in tensors]


def _split(tok, text: str) -> str:  # type: ignore[no-untyped-def]
    return " ".join(tok.encode(text).tokens)


def test_vocab_is_frequency_sorted_with_specials(vocab: list[str], corpus: dict[str, Path]) -> None:
    tokens = read_tokens(corpus["train"])
    assert tokens[:5] == ["=", "Happy", "birthday", "=", EOS]  # one <eos> per line
    assert tokens.count(EOS) == len(LINES) * 12
    assert UNK in vocab and EOS in vocab and len(set(vocab)) == len(vocab)
    counts = [tokens.count(w) for w in vocab]
    assert counts == sorted(counts, reverse=True)  # adaptive softmax cutoffs rely on this


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Happy birthday, my friend!", "Happy birthday , my friend !"),
        ("The well-known band", "The well @-@ known band"),
        ("1,000 people cost 3.5 million", "1 @,@ 000 people cost 3 @.@ 5 million"),
        ("I don't think John's car", "I don 't think John 's car"),
        ("I don’t think", "I don 't think"),
        ("the players' fees", "the players ' fees"),
        ("the U.S. band, Mr. Smith said.", "the U.S. band , Mr. Smith said ."),
        ('"great"... (a new stadium)', '" great " ... ( a new stadium )'),
        ("happy BIRTHDAY", "<unk> <unk>"),  # case is kept: WikiText is cased
        ("Happy birthday!\nMy friend", "Happy birthday ! <eos> My friend"),  # line break = <eos>
    ],
)
def test_tokenizer_normalizes_typed_text(vocab: list[str], text: str, expected: str) -> None:
    tok = build_tokenizer(vocab)
    assert _split(tok, text) == expected


def test_tokenizer_round_trip_on_wikitext_lines(
    vocab: list[str], corpus: dict[str, Path], tmp_path: Path
) -> None:
    path = tmp_path / "tokenizer.json"
    build_tokenizer(vocab).save(str(path))
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(path))  # what serving does
    checked, bad, examples = round_trip_mismatches(tok, LINES, vocab)
    assert checked == len([x for x in LINES if x.strip()])
    assert bad == 0, examples
    line = LINES[3]
    assert tok.encode(line).ids == [vocab.index(w) for w in line.split()]
    assert tok.encode("<unk> x").ids[0] == vocab.index(UNK)


def test_config_errors() -> None:
    with pytest.raises(ValueError, match="emb size == hidden size"):
        RNNModel(
            LMConfig(vocab_size=50, emb_size=8, hidden_size=16, softmax="full", tie_weights=True)
        )
    with pytest.raises(ValueError, match="--softmax full"):
        RNNModel(LMConfig(vocab_size=50, emb_size=16, hidden_size=16, tie_weights=True))
    with pytest.raises(ValueError, match="cutoffs"):
        RNNModel(LMConfig(vocab_size=50, cutoffs=[10, 80]))
    with pytest.raises(ValueError, match="unknown cell"):
        RNNModel(LMConfig(vocab_size=50, cell="transformer", cutoffs=[10, 20]))
    tied = RNNModel(
        LMConfig(vocab_size=50, emb_size=16, hidden_size=16, softmax="full", tie_weights=True)
    )
    assert tied.decoder is not None and tied.decoder.weight is tied.encoder.weight


def test_resume_continues_weights_history_and_best(
    exported: dict[str, Path], corpus: dict[str, Path], tmp_path: Path
) -> None:
    first = torch.load(exported["run"] / "best.pt", weights_only=True)
    out = tmp_path / "resumed"
    common = ["--train", str(corpus["train"]), "--dev", str(corpus["valid"])]
    args = ["lm", "train", *common, "--threads", "1", "--dry-run", "--no-export"]
    args += ["--run-dir", str(out)]
    # architecture flags are ignored: the checkpoint's own configuration is used
    assert (
        main(
            [
                *args,
                "--hidden-size",
                "99",
                "--lr",
                "1",
                "--resume",
                str(exported["run"] / "best.pt"),
            ]
        )
        == 0
    )
    history = json.loads((out / "history.json").read_text())
    assert len(history) == len(first["history"]) + 1
    assert history[-1]["epoch"] == pytest.approx(first["epoch"] + 1)
    assert history[-1]["lr"] == 1.0
    resumed = torch.load(out / "best.pt", weights_only=True)
    assert resumed["model_config"] == first["model_config"]
    assert resumed["valid_loss"] <= first["valid_loss"]  # never replaced by a worse model


def test_resume_refuses_another_vocabulary(
    exported: dict[str, Path],
    corpus: dict[str, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    other = tmp_path / "other.txt"
    other.write_text("completely different words here\n" * 50, encoding="utf-8")
    args = ["lm", "train", "--train", str(other), "--dev", str(corpus["valid"])]
    resume = ["--resume", str(exported["run"] / "best.pt")]
    assert main([*args, "--dry-run", "--no-export", "--run-dir", str(tmp_path / "x"), *resume]) == 2
    assert "was trained with another vocabulary than this data" in capsys.readouterr().err


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_target_log_prob_equals_gathered_distribution(cell: str) -> None:
    torch.manual_seed(0)
    model = RNNModel(
        LMConfig(vocab_size=60, cell=cell, emb_size=8, hidden_size=12, cutoffs=[5, 20])
    ).eval()
    hidden = torch.randn(40, 12)
    targets = torch.arange(40) + 15  # covers the shortlist and both tail clusters
    full = model.log_prob(hidden)
    assert torch.allclose(full.exp().sum(-1), torch.ones(40), atol=1e-5)
    expected = full.gather(1, targets.unsqueeze(1)).squeeze(1)
    assert torch.allclose(model.target_log_prob(hidden, targets), expected, atol=1e-5)


@pytest.fixture(scope="module")
def exported(corpus: dict[str, Path]) -> dict[str, Path]:
    run = corpus["root"] / "run"
    folder = corpus["root"] / "next-word" / "tiny-lm" / "3"
    train_and_export_lm(
        corpus["train"], corpus["valid"], run, folder, export_args=("--quantize", "auto")
    )
    return {"run": run, "folder": folder}


def test_dry_run_writes_run_artifacts(
    exported: dict[str, Path], corpus: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    run = exported["run"]
    capsys.readouterr()
    assert (
        main(
            [
                "lm",
                "evaluate",
                "--checkpoint",
                str(run / "best.pt"),
                "--dev",
                str(corpus["valid"]),
                "--threads",
                "1",
            ]
        )
        == 0
    )
    evaluated = json.loads(capsys.readouterr().out)
    history = json.loads((run / "history.json").read_text())
    assert len(history) == 1 and math.isfinite(history[0]["valid_ppl"])
    assert evaluated["perplexity"] == pytest.approx(history[0]["valid_ppl"], rel=1e-4)
    assert 0 <= evaluated["top1"] <= evaluated["top5"] <= 1
    ckpt = torch.load(run / "best.pt", weights_only=True)  # plain data, no pickled modules
    assert ckpt["model_config"]["hidden_size"] == 24
    assert ckpt["model_config"]["cutoffs"] == [10, 30]
    assert ckpt["vocab"][0] == "," or ckpt["vocab"][0] == EOS  # most frequent first
    assert (run / "curves.png").stat().st_size > 0


def test_export_card(exported: dict[str, Path], corpus: dict[str, Path]) -> None:
    folder = exported["folder"]
    names = {p.name for p in folder.iterdir()}
    assert {"model.onnx", "score.onnx", "weights.bin", "tokenizer.json", "card.json"} <= names
    card = json.loads((folder / "card.json").read_text())
    # named like the registry names it: models/<task>/<name>/<version>/
    assert (card["task"], card["name"], card["version"]) == ("next-word", "tiny-lm", "3")
    # both graphs read one weights file; each big tensor is stored in it once
    weights = card["weights"]
    assert weights["file"] == "weights.bin" and weights["bytes_saved"] > 0
    assert weights["tensors_referenced"] > weights["tensors_stored"] > 0
    # card schema 2: every graph input/output is {name, dtype, shape}, read from the graph
    assert card["schema_version"] == 2
    assert _names(card["onnx"]["inputs"]) == ["input_ids", "h0", "c0"]
    assert _names(card["onnx"]["outputs"]) == ["log_probs", "hn", "cn"]
    assert _names(card["score_onnx"]["inputs"]) == ["input_ids", "target_ids", "h0", "c0"]
    vocab_size = card["vocab_size"]
    assert card["onnx"]["inputs"][0] == {
        "name": "input_ids",
        "dtype": "int64",
        "shape": ["batch", "seq"],
    }
    assert card["onnx"]["inputs"][1] == {
        "name": "h0",
        "dtype": "float32",
        "shape": [2, "batch", 24],
    }
    assert card["onnx"]["outputs"][0]["shape"] == ["batch", vocab_size]
    assert card["score_onnx"]["outputs"][0] == {
        "name": "token_log_probs",
        "dtype": "float32",
        "shape": ["batch", "seq"],
    }
    assert card["onnx"]["opset"] >= 17 and card["score_onnx"]["sha256"]
    assert card["state"]["shape"] == [2, "batch", 24]
    vocab = json.loads((folder / "tokenizer.json").read_text())["model"]["vocab"]
    assert card["vocab_size"] == len(vocab)
    assert card["special_tokens"]["eos"]["id"] == vocab[EOS]
    assert card["special_tokens"]["unk"]["id"] == vocab[UNK]
    parity = card["metrics"]["parity"]
    assert parity["passed"] and max(parity["max_abs_diff"].values()) <= 1e-4
    metrics = card["metrics"]
    # the ONNX fp32 graph on valid.txt reproduces the perplexity PyTorch measured in training
    pytorch_ppl = card["training"]["best_valid_perplexity_pytorch"]
    assert metrics["valid_perplexity_fp32"] == pytest.approx(pytorch_ppl, rel=1e-4)
    assert metrics["valid_perplexity_int8"] is not None  # measured even when fp32 ships
    quant = card["quantization"]
    assert quant["shipped"] is False and card["precision"] == "fp32"  # tiny model fits
    assert quant["weight-only"]["max_abs_diff_vs_pytorch_fp32"]["split_state"] <= 1e-5
    assert quant["dynamic"]["quantized"]["lstm_nodes"] == 2
    assert 0 <= metrics["valid_top1"] <= metrics["valid_top5"] <= 1
    assert card["tokenizer"]["round_trip"]["valid"]["mismatched_lines"] == 0
    assert card["tokenizer"]["round_trip"]["train"]["lines"] == 6 * 12
    train, valid = card["datasets"]  # a list of files, each with its role
    assert (train["role"], valid["role"]) == ("train", "valid") and train["sha256"]
    assert card["training"]["export_config"]["quantize"] == "auto"
    assert (
        card["training"]["train_config"]["eval_interval"] == 1500
    )  # one default, in the dataclass
    assert card["folder_bytes"] == sum(p.stat().st_size for p in folder.iterdir())


def _sessions(folder: Path) -> tuple[object, object]:
    from training.common.onnx_utils import ort_session

    return ort_session(folder / "model.onnx"), ort_session(folder / "score.onnx")


def _zeros(batch: int, layers: int = 2, hidden: int = 24) -> dict[str, np.ndarray]:
    return {n: np.zeros((layers, batch, hidden), np.float32) for n in ("h0", "c0")}


def test_onnx_matches_pytorch_and_split_state(exported: dict[str, Path]) -> None:
    from training.lm.evaluate import load_checkpoint

    model, _ = load_checkpoint(exported["run"] / "best.pt")
    nxt, _ = _sessions(exported["folder"])
    rng = np.random.default_rng(0)
    for batch, seq in [(1, 1), (2, 7), (5, 12)]:
        ids = rng.integers(0, model.config.vocab_size, (batch, seq))
        whole = nxt.run(None, {"input_ids": ids, **_zeros(batch)})  # type: ignore[attr-defined]
        with torch.no_grad():
            out, (h, c) = model.features(torch.from_numpy(ids), model.init_hidden(batch))
            expected = model.log_prob(out[:, -1]).numpy()
        assert np.abs(whole[0] - expected).max() <= 1e-4
        assert np.abs(whole[1] - h.numpy()).max() <= 1e-4
        assert np.allclose(np.exp(whole[0]).sum(1), 1.0, atol=1e-4)
        if seq > 1:
            half = seq // 2
            first = nxt.run(
                None,
                {
                    "input_ids": ids[:, :half],  # type: ignore[attr-defined]
                    **_zeros(batch),
                },
            )
            second = nxt.run(
                None,
                {
                    "input_ids": ids[:, half:],  # type: ignore[attr-defined]
                    "h0": first[1],
                    "c0": first[2],
                },
            )
            for a, b in zip(second, whole, strict=True):
                assert np.abs(a - b).max() <= 1e-4


def test_score_graph_agrees_with_model_graph(exported: dict[str, Path]) -> None:
    nxt, score = _sessions(exported["folder"])
    card = json.loads((exported["folder"] / "card.json").read_text())
    rng = np.random.default_rng(1)
    batch, seq = 3, 6
    ids = rng.integers(0, card["vocab_size"], (batch, seq + 1))
    inputs, targets = ids[:, :-1], ids[:, 1:]
    tok_lp, hn, _ = score.run(
        None,
        {
            "input_ids": inputs,  # type: ignore[attr-defined]
            "target_ids": targets,
            **_zeros(batch),
        },
    )
    assert tok_lp.shape == (batch, seq)
    for t in range(seq):
        lp, h_t, _ = nxt.run(
            None,
            {
                "input_ids": inputs[:, : t + 1],  # type: ignore[attr-defined]
                **_zeros(batch),
            },
        )
        gathered = np.take_along_axis(lp, targets[:, t : t + 1], axis=1)[:, 0]
        assert np.abs(tok_lp[:, t] - gathered).max() <= 1e-4
    assert np.abs(h_t - hn).max() <= 1e-5


def test_gru_dry_run_exports_single_state(corpus: dict[str, Path], tmp_path: Path) -> None:
    gru = (
        "--cell",
        "gru",
        "--emb-size",
        "8",
        "--hidden-size",
        "8",
        "--layers",
        "1",
        "--cutoffs",
        "10",
        "30",
    )
    train_and_export_lm(
        corpus["train"],
        corpus["valid"],
        tmp_path / "run",
        tmp_path / "next-word" / "gru-lm" / "1",
        train_args=gru,
        export_args=("--quantize", "no", "--topk-positions", "50"),
    )
    card = json.loads((tmp_path / "next-word" / "gru-lm" / "1" / "card.json").read_text())
    assert card["cell"] == "gru"
    assert _names(card["onnx"]["inputs"]) == ["input_ids", "h0"]
    assert _names(card["score_onnx"]["outputs"]) == ["token_log_probs", "hn"]
    assert card["metrics"]["parity"]["passed"]


def test_weight_only_int8_keeps_split_state_exact(
    exported: dict[str, Path], tmp_path: Path
) -> None:
    from training.common.onnx_utils import ort_session
    from training.lm.quantize import quantize_weights_int8

    src = exported["folder"] / "model.onnx"  # the tiny model ships fp32
    converted = quantize_weights_int8(src, tmp_path / "int8.onnx", min_elements=256)
    assert converted.get("Gather") == 1 and converted.get("LSTM") == 4 and converted["MatMul"] >= 1
    fp32, int8 = ort_session(src), ort_session(tmp_path / "int8.onnx")
    ids = np.random.default_rng(2).integers(0, 40, (4, 10))
    whole = int8.run(None, {"input_ids": ids, **_zeros(4)})
    first = int8.run(None, {"input_ids": ids[:, :4], **_zeros(4)})
    second = int8.run(None, {"input_ids": ids[:, 4:], "h0": first[1], "c0": first[2]})
    for a, b in zip(second, whole, strict=True):
        assert np.abs(a - b).max() <= 1e-5
    reference = fp32.run(None, {"input_ids": ids, **_zeros(4)})[0]
    assert 0 < np.abs(whole[0] - reference).max() < 0.05  # quantized, but close
