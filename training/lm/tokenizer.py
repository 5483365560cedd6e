"""A Hugging Face ``tokenizers`` WordLevel tokenizer that turns typed text into WikiText tokens.

Serving only calls ``Tokenizer.from_file(path).encode(text).ids``, so every normalization rule
lives in the artifact:

* the normalizer rewrites what WikiText marks with ``@`` (``well-known`` -> ``well @-@ known``,
  ``1,000`` -> ``1 @,@ 000``, ``3.5`` -> ``3 @.@ 5``) and splits apostrophes the WikiText way
  (``don't`` -> ``don 't``, ``John's`` -> ``John 's``: train.txt has ``don 't``, never ``n't``);
* a line break becomes ``<eos>``, the end-of-line token the model was trained with;
* the pre-tokenizer keeps abbreviations that are WikiText tokens (``U.S.``, ``Mr.``, ``No.``
  ...: taken from the vocabulary itself) and otherwise splits punctuation off words.

Case is kept (WikiText is cased). An already tokenized WikiText line encodes to the same ids as
splitting it on spaces (checked by ``round_trip_mismatches``).

A model trained on plain text (``--text-format plain``) learned the tokens of ``pretokenize``:
the same normalizer and generic pieces, without protected words, so its tokenizer
(``build_tokenizer(vocab, protect=False)``) cuts typed text exactly as its training text was cut.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from functools import lru_cache
from pathlib import Path

from tokenizers import AddedToken, Regex, Tokenizer, normalizers, pre_tokenizers
from tokenizers.models import WordLevel

from training.lm.tokens import EOS, UNK

# (pattern, replacement) applied in order by the normalizer. \w is Unicode-aware (Oniguruma).
NORMALIZE_RULES: list[tuple[str, str]] = [
    (r"\r?\n", f" {EOS} "),  # a line break ends a line, as <eos> does in the training text
    (r"(?<=\w)[’‘](?=\w)", "'"),  # typographic apostrophe inside a word
    (r"(?<=\w)'", " '"),  # don't -> don 't ; John's -> John 's ; players' -> players '
    (r"(?<=\w)-(?=\w)", " @-@ "),  # well-known -> well @-@ known
    (r"(?<=\d),(?=\d)", " @,@ "),  # 1,000 -> 1 @,@ 000
    (r"(?<=\d)\.(?=\d)", " @.@ "),  # 3.5 -> 3 @.@ 5
]
# Generic pieces: WikiText markers, apostrophe suffixes, words (with combining marks),
# dotted names such as About.com, ellipses, then any single other character.
GENERIC_PIECES = [
    re.escape(EOS),
    re.escape(UNK),
    r"@[-.,]@",
    r"'[\w\p{M}]+",
    r"[\w\p{M}]+(?:\.[\w\p{M}]+)*",
    r"\.{2,}",
    r"[^\w\s]",
]
_PY_GENERIC = re.compile(r"<eos>|<unk>|@[-.,]@|'\w+|\w+(?:\.\w+)*|\.{2,}|[^\w\s]")


def _generic_split(token: str) -> list[str]:
    """Python twin of the generic rules, used to find vocabulary words they would break."""
    text = token
    for pattern, repl in NORMALIZE_RULES:
        text = re.sub(pattern.replace(r"\p{M}", ""), repl, text)
    return _PY_GENERIC.findall(text)


def protected_words(vocab: Iterable[str]) -> list[str]:
    """Vocabulary words with punctuation (``U.S.``, ``Mr.``, ``1.e4``) kept whole."""
    special = {UNK, EOS}
    return sorted(
        (w for w in vocab if w not in special and _generic_split(w) != [w]),
        key=lambda w: (-len(w), w),
    )


def build_tokenizer(vocab: Sequence[str], protect: bool = True) -> Tokenizer:
    """WordLevel tokenizer whose ids are the language model's ids (``vocab`` order).

    ``protect``: keep the vocabulary's words with punctuation (``U.S.``) whole, as WikiText
    has them; a model trained on plain text uses ``protect=False`` (its words were cut by
    ``pretokenize``, which knows no such words)."""
    tok = Tokenizer(WordLevel({w: i for i, w in enumerate(vocab)}, unk_token=UNK))
    tok.normalizer = normalizers.Sequence(
        [normalizers.NFC()] + [normalizers.Replace(Regex(p), r) for p, r in NORMALIZE_RULES]
    )
    protected = protected_words(vocab) if protect else []
    pieces = list(GENERIC_PIECES)
    if protected:
        # whole words only: not glued to a letter/digit/dot on either side
        alternation = "|".join(re.escape(w) for w in protected)
        pieces.insert(0, rf"(?<![\w.])(?:{alternation})(?![\w.])")
    tok.pre_tokenizer = pre_tokenizers.Split(
        Regex("|".join(pieces)), behavior="removed", invert=True
    )
    # <unk>/<eos> written literally in text (WikiText has <unk>) map to their ids
    tok.add_special_tokens([AddedToken(UNK, normalized=False), AddedToken(EOS, normalized=False)])
    return tok


@lru_cache(maxsize=1)
def _generic_tokenizer() -> Tokenizer:
    return build_tokenizer([UNK, EOS], protect=False)


def pretokenize(text: str) -> list[str]:
    """The words ``build_tokenizer(vocab, protect=False)`` cuts ``text`` into (before the
    vocabulary lookup): how plain training text becomes tokens."""
    tok = _generic_tokenizer()
    assert tok.normalizer is not None and tok.pre_tokenizer is not None
    pieces = tok.pre_tokenizer.pre_tokenize_str(tok.normalizer.normalize_str(text))
    return [piece for piece, _ in pieces]


def save_tokenizer(vocab: Sequence[str], path: str | Path) -> Path:
    path = Path(path)
    build_tokenizer(vocab).save(str(path))
    return path


def round_trip_mismatches(
    tok: Tokenizer,
    lines: Iterable[str],
    vocab: Sequence[str],
    split: Callable[[str], list[str]] = str.split,
) -> tuple[int, int, list[str]]:
    """(lines checked, lines whose ids differ from the training tokens, a few examples).

    The training tokens of a line are ``split(line)``: splitting on spaces for WikiText,
    ``pretokenize`` for plain text. An example shows the training words up to the first one
    encoded differently, and the tokens the tokenizer produced from there.
    """
    index = {w: i for i, w in enumerate(vocab)}
    unk = index[UNK]
    checked, bad = 0, 0
    examples: list[str] = []
    batch = [line for line in lines if line.strip()]
    for line, enc in zip(batch, tok.encode_batch(batch), strict=True):
        checked += 1
        expected = [index.get(w, unk) for w in split(line)]
        if enc.ids != expected:
            bad += 1
            if len(examples) < 5:  # the first differing WikiText token and what it became
                words = split(line)
                pairs = enumerate(zip(enc.ids, expected, strict=False))
                i = next((k for k, (a, b) in pairs if a != b), min(len(enc.ids), len(expected)))
                got = " ".join(enc.tokens[i : i + 3])
                examples.append(f"{' '.join(words[max(0, i - 2) : i + 1])!r} -> ...{got!r}")
    return checked, bad, examples
