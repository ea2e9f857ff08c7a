"""One setting of the study: (model size x data diversity x seed x method) -> result records.

A setting is a frozen :class:`ExperimentConfig`. :func:`validate` checks it against the
data before anything expensive runs; then the stages are plain functions the notebook
calls one per cell::

    config = ExperimentConfig(layers=3, method="optical", k_langs=8, seed=0)
    validate(config)                                  # clear error before compute
    sample = training_sample(config)                  # .pairs, .diversity
    student, history = distill(config.distill_config(), sample.pairs)
    rows, per_query = evaluate_student(config, student)
    write_setting(config, rows, per_query, history, sample, out_dir)

Retrieval protocol: the zero-shot baseline (``method="none"``) encodes queries and English
documents with the same L-layer model; a distilled student encodes the queries and the
frozen teacher (full me5-small) encodes the English documents, as in OPTICAL. Teacher
document embeddings do not depend on the setting and are cached on disk.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from . import data
from .distill import METHODS, DistillConfig
from .evaluate import evaluate_runs, write_results
from .models import FAMILY, ME5_SMALL, Encoder, load_encoder
from .paths import cache_dir
from .retrieval import encode_corpus, encode_queries, run_from_topk, search

PROFILES = ("offline", "webfaq")
#: Parameters that say how a setting is computed, not what: left out of the run id.
EXECUTION_FIELDS = ("threads",)
TRAINING_FIELDS = ("k_langs", "budget", "train_langs", "epochs", "lr", "batch_size", "eps",
                   "sinkhorn_iters", "max_length")
SUITES = ("tatoeba", "xquad-r")
#: Learning rate per student depth, chosen on the development languages
#: (``python -m optical_lib.tune``; the book's method page shows the sweep).
DEFAULT_LR = {12: 2e-4, 6: 5e-4, 3: 1e-3, 2: 2e-3}


@dataclass(frozen=True)
class ExperimentConfig:
    """The parameters of one setting (the notebook's ``parameters`` cell, frozen)."""

    profile: str = "offline"
    model: str = ME5_SMALL
    layers: int = 3
    method: str = "optical"
    k_langs: int = 8
    budget: int = 1000
    seed: int = 0
    eval_tatoeba: tuple[str, ...] = data.EVAL_LANGS_TATOEBA
    eval_xquad: tuple[str, ...] = data.XQUAD_R_QUERY_LANGS
    # webfaq profile only: WebFAQ source (Hub id or local JSONL dir), pool and eval languages
    webfaq_source: str = data.WEBFAQ_BITEXTS
    train_langs: tuple[str, ...] = ()
    eval_webfaq: tuple[str, ...] = ()
    device: str = "cpu"
    # distillation hyper-parameters (DistillConfig); the defaults are the grid's settings
    epochs: int = 3
    lr: float | None = None  # None: DEFAULT_LR for this depth
    batch_size: int = 16
    eps: float = 0.05
    sinkhorn_iters: int = 50
    max_length: int = 64
    n_boot: int = 1000  # bootstrap resamples for the confidence intervals
    #: torch intra-op threads for this setting (None: leave torch's default). Not part of the
    #: run id; recorded in setting.json next to every timing.
    threads: int | None = None

    def __post_init__(self):
        for name in ("eval_tatoeba", "eval_xquad", "train_langs", "eval_webfaq"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        if self.lr is None:
            object.__setattr__(self, "lr", DEFAULT_LR.get(self.layers, 5e-5))

    @classmethod
    def from_parameters(cls, **params) -> ExperimentConfig:
        """Build from notebook/CLI parameters: ``None`` means the study's default."""
        defaults = {"eval_tatoeba": data.EVAL_LANGS_TATOEBA,
                    "eval_xquad": data.XQUAD_R_QUERY_LANGS}
        params = {k: (defaults[k] if v is None and k in defaults else v)
                  for k, v in params.items()}
        unknown = sorted(set(params) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise ValueError(f"Unknown parameter(s) {unknown} for an experiment setting")
        return cls(**params)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def table(self):
        """The setting as a two-column table (for notebooks)."""
        import pandas as pd

        items = {"run_id": self.run_id, **self.to_dict()}
        return pd.DataFrame({"value": [", ".join(v) if isinstance(v, tuple) else v
                                       for v in items.values()]}, index=list(items))

    @property
    def run_id(self) -> str:
        """A content hash of every parameter that affects the result: one id per setting.

        The zero-shot baseline trains nothing, so the training parameters are left out of
        its hash (the same baseline serves every grid that contains it).
        """
        params = {k: v for k, v in self.to_dict().items() if k not in EXECUTION_FIELDS}
        if self.method == "none":
            params = {k: v for k, v in params.items() if k not in TRAINING_FIELDS}
        blob = json.dumps(params, sort_keys=True).encode()
        slug = f"L{self.layers}-{self.method}-k{self.k_langs if self.method != 'none' else 0}"
        return f"{slug}-s{self.seed}-{hashlib.sha256(blob).hexdigest()[:8]}"

    def distill_config(self) -> DistillConfig:
        return DistillConfig(
            method=self.method, student=self.model, student_layers=self.layers,
            teacher=self.model, epochs=self.epochs, lr=self.lr, batch_size=self.batch_size,
            eps=self.eps, sinkhorn_iters=self.sinkhorn_iters, max_length=self.max_length,
            seed=self.seed, device=self.device,
        )


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
    c.distill_config()  # its own checks (eps, lr, ...)
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
    bad = [lang for lang in c.eval_xquad if data.normalize_code(lang) not in data.XQUAD_R_QUERY_LANGS
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


def training_pool(config: ExperimentConfig) -> dict[str, list[data.BitextPair]]:
    """The training pool minus anything evaluated in this setting (do not modify it)."""
    if config.profile == "webfaq":
        return {lang: data.webfaq_bitexts(lang, config.webfaq_source)
                for lang in config.train_langs}
    return _offline_pool(frozenset(config.eval_tatoeba) | data.TRAINING_EXCLUDED)


@functools.lru_cache(maxsize=4)
def _offline_pool(held_out: frozenset[str]) -> dict[str, list[data.BitextPair]]:
    return data.training_pool(exclude=held_out)


def training_sample(config: ExperimentConfig):
    """The distillation bitext of this setting (``None`` for the zero-shot baseline)."""
    if config.method == "none":
        return None
    if config.profile == "webfaq":
        exclude = set(config.eval_webfaq)
    else:
        exclude = set(config.eval_tatoeba) | set(data.XQUAD_R_LANGS)
    return data.sample_bitext(training_pool(config), k=config.k_langs, budget=config.budget,
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
    suites = {}
    if config.eval_tatoeba:
        suites["tatoeba"] = [data.tatoeba_task(lang) for lang in config.eval_tatoeba]
    if config.eval_xquad:
        suites["xquad-r"] = [data.xquad_r_task(lang) for lang in config.eval_xquad]
    return suites


def _corpus_digest(corpus: dict[str, str]) -> str:
    h = hashlib.sha256()
    for doc_id, text in corpus.items():
        h.update(doc_id.encode() + b"\0" + text.encode() + b"\0")
    return h.hexdigest()[:16]


def corpus_embeddings(encoder: Encoder, corpus: dict[str, str],
                      prefix: str = "passage: ") -> tuple[list[str], torch.Tensor]:
    """Encode a corpus, caching on disk when the encoder's weights are pristine."""
    if encoder.cache_key is None:
        return encode_corpus(encoder, corpus, prefix, progress=False)
    path = (cache_dir() / "embeddings" / encoder.cache_key /
            f"{_corpus_digest(corpus)}-{prefix.strip(': ')}.pt")
    if path.exists():
        saved = torch.load(path)
        return saved["doc_ids"], saved["emb"]
    doc_ids, emb = encode_corpus(encoder, corpus, prefix, progress=False)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save({"doc_ids": doc_ids, "emb": emb}, tmp)
    os.replace(tmp, path)
    return doc_ids, emb


_TEACHERS: dict[tuple[str, str], Encoder] = {}


def teacher_encoder(config: ExperimentConfig) -> Encoder:
    """The frozen full-depth teacher, loaded once per process."""
    key = (config.model, config.device)
    if key not in _TEACHERS:
        _TEACHERS[key] = load_encoder(config.model, device=config.device)
        _TEACHERS[key].model.requires_grad_(False)
    return _TEACHERS[key]


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
    return {"": student, TEACHER_DOCS: teacher or teacher_encoder(config)}


def evaluate_student(config: ExperimentConfig, student: Encoder, teacher: Encoder | None = None,
                     tasks: dict | None = None, n_boot: int | None = None):
    """Retrieve and evaluate every task of the setting under every protocol.

    Returns (result rows, per-query rows); their ``task`` column is the suite name
    (``tatoeba``, ``xquad-r``, ``tatoeba+teacher-docs``, ...), ``query_lang`` tells the
    languages apart. Query vectors are computed once and reused across protocols.
    """
    tasks = evaluation_tasks(config) if tasks is None else tasks
    n_boot = config.n_boot if n_boot is None else n_boot
    meta = run_meta(config, student)
    doc_encoders = protocols(config, student, teacher)
    classes = data.language_table()["joshi_class"].astype("string").fillna("unknown").to_dict()
    rows, per_query = [], []
    for suite, suite_tasks in tasks.items():
        runs = {suffix: {} for suffix in doc_encoders}
        corpus_memo: dict[tuple[int, str], tuple[list[str], torch.Tensor]] = {}
        for task in suite_tasks:
            qids, q_emb = encode_queries(student, task.queries, progress=False)
            digest = _corpus_digest(task.corpus)
            for suffix, doc_encoder in doc_encoders.items():
                key = (id(doc_encoder), digest)
                if key not in corpus_memo:  # XQuAD-R tasks share one English corpus
                    corpus_memo[key] = corpus_embeddings(doc_encoder, task.corpus)
                doc_ids, d_emb = corpus_memo[key]
                scores, indices = search(q_emb, d_emb, k=100)
                runs[suffix][task.name] = run_from_topk(qids, doc_ids, scores, indices)
        for suffix, suite_runs in runs.items():
            r, pq = evaluate_runs(suite_runs, suite_tasks, meta, suite=suite + suffix,
                                  lang_class=classes, n_boot=n_boot, seed=config.seed)
            rows += r
            per_query += pq
    return rows, per_query


def write_setting(config: ExperimentConfig, rows, per_query, history, sample,
                  out_dir: str | Path) -> Path:
    """Write the setting's records into ``out_dir/<run_id>/`` (each file atomically).

    ``results.json`` is written last: its presence marks the setting as finished.
    """
    out = Path(out_dir) / config.run_id
    out.mkdir(parents=True, exist_ok=True)
    from .evaluate import PER_QUERY_COLUMNS

    write_results(per_query, out / "per_query.parquet", columns=PER_QUERY_COLUMNS)
    if history is not None and len(history):
        history.to_csv(out / "history.csv.tmp", index=False)
        os.replace(out / "history.csv.tmp", out / "history.csv")
    meta = {"config": config.to_dict(), "run_id": config.run_id,
            "diversity": sample.diversity.as_dict() if sample is not None else None}
    (out / "setting.json.tmp").write_text(json.dumps(meta, indent=1, default=str))
    os.replace(out / "setting.json.tmp", out / "setting.json")
    write_results(rows, out / "results.json")
    return out
