"""Train → export → verify on a fixture dataset made here, through the real CLI."""

import json
from pathlib import Path

import numpy as np

from training.cli import main
from training.common.onnx_utils import ort_session
from training.sentiment.data import load_dataset


def _train(train: Path | str, dev: Path | str, run_dir: Path | str, *extra: str) -> int:
    """``seqserve-train sentiment train`` on the given files, one thread."""
    args = ["--train", str(train), "--dev", str(dev), "--run-dir", str(run_dir), "--threads", "1"]
    args += ["--label-names", "0=negative,1=positive"]
    return main(["sentiment", "train", *args, *extra])


def test_trained_toy_model_learns_and_exports_with_parity(tiny_sentiment_models: Path) -> None:
    folder = tiny_sentiment_models / "sentiment" / "toy" / "1"
    card = json.loads((folder / "card.json").read_text())
    assert card["task"] == "sentiment" and card["labels"] == ["negative", "positive"]
    assert card["parity"]["max_abs_diff_probabilities"] <= 1e-4
    assert card["parity"]["max_abs_diff_extra_padding"] <= 1e-6
    assert card["metrics"]["dev_accuracy"] >= 0.9  # the toy task is separable
    train_files = [d for d in card["datasets"] if d["role"] == "train"]
    assert len(train_files[0]["sha256"]) == 64 and train_files[0]["rows"] == 600
    assert card["schema_version"] == 2 and card["name"] == "toy" and card["version"] == "1"
    assert card["onnx"]["inputs"][0]["name"] == "input_ids"
    assert card["onnx"]["outputs"][0] == {
        "name": "probabilities",
        "dtype": "float32",
        "shape": ["batch", 2],
    }
    assert card["training"]["seeds"] == [1, 2] and card["training"]["emb_dim"] == 16
    assert "trained on " in card["description"] and "train.tsv (600 rows)" in card["description"]
    assert card["onnx"]["sha256"] and card["onnx"]["opset"] >= 17
    for name in ("model.onnx", "tokenizer.json", "curves.png"):
        assert (folder / name).is_file()


def test_exported_graph_has_dynamic_batch_and_length(tiny_sentiment_models: Path) -> None:
    folder = tiny_sentiment_models / "sentiment" / "toy" / "1"
    vocab = json.loads((folder / "card.json").read_text())["tokenizer"]["vocab_size"]
    sess = ort_session(folder / "model.onnx")
    for batch, length in [(1, 1), (3, 17), (9, 200)]:
        x = np.random.default_rng(0).integers(2, vocab, (batch, length))
        probs = sess.run(["probabilities"], {"input_ids": x})[0]
        assert probs.shape == (batch, 2)
        assert np.allclose(probs.sum(1), 1, atol=1e-5)


def test_dry_run_and_evaluate_cli(
    tmp_path: Path, sentiment_fixture_data: tuple[Path, Path], capsys
) -> None:
    train, dev = sentiment_fixture_data
    assert _train(train, dev, tmp_path / "run", "--dry-run", "--name", "toy-dry") == 0
    out = tmp_path / "run" / "models" / "sentiment" / "toy-dry" / "1"  # never under models/
    assert "Published toy-dry:1 to " in capsys.readouterr().out
    assert main(["sentiment", "evaluate", "--model", str(out), "--data", str(dev)]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["examples"] == 100 and 0 <= result["accuracy"] <= 1
    # export of a run: with --dry-run it also publishes under the run folder (next version)
    assert main(["sentiment", "export", "--run-dir", str(tmp_path / "run"), "--dry-run"]) == 0
    assert "Published toy-dry:2 to " in capsys.readouterr().out
    assert (out.parent / "2" / "card.json").is_file()


def test_generic_jsonl_and_csv_loaders(tmp_path: Path) -> None:
    (tmp_path / "d.jsonl").write_text(
        '{"review": "fine", "stars": "pos"}\n{"review": "bad", "stars": "neg"}\n'
    )
    ds = load_dataset(tmp_path / "d.jsonl", "review", "stars", label_names=None)
    assert ds.texts == ["fine", "bad"] and ds.labels == ["pos", "neg"]
    (tmp_path / "d.csv").write_text('text,y\n"good, really",1\nawful,0\n')
    ds = load_dataset(
        tmp_path / "d.csv", "text", "y", label_names={"0": "negative", "1": "positive"}
    )
    assert ds.texts == ["good, really", "awful"] and ds.labels == ["positive", "negative"]


def test_pretrained_vectors_seed_the_embeddings(
    tmp_path: Path, sentiment_fixture_data: tuple[Path, Path], capsys
) -> None:
    from training.sentiment.word2vec import corpus_tokens, load_vectors, save_vectors, train_vectors

    train, dev = sentiment_fixture_data
    lines = corpus_tokens([train])
    vocab, vectors = train_vectors(lines, dim=8, epochs=1, min_count=1, batch=256)
    assert vectors.shape == (len(vocab), 8) and "good" in vocab
    save_vectors(tmp_path / "v.txt", vocab, vectors)
    assert np.allclose(
        load_vectors(tmp_path / "v.txt")["good"], vectors[vocab.index("good")], atol=1e-5
    )
    run = tmp_path / "run"
    assert (
        _train(
            train,
            dev,
            run,
            "--dry-run",
            "--pretrained-embeddings",
            str(tmp_path / "v.txt"),
            "--emb-dim",
            "8",
            "--no-export",
        )
        == 0
    )
    summary = json.loads((run / "run.json").read_text())
    assert summary["train_config"]["pretrained_coverage"] > 0.9
    capsys.readouterr()
    again = ("--pretrained-embeddings", str(tmp_path / "v.txt"), "--emb-dim", "16", "--no-export")
    # The run folder holds the first run: refused, unless asked to overwrite it.
    assert _train(train, dev, run, "--limit", "50", "--epochs", "1", *again) == 2
    assert "already holds a run" in capsys.readouterr().err
    overwrite = ("--overwrite-run", "--limit", "50", "--epochs", "1", *again)
    assert _train(train, dev, run, *overwrite) == 2
    assert "8-d vectors but --emb-dim is 16" in capsys.readouterr().err


def test_root_sentences_are_texts_not_inside_longer_ones() -> None:
    from training.sentiment.data import TextDataset, root_sentences

    ds = TextDataset(
        [
            "a fine and moving film about love",
            "moving film",
            "fine and moving",
            "a dull , tedious mess of a film",
            "tedious mess",
        ],
        ["1", "1", "1", "0", "0"],
    )
    assert sorted(root_sentences(ds, min_words=3)) == [0, 3]


def test_distillation_from_an_exported_teacher(
    tmp_path: Path, sentiment_fixture_data: tuple[Path, Path], tiny_sentiment_models: Path, capsys
) -> None:
    train, dev = sentiment_fixture_data
    teacher = tiny_sentiment_models / "sentiment" / "toy" / "1"
    run = tmp_path / "run"
    assert _train(train, dev, run, "--dry-run", "--teacher", str(teacher), "--no-export") == 0
    line = next(
        ln for ln in capsys.readouterr().out.splitlines() if "teacher_train_agreement" in ln
    )
    assert json.loads(line)["teacher_train_agreement"] >= 0.9  # the toy teacher learned the task
    summary = json.loads((tmp_path / "run" / "run.json").read_text())
    assert summary["train_config"]["teacher"] == str(teacher)
