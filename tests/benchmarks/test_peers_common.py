"""The peers benchmark's shared model code encodes and predicts exactly like seqserve.

If these drift, the peers table compares different work; no peer package is needed here.
"""

from __future__ import annotations

import numpy as np

from app.registry import Registry, read_record
from app.services.sentiment import SentimentModel
from app.settings import Settings
from benchmarks.peers.common import SENTENCE, SENTIMENT_DIR, Sentiment

TEXTS = [SENTENCE, "[PAD]", "a [PAD] film", "", "   ", "great", "terrible, boring film"]


def test_encode_and_probabilities_match_the_service() -> None:
    reg = Registry(SENTIMENT_DIR.parents[2], ["CPUExecutionProvider"])
    service = SentimentModel(reg.open_record(read_record(SENTIMENT_DIR)), Settings())
    peer = Sentiment()
    for text in TEXTS:  # one at a time (tokenizer.encode) and all together (encode_batch)
        assert service.encode([text])[0][0].tolist() == peer.encode([text])[0].tolist()
    ours = [ids for ids, _ in service.encode(TEXTS)]
    assert [a.tolist() for a in ours] == [b.tolist() for b in peer.encode(TEXTS)]
    np.testing.assert_allclose(np.stack(service._predict(ours)), peer.predict(TEXTS), atol=1e-6)


def test_sentence_is_21_known_tokens() -> None:
    model = Sentiment()
    ids = model.encode([SENTENCE])[0]
    assert len(ids) == 21
    assert model.unk_id not in ids.tolist()
