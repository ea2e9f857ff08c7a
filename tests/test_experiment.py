"""One setting of the study: validation before compute, ids, samples and result files."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from optical_lib import data
from optical_lib.evaluate import read_results
from optical_lib.experiment import (
    DEFAULT_LR,
    ExperimentConfig,
    diversity_table,
    evaluate_student,
    training_pool,
    training_sample,
    validate,
    write_setting,
)
from optical_lib.layout import ResultsLayout


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"method": "distil"}, "Unknown method 'distil'"),
        ({"layers": 5}, r"layers=5 is not in the me5-small family \[2, 3, 6, 12\]"),
        ({"k_langs": 200}, "k_langs=200 but the training pool has 81 languages"),
        ({"k_langs": 1, "budget": 5000}, "budget=5000 pairs cannot be split over k=1"),
        ({"eval_tatoeba": ["swa"]}, r"Unknown Tatoeba evaluation language\(s\) \['swa'\]"),
        ({"eval_xquad": ["xx"]}, r"Unknown XQuAD-R query language\(s\) \['xx'\]"),
        ({"profile": "web"}, "Unknown profile 'web'"),
        ({"eps": 0}, "eps must be positive"),
    ],
)
def test_bad_settings_fail_before_compute(params, message):
    with pytest.raises(ValueError, match=message):
        validate(ExperimentConfig.from_parameters(**params))


def test_webfaq_profile_fails_fast_offline(monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    config = ExperimentConfig.from_parameters(profile="webfaq", train_langs=("deu", "fra"),
                                              eval_webfaq=("swa",), k_langs=2)
    with pytest.raises(data.HubUnavailableError, match="offline"):
        validate(config)
    with pytest.raises(ValueError, match="disjoint"):
        validate(ExperimentConfig.from_parameters(profile="webfaq", train_langs=("deu",),
                                                  eval_webfaq=("deu",)))


def test_parameters_resolve_to_one_frozen_config():
    config = ExperimentConfig.from_parameters(layers=6, eval_tatoeba=None, eval_xquad=[], lr=None)
    assert config.eval_tatoeba == data.EVAL_LANGS_TATOEBA and config.eval_xquad == ()
    assert config.training.lr == DEFAULT_LR[6]
    assert config.run_id == ExperimentConfig.from_parameters(layers=6, eval_xquad=[]).run_id
    assert config.run_id != ExperimentConfig.from_parameters(layers=6, eval_xquad=[], seed=1).run_id
    assert config.run_id.startswith("L6-optical-k8-s0-")
    with pytest.raises(ValueError, match=r"Unknown parameter\(s\) \['k'\]"):
        ExperimentConfig.from_parameters(k=3)
    assert config.training.lr == DEFAULT_LR[6]
    # the zero-shot baseline trains nothing: training parameters do not change its id
    of = ExperimentConfig.from_parameters
    none = of(method="none", layers=6)
    assert none.run_id == of(method="none", layers=6, lr=1.0, k_langs=2).run_id
    assert none.run_id != of(method="none", layers=6, seed=1).run_id
    # how a setting is computed (threads, device) is not what it computes
    assert of(layers=6, threads=1).run_id == of(layers=6, threads=2).run_id
    assert of(layers=6, device="cuda").run_id == of(layers=6).run_id
    v2 = of(design="v2", layers=2, amp="bf16", k_langs=4)
    assert of(**{**v2.parameters(), "device": "cuda"}).run_id == v2.run_id
    assert of(**{**v2.parameters(), "device": "cuda"}).to_dict()["device"] == "cuda"
    # the configuration holds one DistillConfig; the flat parameters round-trip
    assert config.training.student_layers == 6 and config.training.teacher == config.model
    assert of(**config.parameters()) == config


def test_bf16_is_part_of_what_a_v2_setting_computes():
    from optical_lib.experiment import precision_of, with_precision

    of = ExperimentConfig.from_parameters
    for params in ({"layers": 2, "method": "optical+mse"}, {"layers": 2, "method": "none"}):
        fp32, bf16 = of(design="v2", **params), of(design="v2", amp="bf16", **params)
        assert fp32.run_id != bf16.run_id  # baselines too: Δ compares like with like
        assert (precision_of(fp32), precision_of(bf16)) == ("fp32", "bf16")
    bm25 = of(design="v2", method="bm25")
    assert bm25.run_id == of(design="v2", method="bm25", amp="bf16").run_id  # no encoder
    encoder = type("E", (), {"precision": "fp32"})()
    assert with_precision(encoder, of(design="v2", amp="bf16")).precision == "bf16"
    with pytest.raises(ValueError, match="needs a CUDA device"):
        of(design="v2", amp="fp16")


def test_tuned_choices_apply_to_their_objective_unless_a_value_is_given(tmp_path, monkeypatch):
    from optical_lib import experiment
    from optical_lib.experiment import DEFAULT_LR

    layout = ResultsLayout(tmp_path / "results", tmp_path / "nb")
    layout.tuning_v2.mkdir(parents=True)
    choice = {"teacher": "me5-small", "method": "optical+mse", "layers": 2, "lr": 7e-4,
              "epochs": 8, "used": True}
    (layout.tuning_v2 / "chosen.json").write_text(json.dumps({"choices": [
        choice, {**choice, "layers": 3, "lr": 9e-9, "used": False}]}))
    monkeypatch.setattr(experiment, "ResultsLayout", lambda: layout)
    experiment._tuned_v2.cache_clear()
    try:
        of = ExperimentConfig.from_parameters
        tuned = of(design="v2", layers=2, method="optical+mse")
        assert (tuned.training.lr, tuned.training.epochs) == (7e-4, 8)
        assert of(design="v2", layers=2, method="optical+mse", epochs=3).training.epochs == 3
        assert of(design="v2", layers=2, method="optical+mse", lr=1e-3).training.lr == 1e-3
        unsettled = of(design="v2", layers=3, method="optical+mse")  # not used: defaults
        assert (unsettled.training.lr, unsettled.training.epochs) == (DEFAULT_LR[3], 3)
        other = of(design="v2", layers=2, method="optical")  # another objective: defaults
        assert other.training.lr == DEFAULT_LR[2]
    finally:
        experiment._tuned_v2.cache_clear()


def test_the_committed_tuning_choice_is_what_the_rule_gives():
    from optical_lib.tune import study_choice

    path = ResultsLayout().tuning_v2 / "chosen.json"
    if not path.exists():
        pytest.skip("no tuning choice committed yet")
    assert json.loads(path.read_text()) == json.loads(json.dumps(study_choice()))



def test_tune_choose_writes_the_rules_choice_and_re_makes_stale_grid_files(tmp_path, capsys):
    import shutil

    from optical_lib import tune

    committed = ResultsLayout().tuning_v2
    if not (committed / "chosen.json").exists():
        pytest.skip("no tuning choice committed yet")
    results = tmp_path / "results"
    shutil.copytree(committed, results / "tuning-v2")
    # the objective rule reads the ablation's runs (linked: read only) and its grid file
    (results / "runs").symlink_to(ResultsLayout().root.resolve() / "runs")
    shutil.copytree(ResultsLayout().profile_dir("ablation"), results / "ablation")
    (results / "tuning-v2" / "chosen.json").unlink()
    stale = ResultsLayout(results).grid_file("curve")
    stale.parent.mkdir(parents=True)
    stale.write_text(json.dumps({"profile": "curve", "run_ids": ["v2-stale"]}))
    assert tune.main(["--choose", "--results", str(results)]) == 0
    written = json.loads((results / "tuning-v2" / "chosen.json").read_text())
    assert written == json.loads((committed / "chosen.json").read_text())
    assert "v2-stale" not in json.loads(stale.read_text())["run_ids"]
    assert "curve/grid.json: re-made" in capsys.readouterr().out

def committed_profiles() -> list[str]:
    from optical_lib.grid import PROFILES
    from optical_lib.layout import ResultsLayout

    return [p for p in PROFILES if ResultsLayout().grid_file(p).exists()]


@pytest.mark.parametrize("profile", committed_profiles())
def test_run_ids_of_committed_profiles_are_stable(profile):
    """The run id hashes the flat parameters, whatever the config's inner structure, and
    leaves out parameters added later while they hold their default: every committed
    profile keeps its ids (medium from v1; the v2 profiles)."""
    from optical_lib.grid import profile_settings
    from optical_lib.layout import ResultsLayout

    published = json.loads(ResultsLayout().grid_file(profile).read_text())["run_ids"]
    ids = [ExperimentConfig.from_parameters(**p).run_id for p in profile_settings(profile)]
    assert ids == published


def test_list_parameters_given_as_strings_are_refused_with_the_syntax():
    with pytest.raises(ValueError, match=r"-y 'eval_tatoeba: \[swh, amh\]'"):
        ExperimentConfig.from_parameters(eval_tatoeba='["swh"]')


def test_training_sample_never_holds_evaluation_or_dev_languages():
    config = ExperimentConfig.from_parameters(k_langs=64, budget=1000, seed=3)
    sample = training_sample(config)
    langs = {p.src_lang for p in sample.pairs}
    assert len(langs) == 64 and len(sample.pairs) == 1000
    forbidden = set(data.EVAL_LANGS_TATOEBA) | set(data.XQUAD_R_LANGS) | set(data.DEV_LANGS_TATOEBA)
    assert not langs & forbidden
    table = diversity_table(sample)
    assert table.loc["languages (k)", "value"] == 64 and table.loc["pairs", "value"] == 1000
    assert training_sample(ExperimentConfig.from_parameters(method="none")) is None
    # the cached pool is read-only: one caller cannot change it under another
    pool = training_pool(config)
    with pytest.raises(TypeError):
        pool["xxx"] = ()


@pytest.mark.slow
def test_zero_shot_setting_writes_its_records(tmp_path):
    from optical_lib.models import load_encoder

    config = ExperimentConfig.from_parameters(layers=2, method="none", eval_tatoeba=("xho", "amh"),
                                              eval_xquad=(), n_boot=200)
    validate(config)
    rows, per_query = evaluate_student(config, load_encoder("me5-small-L2"))
    layout = ResultsLayout(root=tmp_path)
    out = write_setting(config, rows, per_query, None, None, layout, {"threads": 1})
    assert out == layout.run_dir(config.run_id)
    results = read_results(out / "results.json")
    macro = results[(results["scope"] == "macro") & (results["metric"] == "RR@10")]
    assert len(macro) == 1 and 0 < macro["value"].iloc[0] < 1
    langs = results[results["scope"] == "language"]
    assert set(langs["query_lang"]) == {"xho", "amh"}
    assert set(langs.loc[langs["query_lang"] == "xho", "n_queries"]) == {142}
    assert (langs["ci_low"] <= langs["value"]).all() and (langs["value"] <= langs["ci_high"]).all()
    setting = json.loads((out / "setting.json").read_text())
    assert setting["run_id"] == config.run_id and setting["diversity"] is None
    assert setting["provenance"] == {"threads": 1}


@pytest.mark.slow
def test_distillation_leaves_the_teacher_and_its_document_vectors_unchanged(me5_l12):
    """Regression test: training used to set ``max_length = 64`` on the encoders it was
    handed (the teacher too), so XQuAD-R candidates were encoded differently before and
    after a distillation run, and the embedding cache ignored the length."""
    from optical_lib.distill import DistillConfig, distill
    from optical_lib.models import load_encoder
    from optical_lib.retrieval import EmbeddingCache, encode_corpus

    task = data.xquad_r_task("deu", "eng")
    long_ids = [d for d, text in task.corpus.items()
                if len(me5_l12.tokenize([text], "passage")["input_ids"][0]) > 64]
    assert len(long_ids) > 50  # XQuAD-R has candidates longer than the training length
    corpus = {d: task.corpus[d] for d in long_ids[:8]}
    _, before = encode_corpus(me5_l12, corpus, cache=EmbeddingCache())
    student = load_encoder("me5-small-L2")
    pairs = data.tatoeba_bitext("deu")[:8]
    distill(DistillConfig(student_layers=2, max_length=64, max_steps=1, batch_size=8), pairs,
            student=student, teacher=me5_l12, progress=False)
    assert me5_l12.max_length == 512 and student.max_length == 512
    _, after = encode_corpus(me5_l12, corpus, cache=EmbeddingCache())
    assert torch.equal(before, after)
    # a candidate longer than 64 tokens is encoded at the model's maximum unless asked
    full = me5_l12.encode_documents(list(corpus.values()), max_length=512)
    cut = me5_l12.encode_documents(list(corpus.values()), max_length=64)
    assert torch.equal(after, full) and not torch.allclose(after, cut)


def test_every_file_a_setting_reads_is_checked_before_compute(tmp_path):
    import shutil

    from optical_lib.experiment import verify_data
    from optical_lib.fetch import ChecksumError
    from optical_lib.paths import data_dir

    config = ExperimentConfig.from_parameters(eval_xquad=[])
    digests = verify_data(config)
    assert set(digests) == {"tatoeba-v1"} and len(digests["tatoeba-v1"]) == 64
    copy = tmp_path / "tatoeba-v1"
    shutil.copytree(data_dir() / "tatoeba-v1", copy)
    target = copy / "tatoeba.swh-eng.swh"
    target.write_bytes(target.read_bytes()[:-1] + b"X")  # one byte changed
    with pytest.raises(ChecksumError, match="tatoeba.swh-eng.swh"):
        verify_data(config, tmp_path)


def test_a_copy_without_git_names_its_commit_only_through_the_environment(monkeypatch,
                                                                          tmp_path):
    from optical_lib import experiment

    if (experiment.PROJECT_ROOT / ".git").exists():
        assert experiment.git_commit() is not None  # this checkout
    monkeypatch.setattr(experiment, "PROJECT_ROOT", tmp_path)  # a copy without .git
    monkeypatch.delenv(experiment.COMMIT_ENV, raising=False)
    assert experiment.git_commit() is None
    monkeypatch.setenv(experiment.COMMIT_ENV, "0123abc")
    assert experiment.git_commit() == "0123abc"


def test_a_setting_cut_short_resumes_from_its_checkpoint(tmp_path, monkeypatch, capsys, me5_l12,
                                                        interrupt_training, same_training):
    """The grid's settings checkpoint their training (into the cache, by the clock): a
    setting killed mid-training resumes to the uncut result; a checkpoint of another
    training config in its folder is dropped, not loaded; it is removed when asked."""
    from optical_lib import distill as module
    from optical_lib import experiment

    monkeypatch.setattr(experiment, "checkpoint_dir", lambda config: tmp_path / "ckpt")
    params = {"layers": 2, "method": "optical", "k_langs": 2, "budget": 64, "epochs": 2}
    config = ExperimentConfig.from_parameters(**params)
    sample = training_sample(config)
    uncut_student, uncut = experiment.train_student(config, sample, me5_l12, progress=False,
                                                    checkpoint_s=None)
    assert not (tmp_path / "ckpt").exists()  # no checkpointing asked, none written

    interrupt_training(5)
    with pytest.raises(KeyboardInterrupt):
        experiment.train_student(config, sample, me5_l12, progress=False, checkpoint_s=0.0)
    interrupt_training(None)
    assert module.checkpoint_progress(tmp_path / "ckpt")["step"] == 5
    resumed = experiment.train_student(config, sample, me5_l12, progress=False,
                                       checkpoint_s=0.0)
    assert f"resuming {config.run_id} from its checkpoint at step 5" in capsys.readouterr().out
    same_training((uncut_student, uncut), resumed)

    other = ExperimentConfig.from_parameters(**{**params, "seed": 1})
    with pytest.warns(UserWarning, match="belongs to another training config"):
        _, fresh = experiment.train_student(other, training_sample(other), me5_l12,
                                            progress=False, checkpoint_s=0.0)
    assert fresh["step"].tolist() == uncut["step"].tolist()  # all of its steps, from 1
    experiment.discard_checkpoint(other)
    assert not (tmp_path / "ckpt").exists()


def test_provenance_names_the_gpu_a_run_used(monkeypatch):
    from optical_lib.experiment import provenance

    on_cpu = provenance({"flores-200": "abc"})
    assert "accelerator" not in on_cpu and on_cpu["data_sha256"] == {"flores-200": "abc"}
    assert on_cpu["teacher_states"] == "fixed-length"
    # the CPU its timings come from: model (and generation), torch's vector instructions,
    # the cores it may use
    assert on_cpu["cpu"].endswith(f"{torch.backends.cpu.get_cpu_capability()}, "
                                  f"{len(os.sched_getaffinity(0))} cores)")
    info = Path("/proc/cpuinfo")
    assert not info.exists() or "cpu family" not in info.read_text() or "family" in on_cpu["cpu"]
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "NVIDIA H100")
    assert provenance({}, "cuda")["accelerator"] == "NVIDIA H100"
    assert provenance({}, "cuda:0")["accelerator"] == "NVIDIA H100"


def test_every_run_shares_the_teacher_states_on_disk(monkeypatch, tmp_path):
    from optical_lib import experiment

    monkeypatch.setenv("OPTICAL_CACHE_DIR", str(tmp_path))
    core = experiment.teacher_states(ExperimentConfig.from_parameters(
        design="v2", method="optical+mse", layers=2, k_langs=8, draw=0))
    pool = experiment.teacher_states(ExperimentConfig.from_parameters(
        design="v2", method="optical+mse", layers=3, sample="pool", budget=0, draw=0))
    assert core.directory == pool.directory == tmp_path / "teacher-states"
    assert core.memory_limit is None and pool.memory_limit == experiment.POOL_MEMORY_LIMIT
