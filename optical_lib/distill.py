"""Distil a frozen English teacher into multilingual students: OPTICAL and sentence MSE.

The teacher encodes the English side of each bitext pair, the student the other side.

* ``optical`` (Huang, Yu & Allan 2023): the student's content-token vectors ``S`` and the
  teacher's ``T`` give the cosine cost ``C = 1 - cos(S_i, T_j)``; entropic OT gives the plan
  ``P`` (a soft token alignment, :func:`optical_lib.ot.sinkhorn`); the loss is
  ``<P, C>_F`` averaged over the batch (book section "Background: optimal transport").
* ``mse`` (Reimers & Gurevych 2020): ``||s(x) - t(en)||^2 + ||s(en) - t(en)||^2`` on
  mean-pooled sentence vectors.
* ``optical-plain``: the paper's cost, not centred (the objective ablation).
* ``optical+mse``: centred OPTICAL plus the sentence-MSE term with weight 1.
* ``none``: the untouched student, the zero-shot baseline; ``bm25`` trains nothing
  either (the lexical floor has no encoder).

An optional sentence-MSE term (``mse_weight``) can be added to the OT methods. Which tokens
enter the OT problem is ``align_tokens``: ``"all"`` (the default) aligns every token of the
attention mask, special tokens and the ``query: `` prompt included, since they too feed the
mean-pooled sentence vector; ``"content"`` leaves them out. By default the cosine cost is
centred on the teacher's mean token vector of the batch (``center=True``; "centred OPTICAL",
a measured deviation from the paper, see the book's background page).

Training is AdamW with linear warm-up and decay, gradient clipping, padding-aware
batches (pairs are bucketed by length), deterministic seeding, periodic checkpoints and
resume, and a tidy history table. Run it from Python (:func:`distill`) or the command line::

    python -m optical_lib.distill --layers 3 --method optical --langs deu fra --budget 512
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import hashlib
import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from . import bf16
from .layout import atomic_write
from .models import Encoder, load_encoder, mean_pool
from .ot import ot_alignment_loss
from .paths import progress_bars

#: The distillation methods and how the book names them (the one table every module uses).
METHOD_LABELS: dict[str, str] = {
    "none": "zero-shot",
    "mse": "sentence MSE",
    "optical": "centred OPTICAL",
    "optical-plain": "plain OPTICAL",
    "optical+mse": "centred OPTICAL + MSE",
    "bm25": "BM25",
}
#: Methods that train a student (the rest evaluate an untouched model, or none).
TRAINED_METHODS = ("mse", "optical", "optical-plain", "optical+mse")
#: Methods with an OT term, and those with a sentence-MSE term (besides ``mse_weight``).
OT_METHODS = ("optical", "optical-plain", "optical+mse")
MSE_METHODS = ("mse", "optical+mse")
METHODS = tuple(METHOD_LABELS)


@dataclass(frozen=True)
class DistillConfig:
    """Everything that defines one distillation run (hashable, JSON-serialisable)."""

    method: str = "optical"
    student: str = "me5-small"
    student_layers: int | None = 3
    teacher: str = "me5-small"
    teacher_layers: int | None = None
    eps: float = 0.05
    sinkhorn_iters: int = 50
    grad: str = "detached"
    align_tokens: str = "all"  # "all" tokens of the mask, or "content" (no specials/prefix)
    center: bool = True  # cosine cost around the teacher's mean token vector (anti-collapse)
    ot_weight: float = 1.0
    mse_weight: float = 0.0
    lr: float = 5e-5
    warmup: float = 0.1
    weight_decay: float = 0.01
    batch_size: int = 16
    epochs: int = 1
    max_steps: int | None = None
    max_length: int = 64
    grad_clip: float = 1.0
    train_embeddings: bool = False
    seed: int = 0
    device: str = "cpu"
    amp: str | None = None  # autocast of the student's forward: "bf16", or "fp16" (CUDA only)
    prompt_name: str = "query"  # the encoders' prompt put before both sides' texts
    checkpoint_every: int = 0

    def __post_init__(self):
        if self.method not in METHODS:
            raise ValueError(f"Unknown method {self.method!r} (choose from {', '.join(METHODS)})")
        if self.grad not in ("detached", "unrolled"):
            raise ValueError(f"grad must be 'detached' or 'unrolled', got {self.grad!r}")
        if self.align_tokens not in ("all", "content"):
            raise ValueError(f"align_tokens must be 'all' or 'content', got {self.align_tokens!r}")
        if self.amp not in (None, "bf16", "fp16"):
            raise ValueError(f"amp must be None, 'bf16' or 'fp16', got {self.amp!r}")
        if self.amp == "fp16" and torch.device(self.device).type != "cuda":
            raise ValueError("amp='fp16' needs a CUDA device; on the CPU use amp='bf16'")
        for name in ("eps", "lr", "batch_size", "epochs", "max_length"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.method in OT_METHODS and self.ot_weight <= 0 and self.mse_weight <= 0:
            raise ValueError(f"{self.method} needs ot_weight > 0 or mse_weight > 0")

    @property
    def centred(self) -> bool:
        """Whether the OT cost is centred (``optical-plain`` never is)."""
        return self.center and self.method != "optical-plain"

    @property
    def effective_mse_weight(self) -> float:
        return 1.0 if self.method in MSE_METHODS else self.mse_weight

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _pairs(bitext) -> list[tuple[str, str]]:
    """(non-English text, English text) from records with ``src_text``/``tgt_text``."""
    out = []
    for rec in bitext:
        src, tgt = (rec.src_text, rec.tgt_text) if hasattr(rec, "src_text") else (rec[0], rec[1])
        if src.strip() and tgt.strip():
            out.append((src, tgt))
    if not out:
        raise ValueError("The bitext has no non-empty pairs to train on")
    return out


def length_batches(pairs: list[tuple[str, str]], batch_size: int, seed: int,
                   epoch: int) -> list[list[int]]:
    """Shuffle, bucket by length inside chunks of 50 batches, then shuffle the batches.

    Deterministic for (seed, epoch); every index appears exactly once per epoch.
    """
    rng = np.random.default_rng([seed, epoch])
    order = rng.permutation(len(pairs))
    chunk = batch_size * 50
    batches = []
    for start in range(0, len(order), chunk):
        part = sorted(order[start : start + chunk], key=lambda i: len(pairs[i][0]))
        batches += [part[i : i + batch_size] for i in range(0, len(part), batch_size)]
    rng.shuffle(batches)
    return [list(map(int, b)) for b in batches]


def content_mask(batch: dict[str, torch.Tensor], n_prefix: int) -> torch.Tensor:
    """Attention mask without ``<s>``, the prefix tokens and the final ``</s>``."""
    mask = batch["attention_mask"].bool().clone()
    mask[:, : 1 + n_prefix] = False
    last = batch["attention_mask"].sum(1) - 1
    mask[torch.arange(mask.shape[0]), last] = False
    # a sentence truncated to nothing but specials keeps its last real token
    empty = ~mask.any(1)
    mask[empty, last[empty] - 1] = True
    return mask


def _prefix_tokens(encoder: Encoder, prompt_name: str) -> int:
    prefix = encoder.prompt(prompt_name)
    with_prefix = encoder.tokenizer(prefix + "x", add_special_tokens=False)["input_ids"]
    alone = encoder.tokenizer("x", add_special_tokens=False)["input_ids"]
    return len(with_prefix) - len(alone)


#: How the teacher's token vectors of a run were computed (recorded in each run's
#: provenance): "fixed-length", padded to the training length whatever the batch (runs
#: before this rule recorded nothing and used their first batch's padded length).
TEACHER_STATES_RULE = "fixed-length"


class TeacherStates:
    """The frozen teacher's token vectors of English texts, computed once and reused.

    The teacher never changes during distillation, so its last-layer token vectors of an
    English sentence are the same in every epoch and in every run that trains on the same
    English sentences (data v2 holds the English side fixed across k). They are kept per
    text (unpadded, float32) in memory and, with ``directory``, on disk as one file per
    (teacher weights, prompt, length) and text, so runs in other processes reuse them.

    Every text is encoded padded to the full length ``max_length`` (``fixed_length``), so
    its vectors are the same whichever batch first computed them: under bf16 the rounding
    of a text's vectors depends on the padded length of its batch (up to ~0.01 per
    coordinate, measured on both teachers), which made a run depend on which run had filled
    the store, and a resumed run (whose store was refilled in other batches) differ from
    one never cut short. A batch rebuilt from stored vectors therefore equals the teacher's
    forward pass on that batch only up to that rounding. (The disk store's folder names the
    rule, :data:`TEACHER_STATES_RULE`: vectors computed before it are never mixed in.)
    """

    def __init__(self, directory: str | Path | None = None, memory_limit: int | None = None):
        self.directory = None if directory is None else Path(directory)
        #: texts kept in memory at most (None: all); beyond it, states are recomputed
        self.memory_limit = memory_limit
        self._memory: dict[tuple, torch.Tensor] = {}
        self.computed = 0  # texts the teacher actually encoded (for tests and timings)
        self.reused = 0

    def _key(self, teacher: Encoder, prompt_name: str, max_length: int) -> str | None:
        key = teacher.embedding_key(prompt_name, max_length)
        return None if key is None else f"{key}-{TEACHER_STATES_RULE}"

    def _path(self, key: str | None, text: str) -> Path | None:
        if self.directory is None or key is None:
            return None
        digest = hashlib.sha256(text.encode()).hexdigest()
        return self.directory / key / digest[:2] / f"{digest[2:24]}.pt"

    def states(self, teacher: Encoder, texts: list[str], prompt_name: str,
               max_length: int) -> list[torch.Tensor]:
        """``(n_i, d)`` token vectors of each text, computing only what is not stored."""
        key = self._key(teacher, prompt_name, max_length)
        memo = (key or id(teacher), prompt_name, max_length)
        out: dict[str, torch.Tensor] = {}
        missing = []
        for text in dict.fromkeys(texts):
            hit = self._memory.get((*memo, text))
            path = self._path(key, text)
            if hit is None and path is not None and path.exists():
                hit = torch.load(path)
                self._memory[(*memo, text)] = hit
            if hit is None:
                missing.append(text)
            else:
                out[text] = hit
        self.reused += len(texts) - len(missing)
        if missing:
            batch = teacher.tokenize(missing, prompt_name, max_length, fixed_length=True)
            with torch.no_grad():
                tokens = teacher.token_vectors(batch).float()
            lengths = batch["attention_mask"].sum(1).tolist()
            for text, vecs, n in zip(missing, tokens, lengths, strict=True):
                vec = vecs[:n].detach().clone()
                out[text] = vec
                if self.memory_limit is None or len(self._memory) < self.memory_limit:
                    self._memory[(*memo, text)] = vec
                path = self._path(key, text)
                if path is not None:
                    atomic_write(path, lambda tmp, v=vec: torch.save(v.cpu(), tmp))
            self.computed += len(missing)
        return [out[t] for t in texts]

    def batch(self, teacher: Encoder, texts: list[str], prompt_name: str,
              max_length: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Padded ``(B, n, d)`` token vectors and a batch dict with ``attention_mask``."""
        states = self.states(teacher, texts, prompt_name, max_length)
        device = teacher.device
        n = max(s.shape[0] for s in states)
        tokens = torch.zeros(len(states), n, states[0].shape[1], device=device)
        mask = torch.zeros(len(states), n, dtype=torch.long, device=device)
        for i, s in enumerate(states):
            tokens[i, : s.shape[0]] = s.to(device)
            mask[i, : s.shape[0]] = 1
        return tokens, {"attention_mask": mask}


class Distiller:
    """Holds teacher and student for one :class:`DistillConfig` and computes the loss.

    Encoders handed in are used as they are: their settings (``max_length``, prompts) are
    never changed; the training length is passed to each tokenisation. The teacher is put
    in eval mode without gradients; the student's word embeddings are frozen unless
    ``train_embeddings``.
    """

    def __init__(self, config: DistillConfig, student: Encoder | None = None,
                 teacher: Encoder | None = None, teacher_states: TeacherStates | None = None):
        self.config = c = config
        self.student = student or load_encoder(c.student, c.student_layers, device=c.device)
        self.teacher = None
        if c.method in TRAINED_METHODS:
            self.teacher = teacher or load_encoder(c.teacher, c.teacher_layers, device=c.device)
            self.teacher.model.eval().requires_grad_(False)
        self.teacher_states = teacher_states if teacher_states is not None else TeacherStates()
        emb = self.student.model.get_input_embeddings()
        emb.weight.requires_grad_(c.train_embeddings)
        self.n_prefix = {"student": _prefix_tokens(self.student, c.prompt_name)}
        if self.teacher is not None:
            self.n_prefix["teacher"] = _prefix_tokens(self.teacher, c.prompt_name)

    def trainable(self) -> list[torch.nn.Parameter]:
        return [p for p in self.student.model.parameters() if p.requires_grad]

    def _autocast(self):
        c = self.config
        if not c.amp:
            return contextlib.nullcontext()
        if c.amp == "bf16":
            return bf16.bf16_region(c.device)  # emulated on CPUs without bf16 instructions
        return torch.autocast(torch.device(c.device).type, dtype=torch.float16)

    def backward_region(self):
        """The context of the backward pass: its products are bf16 too under ``amp="bf16"``
        (:func:`~optical_lib.bf16.emulation` on CPUs without bf16 instructions)."""
        if self.config.amp == "bf16":
            return bf16.emulation(self.config.device)
        return contextlib.nullcontext()

    def token_mask(self, batch: dict[str, torch.Tensor], side: str) -> torch.Tensor:
        if self.config.align_tokens == "content":
            return content_mask(batch, self.n_prefix[side])
        return batch["attention_mask"].bool()

    def loss(self, src: list[str], tgt: list[str]) -> dict[str, torch.Tensor]:
        """Loss parts for one batch of (non-English, English) texts."""
        c = self.config
        parts = {}
        s_batch = self.student.tokenize(src, c.prompt_name, c.max_length)
        t_tokens, t_batch = self.teacher_states.batch(self.teacher, tgt, c.prompt_name,
                                                      c.max_length)
        with self._autocast():
            s_tokens = self.student.token_vectors(s_batch)
        s_tokens = s_tokens.float()
        total = s_tokens.new_zeros(())
        if c.method in OT_METHODS and c.ot_weight > 0:
            start = time.perf_counter()
            s_mask = self.token_mask(s_batch, "student")
            t_mask = self.token_mask(t_batch, "teacher")
            s_ot, t_ot = s_tokens, t_tokens
            if c.centred:
                weights = t_mask.unsqueeze(-1).to(t_tokens.dtype)
                mu = (t_tokens * weights).sum((0, 1)) / weights.sum()
                s_ot, t_ot = s_tokens - mu, t_tokens - mu
            parts["ot"] = ot_alignment_loss(
                s_ot, t_ot, s_mask, t_mask,
                eps=c.eps, n_iters=c.sinkhorn_iters, grad=c.grad,
            )
            parts["ot_seconds"] = torch.tensor(time.perf_counter() - start)
            total = total + c.ot_weight * parts["ot"]
        mse_weight = c.effective_mse_weight
        if mse_weight > 0:
            t_sent = mean_pool(t_tokens, t_batch["attention_mask"])
            s_sent = mean_pool(s_tokens, s_batch["attention_mask"])
            se_batch = self.student.tokenize(tgt, c.prompt_name, c.max_length)
            with self._autocast():
                se_sent = mean_pool(self.student.token_vectors(se_batch).float(),
                                    se_batch["attention_mask"])
            parts["mse"] = ((s_sent - t_sent) ** 2).sum(-1).mean() + (
                (se_sent - t_sent) ** 2).sum(-1).mean()
            total = total + mse_weight * parts["mse"]
        parts["loss"] = total
        return parts


#: The file a run's checkpoint is kept in, inside its ``out_dir``.
CHECKPOINT_FILE = "checkpoint.pt"


def _lr_lambda(warmup_steps: int, total_steps: int):
    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))

    return factor


@dataclass
class _TrainState:
    """What a checkpoint holds besides the config: optimiser, schedule, progress."""

    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    step: int = 0
    history: list[dict] = dataclasses.field(default_factory=list)


def _schedule(config: DistillConfig, pairs: list[tuple[str, str]]) -> list[tuple[int, list[int]]]:
    """(epoch, batch indices) for every step of the run."""
    c = config
    steps = [(epoch, batch) for epoch in range(c.epochs)
             for batch in length_batches(pairs, c.batch_size, c.seed, epoch)]
    return steps[: c.max_steps] if c.max_steps else steps


def _new_state(dist: Distiller, total_steps: int) -> _TrainState:
    c = dist.config
    optimizer = torch.optim.AdamW(dist.trainable(), lr=c.lr, weight_decay=c.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, _lr_lambda(max(1, math.ceil(c.warmup * total_steps)), total_steps))
    return _TrainState(optimizer, scheduler)


def _save_checkpoint(path: Path, dist: Distiller, state: _TrainState,
                     epochs_done: int = 0) -> None:
    trainable = {n for n, p in dist.student.model.named_parameters() if p.requires_grad}
    blob = {
        "config": dist.config.to_dict(),
        "step": state.step,
        "epochs_done": epochs_done,
        "student": {k: v for k, v in dist.student.model.state_dict().items() if k in trainable},
        "optimizer": state.optimizer.state_dict(),
        "scheduler": state.scheduler.state_dict(),
        "history": state.history,
        "rng": torch.get_rng_state(),
    }
    atomic_write(path, lambda tmp: torch.save(blob, tmp))


def checkpoint_progress(out_dir: str | Path) -> dict | None:
    """What the checkpoint in ``out_dir`` holds, without its tensors: ``config`` (a
    :class:`DistillConfig` dict), ``step`` (optimiser steps done) and ``epochs_done``
    (whole epochs done, their ``on_epoch`` callbacks included) and ``train_s`` (seconds
    spent in its optimiser steps); ``None`` when there is none."""
    path = Path(out_dir) / CHECKPOINT_FILE
    if not path.exists():
        return None
    # memory-mapped: the tensors are not read from disk unless touched
    blob = torch.load(path, weights_only=False, map_location="cpu", mmap=True)
    return {"config": blob["config"], "step": blob["step"],
            "epochs_done": blob.get("epochs_done", 0),
            "train_s": float(sum(row.get("step_s", 0.0) for row in blob["history"]))}


def _load_checkpoint(path: Path, dist: Distiller, state: _TrainState) -> None:
    blob = torch.load(path, weights_only=False)
    if blob["config"] != dist.config.to_dict():
        raise ValueError(f"{path} belongs to a different config; use another out_dir")
    dist.student.model.load_state_dict(blob["student"], strict=False)
    state.optimizer.load_state_dict(blob["optimizer"])
    state.scheduler.load_state_dict(blob["scheduler"])
    state.history, state.step = blob["history"], blob["step"]
    torch.set_rng_state(blob["rng"])


def _train_step(dist: Distiller, state: _TrainState, src: list[str], tgt: list[str]) -> dict:
    """One optimiser step; returns the step's history row (loss parts, lr, speed)."""
    c = dist.config
    t0 = time.perf_counter()
    parts = dist.loss(src, tgt)
    state.optimizer.zero_grad(set_to_none=True)
    with dist.backward_region():
        parts["loss"].backward()
    if c.grad_clip:
        torch.nn.utils.clip_grad_norm_(dist.trainable(), c.grad_clip)
    lr = state.scheduler.get_last_lr()[0]
    state.optimizer.step()
    state.scheduler.step()
    seconds = time.perf_counter() - t0
    return {"lr": lr, "pairs_per_s": len(src) / seconds, "step_s": seconds,
            **{k: float(v.detach()) for k, v in parts.items()}}


def distill(config: DistillConfig, bitext, out_dir: str | Path | None = None,
            progress: bool = True, student: Encoder | None = None,
            teacher: Encoder | None = None, teacher_states: TeacherStates | None = None,
            on_epoch=None, checkpoint_s: float | None = None) -> tuple[Encoder, pd.DataFrame]:
    """Train the student on ``bitext`` (records with ``src_text`` and English ``tgt_text``).

    Returns ``(student, history)``; history has one row per step: ``step, epoch, loss``,
    the loss parts (``ot``, ``mse``), ``lr``, ``pairs_per_s``, ``step_s``, ``ot_seconds``,
    ``wall_s`` (training seconds since the start, over every attempt) and ``attempt`` (1
    for the steps of the first call, 2 for those of the first resumed call, ...).

    With ``out_dir`` and ``config.checkpoint_every > 0`` (steps) or
    ``checkpoint_s`` (seconds of wall-clock since the last one; not part of the config, as it
    does not change the result), a checkpoint is written that often and at the end, and a
    later call with the same config and ``out_dir`` resumes from it to the same result as a
    run never cut short. With ``on_epoch`` as well, a checkpoint is also written after each
    epoch's callback has returned, never between an epoch's last step and its callback (a
    resumed run never skips a callback). ``method="none"`` returns the untouched student.

    The run is fixed by ``config.seed``: batches come from their own seeded generator and
    dropout from torch's generator, seeded inside :func:`torch.random.fork_rng`, so the
    caller's global random state is the same before and after.

    ``teacher_states`` (:class:`TeacherStates`) keeps the frozen teacher's token vectors
    for reuse (a fresh in-memory store by default: each English text is encoded by the
    teacher once per run, not once per epoch). ``on_epoch(epoch, student)`` is called
    after each epoch with the student in eval mode (the convergence check evaluates there).
    """
    dist = Distiller(config, student, teacher, teacher_states)
    if config.method not in TRAINED_METHODS:
        return dist.student, pd.DataFrame(columns=["step", "loss"])
    c = config
    pairs = _pairs(bitext)
    dist.student.cache_key = None  # its weights are about to change
    schedule = _schedule(c, pairs)
    ckpt = Path(out_dir) / CHECKPOINT_FILE if out_dir else None
    checkpointing = ckpt is not None and bool(c.checkpoint_every or checkpoint_s is not None)
    devices = [torch.device(c.device)] if torch.device(c.device).type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(c.seed)
        state = _new_state(dist, len(schedule))
        if ckpt is not None and ckpt.exists():
            _load_checkpoint(ckpt, dist, state)
        dist.student.model.train()
        elapsed = state.history[-1]["wall_s"] if state.history else 0.0
        attempt = state.history[-1].get("attempt", 1) + 1 if state.history else 1
        clock = last_save = time.perf_counter()
        bar = tqdm(total=len(schedule), initial=state.step, disable=not progress_bars(progress),
                   desc=f"{c.method} L{dist.student.layers}", unit="step", mininterval=2.0)
        for step in range(state.step, len(schedule)):
            epoch, idx = schedule[step]
            row = _train_step(dist, state, [pairs[i][0] for i in idx], [pairs[i][1] for i in idx])
            state.step = step + 1
            state.history.append({"step": step + 1, "epoch": epoch, **row,
                                  "wall_s": elapsed + time.perf_counter() - clock,
                                  "attempt": attempt})
            bar.set_postfix(loss=f"{row['loss']:.4f}", pairs_s=f"{row['pairs_per_s']:.0f}")
            bar.update()
            epoch_ends = state.step == len(schedule) or schedule[state.step][0] != epoch
            done = epoch + 1 if epoch_ends else epoch
            if on_epoch is not None and epoch_ends:
                dist.student.model.eval()
                on_epoch(epoch, dist.student)
                dist.student.model.train()
            due = state.step == len(schedule) or (on_epoch is not None and epoch_ends) or (
                bool(c.checkpoint_every) and state.step % c.checkpoint_every == 0) or (
                checkpoint_s is not None and time.perf_counter() - last_save >= checkpoint_s)
            if checkpointing and due:
                _save_checkpoint(ckpt, dist, state, epochs_done=done)
                last_save = time.perf_counter()
        bar.close()
    dist.student.model.eval()
    return dist.student, pd.DataFrame(state.history)


def save_student(student: Encoder, history: pd.DataFrame, config: DistillConfig,
                 out_dir: str | Path) -> Path:
    """Write the student (transformers format), its history and its config."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    student.model.save_pretrained(out / "student")
    student.tokenizer.save_pretrained(out / "student")
    atomic_write(out / "history.csv", lambda tmp: history.to_csv(tmp, index=False))
    atomic_write(out / "config.json", json.dumps(config.to_dict(), indent=1))
    return out


def main(argv: list[str] | None = None) -> int:
    from . import data

    parser = argparse.ArgumentParser(description="Distil a student encoder (OPTICAL or MSE).")
    parser.add_argument("--student", default="me5-small")
    parser.add_argument("--layers", type=int, default=3)
    parser.add_argument("--method", default="optical", choices=METHODS)
    parser.add_argument("--langs", nargs="+", required=True, help="Tatoeba training languages")
    parser.add_argument("--budget", type=int, default=512, help="training pairs in total")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--lr", type=float, default=5e-5)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--eps", type=float, default=0.05)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    config = DistillConfig(method=args.method, student=args.student, student_layers=args.layers,
                           lr=args.lr, batch_size=args.batch_size, epochs=args.epochs,
                           eps=args.eps, seed=args.seed, device=args.device,
                           checkpoint_every=50)
    pool = {lang: data.tatoeba_bitext(lang) for lang in args.langs}
    sample = data.sample_bitext(pool, k=len(args.langs), budget=args.budget, seed=args.seed,
                                exclude=data.EVAL_LANGS_TATOEBA)
    student, history = distill(config, sample.pairs, out_dir=args.out)
    save_student(student, history, config, args.out)
    print(f"wrote {args.out}: {len(history)} steps, final loss {history['loss'].iloc[-1]:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
