"""Embedding backends: the local numpy MiniLM against sentence-transformers' numbers, the pool backend against
a real loopback OpenAI-compatible server, and re-embedding after a model change."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

from catalogs.embeddings import (
    EMBEDDING_DIMENSIONS,
    LOCAL_MODEL_NAME,
    LocalMiniLMBackend,
    PoolEmbeddingBackend,
    get_backend,
    reembed_stale,
)
from catalogs.models import Item, item_embedding_text
from tests.factories import BusinessFactory
from tests.inference_server import InferenceServer, embedding_of


@pytest.fixture(scope="module")
def local() -> LocalMiniLMBackend:
    return LocalMiniLMBackend()


def test_local_model_reproduces_the_sentence_transformers_example(local: LocalMiniLMBackend) -> None:
    # sentence-transformers' documentation: cos_sim of these two sentences with all-MiniLM-L6-v2 is 0.7553.
    a, b, c = local.embed_array(
        ["A man is eating food.", "A man is eating a piece of bread.", "A man is riding a horse."]
    )
    assert round(float(a @ b), 3) == 0.755
    assert float(a @ c) < 0.3
    assert local.name == LOCAL_MODEL_NAME == "sentence-transformers/all-MiniLM-L6-v2"
    assert local.dimensions == EMBEDDING_DIMENSIONS == 384


def test_local_vectors_are_unit_length_and_independent_of_batching(local: LocalMiniLMBackend) -> None:
    texts = ["bike light", "A much longer description of a waterproof pannier with a laptop sleeve " * 5, ""]
    together = local.embed(texts)
    alone = [local.embed([text])[0] for text in texts]
    assert len(together) == 3
    for joint, single in zip(together, alone, strict=True):
        assert len(joint) == 384
        assert math.isclose(float(np.linalg.norm(joint)), 1.0, abs_tol=1e-5)
        # Padding to the batch's longest text must not change a text's vector.
        assert np.allclose(joint, single, atol=1e-5)
    assert local.embed([]) == []


def test_local_truncates_long_inputs_to_256_tokens(local: LocalMiniLMBackend) -> None:
    long_text = "word " * 2000
    assert len(local.tokenizer.encode(long_text).ids) == 256
    assert len(local.embed([long_text])[0]) == 384


def test_get_backend_is_cached_per_process(settings: Any) -> None:
    settings.EMBEDDINGS_BACKEND = "local"
    assert get_backend() is get_backend()
    assert isinstance(get_backend(), LocalMiniLMBackend)


def test_item_embedding_text_leads_with_the_title() -> None:
    text = item_embedding_text(
        title="Rain jacket.", brand="Vaude", category="clothing", description=" Taped seams. "
    )
    assert text == "Rain jacket. Vaude. clothing. Taped seams."
    assert item_embedding_text(title="Bell", description="") == "Bell"


@pytest.mark.django_db(transaction=True)
def test_pool_backend_embeds_through_the_pool(pool_server: InferenceServer, settings: Any) -> None:
    settings.EMBEDDINGS_MODEL = "test-embedder"
    backend = PoolEmbeddingBackend()
    vectors = backend.embed(["red bike", "blue helmet"])
    for text, vector in zip(["red bike", "blue helmet"], vectors, strict=True):
        expected = np.array(embedding_of(text, 384))
        expected /= np.linalg.norm(expected)
        assert np.allclose(vector, expected, atol=1e-6)
    assert backend.name == "test-embedder"
    request = [r for r in pool_server.requests if r.path == "/v1/embeddings"][-1]
    assert request.body["input"] == ["red bike", "blue helmet"]
    assert request.body["model"] == "test-embedder"


@pytest.mark.django_db
def test_reembed_stale_replaces_vectors_of_another_model_inside_one_business(
    local: LocalMiniLMBackend, settings: Any
) -> None:
    settings.EMBEDDINGS_BACKEND = "local"
    shop, other = BusinessFactory(), BusinessFactory()
    old = [0.0] * 383 + [1.0]
    stale = Item.objects.create(
        business=shop, external_id="A", title="Rain jacket", embedding=old, embedding_model="old"
    )
    missing = Item.objects.create(business=shop, external_id="B", title="Winter gloves")
    current = Item.objects.create(
        business=shop, external_id="C", title="Bell", embedding=old, embedding_model=LOCAL_MODEL_NAME
    )
    retired = Item.objects.create(
        business=shop,
        external_id="D",
        title="Old lamp",
        embedding=old,
        embedding_model="old",
        is_active=False,
    )
    foreign = Item.objects.create(
        business=other, external_id="A", title="Rain jacket", embedding=old, embedding_model="old"
    )

    assert reembed_stale(business_id=shop.pk) == 2
    for item in (stale, missing, current, retired, foreign):
        item.refresh_from_db()
    assert stale.embedding_model == missing.embedding_model == LOCAL_MODEL_NAME
    assert np.allclose(stale.embedding, local.embed([stale.search_text()])[0], atol=1e-5)
    assert np.allclose(missing.embedding, local.embed([missing.search_text()])[0], atol=1e-5)
    # Current vectors, retired items and other businesses are left alone.
    assert list(current.embedding) == old
    assert (retired.embedding_model, list(retired.embedding)) == ("old", old)
    assert (foreign.embedding_model, list(foreign.embedding)) == ("old", old)
    # Idempotent: nothing left to do.
    assert reembed_stale(business_id=shop.pk) == 0
