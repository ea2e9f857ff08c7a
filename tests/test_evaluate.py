"""Tests for optical_lib.evaluate: metrics vs hand arithmetic and pytrec_eval, statistics,
and the result table I/O."""

from __future__ import annotations

import math
import os
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import pytrec_eval

from optical_lib import evaluate as ev
from optical_lib.evaluate import (
    PER_QUERY_COLUMNS,
    RESULT_COLUMNS,
    aggregate_seeds,
    bootstrap_ci,
    compare_systems,
    evaluate_run,
    evaluate_runs,
    holm,
    macro_bootstrap_ci,
    macro_rows,
    paired_test,
    per_query_metrics,
    read_results,
    result_rows,
    seed_summary,
    write_results,
)

LOG2_3 = math.log2(3)
LOG2_5 = math.log2(5)


def make_task(qrels, queries=None, name="toy-swh", lang="swh"):
    queries = queries if queries is not None else {q: f"text {q}" for q in qrels}
    return SimpleNamespace(
        name=name, corpus={}, queries=queries, qrels=qrels, query_lang=lang, doc_lang="eng"
    )


# ================================================================== hand-made metrics
HAND_QRELS = {
    "q1": {"d1": 1, "d2": 1, "d3": 0},
    "q2": {"d5": 1},
    "q3": {"d6": 1},
    "q4": {"d7": 1},
    "q5": {"d8": 2, "d9": 1},
}
HAND_RUN = {
    # ranks: d3 (non-rel), d1 (rel), d4 (unjudged), d2 (rel)
    "q1": {"d3": 3.0, "d1": 2.0, "d4": 1.0, "d2": 0.5},
    "q2": {"d5": 9.0, "x1": 1.0},
    # the relevant d6 at rank 11, after ten non-relevant documents
    "q3": {**{f"n{i}": 20.0 - i for i in range(10)}, "d6": 5.0},
    # q4 absent from the run
    "q5": {"d9": 2.0, "d8": 1.0},
}
HAND_EXPECTED = {
    "q1": {
        # DCG = 1/log2(1+2) + 1/log2(1+4); IDCG = 1/log2(2) + 1/log2(3)
        "nDCG@10": (1 / LOG2_3 + 1 / LOG2_5) / (1 + 1 / LOG2_3),  # = 0.65092...
        "RR@10": 1 / 2,  # first relevant at rank 2
        "R@100": 2 / 2,  # both relevant retrieved
        "AP": (1 / 2 + 2 / 4) / 2,  # precision at ranks 2 and 4, averaged over 2 relevant
    },
    "q2": {"nDCG@10": 1.0, "RR@10": 1.0, "R@100": 1.0, "AP": 1.0},
    # rank 11: outside the @10 cut-offs, inside @100; AP = (1/11) / 1
    "q3": {"nDCG@10": 0.0, "RR@10": 0.0, "R@100": 1.0, "AP": 1 / 11},
    "q4": {"nDCG@10": 0.0, "RR@10": 0.0, "R@100": 0.0, "AP": 0.0},  # missing -> 0
    "q5": {
        # graded, linear gain (trec_eval): DCG = 1/log2(2) + 2/log2(3); IDCG = 2 + 1/log2(3)
        "nDCG@10": (1 + 2 / LOG2_3) / (2 + 1 / LOG2_3),  # = 0.85972...
        "RR@10": 1.0,  # d9 (grade 1 counts as relevant) at rank 1
        "R@100": 1.0,
        "AP": (1 / 1 + 2 / 2) / 2,
    },
}


def test_hand_made_run_per_query_values():
    got = per_query_metrics(HAND_RUN, HAND_QRELS)
    assert set(got) == {"nDCG@10", "RR@10", "R@100", "AP"}
    for qid, expected in HAND_EXPECTED.items():
        for metric, value in expected.items():
            assert got[metric][qid] == pytest.approx(value, abs=1e-12), (qid, metric)
    assert list(got["AP"]) == ["q1", "q2", "q3", "q4", "q5"]


def test_hand_made_run_means_include_the_missing_query():
    res = evaluate_run(HAND_RUN, make_task(HAND_QRELS), n_boot=200)
    agg = res["aggregate"]
    # RR@10 mean = (0.5 + 1 + 0 + 0 + 1) / 5 = 0.5
    assert agg["RR@10"]["mean"] == pytest.approx(0.5)
    # R@100 mean = (1 + 1 + 1 + 0 + 1) / 5 = 0.8
    assert agg["R@100"]["mean"] == pytest.approx(0.8)
    assert agg["AP"]["n_queries"] == 5
    assert res["n_missing"] == 1 and res["n_unjudged"] == 0


def test_missing_and_empty_queries_count_as_zero_unlike_raw_pytrec_eval():
    qrels = {"a": {"d1": 1}, "b": {"d2": 1}, "c": {"d3": 1}}
    run = {"a": {"d1": 1.0}, "b": {}}  # b answered with nothing, c not at all
    # the pitfall: pytrec_eval only reports queries that are keys of the run, so its mean
    # would be over {a, b} and ignore c
    raw = pytrec_eval.RelevanceEvaluator(qrels, {"recip_rank"}).evaluate(run)
    assert set(raw) == {"a", "b"}
    got = per_query_metrics(run, qrels)
    for metric in got:
        assert got[metric] == {"a": 1.0, "b": 0.0, "c": 0.0}
    res = evaluate_run(run, make_task(qrels), n_boot=100)
    assert res["aggregate"]["RR@10"]["mean"] == pytest.approx(1 / 3)
    assert res["n_missing"] == 2


def test_queries_without_relevant_judgments_are_excluded_and_counted():
    qrels = {"a": {"d1": 1}, "z": {"d9": 0}}
    queries = {"a": "x", "z": "y", "nq": "no qrels at all"}
    res = evaluate_run({"a": {"d1": 1.0}, "z": {"d9": 1.0}}, make_task(qrels, queries), n_boot=50)
    assert list(res["per_query"]["AP"]) == ["a"]
    assert res["n_queries"] == 1 and res["n_unjudged"] == 2


def test_ties_follow_run_order_consistently_across_metrics():
    # Raw providers disagree on ties: trec_eval (nDCG) puts doc "b" before "a",
    # the msmarco provider behind ir_measures' RR@10 puts "a" before "b".
    qrels = {"q": {"b": 1}}
    first = per_query_metrics({"q": {"b": 1.0, "a": 1.0}}, qrels)
    second = per_query_metrics({"q": {"a": 1.0, "b": 1.0}}, qrels)
    assert first["RR@10"]["q"] == 1.0 and first["nDCG@10"]["q"] == 1.0
    assert second["RR@10"]["q"] == 0.5 and second["nDCG@10"]["q"] == pytest.approx(1 / LOG2_3)


def test_metric_names_are_canonical_and_unknown_ones_a_clear_error():
    got = per_query_metrics({"q": {"d": 1.0}}, {"q": {"d": 1}}, metrics=["MRR@10", "AP"])
    assert got == {"RR@10": {"q": 1.0}, "AP": {"q": 1.0}}  # ir_measures' alias MRR -> RR
    with pytest.raises(ValueError, match="Unknown metric 'Foo@10'"):
        per_query_metrics({}, {"q": {"d": 1}}, metrics=["Foo@10"])


# ===================================================================== vs pytrec_eval
def random_qrels_and_run(seed: int, n_q: int = 40, n_d: int = 300):
    rng = np.random.default_rng(seed)
    docs = [f"d{i}" for i in range(n_d)]
    qrels, run = {}, {}
    for i in range(n_q):
        qid = f"q{i}"
        judged = rng.choice(n_d, size=rng.integers(1, 12), replace=False)
        grades = rng.integers(0, 3, size=judged.size)
        grades[0] = max(grades[0], 1)  # at least one relevant
        qrels[qid] = {docs[j]: int(g) for j, g in zip(judged, grades, strict=True)}
        if rng.random() < 0.1:
            continue  # missing from the run
        depth = int(rng.integers(0, 150))
        # bias towards relevant docs so that the metrics are not all zero
        pool = np.unique(np.concatenate([judged, rng.choice(n_d, size=depth)]))
        pool = rng.permutation(pool)[:depth]
        run[qid] = {docs[j]: float(s) for j, s in zip(pool, rng.random(pool.size), strict=True)}
    return qrels, run


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_agrees_with_pytrec_eval_on_random_runs(seed):
    qrels, run = random_qrels_and_run(seed)
    got = per_query_metrics(run, qrels)
    answered = {q: r for q, r in run.items() if r}
    ref = pytrec_eval.RelevanceEvaluator(qrels, {"ndcg_cut_10", "recall_100", "map"}).evaluate(
        answered
    )
    top10 = {q: dict(sorted(r.items(), key=lambda kv: -kv[1])[:10]) for q, r in answered.items()}
    ref_rr = pytrec_eval.RelevanceEvaluator(qrels, {"recip_rank"}).evaluate(top10)
    assert set(got["AP"]) == set(qrels)
    n_nonzero = 0
    for qid in qrels:
        if qid in ref:
            expected = {
                "nDCG@10": ref[qid]["ndcg_cut_10"],
                "R@100": ref[qid]["recall_100"],
                "AP": ref[qid]["map"],
                "RR@10": ref_rr[qid]["recip_rank"],
            }
            n_nonzero += expected["AP"] > 0
        else:
            expected = dict.fromkeys(("nDCG@10", "R@100", "AP", "RR@10"), 0.0)
        for metric, value in expected.items():
            assert abs(got[metric][qid] - value) < 1e-9, (qid, metric)
    assert n_nonzero > 5  # the comparison is not vacuous


# ========================================================================== bootstrap
def test_bootstrap_ci_of_a_constant_is_a_point():
    mean, low, high = bootstrap_ci(np.full(57, 0.1), n_boot=1000, seed=3)
    assert low == high
    assert mean == pytest.approx(0.1, abs=1e-15) and low == pytest.approx(0.1, abs=1e-15)


def test_bootstrap_ci_is_seeded_and_has_the_expected_width():
    rng = np.random.default_rng(0)
    x = rng.random(400)
    a = bootstrap_ci(x, n_boot=2000, seed=5)
    assert a == bootstrap_ci(x, n_boot=2000, seed=5)
    assert a != bootstrap_ci(x, n_boot=2000, seed=6)
    mean, low, high = a
    assert low < mean < high
    # normal approximation: half-width ~ 1.96 sd / sqrt(n)
    half = 1.96 * x.std(ddof=1) / math.sqrt(x.size)
    assert (high - low) / 2 == pytest.approx(half, rel=0.15)


def test_bootstrap_ci_accepts_dicts_and_handles_empty():
    assert bootstrap_ci({"a": 1.0, "b": 1.0}, n_boot=10)[0] == 1.0
    assert all(math.isnan(v) for v in bootstrap_ci([], n_boot=10))


def test_macro_bootstrap_weights_languages_equally():
    # pooled mean would be (10*1 + 2*0)/12; the macro mean is (1 + 0)/2
    mean, low, high = macro_bootstrap_ci({"swh": np.ones(10), "khm": np.zeros(2)}, n_boot=500)
    assert mean == 0.5 and low == high == 0.5
    rng = np.random.default_rng(1)
    groups = {"a": rng.random(50), "b": rng.random(80) + 1}
    mean, low, high = macro_bootstrap_ci(groups, n_boot=1000, seed=0)
    assert mean == pytest.approx((groups["a"].mean() + groups["b"].mean()) / 2)
    assert low < mean < high


# ======================================================================= paired tests
def test_paired_test_identical_systems_give_p_one():
    x = np.random.default_rng(0).random(100)
    res = paired_test(x, x.copy(), n_perm=10000)
    assert res["p_t"] == 1.0 and res["p_perm"] == 1.0 and res["diff"] == 0.0


def test_paired_test_clearly_better_system():
    rng = np.random.default_rng(0)
    b = rng.random(200)
    a = np.clip(b + 0.1 + 0.1 * rng.standard_normal(200), 0, 1)
    res = paired_test(a, b, n_perm=10000, seed=1)
    assert res["p_t"] < 0.01 and res["p_perm"] < 0.01
    assert res["p_perm"] >= 1 / 10001  # Monte Carlo p-value never reaches 0
    assert res["ci_low"] > 0 and res["diff"] == pytest.approx(a.mean() - b.mean())


def test_paired_test_noise_only_is_not_significant_and_seeded():
    rng = np.random.default_rng(3)
    a, b = rng.random(150), rng.random(150)
    r1 = paired_test(a, b, n_perm=10000, seed=4)
    assert r1 == paired_test(a, b, n_perm=10000, seed=4)
    assert r1["p_perm"] > 0.05 and abs(r1["p_perm"] - r1["p_t"]) < 0.1


def test_sign_flip_is_exact_for_small_samples():
    # 5 positive differences: of the 2^5 = 32 sign vectors only all-plus and all-minus give
    # |sum| >= observed, so p = 2/32
    res = paired_test([1.0, 2, 3, 4, 5], [0.0, 1, 2, 3, 4], n_perm=10000)
    assert res["p_perm"] == pytest.approx(2 / 32)


def test_paired_test_aligns_dicts_and_rejects_different_queries():
    a = {"q1": 1.0, "q2": 0.0, "q3": 1.0}
    b = {"q3": 1.0, "q1": 1.0, "q2": 0.0}
    assert paired_test(a, b)["p_perm"] == 1.0
    with pytest.raises(ValueError, match="same queries"):
        paired_test(a, {"q1": 1.0, "q2": 0.0, "q9": 1.0})


def test_holm_hand_example():
    # sorted: 0.005*4 = 0.02, 0.01*3 = 0.03, 0.03*2 = 0.06, then max(0.06, 0.04*1) = 0.06
    adjusted, reject = holm([0.01, 0.04, 0.03, 0.005], alpha=0.05)
    np.testing.assert_allclose(adjusted, [0.03, 0.06, 0.06, 0.02])
    assert reject.tolist() == [True, False, False, True]
    # step-down stops at the first non-rejection even if a later raw p is small
    adjusted, reject = holm([0.02, 0.024, 0.03], alpha=0.05)
    # 0.02*3 = 0.06 > 0.05: nothing rejected; 0.024*2 = 0.048 is lifted to 0.06
    np.testing.assert_allclose(adjusted, [0.06, 0.06, 0.06])
    assert not reject.any()


def test_compare_systems_per_language_with_holm():
    rng = np.random.default_rng(0)
    base = {lang: {f"q{i}": float(v) for i, v in enumerate(rng.random(80))} for lang in "abc"}
    better = {
        "a": {q: min(1.0, v + 0.3) for q, v in base["a"].items()},  # clearly better
        "b": dict(base["b"]),  # identical
        "c": {q: float(v) for q, v in zip(base["c"], rng.random(80), strict=True)},  # noise
    }
    df = compare_systems(better, base, n_perm=2000)
    df = df.set_index("lang")
    assert df.loc["a", "reject"] and not df.loc["b", "reject"]
    assert df.loc["b", "p_perm"] == 1.0
    assert (df["p_perm_holm"] >= df["p_perm"]).all() and (df["p_t_holm"] >= df["p_t"]).all()


# ============================================================================= seeds
def test_seed_summary_hand_example():
    s = seed_summary([0.5, 0.6, 0.7])
    # mean 0.6, sd 0.1; t_{0.975, 2} = 4.302653; half-width = 4.302653 * 0.1 / sqrt(3)
    assert s["mean"] == pytest.approx(0.6) and s["std"] == pytest.approx(0.1)
    assert (s["min"], s["max"], s["n_seeds"]) == (0.5, 0.7, 3)
    assert s["ci_high"] - 0.6 == pytest.approx(4.302653 * 0.1 / math.sqrt(3), rel=1e-6)
    one = seed_summary([0.4])
    assert one["mean"] == 0.4 and math.isnan(one["std"]) and math.isnan(one["ci_low"])


# ====================================================================== result rows
META = {
    "run_id": "r0",
    "profile": "offline",
    "model": "e5-small",
    "layers": 3,
    "nonemb_params": 5_400_000,
    "method": "optical",
    "k_langs": 4,
    "budget": 10_000,
    "seed": 0,
}


def test_result_rows_schema_and_values():
    per_query = per_query_metrics(HAND_RUN, HAND_QRELS)
    rows = result_rows(META, make_task(HAND_QRELS), per_query, resource_class="low", n_boot=100)
    assert len(rows) == 4
    for row in rows:
        assert set(RESULT_COLUMNS) <= set(row)
        assert row["scope"] == "language" and row["query_lang"] == "swh"
        assert row["ci_low"] <= row["value"] <= row["ci_high"] and row["n_queries"] == 5
    with pytest.raises(ValueError, match="missing budget, seed"):
        result_rows(
            {k: v for k, v in META.items() if k not in ("budget", "seed")},
            make_task(HAND_QRELS),
            per_query,
        )


def test_macro_rows_over_languages_and_classes():
    per_lang = {
        "swh": {"AP": {"q1": 1.0, "q2": 1.0}},
        "khm": {"AP": {"q1": 0.0}},
        "deu": {"AP": {"q1": 0.5, "q2": 0.5, "q3": 0.5}},
    }
    rows = macro_rows(
        META, "tatoeba", per_lang, {"swh": "low", "khm": "low", "deu": "high"}, n_boot=200
    )
    by = {(r["scope"], r["resource_class"]): r for r in rows}
    assert by[("macro", "*")]["value"] == pytest.approx((1 + 0 + 0.5) / 3)
    assert by[("class", "low")]["value"] == pytest.approx(0.5)
    assert by[("class", "high")]["value"] == pytest.approx(0.5)
    assert by[("macro", "*")]["n_queries"] == 6 and by[("macro", "*")]["query_lang"] == "*"


def test_evaluate_runs_end_to_end():
    t1 = make_task({"a": {"d1": 1}, "b": {"d2": 1}}, name="tatoeba-swh", lang="swh")
    t2 = make_task({"a": {"d1": 1}}, name="tatoeba-khm", lang="khm")
    runs = {"tatoeba-swh": {"a": {"d1": 1.0}, "b": {"d9": 1.0}}, "tatoeba-khm": {}}
    rows, pq = evaluate_runs(
        runs, [t1, t2], META, suite="tatoeba", lang_class={"swh": "low", "khm": "low"}, n_boot=100
    )
    df = pd.DataFrame(rows)
    ap = df[df.metric == "AP"].set_index(["scope", "query_lang"])["value"]
    assert ap[("language", "swh")] == 0.5 and ap[("language", "khm")] == 0.0
    assert ap[("macro", "*")] == 0.25
    assert len(pq) == 4 * 3 and set(PER_QUERY_COLUMNS) <= set(pq[0])
    assert set(df["task"]) == {"tatoeba"} and {r["task"] for r in pq} == {"tatoeba"}
    with pytest.raises(ValueError, match="no run for task"):
        evaluate_runs({}, [t1], META)


def test_aggregate_seeds_groups_over_seeds_only():
    rows = []
    for seed, value in enumerate([0.5, 0.6, 0.7]):
        meta = {**META, "run_id": f"r{seed}", "seed": seed}
        rows.append(
            {
                **meta,
                "task": "t",
                "query_lang": "swh",
                "doc_lang": "eng",
                "scope": "language",
                "resource_class": "low",
                "metric": "AP",
                "value": value,
                "ci_low": 0.0,
                "ci_high": 1.0,
                "n_queries": 10,
            }
        )
    zero_shot = {**rows[0], "method": "none", "k_langs": None, "budget": None, "value": 0.2}
    out = aggregate_seeds(pd.DataFrame([*rows, zero_shot]))
    assert len(out) == 2
    opt = out[out.method == "optical"].iloc[0]
    assert opt["mean"] == pytest.approx(0.6) and opt["n_seeds"] == 3
    assert out[out.method == "none"].iloc[0]["n_seeds"] == 1


# ========================================================================= result I/O
def sample_rows():
    per_query = per_query_metrics(HAND_RUN, HAND_QRELS)
    rows = result_rows(META, make_task(HAND_QRELS), per_query, n_boot=50)
    zero = {**META, "run_id": "r1", "method": "none", "k_langs": None, "budget": None}
    rows += result_rows(zero, make_task(HAND_QRELS), per_query, resource_class="low", n_boot=50)
    return rows


@pytest.mark.parametrize("suffix", [".json", ".csv", ".parquet"])
def test_write_read_round_trip(tmp_path, suffix):
    rows = sample_rows()
    path = write_results(rows, tmp_path / f"res{suffix}")
    back = read_results(path)
    expected = ev._coerce(pd.DataFrame(rows)[list(RESULT_COLUMNS)])
    pd.testing.assert_frame_equal(back, expected, check_exact=False, rtol=1e-15)
    assert back["k_langs"].isna().sum() == 4 and str(back["layers"].dtype) == "Int64"
    assert [p.name for p in tmp_path.iterdir()] == [f"res{suffix}"]  # no temp files left


def test_read_results_directory_and_per_query_table(tmp_path):
    rows = sample_rows()
    write_results(rows[:4], tmp_path / "a.json")
    write_results(rows[4:], tmp_path / "b.parquet")
    (tmp_path / "notes.txt").write_text("ignored")
    df = read_results(tmp_path)
    assert len(df) == 8 and set(df["run_id"]) == {"r0", "r1"}
    pq = per_query_metrics(HAND_RUN, HAND_QRELS)
    pq_rows = ev.per_query_rows(META, make_task(HAND_QRELS), pq)
    write_results(pq_rows, tmp_path / "pq" / "r0.csv", columns=PER_QUERY_COLUMNS)
    back = read_results(tmp_path / "pq", columns=PER_QUERY_COLUMNS)
    assert len(back) == 20 and back["qid"].dtype == "string"
    with pytest.raises(FileNotFoundError, match="no result files"):
        read_results(tmp_path / "pq", pattern="*.json")


def test_per_query_parquet_is_compact_and_reads_back_the_same_rows(tmp_path):
    rng = np.random.default_rng(0)
    rows = [{"run_id": "v2-x", "task": t, "query_lang": lang, "doc_lang": "eng", "metric": m,
             "qid": f"{t}-{lang}-q{i}", "protocol": p,
             "value": float(rng.choice([0.0, 0.387, 0.431, 0.5, 0.631, 1.0]))}
            for t in ("flores-x-eng", "flores-eng-x") for lang in ("swh", "amh", "yor")
            for p in ("student", "teacher") for m in ("nDCG@10", "RR@10") for i in range(300)]
    rng.shuffle(rows)
    path = write_results(rows, tmp_path / "pq.parquet", columns=PER_QUERY_COLUMNS)
    back = read_results(path, columns=PER_QUERY_COLUMNS)
    keys = ["task", "query_lang", "qid", "protocol", "metric"]
    expected = ev._coerce(pd.DataFrame(rows)[list(back.columns)]).sort_values(
        keys, ignore_index=True)
    pd.testing.assert_frame_equal(back.sort_values(keys, ignore_index=True), expected)
    assert back["protocol"].dtype == expected["protocol"].dtype  # no categoricals leak out
    plain = tmp_path / "plain.parquet"
    pd.DataFrame(rows).to_parquet(plain, index=False)
    assert path.stat().st_size < 0.7 * plain.stat().st_size
    # the query ids are delta-encoded byte arrays, every other text column a dictionary
    import pyarrow.parquet as papq

    chunks = papq.ParquetFile(path).metadata.row_group(0)
    encodings = {chunks.column(i).path_in_schema: chunks.column(i).encodings
                 for i in range(chunks.num_columns)}
    assert "DELTA_BYTE_ARRAY" in encodings["qid"]
    assert "RLE_DICTIONARY" in encodings["task"]


def test_missing_columns_are_named(tmp_path):
    bad = pd.DataFrame(sample_rows()).drop(columns=["ci_low", "n_queries"])
    with pytest.raises(ValueError, match="ci_low, n_queries"):
        write_results(bad, tmp_path / "bad.csv")
    bad.to_csv(tmp_path / "bad.csv", index=False)
    with pytest.raises(ValueError, match=r"bad\.csv: missing result column\(s\) ci_low, n_queries"):
        read_results(tmp_path / "bad.csv")
    with pytest.raises(ValueError, match="unsupported results format"):
        write_results(sample_rows(), tmp_path / "res.xlsx")


@pytest.mark.parametrize("suffix", [".json", ".csv", ".parquet"])
def test_failed_write_leaves_old_file_intact_and_no_partial_file(tmp_path, monkeypatch, suffix):
    path = tmp_path / f"res{suffix}"
    write_results(sample_rows()[:2], path)
    before = path.read_bytes()
    rows = sample_rows()
    if suffix == ".json":
        rows[-1]["extra"] = object()  # json.dump fails half-way through the file
    else:
        if suffix == ".csv":
            real = pd.DataFrame.to_csv

            def half_then_fail(self, target, *args, **kwargs):
                real(self.iloc[:1], target, *args, **kwargs)  # something reaches the disk
                raise OSError("disk full")

            monkeypatch.setattr(pd.DataFrame, "to_csv", half_then_fail)
        else:
            real = ev._write_parquet

            def half_then_fail(df, target):
                real(df.iloc[:1], target)  # something reaches the disk
                raise OSError("disk full")

            monkeypatch.setattr(ev, "_write_parquet", half_then_fail)
    with pytest.raises((TypeError, OSError)):
        write_results(rows, path)
    assert path.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == [path.name]
    with pytest.raises((TypeError, OSError)):
        write_results(rows, tmp_path / f"new{suffix}")
    assert sorted(os.listdir(tmp_path)) == [path.name]
