"""The language model's special tokens and text formats, torch-free: the tokenizer and the
corpus reader both need them, and neither should pull in the other (or torch) for two strings."""

from __future__ import annotations

EOS = "<eos>"  # ends every line of training text; fed first so a prompt starts like a new line
UNK = "<unk>"  # any word outside the vocabulary (WikiText-2 already writes it in the text)
TEXT_FORMATS = ("wikitext", "plain")
