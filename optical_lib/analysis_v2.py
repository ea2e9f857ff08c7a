"""Design v2's pre-registered analysis of Δ: does the number of training languages k
matter, and does it matter more than one step of student depth?

Outcome
    Δ = the distilled student's per-query metric minus the same-depth zero-shot model's on
    the same query under the same protocol (the ``delta`` column of a trained run's
    ``per_query.parquet``, :mod:`optical_lib.protocol`). The absolute metric of a run is its
    per-query ``value``. One analysis is one *slice*: one task (suite and direction), one
    protocol, one teacher, objective, budget and pool (:func:`select`).

Design
    depth L (a category) x k (a category) x draw d. The training language set is fixed by the
    pair (k, d): draw 3 at k = 1 and draw 3 at k = 8 are different sets, and the (k, d) sample
    is shared by every depth. So the random draw cluster of the mixed model is (k, d). The
    evaluation languages are crossed with the runs (every run is evaluated on all of them)
    and the queries are paired across runs (the same qids).

Estimates (book: Results, "Analysis, version 2")
    * :func:`mixed_model`: per-(run, language) mean Δ ~ C(layers) * C(k_langs) + covariates
      with crossed random intercepts for the draw cluster, the evaluation language and
      language x k; :func:`k_omnibus` its Wald tests of k, :func:`k_effects` its marginal
      k effects.
    * :func:`hierarchical_bootstrap`: the cell means (depth x k) of Δ and of the absolute
      metric under resampling of draws, then languages, then queries, and under each
      level resampled alone. Every CI of the analysis is a 95% t interval whose variance
      adds the levels' bootstrap variances, with Welch-Satterthwaite degrees of freedom
      (:func:`t_interval`); the pre-registered percentile interval rejected too often with
      few draws (see Calibration).
    * :func:`contrast_table`: the pre-registered contrasts (:data:`CONTRASTS`) with CIs,
      p-values of the t intervals, Holm within each family and the minimal detectable effect
      (:func:`mde`); :func:`verdict` and :func:`headline` turn the table into sentences.
    * :func:`zero_shot_depth_curve`: the zero-shot models' metric per depth, apart from Δ.

Calibration
    :mod:`optical_lib.calibration` measures by simulation how often a test rejects a zero
    k contrast for each number of draws. The pre-registered percentile-bootstrap test
    rejected too often (about twice the nominal level with 10 draws where draws dominate),
    so the analysis uses :func:`t_interval` (decided on the simulation, 2026-11-27, with
    two of ten draws of one depth run); the results page shows tests only from the number
    of draws at which the test used holds its level.

The results page that shows these estimates is built by :mod:`optical_lib.study_page`.

Everything here reads result files (:func:`load_deltas`) and recomputes no metric.
"""

from __future__ import annotations

import functools
import json
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
from scipy import stats

from .distill import TRAINED_METHODS
from .evaluate import holm
from .grid import V2_DEPTHS
from .layout import ResultsLayout
from .protocol import PRIMARY_METRIC
from .report import join_words

# --------------------------------------------------------------------------- schema

#: A trained run's setting, as columns of the Δ tables: column -> (dtype, meaning).
SETTING_COLUMNS: dict[str, tuple[str, str]] = {
    "layers": ("int64", "student depth L: retained layers of me5-small (a category)"),
    "k_langs": ("int64", "number of training languages k (a category)"),
    "draw": ("int64", "language draw d; the pair (k, d) fixes the training language set"),
    "seed": ("int64", "training seed"),
    "budget": ("int64", "training pairs"),
    "teacher": ("string", "the frozen English teacher (models.TEACHERS)"),
    "method": ("string", "distillation objective (distill.TRAINED_METHODS)"),
    "relatives": ("bool", "False: the 'no relatives' training pool"),
    "sample": ("string", "fixed (k languages, English side fixed) or pool (learning curve)"),
    "split": ("string", "eval (held-out languages) or dev (development languages)"),
}
#: The per-query Δ table of :func:`load_deltas`: column -> (dtype, meaning).
DELTA_COLUMNS: dict[str, tuple[str, str]] = {
    "run_id": ("string", "the trained run"),
    "task": ("string", "suite and direction: flores-x-eng, flores-eng-x, tatoeba-x-eng, ..."),
    "protocol": ("string", "student or teacher (protocol.PROTOCOLS)"),
    "query_lang": ("string", "evaluation language X (for eng->X too: the non-English side)"),
    "qid": ("string", "query id: the same query in every run (queries are paired)"),
    "value": ("float64", "the student's per-query metric (absolute)"),
    "baseline": ("float64", "the same-depth zero-shot model's per-query metric, same protocol"),
    "delta": ("float64", "Δ = value - baseline"),
    **SETTING_COLUMNS,
}
#: Columns that must hold one value in an analysed slice (a mixed model or a bootstrap).
SLICE_COLUMNS = ("task", "protocol", "teacher", "method", "budget", "relatives", "sample",
                 "split")
#: The per-(run, language) covariates of the mixed model (multiway.eval_covariates): the
#: share of training pairs in the evaluation language's family, the number of training
#: scripts, the share of training languages in XLM-R's pretraining. n_scripts and
#: share_same_family grow with k, so the model's k terms are effects at fixed covariates;
#: the bootstrap contrasts are not adjusted (the total effect of k).
COVARIATES = ("share_same_family", "n_scripts", "share_xlmr")
#: Crossed random intercepts, the statsmodels way: one group holding every row, and a
#: variance component per crossed factor: the draw cluster (k, d), the evaluation language,
#: and language x k (how much the effect of k differs between evaluation languages). Without
#: the last one a k effect that varies by language counts as independent residual noise and
#: the k tests reject too often (tests/test_analysis_v2.py plants such a grid);
#: :data:`VC_FORMULA_INTERCEPTS` is the model with the two intercepts only.
VC_FORMULA = {"draw": "0 + C(draw_id)", "lang": "0 + C(query_lang)",
              "lang_k": "0 + C(lang_k)"}
VC_FORMULA_INTERCEPTS = {"draw": "0 + C(draw_id)", "lang": "0 + C(query_lang)"}
#: The optimizers of the REML fit, tried in turn until one converges (the pre-registered
#: fit used L-BFGS alone; on the interim primary slice with L12 it stopped short of the
#: optimum, Powell's method reached it). The first converged fit is kept, else the one of
#: the highest likelihood, and a fit by any but the first says so in its warnings.
OPTIMIZERS = ("lbfgs", "powell")
#: A sensitivity model, not pre-registered (added 2026-11-29): :data:`VC_FORMULA` plus a
#: language x depth intercept. The pre-registered model shares one intercept per language
#: across depths; once a deep student whose Δ is an order of magnitude smaller (L12) joins
#: the shallow ones, how much each language gains differs by depth, and the pre-registered
#: model can only put that in its residual.
VC_FORMULA_LANG_DEPTH = {**VC_FORMULA, "lang_depth": "0 + C(lang_depth)"}
#: Fewest draws per (depth, k) cell: with one, a draw's effect cannot be told from k's.
MIN_DRAWS = 2
#: Levels the hierarchical bootstrap resamples, outermost first.
LEVELS = ("draws", "languages", "queries")
N_BOOT = 1000
ALPHA = 0.05
POWER = 0.8
#: The pre-registered reference number of training languages.
REFERENCE_K = 1
#: The student depths of the v2 design in order: *one depth step* is a step of this ladder
#: (:func:`ladder_steps`).
DEPTH_LADDER = V2_DEPTHS


@dataclass(frozen=True)
class ContrastSpec:
    """One pre-registered contrast: its ``name`` in :func:`contrast_table`, its Holm
    ``family`` (``""``: descriptive, not tested) and what it estimates."""

    name: str
    family: str
    meaning: str


#: The pre-registered contrasts (fixed before the v2 grid ran). Marginal means over depths
#: and over k give every cell the same weight. p-values of the tested contrasts come from
#: the hierarchical bootstrap's t intervals (:func:`t_interval`; pre-registered: the
#: percentile p-value :func:`bootstrap_p`, kept as ``p_percentile``), Holm-adjusted within
#: each family.
CONTRASTS: tuple[ContrastSpec, ...] = (
    ContrastSpec("k_vs_ref", "primary",
                 "for each k != 1: mean Δ at k minus mean Δ at k = 1, both the equal-weight "
                 "mean over depths of the (depth, k) cell means"),
    ContrastSpec("range_vs_depth", "primary",
                 "best-minus-worst k (k_range) minus one depth step (depth_step): > 0 when "
                 "the choice of k moves Δ more than one depth step moves the metric"),
    ContrastSpec("k_vs_ref_at_depth", "per depth",
                 "for each depth L and k != 1: mean Δ at (L, k) minus mean Δ at (L, 1)"),
    ContrastSpec("k_range", "",
                 "largest minus smallest marginal mean Δ over k, the two k re-selected in "
                 "every bootstrap replicate (the estimate is biased upwards when k does "
                 "nothing; the replicates carry the selection)"),
    ContrastSpec("depth_step", "",
                 "mean over adjacent depth pairs (2->3, 3->6, 6->12) of the difference in "
                 "the distilled students' absolute metric averaged over k, i.e. "
                 "(A(L_max) - A(L_min)) / (number of depths - 1) on the full grid; an "
                 "interim analysis without a depth in between counts the difference "
                 "across the gap as the ladder steps it spans (ladder_steps, added "
                 "2026-11-29: the literal formula read L3 -> L12 as one step)"),
)
CONTRAST_COLUMNS = ("name", "family", "subject", "reference", "where", "layers", "k_langs",
                    "metric", "estimate", "se", "df", "ci_low", "ci_high", "p", "p_holm",
                    "reject", "mde", "p_percentile")


def _require(df: pd.DataFrame, columns: Iterable[str], where: str) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ValueError(f"{where}: missing column(s) {', '.join(missing)} (have: "
                         f"{', '.join(map(str, df.columns))}); build the table with "
                         f"load_deltas / language_deltas / contrast_table")


def _check_slice(df: pd.DataFrame, where: str) -> None:
    """One value per :data:`SLICE_COLUMNS` column, else a ValueError naming the fix."""
    for col in SLICE_COLUMNS:
        if col in df.columns and df[col].nunique(dropna=False) > 1:
            values = sorted(df[col].unique(), key=str)
            raise ValueError(f"{where}: the table mixes {col} = "
                             f"{', '.join(map(str, values))}; analyse one slice, e.g. "
                             f"select(deltas, {col}={values[0]!r})")


def select(df: pd.DataFrame, **where: Any) -> pd.DataFrame:
    """Rows of ``df`` whose columns equal the given values, e.g. ``select(deltas,
    task="flores-x-eng", protocol="teacher")``; an unknown column or an empty result is a
    ValueError."""
    _require(df, where, "select")
    keep = np.ones(len(df), dtype=bool)
    for col, value in where.items():
        keep &= (df[col] == value).to_numpy()
    if not keep.any():
        raise ValueError(f"select: no rows with {where}")
    return df[keep].reset_index(drop=True)


# --------------------------------------------------------------------------- loading


def read_setting(layout: ResultsLayout, run_id: str) -> dict[str, Any]:
    """A v2 run's setting as flat :data:`SETTING_COLUMNS` values (plus ``design`` and
    ``trains``), from its ``setting.json``."""
    path = layout.setting_file(run_id)
    if not (path.exists() and layout.results_file(run_id).exists()):
        raise FileNotFoundError(f"Run {run_id} has no finished results in "
                                f"{layout.run_dir(run_id)} (results.json is written last); "
                                f"run its setting first or leave it out of run_ids")
    config = json.loads(path.read_text())["config"]
    out = {"run_id": run_id, "design": config.get("design", "v1"),
           "trains": config.get("method") in TRAINED_METHODS}
    for col in SETTING_COLUMNS:
        out[col] = config.get(col)
    out["sample"] = out["sample"] or "fixed"  # added later; absent means fixed content
    return out


def _trained_settings(layout: ResultsLayout, run_ids: Sequence[str] | None) -> list[dict]:
    if run_ids is None:
        found = sorted(p.name for p in layout.runs.glob("*") if p.is_dir()) \
            if layout.runs.is_dir() else []
        run_ids = [r for r in found if layout.results_file(r).exists()
                   and layout.setting_file(r).exists()]
    settings = [read_setting(layout, r) for r in run_ids]
    trained = [s for s in settings if s["design"] == "v2" and s["trains"]]
    if not trained:
        raise ValueError(f"No trained design-v2 runs among {len(settings)} run(s) in "
                         f"{layout.runs} (zero-shot and BM25 runs have no Δ); run the "
                         f"grid's trained settings first")
    return trained


def _read_per_query(layout: ResultsLayout, setting: dict, metric: str,
                    tasks: Sequence[str] | None, protocols: Sequence[str] | None):
    import pyarrow.parquet as pq

    path = layout.per_query_file(setting["run_id"])
    names = pq.read_schema(path).names
    if "delta" not in names:
        raise ValueError(f"{path} has no delta column: {setting['run_id']} is not a trained "
                         f"v2 run (columns: {', '.join(names)})")
    filters = [("metric", "==", metric)]
    if tasks is not None:
        filters.append(("task", "in", list(tasks)))
    if protocols is not None:
        filters.append(("protocol", "in", list(protocols)))
    columns = [c for c in DELTA_COLUMNS if c in names]
    df = pd.read_parquet(path, columns=columns, filters=filters)
    for col, (dtype, _) in DELTA_COLUMNS.items():
        if col in SETTING_COLUMNS:
            df[col] = pd.Series([setting[col]] * len(df), dtype=dtype, index=df.index)
        else:
            df[col] = df[col].astype(dtype)
    return df[list(DELTA_COLUMNS)]


def load_deltas(results_dir: str | Path = "results", run_ids: Sequence[str] | None = None,
                metric: str = PRIMARY_METRIC, *, tasks: Sequence[str] | None = None,
                protocols: Sequence[str] | None = None) -> pd.DataFrame:
    """Per-query Δ of the trained design-v2 runs, joined with their settings.

    Parameters
    ----------
    results_dir : the results folder (``<results_dir>/runs/<run_id>/``)
    run_ids : runs to read (default: every finished run); those that are not trained
        design-v2 runs (zero-shot, BM25, v1) are skipped; a run without results is an error
    metric : per-query metric (``nDCG@10``, ``RR@10``)
    tasks, protocols : optional filters, applied while reading (less memory)

    Returns
    -------
    One row per (run, task, protocol, query): the columns of :data:`DELTA_COLUMNS`.
    Raises ``ValueError`` when no trained run or no row of ``metric`` is found.
    """
    layout = ResultsLayout(root=Path(results_dir))
    settings = _trained_settings(layout, run_ids)
    frames = [_read_per_query(layout, s, metric, tasks, protocols) for s in settings]
    df = pd.concat(frames, ignore_index=True)
    if df.empty:
        have = pd.read_parquet(layout.per_query_file(settings[0]["run_id"]), columns=["metric"])
        raise ValueError(f"No per-query rows of metric {metric!r} (tasks={tasks}, "
                         f"protocols={protocols}) in {len(settings)} trained run(s); "
                         f"metrics there: {', '.join(sorted(have['metric'].unique()))}")
    return df


class SampleKey(NamedTuple):
    """What fixes a design-v2 training sample (the same at every depth and seed)."""

    k_langs: int
    draw: int
    relatives: bool
    budget: int
    sample: str


@functools.lru_cache(maxsize=4)
def _training_sample(key: SampleKey):
    from .experiment import ExperimentConfig, training_sample

    config = ExperimentConfig.from_parameters(
        design="v2", method="optical", k_langs=key.k_langs, draw=key.draw,
        relatives=key.relatives, budget=key.budget, sample=key.sample)
    return training_sample(config)


@functools.cache
def sample_covariates(key: SampleKey, eval_lang: str) -> dict[str, Any]:
    """Covariates of one training sample for one evaluation language
    (:func:`optical_lib.multiway.eval_covariates`: share_same_family / genus / script, and
    the per-run n_families, n_genera, n_scripts, share_xlmr, n_xlmr_unknown). The sample is
    rebuilt from the data files (:func:`optical_lib.experiment.training_sample`) once per
    key; results are cached."""
    from .multiway import eval_covariates

    out = dict(eval_covariates(_training_sample(key), eval_lang))
    out.pop("eval_lang")
    return out


CovariateFn = Callable[[SampleKey, str], dict]


def _covariate_table(keys: pd.DataFrame, covariates: CovariateFn) -> pd.DataFrame:
    rows = []
    for rec in keys.to_dict(orient="records"):
        key = SampleKey(int(rec["k_langs"]), int(rec["draw"]), bool(rec["relatives"]),
                        int(rec["budget"]), str(rec["sample"]))
        rows.append({**rec, **covariates(key, rec["query_lang"])})
    return pd.DataFrame(rows)


def language_deltas(deltas: pd.DataFrame,
                    covariates: CovariateFn | None = sample_covariates) -> pd.DataFrame:
    """Mean Δ (and mean absolute metric) per (run, task, protocol, language), with the
    run's setting, its draw cluster ``draw_id`` = (k, draw) and the covariates of its
    training sample for that language.

    ``covariates(key, eval_lang) -> dict`` gives them per :class:`SampleKey` (default
    :func:`sample_covariates`, which reads the data directory; tests pass a stub);
    ``None`` leaves them out. Columns: run_id, task, protocol, query_lang, delta, value,
    n_queries, the :data:`SETTING_COLUMNS`, draw_id, and the covariates.
    """
    _require(deltas, ["run_id", "task", "protocol", "query_lang", "qid", "delta", "value",
                      *SETTING_COLUMNS], "language_deltas")
    keys = ["run_id", "task", "protocol", "query_lang"]
    means = (deltas.groupby(keys, observed=True, sort=True)
             .agg(delta=("delta", "mean"), value=("value", "mean"), n_queries=("qid", "size"))
             .reset_index())
    meta = deltas.drop_duplicates("run_id").set_index("run_id")[list(SETTING_COLUMNS)]
    out = means.join(meta, on="run_id")
    out["draw_id"] = "k" + out["k_langs"].astype(str) + "-d" + out["draw"].astype(str)
    for col in ("run_id", "task", "protocol", "query_lang"):
        out[col] = out[col].astype(str)
    if covariates is None:
        return out
    key_cols = [*SampleKey._fields, "query_lang"]
    table = _covariate_table(out[key_cols].drop_duplicates(), covariates)
    return out.merge(table, on=key_cols, how="left", validate="many_to_one")


# --------------------------------------------------------------------------- mixed model


@dataclass(frozen=True)
class MixedFit:
    """A fitted :func:`mixed_model`: the statsmodels ``result``, the tidy ``table`` of its
    estimates, the model frame ``data`` (covariates centred), the ``formula``, covariates
    (and variance components) ``dropped`` for having no variance, the fit's ``warnings``
    (e.g. a variance on the boundary) and ``df_between``: the denominator degrees of
    freedom of the k tests, the number of draw clusters minus the number of k values (k
    varies between clusters only).
    """

    result: Any
    table: pd.DataFrame
    data: pd.DataFrame
    formula: str
    dropped: tuple[str, ...]
    warnings: tuple[str, ...]
    df_between: int


def _check_draws(df: pd.DataFrame, min_draws: int) -> None:
    draws = df.groupby(["layers", "k_langs"])["draw"].nunique()
    few = draws[draws < min_draws]
    if len(few):
        cells = ", ".join(f"L{L} k = {k} ({n} draw{'s' * (n != 1)})"
                          for (L, k), n in few.items())
        raise ValueError(f"Too few draws to fit: {cells}; every (depth, k) cell needs at least "
                         f"{min_draws} draws, else a draw's effect cannot be told from k's. "
                         f"Run more draws (the v2 grid has 10) or leave these cells out")


def model_formula(data: pd.DataFrame, covariates: Sequence[str] = COVARIATES
                  ) -> tuple[str, list[str]]:
    """The default fixed part for ``data``: ``delta ~ C(layers) * C(k_langs) + covariates``,
    without the depth or k terms where ``data`` has one depth or one k, and without
    covariates that do not vary (returned as the second item)."""
    terms = [f"C({c})" for c in ("layers", "k_langs") if data[c].nunique() > 1]
    design = " * ".join(terms) if terms else "1"
    dropped = [c for c in covariates if data[c].nunique() < 2]
    kept = [c for c in covariates if c not in dropped]
    return " + ".join([f"delta ~ {design}", *kept]), dropped


def _model_frame(lang_deltas: pd.DataFrame, covariates: Sequence[str]) -> pd.DataFrame:
    data = lang_deltas.reset_index(drop=True).copy()
    if "draw_id" not in data.columns:
        data["draw_id"] = "k" + data["k_langs"].astype(str) + "-d" + data["draw"].astype(str)
    data["draw_id"] = data["draw_id"].astype(str)
    data["query_lang"] = data["query_lang"].astype(str)
    data["lang_k"] = data["query_lang"] + ":k" + data["k_langs"].astype(str)
    data["lang_depth"] = data["query_lang"] + ":L" + data["layers"].astype(str)
    for col in covariates:
        data[col] = data[col].astype(float) - data[col].astype(float).mean()
    return data


def _tidy(result) -> pd.DataFrame:
    fe, se = result.fe_params, result.bse_fe
    z = fe / se
    half = stats.norm.ppf(1 - ALPHA / 2) * se
    fixed = pd.DataFrame({"term": fe.index, "kind": "fixed", "estimate": fe.to_numpy(),
                          "se": se.to_numpy(), "z": z.to_numpy(),
                          "p": 2 * stats.norm.sf(np.abs(z.to_numpy())),
                          "ci_low": (fe - half).to_numpy(), "ci_high": (fe + half).to_numpy()})
    names = [*result.model.exog_vc.names, "residual"]
    variance = pd.DataFrame({"term": [f"{n} variance" for n in names], "kind": "variance",
                             "estimate": [*result.vcomp, result.scale]})
    return pd.concat([fixed, variance], ignore_index=True)


def variance_sd(fit: MixedFit) -> pd.DataFrame:
    """A mixed-model fit's variance components: ``component`` (``draw``, ``lang``, ...,
    ``residual``) and its fitted standard deviation ``sd``."""
    comps = fit.table[fit.table["kind"] == "variance"]
    return pd.DataFrame({"component": comps["term"].str.removesuffix(" variance"),
                         "sd": np.sqrt(comps["estimate"].clip(lower=0).to_numpy())})


def mixed_model(lang_deltas: pd.DataFrame, formula: str | None = None,
                covariates: Sequence[str] = COVARIATES, min_draws: int = MIN_DRAWS,
                vc_formula: dict[str, str] | None = None) -> MixedFit:
    """Linear mixed model of the per-(run, language) mean Δ (:func:`language_deltas`):

    .. math:: Δ_{r,l} = x_r^T β + γ^T c_{r,l} + u_{(k,d)(r)} + v_l + w_{l,k(r)} + ε_{r,l},
              u ~ N(0, σ_draw^2), v ~ N(0, σ_lang^2), w ~ N(0, σ_{lang x k}^2),
              ε ~ N(0, σ^2)

    with x_r the cell of run r (``C(layers) * C(k_langs)``, treatment coded against the
    smallest depth and k), c the covariates (centred, so the intercept is the reference
    cell at average covariates), u the draw cluster (k, d), v the evaluation language and
    w language x k: crossed random intercepts (:data:`VC_FORMULA`; ``vc_formula`` replaces
    them, e.g. :data:`VC_FORMULA_INTERCEPTS`); REML. ``formula`` replaces the default fixed
    part (:func:`model_formula`). One slice only (:data:`SLICE_COLUMNS`); a (depth, k) cell
    with fewer than ``min_draws`` draws, or fewer than two languages, raises ``ValueError``.
    The tidy table's p-values and CIs are asymptotic (z); the tests of k
    (:func:`k_omnibus`, :func:`k_effects`) use the between-cluster degrees of freedom.
    """
    import statsmodels.formula.api as smf

    needed = ["delta", "layers", "k_langs", "draw", "query_lang"]
    _require(lang_deltas, needed + ([] if formula else list(covariates)), "mixed_model")
    _check_slice(lang_deltas, "mixed_model")
    _check_draws(lang_deltas, min_draws)
    if lang_deltas["query_lang"].nunique() < 2:
        raise ValueError("mixed_model: one evaluation language; the language variance needs "
                         "at least two (xquad-r-eng-eng has only English)")
    covariates = [c for c in covariates if c in lang_deltas.columns]
    data = _model_frame(lang_deltas, covariates)
    dropped: list[str] = []
    if formula is None:
        formula, dropped = model_formula(data, covariates)
    vc = dict(VC_FORMULA if vc_formula is None else vc_formula)
    if data["k_langs"].nunique() < 2 and "lang_k" in vc:  # language x k is the language
        del vc["lang_k"]
        dropped.append("lang_k variance (one k)")
    if data["layers"].nunique() < 2 and "lang_depth" in vc:  # likewise, with one depth
        del vc["lang_depth"]
        dropped.append("lang_depth variance (one depth)")
    model = smf.mixedlm(formula, data, groups=np.ones(len(data)), re_formula="0",
                        vc_formula=vc)
    tries = []
    for method in OPTIMIZERS:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                result = model.fit(reml=True, method=[method])
            except np.linalg.LinAlgError as err:
                raise ValueError(f"mixed_model: the fit is singular ({err}) with variance "
                                 f"components {', '.join(vc)}: too few draws, languages or k "
                                 f"values to separate them; leave one out (vc_formula=...)"
                                 ) from err
        tries.append((method, result, caught))
        if result.converged:
            break
    method, result, caught = next((t for t in tries if t[1].converged),
                                  max(tries, key=lambda t: t[1].llf))
    messages = tuple(dict.fromkeys(str(w.message) for w in caught))
    if method != OPTIMIZERS[0]:
        failed = ", ".join(m for m, r, _ in tries if not r.converged)
        messages = (f"fitted by {method} ({failed} did not converge)", *messages)
    df_between = max(1, data["draw_id"].nunique() - data["k_langs"].nunique())
    return MixedFit(result, _tidy(result), data, formula, tuple(dropped), messages, df_between)


def _design_rows(fit: MixedFit, grid: pd.DataFrame) -> np.ndarray:
    """Rows of the fixed-effects design for new data (patsy or formulaic)."""
    spec = fit.result.model.data.model_spec
    if hasattr(spec, "get_model_matrix"):  # formulaic
        X = spec.get_model_matrix(grid)
    else:  # patsy
        import patsy

        X = patsy.build_design_matrices([spec], grid, return_type="dataframe")[0]
    return np.asarray(pd.DataFrame(X)[fit.result.model.exog_names], dtype=float)


def _cell_design(fit: MixedFit) -> tuple[np.ndarray, list[int], list[int]]:
    """(n_depths, n_k, p) design rows of every (depth, k) cell, covariates at their mean."""
    data = fit.data
    depths, ks = sorted(data["layers"].unique()), sorted(data["k_langs"].unique())
    base = {c: (data[c].mean() if pd.api.types.is_numeric_dtype(data[c]) else data[c].iloc[0])
            for c in data.columns}
    grid = pd.DataFrame([{**base, "layers": L, "k_langs": k} for L in depths for k in ks])
    grid = grid.astype({c: data[c].dtype for c in ("layers", "k_langs")})
    rows = _design_rows(fit, grid)
    return rows.reshape(len(depths), len(ks), -1), [int(x) for x in depths], [int(x) for x in ks]


def _marginal_k_contrasts(fit: MixedFit, reference_k: int) -> tuple[np.ndarray, list[int]]:
    """(n_k - 1, p) contrasts: marginal mean over depths at k minus at ``reference_k``."""
    X, _, ks = _cell_design(fit)
    if reference_k not in ks:
        raise ValueError(f"reference k = {reference_k} is not in the data (k: {ks})")
    marginal = X.mean(axis=0)
    ref = ks.index(reference_k)
    others = [k for k in ks if k != reference_k]
    return np.array([marginal[ks.index(k)] - marginal[ref] for k in others]), others


def _linear(fit: MixedFit, C: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    names = fit.result.model.exog_names
    beta = fit.result.fe_params[names].to_numpy()
    V = fit.result.cov_params().loc[names, names].to_numpy()
    return C @ beta, C @ V @ C.T


def _wald(fit: MixedFit, C: np.ndarray, test: str) -> dict[str, Any]:
    est, S = _linear(fit, C)
    chi2 = float(est @ np.linalg.pinv(S) @ est)
    df = int(np.linalg.matrix_rank(S))
    F = chi2 / df
    return {"test": test, "chi2": chi2, "df": df, "p_chi2": float(stats.chi2.sf(chi2, df)),
            "F": F, "df_denom": fit.df_between,
            "p": float(stats.f.sf(F, df, fit.df_between))}


def k_omnibus(fit: MixedFit, reference_k: int = REFERENCE_K) -> pd.DataFrame:
    """Joint Wald tests of k in a :func:`mixed_model` fit, one row each:

    * ``k and depth x k``: every term with ``C(k_langs)`` (main effects and interactions)
      is zero, i.e. k changes mean Δ at no depth;
    * ``k marginal over depths``: the k main effects alone, as the marginal means over
      depths: mean Δ at every k equals mean Δ at ``reference_k``, averaged over depths.

    Columns: the Wald statistic ``chi2`` with ``df`` and its asymptotic ``p_chi2``, and
    ``F`` = chi2 / df against F(df, ``df_denom``) with the between-cluster degrees of
    freedom (:attr:`MixedFit.df_between`), whose ``p`` is the one to report: with a few
    draws per k the chi2 p-value is too small (a small-sample correction in the spirit of
    SAS's "containment" df; statsmodels has no Kenward-Roger). Raises ``ValueError`` when
    the model has no k term (one value of k).
    """
    names = fit.result.model.exog_names
    idx = [i for i, n in enumerate(names) if "C(k_langs)" in n]
    if not idx:
        raise ValueError(f"k_omnibus: the model has no C(k_langs) term (k in the data: "
                         f"{sorted(fit.data['k_langs'].unique())}; formula {fit.formula!r}); "
                         f"the test needs at least two values of k")
    C_all = np.eye(len(names))[idx]
    C_main, _ = _marginal_k_contrasts(fit, reference_k)
    return pd.DataFrame([_wald(fit, C_all, "k and depth x k"),
                         _wald(fit, C_main, "k marginal over depths")])


def k_effects(fit: MixedFit, reference_k: int = REFERENCE_K) -> pd.DataFrame:
    """The model's marginal k effects: mean Δ at k minus at ``reference_k``, averaged over
    depths with equal weight, at fixed covariates; SE, and 95% CI and p from t with the
    between-cluster degrees of freedom (:attr:`MixedFit.df_between`)."""
    C, ks = _marginal_k_contrasts(fit, reference_k)
    est, S = _linear(fit, C)
    se = np.sqrt(np.diag(S))
    half = stats.t.ppf(1 - ALPHA / 2, fit.df_between) * se
    return pd.DataFrame({"k_langs": ks, "estimate": est, "se": se, "ci_low": est - half,
                         "ci_high": est + half,
                         "p": 2 * stats.t.sf(np.abs(est / se), fit.df_between)})


# --------------------------------------------------------------------------- bootstrap


@dataclass(frozen=True)
class CellBootstrap:
    """Cell means of a :func:`hierarchical_bootstrap`.

    ``cells``: one row per (layers, k_langs) cell with its numbers of draws and runs;
    ``delta``, ``value``: (B + 1, C) arrays, row 0 the estimate (no resampling), rows 1..B
    the replicates, column c the mean Δ / mean absolute metric of cell c: the mean over the
    cell's draws of the mean over languages of the mean over queries.
    """

    cells: pd.DataFrame
    delta: np.ndarray
    value: np.ndarray
    levels: tuple[str, ...]
    seed: int
    metric: str
    #: level -> (delta, value) replicates (B, C) when only that level is resampled
    components: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    #: level -> number of units it resamples (draws, languages; queries: None, many)
    units: dict[str, int | None] = field(default_factory=dict)

    @property
    def n_boot(self) -> int:
        return self.delta.shape[0] - 1

    def view(self, level: str) -> CellBootstrap:
        """The same cells with the replicates of ``level`` resampled alone (row 0 stays the
        estimate)."""
        d, v = self.components[level]
        return CellBootstrap(self.cells, np.vstack([self.delta[:1], d]),
                             np.vstack([self.value[:1], v]), (level,), self.seed, self.metric)

    def t_stats(self, statistic: Callable[[CellBootstrap], np.ndarray], alpha: float = ALPHA,
                power: float = POWER) -> dict[str, np.ndarray]:
        """:func:`t_interval` of ``statistic`` (a function of a bootstrap's (B + 1, C)
        arrays returning (B + 1, ...) values, row 0 the estimate), from its variance under
        each level resampled alone."""
        estimate = np.asarray(statistic(self))[0]
        parts = {level: np.asarray(statistic(self.view(level)))[1:] for level in self.components}
        return t_interval(estimate, parts, self.units, alpha, power)

    def summary(self) -> pd.DataFrame:
        """Per cell: estimate, SE and 95% CI (:func:`t_interval`) of mean Δ and of the mean
        absolute metric."""
        out = self.cells.copy()
        for name in ("delta", "value"):
            t = self.t_stats(lambda b, name=name: getattr(b, name))
            out[name], out[f"{name}_se"] = getattr(self, name)[0], t["se"]
            out[f"{name}_ci_low"], out[f"{name}_ci_high"] = t["ci_low"], t["ci_high"]
        return out


def t_interval(estimate, parts: dict[str, np.ndarray], units: dict[str, int | None],
               alpha: float = ALPHA, power: float = POWER) -> dict[str, np.ndarray]:
    """A t interval whose variance adds the bootstrap variance of each level resampled alone
    and whose degrees of freedom follow Welch-Satterthwaite.

    ``parts``: level -> (B, ...) replicates of the statistic with only that level resampled;
    ``units``: how many units the level has (n; None for the queries, which are many). A
    level's variance V is the replicates' variance times n / (n - 1) (the bootstrap
    variance of a mean of n units is (n - 1) / n times s² / n), with n - 1 degrees of
    freedom; df = (Σ V)² / Σ [V² / (n - 1)] over the levels with a unit count. Where the
    draws' term dominates, df is small and the interval wide, where the percentile interval
    was too narrow; with two draws a draw term that is small by chance still gives too
    narrow an interval (:mod:`optical_lib.calibration` measures both). Returns se, df,
    ci_low, ci_high, two-sided p of "the statistic is 0" and the minimal detectable effect
    (:func:`mde`) as arrays.
    """
    estimate = np.asarray(estimate, dtype=float)
    var, denominator = np.zeros_like(estimate), np.zeros_like(estimate)
    for level, reps in parts.items():
        n = units.get(level)
        v = np.nanvar(reps, axis=0, ddof=1)
        if n is not None:
            if n < 2:
                raise ValueError(f"t_interval: the level {level!r} has {n} unit(s)")
            v = v * n / (n - 1)
            denominator = denominator + v**2 / (n - 1)
        var = var + v
    se = np.sqrt(var)
    with np.errstate(invalid="ignore", divide="ignore"):
        df = np.where(denominator > 0, var**2 / np.where(denominator > 0, denominator, 1),
                      np.inf)
        q = stats.t.ppf(1 - alpha / 2, df)
        p = np.where(se > 0, 2 * stats.t.sf(np.abs(estimate) / se, df),
                     np.where(estimate == 0, 1.0, 0.0))
    return {"se": se, "df": df, "ci_low": estimate - q * se, "ci_high": estimate + q * se,
            "p": p, "mde": mde(se, alpha, power, df)}


def percentile_ci(replicates: np.ndarray, level: float = 1 - ALPHA
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Percentile interval of bootstrap ``replicates`` (B, ...) along axis 0."""
    tail = 100 * (1 - level) / 2
    return (np.nanpercentile(replicates, tail, axis=0),
            np.nanpercentile(replicates, 100 - tail, axis=0))


def bootstrap_p(replicates: np.ndarray) -> float:
    """Two-sided bootstrap p-value of "the statistic is 0": 2 min(P(b <= 0), P(b >= 0))
    over the replicates b, floored at 1 / (B + 1) and capped at 1 (percentile-CI
    inversion: p <= α exactly when the (1 - α) percentile CI excludes 0)."""
    b = np.asarray(replicates, dtype=float)
    b = b[~np.isnan(b)]
    if b.size == 0:
        raise ValueError("bootstrap_p: no finite replicates")
    p = 2 * min(np.mean(b <= 0), np.mean(b >= 0))
    return float(min(1.0, max(p, 1 / (b.size + 1))))


def mde(se, alpha: float = ALPHA, power: float = POWER, df=np.inf):
    """Minimal detectable effect: (t_{df, 1-α/2} + t_{df, power}) · SE, the smallest true
    effect a two-sided level-α test with standard error ``se`` and ``df`` degrees of
    freedom detects with probability ``power`` (2.80 SE at α = .05, 80% power, df = ∞)."""
    z = stats.t.ppf(1 - alpha / 2, df) + stats.t.ppf(power, df)
    out = z * np.asarray(se, dtype=float)
    return out if np.ndim(out) else float(out)


def _counts(rng: np.random.Generator, n_boot: int, n: int) -> np.ndarray:
    """(n_boot, n) multinomial resampling counts: how often each of n units is drawn when
    n are drawn with replacement."""
    idx = rng.integers(0, n, size=(n_boot, n)) + n * np.arange(n_boot)[:, None]
    return np.bincount(idx.ravel(), minlength=n_boot * n).reshape(n_boot, n).astype(float)


def _language_matrices(deltas: pd.DataFrame, run_ids: list[str]
                       ) -> tuple[list[str], list[np.ndarray]]:
    """Per evaluation language a (2R, Q) matrix: rows 0..R-1 the runs' per-query Δ, rows
    R..2R-1 their absolute metric, columns the language's queries (shared by every run)."""
    langs, mats = [], []
    run_index = pd.Index(run_ids)
    for lang, part in deltas.groupby("query_lang", sort=True, observed=True):
        r = run_index.get_indexer(part["run_id"].astype(str))
        q, qids = pd.factorize(part["qid"].astype(str), sort=True)
        X = np.full((2 * len(run_ids), len(qids)), np.nan)
        X[r, q], X[len(run_ids) + r, q] = part["delta"].to_numpy(), part["value"].to_numpy()
        if len(part) != len(run_ids) * len(qids) or np.isnan(X).any():
            have = part.groupby(part["run_id"].astype(str)).size().reindex(run_ids, fill_value=0)
            odd = have[have != len(qids)]
            raise ValueError(f"Language {lang}: the runs do not share its {len(qids)} queries "
                             f"(rows per run differ: {dict(odd.head(3))}); every run must have "
                             f"each query of each language of the slice exactly once")
        langs.append(str(lang))
        mats.append(X)
    return langs, mats


def _cell_means(mats: list[np.ndarray], w_draw: np.ndarray, w_lang: np.ndarray,
                w_query: Callable[[int], np.ndarray | None], run_draw: np.ndarray,
                run_cell: np.ndarray, n_cells: int) -> tuple[np.ndarray, np.ndarray]:
    """Weighted cell means for B weight sets (count weights = resampling with replacement).

    mats: per language (2R, Q); w_draw: (B, D); w_lang: (B, n_lang); w_query(l): language
    l's (B, Q) query weights, or None (unweighted); run_draw, run_cell: (R,) indices of
    each run's draw and cell. Run-language mean
    m_rl = Σ_q u_lq x_rlq / Σ_q u_lq; run mean μ_r = Σ_l v_l m_rl / Σ_l v_l; cell mean
    Σ_{r in c} w_d(r) μ_r / Σ_{r in c} w_d(r). Returns (B, C) Δ and absolute metric.
    """
    B, R = w_draw.shape[0], len(run_draw)
    acc = np.zeros((B, 2 * R))
    for lang, X in enumerate(mats):
        U = w_query(lang)
        m = X.mean(axis=1)[None, :] if U is None else (U @ X.T) / U.sum(axis=1, keepdims=True)
        acc += w_lang[:, [lang]] * m
    acc /= w_lang.sum(axis=1, keepdims=True)
    w_run = w_draw[:, run_draw]
    A = np.zeros((R, n_cells))
    A[np.arange(R), run_cell] = 1.0
    with np.errstate(invalid="ignore", divide="ignore"):
        den = w_run @ A
        return (w_run * acc[:, :R]) @ A / den, (w_run * acc[:, R:]) @ A / den


def _runs_table(deltas: pd.DataFrame) -> pd.DataFrame:
    runs = deltas[["run_id", "layers", "k_langs", "draw"]].drop_duplicates()
    runs = runs.assign(run_id=runs["run_id"].astype(str))
    if runs["run_id"].duplicated().any():
        raise ValueError("hierarchical_bootstrap: a run_id has several settings")
    return runs.sort_values(["layers", "k_langs", "draw", "run_id"], ignore_index=True)


def hierarchical_bootstrap(deltas: pd.DataFrame, n_boot: int = N_BOOT, seed: int = 0,
                           levels: Sequence[str] = LEVELS, metric: str = PRIMARY_METRIC
                           ) -> CellBootstrap:
    """Cell means of Δ and of the absolute metric under a three-level bootstrap.

    In every replicate: (1) draw indices are resampled with replacement, one resample
    shared by every depth and k (cells stay balanced; draw d of every cell goes in or out
    together); (2) evaluation languages are resampled once, shared by every run (languages
    are crossed with runs); (3) within each language the queries are resampled once,
    with the same query weights for every run (queries are paired across runs). Resampling
    is done with multinomial count weights, so a replicate is a few matrix products:
    per language (B, Q) weights x (Q, 2R) per-query values. ``levels`` picks which levels
    are resampled (``("queries",)``: the naive query-only bootstrap).

    Parameters
    ----------
    deltas : per-query rows of one slice (:func:`load_deltas`, :func:`select`) with run_id,
        layers, k_langs, draw, query_lang, qid, delta, value
    n_boot : replicates B; seed : the generator's seed

    Returns
    -------
    :class:`CellBootstrap` with (B + 1, C) arrays; row 0 is the estimate.
    """
    _require(deltas, ["run_id", "layers", "k_langs", "draw", "query_lang", "qid", "delta",
                      "value"], "hierarchical_bootstrap")
    unknown = sorted(set(levels) - set(LEVELS))
    if unknown:
        raise ValueError(f"Unknown bootstrap level(s) {unknown} (choose from {LEVELS})")
    if deltas.empty:
        raise ValueError("hierarchical_bootstrap: no rows")
    _check_slice(deltas, "hierarchical_bootstrap")
    runs = _runs_table(deltas)
    cells = runs.groupby(["layers", "k_langs"], sort=True).agg(
        n_draws=("draw", "nunique"), n_runs=("run_id", "size")).reset_index()
    cell_index = pd.MultiIndex.from_frame(cells[["layers", "k_langs"]])
    run_cell = cell_index.get_indexer(pd.MultiIndex.from_frame(runs[["layers", "k_langs"]]))
    run_draw, _ = pd.factorize(runs["draw"], sort=True)
    langs, mats = _language_matrices(deltas, runs["run_id"].tolist())

    n_draws = run_draw.max() + 1

    def replicates(rng: np.random.Generator, resampled: Sequence[str]):
        """Cell means under B resamples of the ``resampled`` levels (the others held):
        draw weights, then language weights, then each language's query weights in order."""
        def weights(level: str, n: int) -> np.ndarray:
            return _counts(rng, n_boot, n) if level in resampled else np.ones((n_boot, n))

        def w_query(lang: int) -> np.ndarray | None:
            return (_counts(rng, n_boot, mats[lang].shape[1]) if "queries" in resampled
                    else None)

        w_draw, w_lang = weights("draws", n_draws), weights("languages", len(langs))
        return _cell_means(mats, w_draw, w_lang, w_query, run_draw, run_cell, len(cells))

    reps = replicates(np.random.default_rng(seed), levels)
    point = _cell_means(mats, np.ones((1, n_draws)), np.ones((1, len(langs))),
                        lambda lang: None, run_draw, run_cell, len(cells))
    delta, value = (np.vstack([p, r]) for p, r in zip(point, reps, strict=True))
    # each level resampled alone, for the t intervals (own generator streams)
    components = {level: replicates(np.random.default_rng([seed, i + 1]), (level,))
                  for i, level in enumerate(lv for lv in LEVELS if lv in levels)}
    units = {"draws": int(n_draws), "languages": len(langs), "queries": None}
    return CellBootstrap(cells, delta, value, tuple(levels), seed, metric, components,
                         {level: units[level] for level in components})


# --------------------------------------------------------------------------- contrasts


def _grid(boot: CellBootstrap, what: str) -> tuple[np.ndarray, list[int], list[int]]:
    """(B + 1, n_depths, n_k) array of cell means; every depth must have every k."""
    depths = sorted(int(x) for x in boot.cells["layers"].unique())
    ks = sorted(int(x) for x in boot.cells["k_langs"].unique())
    if len(boot.cells) != len(depths) * len(ks):
        have = set(zip(boot.cells["layers"], boot.cells["k_langs"], strict=True))
        missing = [f"L{L} k = {k}" for L in depths for k in ks if (L, k) not in have]
        raise ValueError(f"Marginal means need every depth at every k; missing cells: "
                         f"{', '.join(missing)}. Select a complete sub-grid")
    order = boot.cells.sort_values(["layers", "k_langs"]).index.to_numpy()
    arr = getattr(boot, what)[:, order]
    return arr.reshape(arr.shape[0], len(depths), len(ks)), depths, ks


def ladder_steps(depths: Sequence[int], ladder: Sequence[int] = DEPTH_LADDER) -> np.ndarray:
    """Steps of the design's depth ladder between consecutive ``depths`` (sorted).

    The pre-registered *one depth step* is the mean change of the metric per step of the
    ladder (2 → 3 → 6 → 12): on the full grid the mean of the adjacent differences. An
    interim analysis may lack a depth in between (L2, L3 and L12 before L6 has run); its
    difference across the gap then counts as the steps it spans, so the estimate is the
    same quantity, (deepest − shallowest) / steps between them, and not a larger jump
    read as one step."""
    off = [int(L) for L in depths if int(L) not in ladder]
    if off:
        raise ValueError(f"Depth(s) {off} are not on the design's depth ladder "
                         f"{tuple(ladder)}: one depth step is undefined")
    return np.diff([list(ladder).index(int(L)) for L in depths])


def _contrast_stats(boot: CellBootstrap, reference_k: int) -> list[dict]:
    """Every contrast of :data:`CONTRASTS` as (B + 1,) arrays, with its labels."""
    delta, depths, ks = _grid(boot, "delta")
    if len(ks) < 2 or reference_k not in ks:
        raise ValueError(f"The contrasts need at least two values of k including the "
                         f"reference k = {reference_k} (k in the data: {ks})")
    ref = ks.index(reference_k)
    marginal = delta.mean(axis=1)  # (B + 1, n_k)
    out = []
    for j, k in enumerate(ks):
        if k == reference_k:
            continue
        out.append({"name": "k_vs_ref", "subject": f"k = {k}", "k_langs": k,
                    "where": ("averaged over depths" if len(depths) > 1 else f"at L{depths[0]}"),
                    "stat": marginal[:, j] - marginal[:, ref]})
        if len(depths) > 1:
            out += [{"name": "k_vs_ref_at_depth", "subject": f"k = {k}", "k_langs": k,
                     "layers": L, "where": f"at L{L}", "stat": delta[:, i, j] - delta[:, i, ref]}
                    for i, L in enumerate(depths)]
    if len(depths) > 1:
        k_range = marginal.max(axis=1) - marginal.min(axis=1)
        absolute = _grid(boot, "value")[0].mean(axis=2)  # (B + 1, n_depths)
        step = np.diff(absolute, axis=1).sum(axis=1) / ladder_steps(depths).sum()
        out += [{"name": "k_range", "subject": "best-minus-worst k", "reference": "",
                 "stat": k_range},
                {"name": "depth_step", "subject": "one depth step", "reference": "",
                 "stat": step},
                {"name": "range_vs_depth", "subject": "best-minus-worst k",
                 "reference": "one depth step", "stat": k_range - step}]
    for row in out:
        row.setdefault("reference", f"k = {reference_k}")
    return out


def contrast_table(boot: CellBootstrap, reference_k: int = REFERENCE_K, alpha: float = ALPHA,
                   power: float = POWER) -> pd.DataFrame:
    """The pre-registered contrasts (:data:`CONTRASTS`) from a :func:`hierarchical_bootstrap`.

    Per contrast: the estimate (all data), SE, degrees of freedom, 95% CI, p-value and the
    minimal detectable effect of :func:`t_interval` (tested families only for p), Holm-
    adjusted p within its family (``statsmodels`` multipletests, ``holm``) and ``reject``
    at ``alpha``; ``p_percentile``: the pre-registered percentile-bootstrap p-value
    (:func:`bootstrap_p` of the full bootstrap's replicates), which rejects too often with
    few draws (:mod:`optical_lib.calibration`) and is kept for comparison. Columns:
    :data:`CONTRAST_COLUMNS`. The k contrasts are of Δ, ``depth_step`` of the absolute
    metric; ``range_vs_depth`` compares the two (both in units of the metric).
    """
    families = {c.name: c.family for c in CONTRASTS}
    full = _contrast_stats(boot, reference_k)
    parts = {level: _contrast_stats(boot.view(level), reference_k) for level in boot.components}
    rows = []
    for i, row in enumerate(full):
        stat = row.pop("stat")
        t = t_interval(stat[0], {level: rows_[i]["stat"][1:] for level, rows_ in parts.items()},
                       boot.units, alpha, power)
        family = families[row["name"]]
        rows.append({"layers": pd.NA, "k_langs": pd.NA, "where": "", **row, "family": family,
                     "metric": boot.metric, "estimate": float(stat[0]),
                     **{key: float(t[key]) for key in ("se", "df", "ci_low", "ci_high", "mde")},
                     "p": float(t["p"]) if family else np.nan,
                     "p_percentile": bootstrap_p(stat[1:]) if family else np.nan})
    table = pd.DataFrame(rows)
    table["p_holm"], table["reject"] = np.nan, False
    for _, part in table[table["family"] != ""].groupby("family"):
        adjusted, reject = holm(part["p"].to_numpy(), alpha)
        table.loc[part.index, "p_holm"], table.loc[part.index, "reject"] = adjusted, reject
    table["layers"] = table["layers"].astype("Int64")
    table["k_langs"] = table["k_langs"].astype("Int64")
    return table[list(CONTRAST_COLUMNS)]


# --------------------------------------------------------------------------- sentences


def fmt(x: float, signed: bool = True) -> str:
    """Three decimals without the leading zero: ``+.022``, ``-.005``, ``.037``."""
    text = f"{x:+.3f}" if signed else f"{x:.3f}"
    return text.replace("0.", ".", 1) if abs(round(x, 3)) < 1 else text


def _p(p: float) -> str:
    return "< .001" if p < 0.001 else f"= {fmt(p, signed=False)}"


def _ci(row) -> str:
    return f"[{fmt(row['ci_low'], False)}, {fmt(row['ci_high'], False)}]"


def _context(row) -> str:
    where = row.get("where") or ""
    return f"{where[:1].upper()}{where[1:]}, " if where else ""


def _outcome(row, alpha: float = ALPHA) -> str:
    """How a tested contrast reads: ``"significant"`` (Holm p <= alpha and the CI excludes
    0), ``"none"`` (not significant and the CI inside ±MDE: no effect detected) or
    ``"inconclusive"`` (anything else)."""
    excludes_zero = row["ci_low"] > 0 or row["ci_high"] < 0
    if row["p_holm"] <= alpha and excludes_zero:
        return "significant"
    if -row["mde"] <= row["ci_low"] and row["ci_high"] <= row["mde"]:
        return "none"
    return "inconclusive"


def _clause(rows: list, outcome: str, power: float = POWER) -> str:
    """The contrasts ``rows`` (one reference, one outcome) as one clause; several with no
    effect detected share it, each significant or inconclusive one keeps its numbers."""
    ref = rows[0]["reference"]
    if outcome == "none":
        subjects = join_words([r["subject"] for r in rows], "or")
        mdes = sorted(r["mde"] for r in rows)
        bound = f"±{fmt(mdes[-1], False)}"
        detail = (f"{power:.0%} power" if len(rows) == 1 else
                  f"{power:.0%} power; ±{fmt(mdes[0], False)} to {bound} by contrast")
        return (f"no effect of {subjects} over {ref} detected (effects larger than {bound} "
                f"would have been detected{' in each' if len(rows) > 1 else ''}, {detail})")
    parts = []
    for r in rows:
        est = r["estimate"]
        if outcome == "significant":
            verb = "beats" if est > 0 else "falls behind"
            parts.append(f"{r['subject']} {verb} {ref} by {fmt(est)} {_ci(r)} "
                         f"(Holm p {_p(r['p_holm'])})")
        else:
            largest = r["ci_high"] if abs(r["ci_high"]) >= abs(r["ci_low"]) else r["ci_low"]
            parts.append(f"inconclusive: {r['subject']} vs {ref} is {fmt(est)} {_ci(r)} "
                         f"(Holm p {_p(r['p_holm'])}), which still allows effects as large "
                         f"as {fmt(largest)} (detectable with {power:.0%} power: "
                         f"±{fmt(r['mde'], False)})")
    return "; ".join(parts)


def contrast_sentence(row, alpha: float = ALPHA, power: float = POWER) -> str:
    """One tested contrast as a sentence, chosen from the numbers:

    * significant after Holm and the CI excludes 0: "k = 4 beats k = 1 by +.022
      [.006, .037] (Holm p = .010)";
    * not significant and the CI inside ±MDE: "no effect of k = 4 over k = 1 detected
      (effects larger than ±.031 would have been detected, 80% power)";
    * otherwise: "inconclusive: k = 4 vs k = 1 is ... [a, b] (Holm p = ...), which still
      allows effects as large as ...".
    """
    return group_sentence([row], alpha, power)


def group_sentence(rows, alpha: float = ALPHA, power: float = POWER) -> str:
    """Tested contrasts of one place (``where``) and one reference as one sentence: the
    significant ones first, then those with no effect detected (one clause), then the
    inconclusive ones, each read by :func:`contrast_sentence`'s rules."""
    rows = list(rows)
    by_outcome: dict[str, list] = {"significant": [], "none": [], "inconclusive": []}
    for r in rows:
        by_outcome[_outcome(r, alpha)].append(r)
    clauses = [_clause(group, outcome, power) for outcome, group in by_outcome.items() if group]
    return f"{_context(rows[0])}{'; '.join(clauses)}."


def headline(table: pd.DataFrame, alpha: float = ALPHA) -> str:
    """Which is larger: the best-minus-worst choice of k (in Δ) or one depth step (in the
    absolute metric)? Decided by the ``range_vs_depth`` contrast: significant after Holm
    with its CI excluding 0, else "cannot tell"."""
    _require(table, ["name", "estimate", "ci_low", "ci_high", "p_holm", "metric"], "headline")
    by = table.set_index("name")
    if not {"range_vs_depth", "k_range", "depth_step"} <= set(by.index):
        return ("No headline: comparing the choice of k with a depth step needs at least two "
                "depths and two values of k.")
    diff, k_range, step = by.loc["range_vs_depth"], by.loc["k_range"], by.loc["depth_step"]
    metric = diff["metric"]
    parts = (f"the best-minus-worst k moves Δ {metric} by {fmt(k_range['estimate'])} "
             f"{_ci(k_range)}, one depth step moves {metric} by {fmt(step['estimate'])} "
             f"{_ci(step)}")
    tail = f"difference {fmt(diff['estimate'])} {_ci(diff)} (Holm p {_p(diff['p_holm'])})"
    if diff["p_holm"] <= alpha and (diff["ci_low"] > 0 or diff["ci_high"] < 0):
        lead = ("The choice of k matters more than one depth step" if diff["estimate"] > 0
                else "One depth step matters more than the choice of k")
        return f"{lead}: {parts}; {tail}."
    return f"Cannot tell whether the choice of k or one depth step matters more: {parts}; {tail}."


def verdict(contrasts: pd.DataFrame, alpha: float = ALPHA, power: float = POWER) -> list[str]:
    """The analysis in sentences, computed from a :func:`contrast_table`: the
    :func:`headline` first, then one :func:`group_sentence` per place and reference of the
    tested k contrasts (averaged over depths first, then each depth), so that ten values of k
    at four depths read as five sentences, not forty; the table beside the verdict has every
    contrast's numbers."""
    _require(contrasts, ["name", "family", "subject", "reference", "where", "estimate",
                         "ci_low", "ci_high", "p_holm", "mde", "metric"], "verdict")
    tested = contrasts[contrasts["name"].isin(["k_vs_ref", "k_vs_ref_at_depth"])]
    tested = tested.assign(_order=tested["name"].eq("k_vs_ref_at_depth").astype(int))
    keys = ["_order", "where", "reference"]
    if "layers" in tested.columns:
        keys.insert(1, "layers")
    groups = tested.groupby(keys, sort=True, dropna=False)
    return [headline(contrasts, alpha),
            *(group_sentence([row for _, row in part.iterrows()], alpha, power)
              for _, part in groups)]


# --------------------------------------------------------------------------- zero-shot


def zero_shot_depth_curve(rows: pd.DataFrame, metric: str = PRIMARY_METRIC,
                          split: str | None = "eval", model: str = "me5-small") -> pd.DataFrame:
    """The zero-shot (un-distilled) models' macro ``metric`` per depth, task and protocol,
    from result rows (``results.json``; e.g. :func:`optical_lib.report.load_profile` of the
    ``baselines`` profile). The student protocol does not involve the teacher, so its rows
    appear once (``teacher`` = ``<NA>``); the teacher protocol has one row per teacher.
    The CIs are the runs' own (queries and languages resampled), as in ``results.json``.
    Columns: task, protocol, teacher, layers, value, ci_low, ci_high, n_queries, run_id.
    """
    _require(rows, ["method", "model", "scope", "metric", "task", "protocol", "teacher",
                    "layers", "value", "ci_low", "ci_high", "n_queries", "run_id"],
             "zero_shot_depth_curve")
    keep = ((rows["method"] == "none") & (rows["model"] == model) & (rows["scope"] == "macro")
            & (rows["metric"] == metric))
    if split is not None and "split" in rows.columns:
        keep &= rows["split"] == split
    df = rows[keep].copy()
    if df.empty:
        raise ValueError(f"No zero-shot {model} macro {metric} rows (split={split!r}); pass the "
                         f"baselines profile's rows: report.load_profile(results_dir, "
                         f"'baselines')")
    df["teacher"] = df["teacher"].astype("string").where(df["protocol"] != "student")
    df = df.drop_duplicates(["task", "protocol", "teacher", "layers"])
    columns = ["task", "protocol", "teacher", "layers", "value", "ci_low", "ci_high",
               "n_queries", "run_id"]
    df["layers"] = df["layers"].astype(int)
    return df.sort_values(["task", "protocol", "teacher", "layers"], na_position="first",
                          ignore_index=True)[columns]
