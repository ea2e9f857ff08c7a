"""Analysis on synthetic result tables whose answer is known."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from optical_lib import analysis, plots
from optical_lib.evaluate import PER_QUERY_COLUMNS, RESULT_COLUMNS, write_results
from optical_lib.layout import ResultsLayout

PARAMS = {2: 3_547_392, 3: 5_321_856, 6: 10_645_248, 12: 21_290_496}


def synthetic_study(tmp_path: Path, size_slope: float, div_slope: float, seeds=(0, 1, 2)):
    rng = np.random.default_rng(0)
    layout = ResultsLayout(root=tmp_path)
    rows, pq, ids = [], [], []
    settings = [(n, "none", None, 0) for n in PARAMS] + [
        (n, "optical", k, s) for n in PARAMS for k in (1, 4, 16, 64) for s in seeds]
    for layers, method, k, seed in settings:
        run_id = f"L{layers}-{method}-k{k}-s{seed}"
        ids.append(run_id)
        base = 0.1 + size_slope * np.log2(PARAMS[layers] / PARAMS[2])
        if method != "none":
            base += 0.05 + div_slope * np.log2(k) + rng.normal(0, 0.003)
        meta = {c: None for c in RESULT_COLUMNS}
        meta.update(run_id=run_id, profile="offline", task="tatoeba", doc_lang="eng",
                    model="me5-small", layers=layers, nonemb_params=PARAMS[layers],
                    method=method, k_langs=k, budget=1000 if k else None, seed=seed,
                    metric="RR@10", n_queries=50)
        for lang, shift in (("swh", 0.0), ("amh", 0.02)):
            values = np.clip(base + shift + rng.normal(0, 0.05, 50), 0, 1)
            rows.append({**meta, "scope": "language", "query_lang": lang,
                         "resource_class": "2", "value": values.mean(),
                         "ci_low": values.mean() - 0.01, "ci_high": values.mean() + 0.01})
            pq += [{"run_id": run_id, "task": "tatoeba", "query_lang": lang, "doc_lang": "eng",
                    "metric": "RR@10", "qid": f"{lang}-q{i}", "value": v}
                   for i, v in enumerate(values)]
        rows.append({**meta, "scope": "macro", "query_lang": "*", "resource_class": "*",
                     "value": base + 0.01, "ci_low": base, "ci_high": base + 0.02})
        write_results([r for r in pq if r["run_id"] == run_id],
                      layout.per_query_file(run_id), PER_QUERY_COLUMNS)
    write_results(rows, layout.summary("synthetic"))
    layout.grid_file("synthetic").write_text(json.dumps({"profile": "synthetic", "run_ids": ids}))
    return analysis.load_study(tmp_path, "synthetic")


def test_regression_recovers_known_slopes(tmp_path):
    study = synthetic_study(tmp_path, size_slope=0.08, div_slope=0.01)
    reg = analysis.scaling_regression(study).set_index("term")
    assert reg.loc["log2_params", "coef"] == pytest.approx(0.08, abs=0.01)
    assert reg.loc["log2_k", "coef"] == pytest.approx(0.01, abs=0.005)
    assert reg.loc["log2_params", "ci_low"] < 0.08 < reg.loc["log2_params", "ci_high"]
    answer = analysis.answer(study, reg.reset_index())
    assert answer["verdict"] == (
        "both effects are non-zero; per doubling, model size has the larger one")
    assert answer["profile"] == "synthetic"
    assert answer["best_setting"] == "centred OPTICAL, L12, k = 64"


def test_diversity_only_and_no_effect_verdicts(tmp_path):
    study = synthetic_study(tmp_path / "a", size_slope=0.0, div_slope=0.03)
    reg = analysis.scaling_regression(study)
    assert analysis.answer(study, reg)["verdict"] == (
        "only data diversity has an effect distinguishable from zero")
    flat = synthetic_study(tmp_path / "b", size_slope=0.0, div_slope=0.0, seeds=(0,))
    assert "neither" in analysis.answer(flat, analysis.scaling_regression(flat))["verdict"]


def test_versus_baseline_finds_the_gains(tmp_path):
    study = synthetic_study(tmp_path, size_slope=0.0, div_slope=0.05, seeds=(0,))
    tests = analysis.versus_baseline(study, n_perm=2000)
    assert set(tests["lang"]) == {"swh", "amh"}
    table = analysis.win_loss(tests).set_index(["layers", "k_langs"])
    assert table.loc[(3, 64), "significant_gains"] == 2  # +0.35 on 50 queries
    assert (table["tests"] == 2).all()
    assert table.loc[(3, 64), "mean_gain"] > table.loc[(3, 1), "mean_gain"] + 0.2
    assert (table["significant_losses"] == 0).all()


def plotted_values(fig) -> np.ndarray:
    """Every y value a figure draws: line data, scatter offsets, heat-map cells."""
    from matplotlib.collections import PathCollection, QuadMesh

    values = []
    for ax in fig.axes:
        for line in ax.get_lines():
            try:
                values += list(np.asarray(line.get_ydata(), dtype=float))
            except ValueError:  # categorical labels (the error bars of horizontal bars)
                continue
        for coll in ax.collections:
            if isinstance(coll, QuadMesh):
                values += list(np.asarray(coll.get_array(), dtype=float).ravel())
            elif isinstance(coll, PathCollection):
                values += list(np.asarray(coll.get_offsets(), dtype=float)[:, 1])
        values += [p.get_height() for p in ax.patches]
    return np.asarray([v for v in values if np.isfinite(v)])


def test_settings_table_and_figures(tmp_path):
    study = synthetic_study(tmp_path, size_slope=0.05, div_slope=0.01)
    table = analysis.settings_table(study)
    assert len(table) == 4 + 16 and set(table["n_seeds"]) == {1, 3}
    trained = table[table["method"] == "optical"]
    assert (trained["ci_low"] < trained["mean"]).all()
    assert (trained["mean"] < trained["ci_high"]).all()
    assert table.loc[table["method"] == "none", "ci_low"].isna().all()  # one seed: no interval
    best = trained.sort_values("mean").iloc[-1]
    assert (best["layers"], best["k_langs"]) == (12, 64)
    # each figure draws the study's numbers, not just axes
    heat = plots.heatmap(study.summary)
    assert np.isclose(plotted_values(heat), best["mean"], atol=1e-3).any()
    curves = plots.curves_vs_params(study.summary)
    assert np.isclose(plotted_values(curves), best["mean"], atol=1e-3).any()
    per_lang = study.summary[(study.summary["scope"] == "language")
                             & (study.summary["run_id"] == "L12-optical-k64-s0")]
    bars = plots.per_language(per_lang)
    widths = [p.get_width() for ax in bars.axes for p in ax.patches]  # horizontal bars
    assert len(widths) == len(per_lang)
    for value in per_lang["value"]:
        assert np.isclose(widths, value, atol=1e-6).any()
    for fig in (heat, curves, bars, plots.methods_compare(study.summary),
                plots.language_strip(study.summary)):
        assert len(plotted_values(fig)) > 0
        plots.close(fig)
    assert analysis.scaling_regression(study, method="mse") is None
    with pytest.raises(FileNotFoundError, match="run the grid first"):
        analysis.load_study(tmp_path / "nowhere")
