"""Tests for optical_lib.retrieval: blocked exact search, dense retrieve() and the BM25 floor."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from optical_lib import retrieval
from optical_lib.retrieval import bm25_retrieve, retrieve, run_from_topk, search


def brute_force_topk(q: torch.Tensor, x: torch.Tensor, k: int):
    """Reference: full (Q, D) matmul, then sort each row by (score desc, index asc)."""
    s = (q.double() @ x.double().T).numpy()
    d = s.shape[1]
    idx = np.stack([np.lexsort((np.arange(d), -row))[: min(k, d)] for row in s])
    return np.take_along_axis(s, idx, axis=1), idx


def make_task(corpus, queries, qrels=None, name="toy-swh"):
    return SimpleNamespace(
        name=name,
        corpus=corpus,
        queries=queries,
        qrels=qrels or {},
        query_lang="swh",
        doc_lang="eng",
    )


# ------------------------------------------------------------------------------ search
@pytest.mark.parametrize(
    "n_q,n_d,k,block",
    [(37, 1003, 25, 100), (8, 250, 100, 64), (5, 40, 60, 7), (3, 17, 5, 1), (4, 30, 10, 1000)],
)
def test_search_matches_full_matmul_on_random_data(n_q, n_d, k, block):
    g = torch.Generator().manual_seed(n_d)
    q = torch.nn.functional.normalize(torch.randn(n_q, 16, generator=g), dim=1)
    x = torch.nn.functional.normalize(torch.randn(n_d, 16, generator=g), dim=1)
    scores, idx = search(q, x, k=k, block_size=block)
    ref_s, ref_i = brute_force_topk(q, x, k)
    assert idx.shape == (n_q, min(k, n_d)) and idx.dtype == torch.int64
    assert scores.dtype == torch.float32
    np.testing.assert_array_equal(idx.numpy(), ref_i)
    np.testing.assert_allclose(scores.numpy(), ref_s, atol=1e-5)


@pytest.mark.parametrize("block", [1, 3, 7, 64, 10_000])
@pytest.mark.parametrize("k", [1, 5, 33, 500])
def test_search_ties_broken_by_document_index(block, k):
    # small integer vectors: dot products are exact in float32 whatever the summation
    # order, and there are many exactly equal scores, including across block boundaries
    g = torch.Generator().manual_seed(7)
    q = torch.randint(-2, 3, (20, 4), generator=g).float()
    x = torch.randint(-1, 2, (301, 4), generator=g).float()
    scores, idx = search(q, x, k=k, block_size=block)
    ref_s, ref_i = brute_force_topk(q, x, k)
    np.testing.assert_array_equal(idx.numpy(), ref_i)
    np.testing.assert_array_equal(scores.numpy(), ref_s.astype(np.float32))


def test_search_all_equal_scores_returns_lowest_indices_in_order():
    q = torch.ones(2, 3)
    x = torch.ones(50, 3)
    _, idx = search(q, x, k=10, block_size=6)
    assert idx.tolist() == [list(range(10))] * 2


def test_search_query_blocks_equal_single_block():
    g = torch.Generator().manual_seed(1)
    q, x = torch.randn(33, 8, generator=g), torch.randn(90, 8, generator=g)
    a = search(q, x, k=12, block_size=20)
    b = search(q, x, k=12, block_size=20, query_block_size=4)
    # same ranking; scores may differ in the last bit (BLAS picks kernels by shape)
    assert torch.equal(a[1], b[1])
    torch.testing.assert_close(a[0], b[0])


def test_search_never_scores_more_than_one_block(monkeypatch):
    seen = []
    real = retrieval._topk_rows

    def spy(scores, k):
        seen.append(tuple(scores.shape))
        return real(scores, k)

    monkeypatch.setattr(retrieval, "_topk_rows", spy)
    q, x = torch.randn(10, 8), torch.randn(1000, 8)
    search(q, x, k=5, block_size=128)
    assert len(seen) == 8  # ceil(1000 / 128)
    assert max(w for _, w in seen) == 128 and seen[-1] == (10, 1000 - 7 * 128)


def test_search_rejects_mismatched_dims_and_handles_empty():
    with pytest.raises(ValueError, match="share one embedding space"):
        search(torch.randn(2, 4), torch.randn(5, 3), k=2)
    with pytest.raises(ValueError, match="2-D"):
        search(torch.randn(4), torch.randn(5, 4), k=2)
    s, i = search(torch.randn(0, 4), torch.randn(5, 4), k=2)
    assert s.shape == (0, 2) and i.shape == (0, 2)


def test_run_from_topk_skips_padding_and_keeps_rank_order():
    run = run_from_topk(["q1", "q2"], ["a", "b", "c"], [[0.9, 0.5], [0.7, 0.0]], [[2, 0], [1, -1]])
    assert run == {"q1": {"c": 0.9, "a": 0.5}, "q2": {"b": 0.7}}
    assert list(run["q1"]) == ["c", "a"]


# ---------------------------------------------------------------------------- retrieve
class FakeEncoder:
    """Maps each known text to a fixed unit vector; records which prompt was asked for."""

    def __init__(self, table: dict[str, list[float]], expect_role: str):
        self.table = table
        self.expect_role = expect_role
        self.calls: list[tuple[str, int]] = []

    def _encode(self, role, texts, max_length):
        assert role == self.expect_role
        self.calls.append((role, len(texts), max_length))
        vecs = torch.tensor([self.table[t] for t in texts], dtype=torch.float32)
        return torch.nn.functional.normalize(vecs, dim=1)

    def encode_queries(self, texts, batch_size=64, progress=None, max_length=None):
        return self._encode("query", texts, max_length)

    def encode_documents(self, texts, batch_size=64, progress=None, max_length=None):
        return self._encode("document", texts, max_length)


def test_retrieve_uses_both_encoders_prefixes_and_rank_order():
    corpus = {"d0": "cat", "d1": "dog", "d2": "cat copy", "d3": "fish"}
    queries = {"q0": "paka", "q1": "mbwa"}
    doc_enc = FakeEncoder(
        {"cat": [1, 0, 0], "dog": [0, 1, 0], "cat copy": [1, 0, 0], "fish": [0, 0, 1]},
        expect_role="document",
    )
    query_enc = FakeEncoder({"paka": [1, 0.1, 0], "mbwa": [0, 1, 0.2]}, expect_role="query")
    task = make_task(corpus, queries)
    run = retrieve(query_enc, doc_enc, task, k=3, block_size=3)
    assert query_enc.calls == [("query", 2, None)] and doc_enc.calls == [("document", 4, None)]
    assert set(run) == {"q0", "q1"}
    # d0 and d2 have identical vectors: the tie goes to the earlier corpus entry d0
    assert list(run["q0"]) == ["d0", "d2", "d1"]
    assert run["q0"]["d0"] == pytest.approx(run["q0"]["d2"])
    assert run["q0"]["d0"] == pytest.approx(1 / np.sqrt(1.01), abs=1e-6)
    assert list(run["q1"])[0] == "d1"
    scores = list(run["q1"].values())
    assert scores == sorted(scores, reverse=True)


def test_retrieve_k_larger_than_corpus_and_max_length_passed_on():
    enc = FakeEncoder({"a": [1, 0], "b": [0, 1]}, expect_role="query")
    enc.encode_documents = lambda texts, **kw: enc.encode_queries(texts, **kw)
    run = retrieve(enc, enc, make_task({"x": "a", "y": "b"}, {"q": "a"}), k=100, max_length=7)
    assert list(run["q"]) == ["x", "y"]
    assert {c[2] for c in enc.calls} == {7}


def test_embedding_cache_encodes_each_text_set_once_and_keys_on_max_length(tmp_path):
    from optical_lib.retrieval import EmbeddingCache, encode_corpus

    enc = FakeEncoder({"a": [1, 0], "b": [0, 1]}, expect_role="document")
    cache = EmbeddingCache()
    corpus = {"x": "a", "y": "b"}
    _, first = encode_corpus(enc, corpus, cache=cache)
    _, again = encode_corpus(enc, corpus, cache=cache)
    assert len(enc.calls) == 1 and torch.equal(first, again)
    encode_corpus(enc, corpus, max_length=16, cache=cache)
    encode_corpus(enc, {"x": "a", "y": "a"}, cache=cache)  # other texts, same ids
    assert len(enc.calls) == 3
    _, renamed = encode_corpus(enc, {"p": "a", "q": "b"}, cache=cache)  # same texts, other ids
    _, reordered = encode_corpus(enc, {"y": "b", "x": "a"}, cache=cache)
    assert len(enc.calls) == 4 and torch.equal(renamed, first)
    assert torch.equal(reordered, first.flip(0))
    # on disk only for encoders that name their pristine weights
    disk = EmbeddingCache(tmp_path)
    enc.embedding_key = lambda prompt, max_length: f"fake-{prompt}-{max_length}"
    encode_corpus(enc, corpus, cache=disk)
    assert len(list(tmp_path.rglob("*.pt"))) == 1
    _, from_disk = encode_corpus(enc, corpus, cache=EmbeddingCache(tmp_path))
    assert len(enc.calls) == 5 and torch.equal(from_disk, first)


def test_retrieve_errors_are_explicit():
    task = make_task({"x": "a"}, {"q": "a"})
    with pytest.raises(TypeError, match="no encode_queries"):
        retrieve(object(), object(), task)
    q_enc = FakeEncoder({"a": [1, 0, 0]}, "query")
    d_enc = FakeEncoder({"a": [1, 0]}, "document")
    with pytest.raises(ValueError, match="share one embedding space"):
        retrieve(q_enc, d_enc, task)
    with pytest.raises(ValueError, match="empty corpus"):
        retrieve(q_enc, d_enc, make_task({}, {"q": "a"}))


# -------------------------------------------------------------------------------- bm25
BM25_CORPUS = {
    "d0": "The weather in Nairobi is warm today",
    "d1": "Dogs and cats are popular pets",
    "d2": "The 2024 Olympic Games were held in Paris",
    "d3": "Bread is baked from flour and water",
}


def test_bm25_ranks_lexical_match_first():
    queries = {
        "q_paris": "Michezo ya Olimpiki 2024 ilifanyika Paris",  # shares "2024", "paris"
        "q_nairobi": "Hali ya hewa Nairobi leo",  # shares "nairobi"
    }
    run = bm25_retrieve(make_task(BM25_CORPUS, queries), k=10)
    assert list(run["q_paris"])[0] == "d2"
    assert list(run["q_nairobi"]) == ["d0"]  # only positive-score documents are returned
    assert all(s > 0 for r in run.values() for s in r.values())


def test_bm25_query_without_shared_tokens_gets_empty_result():
    # bm25s itself would return k arbitrary documents at score 0 for these
    queries = {"q_oov": "habari gani rafiki", "q_empty": "", "q_stop": "the and of a"}
    run = bm25_retrieve(make_task(BM25_CORPUS, queries), k=2)
    assert run == {"q_oov": {}, "q_empty": {}, "q_stop": {}}


def test_bm25_ties_by_corpus_order_and_k_clipped():
    corpus = {"z": "paris", "a": "paris", "m": "paris", "b": "london"}
    run = bm25_retrieve(make_task(corpus, {"q": "paris"}), k=2)
    assert list(run["q"]) == ["z", "a"]
    run = bm25_retrieve(make_task(corpus, {"q": "paris"}), k=100)
    assert list(run["q"]) == ["z", "a", "m"]
