"""Word-level tokenizer built with Hugging Face ``tokenizers``.

Saved as ``tokenizer.json`` and loaded by serving with the same library, so training and
serving split text identically. The pre-tokenizer reproduces SST-2's PTB-style tokenization
(lower case, punctuation split off, "don't" -> "do n't", "film's" -> "film 's") so that text a
user types maps onto the training vocabulary.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from tokenizers import Regex, Tokenizer, models, normalizers, pre_tokenizers, trainers

PAD_TOKEN = "[PAD]"
UNK_TOKEN = "[UNK]"
PAD_ID = 0
UNK_ID = 1
# One token per match: clitic n't, 's-like suffixes, hyphenated words, punctuation runs.
TOKEN_PATTERN = r"\w+(?=n't\b)|n't\b|'\w+|\w+(?:-\w+)*|[^\w\s]+"


def new_tokenizer() -> Tokenizer:
    tok = Tokenizer(models.WordLevel(unk_token=UNK_TOKEN))
    tok.normalizer = normalizers.Sequence(
        [
            normalizers.NFKC(),
            # Web-scraped reviews (IMDB) break lines with HTML; the tags carry no sentiment.
            normalizers.Replace(Regex(r"(?i)<br\s*/?>"), " "),
            normalizers.Lowercase(),
            # Typographic quotes/apostrophes map to the ASCII ones SST-2 uses.
            normalizers.Replace("\u2019", "'"),
            normalizers.Replace("\u2018", "'"),
        ]
    )
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Split(Regex(TOKEN_PATTERN), "isolated")]
    )
    return tok


def train_tokenizer(
    texts: Iterable[str], min_frequency: int = 1, vocab_size: int = 100_000
) -> Tokenizer:
    """Build the vocabulary from training texts only (dev/test words become ``[UNK]``)."""
    tok = new_tokenizer()
    trainer = trainers.WordLevelTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=[PAD_TOKEN, UNK_TOKEN],
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    assert tok.token_to_id(PAD_TOKEN) == PAD_ID and tok.token_to_id(UNK_TOKEN) == UNK_ID
    return tok


def encode_batch(tok: Tokenizer, texts: list[str], max_length: int) -> list[list[int]]:
    """Ids per text, cut to ``max_length``; never empty (an empty text becomes [UNK])."""
    out = []
    for enc in tok.encode_batch(texts):
        ids = enc.ids[:max_length]
        out.append(ids if ids else [UNK_ID])
    return out


def save(tok: Tokenizer, path: str | Path) -> None:
    tok.save(str(path))


def load(path: str | Path) -> Tokenizer:
    return Tokenizer.from_file(str(path))
