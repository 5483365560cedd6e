from pathlib import Path

from training.sentiment import tokenizer as toks


def test_typed_text_maps_onto_sst_tokenization() -> None:
    tok = toks.train_tokenizer(["it does n't work , the film 's plot is well-made ..."])
    enc = tok.encode("It DOESN'T work, the film\u2019s plot is well-made...")
    assert enc.tokens == [
        "it",
        "does",
        "n't",
        "work",
        ",",
        "the",
        "film",
        "'s",
        "plot",
        "is",
        "well-made",
        "...",
    ]
    assert toks.UNK_ID not in enc.ids


def test_unknown_words_become_unk_and_specials_are_fixed() -> None:
    tok = toks.train_tokenizer(["good movie"])
    assert tok.token_to_id(toks.PAD_TOKEN) == toks.PAD_ID
    assert tok.token_to_id(toks.UNK_TOKEN) == toks.UNK_ID
    assert tok.encode("good zebra movie").ids == [
        tok.token_to_id("good"),
        toks.UNK_ID,
        tok.token_to_id("movie"),
    ]


def test_save_load_round_trip_gives_identical_ids(tmp_path: Path) -> None:
    texts = ["a gorgeous , witty , moving film", "do n't bother", "the cast 's charm"]
    tok = toks.train_tokenizer(texts)
    toks.save(tok, tmp_path / "tokenizer.json")
    loaded = toks.load(tmp_path / "tokenizer.json")
    probe = texts + ["Gorgeous!! Don't bother; unseen words here"]
    assert [e.ids for e in loaded.encode_batch(probe)] == [e.ids for e in tok.encode_batch(probe)]


def test_encode_batch_cuts_to_max_length_and_never_returns_empty() -> None:
    tok = toks.train_tokenizer(["one two three four five"])
    ids = toks.encode_batch(tok, ["one two three four five", "   "], max_length=3)
    assert ids[0] == [tok.token_to_id(w) for w in ("one", "two", "three")]
    assert ids[1] == [toks.UNK_ID]
