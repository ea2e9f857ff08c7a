"""The design-v2 results page (``notebooks/study.py``, :mod:`optical_lib.study_page`
helpers) on synthetic result folders written by the project's own writers: a small
profile of fake settings (complete, partial, baselines only), the real ``full`` profile
partly finished, and the notebook executed on it."""

from __future__ import annotations

import json
import shutil
import zlib

import nbformat
import numpy as np
import pandas as pd
import pytest

from optical_lib import analysis_v2 as av2
from optical_lib import calibration as cal
from optical_lib import grid
from optical_lib import study_page as page
from optical_lib.evaluate import macro_rows
from optical_lib.experiment import run_meta, write_setting
from optical_lib.layout import ResultsLayout
from optical_lib.paths import PROJECT_ROOT
from optical_lib.report import gap_share

LANGS = ("hau", "yor", "zul", "amh")
N_QUERIES = 12
TASKS = ("flores-x-eng", "flores-eng-x")
XQUAD = ("xquad-r-x-eng", "xquad-r-eng-eng")
EFFECT = 0.06  # planted: k = 8 raises Δ by this much
DEPTH_DELTA = {2: 0.10, 3: 0.07, 6: 0.04, 12: 0.01}
SECONDS = 1800.0  # every fake run notebook's papermill duration
THREADS = 2
TRAINED = {"design": "v2", "method": "optical+mse", "amp": "bf16", "teacher": "me5-small",
           "eval_tatoeba": [], "eval_xquad": []}


def small_profile(draws=(0, 1, 2, 3), arm_draws=(0, 1)) -> list[dict]:
    """Baselines, a core of depth {2, 3} x k {1, 8} x draws, a 512-pair arm at L2."""
    base = [{"design": "v2", "method": "bm25"}]
    base += [{"design": "v2", "method": "none", "layers": L, "teacher": "me5-small",
              "amp": "bf16"} for L in (2, 3, 12)]
    core = [{**TRAINED, "layers": L, "k_langs": k, "draw": d,
             **({"eval_xquad": ["spa"]} if d == 0 else {})}
            for d in draws for L in (2, 3) for k in (1, 8)]
    arm = [{**TRAINED, "layers": 2, "k_langs": k, "draw": d, "budget": 512}
           for d in arm_draws for k in (1, 8)]
    return base + core + arm


def _rng(*key) -> np.random.Generator:
    return np.random.default_rng(zlib.crc32(repr(key).encode()))


def _zero_shot(layers, protocol, teacher, task, lang) -> np.ndarray:
    """The same-depth zero-shot model's per-query values (shared by every run)."""
    level = 0.2 + 0.03 * (layers or 0) + (0.1 if protocol == "student" else 0.0)
    return np.clip(level + _rng(layers, protocol, teacher, task, lang).normal(0, 0.1, N_QUERIES),
                   0, 1)


def _protocols(task: str, config) -> tuple[str, ...]:
    if config.method == "bm25":
        return ("lexical",)
    return ("student",) if task == "xquad-r-eng-eng" else ("student", "teacher")


def write_run(layout: ResultsLayout, params: dict, seconds: float = SECONDS) -> str:
    """One finished fake run: per-query values (and Δ for a trained run), macro result
    rows, setting.json (experiment.write_setting) and a run notebook with its duration."""
    config = grid.config_of(params)
    meta = {**run_meta(config, None), "layers": None if config.method == "bm25"
            else config.layers}
    tasks = [*TASKS, *(XQUAD if config.eval_xquad else ())]
    rows, per_query = [], []
    for task in tasks:
        for protocol in _protocols(task, config):
            values, deltas = {}, {}
            for lang in LANGS:
                qids = [f"{task}-{lang}-q{i}" for i in range(N_QUERIES)]
                base = _zero_shot(meta["layers"], protocol, config.teacher, task, lang)
                if config.trains:
                    shift = (DEPTH_DELTA[config.layers] + EFFECT * (config.k_langs == 8)
                             - 0.02 * (config.budget == 512)
                             + _rng(config.k_langs, config.draw).normal(0, 0.01))
                    delta = shift + _rng(config.run_id, task, protocol, lang).normal(
                        0, 0.05, N_QUERIES)
                else:
                    delta = np.zeros(N_QUERIES)
                value = base + delta
                values[lang] = {"nDCG@10": dict(zip(qids, value, strict=True))}
                deltas[lang] = {"delta:nDCG@10": dict(zip(qids, delta, strict=True))}
                for q, v, b, d in zip(qids, value, base, delta, strict=True):
                    row = {"run_id": config.run_id, "task": task, "query_lang": lang,
                           "doc_lang": "eng", "metric": "nDCG@10", "qid": q, "value": v,
                           "protocol": protocol}
                    if config.trains:
                        row.update(baseline=b, delta=d)
                    per_query.append(row)
            m = {**meta, "protocol": protocol}
            rows += macro_rows(m, task, values, n_boot=20)
            if config.trains:
                rows += macro_rows(m, task, deltas, n_boot=20)
    write_setting(config, rows, per_query, None, None, layout,
                  provenance={"threads": THREADS, "torch": "2.x+cpu",
                              "date": "2026-12-01T00:00:00+00:00"})
    layout.notebooks.mkdir(parents=True, exist_ok=True)
    nbformat.write(nbformat.v4.new_notebook(metadata={"papermill": {"duration": seconds}}),
                   layout.notebook(config.run_id))
    return config.run_id


def build(tmp_path, settings, keep=lambda p: True):
    layout = ResultsLayout(tmp_path / "results", tmp_path / "book" / "runs")
    for params in settings:
        if keep(params):
            write_run(layout, params)
    return layout


def stub_covariates(key, lang):
    """Covariates without the data files (the notebook rebuilds the real ones)."""
    return {"share_same_family": _rng(key, lang).uniform(),
            "n_scripts": int(_rng(key).integers(1, 5)), "share_xlmr": _rng(key).uniform()}


@pytest.fixture(scope="module")
def complete(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("complete")
    settings = small_profile()
    layout = build(tmp, settings)
    inv = page.inventory(layout.root, runs_dir=layout.notebooks, settings=settings)
    return layout, settings, inv


@pytest.fixture(scope="module")
def primary(complete):
    layout, _, inv = complete
    return page.analyse_slice(layout.root, inv, *page.PRIMARY_SLICE, n_boot=200,
                             covariates=stub_covariates)


# --------------------------------------------------------------------------- status


def test_inventory_groups_and_status_counts(tmp_path):
    settings = small_profile()
    pending = {grid.config_of(settings[-1]).run_id, grid.config_of(settings[5]).run_id}
    layout = build(tmp_path, settings, keep=lambda p: grid.config_of(p).run_id not in pending)
    inv = page.inventory(layout.root, runs_dir=layout.notebooks, settings=settings)
    assert page.groups(inv) == ["core", "512 pairs", "baselines"]
    assert (inv["group"] == "core").sum() == 16 and (inv["group"] == "baselines").sum() == 4
    status = page.status_table(inv).set_index("group")
    assert status.loc["total", "settings"] == len(settings)
    assert status.loc["total", "pending"] == len(pending)
    assert status.loc["core", "finished"] == 15 and status.loc["512 pairs", "finished"] == 3
    # settings[5] is core L2 k = 8 draw 0: draw 0 is incomplete, the others are not
    assert page.complete_draws(inv, "core") == [1, 2, 3]
    assert status.loc["core", "draws complete"] == "3 of 4 (L3 4)"
    finished = len(settings) - len(pending)
    assert status.loc["total", "CPU-hours"] == pytest.approx(finished * SECONDS * THREADS / 3600)
    assert status.loc["core", "wall-hours"] == pytest.approx(15 * SECONDS / 3600)
    facts = page.status_facts(inv, "small")
    assert facts["study_status"].startswith(f"{finished} of {len(settings)} settings")
    assert facts["study_state"] == "interim" and facts["study_threads"] == str(THREADS)
    assert facts["core_description"] == ("centred OPTICAL + MSE, me5-small teacher, "
                                         "1,984 pairs, with relatives, bf16")
    assert facts["core_draws_planned"] == "4"
    assert status.loc["total", "GPU-hours"] == 0 or pd.isna(status.loc["total", "GPU-hours"])
    # a run on a GPU counts in GPU-hours (its duration), not in CPU-hours
    first = layout.setting_file(inv.loc[inv["finished"], "run_id"].iloc[0])
    record = json.loads(first.read_text())
    first.write_text(json.dumps({**record, "config": {**record["config"], "device": "cuda"}}))
    on_gpu = page.status_table(page.inventory(layout.root, runs_dir=layout.notebooks,
                                              settings=settings)).set_index("group")
    assert on_gpu.loc["total", "GPU-hours"] == pytest.approx(SECONDS / 3600)
    assert on_gpu.loc["total", "CPU-hours"] == pytest.approx(
        (finished - 1) * SECONDS * THREADS / 3600)
    first.write_text(json.dumps(record))
    # a run that resumed from a checkpoint also counts its earlier attempts' training
    resumed = inv.loc[inv["finished"] & inv["trains"], "run_id"].iloc[0]
    pd.DataFrame({"step": [1, 2, 3, 4], "wall_s": [10.0, 20.0, 25.0, 32.0],
                  "attempt": [1, 1, 2, 2]}).to_csv(layout.history_file(resumed), index=False)
    assert layout.earlier_attempts_s(resumed) == 20.0
    again = page.inventory(layout.root, runs_dir=layout.notebooks, settings=settings)
    assert again.set_index("run_id").loc[resumed, "seconds"] == SECONDS + 20.0
    layout.history_file(resumed).unlink()
    # a run whose notebook is missing is not finished (the grid reruns it)
    layout.notebook(inv["run_id"].iloc[0]).unlink()
    again = page.inventory(layout.root, runs_dir=layout.notebooks, settings=settings)
    assert again["finished"].sum() == finished - 1


# --------------------------------------------------------------------------- tables


def reference_cells(results_root, run_ids, task, protocol, column="delta"):
    """Mean over runs of the mean over languages of the mean over queries, with pandas
    from the per-query files."""
    frames = [pd.read_parquet(results_root / "runs" / r / "per_query.parquet").assign(run=r)
              for r in run_ids]
    df = pd.concat(frames)
    df = df[(df["task"] == task) & (df["protocol"] == protocol) & (df["metric"] == "nDCG@10")]
    per_run = df.groupby(["run", "query_lang"])[column].mean().groupby("run").mean()
    return per_run


def test_cell_table_is_the_plain_cell_mean_with_the_t_interval(complete, primary):
    layout, _, inv = complete
    assert primary.inference and primary.complete and primary.draws == (0, 1, 2, 3)
    core = inv[inv["group"] == "core"]
    per_run = reference_cells(layout.root, core["run_id"], *page.PRIMARY_SLICE)
    table = page.cell_table(primary)
    for (L, k), part in core.groupby(["layers", "k_langs"]):
        mean = per_run.loc[part["run_id"]].mean()
        column = primary.boot.cells.index[(primary.boot.cells["layers"] == L)
                                          & (primary.boot.cells["k_langs"] == k)][0]
        t = primary.boot.t_stats(lambda b, c=column: b.delta[:, c])
        low, high = t["ci_low"], t["ci_high"]
        assert primary.boot.delta[0, column] == pytest.approx(mean)
        assert t["df"] >= 3  # the four draws' df at least
        assert table.loc[f"L{L}", f"k = {k}"] == page.fmt_ci(mean, low, high)
    assert page.fmt_ci(0.0312, 0.0121, 0.0504) == "+.031 [+.012, +.050]"
    assert page.fmt_ci(-0.0312) == "-.031" and page.fmt_ci(np.nan) == ""
    # the planted k effect is found by the contrast, and the page shows its row
    contrasts = primary.contrasts.set_index(["name", "k_langs"])
    k8 = contrasts.loc[("k_vs_ref", 8)]
    assert k8["ci_low"] < EFFECT < k8["ci_high"] and k8["reject"]
    shown = page.contrast_display(primary.contrasts)
    row = shown[shown["contrast"] == "k = 8 vs k = 1, averaged over depths"].iloc[0]
    assert row["estimate [95% CI]"] == page.fmt_ci(k8["estimate"], k8["ci_low"], k8["ci_high"])
    tests = {"k and depth x k", "k marginal over depths"}
    assert primary.omnibus is not None and set(primary.omnibus["test"]) == tests | {
        t + page.SENSITIVITY for t in tests}  # and the sensitivity model's, with a note
    assert any(n.startswith("Sensitivity, not pre-registered") for n in primary.notes)
    depth = page.depth_means(primary).set_index("layers")
    cells = primary.cells.groupby("layers")["delta"].mean()
    np.testing.assert_allclose(depth["delta"], cells.loc[depth.index])


def test_verdict_is_printed_only_when_the_core_is_complete(tmp_path, complete, primary):
    assert page.page_state(complete[2]) == "complete"
    assert page.primary_verdict(primary) == " ".join(av2.verdict(primary.contrasts))
    assert page.primary_verdict(primary, headline_only=True) == av2.headline(primary.contrasts)
    settings = small_profile(draws=(0, 1, 2, 3, 4))  # draw 4 planned, half of it run
    layout = build(tmp_path, settings, keep=lambda p: p.get("draw", 0) < 4
                   or p.get("k_langs") == 1)
    inv = page.inventory(layout.root, runs_dir=layout.notebooks, settings=settings)
    assert page.page_state(inv) == "interim"
    result = page.analyse_slice(layout.root, inv, *page.PRIMARY_SLICE, n_boot=50,
                               covariates=stub_covariates, model=False)
    assert result.interim and result.draws == (0, 1, 2, 3) and result.contrasts is not None
    assert len(result.used) == 16 and any("2 finished run(s)" in n for n in result.notes)
    verdict = page.primary_verdict(result)
    assert verdict.startswith("The verdict waits for the full grid: 18 of 20 core settings")
    assert page.primary_verdict(result, headline_only=True) == verdict
    # the intro glues the same sentence, so it may not point at estimates "above" it
    assert "above" not in verdict and "results page" in verdict
    assert "Interim estimates" in page.slice_markdown(result)
    assert "Interim estimates" not in page.slice_markdown(primary)
    # the intro's interim sentence: the smallest and largest k per depth, from the cells
    said = page.interim_sentence(result)
    cells = result.cells.set_index(["layers", "k_langs"])
    first = cells.loc[(2, 1)]
    assert said.startswith("Interim, not a verdict (L2, L3, draws 0, 1, 2, 3): Δ nDCG@10 on "
                           "FLORES X→eng under OPTICAL's protocol is L2 "
                           + page.fmt_ci(first["delta"], first["delta_ci_low"],
                                         first["delta_ci_high"]) + " at k = 1 and ")
    assert " at k = 8; L3 " in said and said.endswith("on the results page).")
    top = result.contrasts.set_index(["name", "k_langs"]).loc[("k_vs_ref", 8)]
    assert ("; paired over draws, languages and queries, k = 8 − k = 1 is "
            + page.fmt_ci(top["estimate"], top["ci_low"], top["ci_high"])) in said
    assert page.interim_sentence(primary) == ""  # a finished grid gets its verdict instead


def test_the_work_to_go_is_timed_only_by_finished_cpu_runs_of_the_same_depth_and_budget(
        tmp_path):
    settings = small_profile()
    l2_core = [p for p in settings if p.get("layers") == 2 and p.get("k_langs")
               and "budget" not in p]
    gone = grid.config_of(l2_core[0]).run_id
    layout = build(tmp_path, settings, keep=lambda p: p.get("layers") != 3 or "k_langs" not in p
                   if grid.config_of(p).run_id != gone else False)
    inv = page.inventory(layout.root, runs_dir=layout.notebooks, settings=settings)
    table = page.to_go(inv).set_index("layers")
    assert table["pending"].to_dict() == {2: 1, 3: 8}
    assert table.loc[2, "timed"] == 7 and table.loc[3, "timed"] == 0
    assert table.loc[2, "cpu_minutes"] == pytest.approx(SECONDS * THREADS / 60)
    assert np.isnan(table.loc[3, "cpu_hours"])  # no L3 run finished: not guessed
    said = page.to_go_sentence(inv)
    assert said == ("At the median CPU time of the finished settings of the same depth and "
                    "budget, 1 of the 9 pending trained settings need about 1.00 CPU-hours "
                    "(L2 at 1,984 pairs: 1 × 60 min). The other 8 have no finished "
                    "setting of their depth and budget to time them by yet: L3 at 1,984 "
                    "pairs (8).")
    assert page.status_facts(inv, "small")["study_to_go"] == said
    # CPUs differ: the fastest and slowest finished setting are said beside the median
    slower = inv.copy()
    slower.loc[slower.index[slower["finished"] & slower["trains"] & (slower["layers"] == 2)][0],
               "seconds"] = 2 * SECONDS
    assert page.to_go(slower).set_index("layers").loc[2, ["cpu_minutes", "cpu_high"]].tolist(
        ) == pytest.approx([SECONDS * THREADS / 60, 2 * SECONDS * THREADS / 60])
    assert ("(L2 at 1,984 pairs: 1 × 60 min, range 60–120); a range is that of the finished "
            "settings (fastest to slowest), which ran on CPUs of different speed. The other "
            "8") in page.to_go_sentence(slower)
    # a run on a GPU does not time the CPU's work
    for run_id in inv.loc[inv["finished"] & (inv["layers"] == 2) & (inv["budget"] == 1984),
                          "run_id"]:
        record = json.loads(layout.setting_file(run_id).read_text())
        record["config"]["device"] = "cuda"
        layout.setting_file(run_id).write_text(json.dumps(record))
    inv = page.inventory(layout.root, runs_dir=layout.notebooks, settings=settings)
    assert page.to_go(inv)["timed"].tolist() == [0, 0]
    # ... but the GPU's: 7 finished settings that ran at once held it for one duration
    assert page.to_go(inv)["gpu_timed"].tolist() == [7, 0]
    assert page.to_go_sentence(inv) == (
        "On a GPU, at its busy time per finished setting of the same depth and budget "
        "(settings shared it), 1 pending trained settings need about 0.07 GPU-hours (L2 at "
        "1,984 pairs: 1 × 4.3 min, from 7 finished). The other 8 have no finished setting of "
        "their depth and budget to time them by yet: L3 at 1,984 pairs (8).")
    l3 = page.inventory(layout.root, runs_dir=layout.notebooks,
                        settings=[p for p in settings if p.get("layers") == 3
                                  and p.get("k_langs")])
    assert page.to_go_sentence(l3) == ("None of the 8 pending trained settings has a finished "
                                       "setting of its depth and budget to time it by yet: L3 "
                                       "at 1,984 pairs (8).")
    done = page.inventory(layout.root, runs_dir=layout.notebooks,
                          settings=[p for p in settings if p.get("layers") != 3
                                    and grid.config_of(p).run_id != gone])
    assert page.to_go_sentence(done) == "No trained setting is pending."


def test_a_depth_ahead_of_the_others_gets_interim_inference_of_its_own(tmp_path):
    # L2 complete in draws 0-2, L3 only in draw 0 (its draw 1 half run): no draw is complete
    # in every cell, so the interim analysis takes L2 and its three draws
    settings = small_profile(arm_draws=())
    layout = build(tmp_path, settings, keep=lambda p: p.get("layers") != 3 or p.get("draw", 0)
                   == 0 or (p.get("draw") == 1 and p.get("k_langs") == 1)
                   if p.get("draw", 0) < 3 else p.get("method") == "none")
    inv = page.inventory(layout.root, runs_dir=layout.notebooks, settings=settings)
    assert page.complete_draws(inv) == [0]
    assert page.complete_draws(inv, depths=[2]) == [0, 1, 2]
    assert page.analysed_cells(inv) == ((2,), (0, 1, 2))
    assert page.status_table(inv).set_index("group").loc["core", "draws complete"] == \
        "1 of 4 (L2 3)"
    result = page.analyse_slice(layout.root, inv, *page.PRIMARY_SLICE, n_boot=50,
                               covariates=stub_covariates)
    assert result.inference and result.depths == (2,) and result.draws == (0, 1, 2)
    assert set(result.cells["layers"]) == {2} and len(result.used) == 6
    assert any(n.startswith("Interim inference on L2 only") for n in result.notes)
    assert any("3 finished run(s) outside" in n for n in result.notes)
    assert "(L2, draws 0, 1, 2)" in page.slice_markdown(result)
    assert page.primary_verdict(result).startswith("The verdict waits for the full grid")
    # once L3 has two complete draws in common with L2, both depths (2 draws) use more runs
    # (8) than L2 alone (3 draws: 6)
    write_run(layout, next(p for p in settings if p.get("layers") == 3 and p.get("draw") == 1
                           and p.get("k_langs") == 8))
    inv = page.inventory(layout.root, runs_dir=layout.notebooks, settings=settings)
    assert page.analysed_cells(inv) == ((2, 3), (0, 1))
    # with two draws complete everywhere, all depths are analysed whatever is ahead
    assert page.analysed_cells(inv, min_draws=1) == ((2, 3), (0, 1))
    # one depth one draw ahead, none with two: no inference, and the note says how far
    early = build(tmp_path / "early", settings, keep=lambda p: p.get("method") != "optical+mse"
                  or (p["layers"] == 2 and p["draw"] == 0))
    inv = page.inventory(early.root, runs_dir=early.notebooks, settings=settings)
    assert page.analysed_cells(inv) == ((), ())
    result = page.analyse_slice(early.root, inv, *page.PRIMARY_SLICE, n_boot=50,
                               covariates=stub_covariates)
    assert not result.inference and result.reason.startswith(
        "0 of 4 draws are complete in every cell (L2: 1 in all of its own k cells): no "
        "inference before 2")


def test_tests_are_withheld_below_the_calibrated_number_of_draws(complete):
    layout, _, inv = complete  # four draws complete in every core cell, two in the arm's
    levels = pd.DataFrame({"draws": [2, 2, 4, 4, 6, 6], "regime": ["a", "b"] * 3,
                           "level": [0.2, 0.15, 0.06, 0.09, 0.05, 0.06],
                           "n_contrasts": 300, "n_sims": 100})
    result = page.analyse_slice(layout.root, inv, *page.PRIMARY_SLICE, n_boot=50,
                               covariates=stub_covariates, levels=levels)
    assert result.inference and result.draws == (0, 1, 2, 3) and result.boot is not None
    assert result.contrasts is None and result.omnibus is None and result.effects is None
    assert result.cells["delta_ci_low"].notna().all()  # the intervals stay, with a note
    assert result.reason.startswith("Tests withheld with 4 complete draws: in simulation")
    assert "rejects 9.0% of the time" in result.reason and "only 91% of the time" in result.reason
    assert result.reason.endswith("the tests need 6 draws and this group plans 4: its "
                                  "intervals stay descriptive.")
    assert page.tests_withheld_note(levels, 2, planned=10).endswith(
        "rejects 20.0% of the time at the 5% level with 2 draws (the worst of 2 variance "
        "regimes; this page accepts at most 7.5%), and the 95% intervals below cover a zero "
        "contrast only 80% of the time; tests appear from 6 complete draws on.")
    assert page.tests_withheld_note(levels, 1, planned=10) == (
        "Tests withheld with 1 complete draws (fewer than simulated); tests appear from 6 "
        "complete draws on.")
    assert page.tests_withheld_note(levels, 6, planned=10) == ""
    assert page.tests_withheld_note(None, 2) == ""
    assert page.primary_verdict(result).startswith("No verdict. Tests withheld with 4")
    assert "Pre-registered contrasts" not in page.slice_markdown(result)
    # a group that plans fewer draws than the tests need says its intervals stay descriptive
    arm = page.analyse_arm(layout.root, inv, page.arms(inv)[0], n_boot=50, levels=levels)
    assert "this group plans 2: its intervals stay descriptive" in arm.result.reason
    # where the calibration allows four draws, the tests are there
    held = levels.assign(level=0.05)
    result = page.analyse_slice(layout.root, inv, *page.PRIMARY_SLICE, n_boot=50,
                               covariates=stub_covariates, levels=held, model=False)
    assert result.contrasts is not None and result.reason == ""


def test_the_calibration_for_reading():
    levels = pd.DataFrame({"draws": [2] * 4 + [10] * 4, "method": ["t", "t", "percentile",
                                                                    "percentile"] * 2,
                           "regime": ["draws", "languages"] * 4,
                           "level": [0.09, 0.05, 0.36, 0.15, 0.04, 0.03, 0.11, 0.07],
                           "n_contrasts": 450, "n_sims": 150})
    table = page.calibration_display(levels)
    assert table.columns.tolist() == [
        "draws", "percentile (pre-registered), 'draws'",
        "percentile (pre-registered), 'languages'", "t (used), 'draws'",
        "t (used), 'languages'", "zero contrasts per cell"]
    assert table.iloc[0].tolist() == [2, "36.0%", "15.0%", "9.0%", "5.0%", "450"]
    facts = page.calibration_facts(levels, 10)
    assert facts["cal_min_draws"] == "10" and facts["cal_level_two"] == "9.0%"
    assert facts["cal_level_planned"] == "4.0%" and facts["cal_pct_level_planned"] == "11.0%"
    assert facts["cal_pct_level_two"] == "36.0%" and facts["cal_sims"] == "150"
    assert facts["cal_answer"] == "Not as pre-registered."
    mixed = pd.DataFrame({"draws": [2, 2, 10, 10], "regime": ["draws", "languages"] * 2,
                          "level": [0.02, 0.0, 0.05, 0.03], "n_sims": 60})
    assert page.mixed_model_sentence(mixed) == (
        "The mixed model's F test of k, simulated the same way on 60 grids per cell "
        "(results/calibration/mixed_model_level.csv), rejects 2.0% with 2 draws, 5.0% with "
        "10 draws (the worst regime).")
    both = pd.concat([mixed.assign(method="mixed model"),
                      mixed.assign(method="mixed model (sensitivity)", level=mixed["level"] / 2)])
    assert page.mixed_model_sentence(both).endswith(
        "rejects 2.0% with 2 draws, 5.0% with 10 draws (the worst regime); the sensitivity "
        "model's (+ language × depth) 1.0% with 2 draws, 2.5% with 10 draws.")
    held = levels.assign(level=np.where(levels["draws"] == 10, 0.05, levels["level"]))
    assert page.calibration_facts(held, 10)["cal_answer"].startswith("The pre-registered")
    assert facts["cal_n_regimes"] == "2"
    assert facts["cal_regimes"] == (
        "'languages': SD between draws .012, language × k .025; "
        "'draws': SD between draws .030, language × k .010")
    assert page.regimes_text(["runs"]) == ("'runs': SD between draws .025, language × k .030, "
                                           "run × language .040")
    assert page.regimes_text(["depths"]).endswith("run × language .040, language × depth .140")


def test_the_fitted_variance_is_compared_with_the_simulated_regimes(complete):
    layout, _, inv = complete
    result = page.analyse_slice(layout.root, inv, *page.PRIMARY_SLICE, n_boot=50,
                               covariates=stub_covariates)
    sd = result.variance.set_index("component")["sd"]
    assert set(sd.index) == {"draw", "lang", "lang_k", "residual"} and (sd >= 0).all()
    ranges = page.regime_ranges({"a": {"sd_draw": 0.01, "sd_lang_k": 0.02, "sd_query": 0.3},
                                 "b": {"sd_draw": 0.03, "sd_lang_k": 0.01, "sd_query": 0.3,
                                       "sd_run_lang": 0.04}}, n_queries=100)
    assert ranges == {"sd_draw": (0.01, 0.03), "sd_lang_k": (0.01, 0.02),
                      "residual": (0.03, 0.05)}
    fitted = pd.DataFrame({"method": ["mixed model", "mixed model (sensitivity)"] * 2,
                           "residual_sd": [0.04, 0.02, 0.12, 0.03]})
    # the residual's range: what the pre-registered model fits on the simulated grids
    assert page.regime_ranges(mixed=fitted)["residual"] == (0.04, 0.12)
    assert "(the residual as the pre-registered model fits it on the simulated grids)" in (
        page.variance_sentence([result], mixed=fitted))
    said = page.variance_sentence([result], {k: (0.0, 1.0) for k in ranges})
    assert said.startswith("The grid's own variance, fitted by the mixed model on the runs "
                           f"analysed below (SD per component): FLORES X→eng, OPTICAL's "
                           f"protocol: between draws {av2.fmt(sd['draw'], signed=False)}, ")
    assert said.endswith("Every fitted SD lies within or below the range the regimes simulate.")
    tight = page.variance_sentence([result], {k: (0.0, 0.0) for k in ranges})
    assert "Larger than every simulated regime: between draws on FLORES X→eng" in tight
    assert "may understate" in tight
    empty = page.analyse_slice(layout.root, inv, *page.PRIMARY_SLICE, n_boot=50, model=False)
    assert empty.variance is None
    assert page.variance_sentence([empty]).startswith("No mixed model has been fitted")


def test_one_draw_gives_the_descriptive_table_only(tmp_path):
    settings = small_profile(draws=(0,), arm_draws=())
    layout = build(tmp_path, settings)
    inv = page.inventory(layout.root, runs_dir=layout.notebooks, settings=settings)
    result = page.analyse_slice(layout.root, inv, *page.PRIMARY_SLICE, n_boot=50,
                               covariates=stub_covariates)
    assert not result.inference and result.contrasts is None and result.omnibus is None
    assert result.notes[0].startswith("One draw: no inference")
    assert page.primary_verdict(result).startswith("No verdict. One draw: no inference")
    per_run = reference_cells(layout.root, result.used, *page.PRIMARY_SLICE)
    table = page.cell_table(result)
    for rec in result.cells.itertuples():
        run = inv[(inv["layers"] == rec.layers) & (inv["k_langs"] == rec.k_langs)
                  & (inv["group"] == "core")]["run_id"].item()
        assert table.loc[f"L{rec.layers}", f"k = {rec.k_langs}"] == av2.fmt(per_run[run])


def test_no_trained_run_shows_the_baselines(tmp_path):
    settings = small_profile()
    layout = build(tmp_path, settings, keep=lambda p: p["method"] in ("none", "bm25"))
    inv = page.inventory(layout.root, runs_dir=layout.notebooks, settings=settings)
    assert page.page_state(inv) == "empty"
    result = page.analyse_slice(layout.root, inv, *page.PRIMARY_SLICE)
    assert result.empty and result.notes == ("No setting of the core grid has finished yet.",)
    assert page.primary_verdict(result) == ("No verdict. No setting of the core grid has "
                                          "finished yet.")
    rows = page.profile_rows(layout.root, inv)
    assert "BM25" in page.baselines_markdown(rows) and "L12 zero-shot" in \
        page.baselines_markdown(rows)
    assert page.retrieval_table(rows, inv)["students"].isna().all()
    assert page.gap_table(rows, inv).empty
    arm = page.analyse_arm(layout.root, inv, "512 pairs", n_boot=20)
    assert arm.difference.empty and "No matched cell" in arm.notes[0]
    assert page.status_facts(inv, "small")["study_stage"].startswith("No trained setting")


# --------------------------------------------------------------------------- arms, retrieval


def test_arm_difference_is_arm_minus_core_at_matched_cells(complete):
    layout, _, inv = complete
    arm = page.analyse_arm(layout.root, inv, "512 pairs", n_boot=100)
    d = arm.difference
    assert list(d["k_langs"].dropna()) == [1, 8] and (d["layers"].dropna() == 2).all()
    task, protocol = page.PRIMARY_SLICE
    for rec in d[d["layers"].notna()].itertuples():
        cell = inv[(inv["layers"] == 2) & (inv["k_langs"] == rec.k_langs)
                   & inv["draw"].isin([0, 1])]
        ids = {g: cell[cell["group"] == g]["run_id"] for g in ("core", "512 pairs")}
        means = {g: reference_cells(layout.root, r, task, protocol, "value").mean()
                 for g, r in ids.items()}
        assert rec.difference == pytest.approx(means["512 pairs"] - means["core"])
        assert rec.n_draws == 2 and rec.ci_low < rec.difference < rec.ci_high
    assert d.iloc[-1]["difference"] == pytest.approx(d["difference"].iloc[:-1].mean())
    assert arm.mean_difference.startswith(av2.fmt(d.iloc[-1]["difference"]) + " [")
    assert arm.result.inference and arm.result.omnibus is None  # no mixed model for arms


def test_retrieval_sentences_name_the_depths_above_and_below_each_reference():
    table = pd.DataFrame({"suite": "XQuAD-R X→eng", "protocol": "student", "L": [2, 3, 6],
                          "zero-shot": [0.10, 0.10, 0.19], "students": [0.14, 0.18, np.nan],
                          "BM25": 0.167})
    assert page.retrieval_sentences(table) == (
        "XQuAD-R X→eng, student protocol: the students are above their zero-shot model at "
        "every depth scored (L2, L3); above BM25 at L3 and below it at L2.")
    assert page.retrieval_sentences(table.iloc[[0, 2]]) == (
        "XQuAD-R X→eng, student protocol: the students are above their zero-shot model at "
        "L2 (the one depth scored so far); below BM25 at L2 (the one depth scored so far).")
    worse = table.assign(students=[0.05, 0.18, 0.19], BM25=[0.3, 0.3, np.nan])
    assert page.retrieval_sentences(worse) == (
        "XQuAD-R X→eng, student protocol: the students are above their zero-shot model at "
        "L3, below it at L2 and level with it at L6; below BM25 at every depth scored "
        "(L2, L3).")
    assert page.retrieval_sentences(table.assign(students=np.nan)) == (
        "No distilled student has been scored on XQuAD-R yet.")


def test_retrieval_and_gap_tables_from_the_result_rows(complete):
    layout, _, inv = complete
    rows = page.profile_rows(layout.root, inv)
    table = page.retrieval_table(rows, inv).set_index(["suite", "protocol", "L"])
    macro = rows[(rows["scope"] == "macro") & (rows["metric"] == "nDCG@10")
                 & (rows["task"] == "xquad-r-x-eng") & (rows["protocol"] == "student")]
    students = macro[(macro["group"] == "core") & (macro["layers"] == 3)]
    per_k = students.groupby("k_langs")["value"].mean()
    row = table.loc[("XQuAD-R X→eng", "student", 3)]
    assert row["students"] == pytest.approx(per_k.mean()) and row["runs"] == 2
    assert row["best k"] == per_k.idxmax() and row["best k cell"] == per_k.max()
    zero = macro[(macro["method"] == "none") & (macro["layers"] == 3)]["value"].item()
    assert row["zero-shot"] == zero
    assert row["BM25"] == rows[(rows["method"] == "bm25") & (rows["scope"] == "macro")
                               & (rows["task"] == "xquad-r-x-eng")
                               & (rows["metric"] == "nDCG@10")]["value"].item()
    assert ("XQuAD-R eng→eng", "teacher", 3) not in table.index
    sentences = page.retrieval_sentences(table.reset_index())
    assert sentences.startswith("XQuAD-R X→eng, student protocol: the students are above")
    gaps = page.gap_table(rows, inv).set_index(["suite", "protocol"])
    share = gap_share(rows)
    share = share.merge(inv[inv["group"] == "core"][["run_id", "layers"]])
    expected = share[(share["task"] == "flores-x-eng") & (share["protocol"] == "teacher")
                     & (share["layers"] == 2)]["share"]
    assert gaps.loc[("FLORES X→eng", "teacher"), "L2"] == f"{expected.mean():.0%} (n = 8)"


# --------------------------------------------------------------------------- the notebook


def full_subset(params: dict) -> bool:
    """Part of the real ``full`` profile: its baselines, the core's draws 0 and 1, and the
    512-pair arm's draws 0 and 1 (so the core is interim, with inference)."""
    config = grid.config_of(params)
    if not config.trains:
        return True
    return config.draw < 2 and config.teacher == "me5-small" and config.relatives


def execute_full(tmp_path, keep=lambda p: True):
    """The results page executed on the real ``full`` profile with the settings ``keep``
    picks finished: (notebook, glued outputs, their text, inventory)."""
    layout = build(tmp_path, grid.profile_settings("full"), keep=keep)
    for table in (cal.RESULTS, cal.MIXED_RESULTS):  # the committed calibration of the tests
        (layout.root / table).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(PROJECT_ROOT / "results" / table, layout.root / table)
    out = page.execute("full", layout.root, tmp_path / "book", layout.notebooks, n_boot=50)
    nb = nbformat.read(out, as_version=4)
    glued = {}
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            name = output.get("metadata", {}).get("scrapbook", {}).get("name")
            if name:
                glued[name] = output["data"]
    text = {k: v.get("application/papermill.record/text/plain", "").strip("'\"")
            for k, v in glued.items()}
    return nb, glued, text, page.inventory(layout.root, runs_dir=layout.notebooks)


FIGURES = ("fig-study-delta-k", "fig-study-depth", "fig-study-languages", "fig-study-share")


def test_the_page_executes_on_a_partly_finished_full_profile(tmp_path):
    nb, glued, text, inv = execute_full(tmp_path, keep=full_subset)
    assert text["study_status"].startswith(f"{inv['finished'].sum()} of {len(inv)} settings "
                                           "of the full profile")
    assert text["verdict_primary"].startswith("The verdict waits for the full grid: 48 of 240")
    assert text["study_state"] == "interim"
    assert text["headline_primary"] == text["verdict_primary"]  # no verdict while interim
    assert text["interim_primary"].startswith("Interim, not a verdict")
    for figure in FIGURES:
        assert "application/papermill.record/image/png" in glued[figure]
    injected = [c for c in nb.cells if "injected-parameters" in c.metadata.get("tags", [])]
    assert injected and "remove-cell" in injected[0].metadata["tags"]
    shown = "\n".join(o.get("data", {}).get("text/markdown", "") for c in nb.cells
                      for o in c.get("outputs", []))
    assert "Interim estimates" in shown and "512 pairs" in shown
    assert json.loads(json.dumps(nb.metadata["papermill"]["parameters"]))["n_boot"] == 50


@pytest.mark.slow
def test_the_page_executes_on_a_finished_full_profile(tmp_path):
    """The branch the published study ends on: every setting finished, so the verdict is
    printed (headline, averaged over depths, one sentence per depth), nothing is to go and
    the intro's interim sentence is empty."""
    nb, glued, text, inv = execute_full(tmp_path)
    assert inv["finished"].all() and text["study_state"] == "complete"
    assert text["study_status"].startswith(f"{len(inv)} of {len(inv)} settings")
    assert text["study_to_go"] == "No trained setting is pending."
    verdict, headline = text["verdict_primary"], text["headline_primary"]
    assert verdict.startswith(headline) and "waits" not in verdict
    assert headline.startswith(("The choice of k", "One depth step", "Cannot tell"))
    rest = verdict[len(headline):]
    depths = sorted({p["layers"] for p in grid.profile_settings("full") if "k_langs" in p})
    assert rest.count("Averaged over depths, ") == 1
    assert [rest.count(f"At L{d}, ") for d in depths] == [1] * len(depths)
    assert text["interim_primary"].strip() == ""
    for figure in FIGURES:
        assert "application/papermill.record/image/png" in glued[figure]
    for arm in ("512-pairs", "no-relatives", "minilm-teacher"):
        assert text[f"arm-{arm}-difference"].count("[") == 1


# --------------------------------------------------------------------------- runs index


def test_runs_index_reads_every_v2_run_notebook(tmp_path):
    from optical_lib import runs_index as index

    quick = grid.study_quick()
    trained = next(p for p in quick if grid.config_of(p).trains)
    bm25 = next(p for p in quick if p.get("method") == "bm25")
    # the real profiles plan a quick setting twice (quick is a slice of full)
    assert index.planned_by(("quick", "full"))[grid.config_of(trained).run_id] == [
        "quick", "full"]
    # the fake writer scores FLORES only (other ids than quick's), so the test plans them
    flores = {"eval_tatoeba": [], "eval_xquad": []}
    planned = [{**trained, **flores}, {**bm25, **flores}]
    old = {**trained, **flores, "lr": 1e-3}  # planned by no profile: superseded
    layout = build(tmp_path, [*planned, old])
    plans = {grid.config_of(p).run_id: ["quick", "full"] for p in planned}
    table = index.runs_index(layout.root, layout.notebooks, plans=plans)
    assert list(table.columns) == list(index.COLUMNS) and len(table) == 3
    assert table["profiles"].tolist() == ["quick, full", "quick, full", index.SUPERSEDED]
    run_id = grid.config_of(planned[0]).run_id
    run = table[table["setting"].str.contains(run_id)].iloc[0]
    rows = json.loads(layout.results_file(run_id).read_text())
    macro = {(r["metric"], r["protocol"]): r["value"] for r in rows
             if r["scope"] == "macro" and r["task"] == "flores-x-eng"}
    assert run["nDCG@10"] == pytest.approx(macro["nDCG@10", "student"])
    assert run["Δ student"] == pytest.approx(macro["delta:nDCG@10", "student"])
    assert run["Δ OPTICAL"] == pytest.approx(macro["delta:nDCG@10", "teacher"])
    assert run["minutes"] == pytest.approx(SECONDS / 60) and run["L"] == trained["layers"]
    # a run that resumed from a checkpoint counts its earlier attempts' training too
    pd.DataFrame({"step": [1, 2, 3], "wall_s": [30.0, 60.0, 90.0],
                  "attempt": [1, 1, 2]}).to_csv(layout.history_file(run_id), index=False)
    resumed = index.runs_index(layout.root, layout.notebooks, plans=plans)
    assert resumed.loc[resumed["setting"].str.contains(run_id), "minutes"].tolist() == [
        pytest.approx((SECONDS + 60) / 60)]
    layout.history_file(run_id).unlink()
    lexical = table[table["setting"].str.startswith("[BM25]")].iloc[0]
    assert pd.isna(lexical["L"]) and pd.isna(lexical["Δ student"]) and lexical["nDCG@10"] > 0
    text = index.write_page(layout.root, tmp_path / "book", layout.notebooks,
                            plans=plans).read_text()
    assert "3 runs" in text and text.count("| quick, full |") == 2
    assert table["device"].tolist() == ["cpu"] * 3
    assert f"({3 * SECONDS / 3600:.1f} on the CPU)" in text
    # a run computed on a GPU says so, and its hours are counted apart
    setting = layout.setting_file(run_id)
    record = json.loads(setting.read_text())
    setting.write_text(json.dumps({**record, "config": {**record["config"], "device": "cuda"}}))
    table = index.runs_index(layout.root, layout.notebooks, plans=plans)
    assert table.loc[table["setting"].str.contains(run_id), "device"].tolist() == ["cuda"]
    text = index.write_page(layout.root, tmp_path / "book", layout.notebooks,
                            plans=plans).read_text()
    assert (f"({2 * SECONDS / 3600:.1f} on the CPU, {SECONDS / 3600:.1f} on a GPU)"
            in text)
    # a notebook without its result files is an error, not a row
    nbformat.write(nbformat.v4.new_notebook(), layout.notebooks / "v2-L2-none-tme5-0000.ipynb")
    with pytest.raises(FileNotFoundError, match="v2-L2-none-tme5-0000"):
        index.runs_index(layout.root, layout.notebooks, plans=plans)


def test_gpu_hours_count_settings_that_shared_the_gpu_once():
    """Eight settings at a time on one GPU held it for about one setting's duration, not
    eight: GPU time is the union of the runs' spans; CPU runs and unrecorded runs stay out."""
    runs = pd.DataFrame({
        "device": ["cuda", "cuda", "cuda", "cpu", "cuda"],
        "seconds": [600.0, 300.0, 100.0, 5000.0, np.nan],
        "date": ["2026-12-01T00:10:00+00:00", "2026-12-01T00:08:00+00:00",  # overlap
                 "2026-12-01T01:00:00+00:00",  # alone, an hour later
                 "2026-12-01T00:30:00+00:00", "2026-12-01T00:20:00+00:00"]})
    assert page.gpu_busy_seconds(runs) == pytest.approx(600 + 100)
    assert np.isnan(page.gpu_busy_seconds(runs[runs["device"] == "cpu"]))


def test_a_note_says_when_depths_ran_on_different_devices():
    runs = pd.DataFrame({"layers": [2, 2, 12, 12], "device": [None, "cpu", "cuda", "cuda:0"]})
    said = page.device_note(runs)
    assert said.startswith("The depths ran on different devices (L2 on the CPU; L12 on a GPU)")
    assert page.device_note(runs[runs["layers"] == 2]) == ""
    assert page.device_note(runs.assign(device="cuda")) == ""
    mixed = pd.DataFrame({"layers": [2, 2, 3], "device": ["cpu", "cuda", "cpu"]})
    assert "L2 on a GPU and the CPU; L3 on the CPU" in page.device_note(mixed)


def test_the_bf16_kernels_and_cpu_of_each_run_are_read_and_counted(tmp_path):
    layout = ResultsLayout(root=tmp_path)
    records = {"a": {"amp": "bf16", "prov": {"bf16_kernels": "emulated",
                                             "cpu": "AMD EPYC (AVX2, 2 cores)"}},
               "b": {"amp": "bf16", "prov": {}},  # before the field: PyTorch's kernel
               "c": {"amp": None, "prov": {}}}
    for run_id, r in records.items():
        layout.setting_file(run_id).parent.mkdir(parents=True)
        layout.setting_file(run_id).write_text(json.dumps(
            {"config": {"amp": r["amp"], "method": "optical+mse"},
             "provenance": {"threads": 1, **r["prov"]}}))
    got = {run_id: page._run_record(layout, run_id).get("bf16_kernels") for run_id in records}
    assert got == {"a": "emulated", "b": "native", "c": None}
    assert page._run_record(layout, "a")["cpu"] == "AMD EPYC (AVX2, 2 cores)"
    assert page._run_record(layout, "b")["cpu"] is None  # recorded only since it existed
    done = pd.DataFrame({"bf16_kernels": pd.array(["native", "emulated", "native", None],
                                                  dtype="string")})
    assert page.kernels_phrase(done) == (
        "; bf16 products by PyTorch's bf16 kernels in 2 runs, float32 products of bf16 "
        "operands (optical_lib.bf16) in 1 run")
    assert page.kernels_phrase(done.iloc[3:]) == ""
