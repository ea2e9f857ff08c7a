"""Protocol v2: what a student is measured on, how, and against which baseline.

* **Suites** (:func:`suites`): FLORES-200 devtest in both directions (``flores-x-eng``,
  ``flores-eng-x``), Tatoeba X->eng (``tatoeba-x-eng``), and passage-level retrieval on
  XQuAD-R: questions in X -> English answer sentences (``xquad-r-x-eng``) and English
  questions -> the same English sentences (``xquad-r-eng-eng``: does the student still
  retrieve in English at all?). Sentence matching is a symmetric task, so both of its sides
  are encoded with the query prompt (E5's rule for bitext mining); XQuAD-R uses the query
  and passage prompts.
* **Protocols** (:data:`PROTOCOLS`): ``student`` encodes both sides; ``teacher`` is
  OPTICAL's: the student encodes the non-English side and the frozen teacher the English
  side (queries in eng->X, documents in X->eng). ``xquad-r-eng-eng`` has no non-English
  side, so only ``student`` applies there. BM25 has neither (``lexical``).
* **Outcome** Δ: the student's per-query value minus the same-depth un-distilled model's
  value on the same query under the same protocol (:func:`evaluate_v2` evaluates that
  pristine model too, from the embedding cache), stored per query and bootstrapped per
  language and over languages.
* **Collapse diagnostics** (:func:`collapse_diagnostics`): mean pairwise cosine and
  effective rank of the student's sentence vectors of each evaluation language.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from . import data, multiway
from .evaluate import evaluate_runs, macro_rows, per_query_metrics, result_rows
from .retrieval import EmbeddingCache, bm25_retrieve, run_from_topk, search

#: The retrieval protocols and what they mean (the one table the book and analysis use).
PROTOCOLS: dict[str, str] = {
    "student": "the student encodes queries and documents",
    "teacher": "the student encodes the non-English side, the frozen teacher the English "
               "side (OPTICAL)",
    "lexical": "BM25 over surface tokens (no encoder)",
}
#: Metrics of protocol v2; nDCG@10 is the primary one.
V2_METRICS: tuple[str, ...] = ("nDCG@10", "RR@10")
PRIMARY_METRIC = "nDCG@10"
#: Prefix of the Δ rows' metric names (``delta:nDCG@10``).
DELTA = "delta:"
#: Results kept per query.
DEPTH = 100


@dataclass(frozen=True)
class Suite:
    """One evaluation suite: tasks (one per language), which side is English, prompts."""

    name: str
    tasks: tuple[data.RetrievalTask, ...]
    english: str  # "docs", "queries" or "both"
    symmetric: bool  # sentence matching: the query prompt on both sides

    @property
    def protocols(self) -> tuple[str, ...]:
        return ("student",) if self.english == "both" else ("student", "teacher")

    @property
    def prompts(self) -> tuple[str, str]:
        return ("query", "query") if self.symmetric else ("query", "passage")


def suites(flores: Sequence[str] = multiway.EVAL_LANGS_FLORES,
           tatoeba: Sequence[str] = multiway.EVAL_LANGS_TATOEBA_V2,
           xquad: Sequence[str] = data.XQUAD_R_QUERY_LANGS,
           directions: Sequence[str] = ("x-eng", "eng-x"),
           data_dir=None) -> list[Suite]:
    """The v2 suites for these languages (an empty language list drops its suite)."""
    out = []
    for direction in directions:
        if flores:
            tasks = tuple(multiway.flores_task(x, direction, data_dir) for x in flores)
            out.append(Suite(f"flores-{direction}", tasks,
                             "docs" if direction == "x-eng" else "queries", True))
    if tatoeba:
        tasks = tuple(data.tatoeba_task(x, data_dir) for x in tatoeba)
        out.append(Suite("tatoeba-x-eng", tasks, "docs", True))
    if xquad:
        tasks = tuple(data.xquad_r_task(x, "eng", data_dir) for x in xquad)
        out.append(Suite("xquad-r-x-eng", tasks, "docs", False))
        out.append(Suite("xquad-r-eng-eng", (data.xquad_r_task("eng", "eng", data_dir),),
                         "both", False))
    return out


def encoders_for(suite: Suite, protocol: str, student, teacher) -> tuple[Any, Any]:
    """(query encoder, document encoder) of ``protocol`` on ``suite``."""
    if protocol == "student":
        return student, student
    if protocol != "teacher":
        raise ValueError(f"Unknown protocol {protocol!r} (choose from student, teacher)")
    if teacher is None:
        raise ValueError("protocol 'teacher' needs the frozen teacher (load_teacher(config))")
    if suite.english == "docs":
        return student, teacher
    if suite.english == "queries":
        return teacher, student
    raise ValueError(f"{suite.name} has no non-English side: only the student protocol applies")


def dense_run(query_encoder, doc_encoder, task, prompts: tuple[str, str],
              cache: EmbeddingCache) -> dict[str, dict[str, float]]:
    """Exact inner-product top-:data:`DEPTH` run with explicit prompts (from the cache)."""
    qids, docs = list(task.queries), list(task.corpus)
    q = cache.encode(query_encoder, qids, [task.queries[i] for i in qids], "query",
                     prompt=prompts[0])
    d = cache.encode(doc_encoder, docs, [task.corpus[i] for i in docs], "document",
                     prompt=prompts[1])
    scores, idx = search(q, d, k=DEPTH)
    return run_from_topk(qids, docs, scores, idx)


def effective_rank(vectors: torch.Tensor) -> float:
    """Roy & Vetterli's (2007) effective rank: exp of the entropy of the normalised
    singular values of the (uncentred) matrix of vectors."""
    s = torch.linalg.svdvals(vectors.double())
    p = s / s.sum()
    p = p[p > 0]
    return float(torch.exp(-(p * p.log()).sum()))


def collapse_diagnostics(vectors: torch.Tensor) -> dict[str, float]:
    """``mean_cos``: mean cosine over distinct pairs of (normalised) sentence vectors (1 when
    everything collapses to one direction); ``eff_rank``: :func:`effective_rank`."""
    v = torch.nn.functional.normalize(vectors.double(), dim=-1)
    n = v.shape[0]
    if n < 2:
        return {"mean_cos": math.nan, "eff_rank": math.nan}
    total = v.sum(0)
    mean_cos = (total @ total - n) / (n * (n - 1))  # sum over i != j of <v_i, v_j>
    return {"mean_cos": float(mean_cos), "eff_rank": effective_rank(v)}


def _with(rows: list[dict], **extra) -> list[dict]:
    for row in rows:
        row.update(extra)
    return rows


def _delta_rows(meta, suite_name: str, tasks, deltas: Mapping[str, dict], classes,
                n_boot: int, seed: int) -> list[dict]:
    """Result rows of Δ per language and over languages; ``deltas``: ``{query_lang:
    {"delta:<metric>": {qid: Δ}}}`` (tasks already report the language of interest as
    ``query_lang``)."""
    rows = []
    for task in tasks:
        lang = task.query_lang
        rows += result_rows(meta, task, deltas[lang], classes.get(lang), n_boot, seed)
    for row in rows:
        row["task"] = suite_name
    return rows + macro_rows(meta, suite_name, deltas, classes, "*", n_boot, seed)


def suite_language(suite: Suite, task) -> str:
    """The non-English language of a task (eng for ``xquad-r-eng-eng``)."""
    return task.doc_lang if suite.english == "queries" else task.query_lang


def evaluate_v2(meta: Mapping[str, Any], student, teacher, baseline, suite_list: list[Suite],
                cache: EmbeddingCache, n_boot: int = 1000, seed: int = 0,
                lexical: bool = False) -> tuple[list[dict], list[dict]]:
    """Evaluate one system on every suite under every protocol.

    ``baseline``: the same-depth un-distilled student (None for a zero-shot or BM25 run,
    whose Δ is 0 by definition and not stored). ``lexical``: a BM25 run (no encoders).
    Returns (result rows, per-query rows); rows carry ``protocol``, and per-query rows carry
    ``baseline`` and ``delta`` when there is a baseline. Values, Δ and diagnostics are rows
    of the result table (metrics ``nDCG@10``, ``delta:nDCG@10``, ``mean_cos`` ...).
    """
    classes = data.language_table()["joshi_class"].astype("string").fillna("unknown").to_dict()
    rows: list[dict] = []
    per_query: list[dict] = []
    for suite in suite_list:
        protocols = ("lexical",) if lexical else suite.protocols
        for protocol in protocols:
            runs, base_runs = {}, {}
            for task in suite.tasks:
                if lexical:
                    runs[task.name] = bm25_retrieve(task, k=DEPTH)
                    continue
                q_enc, d_enc = encoders_for(suite, protocol, student, teacher)
                runs[task.name] = dense_run(q_enc, d_enc, task, suite.prompts, cache)
                if baseline is not None:
                    bq, bd = encoders_for(suite, protocol, baseline, teacher)
                    base_runs[task.name] = dense_run(bq, bd, task, suite.prompts, cache)
            m = {**meta, "protocol": protocol}
            tasks = list(suite.tasks)
            if suite.english == "queries":  # eng-x: the language of interest is the docs'
                tasks = [_swap_langs(t) for t in tasks]
            r, pq = evaluate_runs(runs, tasks, m, suite=suite.name, lang_class=classes,
                                  metrics=V2_METRICS, n_boot=n_boot, seed=seed)
            rows += r
            _with(pq, protocol=protocol)
            if baseline is not None:
                # the student's per-query values are the rows evaluate_runs returned; only
                # the baseline's are computed here
                base = {t.query_lang: per_query_metrics(base_runs[t.name], t.qrels,
                                                        V2_METRICS, queries=t.queries)
                        for t in tasks}
                deltas: dict[str, dict] = {lang: {} for lang in base}
                for row in pq:
                    lang, metric, qid = row["query_lang"], row["metric"], row["qid"]
                    row["baseline"] = base[lang][metric][qid]
                    row["delta"] = row["value"] - row["baseline"]
                    deltas[lang].setdefault(DELTA + metric, {})[qid] = row["delta"]
                rows += _delta_rows(m, suite.name, tasks, deltas, classes, n_boot, seed)
            per_query += pq
        if not lexical:
            rows += _diagnostic_rows(meta, suite, student, cache)
    return rows, per_query


def _swap_langs(task):
    """eng->X tasks are reported under the X language (``query_lang`` = X, ``doc_lang`` =
    eng) so that one language column serves both directions."""
    return data.RetrievalTask(task.name, task.corpus, task.queries, task.qrels,
                              task.doc_lang, task.query_lang)


def _diagnostic_rows(meta, suite: Suite, student, cache: EmbeddingCache) -> list[dict]:
    """Collapse diagnostics of the student's vectors of each language of a suite (the
    non-English side; the English questions for ``xquad-r-eng-eng``), from the cache."""
    if suite.name.startswith("flores-eng-x"):
        return []  # the same sentences as flores-x-eng
    rows = []
    for task in suite.tasks:
        texts = task.queries if suite.english != "queries" else task.corpus
        ids = list(texts)
        vectors = cache.encode(student, ids, [texts[i] for i in ids], "query",
                               prompt=suite.prompts[0])
        lang = suite_language(suite, task)
        for name, value in collapse_diagnostics(vectors).items():
            rows.append({**meta, "protocol": "student", "task": suite.name, "query_lang": lang,
                         "doc_lang": "eng", "scope": "diagnostic", "resource_class": None,
                         "metric": name, "value": value, "ci_low": math.nan,
                         "ci_high": math.nan, "n_queries": len(ids)})
    return rows


def summary_value(rows: list[dict], task: str, protocol: str, metric: str,
                  scope: str = "macro") -> float:
    """One macro value from result rows (for notebooks and tests)."""
    hits = [r["value"] for r in rows if r["task"] == task and r.get("protocol") == protocol
            and r["metric"] == metric and r["scope"] == scope]
    if len(hits) != 1:
        raise KeyError(f"{len(hits)} rows for {task}/{protocol}/{metric}/{scope}")
    return hits[0]


__all__ = ["PROTOCOLS", "V2_METRICS", "PRIMARY_METRIC", "DELTA", "Suite", "suites",
           "encoders_for", "dense_run", "collapse_diagnostics", "effective_rank",
           "evaluate_v2", "summary_value"]
