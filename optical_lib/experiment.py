"""One setting of the study: (model size x data diversity x seed x method) -> result records.

A setting is a frozen :class:`ExperimentConfig`. :func:`validate` checks it against the
data before anything expensive runs; then the stages are plain functions the notebook
calls one per cell::

    config = ExperimentConfig.from_parameters(layers=3, method="optical", k_langs=8)
    validate(config)                                  # clear error before compute
    teacher = load_teacher(config)                    # loaded once, passed explicitly
    sample = training_sample(config)                  # .pairs, .diversity
    student, history = distill(config.training, sample.pairs, teacher=teacher)
    rows, per_query = evaluate_student(config, student, teacher)
    write_setting(config, rows, per_query, history, sample, ResultsLayout())

Retrieval protocols (:func:`protocols`): the primary one encodes queries and English
documents with the student itself, as the zero-shot baseline (``method="none"``) does; a
distilled student is also evaluated with the frozen teacher (full me5-small) encoding the
English documents, as in OPTICAL. Document embeddings of pristine encoders do not depend on
the setting and are cached on disk (:class:`~optical_lib.retrieval.EmbeddingCache`).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

import torch

from . import data, fetch
from .distill import METHOD_LABELS, METHODS, DistillConfig
from .evaluate import PER_QUERY_COLUMNS, evaluate_runs, write_results
from .layout import ResultsLayout, atomic_write, atomic_write_json
from .models import FAMILY, ME5_SMALL, Encoder, load_encoder
from .paths import PROJECT_ROOT, cache_dir
from .retrieval import EmbeddingCache, retrieve

PROFILES = ("offline", "webfaq")
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
                       "sinkhorn_iters": "sinkhorn_iters", "max_length": "max_length"}
#: Parameters that only matter when something is trained (left out of a baseline's run id).
TRAINING_ONLY = ("k_langs", "budget", "train_langs", "epochs", "lr", "batch_size", "eps",
                 "sinkhorn_iters", "max_length")
#: Parameters that say how a setting is computed, not what: left out of every run id.
EXECUTION_FIELDS = ("threads",)


def setting_title(layers: int, method: str, k_langs: int | None = None,
                  seed: int | None = None) -> str:
    """A setting's short title, e.g. ``L2 · centred OPTICAL · k = 16 · seed 0``."""
    parts = [f"L{layers}", METHOD_LABELS.get(method, method)]
    if method != "none":
        parts += [f"k = {k_langs}", f"seed {seed}"]
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
    #: torch intra-op threads for this setting (None: leave torch's default). Not part of the
    #: run id; recorded in setting.json next to every timing.
    threads: int | None = None
    training: DistillConfig = dataclasses.field(default_factory=_default_training)

    def __post_init__(self):
        for name in ("eval_tatoeba", "eval_xquad", "train_langs", "eval_webfaq"):
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
        training = dict(STUDY_TRAINING)
        training.update({TRAINING_PARAMETERS[k]: params.pop(k)
                         for k in list(params) if k in TRAINING_PARAMETERS})
        training.setdefault("lr", DEFAULT_LR.get(training["student_layers"], 5e-5))
        model = params.get("model", ME5_SMALL)
        return cls(**params, training=DistillConfig(**training, student=model, teacher=model))

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
        return setting_title(self.layers, self.method, self.k_langs, self.seed)

    @property
    def run_id(self) -> str:
        """A content hash of every parameter that affects the result: one id per setting.

        The zero-shot baseline trains nothing, so the training parameters are left out of
        its hash (the same baseline serves every grid that contains it).
        """
        params = {k: v for k, v in self.parameters().items() if k not in EXECUTION_FIELDS}
        if self.method == "none":
            params = {k: v for k, v in params.items() if k not in TRAINING_ONLY}
        blob = json.dumps(params, sort_keys=True).encode()
        slug = f"L{self.layers}-{self.method}-k{self.k_langs if self.method != 'none' else 0}"
        return f"{slug}-s{self.seed}-{hashlib.sha256(blob).hexdigest()[:8]}"

def validate(config: ExperimentConfig) -> None:
    """Raise ``ValueError`` with a clear message if the setting cannot run. Cheap."""
    c = config
    if c.profile not in PROFILES:
        raise ValueError(f"Unknown profile {c.profile!r} (choose from {', '.join(PROFILES)})")
    if c.method not in METHODS:
        raise ValueError(f"Unknown method {c.method!r} (choose from {', '.join(METHODS)})")
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
    if config.method == "none":
        return None
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


def load_teacher(config: ExperimentConfig) -> Encoder:
    """The frozen full-depth teacher of this setting (load once, pass it to the stages)."""
    teacher = load_encoder(config.training.teacher, config.training.teacher_layers,
                           device=config.device)
    teacher.model.requires_grad_(False)
    return teacher


def data_folders(config: ExperimentConfig) -> list[str]:
    """The folders of the data directory this setting reads."""
    if config.profile == "webfaq":
        return []
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


def git_commit() -> str | None:
    """The project's commit (with ``-dirty`` if the working tree differs), if it is a
    git checkout."""
    import subprocess

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=PROJECT_ROOT, capture_output=True,
                              text=True, check=True, timeout=10).stdout.strip()

    try:
        commit = git("rev-parse", "HEAD")
        dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.SubprocessError):
        return None
    return commit + ("-dirty" if dirty else "")


def provenance(data_digests: Mapping[str, str]) -> dict:
    """What a reader needs to trust a run: threads, code version, data, date (UTC)."""
    import datetime
    import platform

    return {"threads": torch.get_num_threads(), "torch": torch.__version__,
            "python": platform.python_version(), "commit": git_commit(),
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "data_sha256": dict(data_digests)}


def apply_threads(config: ExperimentConfig) -> int:
    """Set torch's intra-op threads to ``config.threads`` (if given); returns the count in
    use, which :func:`write_setting` records next to the timings."""
    if config.threads is not None:
        torch.set_num_threads(config.threads)
    return torch.get_num_threads()


#: Suffix of the suites evaluated with teacher-encoded documents (OPTICAL's protocol).
TEACHER_DOCS = "+teacher-docs"


def run_meta(config: ExperimentConfig, student: Encoder) -> dict:
    zero_shot = config.method == "none"
    return {
        "run_id": config.run_id, "profile": config.profile, "model": config.model,
        "layers": student.layers, "nonemb_params": student.nonembedding_params,
        "method": config.method, "k_langs": None if zero_shot else config.k_langs,
        "budget": None if zero_shot else config.budget, "seed": config.seed,
    }


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
    tasks = evaluation_tasks(config) if tasks is None else tasks
    n_boot = config.n_boot if n_boot is None else n_boot
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


def write_setting(config: ExperimentConfig, rows, per_query, history, sample,
                  layout: ResultsLayout, provenance: Mapping | None = None) -> Path:
    """Write the setting's records into its run folder of ``layout`` (each file atomically).

    ``results.json`` is written last: its presence marks the setting as finished.
    ``provenance`` (threads, commit, data checksums, date ...) goes into ``setting.json``.
    """
    run_id = config.run_id
    write_results(per_query, layout.per_query_file(run_id), columns=PER_QUERY_COLUMNS)
    if history is not None and len(history):
        atomic_write(layout.history_file(run_id), lambda tmp: history.to_csv(tmp, index=False))
    atomic_write_json(layout.setting_file(run_id), {
        "run_id": run_id, "config": config.to_dict(),
        "diversity": sample.diversity.as_dict() if sample is not None else None,
        "provenance": dict(provenance or {})})
    write_results(rows, layout.results_file(run_id))
    return layout.run_dir(run_id)
