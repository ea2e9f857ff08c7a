"""Metrics, uncertainty and the tidy result table.

Metrics come from ``ir_measures`` (which runs ``pytrec_eval``/trec_eval for nDCG, AP and
recall, and its MS MARCO evaluator for RR@k); nothing here re-implements a ranking metric.
On top of per-query values this module adds what a comparison needs:

* per-query values with missing queries counted as 0 (:func:`per_query_metrics`);
* 95% percentile-bootstrap confidence intervals over queries (:func:`bootstrap_ci`), and a
  stratified version for macro averages over languages (:func:`macro_bootstrap_ci`);
* paired tests between two systems on the same queries: paired t-test and a sign-flip
  randomisation test (:func:`paired_test`), Holm–Bonferroni across languages (:func:`holm`,
  :func:`compare_systems`);
* the spread over training seeds (:func:`seed_summary`, :func:`aggregate_seeds`);
* one result schema (:data:`RESULT_COLUMNS`) with atomic writers and a validating reader.

Conventions
-----------
*Evaluated queries* of a task are those in ``task.queries`` with at least one judged-relevant
document (``qrels`` grade > 0); others are excluded (nDCG/RR/recall are undefined without a
relevant document) and counted in ``n_unjudged``. An evaluated query that is absent from the
run, or has an empty result, scores 0 on every metric. ``pytrec_eval`` silently leaves
queries that are not keys of the run out of its output, so a mean over its output averages
over answered queries only; ir_measures 0.4.3 happens to fill them with the measure's default
0, but we fill them ourselves so the rule does not depend on a version.

*Ties*: trec_eval orders equal scores by doc_id descending, ir_measures' RR@k provider by
doc_id ascending, so a tied run can get inconsistent metrics. Before evaluation each query's
results are re-scored by rank, where equal scores keep their order in the run; the runs from
:mod:`optical_lib.retrieval` are emitted in (score desc, corpus index asc) order, so this is
the tie rule of the search itself. Untied runs are unaffected.

*AP* is trec_eval's ``map`` over the run's depth (k = 100 by default), not over all documents.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .layout import atomic_write

__all__ = [
    "DEFAULT_METRICS",
    "PER_QUERY_COLUMNS",
    "RESULT_COLUMNS",
    "RUN_META_KEYS",
    "aggregate",
    "aggregate_seeds",
    "bootstrap_ci",
    "compare_systems",
    "evaluate_run",
    "evaluate_runs",
    "evaluated_qids",
    "holm",
    "macro_bootstrap_ci",
    "macro_rows",
    "paired_test",
    "per_query_metrics",
    "per_query_rows",
    "read_results",
    "result_rows",
    "seed_summary",
    "write_results",
]

#: ir_measures names: nDCG@10, MRR@10 (RR@10), Recall@100 (R@100), MAP (AP).
DEFAULT_METRICS: tuple[str, ...] = ("nDCG@10", "RR@10", "R@100", "AP")

Run = Mapping[str, Mapping[str, float]]
Qrels = Mapping[str, Mapping[str, int]]
PerQuery = Mapping[str, Mapping[str, float]]  # {metric: {qid: value}}

# Elements of a (resamples x queries) block generated at once (bounds bootstrap memory).
_MAX_BLOCK_ELEMS = 1 << 22


# ======================================================================================
# metrics
# ======================================================================================
def _parse_metrics(metrics: Iterable[Any]) -> list[Any]:
    import ir_measures

    parsed = []
    for m in metrics:
        try:
            parsed.append(ir_measures.parse_measure(m) if isinstance(m, str) else m)
        except Exception as exc:  # ir_measures raises several types for bad names
            raise ValueError(
                f"Unknown metric {m!r}: use ir_measures names such as {', '.join(DEFAULT_METRICS)}"
            ) from exc
    return parsed


def evaluated_qids(qrels: Qrels, queries: Iterable[str] | None = None) -> list[str]:
    """Queries with at least one relevant (grade > 0) judgment, in ``queries`` order.

    Parameters
    ----------
    qrels : {qid: {doc_id: grade}}
    queries : iterable of qids, optional
        Restrict to (and order by) these; defaults to the qrels order.
    """
    order = qrels.keys() if queries is None else queries
    return [q for q in order if any(g > 0 for g in qrels.get(q, {}).values())]


def _rank_rescore(results: Mapping[str, float]) -> dict[str, float]:
    """Replace scores by ``n - rank`` with ranks by score desc, then run order (ties)."""
    ordered = sorted(results.items(), key=lambda kv: -kv[1])  # stable: ties keep run order
    n = len(ordered)
    return {doc: float(n - r) for r, (doc, _) in enumerate(ordered)}


def per_query_metrics(
    run: Run,
    qrels: Qrels,
    metrics: Sequence[Any] = DEFAULT_METRICS,
    queries: Iterable[str] | None = None,
) -> dict[str, dict[str, float]]:
    """Per-query metric values via ``ir_measures.iter_calc``; missing queries count as 0.

    Parameters
    ----------
    run : {qid: {doc_id: score}}
    qrels : {qid: {doc_id: grade}}
    metrics : ir_measures names or measure objects
        Output keys are ir_measures' canonical names (``"MRR@10"`` becomes ``"RR@10"``).
    queries : qids, optional
        The task's queries; evaluated queries are these with a relevant judgment
        (see :func:`evaluated_qids`).

    Returns
    -------
    {metric_name: {qid: value}} with every evaluated qid present for every metric (0.0 when
    the query has no result), qids in evaluated order.
    """
    import ir_measures

    measures = _parse_metrics(metrics)
    qids = evaluated_qids(qrels, queries)
    names = [str(m) for m in measures]
    out: dict[str, dict[str, float]] = {name: dict.fromkeys(qids, 0.0) for name in names}
    answered = {q: _rank_rescore(run[q]) for q in qids if run.get(q)}
    if answered:
        sub_qrels = {q: dict(qrels[q]) for q in qids}
        by_measure = dict(zip(measures, names, strict=True))
        for m in ir_measures.iter_calc(measures, sub_qrels, answered):
            if m.query_id in answered:  # filled defaults for the others are ours to decide
                out[by_measure[m.measure]][m.query_id] = float(m.value)
    return out


# ======================================================================================
# bootstrap
# ======================================================================================
def _boot_means(values: np.ndarray, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """Means of ``n_boot`` resamples (with replacement) of ``values`` (n,) -> (n_boot,).

    Works on deviations from the sample mean so a constant sample gives exactly one value.
    """
    n = values.shape[0]
    centre = values.mean()
    dev = values - centre
    chunk = max(1, _MAX_BLOCK_ELEMS // max(n, 1))
    out = np.empty(n_boot, dtype=np.float64)
    for s in range(0, n_boot, chunk):
        m = min(chunk, n_boot - s)
        idx = rng.integers(0, n, size=(m, n))
        out[s : s + m] = dev[idx].mean(axis=1)
    return centre + out


def _as_array(values: Any) -> np.ndarray:
    if isinstance(values, Mapping):
        values = list(values.values())
    arr = np.asarray(values, dtype=np.float64).ravel()
    if not np.all(np.isfinite(arr)):
        raise ValueError("metric values must be finite (got NaN or inf)")
    return arr


def bootstrap_ci(
    values: Any, n_boot: int = 1000, alpha: float = 0.05, seed: int = 0
) -> tuple[float, float, float]:
    """Mean and percentile-bootstrap confidence interval over queries.

    Draws ``n_boot`` resamples of the n per-query values with replacement (seeded,
    vectorised), and returns the ``alpha/2`` and ``1 - alpha/2`` percentiles of the resample
    means.

    Parameters
    ----------
    values : (n,) array-like or {qid: value}
    n_boot : int
        Resamples (>= 1000 for reporting).
    alpha : float
        1 - confidence level.
    seed : int

    Returns
    -------
    (mean, ci_low, ci_high); all NaN when ``n == 0``.
    """
    arr = _as_array(values)
    if arr.size == 0:
        return math.nan, math.nan, math.nan
    means = _boot_means(arr, n_boot, np.random.default_rng(seed))
    low, high = np.percentile(means, [100 * alpha / 2, 100 * (1 - alpha / 2)])
    return float(arr.mean()), float(low), float(high)


def macro_bootstrap_ci(
    groups: Mapping[str, Any], n_boot: int = 1000, alpha: float = 0.05, seed: int = 0
) -> tuple[float, float, float]:
    """Macro average over groups (languages) with a stratified bootstrap CI.

    The macro mean is :math:`\\bar m = \\frac1G \\sum_g \\operatorname{mean}(x_g)`. Each
    bootstrap replicate resamples queries *within* every group independently, so each
    language keeps its weight 1/G and its own sample size.

    Parameters
    ----------
    groups : {group: (n_g,) values or {qid: value}}
        Empty groups are an error (a language with no evaluated query).

    Returns
    -------
    (macro_mean, ci_low, ci_high); NaN when there are no groups.
    """
    if not groups:
        return math.nan, math.nan, math.nan
    rng = np.random.default_rng(seed)
    total = np.zeros(n_boot)
    point = 0.0
    for name in sorted(groups):
        arr = _as_array(groups[name])
        if arr.size == 0:
            raise ValueError(f"group {name!r} has no values; drop it before macro-averaging")
        total += _boot_means(arr, n_boot, rng)
        point += arr.mean()
    g = len(groups)
    low, high = np.percentile(total / g, [100 * alpha / 2, 100 * (1 - alpha / 2)])
    return float(point / g), float(low), float(high)


def aggregate(
    per_query: Mapping[str, float], n_boot: int = 1000, alpha: float = 0.05, seed: int = 0
) -> dict[str, float]:
    """``{"mean", "ci_low", "ci_high", "n_queries"}`` of one metric's per-query values."""
    mean, low, high = bootstrap_ci(per_query, n_boot=n_boot, alpha=alpha, seed=seed)
    return {"mean": mean, "ci_low": low, "ci_high": high, "n_queries": len(per_query)}


def evaluate_run(
    run: Run,
    task: Any,
    metrics: Sequence[Any] = DEFAULT_METRICS,
    n_boot: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
) -> dict[str, Any]:
    """Evaluate one run on one task: per-query values and mean with bootstrap CI.

    Parameters
    ----------
    run : {qid: {doc_id: score}}
    task
        Anything with ``name``, ``queries``, ``qrels``, ``query_lang``, ``doc_lang``.

    Returns
    -------
    dict with ``task``, ``query_lang``, ``doc_lang``, ``per_query`` ({metric: {qid: value}}),
    ``aggregate`` ({metric: {mean, ci_low, ci_high, n_queries}}), ``n_queries`` (evaluated),
    ``n_missing`` (evaluated queries with no result), ``n_unjudged`` (queries without a
    relevant judgment, excluded).
    """
    per_query = per_query_metrics(run, task.qrels, metrics, queries=task.queries)
    qids = evaluated_qids(task.qrels, task.queries)
    return {
        "task": task.name,
        "query_lang": task.query_lang,
        "doc_lang": task.doc_lang,
        "per_query": per_query,
        "aggregate": {
            m: aggregate(v, n_boot=n_boot, alpha=alpha, seed=seed) for m, v in per_query.items()
        },
        "n_queries": len(qids),
        "n_missing": sum(1 for q in qids if not run.get(q)),
        "n_unjudged": len(task.queries) - len(qids),
    }


# ======================================================================================
# paired comparisons
# ======================================================================================
def _paired_arrays(a: Any, b: Any) -> tuple[np.ndarray, np.ndarray]:
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        if set(a) != set(b):
            only_a, only_b = sorted(set(a) - set(b)), sorted(set(b) - set(a))
            raise ValueError(
                "paired comparison needs the same queries in both systems; "
                f"only in a: {only_a[:5]} ({len(only_a)}), only in b: {only_b[:5]} "
                f"({len(only_b)})"
            )
        keys = list(a)
        return _as_array([a[k] for k in keys]), _as_array([b[k] for k in keys])
    a, b = _as_array(a), _as_array(b)
    if a.shape != b.shape:
        raise ValueError(f"paired comparison needs equal lengths, got {a.size} and {b.size}")
    return a, b


def _sign_flip_pvalue(d: np.ndarray, n_perm: int, rng: np.random.Generator) -> float:
    """Two-sided sign-flip randomisation p-value for H0: the paired differences are symmetric
    about 0. Statistic :math:`T = |\\sum_i s_i d_i|`, :math:`s_i \\in \\{-1, +1\\}`.

    Exact (all :math:`2^n` sign vectors) when :math:`2^n \\le` ``n_perm``; otherwise Monte
    Carlo with the observed assignment counted, :math:`p = (1 + \\#\\{T^* \\ge T\\}) /
    (1 + n_{perm})`.
    """
    n = d.size
    observed = abs(d.sum())
    tol = 1e-9 * max(1.0, observed)  # sums in another order may differ in the last bits
    if n <= 20 and 2**n <= n_perm:
        signs = 1 - 2 * ((np.arange(2**n)[:, None] >> np.arange(n)) & 1)
        return float(np.mean(np.abs(signs @ d) >= observed - tol))
    hits = 0
    chunk = max(1, _MAX_BLOCK_ELEMS // n)
    for s in range(0, n_perm, chunk):
        m = min(chunk, n_perm - s)
        signs = 1.0 - 2.0 * rng.integers(0, 2, size=(m, n), dtype=np.int8)
        hits += int(np.count_nonzero(np.abs(signs @ d) >= observed - tol))
    return (1 + hits) / (1 + n_perm)


def paired_test(
    a: Any,
    b: Any,
    n_perm: int = 10000,
    seed: int = 0,
    n_boot: int = 1000,
    alpha: float = 0.05,
) -> dict[str, float]:
    """Compare two systems on the same queries.

    Differences :math:`d_i = a_i - b_i`. Reports the mean difference with a bootstrap CI,
    the paired t-test (``scipy.stats.ttest_rel``) and a two-sided sign-flip randomisation
    test (seeded, vectorised, ``n_perm`` sign vectors).

    Parameters
    ----------
    a, b : (n,) arrays in the same query order, or {qid: value} with the same keys.

    Returns
    -------
    dict with ``n, mean_a, mean_b, diff, ci_low, ci_high, t, p_t, p_perm``. When all
    differences are 0 both p-values are 1 (scipy would give NaN for the t-test); when they
    are all equal and non-zero, ``t = ±inf`` and ``p_t = 0``. ``p_t`` is NaN for n = 1.
    """
    from scipy import stats

    a, b = _paired_arrays(a, b)
    d = a - b
    n = d.size
    if n == 0:
        raise ValueError("paired comparison of zero queries")
    diff, low, high = bootstrap_ci(d, n_boot=n_boot, alpha=alpha, seed=seed)
    if not np.any(d):
        t, p_t, p_perm = 0.0, 1.0, 1.0
    else:
        if n > 1 and np.all(d == d[0]):  # zero variance: scipy warns, the limit is p = 0
            t, p_t = math.copysign(math.inf, d[0]), 0.0
        elif n > 1:
            res = stats.ttest_rel(a, b)
            t, p_t = float(res.statistic), float(res.pvalue)
        else:
            t, p_t = math.nan, math.nan
        p_perm = _sign_flip_pvalue(d, n_perm, np.random.default_rng(seed))
    return {
        "n": n,
        "mean_a": float(a.mean()),
        "mean_b": float(b.mean()),
        "diff": diff,
        "ci_low": low,
        "ci_high": high,
        "t": t,
        "p_t": p_t,
        "p_perm": p_perm,
    }


def holm(pvalues: Sequence[float], alpha: float = 0.05) -> tuple[np.ndarray, np.ndarray]:
    """Holm–Bonferroni step-down adjustment (``statsmodels`` ``multipletests``, "holm").

    With sorted p-values :math:`p_{(1)} \\le \\dots \\le p_{(m)}` the adjusted values are
    :math:`\\tilde p_{(i)} = \\max_{j \\le i} \\min(1, (m - j + 1) p_{(j)})`; a hypothesis is
    rejected when :math:`\\tilde p \\le \\alpha`.

    Parameters
    ----------
    pvalues : (m,) p-values (NaN not allowed)

    Returns
    -------
    adjusted : (m,) float array in input order
    reject : (m,) bool array
    """
    from statsmodels.stats.multitest import multipletests

    p = np.asarray(pvalues, dtype=np.float64)
    if p.size == 0:
        return p, np.zeros(0, dtype=bool)
    if np.isnan(p).any():
        raise ValueError("holm: NaN p-value (a comparison with fewer than 2 queries?)")
    reject, adjusted, _, _ = multipletests(p, alpha=alpha, method="holm")
    return adjusted, reject


def compare_systems(
    a: Mapping[str, Mapping[str, float]],
    b: Mapping[str, Mapping[str, float]],
    n_perm: int = 10000,
    seed: int = 0,
    n_boot: int = 1000,
    alpha: float = 0.05,
) -> pd.DataFrame:
    """Paired comparison per language with Holm–Bonferroni across languages.

    Parameters
    ----------
    a, b : {lang: {qid: value}}
        One metric's per-query values of systems A and B; same languages and queries.

    Returns
    -------
    DataFrame, a row per language: the :func:`paired_test` fields plus ``p_t_holm``,
    ``p_perm_holm`` and ``reject`` (Holm on the randomisation p-values at ``alpha``).
    """
    if set(a) != set(b):
        raise ValueError(
            f"systems cover different languages: {sorted(set(a) ^ set(b))} in only one"
        )
    rows = [
        {"lang": lang, **paired_test(a[lang], b[lang], n_perm, seed, n_boot, alpha)}
        for lang in sorted(a)
    ]
    df = pd.DataFrame(rows)
    if df.empty:
        return df
    df["p_perm_holm"], df["reject"] = holm(df["p_perm"].to_numpy(), alpha)
    p_t = df["p_t"].to_numpy()
    df["p_t_holm"] = holm(p_t, alpha)[0] if not np.isnan(p_t).any() else np.nan
    return df


# ======================================================================================
# seeds
# ======================================================================================
def seed_summary(values: Any, alpha: float = 0.05) -> dict[str, float]:
    """Mean over training seeds with its spread.

    The CI is t-based, :math:`\\bar x \\pm t_{1-\\alpha/2,\\,n-1}\\, s / \\sqrt n` with the
    sample standard deviation ``s`` (ddof=1); with 3 seeds a bootstrap would have only 10
    distinct resamples.

    Returns
    -------
    dict ``mean, std, min, max, ci_low, ci_high, n_seeds``; std and CI are NaN for 1 seed.
    """
    from scipy import stats

    x = _as_array(values)
    n = x.size
    if n == 0:
        raise ValueError("seed_summary of no values")
    mean = float(x.mean())
    if n == 1:
        std = low = high = math.nan
    else:
        std = float(x.std(ddof=1))
        half = float(stats.t.ppf(1 - alpha / 2, n - 1)) * std / math.sqrt(n)
        low, high = mean - half, mean + half
    return {
        "mean": mean,
        "std": std,
        "min": float(x.min()),
        "max": float(x.max()),
        "ci_low": low,
        "ci_high": high,
        "n_seeds": n,
    }


# ======================================================================================
# result records
# ======================================================================================
#: Keys every ``run_meta`` dict must have (use None for "not applicable", e.g. k_langs of a
#: zero-shot model).
RUN_META_KEYS: tuple[str, ...] = (
    "run_id",
    "profile",
    "model",
    "layers",
    "nonemb_params",
    "method",
    "k_langs",
    "budget",
    "seed",
)

#: The one result table: a row per run x task x language (or macro group) x metric.
#: ``scope`` is "language" (query_lang is a language), "macro" (mean over all languages,
#: query_lang "*") or "class" (mean over the languages of ``resource_class``, query_lang "*").
RESULT_COLUMNS: tuple[str, ...] = (
    "run_id",
    "profile",
    "task",
    "query_lang",
    "doc_lang",
    "model",
    "layers",
    "nonemb_params",
    "method",
    "k_langs",
    "budget",
    "seed",
    "scope",
    "resource_class",
    "metric",
    "value",
    "ci_low",
    "ci_high",
    "n_queries",
)

#: Per-query values, for paired tests between runs read back from disk.
PER_QUERY_COLUMNS: tuple[str, ...] = (
    "run_id",
    "task",
    "query_lang",
    "doc_lang",
    "metric",
    "qid",
    "value",
)

_STR_COLS = {
    "run_id",
    "profile",
    "task",
    "query_lang",
    "doc_lang",
    "model",
    "method",
    "scope",
    "resource_class",
    "metric",
    "qid",
}
_INT_COLS = {"layers", "nonemb_params", "k_langs", "budget", "seed", "n_queries"}
_FLOAT_COLS = {"value", "ci_low", "ci_high"}
_SUFFIXES = (".json", ".csv", ".parquet")


def _meta(run_meta: Mapping[str, Any]) -> dict[str, Any]:
    missing = [k for k in RUN_META_KEYS if k not in run_meta]
    if missing:
        raise ValueError(
            f"run_meta is missing {', '.join(missing)} (required: {', '.join(RUN_META_KEYS)}; "
            "use None where a field does not apply)"
        )
    return dict(run_meta)


def _row(meta: Mapping[str, Any], where: tuple, metric: str, ci: tuple[float, float, float],
         n_queries: int) -> dict[str, Any]:
    """One result row: run meta, ``where = (task, query_lang, doc_lang, scope,
    resource_class)``, the metric and its ``(mean, ci_low, ci_high)``."""
    task, query_lang, doc_lang, scope, resource_class = where
    mean, low, high = ci
    return {**meta, "task": task, "query_lang": query_lang, "doc_lang": doc_lang, "scope": scope,
            "resource_class": resource_class, "metric": metric, "value": mean, "ci_low": low,
            "ci_high": high, "n_queries": n_queries}


def result_rows(
    run_meta: Mapping[str, Any],
    task: Any,
    per_query: PerQuery,
    resource_class: str | None = None,
    n_boot: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
) -> list[dict[str, Any]]:
    """Per-language rows (scope "language") of the result table for one task.

    Parameters
    ----------
    run_meta : dict with :data:`RUN_META_KEYS` (extra keys become extra columns)
    task
        Provides ``name``, ``query_lang``, ``doc_lang``.
    per_query : {metric: {qid: value}}, e.g. ``evaluate_run(...)["per_query"]``
    resource_class : the language's resource class, if known

    Returns
    -------
    list of dicts, one per metric, with :data:`RESULT_COLUMNS` (+ extra meta keys).
    """
    meta = _meta(run_meta)
    rows = []
    for metric, values in per_query.items():
        ci = bootstrap_ci(values, n_boot=n_boot, alpha=alpha, seed=seed)
        where = (task.name, task.query_lang, task.doc_lang, "language", resource_class)
        rows.append(_row(meta, where, metric, ci, len(values)))
    return rows


def macro_rows(
    run_meta: Mapping[str, Any],
    suite: str,
    per_lang: Mapping[str, PerQuery],
    lang_class: Mapping[str, str] | None = None,
    doc_lang: str = "eng",
    n_boot: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
) -> list[dict[str, Any]]:
    """Macro-average rows over languages and over resource classes.

    Parameters
    ----------
    run_meta : dict with :data:`RUN_META_KEYS`
    suite : str
        Value of the ``task`` column for these rows (e.g. "tatoeba").
    per_lang : {lang: {metric: {qid: value}}}, one task per language
    lang_class : {lang: class}, optional
        E.g. {"swh": "low", "khm": "low", "deu": "high"}; adds a scope "class" row per class
        and metric (languages without a class are left out of class rows).

    Returns
    -------
    Rows with scope "macro" (query_lang "*", resource_class "*") and "class"
    (query_lang "*", resource_class = the class); CIs by :func:`macro_bootstrap_ci`.
    """
    meta = _meta(run_meta)
    if not per_lang:
        return []
    metrics = list(next(iter(per_lang.values())))
    groups: dict[str, list[str]] = {"*": sorted(per_lang)}
    if lang_class:
        for lang in sorted(per_lang):
            if lang in lang_class:
                groups.setdefault(lang_class[lang], []).append(lang)
    rows = []
    for group, langs in groups.items():
        for metric in metrics:
            data = {lang: per_lang[lang][metric] for lang in langs}
            ci = macro_bootstrap_ci(data, n_boot=n_boot, alpha=alpha, seed=seed)
            where = (suite, "*", doc_lang, "macro" if group == "*" else "class", group)
            rows.append(_row(meta, where, metric, ci, sum(len(v) for v in data.values())))
    return rows


def per_query_rows(
    run_meta: Mapping[str, Any], task: Any, per_query: PerQuery
) -> list[dict[str, Any]]:
    """Rows of the per-query table (:data:`PER_QUERY_COLUMNS`) for one task."""
    run_id = _meta(run_meta)["run_id"]
    return [
        {
            "run_id": run_id,
            "task": task.name,
            "query_lang": task.query_lang,
            "doc_lang": task.doc_lang,
            "metric": metric,
            "qid": qid,
            "value": value,
        }
        for metric, values in per_query.items()
        for qid, value in values.items()
    ]


def evaluate_runs(
    runs: Mapping[str, Run],
    tasks: Sequence[Any],
    run_meta: Mapping[str, Any],
    suite: str | None = None,
    lang_class: Mapping[str, str] | None = None,
    metrics: Sequence[Any] = DEFAULT_METRICS,
    n_boot: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Evaluate one system on several per-language tasks; the loop a notebook should not hold.

    Parameters
    ----------
    runs : {task.name: run}
    tasks : tasks of one suite, one per query language
    run_meta : dict with :data:`RUN_META_KEYS`
    suite : str, optional
        If given, every row (per language, macro, per class, per query) gets this ``task``
        value, so one suite is one ``task`` and ``query_lang`` tells the languages apart;
        macro rows (all languages, and per class with ``lang_class``) are added. Without it,
        rows carry their ``task.name`` and no macro rows are made.

    Returns
    -------
    (result rows, per-query rows)
    """
    missing = [t.name for t in tasks if t.name not in runs]
    if missing:
        raise ValueError(f"no run for task(s) {missing}; runs has {sorted(runs)}")
    rows: list[dict[str, Any]] = []
    pq_rows: list[dict[str, Any]] = []
    per_lang: dict[str, PerQuery] = {}
    doc_langs = set()
    for task in tasks:
        # per-query values only: result_rows bootstraps each metric's CI (once)
        values = per_query_metrics(runs[task.name], task.qrels, metrics, queries=task.queries)
        cls = lang_class.get(task.query_lang) if lang_class else None
        rows += result_rows(run_meta, task, values, cls, n_boot, seed, alpha)
        pq_rows += per_query_rows(run_meta, task, values)
        if task.query_lang in per_lang:
            raise ValueError(
                f"two tasks with query language {task.query_lang!r}: a macro average over "
                "languages needs one task per language (evaluate the suites separately)"
            )
        per_lang[task.query_lang] = values
        doc_langs.add(task.doc_lang)
    if suite is not None and per_lang:
        for row in rows + pq_rows:
            row["task"] = suite
        doc_lang = doc_langs.pop() if len(doc_langs) == 1 else "*"
        rows += macro_rows(run_meta, suite, per_lang, lang_class, doc_lang, n_boot, seed, alpha)
    return rows, pq_rows


def aggregate_seeds(df: pd.DataFrame, alpha: float = 0.05) -> pd.DataFrame:
    """Collapse a result table over seeds: one row per setting x task x language x metric.

    Groups by every schema column except ``run_id, seed, value, ci_low, ci_high,
    n_queries`` (missing keys such as ``k_langs`` of zero-shot runs form their own group)
    and applies :func:`seed_summary` to ``value``.

    Returns
    -------
    DataFrame with the key columns and ``mean, std, min, max, ci_low, ci_high, n_seeds``.
    """
    _check_columns(df, RESULT_COLUMNS, "aggregate_seeds input")
    drop = {"run_id", "seed", "value", "ci_low", "ci_high", "n_queries"}
    keys = [c for c in RESULT_COLUMNS if c not in drop]
    out = []
    for key, grp in df.groupby(keys, dropna=False, sort=True):
        out.append({**dict(zip(keys, key, strict=True)), **seed_summary(grp["value"], alpha)})
    return pd.DataFrame(out, columns=[*keys, *seed_summary([0.0]).keys()])


def _check_columns(df: pd.DataFrame, columns: Sequence[str], where: Any) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ValueError(
            f"{where}: missing result column(s) {', '.join(missing)}; expected at least "
            f"{', '.join(columns)}"
        )


def _coerce(df: pd.DataFrame) -> pd.DataFrame:
    """Give known columns their schema dtypes (string, nullable Int64, float64)."""
    df = df.copy()
    for c in df.columns:
        if c in _STR_COLS:
            df[c] = df[c].astype("string")
        elif c in _INT_COLS:
            df[c] = pd.to_numeric(df[c]).astype("Int64")
        elif c in _FLOAT_COLS:
            df[c] = pd.to_numeric(df[c]).astype("float64")
    return df


#: Sort order of per-query tables on disk (the columns present, in this order).
_PER_QUERY_ORDER = ("task", "query_lang", "qid", "protocol", "metric")


#: Parquet columns stored with delta encoding of their byte arrays instead of a dictionary:
#: the query ids, sorted and nearly all distinct, where a dictionary saves nothing.
_DELTA_ENCODED = ("qid",)


def _compact(df: pd.DataFrame) -> pd.DataFrame:
    """The frame as Parquet stores it compactly: text columns as dictionaries (the query
    ids as plain sorted strings, see :func:`_write_parquet`) and, for per-query tables (a
    ``qid`` column), rows sorted so that equal query ids sit together. Reading it back
    (:func:`_read_one`) restores the column dtypes, not the row order."""
    if "qid" in df.columns:
        keys = [c for c in _PER_QUERY_ORDER if c in df.columns]
        df = df.sort_values(keys, kind="stable", ignore_index=True)
    text = [c for c in df.columns if c not in _DELTA_ENCODED and (
        pd.api.types.is_string_dtype(df[c]) or pd.api.types.is_object_dtype(df[c]))]
    return df.astype({c: "category" for c in text})


def _write_parquet(df: pd.DataFrame, path: str) -> None:
    """``df`` as zstd Parquet (level 9): dictionaries for every column but the query ids,
    which take DELTA_BYTE_ARRAY (shared prefixes of neighbouring sorted ids). On a v2 run's
    per-query file (226,688 rows) that is 155 kB against 430 kB with a dictionary of ids."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    delta = [c for c in _DELTA_ENCODED if c in df.columns]
    table = pa.Table.from_pandas(df, preserve_index=False)
    pq.write_table(table, path, compression="zstd", compression_level=9,
                   use_dictionary=[c for c in df.columns if c not in delta],
                   column_encoding=dict.fromkeys(delta, "DELTA_BYTE_ARRAY"))


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    raise TypeError(f"result value {obj!r} of type {type(obj).__name__} is not JSON-serialisable")


def _jsonable(value: Any) -> Any:
    if value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        return None
    return value


def write_results(
    rows: Sequence[Mapping[str, Any]] | pd.DataFrame,
    path: str | os.PathLike,
    columns: Sequence[str] = RESULT_COLUMNS,
) -> Path:
    """Write result rows atomically as JSON (list of records), CSV or Parquet, by suffix.

    Parameters
    ----------
    rows : list of dicts or DataFrame with at least ``columns``
    path : file ending in .json, .csv or .parquet
    columns : required schema (:data:`RESULT_COLUMNS` or :data:`PER_QUERY_COLUMNS`)

    Returns
    -------
    The path written. On any error no partial file is left and an existing file is intact.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in _SUFFIXES:
        raise ValueError(f"unsupported results format {path.name!r}: use {', '.join(_SUFFIXES)}")
    df = rows.copy() if isinstance(rows, pd.DataFrame) else pd.DataFrame(list(rows))
    _check_columns(df, columns, f"rows for {path}")
    ordered = [*columns, *[c for c in df.columns if c not in columns]]
    df = df[ordered]

    if suffix == ".json":
        records = [
            {k: _jsonable(v) for k, v in rec.items()}
            for rec in df.astype(object).to_dict(orient="records")
        ]

        def write(tmp: str) -> None:
            with open(tmp, "w", encoding="utf-8") as fh:
                json.dump(records, fh, indent=1, allow_nan=False, default=_json_default)
                fh.write("\n")

    elif suffix == ".csv":

        def write(tmp: str) -> None:
            _coerce(df).to_csv(tmp, index=False)

    else:

        def write(tmp: str) -> None:
            _write_parquet(_compact(_coerce(df)), tmp)

    atomic_write(path, write)
    return path


def _read_one(path: Path, columns: Sequence[str]) -> pd.DataFrame:
    suffix = path.suffix.lower()
    if suffix == ".json":
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
        if not isinstance(data, list):
            raise ValueError(f"{path}: expected a JSON list of result records")
        df = pd.DataFrame.from_records(data)
    elif suffix == ".csv":
        header = pd.read_csv(path, nrows=0).columns
        dtype = {c: "string" for c in header if c in _STR_COLS}
        df = pd.read_csv(path, dtype=dtype, keep_default_na=False, na_values=[""])
    elif suffix == ".parquet":
        df = pd.read_parquet(path)
        for c in df.columns[[isinstance(t, pd.CategoricalDtype) for t in df.dtypes]]:
            df[c] = df[c].astype(df[c].cat.categories.dtype)
    else:
        raise ValueError(f"unsupported results format {path.name!r}: use {', '.join(_SUFFIXES)}")
    _check_columns(df, columns, path)
    return _coerce(df)


def read_results(
    path: str | os.PathLike,
    columns: Sequence[str] = RESULT_COLUMNS,
    pattern: str = "*",
) -> pd.DataFrame:
    """Read one results file, or every ``.json/.csv/.parquet`` file in a directory.

    Parameters
    ----------
    path : file or directory (not recursive; hidden temp files are ignored)
    columns : required columns; a file lacking any raises ``ValueError`` naming them
    pattern : glob for file names inside a directory (e.g. ``"*.parquet"``)

    Returns
    -------
    DataFrame with schema dtypes: strings, nullable ``Int64`` integers, float64 values.
    """
    path = Path(path)
    if path.is_dir():
        files = sorted(
            p
            for p in path.glob(pattern)
            if p.is_file() and p.suffix.lower() in _SUFFIXES and not p.name.startswith(".")
        )
        if not files:
            raise FileNotFoundError(
                f"no result files ({', '.join(_SUFFIXES)}) matching {pattern!r} in {path}"
            )
        frames = [_read_one(p, columns) for p in files]
        return pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
    if not path.exists():
        raise FileNotFoundError(f"results file {path} does not exist")
    return _read_one(path, columns)
