"""One setting of the study: (model size x data diversity x seed x method) -> result records.

A setting is a frozen :class:`ExperimentConfig`. :func:`validate` checks it against the
data before anything expensive runs; then the stages are plain functions the notebook
calls one per cell::

    config = ExperimentConfig.from_parameters(layers=3, method="optical", k_langs=8)
    validate(config)                                  # clear error before compute
    teacher = load_teacher(config)                    # loaded once, passed explicitly
    sample = training_sample(config)                  # .pairs, .diversity
    student, history = train_student(config, sample, teacher)  # resumes a run cut short
    rows, per_query = evaluate_student(config, student, teacher)
    write_setting(config, rows, per_query, history, sample, ResultsLayout())
    discard_checkpoint(config)                        # the setting is finished

Retrieval protocols (:func:`protocols`): the primary one encodes queries and English
documents with the student itself, as the zero-shot baseline (``method="none"``) does; a
distilled student is also evaluated with the frozen teacher (full me5-small) encoding the
English documents, as in OPTICAL. Document embeddings of pristine encoders do not depend on
the setting and are cached on disk (:class:`~optical_lib.retrieval.EmbeddingCache`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import json
import os
import shutil
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

import torch

from . import bf16, data, fetch, multiway, protocol
from .distill import (
    METHOD_LABELS,
    METHODS,
    TRAINED_METHODS,
    DistillConfig,
    TeacherStates,
    checkpoint_progress,
    distill,
)
from .evaluate import PER_QUERY_COLUMNS, evaluate_runs, write_results
from .layout import ResultsLayout, atomic_write, atomic_write_json
from .models import FAMILY, ME5_SMALL, MINILM, TEACHERS, Encoder, load_encoder
from .paths import PROJECT_ROOT, cache_dir
from .retrieval import EmbeddingCache, retrieve

PROFILES = ("offline", "webfaq")
#: v1: the first study (Tatoeba pool, student-encodes-both protocol); v2: NTREX-128 fixed
#: content, FLORES-200 / Tatoeba / XQuAD-R under both protocols, Δ over matched baselines.
DESIGNS = ("v1", "v2")
#: Parameters of design v2 only: left out of v1 run ids, so those stay what they were.
V2_ONLY = ("design", "teacher", "draw", "relatives", "eval_flores", "split", "sample")
#: Training samples of design v2: "fixed" content (multiway.sample_fixed_content: k
#: languages, the English side fixed by draw and budget) or the whole "pool" for the
#: learning curve (multiway.sample_pool: a prefix of the shuffled pool, k not fixed).
SAMPLES = ("fixed", "pool")
#: Evaluation splits of design v2: the held-out evaluation languages, or the development
#: languages (tuning and the convergence check only; FLORES-200 only).
SPLITS = ("eval", "dev")
SUITES = ("tatoeba", "xquad-r")
#: Learning rate per student depth, chosen on the development languages
#: (``python -m optical_lib.tune``; the book's method page shows the sweep).
DEFAULT_LR = {12: 2e-4, 6: 5e-4, 3: 1e-3, 2: 2e-3}
#: The study's training settings where they differ from :class:`DistillConfig`'s defaults.
STUDY_TRAINING = {"method": "optical", "student_layers": 3, "epochs": 3, "batch_size": 16,
                  "eps": 0.05, "sinkhorn_iters": 50, "max_length": 64, "seed": 0,
                  "device": "cpu"}
#: Setting parameters (the notebook's) that configure training: parameter -> DistillConfig
#: field. ``model`` names both the student family and the teacher.
TRAINING_PARAMETERS = {"layers": "student_layers", "method": "method", "seed": "seed",
                       "device": "device", "epochs": "epochs", "lr": "lr",
                       "batch_size": "batch_size", "eps": "eps",
                       "sinkhorn_iters": "sinkhorn_iters", "max_length": "max_length",
                       "amp": "amp"}
#: Parameters that only matter when something is trained (left out of a baseline's run id).
TRAINING_ONLY = ("k_langs", "budget", "train_langs", "epochs", "lr", "batch_size", "eps",
                 "sinkhorn_iters", "max_length", "draw", "relatives", "sample")
#: Parameters a BM25 run leaves out of its id as well (it has no encoder and no seed).
LEXICAL_FREE = ("model", "layers", "teacher", "seed", "device", "method", "amp")
#: Design v2's budget (every k of multiway.STUDY_KS divides it).
V2_BUDGET = multiway.STUDY_BUDGETS[0]
#: Design v2's tuned training settings: ``results/tuning-v2/chosen.json``, written by
#: ``python -m optical_lib.tune --choose`` from the committed sweeps by the tuning rule
#: (a test checks the file against the rule). Where it has no settled choice for a
#: (teacher, objective, depth), v2 falls back to DEFAULT_LR and 3 epochs.
TUNED_V2_FILE = "chosen.json"


@functools.cache
def _tuned_v2() -> dict[tuple[str, str, int], dict]:
    path = ResultsLayout().tuning_v2 / TUNED_V2_FILE
    if not path.exists():
        return {}
    rows = json.loads(path.read_text())["choices"]
    return {(r["teacher"], r["method"], int(r["layers"])): r for r in rows if r["used"]}


def tuned_v2(teacher: str, method: str, layers: int) -> dict:
    """The tuning rule's settled choice (``lr``, ``epochs``) for a v2 setting, or {}."""
    return dict(_tuned_v2().get((teacher, method, int(layers)), {}))
#: Parameters that say how a setting is computed, not what: left out of every run id.
EXECUTION_FIELDS = ("threads",)
#: Parameters that say how a setting is computed but that run ids hashed from the start, at
#: this value: hashed at it whatever the setting runs on, so the ids stay as published and a
#: setting keeps its id on a GPU (``device="cuda"``). ``setting.json`` records the real value.
HASHED_AS = {"device": "cpu"}
#: Parameters added after results were published: left out of a run id while they hold
#: this value, so the ids (and results) of earlier settings stay valid.
LATER_DEFAULTS = {"sample": "fixed", "amp": None}


def setting_title(layers: int, method: str, k_langs: int | None = None,
                  seed: int | None = None) -> str:
    """A setting's short title, e.g. ``L2 · centred OPTICAL · k = 16 · seed 0``."""
    parts = [f"L{layers}", METHOD_LABELS.get(method, method)]
    if method != "none":
        parts += [f"k = {k_langs}", f"seed {seed}"]
    return " · ".join(parts)


TEACHER_SLUG = {ME5_SMALL: "tme5", MINILM: "tminilm"}
TEACHER_LABELS = {ME5_SMALL: "me5-small teacher", MINILM: "MiniLM teacher"}


def setting_title_v2(layers: int, method: str, k_langs: int, draw: int, teacher: str,
                     model: str = ME5_SMALL, budget: int = V2_BUDGET) -> str:
    """A v2 setting's short title, e.g. ``L3 · centred OPTICAL · k = 8 · draw 2 · MiniLM
    teacher``."""
    if method == "bm25":
        return "BM25"
    who = "MiniLM (teacher)" if model == MINILM else f"L{layers}"
    parts = [who, METHOD_LABELS.get(method, method)]
    if method in TRAINED_METHODS:
        parts += [f"k = {k_langs}", f"draw {draw}"]
        if budget != V2_BUDGET:
            parts.append(f"{budget} pairs")
    parts.append(TEACHER_LABELS.get(teacher, teacher))
    return " · ".join(parts)


def _default_training() -> DistillConfig:
    return DistillConfig(**STUDY_TRAINING, lr=DEFAULT_LR[STUDY_TRAINING["student_layers"]])


@dataclass(frozen=True)
class ExperimentConfig:
    """One setting of the study, frozen: what to evaluate, and how to train (``training``).

    Build it from the notebook's flat parameters with :meth:`from_parameters`;
    :meth:`parameters` gives them back, and the run id is a hash of them.
    """

    profile: str = "offline"
    model: str = ME5_SMALL
    k_langs: int = 8
    budget: int = 1000
    eval_tatoeba: tuple[str, ...] = data.EVAL_LANGS_TATOEBA
    eval_xquad: tuple[str, ...] = data.XQUAD_R_QUERY_LANGS
    # webfaq profile only: WebFAQ source (Hub id or local JSONL dir), pool and eval languages
    webfaq_source: str = data.WEBFAQ_BITEXTS
    train_langs: tuple[str, ...] = ()
    eval_webfaq: tuple[str, ...] = ()
    n_boot: int = 1000  # bootstrap resamples for the confidence intervals
    # design v2 (see DESIGNS); its fields are not part of v1 run ids
    design: str = "v1"
    teacher: str = ME5_SMALL  # v2: the frozen English teacher (models.TEACHERS)
    draw: int = 0  # v2: the language draw (and English ids) of multiway.sample_fixed_content
    relatives: bool = True  # v2: False uses the "no relatives" training pool
    eval_flores: tuple[str, ...] = multiway.EVAL_LANGS_FLORES
    split: str = "eval"  # v2: "dev" evaluates on the development languages only
    sample: str = "fixed"  # v2: "pool" for the learning curve (budget 0: the whole pool)
    #: torch intra-op threads for this setting (None: leave torch's default). Not part of the
    #: run id; recorded in setting.json next to every timing.
    threads: int | None = None
    training: DistillConfig = dataclasses.field(default_factory=_default_training)

    def __post_init__(self):
        for name in ("eval_tatoeba", "eval_xquad", "train_langs", "eval_webfaq", "eval_flores"):
            value = getattr(self, name)
            if isinstance(value, str):
                raise ValueError(
                    f"{name} must be a list of language codes, got the string {value!r}; "
                    f"with papermill pass lists as YAML: -y '{name}: [swh, amh]'")
            object.__setattr__(self, name, tuple(value))

    # the training settings, read through
    layers = property(lambda self: self.training.student_layers)
    method = property(lambda self: self.training.method)
    seed = property(lambda self: self.training.seed)
    device = property(lambda self: self.training.device)

    @classmethod
    def from_parameters(cls, **params) -> ExperimentConfig:
        """Build from notebook/CLI parameters: ``None`` means the study's default
        (``lr=None``: :data:`DEFAULT_LR` of the depth)."""
        names = {f.name for f in dataclasses.fields(cls)} - {"training"}
        unknown = sorted(set(params) - names - set(TRAINING_PARAMETERS))
        if unknown:
            raise ValueError(f"Unknown parameter(s) {unknown} for an experiment setting "
                             f"(valid: {', '.join(sorted(names | set(TRAINING_PARAMETERS)))})")
        params = {k: v for k, v in params.items() if v is not None}
        given = set(params)  # before the training parameters move into ``training``
        training = dict(STUDY_TRAINING)
        training.update({TRAINING_PARAMETERS[k]: params.pop(k)
                         for k in list(params) if k in TRAINING_PARAMETERS})
        model = params.get("model", ME5_SMALL)
        if params.get("design", "v1") != "v2":
            training.setdefault("lr", DEFAULT_LR.get(training["student_layers"], 5e-5))
            return cls(**params, training=DistillConfig(**training, student=model,
                                                        teacher=model))
        teacher = params.get("teacher", ME5_SMALL)
        if teacher not in TEACHERS:
            raise ValueError(f"Unknown teacher {teacher!r} (choose from {', '.join(TEACHERS)})")
        if model == MINILM and "layers" not in given:
            training["student_layers"] = 6
        tuned = tuned_v2(teacher, training.get("method", "optical"), training["student_layers"])
        training.setdefault("lr", tuned.get("lr", DEFAULT_LR.get(training["student_layers"],
                                                                  5e-5)))
        if "epochs" not in given and "epochs" in tuned:
            training["epochs"] = tuned["epochs"]
        params.setdefault("budget", V2_BUDGET)
        params.setdefault("eval_tatoeba", multiway.EVAL_LANGS_TATOEBA_V2)
        return cls(**params, training=DistillConfig(**training, student=model,
                                                    teacher=TEACHERS[teacher]))

    def parameters(self) -> dict:
        """The flat parameters of this setting, as the notebook receives them."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
               if f.name != "training"}
        out.update({k: getattr(self.training, field) for k, field in TRAINING_PARAMETERS.items()})
        return out

    def to_dict(self) -> dict:
        return {**self.parameters(), "training": self.training.to_dict()}

    def table(self):
        """The setting as a two-column table (for notebooks)."""
        import pandas as pd

        items = {"run_id": self.run_id, **self.parameters()}
        return pd.DataFrame({"value": [", ".join(v) if isinstance(v, tuple) else v
                                       for v in items.values()]}, index=list(items))

    @property
    def title(self) -> str:
        if self.design == "v1":
            return setting_title(self.layers, self.method, self.k_langs, self.seed)
        if self.trains and self.sample == "pool":
            size = "whole pool" if self.budget == multiway.WHOLE_POOL else f"{self.budget} pairs"
            return " · ".join([f"L{self.layers}", METHOD_LABELS[self.method], f"pool, {size}",
                               f"draw {self.draw}", TEACHER_LABELS[self.teacher]])
        return setting_title_v2(self.layers, self.method, self.k_langs, self.draw,
                                self.teacher, self.model, self.budget)

    @property
    def trains(self) -> bool:
        """Whether this setting distils (zero-shot and BM25 settings do not)."""
        return self.method in TRAINED_METHODS

    @property
    def run_id(self) -> str:
        """A content hash of every parameter that affects the result: one id per setting
        (the device it runs on is not one of them: :data:`HASHED_AS`).

        The zero-shot baseline trains nothing, so the training parameters are left out of
        its hash (the same baseline serves every grid that contains it).
        """
        params = {k: HASHED_AS.get(k, v) for k, v in self.parameters().items()
                  if k not in EXECUTION_FIELDS
                  and not (k in LATER_DEFAULTS and v == LATER_DEFAULTS[k])}
        if self.design == "v1":
            params = {k: v for k, v in params.items() if k not in V2_ONLY}
        if not self.trains:
            params = {k: v for k, v in params.items() if k not in TRAINING_ONLY}
        if self.method == "bm25":
            params = {k: v for k, v in params.items() if k not in LEXICAL_FREE}
        digest = hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:8]
        if self.design == "v1":
            slug = f"L{self.layers}-{self.method}-k{self.k_langs if self.trains else 0}"
            return f"{slug}-s{self.seed}-{digest}"
        if self.method == "bm25":
            return f"v2-bm25-{digest}"
        who = "minilm" if self.model == MINILM else f"L{self.layers}"
        what = self.method.replace("+", "-")
        if self.trains and self.sample == "pool":
            what += f"-pool{self.budget or 'all'}-d{self.draw}-s{self.seed}"
        elif self.trains:
            what += f"-k{self.k_langs}-d{self.draw}-s{self.seed}"
        return f"v2-{who}-{what}-{TEACHER_SLUG[self.teacher]}-{digest}"

def validate(config: ExperimentConfig) -> None:
    """Raise ``ValueError`` with a clear message if the setting cannot run. Cheap."""
    c = config
    if c.profile not in PROFILES:
        raise ValueError(f"Unknown profile {c.profile!r} (choose from {', '.join(PROFILES)})")
    if c.method not in METHODS:
        raise ValueError(f"Unknown method {c.method!r} (choose from {', '.join(METHODS)})")
    if c.design not in DESIGNS:
        raise ValueError(f"Unknown design {c.design!r} (choose from {', '.join(DESIGNS)})")
    if c.design == "v2":
        return _validate_v2(c)
    if c.method not in ("none", "mse", "optical"):
        raise ValueError(f"method={c.method!r} exists in design v2 only (pass design='v2')")
    depths = sorted({d for _, d in FAMILY.values()})
    if c.model == ME5_SMALL and c.layers not in depths:
        raise ValueError(f"layers={c.layers} is not in the me5-small family {depths}")
    if c.profile == "webfaq":
        if not c.eval_webfaq or (c.method != "none" and not c.train_langs):
            raise ValueError("The webfaq profile needs eval_webfaq and (to distil) train_langs")
        overlap = sorted(set(c.eval_webfaq) & set(c.train_langs))
        if overlap:
            raise ValueError(f"Evaluation languages {overlap} are also training languages: "
                             "zero-shot needs them disjoint")
        if c.method != "none" and not 1 <= c.k_langs <= len(c.train_langs):
            raise ValueError(f"k_langs={c.k_langs} but train_langs has {len(c.train_langs)}")
        data.check_hub(c.webfaq_source)
        return
    known = set(data.tatoeba_languages())
    bad = [lang for lang in c.eval_tatoeba if lang not in known]
    if bad:
        raise ValueError(f"Unknown Tatoeba evaluation language(s) {bad} "
                         f"(available: {', '.join(sorted(known))})")
    bad = [lang for lang in c.eval_xquad
           if data.normalize_code(lang) not in data.XQUAD_R_QUERY_LANGS
           and lang not in data.XQUAD_R_CODES]
    if bad:
        raise ValueError(f"Unknown XQuAD-R query language(s) {bad} "
                         f"(available: {', '.join(data.XQUAD_R_QUERY_LANGS)})")
    if c.method != "none":
        pool = training_pool(c)
        if c.k_langs < 1 or c.k_langs > len(pool):
            raise ValueError(f"k_langs={c.k_langs} but the training pool has {len(pool)} "
                             f"languages (1..{len(pool)} allowed)")
        largest = data.max_budget(pool, [c.k_langs])
        if not 1 <= c.budget <= largest:
            raise ValueError(f"budget={c.budget} pairs cannot be split over k={c.k_langs} "
                             f"languages of the pool (at most {largest})")


def _validate_v2(c: ExperimentConfig) -> None:
    if c.profile != "offline":
        raise ValueError("design v2 runs on the offline data profile")
    if c.teacher not in TEACHERS:
        raise ValueError(f"Unknown teacher {c.teacher!r} (choose from {', '.join(TEACHERS)})")
    if c.split not in SPLITS:
        raise ValueError(f"Unknown split {c.split!r} (choose from {', '.join(SPLITS)})")
    if c.model not in (ME5_SMALL, MINILM):
        raise ValueError(f"design v2 students are {ME5_SMALL!r} (or {MINILM!r} zero-shot, the "
                         f"teacher's own reference), not {c.model!r}")
    depths = sorted({d for _, d in FAMILY.values()})
    if c.model == ME5_SMALL and c.layers not in depths:
        raise ValueError(f"layers={c.layers} is not in the me5-small family {depths}")
    if c.model == MINILM and c.trains:
        raise ValueError("minilm-l6 is a teacher: it is evaluated zero-shot only")
    flores = set(multiway.EVAL_LANGS_FLORES) | set(multiway.DEV_LANGS_FLORES)
    bad = [x for x in c.eval_flores if x not in flores]
    if bad:
        raise ValueError(f"Unknown FLORES-200 evaluation language(s) {bad} (available: "
                         f"{', '.join(sorted(flores))})")
    if c.split == "eval" and set(c.eval_flores) & set(multiway.DEV_LANGS_FLORES):
        raise ValueError("development languages are for tuning only: use split='dev'")
    bad = [x for x in c.eval_tatoeba if x not in multiway.EVAL_LANGS_TATOEBA_V2]
    if bad:
        raise ValueError(f"Tatoeba evaluation language(s) {bad} are not v2 evaluation "
                         f"languages ({', '.join(multiway.EVAL_LANGS_TATOEBA_V2)})")
    bad = [x for x in c.eval_xquad if data.normalize_code(x) not in data.XQUAD_R_QUERY_LANGS]
    if bad:
        raise ValueError(f"Unknown XQuAD-R query language(s) {bad} "
                         f"(available: {', '.join(data.XQUAD_R_QUERY_LANGS)})")
    if c.sample not in SAMPLES:
        raise ValueError(f"Unknown sample {c.sample!r} (choose from {', '.join(SAMPLES)})")
    if c.trains and c.sample == "pool":
        if c.budget < 0:
            raise ValueError(f"budget={c.budget}: use a positive number of pairs, or "
                             f"{multiway.WHOLE_POOL} for the whole pool")
        return
    if c.trains:
        pool = multiway.training_pool_ntrex(c.relatives)
        if not 1 <= c.k_langs <= len(pool):
            raise ValueError(f"k_langs={c.k_langs} but the training pool has {len(pool)} "
                             f"languages (1..{len(pool)} allowed)")
        if not 1 <= c.budget <= multiway.NTREX_LINES or c.budget % c.k_langs:
            raise ValueError(f"budget={c.budget} must be at most {multiway.NTREX_LINES} "
                             f"(the NTREX-128 sentences) and divisible by k={c.k_langs}; "
                             f"{V2_BUDGET} works for every k of the study")
        if c.draw < 0:
            raise ValueError(f"draw must be >= 0, got {c.draw}")


def v2_suites(config: ExperimentConfig) -> list[protocol.Suite]:
    """The evaluation suites of a v2 setting (development: FLORES-200 only)."""
    if config.split == "dev":
        return protocol.suites(flores=multiway.DEV_LANGS_FLORES, tatoeba=(), xquad=())
    return protocol.suites(flores=config.eval_flores, tatoeba=config.eval_tatoeba,
                           xquad=config.eval_xquad)


def training_pool(config: ExperimentConfig) -> Mapping[str, tuple[data.BitextPair, ...]]:
    """The training pool minus anything evaluated in this setting (read-only)."""
    if config.profile == "webfaq":
        return MappingProxyType({lang: tuple(data.webfaq_bitexts(lang, config.webfaq_source))
                                 for lang in config.train_langs})
    return _offline_pool(frozenset(config.eval_tatoeba) | data.TRAINING_EXCLUDED)


@functools.lru_cache(maxsize=4)
def _offline_pool(held_out: frozenset[str]) -> Mapping[str, tuple[data.BitextPair, ...]]:
    # immutable, so the cached pool cannot be changed by one caller under another
    pool = data.training_pool(exclude=held_out)
    return MappingProxyType({lang: tuple(pairs) for lang, pairs in pool.items()})


def training_sample(config: ExperimentConfig, pool: Mapping | None = None):
    """The distillation bitext of this setting (``None`` for the zero-shot baseline),
    drawn from ``pool`` (default :func:`training_pool`)."""
    if not config.trains:
        return None
    if config.design == "v2" and config.sample == "pool":
        return multiway.sample_pool(config.budget, config.draw, relatives=config.relatives)
    if config.design == "v2":
        return multiway.sample_fixed_content(config.k_langs, config.budget, config.draw,
                                             relatives=config.relatives)
    if config.profile == "webfaq":
        exclude = set(config.eval_webfaq)
    else:
        exclude = set(config.eval_tatoeba) | set(data.XQUAD_R_LANGS)
    pool = training_pool(config) if pool is None else pool
    return data.sample_bitext(pool, k=config.k_langs, budget=config.budget,
                              seed=config.seed, exclude=exclude)


def diversity_table(sample):
    """The realised diversity of a training sample as a small table (or a note)."""
    import pandas as pd

    if sample is None:
        return pd.DataFrame({"value": ["zero-shot baseline: no training data"]},
                            index=["sample"])
    if isinstance(sample, multiway.FixedContentSample | multiway.PoolSample):
        rec = sample.record()
        rec["languages"] = ", ".join(rec["languages"])
        rec["pairs"] = len(sample.pairs)
        return pd.DataFrame({"value": list(rec.values())}, index=list(rec))
    d = sample.diversity
    per_lang = ", ".join(f"{lang} {n}" for lang, n in sorted(d.pairs_per_language.items()))
    rows = {"languages (k)": d.k, "families": f"{d.n_families}: {', '.join(d.families)}",
            "scripts": f"{d.n_scripts}: {', '.join(d.scripts)}",
            "entropy (bits)": round(d.entropy_bits, 3), "pairs per language": per_lang,
            "pairs": len(sample.pairs)}
    return pd.DataFrame({"value": list(rows.values())}, index=list(rows))


def evaluation_tasks(config: ExperimentConfig) -> dict[str, list[data.RetrievalTask]]:
    """``{suite: [one task per query language]}`` for this setting."""
    if config.profile == "webfaq":
        return {"webfaq": [data.webfaq_clir_task(lang, config.webfaq_source)
                           for lang in config.eval_webfaq]}
    suites = {"tatoeba": data.load_offline_tasks(tatoeba=config.eval_tatoeba, xquad=()),
              "xquad-r": data.load_offline_tasks(tatoeba=(), xquad=config.eval_xquad)}
    return {suite: list(tasks.values()) for suite, tasks in suites.items() if tasks}


def precision_of(config: ExperimentConfig) -> str:
    """The forward-pass arithmetic of every encoder of a setting (``amp="bf16"``: bf16
    autocast for training, the teacher's states and every evaluation, baselines included,
    so that Δ compares like with like)."""
    return "bf16" if config.training.amp == "bf16" else "fp32"


def with_precision(encoder: Encoder | None, config: ExperimentConfig) -> Encoder | None:
    """``encoder`` set to the setting's :func:`precision_of` (returned for chaining)."""
    if encoder is not None and hasattr(encoder, "precision"):
        encoder.precision = precision_of(config)
    return encoder


def load_teacher(config: ExperimentConfig) -> Encoder:
    """The frozen full-depth teacher of this setting (load once, pass it to the stages)."""
    if config.method == "bm25":
        return None
    if config.design == "v1" and config.method == "none":
        return None  # v1's zero-shot protocol never uses the teacher
    teacher = load_encoder(config.training.teacher, config.training.teacher_layers,
                           device=config.device)
    teacher.model.requires_grad_(False)
    return with_precision(teacher, config)


def data_folders(config: ExperimentConfig) -> list[str]:
    """The folders of the data directory this setting reads."""
    if config.profile == "webfaq":
        return []
    if config.design == "v2":
        folders = ["flores-200"]
        if config.trains:
            folders.append("ntrex-128")
        if config.trains and config.sample == "pool":
            # the learning-curve pool adds Tatoeba pairs and leaves out every evaluation
            # English sentence, XQuAD-R's included (multiway.evaluation_english)
            folders += ["tatoeba-v1", "xquad-r"]
        if config.split == "eval":
            folders += (["tatoeba-v1"] if config.eval_tatoeba else []) + (
                ["xquad-r"] if config.eval_xquad else [])
        return list(dict.fromkeys(folders))
    return ["tatoeba-v1"] + (["xquad-r"] if config.eval_xquad else [])


def verify_data(config: ExperimentConfig, data_root: Path | None = None) -> dict[str, str]:
    """Check every file this setting reads against its pinned SHA-256 (raises
    :class:`~optical_lib.fetch.ChecksumError` naming the file) before any compute.

    Returns ``{folder: digest of its pinned manifest lines}``, recorded with the results.
    """
    root = data.data_root(data_root)
    digests = {}
    for folder in data_folders(config):
        entries = fetch.read_manifest(folders=[folder])
        for entry in entries:
            fetch.verify_file(root, entry)
        lines = "".join(f"{e.sha256}  {e.path}\n" for e in sorted(entries, key=lambda e: e.path))
        digests[folder] = hashlib.sha256(lines.encode()).hexdigest()
    return digests


#: Environment variable naming the commit of a copied checkout that has no ``.git``.
COMMIT_ENV = "OPTICAL_COMMIT"


def git_commit() -> str | None:
    """The project's commit (with ``-dirty`` if the working tree differs), if it is a
    git checkout; else ``OPTICAL_COMMIT`` if set (a copy of a checkout without ``.git``,
    e.g. on a GPU machine, names the commit it was copied from), else None."""
    import subprocess

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=PROJECT_ROOT, capture_output=True,
                              text=True, check=True, timeout=10).stdout.strip()

    try:
        commit = git("rev-parse", "HEAD")
        dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.SubprocessError):
        return os.environ.get(COMMIT_ENV) or None
    return commit + ("-dirty" if dirty else "")


def cpu_fields() -> dict[str, str]:
    """The first processor's fields of ``/proc/cpuinfo`` ("model name", "cpu family",
    "model", ...); empty where there is no such file (not Linux)."""
    fields: dict[str, str] = {}
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if not key.strip():
                break  # the first processor's block ends
            fields.setdefault(key.strip(), value.strip())
    return fields


def cpu_name() -> str:
    """The CPU a run's timings come from: its model name and, on Linux, its family and model
    numbers (:func:`cpu_fields`; a virtual machine's name is often generic, "AMD EPYC", while
    the family and model tell the generation), else :func:`platform.processor`; the vector
    instructions torch's CPU kernels use and the cores this process may use, e.g.
    ``"AMD EPYC (family 25, model 1; AVX2, 2 cores)"``."""
    import platform

    fields = cpu_fields()
    model = (fields.get("model name") or platform.processor() or platform.machine()
             or "unknown CPU")
    family = (f"family {fields['cpu family']}, model {fields['model']}; "
              if "cpu family" in fields and "model" in fields else "")
    cores = (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
             else os.cpu_count())
    return f"{model} ({family}{torch.backends.cpu.get_cpu_capability()}, {cores} cores)"


def provenance(data_digests: Mapping[str, str], device: str = "cpu",
               amp: str | None = None) -> dict:
    """What a reader needs to trust a run: threads, the CPU (``cpu``, :func:`cpu_name`), code
    version, data, date (UTC), how the teacher's vectors were computed (``teacher_states``,
    :data:`TEACHER_STATES_RULE`), on a GPU its name (``accelerator``) and, for a bf16 setting,
    how its bf16 products ran (``bf16_kernels``: ``native`` or ``emulated``,
    :func:`optical_lib.bf16.kernels`)."""
    import datetime
    import platform

    from .distill import TEACHER_STATES_RULE

    record = {"threads": torch.get_num_threads(), "cpu": cpu_name(), "torch": torch.__version__,
              "python": platform.python_version(), "commit": git_commit(),
              "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "data_sha256": dict(data_digests), "teacher_states": TEACHER_STATES_RULE}
    if torch.device(device).type == "cuda":
        record["accelerator"] = torch.cuda.get_device_name(torch.device(device))
    if amp == "bf16":
        record["bf16_kernels"] = bf16.kernels(device)
    return record


def apply_threads(config: ExperimentConfig) -> int:
    """Set torch's intra-op threads to ``config.threads`` (if given); returns the count in
    use, which :func:`write_setting` records next to the timings."""
    if config.threads is not None:
        torch.set_num_threads(config.threads)
    return torch.get_num_threads()


#: Suffix of the suites evaluated with teacher-encoded documents (OPTICAL's protocol).
TEACHER_DOCS = "+teacher-docs"


def run_meta(config: ExperimentConfig, student: Encoder | None) -> dict:
    zero_shot = not config.trains
    meta = {
        "run_id": config.run_id, "profile": config.profile, "model": config.model,
        "layers": None if student is None else student.layers,
        "nonemb_params": None if student is None else student.nonembedding_params,
        "method": config.method, "k_langs": None if zero_shot else config.k_langs,
        "budget": None if zero_shot else config.budget, "seed": config.seed,
    }
    if config.design == "v2":
        meta.update({"design": "v2", "teacher": None if config.method == "bm25" else
                     config.teacher, "draw": None if zero_shot else config.draw,
                     "relatives": None if zero_shot else config.relatives,
                     "split": config.split})
    return meta


def protocols(config: ExperimentConfig, student: Encoder,
              teacher: Encoder | None) -> dict[str, Encoder]:
    """Document encoders to evaluate with: ``{suite suffix: encoder}``.

    The primary protocol (no suffix) encodes documents with the student itself, exactly as
    the zero-shot baseline does. Distilled students are also evaluated with the frozen
    teacher's document vectors (suffix :data:`TEACHER_DOCS`), as in OPTICAL.
    """
    if config.method == "none":
        return {"": student}
    if teacher is None:
        raise ValueError("a distilled student is also evaluated with teacher-encoded "
                         "documents: pass teacher= (experiment.load_teacher(config))")
    return {"": student, TEACHER_DOCS: teacher}


def evaluate_student(config: ExperimentConfig, student: Encoder, teacher: Encoder | None = None,
                     tasks: dict | None = None, n_boot: int | None = None):
    """Retrieve and evaluate every task of the setting under every protocol.

    Returns (result rows, per-query rows); their ``task`` column is the suite name
    (``tatoeba``, ``xquad-r``, ``tatoeba+teacher-docs``, ...), ``query_lang`` tells the
    languages apart. Texts are encoded at each model's maximum input length. One
    :class:`~optical_lib.retrieval.EmbeddingCache` serves the whole evaluation: query
    vectors are computed once for both protocols, a corpus shared by several tasks
    (XQuAD-R) once, and pristine encoders' document vectors are kept on disk.
    """
    n_boot = config.n_boot if n_boot is None else n_boot
    with_precision(student, config)
    if config.design == "v2":
        return _evaluate_v2(config, student, teacher, tasks, n_boot)
    tasks = evaluation_tasks(config) if tasks is None else tasks
    meta = run_meta(config, student)
    doc_encoders = protocols(config, student, teacher)
    classes = data.language_table()["joshi_class"].astype("string").fillna("unknown").to_dict()
    cache = EmbeddingCache(cache_dir() / "embeddings")
    rows, per_query = [], []
    for suite, suite_tasks in tasks.items():
        for suffix, doc_encoder in doc_encoders.items():
            runs = {task.name: retrieve(student, doc_encoder, task, k=100, cache=cache)
                    for task in suite_tasks}
            r, pq = evaluate_runs(runs, suite_tasks, meta, suite=suite + suffix,
                                  lang_class=classes, n_boot=n_boot, seed=config.seed)
            rows += r
            per_query += pq
    return rows, per_query


def baseline_student(config: ExperimentConfig) -> Encoder:
    """The same-depth un-distilled student: Δ's reference (its vectors come from the
    embedding cache after the first use)."""
    return with_precision(load_encoder(config.model, config.layers, device=config.device),
                          config)


def _evaluate_v2(config: ExperimentConfig, student: Encoder | None, teacher: Encoder | None,
                 suite_list: list | None, n_boot: int):
    suite_list = v2_suites(config) if suite_list is None else suite_list
    cache = EmbeddingCache(cache_dir() / "embeddings")
    baseline = baseline_student(config) if config.trains else None
    return protocol.evaluate_v2(run_meta(config, student), student, teacher, baseline,
                                suite_list, cache, n_boot=n_boot, seed=config.seed,
                                lexical=config.method == "bm25")


#: English texts whose teacher states a learning-curve run keeps in memory (about 2.5 GB);
#: the rest are read back from the disk store.
POOL_MEMORY_LIMIT = 40_000


def teacher_states(config: ExperimentConfig | None = None) -> TeacherStates:
    """The store of frozen-teacher token vectors, on disk and shared by every run: the
    fixed-content samples' English sentences recur across k, depths and methods, and the
    learning curve's pool samples are nested (its whole pool has about 43,000 distinct
    English sentences, about 2 GB of vectors), so one depth's run computes them for the
    others. A pool run keeps at most :data:`POOL_MEMORY_LIMIT` of them in memory. The
    vectors do not depend on which run or batch computed them (fixed-length rule), so
    sharing them changes no result."""
    store = cache_dir() / "teacher-states"
    if config is not None and config.sample == "pool":
        return TeacherStates(store, memory_limit=POOL_MEMORY_LIMIT)
    return TeacherStates(store)


#: Seconds of training between two checkpoints of a setting: a setting cut short (a
#: session's end, a killed worker) resumes from its last checkpoint, at most this much
#: training lost, to the result it would have had uncut.
CHECKPOINT_S = 300.0


def checkpoint_dir(config: ExperimentConfig) -> Path:
    """Where a setting's training checkpoint is kept while it runs: in the cache (never in
    the results), one folder per run id and device (a checkpoint resumes on the device that
    wrote it)."""
    return cache_dir() / "checkpoints" / f"{config.run_id}-{torch.device(config.device).type}"


def train_student(config: ExperimentConfig, sample, teacher: Encoder | None,
                  progress: bool = True, checkpoint_s: float | None = CHECKPOINT_S):
    """:func:`~optical_lib.distill.distill` for ``config``: ``(student, history)``,
    checkpointed every ``checkpoint_s`` seconds into :func:`checkpoint_dir` and resumed
    from there when an earlier attempt was cut short. A checkpoint written by another
    training config under the same folder (a code change that left the run id alone) is
    dropped with a warning and the run starts over. :func:`discard_checkpoint` removes it
    once the setting's results are written."""
    folder = checkpoint_dir(config) if config.trains and checkpoint_s is not None else None
    found = resumable_checkpoint(config) if folder is not None else None
    if found is not None:
        print(f"resuming {config.run_id} from its checkpoint at step {found['step']}",
              flush=True)
    return distill(config.training, sample.pairs if sample else [], out_dir=folder,
                   teacher=teacher, teacher_states=teacher_states(config), progress=progress,
                   checkpoint_s=checkpoint_s)


def resumable_checkpoint(config: ExperimentConfig) -> dict | None:
    """What the setting's checkpoint holds (:func:`~optical_lib.distill.checkpoint_progress`)
    when a run of ``config`` can resume from it; ``None`` when there is none, and when
    another training config wrote it (a code change that left the run id alone): that one
    is removed with a warning, and the run starts over."""
    found = checkpoint_progress(checkpoint_dir(config))
    if found is not None and found["config"] != config.training.to_dict():
        warnings.warn(f"{checkpoint_dir(config)}: the checkpoint belongs to another training "
                      f"config; starting {config.run_id} over", stacklevel=3)
        discard_checkpoint(config)
        return None
    return found


def discard_checkpoint(config: ExperimentConfig) -> None:
    """Remove the setting's training checkpoint (after its results are written)."""
    shutil.rmtree(checkpoint_dir(config), ignore_errors=True)


#: Per-query columns of design v2: the value, the baseline's value and Δ.
V2_PER_QUERY_COLUMNS = (*PER_QUERY_COLUMNS, "protocol", "baseline", "delta")


def write_setting(config: ExperimentConfig, rows, per_query, history, sample,
                  layout: ResultsLayout, provenance: Mapping | None = None) -> Path:
    """Write the setting's records into its run folder of ``layout`` (each file atomically).

    ``results.json`` is written last: its presence marks the setting as finished.
    ``provenance`` (threads, commit, data checksums, date ...) goes into ``setting.json``.
    """
    run_id = config.run_id
    columns = PER_QUERY_COLUMNS
    if config.design == "v2":
        columns = V2_PER_QUERY_COLUMNS if config.trains else (*PER_QUERY_COLUMNS, "protocol")
    write_results(per_query, layout.per_query_file(run_id), columns=columns)
    if history is not None and len(history):
        atomic_write(layout.history_file(run_id), lambda tmp: history.to_csv(tmp, index=False))
    if sample is None:
        described = None
    elif isinstance(sample, multiway.FixedContentSample | multiway.PoolSample):
        described = sample.record()
    else:
        described = sample.diversity.as_dict()
    atomic_write_json(layout.setting_file(run_id), {
        "run_id": run_id, "config": config.to_dict(), "diversity": described,
        "provenance": dict(provenance or {})})
    write_results(rows, layout.results_file(run_id))
    return layout.run_dir(run_id)
