"""Transfer-set augmentation for distillation (Tang et al. 2019, section 3.3).

A teacher labels more text than the labelled set holds; the new texts come from the training
sentences by three rules applied word by word: masking (the word becomes the student's unknown
token), replacement by another word of the corpus with the same coarse shape (the paper uses
the same part of speech; without a tagger we draw from words seen with the same neighbours'
frequency class), and n-gram sampling (keep only a random window of 1-5 words).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import numpy as np

MASK = "[UNK]"


class Augmenter:
    def __init__(
        self,
        corpus: Sequence[str],
        p_mask: float = 0.1,
        p_replace: float = 0.1,
        p_ngram: float = 0.25,
        seed: int = 0,
    ) -> None:
        self.p_mask, self.p_replace, self.p_ngram = p_mask, p_replace, p_ngram
        self.rng = np.random.default_rng(seed)
        counts = Counter(w for text in corpus for w in text.split())
        # Frequency classes (log2 of the count): a frequent word is swapped for a frequent word,
        # a rare one for a rare one, a cheap stand-in for the paper's same-POS rule.
        self.by_class: dict[int, list[str]] = {}
        self.word_class: dict[str, int] = {}
        for word, n in counts.items():
            c = int(np.log2(n))
            self.word_class[word] = c
            self.by_class.setdefault(c, []).append(word)

    def one(self, text: str) -> str:
        words = text.split()
        out = []
        for w in words:
            r = self.rng.random()
            if r < self.p_mask:
                out.append(MASK)
            elif r < self.p_mask + self.p_replace and w in self.word_class:
                pool = self.by_class[self.word_class[w]]
                out.append(pool[int(self.rng.integers(len(pool)))])
            else:
                out.append(w)
        if len(out) > 1 and self.rng.random() < self.p_ngram:
            n = int(self.rng.integers(1, min(5, len(out)) + 1))
            start = int(self.rng.integers(0, len(out) - n + 1))
            out = out[start : start + n]
        return " ".join(out)

    def many(self, texts: Sequence[str], copies: int) -> list[str]:
        """``copies`` augmented variants per text, duplicates and unchanged texts dropped."""
        seen = set(texts)
        out: list[str] = []
        for text in texts:
            for _ in range(copies):
                new = self.one(text)
                if new and new not in seen and new.replace(MASK, "").strip():
                    seen.add(new)
                    out.append(new)
        return out
