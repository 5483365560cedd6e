import pytest
import torch

from training.sentiment.model import (
    ClassifierConfig,
    EnsembleClassifier,
    RNNClassifier,
    reverse_valid,
)


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
@pytest.mark.parametrize("bidirectional", [True, False])
@pytest.mark.parametrize("pooling", ["maxmean", "last"])
def test_output_does_not_depend_on_padding(cell: str, bidirectional: bool, pooling: str) -> None:
    torch.manual_seed(0)
    cfg = ClassifierConfig(
        vocab_size=40,
        num_labels=2,
        cell=cell,
        bidirectional=bidirectional,
        layers=2,
        emb_dim=8,
        hidden=8,
        pooling=pooling,
    )
    model = RNNClassifier(cfg).eval()
    x = torch.randint(2, 40, (1, 6))
    padded = torch.cat([x, torch.zeros(1, 9, dtype=torch.long)], 1)
    batch = torch.cat([padded, torch.randint(2, 40, (1, 15))], 0)  # a longer neighbour
    with torch.no_grad():
        alone = model(x)
        assert torch.allclose(alone, model(padded), atol=1e-6)
        assert torch.allclose(alone, model(batch)[:1], atol=1e-6)


def test_reverse_valid_reverses_only_valid_steps_and_is_an_involution() -> None:
    x = torch.arange(10, dtype=torch.float32).view(2, 5, 1)
    lengths = torch.tensor([3, 5])
    r = reverse_valid(x, lengths)
    assert r[0, :, 0].tolist() == [2, 1, 0, 3, 4]
    assert r[1, :, 0].tolist() == [9, 8, 7, 6, 5]
    assert torch.equal(reverse_valid(r, lengths), x)


def test_ensemble_averages_member_probabilities() -> None:
    members = [
        RNNClassifier(ClassifierConfig(vocab_size=20, num_labels=3, emb_dim=4, hidden=4)).eval()
        for _ in range(3)
    ]
    x = torch.randint(2, 20, (4, 7))
    with torch.no_grad():
        expected = torch.stack([torch.softmax(m(x), -1) for m in members]).mean(0)
        assert torch.allclose(EnsembleClassifier(members)(x), expected)


def test_unknown_cell_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="cell must be one of"):
        ClassifierConfig(vocab_size=10, num_labels=2, cell="transformer")
