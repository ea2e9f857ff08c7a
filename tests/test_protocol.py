"""Protocol v2: suites and protocols, Δ over the pristine student, collapse diagnostics,
the frozen-teacher token cache, the objective variants and the v2 settings."""

import math

import pandas as pd
import pytest
import torch

from optical_lib import experiment, multiway, protocol
from optical_lib.distill import DistillConfig, Distiller, TeacherStates, distill
from optical_lib.experiment import ExperimentConfig, validate
from optical_lib.models import load_encoder
from optical_lib.retrieval import EmbeddingCache
from optical_lib.tune import (
    _finished,
    _head,
    choose_epochs,
    choose_objective,
    choose_v2,
    read_sweep,
)


@pytest.fixture(scope="module")
def l2():
    return load_encoder("me5-small", 2)


@pytest.fixture(scope="module")
def minilm():
    return load_encoder("minilm-l6")


def small_suites(n=40):
    suites = protocol.suites(flores=("hau", "yor"), tatoeba=(), xquad=("deu",))
    return [_head(s, n) for s in suites]


# ------------------------------------------------------------------ diagnostics
def test_collapse_diagnostics_on_known_geometries():
    same = torch.ones(10, 4)
    d = protocol.collapse_diagnostics(same)
    assert d["mean_cos"] == pytest.approx(1.0)
    assert d["eff_rank"] == pytest.approx(1.0)
    basis = torch.eye(8)
    d = protocol.collapse_diagnostics(basis)
    assert d["mean_cos"] == pytest.approx(0.0, abs=1e-12)
    assert d["eff_rank"] == pytest.approx(8.0)
    # opposite pairs: mean cosine below zero
    assert protocol.collapse_diagnostics(torch.tensor([[1.0, 0], [-1.0, 0]]))["mean_cos"] == -1
    assert math.isnan(protocol.collapse_diagnostics(torch.ones(1, 3))["mean_cos"])


# ------------------------------------------------------------------ suites, protocols
def test_suites_and_which_side_the_teacher_encodes():
    suites = {s.name: s for s in protocol.suites(flores=("hau",), tatoeba=("swh",),
                                                 xquad=("deu",))}
    assert list(suites) == ["flores-x-eng", "flores-eng-x", "tatoeba-x-eng", "xquad-r-x-eng",
                            "xquad-r-eng-eng"]
    student, teacher = object(), object()
    assert protocol.encoders_for(suites["flores-x-eng"], "teacher", student, teacher) == (
        student, teacher)
    assert protocol.encoders_for(suites["flores-eng-x"], "teacher", student, teacher) == (
        teacher, student)
    assert suites["xquad-r-eng-eng"].protocols == ("student",)
    with pytest.raises(ValueError, match="no non-English side"):
        protocol.encoders_for(suites["xquad-r-eng-eng"], "teacher", student, teacher)
    with pytest.raises(ValueError, match="needs the frozen teacher"):
        protocol.encoders_for(suites["flores-x-eng"], "teacher", student, None)
    # sentence matching is symmetric (query prompt on both sides); XQuAD-R is not
    assert suites["flores-x-eng"].prompts == ("query", "query")
    assert suites["xquad-r-x-eng"].prompts == ("query", "passage")


def meta(run_id="r"):
    return {"run_id": run_id, "profile": "offline", "model": "me5-small", "layers": 2,
            "nonemb_params": 0, "method": "optical", "k_langs": 2, "budget": 8, "seed": 0}


def test_delta_is_student_minus_the_pristine_student_per_query(l2, minilm):
    suites = small_suites()
    cache = EmbeddingCache()
    # a student identical to its baseline has Δ = 0 on every query, under both protocols
    rows, pq = protocol.evaluate_v2(meta(), l2, minilm, l2, suites, cache, n_boot=20)
    pq = pd.DataFrame(pq)
    assert set(pq["protocol"]) == {"student", "teacher"}
    assert (pq["delta"] == 0).all() and (pq["value"] == pq["baseline"]).all()
    # eng->X rows are filed under the X language, like X->eng rows
    flores = pq[pq["task"].str.startswith("flores")]
    assert set(flores["query_lang"]) == {"hau", "yor"}
    deltas = pd.DataFrame(rows)
    deltas = deltas[deltas["metric"].str.startswith(protocol.DELTA)]
    assert set(deltas["scope"]) >= {"language", "macro"} and (deltas["value"] == 0).all()
    # a different student: Δ per query is exactly value - baseline
    other = load_encoder("me5-small", 3)
    rows, pq = protocol.evaluate_v2(meta(), other, minilm, l2, suites, EmbeddingCache(),
                                    n_boot=20)
    pq = pd.DataFrame(pq)
    assert (pq["delta"] == pq["value"] - pq["baseline"]).all()
    assert (pq["delta"] != 0).any()
    # the macro Δ row is the mean over languages of the per-language mean Δ
    rows = pd.DataFrame(rows)
    sel = (rows["task"] == "flores-x-eng") & (rows["protocol"] == "teacher")
    macro = rows[sel & (rows["scope"] == "macro") & (rows["metric"] == "delta:nDCG@10")]
    part = pq[(pq["task"] == "flores-x-eng") & (pq["protocol"] == "teacher")
              & (pq["metric"] == "nDCG@10")]
    assert macro["value"].item() == pytest.approx(
        part.groupby("query_lang")["delta"].mean().mean())
    # diagnostics: one row per language and statistic, from the student's vectors
    diag = rows[rows["scope"] == "diagnostic"]
    assert set(diag["metric"]) == {"mean_cos", "eff_rank"}
    assert diag["value"].between(-1, 400).all()


def test_a_student_encodes_each_text_set_once_per_evaluation(l2, minilm, monkeypatch):
    # FLORES-200's X sentences are the queries of X->eng and the documents of eng->X, and
    # the English ones the other way round, all with the query prompt: each is encoded once
    suites = [s for s in small_suites() if s.name.startswith("flores")]
    student = load_encoder("me5-small", 2)
    student.cache_key = None  # a distilled student: nothing of it is on disk
    calls = []
    encode = student.encode
    monkeypatch.setattr(student, "encode", lambda texts, *a, **k: calls.append(
        tuple(texts)) or encode(texts, *a, **k))
    rows, pq = protocol.evaluate_v2(meta(), student, minilm, l2, suites, EmbeddingCache(),
                                    n_boot=20)
    assert len(calls) == len(set(calls)) == 3  # hau, yor, English
    # and the same numbers as an evaluation that shares nothing between the directions
    fresh = []
    for suite in suites:
        part, _ = protocol.evaluate_v2(meta(), student, minilm, l2, [suite], EmbeddingCache(),
                                       n_boot=20)
        fresh += part
    key = ["task", "protocol", "query_lang", "doc_lang", "scope", "metric"]
    assert (pd.DataFrame(rows).set_index(key)["value"].sort_index()
            .equals(pd.DataFrame(fresh).set_index(key)["value"].sort_index()))


def test_bm25_is_evaluated_without_encoders():
    suites = small_suites(30)
    rows, pq = protocol.evaluate_v2(meta(), None, None, None, suites, EmbeddingCache(),
                                    n_boot=20, lexical=True)
    assert {r["protocol"] for r in rows} == {"lexical"}
    assert "delta" not in pd.DataFrame(pq)


# ------------------------------------------------------------------ teacher states
def test_teacher_states_equal_the_forward_pass_and_are_computed_once(l2, tmp_path):
    texts = ["A short sentence.", "A somewhat longer English sentence, with a clause.", "Hi"]
    states = TeacherStates(tmp_path)
    tokens, batch = states.batch(l2, texts, "query", 64)
    direct_batch = l2.tokenize(texts, "query", 64)
    with torch.no_grad():
        direct = l2.token_vectors(direct_batch)
    assert torch.equal(batch["attention_mask"], direct_batch["attention_mask"])
    mask = batch["attention_mask"].bool()
    assert torch.allclose(tokens[mask], direct[mask], atol=1e-5)
    assert states.computed == 3
    states.batch(l2, texts[::-1], "query", 64)
    assert states.computed == 3 and states.reused == 3
    # another store (another process) reads them from disk
    again = TeacherStates(tmp_path)
    tokens2, _ = again.batch(l2, texts, "query", 64)
    assert again.computed == 0 and torch.equal(tokens2, tokens)


def pairs(n=16):
    sample = multiway.sample_fixed_content(2, n, 0)
    return sample.pairs


def test_distillation_encodes_each_english_sentence_once_across_epochs(l2):
    config = DistillConfig(method="optical", student_layers=2, epochs=2, batch_size=8, lr=1e-4)
    states = TeacherStates()
    distill(config, pairs(), student=load_encoder("me5-small", 2), teacher=l2,
            teacher_states=states, progress=False)
    assert states.computed == 16 and states.reused == 16


@pytest.mark.parametrize("method,centred,mse", [("optical", True, 0.0),
                                                ("optical-plain", False, 0.0),
                                                ("optical+mse", True, 1.0),
                                                ("mse", True, 1.0)])
def test_objective_variants(l2, method, centred, mse):
    config = DistillConfig(method=method, student_layers=2, batch_size=4)
    assert config.centred == centred and config.effective_mse_weight == mse
    dist = Distiller(config, student=load_encoder("me5-small", 2), teacher=l2)
    parts = dist.loss([p.src_text for p in pairs(4)], [p.tgt_text for p in pairs(4)])
    assert ("ot" in parts) == (method != "mse") and ("mse" in parts) == (mse > 0)
    assert torch.isfinite(parts["loss"])


def test_plain_and_centred_costs_differ(l2):
    src, tgt = [p.src_text for p in pairs(4)], [p.tgt_text for p in pairs(4)]
    losses = {}
    for method in ("optical", "optical-plain"):
        dist = Distiller(DistillConfig(method=method, student_layers=2),
                         student=load_encoder("me5-small", 2), teacher=l2)
        losses[method] = float(dist.loss(src, tgt)["ot"].detach())
    assert losses["optical"] != pytest.approx(losses["optical-plain"], rel=1e-3)


def test_an_independent_teacher_with_another_tokenizer_trains(minilm):
    config = DistillConfig(method="optical", student_layers=2, batch_size=4, max_steps=2,
                           teacher="minilm-l6")
    student, history = distill(config, pairs(8), student=load_encoder("me5-small", 2),
                               teacher=minilm, progress=False)
    assert len(history) == 2 and history["loss"].map(math.isfinite).all()


def test_on_epoch_is_called_after_each_epoch_in_eval_mode(l2):
    seen = []
    config = DistillConfig(method="optical", student_layers=2, epochs=2, batch_size=8)
    distill(config, pairs(), student=load_encoder("me5-small", 2), teacher=l2, progress=False,
            on_epoch=lambda epoch, s: seen.append((epoch, s.model.training)))
    assert seen == [(0, False), (1, False)]


# ------------------------------------------------------------------ v2 settings
def v2(**kw):
    return ExperimentConfig.from_parameters(design="v2", **kw)


def test_v2_run_ids_and_defaults():
    a = v2(layers=3, method="optical", k_langs=8, draw=0)
    assert a.run_id.startswith("v2-L3-optical-k8-d0-s0-tme5-")
    assert a.budget == experiment.V2_BUDGET
    assert a.eval_tatoeba == multiway.EVAL_LANGS_TATOEBA_V2
    assert a.run_id != v2(layers=3, method="optical", k_langs=8, draw=1).run_id
    assert a.run_id != v2(layers=3, method="optical", k_langs=8, teacher="minilm-l6").run_id
    # a zero-shot baseline does not depend on training parameters, but on its teacher
    z = v2(layers=3, method="none", k_langs=8, draw=3)
    assert z.run_id == v2(layers=3, method="none").run_id
    assert z.run_id != v2(layers=3, method="none", teacher="minilm-l6").run_id
    # BM25 depends on neither encoder nor seed
    assert v2(method="bm25", layers=2).run_id == v2(method="bm25", layers=6, seed=3).run_id
    assert v2(method="optical+mse", layers=2).run_id.startswith("v2-L2-optical-mse-")
    # v1 ids do not see the v2 fields
    assert ExperimentConfig.from_parameters(layers=3).run_id == ExperimentConfig(
        training=experiment._default_training()).run_id


@pytest.mark.parametrize("params,message", [
    ({"teacher": "bert"}, "Unknown teacher"),
    ({"eval_flores": ["lug"]}, "development languages are for tuning only"),
    ({"eval_flores": ["xxx"]}, "Unknown FLORES-200"),
    ({"k_langs": 3}, "divisible by k=3"),
    ({"model": "minilm-l6", "method": "optical"}, "is a teacher"),
    ({"split": "test"}, "Unknown split"),
    ({"eval_tatoeba": ["deu"]}, "not v2 evaluation"),
])
def test_v2_validation_errors(params, message):
    with pytest.raises(ValueError, match=message):
        validate(v2(**{"layers": 2, "method": "optical", **params}))


def test_v1_refuses_the_v2_methods():
    with pytest.raises(ValueError, match="design v2 only"):
        validate(ExperimentConfig.from_parameters(layers=2, method="optical-plain"))


# ------------------------------------------------------------------ tuning rules
def test_tuning_rules_pick_the_interior_best_and_the_converged_epoch():
    rows = []
    for lr, scale in ((1e-4, 0.5), (1e-3, 1.0), (1e-2, -1.0)):
        for epoch, value in ((1, 0.05), (2, 0.10), (4, 0.115), (8, 0.12)):
            for seed in (0, 1):
                rows.append({"teacher": "me5-small", "layers": 3, "lr": lr, "seed": seed,
                             "epoch": epoch, "delta": scale * value})
    table = pd.DataFrame(rows)
    choice = choose_v2(table).iloc[0]
    assert (choice["lr"], choice["epochs"], choice["lr_on_edge"]) == (1e-3, 8, False)
    assert bool(choice["epoch_on_edge"])
    epochs = choose_epochs(table[table["lr"] == 1e-3]).iloc[0]
    assert epochs["epochs"] == 4 and not epochs["still_rising"]


def test_sweep_tables_keep_objectives_apart_and_know_finished_runs(tmp_path):
    rows = []
    for method, scale in (("optical", 1.0), ("optical+mse", 2.0)):
        for lr in (1e-3, 3e-3):
            for seed, last in ((0, 8), (1, 4)):
                for epoch in (2, 4, 8):
                    if epoch <= last:
                        rows.append({"teacher": "me5-small", "method": method, "layers": 2,
                                     "lr": lr, "seed": seed, "epoch": epoch,
                                     "delta": scale * epoch * (1 if lr == 1e-3 else 0.5)})
    table = pd.DataFrame(rows)
    choice = choose_v2(table).set_index("method")
    assert set(choice.index) == {"optical", "optical+mse"}
    assert choice.loc["optical+mse", "dev_delta"] == 2 * choice.loc["optical", "dev_delta"]
    assert len(choose_epochs(table)) == 4  # per (teacher, method, depth, lr)
    finished = _finished(table, 8)
    assert finished == {("me5-small", m, 2, lr, 0) for m in ("optical", "optical+mse")
                        for lr in (1e-3, 3e-3)}
    legacy = tmp_path / "legacy.csv"
    table[table["method"] == "optical"].drop(columns="method").to_csv(legacy, index=False)
    assert set(read_sweep(legacy)["method"]) == {"optical"}
    assert set(read_sweep(legacy)["precision"]) == {"fp32"}


def test_a_sweep_cut_short_is_judged_where_every_seed_got_and_said_so():
    from optical_lib import report

    rows = []
    for lr, scale in ((1e-4, 0.5), (1e-3, 1.0), (1e-2, None)):
        for seed, last in ((0, 8), (1, 4)):
            for epoch in (1, 2, 4, 8):
                if epoch <= last:
                    delta = -0.05 if scale is None else scale * epoch / 100
                    rows.append({"teacher": "me5-small", "method": "optical+mse", "layers": 2,
                                 "lr": lr, "seed": seed, "epoch": epoch, "delta": delta})
    rows.append({**rows[-1], "seed": 0, "epoch": 8, "lr": 1e-4, "delta": 9.0})  # seed 0 only
    table = pd.DataFrame(rows)
    choice = choose_v2(table).iloc[0]
    assert (choice["lr"], choice["epochs"]) == (1e-3, 4)  # epoch 8 had one seed: left out
    assert bool(choice["epoch_on_edge"]) and not bool(choice["lr_on_edge"])
    text = report.tuning_sentences(table)
    assert "lr 0.001 and 4 epochs" in text and "not converged" in text
    assert "Learning rate 0.01 collapse" in text
    assert "first evaluated epoch" not in text
    # a rate whose dev Δ only falls after the first evaluation: said, not hidden
    falling = table.assign(delta=lambda t: 0.05 - t["epoch"] / 1000)
    text = report.tuning_sentences(falling[falling["lr"] == 1e-4])
    assert "and 1 epoch (" in text and "highest at the first evaluated epoch" in text


def test_tuning_tables_say_which_device_each_setting_trained_on():
    from optical_lib import report

    rows = [{"teacher": "minilm-l6", "method": "optical+mse", "layers": d, "lr": 1e-3,
             "seed": s, "epoch": e, "task": "flores-x-eng", "protocol": "student",
             "delta": e / 100, "device": dev}
            for d, devices in ((3, ("cuda", "cuda")), (6, ("cpu", "cuda")))
            for s, dev in enumerate(devices) for e in (4, 8)]
    table = pd.DataFrame(rows)
    grid = report.sweep_grid(table).set_index("layers")
    assert grid.loc[3, "device"] == "cuda" and grid.loc[6, "device"] == "cpu+cuda"
    conv = report.convergence_table(table).set_index(["layers", "epoch"])
    assert conv.loc[(6, 8), "device"] == "cpu+cuda" and conv.loc[(3, 4), "device"] == "cuda"
    # tables from before the device column stay as they were
    assert "device" not in report.sweep_grid(table.drop(columns="device")).columns


def test_the_convergence_check_settles_the_epochs_only_with_finished_seeds():
    from optical_lib.tune import with_convergence

    sweep = pd.DataFrame([{"teacher": "me5-small", "method": "optical+mse", "layers": 2,
                           "lr": 2e-3, "seed": s, "epoch": e, "delta": e / 100}
                          for s in (0, 1) for e in (4, 8, 12)])
    choice = choose_v2(sweep)
    assert choice.iloc[0]["epochs"] == 12 and bool(choice.iloc[0]["epoch_on_edge"])

    def check(curve, seeds=(0, 1), lr=2e-3):
        return pd.DataFrame([{"teacher": "me5-small", "method": "optical+mse", "layers": 2,
                              "lr": lr, "seed": s, "epoch": e, "delta": v}
                             for s in seeds for e, v in curve])

    plateau = [(4, .04), (8, .08), (12, .10), (16, .125), (24, .128)]
    settled = with_convergence(choice, check(plateau)).iloc[0]
    assert (settled["epochs"], settled["epochs_from"], settled["check_epochs"]) == \
        (16, "convergence", 24)
    assert not settled["epoch_on_edge"] and settled["dev_delta"] == pytest.approx(.125)
    rising = with_convergence(choice, check([(12, .12), (16, .14), (24, .17)])).iloc[0]
    assert rising["epochs"] == 24 and rising["epoch_on_edge"]
    # one seed finished (the other cut short), or another learning rate: the sweep stands
    cut = pd.concat([check(plateau, seeds=(0,)), check(plateau[:2], seeds=(1,))])
    for conv in (cut, check(plateau, lr=6e-3), None):
        kept = with_convergence(choice, conv).iloc[0]
        assert (kept["epochs"], kept["epochs_from"]) == (12, "sweep")


def test_the_study_objective_is_the_one_the_rule_picks_on_the_committed_ablation():
    from optical_lib import grid, report

    rows, missing = report.load_profile("results", "ablation")
    if missing:
        pytest.skip(f"the ablation is not finished ({len(missing)} settings)")
    assert choose_objective(rows).iloc[0]["method"] == grid.STUDY_METHOD


def test_learning_curve_runs_take_at_least_the_tuned_steps_and_one_pass():
    from optical_lib import grid, multiway
    from optical_lib.experiment import tuned_v2

    epochs = {b: grid.curve_epochs(2, b) for b in grid.CURVE_BUDGETS}
    tuned = tuned_v2("me5-small", grid.STUDY_METHOD, 2).get("epochs", grid.CURVE_EPOCHS)
    assert epochs[1984] == tuned
    for budget, n in epochs.items():
        size = multiway.pool_size() if budget == multiway.WHOLE_POOL else budget
        assert n >= 1 and (n * size >= 0.5 * epochs[1984] * 1984)
    assert epochs[multiway.WHOLE_POOL] == 1


def test_objective_rule_takes_the_best_mean_dev_delta_over_depths_and_protocols():
    def row(method, layers, protocol, value, split="dev", metric="delta:nDCG@10"):
        return {"scope": "macro", "metric": metric, "split": split, "method": method,
                "layers": layers, "protocol": protocol, "task": "flores-x-eng", "value": value}

    rows = [row(m, n, p, v + 0.01 * n) for m, v in (("optical", 0.2), ("mse", 0.25))
            for n in (2, 3) for p in ("student", "teacher")]
    rows += [row("optical", 2, "student", 9.0, split="eval"),  # never judged on evaluation
             row("mse", 2, "student", 9.0, metric="nDCG@10"),
             row("none", 2, "student", 9.0)]
    table = choose_objective(pd.DataFrame(rows))
    assert table["method"].tolist() == ["mse", "optical"] and table["chosen"].tolist() == [
        True, False]
    assert table["mean_dev_delta"].iloc[0] == pytest.approx(0.275)
    assert table["depths"].iloc[0] == "2, 3"
    with pytest.raises(ValueError, match="different depths"):
        choose_objective(pd.DataFrame(rows + [row("mse", 6, "student", 0.3)]))
    with pytest.raises(ValueError, match="has the ablation run"):
        choose_objective(pd.DataFrame(rows[-3:]))


# ------------------------------------------------------------------ v2 profiles, report
@pytest.mark.parametrize("profile", ["baselines", "ablation", "curve"])
def test_v2_profiles_are_valid_settings_with_distinct_ids(profile):
    from optical_lib import grid

    configs = [grid.config_of(p) for p in grid.profile_settings(profile)]
    for config in configs:
        validate(config)
        assert config.design == "v2"
    assert len({c.run_id for c in configs}) == len(configs)
    if profile == "ablation":
        assert {c.split for c in configs} == {"dev"}  # never judged on evaluation data
        assert {c.method for c in configs} == {"none", "optical", "optical-plain", "mse",
                                               "optical+mse"}


def synthetic_rows():
    rows = []
    for layers in (2, 3):
        for method in ("none", "optical", "optical-plain"):
            base = {"run_id": f"{layers}{method}", "layers": layers, "method": method,
                    "model": "me5-small", "teacher": "me5-small"}
            for proto in ("student", "teacher"):
                for task in ("flores-x-eng", "flores-eng-x"):
                    value = 0.1 * layers + (0.05 if method == "optical" else 0.0)
                    rows.append({**base, "task": task, "protocol": proto, "scope": "macro",
                                 "metric": "nDCG@10", "value": value})
                    if method != "none":
                        rows.append({**base, "task": task, "protocol": proto,
                                     "scope": "macro", "metric": "delta:nDCG@10",
                                     "value": 0.05 if method == "optical" else -0.1})
            for stat, value in (("mean_cos", 0.99 if method == "optical-plain" else 0.8),
                                ("eff_rank", 3.0 if method == "optical-plain" else 150.0)):
                rows.append({**base, "task": "flores-x-eng", "protocol": "student",
                             "scope": "diagnostic", "metric": stat, "value": value})
    rows.append({"run_id": "bm25", "layers": None, "method": "bm25", "model": "me5-small",
                 "teacher": None, "task": "flores-x-eng", "protocol": "lexical",
                 "scope": "macro", "metric": "nDCG@10", "value": 0.35})
    return pd.DataFrame(rows)


def test_report_tables_read_the_rows_they_are_given():
    from optical_lib import report

    rows = synthetic_rows()
    table = report.baselines_table(rows[rows["method"].isin(["none", "bm25"])])
    assert list(table.index) == ["BM25", "L2 zero-shot", "L3 zero-shot"]
    assert table.loc["BM25", "FLORES X→eng"] == 0.35
    assert table.loc["L3 zero-shot", "FLORES eng→X"] == pytest.approx(0.3)
    ablation = report.ablation_table(rows[rows["method"] != "bm25"])
    plain = ablation[(ablation["layers"] == 2) & (ablation["objective"] == "plain OPTICAL")]
    assert plain["mean_cos"].item() == 0.99 and plain["eff_rank"].item() == 3.0
    assert plain["Δ nDCG@10 (teacher protocol)"].item() == -0.1
    zero = ablation[ablation["objective"] == "zero-shot"]
    assert len(zero) == 2 and zero["Δ nDCG@10 (student protocol)"].isna().all()


def test_convergence_figure_draws_the_mean_dev_delta():
    from optical_lib import plots

    table = pd.DataFrame([{"teacher": "me5-small", "layers": 2, "lr": 1e-3, "seed": 0,
                           "epoch": e, "task": t, "protocol": p, "delta": 0.01 * e}
                          for e in (1, 2, 4) for t in ("a", "b") for p in ("student", "x")])
    fig = plots.convergence(table)
    mean_line = [line for line in fig.axes[0].lines if line.get_label() == "mean"][0]
    assert list(mean_line.get_ydata()) == pytest.approx([0.01, 0.02, 0.04])
    plots.close(fig)


def test_the_learning_curve_pool_is_nested_and_leaves_out_evaluation_english():
    small, large = multiway.sample_pool(500, 0), multiway.sample_pool(2000, 0)
    assert large.pairs[:500] == small.pairs
    assert multiway.sample_pool(500, 1).pairs != small.pairs
    banned = multiway.evaluation_english()
    assert not any(" ".join(p.tgt_text.split()).lower() in banned for p in large.pairs)
    whole = multiway.sample_pool(multiway.WHOLE_POOL, 0)
    assert whole.budget == len(whole.pairs) > 100_000 and whole.n_dropped_english > 0
    assert whole.record()["english_fixed"] is False
    with pytest.raises(ValueError, match="the pool has"):
        multiway.sample_pool(10**7, 0)
    config = v2(layers=2, method="optical", sample="pool", budget=7936)
    validate(config)
    assert "pool, 7936 pairs" in config.title and "-pool7936-" in config.run_id


def test_teacher_states_do_not_depend_on_the_batch_that_computed_them(l2):
    """Under bf16 a forward pass rounds a text's vectors differently at another padded
    length; the store pads every text to the full length, so they are the same."""
    text = "The committee approved the new budget on Tuesday."
    long = "A considerably longer sentence that pads the short one a lot, " * 3
    precision = l2.precision
    l2.precision = "bf16"
    try:
        batch = l2.tokenize([text, long], "query", 64)
        with torch.no_grad():
            alone = l2.token_vectors(l2.tokenize([text], "query", 64))[0]
            padded = l2.token_vectors(batch)[0, : alone.shape[0]]
        assert not torch.equal(alone, padded)  # what the store must not depend on
        first = TeacherStates().states(l2, [text], "query", 64)[0]
        second = TeacherStates().states(l2, [long, text, "Hi"], "query", 64)[1]
    finally:
        l2.precision = precision
    assert torch.equal(first, second)


def test_teacher_states_memory_limit_recomputes_beyond_it(l2):
    states = TeacherStates(memory_limit=1)
    texts = ["one sentence", "another sentence"]
    states.batch(l2, texts, "query", 64)
    states.batch(l2, texts, "query", 64)
    assert states.computed == 3 and states.reused == 1


def test_gap_share_is_delta_over_the_teachers_lead():
    from optical_lib import report

    def row(run_id, method, model, layers, metric, value, protocol="student"):
        return {"run_id": run_id, "method": method, "model": model, "layers": layers,
                "teacher": "me5-small", "task": "flores-x-eng", "protocol": protocol,
                "scope": "macro", "metric": metric, "value": value}

    rows = pd.DataFrame([
        row("t", "none", "me5-small", 12, "nDCG@10", 0.6),
        row("z", "none", "me5-small", 3, "nDCG@10", 0.2),
        row("s", "optical", "me5-small", 3, "nDCG@10", 0.3),
        row("s", "optical", "me5-small", 3, "delta:nDCG@10", 0.1),
        row("s", "optical", "me5-small", 3, "nDCG@10", 0.58, "teacher"),
        row("s", "optical", "me5-small", 3, "delta:nDCG@10", 0.5, "teacher"),
    ])
    share = report.gap_share(rows).set_index("protocol")
    assert share.loc["student", "share"] == pytest.approx(0.1 / 0.4)
    # under the teacher protocol Z = 0.08 and the lead 0.52
    assert share.loc["teacher", "share"] == pytest.approx(0.5 / 0.52)
    rows.loc[0, "value"] = 0.22  # a teacher barely ahead: no share
    assert math.isnan(report.gap_share(rows).set_index("protocol").loc["student", "share"])


def test_ablation_sentences_are_computed_from_the_table():
    from optical_lib import report

    table = report.ablation_table(synthetic_rows().query("method != 'bm25'"))
    text = report.ablation_sentences(table)
    assert "L2, student protocol: the largest dev Δ is centred OPTICAL's (+0.050)" in text
    assert "effective rank of the sentence vectors from 150 (zero-shot) to 3" in text
    assert report.ablation_sentences(None) == ""


def _curve_fixture():
    """Learning-curve rows of one depth (budgets 31,744, whole pool = 0, 1,984; OPTICAL's
    protocol 1 above the student protocol) and its baselines (zero-shot .05, BM25 .2)."""
    def row(method, layers, budget, protocol, task, value):
        return {"scope": "macro", "metric": "nDCG@10", "method": method, "model": "me5-small",
                "layers": layers, "budget": budget, "protocol": protocol, "task": task,
                "teacher": "me5-small", "value": value}

    curve = pd.DataFrame([row("optical+mse", 2, b, p, "flores-x-eng", v + (p == "teacher"))
                          for b, v in ((31744, 0.3), (0, 0.4), (1984, 0.1))
                          for p in ("student", "teacher")])
    base = pd.DataFrame([row("none", 2, None, p, "flores-x-eng", 0.05) for p in
                         ("student", "teacher")]
                        + [{**row("bm25", None, None, "lexical", "flores-x-eng", 0.2)}])
    return curve, base


def test_the_learning_curve_table_orders_budgets_under_their_zero_shot_model():
    from optical_lib import report

    curve, base = _curve_fixture()
    table = report.curve_table(curve, base, "student")
    assert table.index.tolist() == ["BM25", "L2 zero-shot", "L2 · 1,984 pairs",
                                    "L2 · 31,744 pairs", "L2 · whole pool"]
    assert table.iloc[:, 0].tolist() == [0.2, 0.05, 0.1, 0.3, 0.4]
    assert report.curve_table(curve, base, "teacher").iloc[2:, 0].tolist() == [1.1, 1.3, 1.4]
    # as read from the result tables: budget is a nullable Int64 column (whole pool: 0)
    nullable = report.curve_table(curve.astype({"budget": "Int64"}), base, "student")
    assert nullable.index.tolist() == table.index.tolist()


def test_the_learning_curve_figure_puts_the_whole_pool_at_its_size_and_zero_shot_at_zero():
    from optical_lib import plots, report

    curve, base = _curve_fixture()
    points = report.curve_points(curve.astype({"budget": "Int64"}), base, pool_pairs=50_000)
    student = points[(points["protocol"] == "student")].set_index("pairs")["value"]
    assert student.to_dict() == {0.0: 0.05, 1984.0: 0.1, 31744.0: 0.3, 50000.0: 0.4}
    teacher = points[(points["protocol"] == "teacher")].set_index("pairs")["value"]
    assert teacher.to_dict() == {0.0: 0.05, 1984.0: 1.1, 31744.0: 1.3, 50000.0: 1.4}
    bm25 = points[points["system"] == "BM25"]
    assert bm25["value"].tolist() == [0.2] and bm25["layers"].isna().all()
    with pytest.raises(ValueError, match="whole pool"):
        report.curve_points(curve, base, pool_pairs=0)
    fig = plots.learning_curve(points)
    ax = fig.axes[0]
    # one solid and one dashed line for the depth, through the zero-shot point; BM25 flat
    lines = [line for line in ax.get_lines() if len(line.get_xdata()) == 4]
    assert sorted(line.get_linestyle() for line in lines) == ["-", "--"]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["0", "2k", "32k", "50k"]
    assert any(list(line.get_ydata()) == [0.2, 0.2] for line in ax.get_lines())
    plots.close(fig)
    empty = plots.learning_curve(points[points["system"] != "student"])
    assert "no finished learning-curve run" in [t.get_text() for t in empty.axes[0].texts]
    plots.close(empty)


def test_curve_sentences_say_where_each_depth_stands_against_bm25_within_the_rerun_spread():
    from optical_lib import report

    table = pd.DataFrame(
        {"XQuAD-R X→eng": [0.20, 0.05, 0.10, 0.205, 0.15, 0.10, 0.21, 0.30, 0.30, 0.31],
         "FLORES X→eng": [0.9] * 10},
        index=["BM25", "L2 zero-shot", "L2 · 1,984 pairs", "L2 · 7,936 pairs",
               "L2 · whole pool", "L3 zero-shot", "L3 · 7,936 pairs", "L12 zero-shot",
               "L12 · 1,984 pairs", "L12 · whole pool"])
    said = report.curve_sentences(table, tie=0.01)
    assert said == ("XQuAD-R X→eng (BM25 0.200): L2 level with it at 7,936 pairs, below it "
                    "at 1,984 pairs and the whole pool; best 0.205 (+0.005, 7,936 pairs). "
                    "L3 level with it at 7,936 pairs; best 0.210 (+0.010, 7,936 pairs). "
                    "L12 above it untrained (0.300, +0.100); above it at every budget; "
                    "best 0.310 (+0.110, the whole pool).")
    # without a tie band the smallest margin decides
    assert "L2 above it at 7,936 pairs, below it at 1,984 pairs and the whole pool" in \
        report.curve_sentences(table)
    assert report.curve_sentences(table.drop(index="BM25")) == ""


def test_curve_delta_sentences_place_each_run_by_its_own_paired_interval():
    from optical_lib import report

    def row(budget, value, low, high, layers=2, protocol="student"):
        return {"scope": "macro", "metric": "delta:nDCG@10", "method": "optical+mse",
                "model": "me5-small", "layers": layers, "budget": budget,
                "protocol": protocol, "task": "xquad-r-eng-eng", "teacher": "me5-small",
                "value": value, "ci_low": low, "ci_high": high}

    curve = pd.DataFrame([row(0, -0.01, -0.03, 0.01), row(1984, 0.08, 0.06, 0.10),
                          row(7936, 0.09, 0.07, 0.11), row(1984, -0.02, -0.03, -0.01, 12),
                          row(0, 0.5, 0.4, 0.6, 2, "teacher")]).astype({"budget": "Int64"})
    said = report.curve_delta_sentences(curve)
    assert said == ("XQuAD-R eng→eng, each run against its own zero-shot model (student "
                    "protocol): L2 above it at 1,984 and 7,936 pairs, not distinguishable "
                    "from it at the whole pool; at the whole pool Δ -0.010 [-0.030, +0.010]. "
                    "L12 below it at 1,984 pairs; at 1,984 pairs Δ -0.020 [-0.030, -0.010].")
    assert report.curve_delta_sentences(curve.iloc[:0]) == ""


def test_rerun_spread_is_the_largest_macro_move_of_any_rerun(tmp_path):
    from optical_lib import report
    from optical_lib.paths import PROJECT_ROOT

    assert report.rerun_spread(tmp_path) is None
    results = PROJECT_ROOT / "results"
    moved = [report.rerun_table(results, run_id, label)["rerun − published"].abs().max()
             for run_id, label in report.reruns(results)]
    assert moved and report.rerun_spread(results) == pytest.approx(max(moved))


def test_curve_rows_say_where_and_under_which_teacher_state_rule_they_ran(tmp_path):
    import json

    from optical_lib import report

    runs = {"a": (2, 1984, "cpu", {}), "b": (2, 0, "cpu", {"teacher_states": "fixed-length"}),
            "c": (12, 7936, "cuda", {})}
    for run_id, (_, _, device, prov) in runs.items():
        (tmp_path / "runs" / run_id).mkdir(parents=True)
        (tmp_path / "runs" / run_id / "setting.json").write_text(
            json.dumps({"config": {"device": device}, "provenance": prov}))
    curve = pd.DataFrame([{"run_id": r, "layers": n, "budget": b}
                          for r, (n, b, _, _) in runs.items() for _ in range(2)])
    assert report.curve_devices(tmp_path, curve) == {
        "cpu": ["L2 · 1,984 pairs", "L2 · whole pool"], "cuda": ["L12 · 7,936 pairs"]}
    assert report.curve_devices(tmp_path, curve, "teacher_states") == {
        "before": ["L2 · 1,984 pairs", "L12 · 7,936 pairs"], "fixed-length": ["L2 · whole pool"]}
    # as read from the result tables (nullable Int64 budget)
    assert report.curve_devices(tmp_path, curve.astype({"budget": "Int64"})) == \
        report.curve_devices(tmp_path, curve)


def test_a_rerun_is_compared_with_the_published_run(tmp_path):
    import json
    import shutil

    from optical_lib import report

    run_id = "v2-L2-optical-mse-pool1984-d0-s0-tme5-82ff6594"  # committed, run on the CPU
    (tmp_path / "runs").mkdir()
    shutil.copytree(f"results/runs/{run_id}", tmp_path / "runs" / run_id)
    rows = json.loads((tmp_path / "runs" / run_id / "results.json").read_text())
    for row in rows:  # the rerun: one language of FLORES X→eng (student) moves by +0.03
        if (row["task"], row["protocol"], row["metric"]) != ("flores-x-eng", "student",
                                                            "nDCG@10"):
            continue
        if row["scope"] == "language" and row["query_lang"] == "hau":
            row["value"] += 0.03
        elif row["scope"] == "macro":
            row["value"] += 0.001
    rerun = tmp_path / "reruns" / f"{run_id}--cuda"
    rerun.mkdir(parents=True)
    (rerun / "results.json").write_text(json.dumps(rows))
    assert report.reruns(tmp_path) == [(run_id, "cuda")]
    table = report.rerun_table(tmp_path, run_id, "cuda")
    moved = table.loc[("FLORES X→eng", "student")]
    assert moved["rerun − published"] == pytest.approx(0.001)
    assert moved["largest difference of one language"] == pytest.approx(0.03)
    still = table.drop(("FLORES X→eng", "student"))
    assert (still["rerun − published"] == 0).all()
    assert report.run_device(tmp_path, run_id) == "cpu"
    assert (still["largest difference of one language"] == 0).all()
    assert table.index.get_level_values("protocol")[:2].tolist() == ["student", "OPTICAL's"]
    lost = next(i for i, r in enumerate(rows)
                if r["scope"] == "language" and r["metric"] == "nDCG@10")
    (rerun / "results.json").write_text(json.dumps(rows[:lost] + rows[lost + 1:]))
    with pytest.raises(ValueError, match="same"):
        report.rerun_table(tmp_path, run_id, "cuda")
    (tmp_path / "reruns" / f"{run_id}--somewhere").mkdir()
    with pytest.raises(ValueError, match="unknown rerun label"):
        report.reruns(tmp_path)

def test_the_report_command_answers_help_without_executing_the_page(monkeypatch, capsys):
    from optical_lib import report

    def refuse(*args, **kwargs):
        raise AssertionError("--help executed the protocol page")

    monkeypatch.setattr(report, "execute", refuse)
    with pytest.raises(SystemExit) as exit_:
        report.main(["--help"])
    assert exit_.value.code == 0
    assert "book/protocol.ipynb" in capsys.readouterr().out


def test_a_tuning_run_cut_short_resumes_from_its_checkpoint(tmp_path, monkeypatch):
    """A convergence run killed during an evaluation keeps the epochs its checkpoint holds
    (their rows and their training seconds) and ends with the uncut run's rows."""
    from optical_lib import tune
    from optical_lib.distill import checkpoint_progress

    folder = tmp_path / "ckpt"
    monkeypatch.setattr(experiment, "checkpoint_dir", lambda config: folder)
    monkeypatch.setattr(tune, "checkpoint_dir", lambda config: folder)
    args = {"teacher_name": "me5-small", "layers": [2], "seeds": [0], "epochs": 2,
            "eval_epochs": (1, 2), "lrs": {2: [1e-3]}, "dev_sentences": 16,
            "method": "optical+mse", "budget": 64, "log": lambda line: None}
    uncut = tune.sweep_v2(**args, out=tmp_path / "uncut.csv")
    assert sorted(uncut["epoch"].unique()) == [1, 2] and not folder.exists()

    real, calls = tune._dev_macro, {"n": 0}

    def crash_at_the_second_epochs_evaluation(*a, **k):
        calls["n"] += 1  # 1: the baseline, 2: epoch 1, 3: epoch 2
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(tune, "_dev_macro", crash_at_the_second_epochs_evaluation)
    with pytest.raises(KeyboardInterrupt):
        tune.sweep_v2(**args, out=tmp_path / "cut.csv")
    monkeypatch.setattr(tune, "_dev_macro", real)
    assert set(read_sweep(tmp_path / "cut.csv")["epoch"]) == {1}
    assert checkpoint_progress(folder)["epochs_done"] == 1
    lines = []
    resumed = tune.sweep_v2(**{**args, "log": lines.append}, out=tmp_path / "cut.csv")
    assert any("resuming lr=0.001 seed=0 from its checkpoint after epoch 1" in ln
               for ln in lines), lines
    key = ["epoch", "task", "protocol"]
    a, b = (t.sort_values(key).reset_index(drop=True) for t in (uncut, resumed))
    pd.testing.assert_frame_equal(a[key], b[key])
    pd.testing.assert_series_equal(a["value"], b["value"], atol=1e-6)
    # epoch 1's training seconds are the first attempt's, and epoch 2's include them
    assert (b.groupby("epoch")["train_s"].first().diff().dropna() > 0).all()
    assert not folder.exists()


def test_languages_per_task_counts_the_non_english_side():
    from optical_lib import report

    def row(task, q, d, scope="language"):
        return {"task": task, "query_lang": q, "doc_lang": d, "scope": scope}

    rows = pd.DataFrame([row("flores-x-eng", "hau", "eng"), row("flores-x-eng", "yor", "eng"),
                         row("flores-x-eng", "macro", "eng", "macro"),
                         row("flores-eng-x", "eng", "hau"), row("flores-eng-x", "eng", "yor"),
                         row("flores-eng-x", "eng", "hau"), row("xquad-r-eng-eng", "eng", "eng")])
    assert report.languages_per_task(rows) == {"flores-eng-x": 2, "flores-x-eng": 2,
                                               "xquad-r-eng-eng": 1}
    assert report.languages_per_task(pd.DataFrame()) == {}


def test_pending_learning_curve_settings_are_named_like_the_curve_rows():
    from optical_lib import report
    from optical_lib.grid import plan

    settings = plan("curve")
    missing = [s.run_id for s in settings if s.config.budget == 0][::-1]  # any order in
    assert report.curve_pending(missing) == ["L2 · whole pool", "L3 · whole pool",
                                             "L6 · whole pool", "L12 · whole pool"]
    assert report.curve_pending([]) == []
    assert report.curve_system(3, 7936) == "L3 · 7,936 pairs"
