"""Encoding and search: dense exact inner-product retrieval and a BM25 lexical floor.

Everything here produces a *run*, the plain dict ``{qid: {doc_id: score}}`` that
``ir_measures``, ``pytrec_eval`` and ranx accept unchanged (see :mod:`optical_lib.evaluate`).

Dense retrieval (:func:`retrieve`) encodes queries and documents with the encoders' own
prompts (E5: ``query: `` / ``passage: ``) and scores every document exactly,

.. math:: s(q, d) = \\langle e_q, e_d \\rangle,

which is the cosine similarity because the encoders return L2-normalised vectors. The query
and document encoders may differ: in OPTICAL the distilled student encodes queries in
language X and the frozen English teacher encodes the English candidates.

Tie-breaking (the same rule everywhere in this module)
------------------------------------------------------
Candidates are ordered by score descending, then by *document index* ascending, where the
index of a document is its position in ``task.corpus`` iteration order (``doc_emb`` row for
:func:`search`). This decides which of several equal-scoring documents make the top-k cut and
their order. Runs are emitted with their dict insertion order equal to this rank order;
:func:`optical_lib.evaluate.evaluate_run` keeps that order for equal scores (trec_eval would
otherwise re-sort ties by doc_id, and ir_measures' RR@10 provider by the opposite rule).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .layout import atomic_write

__all__ = [
    "DEFAULT_BLOCK_SIZE",
    "EmbeddingCache",
    "bm25_retrieve",
    "encode_corpus",
    "encode_queries",
    "retrieve",
    "run_from_topk",
    "search",
]

#: Documents per block in :func:`search`. Peak extra memory is about
#: ``4 * n_queries_in_chunk * (block_size + 2 k)`` bytes (65 MB for 1000 queries).
DEFAULT_BLOCK_SIZE = 16384
#: Queries scored together in :func:`search` (bounds memory for very many queries).
DEFAULT_QUERY_BLOCK_SIZE = 4096


# --------------------------------------------------------------------------------------
# exact top-k with deterministic tie-breaking
# --------------------------------------------------------------------------------------
def _sort_candidates(
    scores: torch.Tensor, indices: torch.Tensor, k: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Best ``k`` of a small candidate set per row, by (score desc, index asc).

    Parameters
    ----------
    scores, indices : (Q, m)
        Candidate scores and their global document indices (``m`` small, e.g. ``2k``).
    k : int
        Number to keep, ``k <= m``.

    Returns
    -------
    (Q, k) scores and (Q, k) indices.
    """
    # lexicographic sort: first by index ascending, then a *stable* sort by score descending
    order = torch.argsort(indices, dim=1)
    scores = torch.gather(scores, 1, order)
    indices = torch.gather(indices, 1, order)
    order = torch.sort(scores, dim=1, descending=True, stable=True).indices[:, :k]
    return torch.gather(scores, 1, order), torch.gather(indices, 1, order)


def _topk_rows(scores: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact top-k of each row of a score block, ties broken by column ascending.

    ``torch.topk`` is fast but does not say which of several equal values it returns at the
    cut-off. Taking the top ``k + 1`` shows the rows where the k-th value ``v`` also occurs
    outside the top-k (a tie straddles the cut); there the selection is rebuilt exactly in
    O(B): every entry ``> v`` plus the lowest-column entries ``== v`` until there are ``k``.

    Parameters
    ----------
    scores : (Q, B) float
    k : int
        ``1 <= k <= B``.

    Returns
    -------
    values : (Q, k) float, sorted descending
    columns : (Q, k) int64, column positions in ``scores``
    """
    n_cols = scores.shape[1]
    # one extra element tells whether the value at the cut-off also occurs outside the top-k
    values, cols = torch.topk(scores, min(k + 1, n_cols), dim=1, largest=True, sorted=True)
    if values.shape[1] > k:
        straddle = values[:, k] == values[:, k - 1]
        values, cols = values[:, :k], cols[:, :k]
    else:
        straddle = torch.zeros(values.shape[0], dtype=torch.bool)
    # order equal values inside the selection by column
    values, cols = _sort_candidates(values, cols, k)
    kth = values[:, -1:]
    if bool(straddle.any()):
        rows = torch.nonzero(straddle).flatten()
        sub = scores[rows]
        v = kth[rows]
        above = sub > v
        equal = sub == v
        need = k - above.sum(dim=1, keepdim=True)
        take = above | (equal & (torch.cumsum(equal, dim=1) <= need))
        sub_cols = torch.nonzero(take)[:, 1].reshape(len(rows), k)  # row-major, cols ascending
        sub_vals = torch.gather(sub, 1, sub_cols)
        values[rows], cols[rows] = _sort_candidates(sub_vals, sub_cols, k)
    return values, cols


def search(
    query_emb: torch.Tensor,
    doc_emb: torch.Tensor,
    k: int = 100,
    block_size: int = DEFAULT_BLOCK_SIZE,
    *,
    query_block_size: int = DEFAULT_QUERY_BLOCK_SIZE,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact maximum inner-product top-k, in document blocks with a running merge.

    For each query row :math:`q_i` returns the ``k`` documents with the largest
    :math:`s_{ij} = \\langle q_i, d_j \\rangle`, ordered by score descending and then by
    document index ``j`` ascending (deterministic tie-breaking). The full (Q, D) score matrix
    is never materialised when ``D > block_size``: each (Q_b, block_size) block is reduced to
    its top-k and merged with the running top-k, so memory is
    O(query_block_size * (block_size + k)) whatever the corpus size.

    Exactly equal scores are ordered deterministically. Scores themselves are float32 dot
    products whose last bit can depend on the block shape (BLAS picks kernels by shape), so
    two documents within ~1e-7 of each other may swap for a different ``block_size``.

    A pure tensor function (no I/O, no model). faiss (``IndexFlatIP``) would be a drop-in
    exact backend; it is not a dependency because this torch loop was fast enough at 100k
    candidates (see ``benchmarks/bench_retrieval.py``).

    Parameters
    ----------
    query_emb : (Q, d) float tensor
        Query vectors (L2-normalised for cosine; not required).
    doc_emb : (D, d) float tensor
        Document vectors, same ``d``. Row ``j`` is document index ``j``.
    k : int
        Results per query; clipped to ``D``.
    block_size : int
        Documents scored at once.
    query_block_size : int
        Queries scored at once.

    Returns
    -------
    scores : (Q, min(k, D)) float32 tensor, each row sorted descending
    indices : (Q, min(k, D)) int64 tensor of document rows
    """
    if query_emb.ndim != 2 or doc_emb.ndim != 2:
        raise ValueError(
            f"search expects 2-D (Q, d) and (D, d) tensors, got shapes "
            f"{tuple(query_emb.shape)} and {tuple(doc_emb.shape)}"
        )
    if query_emb.shape[1] != doc_emb.shape[1]:
        raise ValueError(
            f"query dim {query_emb.shape[1]} != document dim {doc_emb.shape[1]}: the query and "
            "document encoders must share one embedding space"
        )
    if k < 1 or block_size < 1 or query_block_size < 1:
        raise ValueError(
            f"k, block_size and query_block_size must be >= 1, got {k}, "
            f"{block_size}, {query_block_size}"
        )
    n_q, n_d = query_emb.shape[0], doc_emb.shape[0]
    k = min(k, n_d)
    if n_q == 0 or n_d == 0:
        return torch.empty(n_q, k, dtype=torch.float32), torch.empty(n_q, k, dtype=torch.int64)
    query_emb = query_emb.detach().to("cpu", torch.float32)
    doc_emb = doc_emb.detach().to("cpu", torch.float32)

    out_scores, out_indices = [], []
    with torch.inference_mode():
        for q0 in range(0, n_q, query_block_size):
            q = query_emb[q0 : q0 + query_block_size]
            # one reused score buffer: avoids page-faulting a fresh (Qb, B) array per block
            buf = torch.empty(q.shape[0] * min(block_size, n_d), dtype=torch.float32)
            best_s: torch.Tensor | None = None
            best_i: torch.Tensor | None = None
            for d0 in range(0, n_d, block_size):
                docs = doc_emb[d0 : d0 + block_size]
                block = buf[: q.shape[0] * docs.shape[0]].view(q.shape[0], docs.shape[0])
                torch.mm(q, docs.T, out=block)  # (Qb, B) scores
                s, c = _topk_rows(block, min(k, block.shape[1]))
                c = c + d0
                if best_s is None:
                    best_s, best_i = s, c
                else:
                    # every earlier index is smaller than every index in this block
                    best_s, best_i = _sort_candidates(
                        torch.cat([best_s, s], dim=1), torch.cat([best_i, c], dim=1), k
                    )
            out_scores.append(best_s)
            out_indices.append(best_i)
    return torch.cat(out_scores), torch.cat(out_indices)


# --------------------------------------------------------------------------------------
# encoding and runs
# --------------------------------------------------------------------------------------
def _texts_digest(ids: Sequence[str] | None, texts: Sequence[str]) -> str:
    """Digest of the texts in order, with their ids (None: the texts alone)."""
    h = hashlib.sha256()
    for i, text in zip([""] * len(texts) if ids is None else ids, texts, strict=True):
        h.update(i.encode() + b"\0" + text.encode() + b"\0")
    return h.hexdigest()[:16]


class EmbeddingCache:
    """Embeddings already computed, so that no text is encoded twice by the same model.

    In memory, entries are keyed by the encoder, its prompt, the input length and the texts
    in order (not their ids: a text set met again under other ids, e.g. FLORES-200's X
    sentences as the queries of X→eng and the documents of eng→X, both with the query
    prompt, is encoded once). They live as long as this object: make one per evaluation,
    since an encoder whose weights change afterwards (a student being trained) is the same
    Python object. With ``directory``, embeddings of encoders with pristine weights (a
    non-None :meth:`~optical_lib.models.Encoder.embedding_key`) are also kept on disk, one
    file per text set and ids, shared between processes and runs; written atomically.
    """

    def __init__(self, directory: str | Path | None = None):
        self.directory = None if directory is None else Path(directory)
        self._memory: dict[tuple, torch.Tensor] = {}

    def _path(self, key: str | None, digest: str) -> Path | None:
        if self.directory is None or key is None:
            return None
        return self.directory / key / f"{digest}.pt"

    def encode(self, encoder: Any, ids: Sequence[str], texts: Sequence[str], role: str,
               batch_size: int = 64, progress: bool | None = None,
               max_length: int | None = None, prompt: str | None = None) -> torch.Tensor:
        """``(N, d)`` embeddings of ``texts`` by ``encoder`` as ``role`` ("query" or
        "document"), from the cache when there. ``prompt`` overrides the role's prompt
        (``query`` / ``passage``), e.g. the query prompt on both sides of a symmetric task."""
        default = {"query": "query", "document": "passage"}[role]
        explicit = prompt is not None and prompt != default
        prompt = prompt or default
        digest = _texts_digest(ids, texts)
        key_fn = getattr(encoder, "embedding_key", None)
        disk_key = key_fn(prompt, max_length) if key_fn else None
        memo_key = (id(encoder), disk_key, prompt, max_length, _texts_digest(None, texts))
        if memo_key in self._memory:
            return self._memory[memo_key]
        path = self._path(disk_key, digest)
        if path is not None and path.exists():
            emb = torch.load(path)
        else:
            emb = _encode(encoder, list(texts), role, batch_size, progress, max_length,
                          prompt if explicit else None)
            if path is not None:
                atomic_write(path, lambda tmp: torch.save(emb, tmp))
        self._memory[memo_key] = emb
        return emb


def _encode(encoder: Any, texts: list[str], role: str, batch_size: int, progress,
            max_length: int | None, prompt: str | None = None) -> torch.Tensor:
    method = {"query": "encode_queries", "document": "encode_documents"}[role]
    if prompt is not None:
        emb = torch.as_tensor(encoder.encode(texts, prompt, batch_size=batch_size,
                                             progress=progress, max_length=max_length))
    elif not callable(getattr(encoder, method, None)):
        raise TypeError(
            f"{role} encoder {type(encoder).__name__} has no {method}(texts, ...) method; "
            "pass an encoder from optical_lib.models.load_encoder"
        )
    else:
        emb = torch.as_tensor(getattr(encoder, method)(texts, batch_size=batch_size,
                                                       progress=progress,
                                                       max_length=max_length))
    if emb.ndim != 2 or emb.shape[0] != len(texts):
        raise ValueError(
            f"{role} encoder returned shape {tuple(emb.shape)} for {len(texts)} texts; "
            "expected (N, d)"
        )
    return emb


def encode_corpus(
    encoder: Any,
    corpus: Mapping[str, str],
    batch_size: int = 64,
    progress: bool | None = None,
    *,
    max_length: int | None = None,
    cache: EmbeddingCache | None = None,
) -> tuple[list[str], torch.Tensor]:
    """Encode a corpus (the encoder's document prompt) in its iteration order.

    Parameters
    ----------
    encoder
        Anything with ``encode_documents(texts, batch_size=..., progress=..., max_length=...)``.
    corpus : {doc_id: text}
    max_length : tokens kept per document (None: the model's maximum)
    cache : reuse embeddings computed before (see :class:`EmbeddingCache`)

    Returns
    -------
    doc_ids : list of D ids (document index ``j`` is ``doc_ids[j]``)
    doc_emb : (D, d) float tensor
    """
    doc_ids = list(corpus)
    cache = cache or EmbeddingCache()
    return doc_ids, cache.encode(encoder, doc_ids, [corpus[i] for i in doc_ids], "document",
                                 batch_size, progress, max_length)


def encode_queries(
    encoder: Any,
    queries: Mapping[str, str],
    batch_size: int = 64,
    progress: bool | None = None,
    *,
    max_length: int | None = None,
    cache: EmbeddingCache | None = None,
) -> tuple[list[str], torch.Tensor]:
    """Encode queries (the encoder's query prompt) in their iteration order; returns
    ``(qids, (Q, d) tensor)``."""
    qids = list(queries)
    cache = cache or EmbeddingCache()
    return qids, cache.encode(encoder, qids, [queries[i] for i in qids], "query",
                              batch_size, progress, max_length)


def run_from_topk(
    qids: Sequence[str],
    doc_ids: Sequence[str],
    scores: torch.Tensor | np.ndarray,
    indices: torch.Tensor | np.ndarray,
) -> dict[str, dict[str, float]]:
    """Turn (Q, k) top-k arrays into a run ``{qid: {doc_id: score}}`` in rank order.

    Entries with index < 0 (padding) are skipped. Each inner dict's insertion order is the
    rank order, which :func:`optical_lib.evaluate.evaluate_run` uses to break equal scores.
    """
    scores = np.asarray(scores, dtype=np.float64)
    indices = np.asarray(indices, dtype=np.int64)
    if scores.shape != indices.shape or scores.shape[0] != len(qids):
        raise ValueError(
            f"scores {scores.shape} and indices {indices.shape} must both be ({len(qids)}, k)"
        )
    return {
        qid: {doc_ids[j]: float(s) for s, j in zip(srow, irow, strict=True) if j >= 0}
        for qid, srow, irow in zip(qids, scores.tolist(), indices.tolist(), strict=True)
    }


def retrieve(
    query_encoder: Any,
    doc_encoder: Any,
    task: Any,
    k: int = 100,
    block_size: int = DEFAULT_BLOCK_SIZE,
    batch_size: int = 64,
    progress: bool | None = None,
    *,
    max_length: int | None = None,
    cache: EmbeddingCache | None = None,
) -> dict[str, dict[str, float]]:
    """Dense exact retrieval of ``task.queries`` against ``task.corpus``.

    Queries are encoded by ``query_encoder`` with its query prompt, documents by
    ``doc_encoder`` with its document prompt (E5: ``query: `` / ``passage: ``), then
    :func:`search` takes the exact inner-product top-k (ties: lower document index, i.e.
    earlier in ``task.corpus``, first).

    Parameters
    ----------
    query_encoder, doc_encoder
        Objects with ``encode_queries`` / ``encode_documents(texts, batch_size, progress,
        max_length) -> (N, d) tensor``; may be the same object. In OPTICAL: student for
        queries, teacher for English documents.
    task
        Anything with ``corpus {doc_id: text}`` and ``queries {qid: text}``.
    k : int
        Results per query (clipped to the corpus size).
    block_size : int
        Documents per scoring block (memory bound, see :func:`search`).
    max_length : int, optional
        Tokens kept per text (None: each model's maximum).
    cache : EmbeddingCache, optional
        Reuse query and document embeddings across calls (several protocols, tasks sharing
        a corpus).

    Returns
    -------
    run : {qid: {doc_id: score}}, every query present, inner dicts in rank order.
    """
    if not task.corpus:
        raise ValueError(f"task {getattr(task, 'name', '?')!r} has an empty corpus")
    if not task.queries:
        return {}
    cache = cache or EmbeddingCache()
    qids, q_emb = encode_queries(query_encoder, task.queries, batch_size, progress,
                                 max_length=max_length, cache=cache)
    doc_ids, d_emb = encode_corpus(doc_encoder, task.corpus, batch_size, progress,
                                   max_length=max_length, cache=cache)
    scores, indices = search(q_emb, d_emb, k=k, block_size=block_size)
    return run_from_topk(qids, doc_ids, scores, indices)


# --------------------------------------------------------------------------------------
# lexical floor
# --------------------------------------------------------------------------------------
def bm25_retrieve(
    task: Any,
    k: int = 100,
    *,
    k1: float = 1.5,
    b: float = 0.75,
    method: str = "lucene",
    stopwords: str | list[str] | None = "en",
    query_block_size: int = 64,
) -> dict[str, dict[str, float]]:
    """BM25 lexical baseline over ``task.corpus`` with ``bm25s``.

    Why ``bm25s``: it is maintained, pure numpy/scipy (no JVM as in Pyserini), and precomputes
    a sparse score matrix at index time, which makes it one to two orders of magnitude faster
    than ``rank-bm25`` (which rescans every document per query in Python).

    Tokenisation is bm25s' default (lower-case, regex ``\\w\\w+``, its English stopword list)
    and *no* language-specific stemmer. Queries (language X) and documents (English) are in
    different languages, so on X→eng this is a floor that only scores shared surface tokens
    (names, numbers, loanwords); that is its purpose.

    Empty queries: bm25s gives a query with no in-vocabulary token an all-zero score vector
    and its ``retrieve`` would still return ``k`` arbitrary documents at score 0 (and
    ``get_scores([])`` raises ``IndexError``). Here only documents with a positive score are
    returned, so such a query gets an empty result ``{}``, which evaluation counts as 0.

    Parameters
    ----------
    task
        Anything with ``corpus {doc_id: text}`` and ``queries {qid: text}``.
    k : int
        Results per query (at most; fewer if fewer documents share a token).
    k1, b, method
        BM25 parameters (bm25s defaults; Lucene's BM25 variant).
    stopwords
        Passed to ``bm25s.tokenize`` (``"en"`` is its default list; ``None`` keeps all).
    query_block_size : int
        Queries whose dense (block, D) score rows are held at once.

    Returns
    -------
    run : {qid: {doc_id: score}}, every query present; ties broken by lower corpus index.
    """
    import bm25s

    if not task.corpus:
        raise ValueError(f"task {getattr(task, 'name', '?')!r} has an empty corpus")
    doc_ids = list(task.corpus)
    qids = list(task.queries)
    corpus_tokens = bm25s.tokenize(
        [task.corpus[i] for i in doc_ids], stopwords=stopwords, show_progress=False
    )
    retriever = bm25s.BM25(k1=k1, b=b, method=method)
    retriever.index(corpus_tokens, show_progress=False)
    query_tokens = bm25s.tokenize(
        [task.queries[q] for q in qids],
        stopwords=stopwords,
        return_ids=False,
        show_progress=False,
    )
    vocab = corpus_tokens.vocab
    n_docs = len(doc_ids)
    k = min(k, n_docs)
    run: dict[str, dict[str, float]] = {}
    for q0 in range(0, len(qids), query_block_size):
        block_tokens = query_tokens[q0 : q0 + query_block_size]
        rows = np.zeros((len(block_tokens), n_docs), dtype=np.float32)
        for r, toks in enumerate(block_tokens):
            ids = [vocab[t] for t in toks if t in vocab]
            if ids:
                rows[r] = retriever.get_scores_from_ids(ids)
        scores, cols = _topk_rows(torch.from_numpy(rows), k)
        for qid, srow, crow in zip(
            qids[q0 : q0 + query_block_size], scores.tolist(), cols.tolist(), strict=True
        ):
            run[qid] = {doc_ids[j]: float(s) for s, j in zip(srow, crow, strict=True) if s > 0}
    return run
