"""How often do the tests of the analysis reject a k contrast that is zero?

The contrasts of :mod:`optical_lib.analysis_v2` were pre-registered with a three-level
percentile bootstrap (draws, then languages, then queries). Its level depends on how many
language draws a cell has: the spread *between* draws, where a k contrast varies most, is
then estimated from a handful of values, and the percentile interval is too narrow. This
module measures the level by simulation, on synthetic grids built like the real one
(depths x k x draws, evaluation languages crossed with runs, paired queries) with no k
effect, for each number of draws, in each variance regime (:data:`REGIMES`), for that test
and for the t interval the analysis uses instead (:func:`analysis_v2.t_interval`), and
likewise for the mixed models' F test of k (:func:`mixed_model_level`).

The results page reads the committed table (``results/calibration/bootstrap_level.csv``,
written by ``python -m optical_lib.calibration``) and shows tests only from the number of
draws on at which the level is acceptable in every regime (:func:`min_test_draws`).

The synthetic generator (:func:`synthetic_deltas`) is also the planted-truth fixture of
``tests/test_analysis_v2.py``.
"""

from __future__ import annotations

import argparse
import os
import time
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from .layout import atomic_write
from .paths import PROJECT_ROOT

#: Per-depth planted terms of the synthetic grids: the absolute metric of the untrained
#: model, and Δ without any k effect.
ZERO_SHOT = {2: 0.10, 3: 0.16, 6: 0.30, 12: 0.70}
DEPTH_DELTA = {2: 0.06, 3: 0.05, 6: 0.03, 12: 0.01}
#: Planted slope of Δ on the share of training pairs from the evaluation language's family.
COVARIATE_SLOPE = 0.03

#: Variance regimes of the calibration (standard deviations of the planted components):
#: ``draw`` the training-sample cluster (k, draw), ``lang_k`` language x k, ``run_lang``
#: run x language (each trained student's own per-language noise), ``query`` the
#: per-query noise of Δ. "languages" has a between-draw SD of .012, about version 1's
#: between-draw SD of a cell's macro metric (.013, issue #12), and language x k variation
#: twice that; "draws" makes the between-draw spread dominant (2.5 times larger, language
#: x k small), the regime in which few draws hurt most. "runs" was added on 2026-11-27 from
#: the first fit on real runs (L2, draws 0-2, FLORES X→eng; the student protocol, whose
#: components are the larger): between-draw SD .025, language x k .028, and a residual SD
#: of a run's language mean of .042, which the first two regimes (no run x language term,
#: query noise .15 / sqrt(60) = .019) fall short of; rounded up to .025 / .03 and a run x
#: language SD of .04. "depths" was added on 2026-11-30 from the interim primary slice with
#: L12 (L2, L3, L12, draws 0-4): how much a language gains differs by depth, which the
#: pre-registered model (one language intercept for every depth) leaves in its residual (SD
#: .113); the sensitivity model (:data:`analysis_v2.VC_FORMULA_LANG_DEPTH`) fits a
#: language x depth SD of .134, rounded up to .14, on top of "runs".
REGIMES: dict[str, dict[str, float]] = {
    "languages": {"sd_draw": 0.012, "sd_lang_k": 0.025, "sd_query": 0.15},
    "draws": {"sd_draw": 0.03, "sd_lang_k": 0.01, "sd_query": 0.15},
    "runs": {"sd_draw": 0.025, "sd_lang_k": 0.03, "sd_run_lang": 0.04, "sd_query": 0.15},
    "depths": {"sd_draw": 0.025, "sd_lang_k": 0.03, "sd_run_lang": 0.04,
               "sd_lang_depth": 0.14, "sd_query": 0.15},
}
#: The shape of a calibration grid: the real grid's 28 held-out FLORES languages, fewer
#: queries (the query level is a small part of the variance of a contrast), two depths and
#: four values of k (three contrasts per grid).
CAL_LANGS = 28
CAL_QUERIES = 60
CAL_DEPTHS = (2, 3)
CAL_KS = (1, 2, 4, 8)
#: The largest level at which the page reports tests (nominal .05).
LEVEL_TOLERANCE = 0.075
RESULTS = Path("calibration") / "bootstrap_level.csv"


def synthetic_deltas(seed: int = 0, effect: float = 0.0, effect_k: int = 4,
                     sd_draw: float = 0.02, sd_lang: float = 0.02, sd_lang_k: float = 0.01,
                     sd_query: float = 0.15, n_draws: int = 6, depths: Sequence[int] = (2, 3, 6),
                     ks: Sequence[int] = (1, 2, 4, 8), langs: Sequence[str] | int = 8,
                     n_queries: int = 60, sd_run_lang: float = 0.0,
                     sd_lang_depth: float = 0.0) -> tuple[pd.DataFrame, dict]:
    """Per-query Δ rows in :func:`analysis_v2.load_deltas`' schema with a planted truth,
    and the covariates of each (k, draw, language).

    Δ = depth term + effect [k = effect_k] + slope · share_same_family + u(k, draw)
    + v(lang) + w(lang, k) + z(lang, depth) + x(run, lang) + e(run, query); value =
    zero-shot(depth, lang, query) + Δ. ``langs``: language codes, or how many (named l00,
    l01, ...). The run x language term x (SD ``sd_run_lang``) and the language x depth term
    z (SD ``sd_lang_depth``) come from generators of their own, so grids without them are
    the same as before they existed.
    """
    if isinstance(langs, int):
        langs = tuple(f"l{i:02d}" for i in range(langs))
    rng = np.random.default_rng(seed)
    n_l = len(langs)
    draw_effect = rng.normal(0, sd_draw, (len(ks), n_draws))
    lang_effect = rng.normal(0, sd_lang, n_l)
    lang_k = rng.normal(0, sd_lang_k, (n_l, len(ks)))
    share = rng.uniform(0, 1, (len(ks), n_draws, n_l))
    difficulty = rng.normal(0, 0.1, (n_l, n_queries))
    query_lang = np.repeat(langs, n_queries)
    qids = [f"{lang}-{q}" for lang in langs for q in range(n_queries)]
    run_rng = np.random.default_rng([seed, 1])
    lang_depth = (np.random.default_rng([seed, 2]).normal(0, sd_lang_depth, (len(depths), n_l))
                  if sd_lang_depth else np.zeros((len(depths), n_l)))
    frames = []
    for i_depth, L in enumerate(depths):
        for j, k in enumerate(ks):
            for d in range(n_draws):
                mean = (DEPTH_DELTA[L] + effect * (k == effect_k) + draw_effect[j, d]
                        + lang_effect + lang_k[:, j] + lang_depth[i_depth]
                        + COVARIATE_SLOPE * share[j, d])
                if sd_run_lang:
                    mean = mean + run_rng.normal(0, sd_run_lang, n_l)
                delta = mean[:, None] + rng.normal(0, sd_query, (n_l, n_queries))
                value = ZERO_SHOT[L] + difficulty + delta
                frames.append(pd.DataFrame({
                    "run_id": f"L{L}-k{k}-d{d}", "task": "flores-x-eng", "protocol": "teacher",
                    "query_lang": query_lang, "qid": qids,
                    "value": value.ravel(), "baseline": (value - delta).ravel(),
                    "delta": delta.ravel(), "layers": L, "k_langs": k, "draw": d, "seed": 0,
                    "budget": 1984, "teacher": "me5-small", "method": "optical",
                    "relatives": True, "sample": "fixed", "split": "eval"}))
    covariates = {(k, d, lang): {"share_same_family": share[j, d, i],
                                 "n_scripts": 1 + (k * 7 + d * 3 + i) % 4,
                                 "share_xlmr": ((k + d + 2 * i) % 5) / 4}
                  for j, k in enumerate(ks) for d in range(n_draws)
                  for i, lang in enumerate(langs)}
    return pd.concat(frames, ignore_index=True), covariates


#: The tests compared: the t interval the analysis uses (``p`` of
#: :func:`analysis_v2.contrast_table`) and the pre-registered percentile bootstrap
#: (``p_percentile``).
METHODS = {"t": "p", "percentile": "p_percentile"}
#: The test the results page uses.
USED = "t"


def _null_grid(n_draws: int, regime: str, key: str) -> tuple[pd.DataFrame, dict, int]:
    """One synthetic grid of the calibration's shape without a k effect, seeded by ``key``
    (every (draws, regime) cell and every grid its own seed, so the cells' levels are
    independent); returns (deltas, covariates, seed)."""
    sim_seed = zlib.crc32(key.encode())
    deltas, covariates = synthetic_deltas(seed=sim_seed, n_draws=n_draws, depths=CAL_DEPTHS,
                                          ks=CAL_KS, langs=CAL_LANGS, n_queries=CAL_QUERIES,
                                          **REGIMES[regime])
    return deltas, covariates, sim_seed


def _check_regime(regime: str) -> None:
    if regime not in REGIMES:
        raise ValueError(f"Unknown regime {regime!r} (choose from {', '.join(REGIMES)})")


def bootstrap_level(n_draws: int, regime: str, n_sims: int = 100, n_boot: int = 400,
                    seed: int = 0, alpha: float = 0.05) -> list[dict]:
    """Per test of :data:`METHODS`: the share of the zero k-vs-reference contrasts
    (averaged over depths) that it rejects at ``alpha`` (unadjusted p), over ``n_sims``
    synthetic grids without a k effect. A 95% interval excludes the true 0 exactly when
    the test rejects, so 1 - level is the intervals' coverage."""
    from . import analysis_v2 as av2

    _check_regime(regime)
    if n_draws < av2.MIN_DRAWS:
        raise ValueError(f"n_draws must be at least {av2.MIN_DRAWS}")
    rejects: dict[str, list[bool]] = {method: [] for method in METHODS}
    for s in range(n_sims):
        deltas, _, sim_seed = _null_grid(n_draws, regime, f"{seed}-{n_draws}-{regime}-{s}")
        boot = av2.hierarchical_bootstrap(deltas, n_boot=n_boot, seed=sim_seed)
        table = av2.contrast_table(boot, alpha=alpha)
        tested = table[table["name"] == "k_vs_ref"]
        for method, column in METHODS.items():
            rejects[method] += list(tested[column] < alpha)
    return [{"draws": n_draws, "regime": regime, "method": method,
             "level": float(np.mean(r)), "n_contrasts": len(r), "n_sims": n_sims,
             "n_boot": n_boot, "alpha": alpha} for method, r in rejects.items()]


#: The mixed model's calibration (its own table: one test per grid, slower to fit).
MIXED_RESULTS = Path("calibration") / "mixed_model_level.csv"


#: The mixed models calibrated, by the name of their rows in the table, and whether they fit
#: a language x depth intercept: the pre-registered model, and the sensitivity model
#: (:data:`analysis_v2.VC_FORMULA_LANG_DEPTH`).
MIXED, MIXED_SENSITIVITY = "mixed model", "mixed model (sensitivity)"
MIXED_MODELS = {MIXED: False, MIXED_SENSITIVITY: True}


def mixed_model_level(n_draws: int, regime: str, n_sims: int = 60, seed: int = 0,
                      alpha: float = 0.05) -> list[dict]:
    """Per model of :data:`MIXED_MODELS`: the share of ``n_sims`` synthetic grids without a
    k effect on which its test of k (:func:`analysis_v2.k_omnibus`, "k marginal over
    depths") rejects at ``alpha``, and the mean of its fitted residual SD (what the
    results page compares with the real grid's); both models fit the same grids, whose
    covariates are the planted ones."""
    import warnings

    from . import analysis_v2 as av2

    _check_regime(regime)
    formulas = {name: av2.VC_FORMULA_LANG_DEPTH if lang_depth else None
                for name, lang_depth in MIXED_MODELS.items()}
    rejects: dict[str, list[bool]] = {name: [] for name in formulas}
    residual: dict[str, list[float]] = {name: [] for name in formulas}
    for s in range(n_sims):
        deltas, covariates, _ = _null_grid(n_draws, regime,
                                           f"mixed-{seed}-{n_draws}-{regime}-{s}")
        lang = av2.language_deltas(
            deltas, lambda key, language, c=covariates: c[(key.k_langs, key.draw, language)])
        for name, vc in formulas.items():
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # fit warnings are counted by mixed_model
                fit = av2.mixed_model(lang, vc_formula=vc)
                tests = av2.k_omnibus(fit).set_index("test")
            rejects[name].append(bool(tests.loc["k marginal over depths", "p"] < alpha))
            sd = av2.variance_sd(fit).set_index("component")["sd"]
            residual[name].append(float(sd["residual"]))
    return [{"draws": n_draws, "regime": regime, "method": name,
             "level": float(np.mean(rejects[name])), "n_tests": n_sims, "n_sims": n_sims,
             "alpha": alpha, "residual_sd": float(np.mean(residual[name]))}
            for name in formulas]


def _read(results_dir: str | Path, table: Path, command: str) -> pd.DataFrame:
    path = Path(results_dir) / table
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: run `{command}`")
    return pd.read_csv(path)


def read_levels(results_dir: str | Path = "results") -> pd.DataFrame:
    """The committed calibration table (draws, regime, method, level, ...)."""
    return _read(results_dir, RESULTS, "python -m optical_lib.calibration")


def read_mixed_levels(results_dir: str | Path = "results") -> pd.DataFrame:
    """The committed calibration of the mixed model's k test (draws, regime, level, ...)."""
    return _read(results_dir, MIXED_RESULTS, "python -m optical_lib.calibration --mixed-model")


def worst_levels(levels: pd.DataFrame, method: str = USED) -> pd.Series:
    """The worst regime's level per number of draws, for one test (tables with a
    ``method`` column hold several)."""
    if "method" in levels:
        levels = levels[levels["method"] == method]
    return levels.groupby("draws")["level"].max().sort_index()


def min_test_draws(levels: pd.DataFrame, tolerance: float = LEVEL_TOLERANCE,
                   method: str = USED) -> int | None:
    """The fewest simulated draws from which on (every simulated number of draws at or above
    it) the test's level is at most ``tolerance`` in every regime; None if there is none."""
    worst = worst_levels(levels, method)
    ok = None
    for draws in reversed(worst.index):
        if worst[draws] > tolerance:
            break
        ok = int(draws)
    return ok


def level_at(levels: pd.DataFrame, draws: int, method: str = USED) -> float | None:
    """The worst regime's level at the largest simulated number of draws <= ``draws``."""
    worst = worst_levels(levels, method)
    below = worst[worst.index <= draws]
    return None if below.empty else float(below.iloc[-1])


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--draws", type=int, nargs="+", default=[2, 3, 4, 6, 10])
    parser.add_argument("--sims", type=int, default=250)
    parser.add_argument("--boot", type=int, default=400)
    parser.add_argument("--results", default=str(PROJECT_ROOT / "results"))
    parser.add_argument("--mixed-model", action="store_true",
                        help=f"calibrate the mixed model's k test instead ({MIXED_RESULTS})")
    parser.add_argument("--regimes", nargs="+", choices=list(REGIMES), default=list(REGIMES),
                        help="simulate only these regimes; the table's rows of the other "
                             "regimes (and of other numbers of draws) are kept")
    args = parser.parse_args(argv)
    from tqdm.auto import tqdm

    from .paths import progress_bars

    path = Path(args.results) / (MIXED_RESULTS if args.mixed_model else RESULTS)
    path.parent.mkdir(parents=True, exist_ok=True)
    jobs = [(d, r) for d in args.draws for r in args.regimes]
    for draws, regime in tqdm(jobs, desc="calibration", disable=not progress_bars()):
        start = time.perf_counter()
        found = (mixed_model_level(draws, regime, n_sims=args.sims) if args.mixed_model
                 else bootstrap_level(draws, regime, n_sims=args.sims, n_boot=args.boot))
        seconds = round(time.perf_counter() - start, 1)
        rows = [{**row, "seconds": seconds, "threads": os.environ.get("OMP_NUM_THREADS", "")}
                for row in found]
        print(f"draws {draws:>2} {regime:<9} "
              + " ".join(f"{r['method']} {r['level']:.3f}" for r in found), flush=True)
        # each cell is written as it finishes: a stopped calibration keeps what it computed
        atomic_write(path, merge_levels(pd.read_csv(path) if path.exists() else None,
                                        pd.DataFrame(rows)).to_csv(index=False))
    print(path)


def merge_levels(old: pd.DataFrame | None, new: pd.DataFrame) -> pd.DataFrame:
    """A calibration table with ``new``'s rows replacing ``old``'s of the same (draws,
    regime, method) and ``old``'s other rows kept, sorted by draws and regime (in
    :data:`REGIMES` order)."""
    if old is not None and len(old):
        key = ["draws", "regime", "method"]
        cells = set(new[key].itertuples(index=False, name=None))
        keep = [cell not in cells for cell in old[key].itertuples(index=False, name=None)]
        new = pd.concat([old[keep], new], ignore_index=True)
    order = {r: i for i, r in enumerate(REGIMES)}
    return (new.assign(_r=new["regime"].map(order)).sort_values(["draws", "_r"], kind="stable")
            .drop(columns="_r").reset_index(drop=True))


if __name__ == "__main__":
    main()
