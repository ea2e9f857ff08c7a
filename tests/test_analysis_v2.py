"""The v2 analysis of Δ on synthetic grids whose truth is planted, plus the loader on the
committed ablation runs."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from statsmodels.stats.multitest import multipletests

from optical_lib import analysis_v2 as av2
from optical_lib.calibration import COVARIATE_SLOPE, DEPTH_DELTA, ZERO_SHOT, synthetic_deltas
from optical_lib.evaluate import read_results
from optical_lib.multiway import DEV_LANGS_FLORES
from optical_lib.paths import PROJECT_ROOT, data_dir

DEPTHS = (2, 3, 6)
KS = (1, 2, 4, 8)
N_DRAWS = 6
LANGS = ("hau", "ibo", "yor", "zul", "kin", "bem", "twi", "amh")
N_QUERIES = 60
EFFECT = 0.08  # planted: k = 4 raises Δ by this much at every depth


def synthetic(seed: int = 0, effect: float = EFFECT, **kwargs):
    """Per-query Δ rows with a planted truth (calibration.synthetic_deltas): k = 4 raises Δ
    by ``effect``; six draws, three depths, four k, eight named languages, 60 queries."""
    kwargs = {"n_draws": N_DRAWS, "depths": DEPTHS, "ks": KS, "langs": LANGS,
              "n_queries": N_QUERIES, **kwargs}
    return synthetic_deltas(seed=seed, effect=effect, **kwargs)


def stub(table):
    """A covariate function that reads the planted table instead of the data files."""
    return lambda key, lang: table[(key.k_langs, key.draw, lang)]


@pytest.fixture(scope="module")
def effect_data():
    return synthetic(seed=0)


@pytest.fixture(scope="module")
def effect_fit(effect_data):
    deltas, covariates = effect_data
    return av2.mixed_model(av2.language_deltas(deltas, stub(covariates)))


@pytest.fixture(scope="module")
def boot(effect_data):
    return av2.hierarchical_bootstrap(effect_data[0], n_boot=400, seed=1)


# --------------------------------------------------------------------------- mixed model


def test_language_deltas_are_means_with_covariates(effect_data):
    deltas, covariates = effect_data
    lang = av2.language_deltas(deltas, stub(covariates))
    assert len(lang) == len(DEPTHS) * len(KS) * N_DRAWS * len(LANGS)
    row = lang[(lang["run_id"] == "L3-k4-d2") & (lang["query_lang"] == "yor")].iloc[0]
    part = deltas[(deltas["run_id"] == "L3-k4-d2") & (deltas["query_lang"] == "yor")]
    assert row["delta"] == pytest.approx(part["delta"].mean())
    assert row["n_queries"] == N_QUERIES and row["draw_id"] == "k4-d2"
    assert row["share_same_family"] == covariates[(4, 2, "yor")]["share_same_family"]


def test_mixed_model_recovers_the_planted_effects(effect_fit):
    effects = av2.k_effects(effect_fit).set_index("k_langs")
    assert effects.loc[4, "estimate"] == pytest.approx(EFFECT, abs=0.02)
    assert effects.loc[4, "ci_low"] < EFFECT < effects.loc[4, "ci_high"]
    for k in (2, 8):
        assert abs(effects.loc[k, "estimate"]) < 0.025
    table = effect_fit.table.set_index("term")
    assert table.loc["share_same_family", "estimate"] == pytest.approx(COVARIATE_SLOPE,
                                                                        abs=0.015)
    assert table.loc["draw variance", "estimate"] > 0
    assert {"draw variance", "lang variance", "residual variance"} <= set(table.index)


def test_omnibus_rejects_with_the_effect(effect_fit):
    tests = av2.k_omnibus(effect_fit).set_index("test")
    assert (tests["p"] < 0.01).all()
    assert tests.loc["k and depth x k", "df"] == (len(KS) - 1) * len(DEPTHS)
    assert tests.loc["k marginal over depths", "df"] == len(KS) - 1


def test_omnibus_holds_its_level_without_an_effect():
    """Loose calibration: over 12 grids without a k effect (but with draw, language and
    language x k variance) the k tests reject at .05 at most twice. Dropping the language x
    k component or the between-cluster df makes them reject too often."""
    rejects = []
    for seed in range(100, 112):
        deltas, covariates = synthetic(seed=seed, effect=0.0)
        fit = av2.mixed_model(av2.language_deltas(deltas, stub(covariates)))
        rejects.append((av2.k_omnibus(fit)["p"] < 0.05).any())
    assert sum(rejects) <= 2


def test_mixed_model_tries_the_next_optimizer_when_one_stops_short(effect_data, monkeypatch):
    """L-BFGS cut to one iteration does not converge: Powell's method refits, reaches the
    same optimum, and the fit's warnings say so first."""
    from statsmodels.regression.mixed_linear_model import MixedLM

    deltas, covariates = effect_data
    lang = av2.language_deltas(deltas, stub(covariates))
    plain = av2.mixed_model(lang)
    assert plain.result.converged and not any(w.startswith("fitted by") for w in plain.warnings)
    real = MixedLM.fit

    def short(self, *args, method=None, **kwargs):
        if method == ["lbfgs"]:
            kwargs["maxiter"] = 1
        return real(self, *args, method=method, **kwargs)

    monkeypatch.setattr(MixedLM, "fit", short)
    fit = av2.mixed_model(lang)
    assert fit.result.converged
    assert fit.warnings[0] == "fitted by powell (lbfgs did not converge)"
    np.testing.assert_allclose(fit.result.fe_params, plain.result.fe_params, atol=2e-3)


def test_language_by_depth_sensitivity_takes_what_the_residual_held(effect_data):
    """A planted language x depth offset (SD .06): the pre-registered model can only put it in
    its residual; the sensitivity model (VC_FORMULA_LANG_DEPTH) finds it and keeps the
    planted k effect. With one depth it drops the component and says so."""
    deltas, covariates = effect_data
    rng = np.random.default_rng(7)
    offset = {(L, lang): rng.normal(0, 0.06) for L in DEPTHS for lang in LANGS}
    shifted = deltas.assign(delta=deltas["delta"] + [offset[(L, lang)] for L, lang in zip(
        deltas["layers"], deltas["query_lang"], strict=True)])
    lang = av2.language_deltas(shifted, stub(covariates))
    var = {}
    for name, vc in (("pre", None), ("sens", av2.VC_FORMULA_LANG_DEPTH)):
        fit = av2.mixed_model(lang, vc_formula=vc)
        var[name] = fit.table.set_index("term")["estimate"]
        assert av2.k_effects(fit).set_index("k_langs").loc[4, "estimate"] == pytest.approx(
            EFFECT, abs=0.02)
    planted = np.var(list(offset.values()))
    assert var["sens"]["lang_depth variance"] == pytest.approx(planted, rel=0.6)
    assert var["pre"]["residual variance"] > var["sens"]["residual variance"] + planted / 3
    one = av2.mixed_model(lang[lang["layers"] == 3], vc_formula=av2.VC_FORMULA_LANG_DEPTH)
    assert "lang_depth variance (one depth)" in one.dropped


def test_mixed_model_with_the_two_intercepts_only(effect_data):
    deltas, covariates = effect_data
    fit = av2.mixed_model(av2.language_deltas(deltas, stub(covariates)),
                          vc_formula=av2.VC_FORMULA_INTERCEPTS)
    assert "lang_k variance" not in set(fit.table["term"])
    assert fit.df_between == len(KS) * N_DRAWS - len(KS)
    assert av2.k_effects(fit).set_index("k_langs").loc[4, "estimate"] == pytest.approx(
        EFFECT, abs=0.02)


def test_mixed_model_handles_one_depth_and_a_subset_of_k(effect_data):
    deltas, covariates = effect_data
    part = deltas[(deltas["layers"] == 3) & deltas["k_langs"].isin([1, 4])]
    fit = av2.mixed_model(av2.language_deltas(part, stub(covariates)))
    assert "C(layers)" not in fit.formula
    tests = av2.k_omnibus(fit)
    assert (tests["df"] == 1).all() and (tests["p"] < 0.05).all()
    assert av2.k_effects(fit)["estimate"].item() == pytest.approx(EFFECT, abs=0.03)


def test_too_few_draws_and_one_k_are_clear_errors(effect_data):
    deltas, covariates = effect_data
    lang = av2.language_deltas(deltas, stub(covariates))
    with pytest.raises(ValueError, match="Too few draws.*L2 k = 1 \\(1 draw\\)"):
        av2.mixed_model(lang[lang["draw"] == 0])
    one_k = av2.mixed_model(lang[lang["k_langs"] == 4])
    assert "lang_k variance (one k)" in one_k.dropped
    with pytest.raises(ValueError, match="at least two values of k"):
        av2.k_omnibus(one_k)
    with pytest.raises(ValueError, match="missing column.*draw"):
        av2.mixed_model(lang.drop(columns="draw"))
    with pytest.raises(ValueError, match="mixes protocol"):
        av2.mixed_model(pd.concat([lang, lang.assign(protocol="student")]))


# --------------------------------------------------------------------------- bootstrap


def reference_cell_means(deltas: pd.DataFrame, column: str) -> pd.Series:
    """Mean over draws of mean over languages of mean over queries, with pandas."""
    per_lang = deltas.groupby(["layers", "k_langs", "draw", "query_lang"])[column].mean()
    return per_lang.groupby(["layers", "k_langs", "draw"]).mean() \
        .groupby(["layers", "k_langs"]).mean()


def test_bootstrap_estimate_is_the_plain_cell_mean(effect_data, boot):
    deltas = effect_data[0]
    for column in ("delta", "value"):
        expected = reference_cell_means(deltas, column)
        got = pd.Series(getattr(boot, column)[0],
                        index=pd.MultiIndex.from_frame(boot.cells[["layers", "k_langs"]]))
        np.testing.assert_allclose(got.to_numpy(), expected.loc[got.index].to_numpy())
    assert boot.delta.shape == (401, len(DEPTHS) * len(KS))
    assert (boot.cells["n_draws"] == N_DRAWS).all()


def test_count_weights_equal_resampling_by_copying(effect_data):
    """The vectorised weighted means equal the plain means of an explicitly resampled grid
    (draws, languages and queries copied as often as they were drawn)."""
    deltas = effect_data[0]
    deltas = deltas[deltas["layers"].isin([2, 6]) & deltas["k_langs"].isin([1, 4])]
    rng = np.random.default_rng(5)
    draws = rng.integers(0, N_DRAWS, N_DRAWS)
    langs = rng.choice(LANGS, len(LANGS))
    queries = {lang: rng.integers(0, N_QUERIES, N_QUERIES) for lang in LANGS}
    # reference: copy rows, giving each copy its own cluster label
    parts = []
    for i, d in enumerate(draws):
        for j, lang in enumerate(langs):
            sub = deltas[(deltas["draw"] == d) & (deltas["query_lang"] == lang)]
            picked = sub.set_index("qid").loc[[f"{lang}-{q}" for q in queries[lang]]]
            parts.append(picked.reset_index().assign(draw=i, query_lang=f"{lang}#{j}"))
    expected = reference_cell_means(pd.concat(parts), "delta")
    # vectorised: the same resample as count weights
    runs = av2._runs_table(deltas)
    names, mats = av2._language_matrices(deltas, runs["run_id"].tolist())
    w_draw = np.bincount(draws, minlength=N_DRAWS)[None, :].astype(float)
    w_lang = np.array([[list(langs).count(n) for n in names]], dtype=float)

    def w_query(i):  # the matrices' columns are the qids in sorted (string) order
        drawn = pd.Series([f"{names[i]}-{q}" for q in queries[names[i]]]).value_counts()
        columns = sorted(f"{names[i]}-{q}" for q in range(N_QUERIES))
        return drawn.reindex(columns, fill_value=0).to_numpy(dtype=float)[None, :]

    cells = runs[["layers", "k_langs"]].drop_duplicates().reset_index(drop=True)
    run_cell = pd.MultiIndex.from_frame(cells).get_indexer(
        pd.MultiIndex.from_frame(runs[["layers", "k_langs"]]))
    got, _ = av2._cell_means(mats, w_draw, w_lang, w_query, runs["draw"].to_numpy(), run_cell,
                             len(cells))
    np.testing.assert_allclose(got[0], expected.to_numpy())


def test_bootstrap_ci_covers_the_truth_and_is_wider_than_query_only(effect_data, boot):
    table = av2.contrast_table(boot).set_index(["name", "k_langs"])
    k4 = table.loc[("k_vs_ref", 4)]
    assert k4["ci_low"] < EFFECT < k4["ci_high"]
    assert k4["reject"] and k4["estimate"] > 0
    naive = av2.hierarchical_bootstrap(effect_data[0], n_boot=400, seed=1, levels=("queries",))
    k4_naive = av2.contrast_table(naive).set_index(["name", "k_langs"]).loc[("k_vs_ref", 4)]
    assert k4_naive["estimate"] == pytest.approx(k4["estimate"])
    assert (k4["ci_high"] - k4["ci_low"]) > 2 * (k4_naive["ci_high"] - k4_naive["ci_low"])
    # each level adds variance
    no_draws = av2.hierarchical_bootstrap(effect_data[0], n_boot=400, seed=1,
                                          levels=("languages", "queries"))
    assert av2.contrast_table(no_draws).set_index(["name", "k_langs"]).loc[
        ("k_vs_ref", 4), "se"] < k4["se"]


def test_bootstrap_is_seeded(effect_data):
    part = effect_data[0][effect_data[0]["layers"] == 2]
    a = av2.hierarchical_bootstrap(part, n_boot=50, seed=3)
    b = av2.hierarchical_bootstrap(part, n_boot=50, seed=3)
    c = av2.hierarchical_bootstrap(part, n_boot=50, seed=4)
    np.testing.assert_array_equal(a.delta, b.delta)
    assert not np.array_equal(a.delta[1:], c.delta[1:])


def test_bootstrap_refuses_unpaired_queries_and_missing_columns(effect_data):
    deltas = effect_data[0]
    with pytest.raises(ValueError, match="Language hau: the runs do not share"):
        av2.hierarchical_bootstrap(deltas.drop(index=[0, 1]), n_boot=10)
    with pytest.raises(ValueError, match="missing column.*qid"):
        av2.hierarchical_bootstrap(deltas.drop(columns="qid"), n_boot=10)
    with pytest.raises(ValueError, match="Unknown bootstrap level"):
        av2.hierarchical_bootstrap(deltas, n_boot=10, levels=("runs",))


# --------------------------------------------------------------------------- contrasts


def test_contrast_table_follows_the_preregistration(boot):
    table = av2.contrast_table(boot)
    assert set(table["name"]) == {c.name for c in av2.CONTRASTS}
    assert (table["name"] == "k_vs_ref").sum() == len(KS) - 1
    assert (table["name"] == "k_vs_ref_at_depth").sum() == (len(KS) - 1) * len(DEPTHS)
    # the depth step is the mean of adjacent differences of the absolute metric over k
    by = table.set_index("name")
    cells = boot.summary().groupby("layers")["value"].mean()
    assert by.loc["depth_step", "estimate"] == pytest.approx(np.diff(cells.to_numpy()).mean())
    truth = np.diff([ZERO_SHOT[L] + DEPTH_DELTA[L] for L in DEPTHS]).mean()
    assert by.loc["depth_step", "ci_low"] < truth < by.loc["depth_step", "ci_high"]
    marginal = boot.summary().groupby("k_langs")["delta"].mean()
    assert by.loc["k_range", "estimate"] == pytest.approx(marginal.max() - marginal.min())
    assert np.isnan(by.loc["k_range", "p"]) and not by.loc["k_range", "reject"]
    # t intervals: p, CI and MDE from the SE and Welch-Satterthwaite df
    tested = table[table["family"] != ""]
    t = stats.t.ppf(0.975, table["df"])
    np.testing.assert_allclose(table["ci_high"] - table["estimate"], t * table["se"])
    np.testing.assert_allclose(tested["p"], 2 * stats.t.sf(tested["estimate"].abs()
                                                            / tested["se"], tested["df"]))
    np.testing.assert_allclose(table["mde"], av2.mde(table["se"].to_numpy(),
                                                     df=table["df"].to_numpy()))
    # df is at least the smaller of the draws' (N_DRAWS - 1) and the languages' (the
    # queries, many, add variance without degrees of freedom to estimate)
    assert (table["df"] >= min(N_DRAWS, len(LANGS)) - 1 - 1e-9).all()
    assert np.isfinite(table["df"]).all()
    # the pre-registered percentile p-value is kept beside it
    k4 = [i for i, r in enumerate(av2._contrast_stats(boot, 1)) if r["name"] == "k_vs_ref"
          and r["k_langs"] == 4][0]
    assert table.iloc[k4]["p_percentile"] == av2.bootstrap_p(
        av2._contrast_stats(boot, 1)[k4]["stat"][1:])


def test_depth_step_counts_the_ladder_steps_a_gap_spans(effect_data):
    """Without L3 (depths 2 and 6, two steps of the ladder 2 -> 3 -> 6 -> 12 apart), one depth
    step is half the L2 -> L6 difference, not all of it; a depth off the ladder is refused."""
    from optical_lib.grid import V2_DEPTHS

    assert av2.DEPTH_LADDER == V2_DEPTHS
    np.testing.assert_array_equal(av2.ladder_steps([2, 3, 12]), [1, 2])
    gap = av2.hierarchical_bootstrap(effect_data[0][effect_data[0]["layers"] != 3],
                                     n_boot=50, seed=1)
    by = av2.contrast_table(gap).set_index("name")
    cells = gap.summary().groupby("layers")["value"].mean()
    assert by.loc["depth_step", "estimate"] == pytest.approx((cells[6] - cells[2]) / 2)
    truth = (ZERO_SHOT[6] + DEPTH_DELTA[6] - ZERO_SHOT[2] - DEPTH_DELTA[2]) / 2
    assert by.loc["depth_step", "ci_low"] < truth < by.loc["depth_step", "ci_high"]
    with pytest.raises(ValueError, match=r"Depth\(s\) \[4\] are not on the design's depth"):
        av2.ladder_steps([2, 4])


def test_t_interval_of_one_level_is_the_t_interval_of_a_mean():
    """Resampling n units alone: the bootstrap variance times n / (n - 1) is s² / n, and the
    interval is the one-sample t interval with n - 1 df; the queries (no unit count) add
    variance without lowering df."""
    rng = np.random.default_rng(0)
    x = rng.normal(0.3, 1.0, 5)
    reps = x[rng.integers(0, 5, (20000, 5))].mean(axis=1)
    t = av2.t_interval(x.mean(), {"draws": reps}, {"draws": 5})
    assert t["df"] == pytest.approx(4)
    assert t["se"] == pytest.approx(x.std(ddof=1) / np.sqrt(5), rel=0.02)
    half = stats.t.ppf(0.975, 4) * t["se"]
    assert t["ci_low"] == pytest.approx(x.mean() - half)
    assert t["p"] == pytest.approx(2 * stats.t.sf(abs(x.mean()) / t["se"], 4))
    both = av2.t_interval(x.mean(), {"draws": reps, "queries": reps}, {"draws": 5,
                                                                      "queries": None})
    assert both["se"] ** 2 == pytest.approx(t["se"] ** 2 + reps.var(ddof=1))
    assert both["df"] > 4
    z = av2.t_interval(0.0, {"queries": reps}, {"queries": None})
    assert np.isinf(z["df"]) and z["p"] == 1.0
    with pytest.raises(ValueError, match="1 unit"):
        av2.t_interval(0.0, {"draws": reps}, {"draws": 1})


def test_holm_matches_multipletests_within_each_family(boot):
    table = av2.contrast_table(boot)
    for family in ("primary", "per depth"):
        part = table[table["family"] == family]
        reject, adjusted, _, _ = multipletests(part["p"], alpha=0.05, method="holm")
        np.testing.assert_allclose(part["p_holm"], adjusted)
        np.testing.assert_array_equal(part["reject"].to_numpy(dtype=bool), reject)


def test_bootstrap_p_and_mde():
    assert av2.bootstrap_p(np.array([1.0, 2.0, 3.0, -1.0])) == pytest.approx(0.5)
    assert av2.bootstrap_p(np.arange(1.0, 100.0)) == pytest.approx(1 / 100)  # the floor
    assert av2.bootstrap_p(np.zeros(10)) == 1.0
    assert av2.mde(1.0) == pytest.approx(1.959964 + 0.841621, rel=1e-5)
    assert av2.mde(0.01, alpha=0.05, power=0.5) == pytest.approx(0.0196, rel=1e-3)
    assert av2.mde(1.0, df=4) == pytest.approx(stats.t.ppf(0.975, 4) + stats.t.ppf(0.8, 4))


def test_contrasts_need_two_k_and_the_reference(effect_data):
    deltas = effect_data[0]
    one_k = av2.hierarchical_bootstrap(deltas[deltas["k_langs"] == 4], n_boot=10)
    with pytest.raises(ValueError, match="at least two values of k"):
        av2.contrast_table(one_k)
    no_ref = av2.hierarchical_bootstrap(deltas[deltas["k_langs"] > 1], n_boot=10)
    with pytest.raises(ValueError, match="reference k = 1"):
        av2.contrast_table(no_ref)
    # one depth (an interim page): the k contrasts say at which depth, not "averaged"
    depth = int(deltas["layers"].min())
    one_depth = av2.contrast_table(av2.hierarchical_bootstrap(
        deltas[deltas["layers"] == depth], n_boot=10))
    assert set(one_depth["where"]) == {f"at L{depth}"}
    assert set(one_depth["name"]) == {"k_vs_ref"}


# --------------------------------------------------------------------------- sentences


def row(**values):
    base = {"name": "k_vs_ref", "family": "primary", "subject": "k = 4",
            "reference": "k = 1", "where": "", "metric": "nDCG@10"}
    return {**base, **values}


def test_verdict_sentences_of_each_kind():
    table = pd.DataFrame([
        row(estimate=0.022, ci_low=0.006, ci_high=0.037, p_holm=0.010, mde=0.015),
        row(subject="k = 2", estimate=0.002, ci_low=-0.009, ci_high=0.012, p_holm=0.8,
            mde=0.030),
        row(subject="k = 8", where="at L3", name="k_vs_ref_at_depth", family="per depth",
            estimate=0.010, ci_low=-0.005, ci_high=0.030, p_holm=0.40, mde=0.025),
        row(subject="k = 16", estimate=-0.022, ci_low=-0.037, ci_high=-0.006, p_holm=0.0004,
            mde=0.015),
    ])
    sentences = av2.verdict(table)
    assert sentences[0].startswith("No headline")
    # one sentence per place: significant contrasts first, then the undetected ones
    assert sentences[1] == ("k = 4 beats k = 1 by +.022 [.006, .037] (Holm p = .010); "
                            "k = 16 falls behind k = 1 by -.022 [-.037, -.006] (Holm p < .001); "
                            "no effect of k = 2 over k = 1 detected (effects larger than ±.030 "
                            "would have been detected, 80% power).")
    assert sentences[2].startswith("At L3, inconclusive: k = 8 vs k = 1 is +.010 [-.005, .030]")
    assert "which still allows effects as large as +.030" in sentences[2]
    assert len(sentences) == 3
    # the single-contrast reading is the same rule
    assert av2.contrast_sentence(table.iloc[1]) == (
        "no effect of k = 2 over k = 1 detected (effects larger than ±.030 would have been "
        "detected, 80% power).")


def test_undetected_contrasts_of_one_place_share_a_clause_with_their_mde_range():
    table = pd.DataFrame([
        row(subject=f"k = {k}", where="at L2", name="k_vs_ref_at_depth", family="per depth",
            layers=2, estimate=0.001, ci_low=-0.01, ci_high=0.012, p_holm=0.9, mde=mde)
        for k, mde in ((2, 0.018), (4, 0.016), (64, 0.021))
    ])
    (sentence,) = av2.verdict(table)[1:]
    assert sentence == ("At L2, no effect of k = 2, k = 4 or k = 64 over k = 1 detected "
                        "(effects larger than ±.021 would have been detected in each, 80% "
                        "power; ±.016 to ±.021 by contrast).")


def headline_table(difference, ci, p_holm):
    return pd.DataFrame([
        row(name="k_range", family="", subject="best-minus-worst k", estimate=0.030,
            ci_low=0.012, ci_high=0.048, p_holm=np.nan, mde=0.02),
        row(name="depth_step", family="", subject="one depth step", estimate=0.030 - difference,
            ci_low=0.0, ci_high=0.06, p_holm=np.nan, mde=0.02),
        row(name="range_vs_depth", subject="best-minus-worst k", reference="one depth step",
            estimate=difference, ci_low=ci[0], ci_high=ci[1], p_holm=p_holm, mde=0.02),
    ])


def test_headline_says_which_is_larger_or_that_it_cannot_tell():
    k_wins = av2.headline(headline_table(0.015, (0.002, 0.028), 0.03))
    assert k_wins.startswith("The choice of k matters more than one depth step")
    assert "difference +.015 [.002, .028] (Holm p = .030)" in k_wins
    assert "Δ nDCG@10 by +.030 [.012, .048]" in k_wins
    depth_wins = av2.headline(headline_table(-0.05, (-0.07, -0.03), 0.002))
    assert depth_wins.startswith("One depth step matters more than the choice of k")
    unsure = av2.headline(headline_table(0.005, (-0.01, 0.02), 0.6))
    assert unsure.startswith("Cannot tell whether")


def test_verdict_of_a_bootstrap_is_computed(boot):
    table = av2.contrast_table(boot)
    sentences = av2.verdict(table)
    assert len(sentences) == 1 + 1 + len(DEPTHS)  # headline, averaged, one per depth
    assert sentences[1].startswith("Averaged over depths, ")
    assert "k = 4 beats k = 1 by +.0" in sentences[1]
    assert [s.split(",")[0] for s in sentences[2:]] == [f"At L{d}" for d in sorted(DEPTHS)]
    for sentence in sentences[1:]:  # every tested k is read once in each place
        named = sorted(int(k) for k in re.findall(r"k = (\d+)", sentence) if k != "1")
        assert named == list(KS[1:])
    with pytest.raises(ValueError, match="missing column.*mde"):
        av2.verdict(av2.contrast_table(boot).drop(columns="mde"))


def test_fmt():
    assert [av2.fmt(x) for x in (0.0224, -0.0051, 1.5)] == ["+.022", "-.005", "+1.500"]
    assert av2.fmt(0.037, signed=False) == ".037"


# --------------------------------------------------------------------------- files


def write_run(root: Path, run_id: str, config: dict, per_query: pd.DataFrame | None):
    folder = root / "runs" / run_id
    folder.mkdir(parents=True)
    (folder / "setting.json").write_text(json.dumps({"run_id": run_id, "config": config}))
    (folder / "results.json").write_text("[]")
    if per_query is not None:
        per_query.to_parquet(folder / "per_query.parquet")


def test_load_deltas_needs_trained_runs(tmp_path):
    write_run(tmp_path, "v2-L2-none", {"design": "v2", "method": "none", "layers": 2}, None)
    with pytest.raises(ValueError, match="No trained design-v2 runs among 1 run"):
        av2.load_deltas(tmp_path)
    with pytest.raises(FileNotFoundError, match="no finished results"):
        av2.load_deltas(tmp_path, run_ids=["v2-L2-none", "v2-L9-missing"])


def test_load_deltas_reads_a_written_run(tmp_path, effect_data):
    part = effect_data[0][effect_data[0]["run_id"] == "L2-k4-d1"]
    per_query = part[["run_id", "task", "query_lang", "qid", "value", "protocol", "baseline",
                      "delta"]].assign(doc_lang="eng", metric="nDCG@10")
    config = {"design": "v2", "method": "optical", "layers": 2, "k_langs": 4, "draw": 1,
              "seed": 0, "budget": 1984, "teacher": "me5-small", "relatives": True,
              "split": "eval"}
    write_run(tmp_path, "L2-k4-d1", config, per_query)
    got = av2.load_deltas(tmp_path)
    assert list(got.columns) == list(av2.DELTA_COLUMNS)
    assert got["sample"].eq("fixed").all() and len(got) == len(part)
    np.testing.assert_allclose(got["delta"].sort_values(), part["delta"].sort_values())
    with pytest.raises(ValueError, match="No per-query rows of metric 'RR@10'"):
        av2.load_deltas(tmp_path, metric="RR@10")


RESULTS = PROJECT_ROOT / "results"


def finished(profile: str) -> list[str]:
    grid = json.loads((RESULTS / profile / "grid.json").read_text())
    return [r for r in grid["run_ids"] if (RESULTS / "runs" / r / "results.json").exists()]


def test_load_deltas_on_the_committed_ablation_runs():
    run_ids = finished("ablation")
    deltas = av2.load_deltas(RESULTS, run_ids=run_ids)
    trained = [r for r in run_ids if "-none-" not in r]
    assert sorted(deltas["run_id"].unique()) == sorted(trained)
    assert set(deltas["query_lang"]) <= set(DEV_LANGS_FLORES)
    assert set(deltas["task"]) == {"flores-x-eng", "flores-eng-x"}
    assert (deltas["k_langs"] == 8).all() and (deltas["draw"] == 0).all()
    np.testing.assert_allclose(deltas["delta"], deltas["value"] - deltas["baseline"],
                               atol=1e-12)
    sizes = deltas.groupby(["run_id", "task", "protocol", "query_lang"]).size()
    assert (sizes == 1012).all()
    # one draw per cell: the model refuses, naming the cause
    lang = av2.language_deltas(deltas, covariates=None)
    one = lang[(lang["task"] == "flores-x-eng") & (lang["protocol"] == "teacher")
               & (lang["method"] == "optical")]
    with pytest.raises(ValueError, match="Too few draws"):
        av2.mixed_model(one, formula="delta ~ C(layers)")


def test_covariates_of_the_ablation_runs_rebuilt_from_the_data():
    if not (data_dir() / "ntrex-128").is_dir():
        pytest.skip(f"NTREX-128 is not in the data directory {data_dir()} (set "
                    f"OPTICAL_DATA_DIR): the covariates rebuild the training samples")
    run_ids = [r for r in finished("ablation") if "-none-" not in r][:1]
    deltas = av2.load_deltas(RESULTS, run_ids=run_ids, tasks=["flores-x-eng"])
    lang = av2.language_deltas(deltas)
    recorded = json.loads((RESULTS / "runs" / run_ids[0] / "setting.json").read_text())
    for name in ("n_scripts", "share_xlmr", "n_families"):
        assert (lang[name] == recorded["diversity"][name]).all()
    assert lang["share_same_family"].between(0, 1).all()


def test_zero_shot_depth_curve_from_the_baselines():
    rows = pd.concat([read_results(RESULTS / "runs" / r / "results.json")
                      for r in finished("baselines")], ignore_index=True)
    curve = av2.zero_shot_depth_curve(rows)
    student = curve[(curve["task"] == "flores-x-eng") & (curve["protocol"] == "student")]
    assert student["teacher"].isna().all()
    assert student["layers"].is_unique and len(student) >= 2
    teacher = curve[(curve["task"] == "flores-x-eng") & (curve["protocol"] == "teacher")]
    assert teacher.groupby("teacher")["layers"].apply(lambda s: s.is_unique).all()
    source = rows[(rows["run_id"] == student["run_id"].iloc[0]) & (rows["scope"] == "macro")
                  & (rows["metric"] == "nDCG@10") & (rows["task"] == "flores-x-eng")
                  & (rows["protocol"] == "student")]
    assert student["value"].iloc[0] == source["value"].item()
    with pytest.raises(ValueError, match="No zero-shot"):
        av2.zero_shot_depth_curve(rows[rows["method"] != "none"])


def test_loader_keeps_working_when_a_run_is_copied(tmp_path):
    """A results folder elsewhere (a copy of two committed runs) reads the same."""
    run_ids = [r for r in finished("ablation") if "-none-" not in r][:2]
    for r in run_ids:
        shutil.copytree(RESULTS / "runs" / r, tmp_path / "runs" / r)
    a = av2.load_deltas(tmp_path, tasks=["flores-eng-x"], protocols=["student"])
    b = av2.load_deltas(RESULTS, run_ids=run_ids, tasks=["flores-eng-x"],
                        protocols=["student"])
    pd.testing.assert_frame_equal(a.sort_values(["run_id", "query_lang", "qid"],
                                                ignore_index=True),
                                  b.sort_values(["run_id", "query_lang", "qid"],
                                                ignore_index=True))
