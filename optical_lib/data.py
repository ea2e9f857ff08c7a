"""Data: loaders for every data set of the study, language metadata, and diversity sampling.

Everything here returns plain data (book section "Data"):

* a **bitext** is a list of :class:`BitextPair` ``(src_text, tgt_text, src_lang, tgt_lang)``;
  English is always ``tgt`` (``tgt_lang == "eng"``), except for Bible bitext, which has no
  English (see :func:`bible_bitext`);
* a **retrieval task** is a :class:`RetrievalTask` holding BEIR-style dicts
  ``corpus {doc_id: text}``, ``queries {qid: text}``, ``qrels {qid: {doc_id: int}}`` and its
  languages, ready for ir_measures / pytrec_eval / ranx.

Languages are ISO 639-3 codes throughout (``swh``, ``khm``, ``eng``); XQuAD-R's two-letter
file names are mapped by :data:`XQUAD_R_CODES` (``zh`` -> ``cmn``: XQuAD's Chinese is Mandarin
in simplified characters, and Tatoeba calls Mandarin ``cmn``). Input files are found through
:func:`optical_lib.paths.data_dir` (``$OPTICAL_DATA_DIR`` or ``../shared/data``); every loader
also takes ``data_dir=`` to point it elsewhere (tests use a temporary copy).

Data v2 (multi-way parallel corpora: NTREX-128 training bitext, FLORES-200 evaluation in both
directions, the v2 evaluation / development / training splits and the fixed-content diversity
sampler) lives in :mod:`optical_lib.multiway`; it reuses the records and helpers here and
:func:`tatoeba_pooled_task`. The Tatoeba splits below are the first (v1) design.

Data profiles
-------------
``offline`` (default; real public data in the data directory)
    Distil on Tatoeba X-eng bitext of the *training* languages (:func:`training_pool`);
    evaluate on Tatoeba X->eng retrieval for the held-out low-resource languages
    :data:`EVAL_LANGS_TATOEBA` and on XQuAD-R questions in X -> English answer sentences for
    the ten non-English XQuAD-R languages (:func:`load_offline_tasks`); Bible verse retrieval
    (:func:`bible_task`) is available for languages unseen in pretraining.
``webfaq`` (online only)
    :func:`webfaq_bitexts`, :func:`webfaq_clir_task`, :func:`webfaq_retrieval_task` read the
    Hugging Face data sets ``PaDaS-Lab/webfaq-bitexts`` / ``PaDaS-Lab/webfaq-retrieval``, or
    local JSONL files in the same schema. Without the Hub they fail at once with
    :class:`HubUnavailableError`, whose message names the offline profile.

Decisions (zero-shot guarantee)
-------------------------------
* **Evaluation languages** :data:`EVAL_LANGS_TATOEBA`: 13 low-resource Tatoeba languages
  (amh 168 lines, ceb 600, gla 829, jav 205, kab 1000, khm 722, swh 390, tat 1000, tgl 1000,
  uig 1000, war 1000, xho 142, yid 848). Nine are XLM-R pretraining languages, four (ceb, kab,
  tat, war) are not -- see ``languages.csv``.
* **Training languages** (:func:`training_pool`) are all other Tatoeba languages **minus**
  (a) the evaluation languages, (b) the XQuAD-R languages (``ara deu ell spa hin rus tha tur vie
  cmn``), so that XQuAD-R evaluation is zero-shot too, and (c) members of the same
  macrolanguage / collective code as an evaluation language (:data:`RELATED_VARIETIES`:
  arq, arz for Arabic; yue, wuu for Chinese; ``ber`` -- Tatoeba's collective Berber code, of
  which Kabyle is a member). Closely related but distinct languages (urd~hin, gle~gla, glg~spa,
  ukr~rus, ...) stay in the pool; the per-language analysis can look at them.
  English is never a source language. That leaves 81 languages, 64,684 pairs.
* Nothing is held out *within* a training language: its whole Tatoeba file is training data,
  and evaluation uses held-out languages only. (So a model trained here must not be scored on
  the Tatoeba test sets of its training languages.) The *English* side of the test sets
  overlaps: 13 % (war) to 54 % (amh) of the English candidates of an evaluation language also
  occur as English targets of training pairs (Tatoeba reuses English sentences). That is content
  overlap, not language leakage -- the student never encodes English in training -- but
  ``training_pool(drop_eval_english=True)`` removes those pairs for a stricter control
  (79 languages, 59,823 pairs; gsw and tzl fall below min_pairs).
* **min_pairs** = :data:`DEFAULT_MIN_PAIRS` = 100: the smallest training language (tzl) has
  104 lines, so all 81 qualify, and the DESIGN grid k <= 64 needs only ceil(N / 64) pairs per
  language. The binding limit is the other end: Tatoeba files have at most 1000 lines, so a
  fixed budget N must satisfy N <= 1000 for k = 1 (and N <= 2 * 1000 for k = 2 ...).
  :func:`max_budget` computes the largest feasible N for a set of k; for the pool it is 1000.
  A budget such as 2048 is infeasible for k in {1, 2} on Tatoeba.

Diversity sampler
-----------------
:func:`sample_bitext` draws exactly ``budget`` pairs from exactly ``k`` languages, equal share
per language (the ``budget % k`` remainder goes one pair each to the first languages in
selection order), languages spread over families by a seeded round robin. Excluded languages
are **dropped from the pool before choosing** (``on_excluded="drop"``, the default) or make the
call fail (``on_excluded="error"``); either way no excluded language, and no pair whose
``src_lang`` is excluded, can be in the output. The realised diversity
(:class:`Diversity`) reports Shannon entropy in **bits** (log base 2) of the language
distribution of the sampled pairs.
"""

from __future__ import annotations

import csv
import json
import math
import random
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from .paths import data_dir as _default_data_dir
from .paths import require

# --------------------------------------------------------------------------- errors


class DataFormatError(ValueError):
    """A data file exists but does not have the promised format (truncated, misaligned...)."""


class HubUnavailableError(ConnectionError):
    """The Hugging Face Hub cannot be reached (no network, or ``HF_HUB_OFFLINE=1``)."""


# --------------------------------------------------------------------------- records


@dataclass(frozen=True)
class BitextPair:
    """One translation pair; ``tgt`` is the English side (the teacher's input).

    ``eng_id`` identifies the English sentence inside a multi-way parallel corpus (for
    NTREX-128 the 0-based line number of ``newstest2019-src.eng.txt``, see
    :mod:`optical_lib.multiway`), so that samples can be compared by their English content;
    ``None`` for corpora without such ids (Tatoeba, Bible, WebFAQ).
    """

    src_text: str
    tgt_text: str
    src_lang: str
    tgt_lang: str = "eng"
    eng_id: int | None = None


@dataclass(frozen=True)
class RetrievalTask:
    """A BEIR-style retrieval task of plain dicts.

    ``query_langs`` ({qid: lang}) and ``doc_langs`` ({doc_id: lang}) are set for multilingual
    pools (XQuAD-R/LAReQA); for single-language tasks they are ``None`` and ``query_lang`` /
    ``doc_lang`` say it all (``"mul"`` marks a multilingual side).

    Checked on construction: every qrels qid is a query, every judged doc is in the corpus and
    every query has at least one relevant (score > 0) document.
    """

    name: str
    corpus: dict[str, str] = field(repr=False)
    queries: dict[str, str] = field(repr=False)
    qrels: dict[str, dict[str, int]] = field(repr=False)
    query_lang: str
    doc_lang: str
    query_langs: dict[str, str] | None = field(default=None, repr=False)
    doc_langs: dict[str, str] | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        for qid, judged in self.qrels.items():
            if qid not in self.queries:
                raise ValueError(f"{self.name}: qrels name query {qid!r}, not in queries")
            for doc_id in judged:
                if doc_id not in self.corpus:
                    raise ValueError(
                        f"{self.name}: qrels of {qid!r} name {doc_id!r}, not in corpus"
                    )
        for qid in self.queries:
            if not any(score > 0 for score in self.qrels.get(qid, {}).values()):
                raise ValueError(f"{self.name}: query {qid!r} has no relevant document")
        if self.query_langs is not None and self.query_langs.keys() != self.queries.keys():
            raise ValueError(f"{self.name}: query_langs must name exactly the queries")
        if self.doc_langs is not None and self.doc_langs.keys() != self.corpus.keys():
            raise ValueError(f"{self.name}: doc_langs must name exactly the corpus documents")

    def summary(self) -> dict[str, Any]:
        """Sizes and languages, for logs and results files."""
        return {
            "name": self.name,
            "query_lang": self.query_lang,
            "doc_lang": self.doc_lang,
            "n_queries": len(self.queries),
            "n_docs": len(self.corpus),
            "n_qrels": sum(len(v) for v in self.qrels.values()),
        }

    def __repr__(self) -> str:
        s = self.summary()
        return (
            f"RetrievalTask({s['name']!r}, {s['query_lang']}->{s['doc_lang']}, "
            f"{s['n_queries']} queries, {s['n_docs']} docs)"
        )


def data_root(data_dir: str | Path | None = None) -> Path:
    """The data directory a loader reads: ``data_dir`` if given, else the study's default
    (:func:`optical_lib.paths.data_dir`)."""
    return _default_data_dir() if data_dir is None else Path(data_dir)


def normalize_code(lang: str) -> str:
    """A language code as the loaders compare it: stripped, lower-cased (' SWH' -> 'swh')."""
    return str(lang).strip().lower()


def _unknown(lang: str, where: str, available: Iterable[str]) -> ValueError:
    return ValueError(
        f"Unknown language {lang!r} in {where} (available: {', '.join(sorted(available))})"
    )


# --------------------------------------------------------------------------- language metadata

LANGUAGES_CSV = Path(__file__).with_name("languages.csv")


@lru_cache(maxsize=1)
def _language_rows() -> tuple[dict[str, str], ...]:
    with LANGUAGES_CSV.open(encoding="utf-8", newline="") as f:
        return tuple(csv.DictReader(f))


def language_table():
    """All languages the study uses, one row each (``languages.csv``; sources in LANGUAGES.md).

    Columns: ``iso639_3, name, family, genus, script, joshi_class`` (nullable Int64, Joshi et
    al. 2020 class 0-5, <NA> = unknown), ``joshi_source``, ``xlmr`` (nullable boolean: among
    the 100 XLM-R/CC-100 languages, <NA> = unknown), ``xlmr_code``, ``datasets``, ``notes``.
    Indexed by ``iso639_3``.
    """
    import pandas as pd

    df = pd.DataFrame(list(_language_rows())).fillna("")
    df["joshi_class"] = pd.array(
        [None if v == "unknown" else int(v) for v in df["joshi_class"]], dtype="Int64"
    )
    df["xlmr"] = pd.array([{"yes": True, "no": False}.get(v) for v in df["xlmr"]], dtype="boolean")
    return df.set_index("iso639_3", drop=False)


def language_info(code: str) -> dict[str, Any]:
    """One row of :func:`language_table` as a plain dict (``joshi_class``/``xlmr`` may be None)."""
    code = normalize_code(code)
    rows = {r["iso639_3"]: r for r in _language_rows()}
    if code not in rows:
        raise _unknown(code, "languages.csv", rows)
    row = dict(rows[code])
    row["joshi_class"] = None if row["joshi_class"] == "unknown" else int(row["joshi_class"])
    row["xlmr"] = {"yes": True, "no": False}.get(row["xlmr"])
    return row


def language_families(codes: Iterable[str]) -> dict[str, str]:
    """``{code: family}`` from languages.csv; codes it lacks map to ``"unknown"``."""
    fam = {r["iso639_3"]: r["family"] for r in _language_rows()}
    return {c: fam.get(c) or "unknown" for c in codes}


def language_scripts(codes: Iterable[str]) -> dict[str, str]:
    """``{code: script}`` from languages.csv; codes it lacks map to ``"unknown"``."""
    scr = {r["iso639_3"]: r["script"] for r in _language_rows()}
    return {c: scr.get(c) or "unknown" for c in codes}


# --------------------------------------------------------------------------- Tatoeba

TATOEBA_DIR = "tatoeba-v1"
_TATOEBA_RE = re.compile(r"^tatoeba\.([a-z]{3})-eng\.eng$")


def tatoeba_languages(data_dir: str | Path | None = None) -> list[str]:
    """ISO 639-3 codes of the Tatoeba test sets (112 in LASER v1), sorted."""
    folder = require(TATOEBA_DIR, data_root(data_dir))
    return sorted(m.group(1) for p in folder.iterdir() if (m := _TATOEBA_RE.match(p.name)))


def _read_lines(path: Path) -> list[str]:
    """Lines of a UTF-8 text file, split on ``\\n`` only (not on U+2028 & co.), stripped."""
    text = path.read_text(encoding="utf-8")
    if text.endswith("\n"):
        text = text[:-1]
    return [line.strip() for line in text.split("\n")] if text else []


def _tatoeba_files(lang: str, data_dir: str | Path | None) -> tuple[Path, Path]:
    lang = normalize_code(lang)
    available = tatoeba_languages(data_dir)
    if lang not in available:
        raise _unknown(lang, "Tatoeba", available)
    folder = require(TATOEBA_DIR, data_root(data_dir))
    return folder / f"tatoeba.{lang}-eng.{lang}", folder / f"tatoeba.{lang}-eng.eng"


def tatoeba_bitext(lang: str, data_dir: str | Path | None = None) -> list[BitextPair]:
    """Line-aligned Tatoeba pairs ``(X sentence, English sentence)`` for ``lang``.

    Raises :class:`DataFormatError` naming both files if their line counts differ.
    """
    src_path, eng_path = _tatoeba_files(lang, data_dir)
    src, eng = _read_lines(src_path), _read_lines(eng_path)
    if len(src) != len(eng):
        raise DataFormatError(
            f"Tatoeba files are not line-aligned: {src_path} has {len(src)} lines but "
            f"{eng_path} has {len(eng)} lines. Re-fetch them (python -m optical_lib.fetch)."
        )
    code = normalize_code(lang)
    return [BitextPair(s, e, code, "eng") for s, e in zip(src, eng, strict=True)]


def tatoeba_task(lang: str, data_dir: str | Path | None = None) -> RetrievalTask:
    """Tatoeba X->eng retrieval: queries in ``lang``, corpus = the English side.

    Line i gives query ``tatoeba-<lang>-q<i>`` and document ``tatoeba-<lang>-d<i>``, relevant
    to each other only (the LASER/XTREME protocol; i is 0-based).
    """
    pairs = tatoeba_bitext(lang, data_dir)
    code = normalize_code(lang)
    queries = {f"tatoeba-{code}-q{i}": p.src_text for i, p in enumerate(pairs)}
    corpus = {f"tatoeba-{code}-d{i}": p.tgt_text for i, p in enumerate(pairs)}
    qrels = {f"tatoeba-{code}-q{i}": {f"tatoeba-{code}-d{i}": 1} for i in range(len(pairs))}
    return RetrievalTask(f"tatoeba-{code}", corpus, queries, qrels, code, "eng")


def tatoeba_pooled_task(
    langs: Iterable[str], data_dir: str | Path | None = None, name: str = "tatoeba-pooled"
) -> RetrievalTask:
    """One Tatoeba X->eng task for several languages: every query of every ``langs`` task
    against the union of their English candidates.

    Query ids are those of :func:`tatoeba_task` (``tatoeba-<lang>-q<i>``; ``query_langs``
    gives each query's language). The corpus holds each distinct English sentence once
    (``tatoeba-eng-d<j>``, in order of first appearance): Tatoeba reuses English sentences
    across languages, and two documents with the same text would make a tie that no model
    can break. A query's relevant document is the one holding its own English line. Harder
    than the per-language tasks (more candidates), so scores are not comparable to them.
    """
    langs = [normalize_code(x) for x in langs]
    if not langs:
        raise ValueError("tatoeba_pooled_task needs at least one language")
    if len(set(langs)) != len(langs):
        raise ValueError(f"tatoeba_pooled_task: duplicate languages in {langs}")
    doc_of: dict[str, str] = {}
    queries, qrels, query_langs = {}, {}, {}
    for lang in langs:
        for i, pair in enumerate(tatoeba_bitext(lang, data_dir)):
            doc_id = doc_of.setdefault(pair.tgt_text, f"tatoeba-eng-d{len(doc_of)}")
            qid = f"tatoeba-{lang}-q{i}"
            queries[qid] = pair.src_text
            qrels[qid] = {doc_id: 1}
            query_langs[qid] = lang
    corpus = {doc_id: text for text, doc_id in doc_of.items()}
    return RetrievalTask(
        name, corpus, queries, qrels, "mul", "eng",
        query_langs=query_langs, doc_langs=dict.fromkeys(corpus, "eng"),
    )  # fmt: skip


# --------------------------------------------------------------------------- XQuAD-R

XQUAD_R_DIR = "xquad-r"
#: XQuAD-R file name (ISO 639-1) -> ISO 639-3 code used everywhere else.
XQUAD_R_CODES: dict[str, str] = {
    "ar": "ara",
    "de": "deu",
    "el": "ell",
    "en": "eng",
    "es": "spa",
    "hi": "hin",
    "ru": "rus",
    "th": "tha",
    "tr": "tur",
    "vi": "vie",
    "zh": "cmn",
}
#: The 11 XQuAD-R languages (ISO 639-3), English included.
XQUAD_R_LANGS: tuple[str, ...] = tuple(XQUAD_R_CODES.values())
#: The 10 non-English XQuAD-R languages: the query languages of the X->eng tasks.
XQUAD_R_QUERY_LANGS: tuple[str, ...] = tuple(c for c in XQUAD_R_LANGS if c != "eng")


def _xquad_codes(lang: str) -> tuple[str, str]:
    """(file code, ISO 639-3) for ``lang`` given either way (``"ar"`` or ``"ara"``)."""
    lang = normalize_code(lang)
    to_file = {v: k for k, v in XQUAD_R_CODES.items()}
    if lang in XQUAD_R_CODES:
        return lang, XQUAD_R_CODES[lang]
    if lang in to_file:
        return to_file[lang], lang
    raise _unknown(lang, "XQuAD-R", XQUAD_R_LANGS)


@dataclass(frozen=True)
class _Paragraph:
    sentences: tuple[str, ...]
    answers: dict[str, tuple[str, int]]  # XQuAD id -> (question, index of the answer sentence)


def _clean(text: str) -> str:
    return text.strip().lstrip("\ufeff").strip()


def _answer_sentence(breaks: Sequence[Sequence[int]], start: int) -> int | None:
    for i, (begin, end) in enumerate(breaks):
        if begin <= start < end:
            return i
    for i, (begin, _) in enumerate(breaks):  # answer starts in the gap before a sentence
        if begin > start:
            return i
    return None


def _read_xquad(file_code: str, data_dir: str | Path | None) -> list[_Paragraph]:
    path = require(f"{XQUAD_R_DIR}/{file_code}.json", data_root(data_dir))
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise DataFormatError(
            f"{path} is not valid JSON ({err.msg} at line {err.lineno}, column {err.colno}); "
            f"the file is probably truncated. Verify it with python -m optical_lib.fetch."
        ) from err
    paragraphs = []
    try:
        for article in data["data"]:
            for para in article["paragraphs"]:
                sentences, breaks = para["sentences"], para["sentence_breaks"]
                if len(sentences) != len(breaks):
                    raise DataFormatError(
                        f"{path}: a paragraph has {len(sentences)} sentences but "
                        f"{len(breaks)} sentence_breaks"
                    )
                answers = {}
                for qa in para["qas"]:
                    start = qa["answers"][0]["answer_start"]
                    idx = _answer_sentence(breaks, start)
                    if idx is None:
                        raise DataFormatError(
                            f"{path}: answer of {qa['id']} starts at {start}, after the last "
                            f"sentence break"
                        )
                    answers[qa["id"]] = (_clean(qa["question"]), idx)
                paragraphs.append(_Paragraph(tuple(_clean(s) for s in sentences), answers))
    except (KeyError, TypeError, IndexError) as err:
        raise DataFormatError(
            f"{path}: unexpected structure ({err!r}); expected SQuAD-format JSON whose "
            f"paragraphs carry 'sentences' and 'sentence_breaks' (XQuAD-R)"
        ) from err
    return paragraphs


def _xquad_doc_id(code: str, p: int, s: int) -> str:
    return f"xquad-r-{code}-d{p}.{s}"


def _check_parallel(a: list[_Paragraph], b: list[_Paragraph], la: str, lb: str) -> None:
    if len(a) != len(b) or any(
        x.answers.keys() != y.answers.keys() for x, y in zip(a, b, strict=True)
    ):
        raise DataFormatError(f"XQuAD-R files {la}.json and {lb}.json are not parallel")


def xquad_r_task(
    query_lang: str, doc_lang: str = "eng", data_dir: str | Path | None = None
) -> RetrievalTask:
    """XQuAD-R: questions in ``query_lang``; candidates = every sentence of every paragraph in
    ``doc_lang`` (the ``sentences`` field); relevant = the sentence holding the answer span
    (``answer_start`` inside its ``sentence_breaks`` span) of the same question in ``doc_lang``.

    Ids: ``xquad-r-<lang>-q<XQuAD id>`` (parallel questions share the XQuAD id across
    languages) and ``xquad-r-<lang>-d<paragraph>.<sentence>`` (0-based). 1190 questions;
    1180 English candidates (LAReQA README).
    """
    qf, qc = _xquad_codes(query_lang)
    df, dc = _xquad_codes(doc_lang)
    qparas = _read_xquad(qf, data_dir)
    dparas = qparas if df == qf else _read_xquad(df, data_dir)
    _check_parallel(qparas, dparas, qf, df)
    corpus = {
        _xquad_doc_id(dc, p, s): text
        for p, para in enumerate(dparas)
        for s, text in enumerate(para.sentences)
    }
    queries, qrels = {}, {}
    for p, (qpara, dpara) in enumerate(zip(qparas, dparas, strict=True)):
        for xid, (question, _) in qpara.answers.items():
            qid = f"xquad-r-{qc}-q{xid}"
            queries[qid] = question
            qrels[qid] = {_xquad_doc_id(dc, p, dpara.answers[xid][1]): 1}
    return RetrievalTask(f"xquad-r-{qc}-{dc}", corpus, queries, qrels, qc, dc)


def xquad_r_pool_task(
    query_lang: str | None = None, data_dir: str | Path | None = None
) -> RetrievalTask:
    """LAReQA's multilingual pool: candidates are the sentences of all 11 languages; the 11
    parallel answer sentences of a question are all relevant.

    ``query_lang=None`` takes the questions of all 11 languages (13090 queries); ``doc_langs``
    and ``query_langs`` give each document's and query's language.
    """
    files = list(XQUAD_R_CODES)
    paras = {f: _read_xquad(f, data_dir) for f in files}
    for f in files[1:]:
        _check_parallel(paras[files[0]], paras[f], files[0], f)
    corpus, doc_langs = {}, {}
    for f in files:
        code = XQUAD_R_CODES[f]
        for p, para in enumerate(paras[f]):
            for s, text in enumerate(para.sentences):
                corpus[_xquad_doc_id(code, p, s)] = text
                doc_langs[_xquad_doc_id(code, p, s)] = code
    q_files = files if query_lang is None else [_xquad_codes(query_lang)[0]]
    queries, qrels, query_langs = {}, {}, {}
    for qf in q_files:
        qc = XQUAD_R_CODES[qf]
        for p, qpara in enumerate(paras[qf]):
            for xid, (question, _) in qpara.answers.items():
                qid = f"xquad-r-{qc}-q{xid}"
                queries[qid] = question
                query_langs[qid] = qc
                qrels[qid] = {
                    _xquad_doc_id(XQUAD_R_CODES[f], p, paras[f][p].answers[xid][1]): 1
                    for f in files
                }
    qname = "all" if query_lang is None else XQUAD_R_CODES[q_files[0]]
    return RetrievalTask(
        f"xquad-r-{qname}-pool",
        corpus,
        queries,
        qrels,
        "mul" if query_lang is None else XQUAD_R_CODES[q_files[0]],
        "mul",
        query_langs=query_langs,
        doc_langs=doc_langs,
    )


# --------------------------------------------------------------------------- Bible

BIBLE_DIR = "bible-corpus"


def _bible_metadata(data_dir: str | Path | None) -> list[dict[str, str]]:
    path = require(f"{BIBLE_DIR}/metadata.csv", data_root(data_dir))
    with path.open(encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


def bible_languages(data_dir: str | Path | None = None) -> dict[str, list[str]]:
    """``{ISO 639-3: [file names]}`` for the non-empty Bible files present (codes from
    ``metadata.csv``). English and other major-language Bibles are not in the mirror."""
    folder = require(f"{BIBLE_DIR}/bibles", data_root(data_dir))
    out: dict[str, list[str]] = {}
    for row in _bible_metadata(data_dir):
        path = folder / row["Filename"]
        if path.is_file() and path.stat().st_size > 0:
            out.setdefault(row["ISO_639-3"], []).append(row["Filename"])
    return {code: sorted(files) for code, files in sorted(out.items())}


def _bible_file(lang: str, data_dir: str | Path | None) -> tuple[str, Path]:
    """Resolve an ISO code or a file stem (``"K'iche'-NT-SIL"``) to (code, path)."""
    folder = require(f"{BIBLE_DIR}/bibles", data_root(data_dir))
    meta = _bible_metadata(data_dir)
    available = bible_languages(data_dir)
    by_stem = {Path(r["Filename"]).stem: r for r in meta}
    if str(lang) in by_stem:
        rows = [by_stem[str(lang)]]
    else:
        rows = [r for r in meta if r["ISO_639-3"] == normalize_code(lang)]
        present = [r for r in rows if (folder / r["Filename"]).is_file()]
        if rows and not present:
            files = ", ".join(r["Filename"] for r in rows)
            raise ValueError(
                f"Bible language {lang!r} ({files}) is listed in metadata.csv but not in "
                f"{folder}: the offline mirror leaves out English and other major-language "
                f"Bibles (available: {', '.join(available)})"
            )
        rows = present
    if not rows:
        raise _unknown(lang, "the Bible corpus", available)
    if len(rows) > 1:
        stems = ", ".join(Path(r["Filename"]).stem for r in rows)
        raise ValueError(
            f"Bible language {lang!r} has {len(rows)} translations ({stems}); pass one of "
            f"these file stems instead of the ISO code"
        )
    row = rows[0]
    path = folder / row["Filename"]
    if not path.is_file():
        raise ValueError(
            f"Bible translation {row['Filename']} ({row['ISO_639-3']}) is listed in "
            f"metadata.csv but not in {folder}: the offline mirror leaves out English and other "
            f"major-language Bibles (available: {', '.join(available)})"
        )
    if path.stat().st_size == 0:
        raise DataFormatError(
            f"{path} is empty (0 bytes): the mirror's copy of this Bible has no text. "
            f"Choose another language (available: {', '.join(available)})"
        )
    return row["ISO_639-3"], path


def _read_bible(path: Path) -> dict[str, str]:
    """``{verse id: text}`` in file order; empty verses are left out."""
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as err:
        raise DataFormatError(f"{path} is not well-formed XML ({err})") from err
    verses = {}
    for seg in root.iter("seg"):
        text = " ".join("".join(seg.itertext()).split())
        if text and seg.get("id"):
            verses[seg.get("id")] = text
    return verses


def bible_bitext(lang_a: str, lang_b: str, data_dir: str | Path | None = None) -> list[BitextPair]:
    """Verse-aligned pairs (``src`` = ``lang_a``, ``tgt`` = ``lang_b``), matched by the
    ``<seg id="b.BOOK.CHAPTER.VERSE">`` ids, in ``lang_a``'s order; verses empty or missing
    on either side are skipped. Languages are ISO 639-3 codes (``metadata.csv``) or, where a
    code has two translations (``quc``), a file stem. No English: ``tgt_lang`` is ``lang_b``.
    """
    code_a, path_a = _bible_file(lang_a, data_dir)
    code_b, path_b = _bible_file(lang_b, data_dir)
    va, vb = _read_bible(path_a), _read_bible(path_b)
    return [BitextPair(text, vb[vid], code_a, code_b) for vid, text in va.items() if vid in vb]


def bible_task(
    query_lang: str,
    doc_lang: str,
    max_queries: int | None = None,
    data_dir: str | Path | None = None,
) -> RetrievalTask:
    """Verse retrieval: verses in ``query_lang`` -> all verses in ``doc_lang``; relevant = the
    same verse id. ``max_queries`` keeps an evenly spaced subset of the queries (the corpus
    stays whole). Ids: ``bible-<code>-<verse id>``."""
    code_q, path_q = _bible_file(query_lang, data_dir)
    code_d, path_d = _bible_file(doc_lang, data_dir)
    vq, vd = _read_bible(path_q), _read_bible(path_d)
    common = [vid for vid in vq if vid in vd]
    if max_queries is not None and len(common) > max_queries:
        step = len(common) / max_queries
        common = [common[int(i * step)] for i in range(max_queries)]
    corpus = {f"bible-{code_d}-{vid}": text for vid, text in vd.items()}
    queries = {f"bible-{code_q}-{vid}": vq[vid] for vid in common}
    qrels = {f"bible-{code_q}-{vid}": {f"bible-{code_d}-{vid}": 1} for vid in common}
    return RetrievalTask(f"bible-{code_q}-{code_d}", corpus, queries, qrels, code_q, code_d)


# --------------------------------------------------------------------------- WebFAQ (online)

WEBFAQ_BITEXTS = "PaDaS-Lab/webfaq-bitexts"
WEBFAQ_RETRIEVAL = "PaDaS-Lab/webfaq-retrieval"
#: Hub revisions pinned by MTEB's WebFAQBitextMining / WebFAQRetrieval tasks.
WEBFAQ_BITEXTS_REVISION = "a1bc0e8fd36c3d5015bd64c14ca098596774784a"
WEBFAQ_RETRIEVAL_REVISION = "c3262adb1c32ac0c3ea8de6393a44366edaa62e1"
#: Where WebFAQ names a language by its macrolanguage code (as MTEB's WebFAQ tasks list it).
WEBFAQ_CODES = {"pes": "fas", "zsm": "msa", "cmn": "zho", "nob": "nor", "lvs": "lav"}
_WEBFAQ_FIELDS = ("language1", "language2", "question1", "question2", "answer1", "answer2")
OFFLINE_HINT = (
    "WebFAQ (the 'webfaq' data profile) is only available online. On this machine use the "
    "'offline' profile instead -- Tatoeba/XQuAD-R/Bible from the data directory: "
    "optical_lib.data.training_pool() and load_offline_tasks() -- or pass `source=` a local "
    "JSONL file/directory in the WebFAQ schema. If the data set is already in the Hugging "
    "Face cache, set HF_HUB_OFFLINE=1 to read it from there."
)


def webfaq_code(lang: str) -> str:
    """WebFAQ's code for an ISO 639-3 ``lang`` (``pes`` -> ``fas``, ``cmn`` -> ``zho``, ...)."""
    lang = normalize_code(lang)
    return WEBFAQ_CODES.get(lang, lang)


def webfaq_config(lang: str, other: str = "eng") -> str:
    """The ``webfaq-bitexts`` config of a language pair.

    Naming assumption (from MTEB's WebFAQBitextMining task at revision
    :data:`WEBFAQ_BITEXTS_REVISION`): a config is the two WebFAQ codes in **alphabetical
    order** joined by ``-`` -- ``deu-eng``, ``eng-fra``, ``ara-eng`` -- with one split,
    ``default``; which side is ``language1`` is read from each row, not assumed.
    """
    return "-".join(sorted((webfaq_code(lang), webfaq_code(other))))


def _check_row(row: Mapping[str, Any], i: int, fields: Sequence[str]) -> None:
    missing = [f for f in fields if f not in row]
    if missing:
        raise DataFormatError(f"WebFAQ row {i} lacks field(s) {missing}; it has {sorted(row)}")


def _aligned_rows(
    rows: Iterable[Mapping[str, Any]], lang: str, min_similarity: float | None
) -> list[tuple[str, str, str, str]]:
    """(question_x, question_eng, answer_x, answer_eng) of the rows pairing ``lang`` with eng."""
    code = webfaq_code(lang)
    out = []
    for i, row in enumerate(rows):
        _check_row(row, i, _WEBFAQ_FIELDS)
        l1, l2 = row["language1"], row["language2"]
        if {l1, l2} != {code, "eng"} or code == "eng":
            continue
        sim = row.get("labse_similarity")
        if min_similarity is not None and (sim is None or sim < min_similarity):
            continue
        x, e = ("1", "2") if l1 == code else ("2", "1")
        out.append(
            tuple(
                str(row[k] or "").strip()
                for k in (f"question{x}", f"question{e}", f"answer{x}", f"answer{e}")
            )
        )
    if not out:
        raise DataFormatError(f"No WebFAQ rows pair {code!r} with 'eng'")
    return out


def parse_webfaq_bitexts(
    rows: Iterable[Mapping[str, Any]],
    lang: str,
    text: Literal["question", "answer", "both"] = "question",
    min_similarity: float | None = None,
) -> list[BitextPair]:
    """Turn ``webfaq-bitexts`` rows into :class:`BitextPair` (English as ``tgt``).

    ``text`` picks the aligned questions (default; short, like Tatoeba sentences), answers,
    or both (two pairs per row). Rows of other language pairs are skipped; rows below
    ``min_similarity`` (``labse_similarity``) are dropped; empty texts are skipped.
    ``src_lang`` is WebFAQ's code (:func:`webfaq_code`). ``origin`` and ``details.urls``
    (nested ``{"details": {"urls": [...]}}`` as ``datasets`` returns it, or flat) are not used.
    """
    if text not in ("question", "answer", "both"):
        raise ValueError(f"text must be 'question', 'answer' or 'both', not {text!r}")
    code = webfaq_code(lang)
    pairs = []
    for qx, qe, ax, ae in _aligned_rows(rows, lang, min_similarity):
        if text in ("question", "both") and qx and qe:
            pairs.append(BitextPair(qx, qe, code, "eng"))
        if text in ("answer", "both") and ax and ae:
            pairs.append(BitextPair(ax, ae, code, "eng"))
    return pairs


def webfaq_clir_from_rows(
    rows: Iterable[Mapping[str, Any]],
    lang: str,
    distractors: Iterable[str] = (),
    min_similarity: float | None = None,
) -> RetrievalTask:
    """Cross-lingual QA retrieval built from aligned pairs: queries = questions in ``lang``;
    corpus = the English answers of all aligned pairs (each a distractor for the others) plus
    ``distractors`` (more English answers); relevant = the aligned English answer.

    Identical English answers are one document (otherwise equal texts would tie); ids are
    ``webfaq-<code>-q<i>`` and ``webfaq-eng-d<j>`` in row order.
    """
    code = webfaq_code(lang)
    corpus: dict[str, str] = {}
    by_text: dict[str, str] = {}

    def doc(text: str) -> str:
        if text not in by_text:
            by_text[text] = f"webfaq-eng-d{len(by_text)}"
            corpus[by_text[text]] = text
        return by_text[text]

    queries, qrels = {}, {}
    for qx, _, _, ae in _aligned_rows(rows, lang, min_similarity):
        if not qx or not ae:
            continue
        qid = f"webfaq-{code}-q{len(queries)}"
        queries[qid] = qx
        qrels[qid] = {doc(ae): 1}
    for text in distractors:
        if str(text).strip():
            doc(str(text).strip())
    return RetrievalTask(f"webfaq-clir-{code}-eng", corpus, queries, qrels, code, "eng")


def parse_webfaq_retrieval(
    corpus_rows: Iterable[Mapping[str, Any]],
    query_rows: Iterable[Mapping[str, Any]],
    qrels_rows: Iterable[Mapping[str, Any]],
    lang: str,
) -> RetrievalTask:
    """Turn ``webfaq-retrieval`` rows (MTEB/BEIR columns: corpus ``_id, title, text``;
    queries ``_id, text``; qrels ``query-id, corpus-id, score``) into a monolingual task.

    A document's text is ``title + " " + text`` (title omitted when empty); only judgements
    with score > 0 are kept, and only queries that have one.
    """
    code = webfaq_code(lang)
    corpus = {}
    for i, row in enumerate(corpus_rows):
        _check_row(row, i, ("_id", "text"))
        title, text = str(row.get("title") or "").strip(), str(row["text"] or "").strip()
        corpus[str(row["_id"])] = f"{title} {text}".strip()
    all_queries = {}
    for i, row in enumerate(query_rows):
        _check_row(row, i, ("_id", "text"))
        all_queries[str(row["_id"])] = str(row["text"]).strip()
    qrels: dict[str, dict[str, int]] = {}
    for i, row in enumerate(qrels_rows):
        _check_row(row, i, ("query-id", "corpus-id", "score"))
        qid, did, score = str(row["query-id"]), str(row["corpus-id"]), int(row["score"])
        if score <= 0 or qid not in all_queries:
            continue
        if did not in corpus:
            raise DataFormatError(f"WebFAQ qrels row {i} names document {did!r}, not in corpus")
        qrels.setdefault(qid, {})[did] = score
    queries = {qid: text for qid, text in all_queries.items() if qid in qrels}
    return RetrievalTask(f"webfaq-retrieval-{code}", corpus, queries, qrels, code, code)


def _datasets():
    import datasets

    return datasets


def _probe_hub(repo_id: str, revision: str | None, timeout: float) -> None:
    """One short metadata request, so that a missing network fails in seconds, not after
    the minute of retries ``datasets.load_dataset`` spends."""
    from huggingface_hub import HfApi

    HfApi().dataset_info(repo_id, revision=revision, timeout=timeout)


def _hub_offline() -> bool:
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def check_hub(repo: str, revision: str | None = None, timeout: float = 10.0,
              config: str | None = None) -> None:
    """Fail fast, with one message naming the offline profile, if ``repo`` is unreachable
    (or ``HF_HUB_OFFLINE`` is set). Local sources (paths, JSONL files) always pass."""
    if _is_local(repo):
        return
    what = f"{repo}" + (f" (config {config!r})" if config else "")
    if _hub_offline():
        raise HubUnavailableError(f"HF_HUB_OFFLINE is set, so {what} cannot be loaded. "
                                  f"{OFFLINE_HINT}")
    try:
        _probe_hub(repo, revision, timeout)
    except Exception as err:  # any failure to talk to the Hub means: no WebFAQ here
        from huggingface_hub.errors import RepositoryNotFoundError, RevisionNotFoundError

        if isinstance(err, RepositoryNotFoundError | RevisionNotFoundError):
            raise ValueError(f"{repo}@{revision}: not found on the Hub ({err})") from err
        raise HubUnavailableError(
            f"Cannot reach the Hugging Face Hub for {what}: "
            f"{type(err).__name__}: {err}. {OFFLINE_HINT}"
        ) from err


def _is_local(source: str | Path) -> bool:
    s = str(source)
    return (
        isinstance(source, Path)
        or Path(s).exists()
        or s.startswith((".", "/", "~"))
        or s.endswith((".json", ".jsonl"))
    )


def _load_rows(
    source: str | Path,
    config: str,
    split: str,
    revision: str | None = None,
    cache_dir: str | Path | None = None,
    timeout: float = 10.0,
) -> list[dict[str, Any]]:
    """Rows of one config: from a local JSONL file (or a directory holding
    ``<config>.jsonl``) via ``load_dataset("json")``, else from the Hub."""
    cache = None if cache_dir is None else str(cache_dir)
    if _is_local(source):
        path = Path(source).expanduser()
        file = path / f"{config}.jsonl" if path.is_dir() else path
        if not file.is_file():
            raise FileNotFoundError(
                f"{file} not found: a local WebFAQ source is a JSONL file, or a directory "
                f"with one <config>.jsonl per config (here {config}.jsonl)"
            )
        ds = _datasets().load_dataset("json", data_files=str(file), split="train", cache_dir=cache)
        return list(ds)
    repo = str(source)
    if not _hub_offline():
        check_hub(repo, revision, timeout, config)
    try:
        ds = _datasets().load_dataset(repo, config, split=split, revision=revision, cache_dir=cache)
    except (ConnectionError, TimeoutError) as err:
        raise HubUnavailableError(
            f"Cannot load {repo} (config {config!r}) from the Hugging Face Hub: "
            f"{type(err).__name__}: {err}. {OFFLINE_HINT}"
        ) from err
    return list(ds)


def webfaq_bitexts(
    lang: str,
    source: str | Path = WEBFAQ_BITEXTS,
    text: Literal["question", "answer", "both"] = "question",
    min_similarity: float | None = None,
    revision: str | None = WEBFAQ_BITEXTS_REVISION,
    cache_dir: str | Path | None = None,
    timeout: float = 10.0,
) -> list[BitextPair]:
    """WebFAQ ``lang``-eng bitext (config :func:`webfaq_config`, split ``default``) from the
    Hub or a local JSONL ``source``; see :func:`parse_webfaq_bitexts`. Raises
    :class:`HubUnavailableError` (naming the offline profile) within ``timeout`` seconds when
    the Hub cannot be reached."""
    rows = _load_rows(source, webfaq_config(lang), "default", revision, cache_dir, timeout)
    return parse_webfaq_bitexts(rows, lang, text=text, min_similarity=min_similarity)


def webfaq_clir_task(
    lang: str,
    source: str | Path = WEBFAQ_BITEXTS,
    distractors: Iterable[str] = (),
    min_similarity: float | None = None,
    revision: str | None = WEBFAQ_BITEXTS_REVISION,
    cache_dir: str | Path | None = None,
    timeout: float = 10.0,
) -> RetrievalTask:
    """Cross-lingual WebFAQ QA retrieval for ``lang`` (see :func:`webfaq_clir_from_rows`)."""
    rows = _load_rows(source, webfaq_config(lang), "default", revision, cache_dir, timeout)
    return webfaq_clir_from_rows(rows, lang, distractors, min_similarity)


def webfaq_retrieval_task(
    lang: str,
    source: str | Path = WEBFAQ_RETRIEVAL,
    split: str = "test",
    revision: str | None = WEBFAQ_RETRIEVAL_REVISION,
    cache_dir: str | Path | None = None,
    timeout: float = 10.0,
) -> RetrievalTask:
    """Monolingual WebFAQ retrieval from ``webfaq-retrieval``: configs ``<code>-corpus``
    (split ``corpus``), ``<code>-queries`` and ``<code>-qrels`` (split ``split``). A local
    ``source`` is a directory with ``<code>-corpus.jsonl``, ``<code>-queries.jsonl`` and
    ``<code>-qrels.jsonl`` (the queries/qrels files holding the wanted split)."""
    code = webfaq_code(lang)
    args = (revision, cache_dir, timeout)
    corpus = _load_rows(source, f"{code}-corpus", "corpus", *args)
    queries = _load_rows(source, f"{code}-queries", split, *args)
    qrels = _load_rows(source, f"{code}-qrels", split, *args)
    return parse_webfaq_retrieval(corpus, queries, qrels, lang)


# --------------------------------------------------------------------------- diversity sampler


@dataclass(frozen=True)
class Diversity:
    """Realised diversity of a bitext sample.

    ``entropy_bits`` is the Shannon entropy, in bits (log base 2), of the language
    distribution of the sampled pairs: log2(k) when all shares are equal.
    """

    k: int
    languages: tuple[str, ...]
    families: tuple[str, ...]
    n_families: int
    scripts: tuple[str, ...]
    n_scripts: int
    entropy_bits: float
    pairs_per_language: dict[str, int]

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready dict (tuples become lists)."""
        d = asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}


@dataclass(frozen=True)
class BitextSample:
    """Output of :func:`sample_bitext`: the pairs (shuffled) and their realised diversity."""

    pairs: list[BitextPair] = field(repr=False)
    diversity: Diversity
    budget: int
    seed: int


def _entropy_bits(counts: Iterable[int]) -> float:
    counts = [c for c in counts if c > 0]
    total = sum(counts)
    return -sum(c / total * math.log2(c / total) for c in counts) if total else 0.0


def _family_round_robin(langs: Sequence[str], families: Mapping[str, str], seed: int) -> list[str]:
    """All ``langs`` in selection order: families in a seeded order, one language from each
    family per round (seeded order within a family), skipping exhausted families."""
    rng = random.Random(seed)
    groups: dict[str, list[str]] = {}
    for lang in sorted(langs):
        groups.setdefault(families.get(lang) or "unknown", []).append(lang)
    order = sorted(groups)
    rng.shuffle(order)
    for fam in sorted(groups):
        rng.shuffle(groups[fam])
    out: list[str] = []
    while len(out) < len(langs):
        for fam in order:
            if groups[fam]:
                out.append(groups[fam].pop(0))
    return out


def sample_bitext(
    pool: Mapping[str, Sequence[BitextPair]],
    k: int,
    budget: int,
    seed: int,
    exclude: Iterable[str] = (),
    families: Mapping[str, str] | None = None,
    scripts: Mapping[str, str] | None = None,
    on_excluded: Literal["drop", "error"] = "drop",
) -> BitextSample:
    """Draw exactly ``budget`` pairs from exactly ``k`` languages of ``pool`` (lang -> pairs).

    1. Excluded languages are removed from the pool (``on_excluded="error"``: refuse if the pool
       contains any). A language *qualifies* if it has at least ``ceil(budget / k)`` pairs.
    2. The ``k`` languages are the first ``k`` of a seeded family round robin over the
       qualifying languages (families from ``families``, default ``languages.csv``), so they
       spread over as many families as possible; for a fixed seed and qualifying set, the
       languages for k are a prefix of those for 2k.
    3. Shares are ``budget // k``, plus one for the first ``budget % k`` chosen languages;
       each language's pairs are a seeded shuffle's prefix (nested across budgets).
    4. The pairs are shuffled (seeded) so that batches mix languages.

    Same arguments, same output; another seed gives another sample. Raises ``ValueError``
    if ``k < 1``, ``budget < k``, fewer than ``k`` languages qualify, or a pair's
    ``src_lang`` disagrees with its pool key.
    """
    if not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be a positive integer, not {k!r}")
    if not isinstance(budget, int) or budget < k:
        raise ValueError(f"budget ({budget!r}) must be an integer >= k ({k}): one pair a language")
    excluded = {normalize_code(x) for x in exclude}
    hit = sorted(lang for lang in pool if normalize_code(lang) in excluded)
    if hit and on_excluded == "error":
        raise ValueError(f"The pool contains excluded (evaluation) languages: {', '.join(hit)}")
    if on_excluded not in ("drop", "error"):
        raise ValueError(f"on_excluded must be 'drop' or 'error', not {on_excluded!r}")
    candidates = sorted(lang for lang in pool if normalize_code(lang) not in excluded)
    if k > len(candidates):
        raise ValueError(
            f"k={k} exceeds the {len(candidates)} languages available"
            + (f" after excluding {', '.join(hit)}" if hit else "")
        )
    need = -(-budget // k)
    qualified = [lang for lang in candidates if len(pool[lang]) >= need]
    if len(qualified) < k:
        sizes = sorted((len(pool[lang]) for lang in candidates), reverse=True)
        raise ValueError(
            f"Only {len(qualified)} of {len(candidates)} languages have the "
            f"ceil({budget}/{k}) = {need} pairs a language needs; k={k} languages need "
            f"budget <= {k * sizes[k - 1]} (or a smaller k)"
        )
    families = dict(families) if families is not None else language_families(qualified)
    chosen = _family_round_robin(qualified, families, seed)[:k]
    base, rem = divmod(budget, k)
    shares = {lang: base + (1 if i < rem else 0) for i, lang in enumerate(chosen)}
    pairs: list[BitextPair] = []
    for lang in chosen:
        order = list(range(len(pool[lang])))
        random.Random(f"{seed}:{lang}").shuffle(order)
        for i in order[: shares[lang]]:
            pair = pool[lang][i]
            if pair.src_lang != lang or normalize_code(pair.src_lang) in excluded:
                raise ValueError(
                    f"Pool entry {lang!r} holds a pair with src_lang {pair.src_lang!r}"
                )
            pairs.append(pair)
    random.Random(f"{seed}:shuffle").shuffle(pairs)
    scripts = dict(scripts) if scripts is not None else language_scripts(chosen)
    fams = sorted({families.get(lang) or "unknown" for lang in chosen})
    scrs = sorted({scripts.get(lang) or "unknown" for lang in chosen})
    diversity = Diversity(
        k=k,
        languages=tuple(chosen),
        families=tuple(fams),
        n_families=len(fams),
        scripts=tuple(scrs),
        n_scripts=len(scrs),
        entropy_bits=_entropy_bits(shares.values()),
        pairs_per_language=shares,
    )
    return BitextSample(pairs=pairs, diversity=diversity, budget=budget, seed=seed)


def max_budget(
    pool: Mapping[str, Sequence[Any]], ks: Iterable[int], exclude: Iterable[str] = ()
) -> int:
    """Largest budget N that :func:`sample_bitext` accepts for every k in ``ks``:
    min over k of k * (k-th largest language size), since each of k languages needs
    ceil(N / k) pairs."""
    excluded = {normalize_code(x) for x in exclude}
    sizes = sorted(
        (len(v) for lang, v in pool.items() if normalize_code(lang) not in excluded), reverse=True
    )
    ks = list(ks)
    if any(k < 1 or k > len(sizes) for k in ks):
        raise ValueError(f"every k must be in 1..{len(sizes)} (pool size), got {ks}")
    return min(k * sizes[k - 1] for k in ks)


# --------------------------------------------------------------------------- study splits

#: Held-out low-resource Tatoeba evaluation languages (never trained on).
EVAL_LANGS_TATOEBA: tuple[str, ...] = (
    "amh", "ceb", "gla", "jav", "kab", "khm", "swh", "tat", "tgl", "uig", "war", "xho", "yid",
)  # fmt: skip
#: Varieties sharing a macrolanguage / collective code with an evaluation language.
RELATED_VARIETIES: dict[str, tuple[str, ...]] = {
    "ara": ("arq", "arz"),  # Arabic macrolanguage
    "cmn": ("wuu", "yue"),  # Chinese macrolanguage
    "kab": ("ber",),  # Tatoeba's collective Berber code includes Kabyle
}
#: Development languages: held out from training AND from the reported evaluation, used
#: only to choose hyper-parameters (learning rate, epochs) without touching test languages.
DEV_LANGS_TATOEBA: tuple[str, ...] = ("cym", "kaz", "tuk")
#: Everything the training pool leaves out, so that all evaluation is zero-shot.
TRAINING_EXCLUDED: frozenset[str] = frozenset(
    {
        "eng",
        *EVAL_LANGS_TATOEBA,
        *DEV_LANGS_TATOEBA,
        *XQUAD_R_LANGS,
        *(v for vs in RELATED_VARIETIES.values() for v in vs),
    }
)
#: Minimum Tatoeba pairs for a training language (see the module docstring).
DEFAULT_MIN_PAIRS = 100


def training_pool(
    min_pairs: int = DEFAULT_MIN_PAIRS,
    exclude: Iterable[str] = TRAINING_EXCLUDED,
    drop_eval_english: bool = False,
    data_dir: str | Path | None = None,
) -> dict[str, list[BitextPair]]:
    """Tatoeba training bitext ``{lang: pairs}``: every Tatoeba language not in ``exclude``
    (default :data:`TRAINING_EXCLUDED`) with at least ``min_pairs`` pairs.

    ``drop_eval_english`` also removes pairs whose English sentence is an English candidate
    of a Tatoeba evaluation task (:data:`EVAL_LANGS_TATOEBA`); ``min_pairs`` applies after.
    """
    excluded = {normalize_code(x) for x in exclude}
    banned: set[str] = set()
    if drop_eval_english:
        for lang in EVAL_LANGS_TATOEBA:
            banned.update(p.tgt_text for p in tatoeba_bitext(lang, data_dir))
    pool = {}
    for lang in tatoeba_languages(data_dir):
        if lang in excluded:
            continue
        pairs = [p for p in tatoeba_bitext(lang, data_dir) if p.tgt_text not in banned]
        if len(pairs) >= min_pairs:
            pool[lang] = pairs
    return pool


def load_offline_tasks(
    tatoeba: Iterable[str] = EVAL_LANGS_TATOEBA,
    xquad: Iterable[str] = XQUAD_R_QUERY_LANGS,
    data_dir: str | Path | None = None,
) -> dict[str, RetrievalTask]:
    """All offline evaluation tasks by name: Tatoeba X->eng for the evaluation languages, then
    XQuAD-R X->eng for the 10 non-English XQuAD-R languages."""
    tasks = {}
    for lang in tatoeba:
        task = tatoeba_task(lang, data_dir)
        tasks[task.name] = task
    for lang in xquad:
        task = xquad_r_task(lang, "eng", data_dir)
        tasks[task.name] = task
    return tasks
