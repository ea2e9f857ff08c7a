"""One setting of the study: validation before compute, ids, samples and result files."""

from __future__ import annotations

import json

import pytest

from optical_lib import data
from optical_lib.evaluate import read_results
from optical_lib.experiment import (
    DEFAULT_LR,
    ExperimentConfig,
    diversity_table,
    evaluate_student,
    training_sample,
    validate,
    write_setting,
)


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
    config = ExperimentConfig(profile="webfaq", train_langs=("deu", "fra"), eval_webfaq=("swa",),
                              k_langs=2)
    with pytest.raises(data.HubUnavailableError, match="offline"):
        validate(config)
    with pytest.raises(ValueError, match="disjoint"):
        validate(ExperimentConfig(profile="webfaq", train_langs=("deu",), eval_webfaq=("deu",)))


def test_parameters_resolve_to_one_frozen_config():
    config = ExperimentConfig.from_parameters(layers=6, eval_tatoeba=None, eval_xquad=[], lr=None)
    assert config.eval_tatoeba == data.EVAL_LANGS_TATOEBA and config.eval_xquad == ()
    assert config.lr == DEFAULT_LR[6]
    assert config.run_id == ExperimentConfig.from_parameters(layers=6, eval_xquad=[]).run_id
    assert config.run_id != ExperimentConfig.from_parameters(layers=6, eval_xquad=[], seed=1).run_id
    assert config.run_id.startswith("L6-optical-k8-s0-")
    with pytest.raises(ValueError, match=r"Unknown parameter\(s\) \['k'\]"):
        ExperimentConfig.from_parameters(k=3)
    assert config.distill_config().lr == DEFAULT_LR[6]
    # the zero-shot baseline trains nothing: training parameters do not change its id
    none = ExperimentConfig(method="none", layers=6)
    assert none.run_id == ExperimentConfig(method="none", layers=6, lr=1.0, k_langs=2).run_id
    assert none.run_id != ExperimentConfig(method="none", layers=6, seed=1).run_id


def test_training_sample_never_holds_evaluation_or_dev_languages():
    config = ExperimentConfig(k_langs=64, budget=1000, seed=3)
    sample = training_sample(config)
    langs = {p.src_lang for p in sample.pairs}
    assert len(langs) == 64 and len(sample.pairs) == 1000
    forbidden = set(data.EVAL_LANGS_TATOEBA) | set(data.XQUAD_R_LANGS) | set(data.DEV_LANGS_TATOEBA)
    assert not langs & forbidden
    table = diversity_table(sample)
    assert table.loc["languages (k)", "value"] == 64 and table.loc["pairs", "value"] == 1000
    assert training_sample(ExperimentConfig(method="none")) is None


@pytest.mark.slow
def test_zero_shot_setting_writes_its_records(tmp_path):
    from optical_lib.models import load_encoder

    config = ExperimentConfig(layers=2, method="none", eval_tatoeba=("xho", "amh"), eval_xquad=(),
                              n_boot=200)
    validate(config)
    rows, per_query = evaluate_student(config, load_encoder("me5-small-L2"))
    out = write_setting(config, rows, per_query, None, None, tmp_path)
    results = read_results(out / "results.json")
    macro = results[(results["scope"] == "macro") & (results["metric"] == "RR@10")]
    assert len(macro) == 1 and 0 < macro["value"].iloc[0] < 1
    langs = results[results["scope"] == "language"]
    assert set(langs["query_lang"]) == {"xho", "amh"}
    assert set(langs.loc[langs["query_lang"] == "xho", "n_queries"]) == {142}
    assert (langs["ci_low"] <= langs["value"]).all() and (langs["value"] <= langs["ci_high"]).all()
    setting = json.loads((out / "setting.json").read_text())
    assert setting["run_id"] == config.run_id and setting["diversity"] is None
