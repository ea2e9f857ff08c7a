"""The calibration of the bootstrap test (optical_lib.calibration) and the committed table
the results page reads."""

from __future__ import annotations

import pandas as pd
import pytest

from optical_lib import calibration as cal
from optical_lib.grid import STUDY_DRAWS
from optical_lib.paths import PROJECT_ROOT


def levels_table(worst: dict[int, float]) -> pd.DataFrame:
    """Two regimes per number of draws; the worse one has ``worst[draws]``."""
    rows = []
    for draws, level in worst.items():
        rows += [{"draws": draws, "regime": "a", "level": level, "n_contrasts": 300,
                  "n_sims": 100},
                 {"draws": draws, "regime": "b", "level": level / 2, "n_contrasts": 300,
                  "n_sims": 100}]
    return pd.DataFrame(rows)


def test_min_test_draws_needs_every_larger_number_of_draws_to_hold_the_level():
    levels = levels_table({2: 0.2, 3: 0.07, 4: 0.09, 6: 0.05, 10: 0.04})
    assert cal.min_test_draws(levels) == 6  # 3 holds the level, but 4 does not
    assert cal.min_test_draws(levels, tolerance=0.1) == 3
    assert cal.min_test_draws(levels_table({2: 0.2, 10: 0.08})) is None
    assert cal.level_at(levels, 5) == 0.09  # the largest simulated number below
    assert cal.level_at(levels, 1) is None


def test_bootstrap_level_is_seeded_and_counts_every_contrast():
    found = cal.bootstrap_level(3, "languages", n_sims=2, n_boot=50)
    assert found == cal.bootstrap_level(3, "languages", n_sims=2, n_boot=50)
    assert [r["method"] for r in found] == list(cal.METHODS)
    for row in found:
        assert row["n_contrasts"] == 2 * (len(cal.CAL_KS) - 1) and 0 <= row["level"] <= 1
    with pytest.raises(ValueError, match="Unknown regime"):
        cal.bootstrap_level(3, "nope", n_sims=1)
    with pytest.raises(ValueError, match="at least 2"):
        cal.bootstrap_level(1, "draws", n_sims=1)


def test_with_few_draws_the_percentile_test_rejects_a_zero_contrast_too_often():
    """Why the analysis left the pre-registered percentile test: with three draws that
    dominate the variance it rejects a zero contrast far more often than 5%; the t interval
    far less often."""
    found = {r["method"]: r["level"]
             for r in cal.bootstrap_level(3, "draws", n_sims=25, n_boot=200)}
    assert found["percentile"] > 0.15 and found["t"] < found["percentile"] / 2


def test_the_committed_table_covers_the_regimes_and_allows_tests_at_the_planned_draws():
    levels = cal.read_levels(PROJECT_ROOT / "results")
    assert set(levels["regime"]) == set(cal.REGIMES) and set(levels["method"]) == set(cal.METHODS)
    assert (levels.groupby(["draws", "method"])["regime"].nunique() == len(cal.REGIMES)).all()
    assert {2, STUDY_DRAWS} <= set(levels["draws"])
    need = cal.min_test_draws(levels)
    assert need is not None and need <= STUDY_DRAWS  # the finished grid gets its tests
    assert cal.level_at(levels, 2) > cal.LEVEL_TOLERANCE


def test_read_levels_names_the_command_when_the_table_is_missing(tmp_path):
    with pytest.raises(FileNotFoundError, match="python -m optical_lib.calibration"):
        cal.read_levels(tmp_path)


def test_mixed_model_level_and_its_committed_table(tmp_path):
    found = cal.mixed_model_level(3, "depths", n_sims=2)
    assert [r["method"] for r in found] == list(cal.MIXED_MODELS)
    for row in found:
        assert row["n_tests"] == 2 and 0 <= row["level"] <= 1
    pre, sensitivity = (r["residual_sd"] for r in found)
    # the pre-registered model's residual holds the language x depth term (SD .14) that the
    # sensitivity model fits: a run's language mean is otherwise about .045
    assert pre > 0.08 and sensitivity < 0.07
    mixed = cal.read_mixed_levels(PROJECT_ROOT / "results")
    assert set(mixed["method"]) == set(cal.MIXED_MODELS)
    assert (mixed.groupby(["draws", "method"])["regime"].nunique() == len(cal.REGIMES)).all()
    assert {2, STUDY_DRAWS} <= set(mixed["draws"]) and mixed["residual_sd"].notna().all()
    with pytest.raises(FileNotFoundError, match="--mixed-model"):
        cal.read_mixed_levels(tmp_path)


def test_the_language_x_depth_term_is_one_shift_per_depth_and_language():
    base, _ = cal.synthetic_deltas(seed=3, n_draws=2, langs=6, n_queries=4)
    shifted, _ = cal.synthetic_deltas(seed=3, n_draws=2, langs=6, n_queries=4,
                                      sd_lang_depth=0.5)
    extra = shifted["delta"] - base["delta"]
    by_cell = extra.groupby([shifted["layers"], shifted["query_lang"]])
    assert (by_cell.std(ddof=0) < 1e-12).all()  # the same for every k, draw and query
    shifts = by_cell.mean()
    assert shifts.std() > 0.2 and shifts.groupby(level=0).nunique().eq(6).all()


def test_the_run_x_language_term_adds_noise_without_changing_the_other_regimes_grids():
    base, _ = cal.synthetic_deltas(seed=3, n_draws=2, langs=6, n_queries=4)
    same, _ = cal.synthetic_deltas(seed=3, n_draws=2, langs=6, n_queries=4, sd_run_lang=0.0)
    pd.testing.assert_frame_equal(base, same)
    noisy, _ = cal.synthetic_deltas(seed=3, n_draws=2, langs=6, n_queries=4, sd_run_lang=0.5)
    extra = (noisy["delta"] - base["delta"]).groupby([noisy["run_id"], noisy["query_lang"]])
    # one shift per (run, language), the same for its queries, different across runs
    assert (extra.std(ddof=0) < 1e-12).all()
    shifts = extra.mean()
    assert shifts.std() > 0.2 and shifts.groupby(level=0).nunique().eq(6).all()


def test_merge_levels_replaces_only_the_recomputed_cells():
    old = pd.DataFrame({"draws": [2, 2, 3, 3], "regime": ["languages", "draws"] * 2,
                        "method": "t", "level": [0.1, 0.2, 0.3, 0.4]})
    new = pd.DataFrame({"draws": [3, 2], "regime": ["runs", "draws"], "method": "t",
                        "level": [0.9, 0.8]})
    merged = cal.merge_levels(old, new)
    assert list(zip(merged["draws"], merged["regime"], merged["level"], strict=True)) == [
        (2, "languages", 0.1), (2, "draws", 0.8), (3, "languages", 0.3), (3, "draws", 0.4),
        (3, "runs", 0.9)]
    assert cal.merge_levels(None, new)["regime"].tolist() == ["draws", "runs"]
    other = new.assign(method="percentile")  # another test of the same cells: both kept
    assert len(cal.merge_levels(merged, other)) == len(merged) + len(other)


def test_main_writes_each_cell_and_keeps_the_cells_it_did_not_compute(tmp_path):
    args = ["--draws", "2", "--sims", "1", "--boot", "20", "--results", str(tmp_path)]
    cal.main([*args, "--regimes", "languages"])
    cal.main([*args, "--regimes", "draws"])
    table = cal.read_levels(tmp_path)
    assert sorted(set(table["regime"])) == ["draws", "languages"]
    assert len(table) == 2 * len(cal.METHODS) and table["seconds"].notna().all()
