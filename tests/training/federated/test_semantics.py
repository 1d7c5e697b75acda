"""S2CE's semantics: item text read from a metadata file, neighbours, the soft loss."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from model_store.vocab import PAD, Vocabulary
from training.hybrid_examples import masked_softmax_loss, semantic_softmax_loss
from training.semantics import ItemSemantics, read_item_text, text_embeddings


def write_metadata(path: Path) -> None:
    rows = [
        {"asin": "A1", "title": "Canon camera body", "categories": [["Electronics", "Camera"]]},
        {"asin": "A2", "title": "Nikon camera lens", "categories": [["Electronics", "Camera"]]},
        {"itemId": "B1", "title": "USB cable", "categories": ["Electronics", "Cables"]},
        {"item_id": "B2", "title": "HDMI cable braided", "description": "a cable"},
    ]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")


def test_item_text_is_read_from_json_lines_with_any_id_field(tmp_path: Path) -> None:
    write_metadata(tmp_path / "meta.json")
    texts = read_item_text(tmp_path / "meta.json")
    assert set(texts) == {"A1", "A2", "B1", "B2"}
    assert "camera" in texts["A1"].lower() and "Cables" in texts["B1"]
    assert "a cable" in texts["B2"]


def test_a_bad_metadata_line_is_named(tmp_path: Path) -> None:
    (tmp_path / "meta.json").write_text('{"asin": "A1", "title": "x"}\n{"title": "no id"}\n')
    with pytest.raises(ValueError, match=r"meta.json:2: no item id"):
        read_item_text(tmp_path / "meta.json")
    (tmp_path / "meta.json").write_text("not json\n")
    with pytest.raises(ValueError, match=r"meta.json:1: not a JSON object"):
        read_item_text(tmp_path / "meta.json")


def test_items_with_similar_text_are_neighbours(tmp_path: Path) -> None:
    write_metadata(tmp_path / "meta.json")
    vocab = Vocabulary(("A1", "A2", "B1", "B2", "C9"))  # C9 has no text
    vectors = text_embeddings(read_item_text(tmp_path / "meta.json"), vocab, dim=3)
    semantics = ItemSemantics.from_embeddings(vectors, k=1, temperature=0.1, alpha=0.2)
    a1, a2, b1, b2, c9 = (vocab.lookup([i])[0] for i in vocab.ids)
    assert semantics.neighbours[a1, 0] == a2 and semantics.neighbours[a2, 0] == a1
    assert semantics.neighbours[b1, 0] == b2 and semantics.neighbours[b2, 0] == b1
    assert semantics.weights[a1].sum() == pytest.approx(1.0)
    assert semantics.weights[c9].sum() == 0 and semantics.weights[PAD].sum() == 0
    assert c9 not in semantics.neighbours.flatten().tolist()


def test_s2ce_is_plain_cross_entropy_without_alpha_and_rewards_neighbours_with_it() -> None:
    torch.manual_seed(0)
    logits = torch.randn(2, 6, requires_grad=True)
    allowed = torch.ones(2, 6, dtype=torch.bool)
    allowed[:, PAD] = False
    items = torch.tensor([[1, 2], [3, PAD]])
    hidden = torch.tensor([[True, False], [True, False]])
    neighbours = torch.tensor([[0, 0], [4, 5], [1, 1], [5, 4], [1, 1], [1, 1]])
    weights = torch.tensor([[0.0, 0.0], [0.5, 0.5], [1, 0], [1, 0], [1, 0], [1, 0]])
    plain = masked_softmax_loss(logits, allowed=allowed, items=items, hidden=hidden)
    kwargs = {"allowed": allowed, "items": items, "hidden": hidden, "neighbours": neighbours}
    none = semantic_softmax_loss(logits, weights=weights, alpha=0.0, **kwargs)
    assert none.item() == pytest.approx(plain.item())
    soft = semantic_softmax_loss(logits, weights=weights, alpha=0.3, **kwargs)
    soft.backward()
    assert logits.grad is not None
    # Item 1's neighbours 4 and 5 are pulled up (negative gradient) for row 0.
    assert logits.grad[0, 4] < 0 and logits.grad[0, 5] < 0
    # A neighbour the market does not sell weighs nothing: the loss stays finite.
    allowed[0, 4] = False
    kwargs["allowed"] = allowed
    assert semantic_softmax_loss(logits, weights=weights, alpha=0.3, **kwargs).isfinite()
