"""Multi-way parallel corpora: NTREX-128 and FLORES-200 loaders, the v2 splits, the
fixed-content diversity sampler and its covariates (book section "Data, version 2").

Corpora
-------
**NTREX-128** (training; ``ntrex-128/NTREX-128/`` in the data directory, MicrosoftTranslator/NTREX
@ 8561f6a6): the 1,997 English sentences of the WMT19 news test set
(``newstest2019-src.eng.txt``) and their professional translations
``newstest2019-ref.<file code>.txt``. Line *i* of every file translates English line *i*, so
**an English id is a 0-based line number** (:attr:`BitextPair.eng_id`) and the same English
content can be paired with any language. Files have CRLF line ends; lines are stripped.

**FLORES-200 devtest** (evaluation; ``flores-200/devtest/<code>_<Script>.devtest``,
Helsinki-NLP/OPUS-MT-testsets @ ac0f19c0, an unmodified copy of the official tarball):
1,012 Wikimedia sentences, line-aligned. :func:`flores_task` builds X->eng *and* eng->X
retrieval (1,012 queries, 1,012 candidates, relevant = the same line). The two corpora share
no sentences (news vs. Wikimedia), so training on NTREX and testing on FLORES has no content
overlap.

Codes
-----
The study's key is one ISO 639-3 code per language, the one ``languages.csv`` already uses:
Tatoeba's code where the language is in Tatoeba (``swh`` for NTREX ``swa`` / FLORES
``swh_Latn``; ``sqi`` for FLORES ``als_Latn``; ``aze``, ``mon``, ``uzb``, ``kur``, ``pes``,
``zsm``, ``tgl``, ``cmn``, ``ara``, ``lvs``), otherwise the FLORES-200 individual-language code
(``npi`` for NTREX ``nep``, ``gaz`` for ``orm``, ``pbt`` for ``pus``, ``plt`` for ``mlg``),
otherwise NTREX's own code. :data:`NTREX_FILES` and :data:`FLORES_FILES` map keys to files;
the corpora's own file codes are accepted as aliases (``swa``, ``hau_Latn``). These tables are
the package's own: nothing at run time reads the mirror's ``language-coverage.csv`` (it was used
once, to build them, and a test checks them against it). One file per language: NTREX's
second Spanish reference, ``fra-CA``, ``por-BR``, ``spa-MX``, ``zho-TW`` and ``srp-Cyrl`` are
not used (``srp-Latn`` is, matching the script of ``languages.csv``); ``eng-GB``, ``eng-IN``,
``eng-US`` are English, never a source language.

Splits (fixed here, before any run)
-----------------------------------
* **Evaluation** :data:`EVAL_LANGS_FLORES`, 28 low-resource FLORES-200 languages in 10 families
  and 10 scripts; 21 are not in Tatoeba. The ten the design names (hau ibo yor zul kin bem twi
  swh amh som) plus: xho (Nguni like zul, but in XLM-R's pretraining where zul is not), wol
  (Atlantic), tir (Ethiopic, unseen in pretraining), tzm (Tifinagh script) and kab (Berber in
  Latin script, in Tatoeba), luo (Nilotic: a family of its own), mya and bod (Sino-Tibetan:
  Myanmar and Tibetan scripts), lao (Lao script), khm and sat (Austro-Asiatic: Khmer and Ol
  Chiki scripts), npi and sin (Indic: Devanagari, Sinhala), jav and ceb (Austronesian, both in
  Tatoeba), quy, ayr and grn (three American families). Indo-European languages with big
  relatives (Germanic, Romance, Slavic, Turkic, Iranian, Dravidian) are left out on purpose, so
  that the "no relatives" pool keeps enough languages.
* **Development** :data:`DEV_LANGS_FLORES` (tuning only; never reported as results): lug, mos,
  knc, ory, shn, ilo -- low-resource, one per family/script region of the evaluation set
  (Bantu, Gur, Saharan, Odia script, Myanmar script, Philippine), all FLORES-only so that the
  training pool loses nothing.
* **Tatoeba** (:data:`EVAL_LANGS_TATOEBA_V2`): the evaluation languages that Tatoeba has
  (amh ceb jav kab khm swh xho), per language and pooled
  (:func:`optical_lib.data.tatoeba_pooled_task`).
  The v1 Tatoeba evaluation languages tat, tgl, uig are NTREX training languages now, and
  gla, war, yid are left out (their genera, Celtic, Philippine and Germanic, would shrink the
  "no relatives" pool), so they are not v2 evaluation languages.
* **XQuAD-R** questions in its ten non-English languages (ara deu ell spa hin rus tha tur vie
  cmn) -> English sentences, in every profile. To keep it zero-shot, the ten languages are
  treated as evaluation languages when the pool is built (excluded with their close varieties).
* **Training pool** :func:`training_pool_ntrex`: the 119 NTREX-128 languages minus the
  evaluation, development and XQuAD-R languages, minus their **close varieties**, minus English.
  ``relatives=False`` also removes every language that shares a genus (WALS) with an evaluation
  language of FLORES-200 ("no relatives", for the robustness run).

**Close varieties** (:data:`CLOSE_VARIETIES`) are decided by two rules, nothing else: (1) the
same ISO 639-3 macrolanguage, or the same language under another code (NTREX ``swa`` is our
``swh``; Chinese ``cmn``~``yue``; Arabic ``ara``~``mey``; Akan ``twi``~``aka``;
Kinyarwanda~Kirundi, a dialect cluster); (2) varieties widely described as mutually
intelligible to a large degree, each listed with its reason: Nguni (zul, xho, ssw, nde), Central
Tibetan~Dzongkha (bod, dzo), Lao~Thai, Atlas Berber (tzm~shi), Hindustani (hin~urd), Turkish~
Azerbaijani. The mirror's ``language-coverage.csv`` notes were read for candidates (e.g. "close
to Tatar" for bak, "close to Kazakh" for kir) but those concern Tatoeba languages that are not
evaluation languages here. Related but distinct languages (som~gaz, amh~tir, sin~div, ceb~tgl,
hau and yor with their neighbours) are *not* close varieties; the genus covariates measure them
and the "no relatives" pool removes them.

Fixed-content sampler
---------------------
For one ``draw`` and budget ``B``, :func:`english_ids` picks ``B`` English line ids once (a
seeded permutation of all 1,997 lines, first ``B``: nested across budgets). For each k,
:func:`sample_fixed_content` splits those same ids, in that order, into k equal shares of
``B / k`` and pairs share *j* with language *j* of :func:`draw_languages` -- a seeded uniform
permutation of the pool whose first k are the k-language set. So at a fixed draw and B the
English side is identical for every k (only the number of languages changes), the language sets
are nested within a draw (k comparisons are paired), and across draws each k-set is a uniform
random k-subset of the pool: composition (families, scripts, pretraining coverage) is not tied
to k in expectation, unlike a family round robin, and the realised composition is recorded as
covariates (:func:`run_covariates`, :func:`eval_covariates`). ``B`` must be divisible by k (no
remainder rule: shares are exactly equal); :func:`max_fixed_budget` gives the largest B <= 1,997
that every k divides (1,984 for k in 1..64). The draw is its own field, independent of the
training seed.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from .data import (
    XQUAD_R_QUERY_LANGS,
    BitextPair,
    DataFormatError,
    RetrievalTask,
    data_root,
    language_info,
    load_offline_tasks,
    normalize_code,
    tatoeba_pooled_task,
)
from .paths import require

# --------------------------------------------------------------------------- corpus tables

NTREX_DIR = "ntrex-128/NTREX-128"
NTREX_ENGLISH_FILE = "newstest2019-src.eng.txt"
#: Lines of every NTREX-128 file (the WMT19 news test set).
NTREX_LINES = 1997
FLORES_DIR = "flores-200/devtest"
#: Lines of every FLORES-200 devtest file.
FLORES_LINES = 1012

#: Study code -> NTREX-128 file code (``newstest2019-ref.<file code>.txt``); 119 languages.
NTREX_FILES: dict[str, str] = {
    "afr": "afr", "amh": "amh", "ara": "arb", "aze": "aze-Latn", "bak": "bak", "bel": "bel",
    "bem": "bem", "ben": "ben", "bod": "bod", "bos": "bos", "bul": "bul", "cat": "cat",
    "ces": "ces", "ckb": "ckb-Arab", "cmn": "zho-CN", "cym": "cym", "dan": "dan", "deu": "deu",
    "div": "div", "dzo": "dzo", "ell": "ell", "est": "est", "eus": "eus", "ewe": "ewe",
    "fao": "fao", "fij": "fij", "fin": "fin", "fra": "fra", "fuc": "fuc", "gaz": "orm",
    "gle": "gle", "glg": "glg", "guj": "guj", "hau": "hau", "heb": "heb", "hin": "hin",
    "hmn": "hmn", "hrv": "hrv", "hun": "hun", "hye": "hye", "ibo": "ibo", "ind": "ind",
    "isl": "isl", "ita": "ita", "jpn": "jpn", "kan": "kan", "kat": "kat", "kaz": "kaz",
    "khm": "khm", "kin": "kin", "kir": "kir", "kor": "kor", "kur": "kmr", "lao": "lao",
    "lit": "lit", "ltz": "ltz", "lvs": "lav", "mal": "mal", "mar": "mar", "mey": "mey",
    "mkd": "mkd", "mlt": "mlt", "mon": "mon", "mri": "mri", "mya": "mya", "nde": "nde",
    "nld": "nld", "nno": "nno", "nob": "nob", "npi": "nep", "nso": "nso", "nya": "nya",
    "pan": "pan", "pbt": "pus", "pes": "fas", "plt": "mlg", "pol": "pol", "por": "por",
    "prs": "prs", "ron": "ron", "rus": "rus", "shi": "shi", "sin": "sin", "slk": "slk",
    "slv": "slv", "smo": "smo", "sna": "sna-Latn", "snd": "snd-Arab", "som": "som",
    "spa": "spa", "sqi": "sqi", "srp": "srp-Latn", "ssw": "ssw", "swe": "swe", "swh": "swa",
    "tah": "tah", "tam": "tam", "tat": "tat", "tel": "tel", "tgk": "tgk-Cyrl", "tgl": "fil",
    "tha": "tha", "tir": "tir", "ton": "ton", "tsn": "tsn", "tuk": "tuk", "tur": "tur",
    "uig": "uig", "ukr": "ukr", "urd": "urd", "uzb": "uzb", "ven": "ven", "vie": "vie",
    "wol": "wol", "xho": "xho", "yor": "yor", "yue": "yue", "zsm": "msa", "zul": "zul",
}  # fmt: skip
#: NTREX-128 files deliberately not used, and why.
NTREX_UNUSED: dict[str, str] = {
    "eng-GB": "English", "eng-IN": "English", "eng-US": "English",
    "fra-CA": "second French variety (fra used)", "por-BR": "second Portuguese variety (por used)",
    "spa-MX": "second Spanish variety (spa used)", "zho-TW": "Traditional Chinese (zho-CN used)",
    "srp-Cyrl": "Serbian in Cyrillic (srp-Latn used)",
}  # fmt: skip

#: Study code -> FLORES-200 file stem (``devtest/<stem>.devtest``): English, the evaluation
#: and development languages, and every NTREX language that FLORES-200 has.
FLORES_FILES: dict[str, str] = {
    "afr": "afr_Latn", "amh": "amh_Ethi", "ara": "arb_Arab", "ayr": "ayr_Latn",
    "aze": "azj_Latn", "bak": "bak_Cyrl", "bel": "bel_Cyrl", "bem": "bem_Latn",
    "ben": "ben_Beng", "bod": "bod_Tibt", "bos": "bos_Latn", "bul": "bul_Cyrl",
    "cat": "cat_Latn", "ceb": "ceb_Latn", "ces": "ces_Latn", "ckb": "ckb_Arab",
    "cmn": "zho_Hans", "cym": "cym_Latn", "dan": "dan_Latn", "deu": "deu_Latn",
    "dzo": "dzo_Tibt", "ell": "ell_Grek", "eng": "eng_Latn", "est": "est_Latn",
    "eus": "eus_Latn", "ewe": "ewe_Latn", "fao": "fao_Latn", "fij": "fij_Latn",
    "fin": "fin_Latn", "fra": "fra_Latn", "gaz": "gaz_Latn", "gle": "gle_Latn",
    "glg": "glg_Latn", "grn": "grn_Latn", "guj": "guj_Gujr", "hau": "hau_Latn",
    "heb": "heb_Hebr", "hin": "hin_Deva", "hrv": "hrv_Latn", "hun": "hun_Latn",
    "hye": "hye_Armn", "ibo": "ibo_Latn", "ilo": "ilo_Latn", "ind": "ind_Latn",
    "isl": "isl_Latn", "ita": "ita_Latn", "jav": "jav_Latn", "jpn": "jpn_Jpan",
    "kab": "kab_Latn", "kan": "kan_Knda", "kat": "kat_Geor", "kaz": "kaz_Cyrl",
    "khm": "khm_Khmr", "kin": "kin_Latn", "kir": "kir_Cyrl", "knc": "knc_Latn",
    "kor": "kor_Hang", "kur": "kmr_Latn", "lao": "lao_Laoo", "lit": "lit_Latn",
    "ltz": "ltz_Latn", "lug": "lug_Latn", "luo": "luo_Latn", "lvs": "lvs_Latn",
    "mal": "mal_Mlym", "mar": "mar_Deva", "mkd": "mkd_Cyrl", "mlt": "mlt_Latn",
    "mon": "khk_Cyrl", "mos": "mos_Latn", "mri": "mri_Latn", "mya": "mya_Mymr",
    "nld": "nld_Latn", "nno": "nno_Latn", "nob": "nob_Latn", "npi": "npi_Deva",
    "nso": "nso_Latn", "nya": "nya_Latn", "ory": "ory_Orya", "pan": "pan_Guru",
    "pbt": "pbt_Arab", "pes": "pes_Arab", "plt": "plt_Latn", "pol": "pol_Latn",
    "por": "por_Latn", "prs": "prs_Arab", "quy": "quy_Latn", "ron": "ron_Latn",
    "rus": "rus_Cyrl", "sat": "sat_Olck", "shn": "shn_Mymr", "sin": "sin_Sinh",
    "slk": "slk_Latn", "slv": "slv_Latn", "smo": "smo_Latn", "sna": "sna_Latn",
    "snd": "snd_Arab", "som": "som_Latn", "spa": "spa_Latn", "sqi": "als_Latn",
    "srp": "srp_Cyrl", "ssw": "ssw_Latn", "swe": "swe_Latn", "swh": "swh_Latn",
    "tam": "tam_Taml", "tat": "tat_Cyrl", "tel": "tel_Telu", "tgk": "tgk_Cyrl",
    "tgl": "tgl_Latn", "tha": "tha_Thai", "tir": "tir_Ethi", "tsn": "tsn_Latn",
    "tuk": "tuk_Latn", "tur": "tur_Latn", "twi": "twi_Latn", "tzm": "tzm_Tfng",
    "uig": "uig_Arab", "ukr": "ukr_Cyrl", "urd": "urd_Arab", "uzb": "uzn_Latn",
    "vie": "vie_Latn", "wol": "wol_Latn", "xho": "xho_Latn", "yor": "yor_Latn",
    "yue": "yue_Hant", "zsm": "zsm_Latn", "zul": "zul_Latn",
}  # fmt: skip

# --------------------------------------------------------------------------- splits

#: Held-out FLORES-200 evaluation languages (see the module docstring for each choice).
EVAL_LANGS_FLORES: tuple[str, ...] = (
    "hau", "ibo", "yor", "zul", "kin", "bem", "twi", "swh", "amh", "som",
    "xho", "wol", "tir", "tzm", "kab", "luo", "mya", "bod", "lao", "khm",
    "sat", "npi", "sin", "jav", "ceb", "quy", "ayr", "grn",
)  # fmt: skip
#: Development languages: tuning only, disjoint from evaluation and training.
DEV_LANGS_FLORES: tuple[str, ...] = ("lug", "mos", "knc", "ory", "shn", "ilo")
#: Evaluation languages that Tatoeba has (same codes there).
EVAL_LANGS_TATOEBA_V2: tuple[str, ...] = ("amh", "ceb", "jav", "kab", "khm", "swh", "xho")
#: Close varieties of evaluation, development and XQuAD-R languages, with the reason.
#: Rule (1) same macrolanguage / same language; rule (2) high mutual intelligibility.
CLOSE_VARIETIES: dict[str, tuple[tuple[str, ...], str]] = {
    "zul": (("xho", "ssw", "nde"), "Nguni cluster, mutually intelligible (2)"),
    "xho": (("zul", "ssw", "nde"), "Nguni cluster, mutually intelligible (2)"),
    "kin": (("run",), "Rwanda-Rundi dialect cluster (1)"),
    "twi": (("aka",), "Akan macrolanguage (1)"),
    "bod": (("dzo",), "Tibetic, partly mutually intelligible, same script (2)"),
    "lao": (("tha",), "Lao and Thai are mutually intelligible to a large degree (2)"),
    "tzm": (("shi",), "Atlas Berber: Central Atlas Tamazight ~ Tachelhit (2)"),
    "kab": (("ber",), "Tatoeba's collective Berber code includes Kabyle (1)"),
    "cmn": (("yue",), "Chinese macrolanguage (1)"),
    "ara": (("mey",), "Arabic macrolanguage: Hassaniya (1)"),
    "hin": (("urd",), "Hindustani: colloquial Hindi and Urdu are mutually intelligible (2)"),
    "tur": (("aze",), "Oghuz: Turkish and Azerbaijani are largely mutually intelligible (2)"),
}
#: English and its NTREX variants: never a source language.
ENGLISH = "eng"


def _close(langs: Iterable[str]) -> dict[str, str]:
    out = {}
    for lang in langs:
        if lang in CLOSE_VARIETIES:
            codes, why = CLOSE_VARIETIES[lang]
            for c in codes:
                out.setdefault(c, f"close variety of {lang}: {why}")
    return out


def pool_exclusions(relatives: bool = True) -> dict[str, str]:
    """NTREX languages left out of the training pool, ``{code: reason}``.

    Evaluation, development and XQuAD-R languages, their :data:`CLOSE_VARIETIES`, English;
    with ``relatives=False`` also every language sharing a genus with an evaluation language
    of :data:`EVAL_LANGS_FLORES`.
    """
    out: dict[str, str] = {ENGLISH: "English (the teacher's side)"}
    for lang in EVAL_LANGS_FLORES:
        out.setdefault(lang, "evaluation language (FLORES-200)")
    for lang in DEV_LANGS_FLORES:
        out.setdefault(lang, "development language")
    for lang in XQUAD_R_QUERY_LANGS:
        out.setdefault(lang, "XQuAD-R evaluation language")
    for code, why in _close((*EVAL_LANGS_FLORES, *DEV_LANGS_FLORES, *XQUAD_R_QUERY_LANGS)).items():
        out.setdefault(code, why)
    if not relatives:
        genera = {language_info(lang)["genus"]: lang for lang in EVAL_LANGS_FLORES}
        for lang in NTREX_FILES:
            genus = language_info(lang)["genus"]
            if lang not in out and genus in genera:
                out[lang] = f"same genus ({genus}) as evaluation language {genera[genus]}"
    return out


def training_pool_ntrex(relatives: bool = True) -> tuple[str, ...]:
    """The NTREX-128 training languages, sorted: all of :data:`NTREX_FILES` minus
    :func:`pool_exclusions` (``relatives=False``: also without the evaluation genera)."""
    excluded = pool_exclusions(relatives)
    return tuple(sorted(lang for lang in NTREX_FILES if lang not in excluded))


# --------------------------------------------------------------------------- loading


def _resolve(lang: str, table: Mapping[str, str], corpus: str) -> str:
    """Study code for ``lang`` (a study code or the corpus's own file code)."""
    code = normalize_code(lang)
    if code in table:
        return code
    by_file = {v.lower(): k for k, v in table.items()}
    if code in by_file:
        return by_file[code]
    raise ValueError(
        f"Unknown language {lang!r} in {corpus} (available: {', '.join(sorted(table))}). "
        f"Use the study's ISO 639-3 code (e.g. 'swh', not 'swa'); a language missing here "
        f"must first be added to {corpus.split()[0].upper()}_FILES in optical_lib/multiway.py "
        f"and to languages.csv."
    )


@lru_cache(maxsize=512)
def _read_checked(path: str, expected: int, mtime_ns: int, size: int) -> tuple[str, ...]:
    """Stripped lines of a UTF-8 file, split on ``\\n`` (files may have CRLF ends); raises
    :class:`DataFormatError` if there are not exactly ``expected`` lines or a line is empty.
    Cached by path, modification time and size."""
    text = Path(path).read_text(encoding="utf-8")
    if text.endswith("\n"):
        text = text[:-1]
    lines = tuple(line.strip() for line in text.split("\n")) if text else ()
    if len(lines) != expected:
        raise DataFormatError(
            f"{path} has {len(lines)} lines but the corpus is line-aligned with {expected} "
            f"lines in every file; the file is truncated or not the pinned version. Verify or "
            f"re-download it with `python -m optical_lib.fetch`."
        )
    empty = [i for i, line in enumerate(lines) if not line]
    if empty:
        raise DataFormatError(
            f"{path}: {len(empty)} empty line(s) (first at 0-based line {empty[0]}); the "
            f"pinned file has none. Re-download it with `python -m optical_lib.fetch`."
        )
    return lines


def _lines(relative: str, expected: int, data_dir: str | Path | None) -> tuple[str, ...]:
    path = require(relative, data_root(data_dir))
    stat = path.stat()
    return _read_checked(str(path), expected, stat.st_mtime_ns, stat.st_size)


def ntrex_english(data_dir: str | Path | None = None) -> tuple[str, ...]:
    """The 1,997 English source sentences of NTREX-128; index = English id."""
    return _lines(f"{NTREX_DIR}/{NTREX_ENGLISH_FILE}", NTREX_LINES, data_dir)


def ntrex_lines(lang: str, data_dir: str | Path | None = None) -> tuple[str, ...]:
    """The 1,997 NTREX-128 translations into ``lang``; line i translates English id i."""
    code = _resolve(lang, NTREX_FILES, "ntrex (NTREX-128)")
    return _lines(f"{NTREX_DIR}/newstest2019-ref.{NTREX_FILES[code]}.txt", NTREX_LINES, data_dir)


def ntrex_bitext(
    lang: str, ids: Iterable[int] | None = None, data_dir: str | Path | None = None
) -> list[BitextPair]:
    """NTREX-128 ``lang``-eng pairs for English ids ``ids`` (default: all 1,997, in order),
    each with its ``eng_id``."""
    code = _resolve(lang, NTREX_FILES, "ntrex (NTREX-128)")
    src, eng = ntrex_lines(code, data_dir), ntrex_english(data_dir)
    ids = range(NTREX_LINES) if ids is None else list(ids)
    bad = [i for i in ids if not (isinstance(i, int) and 0 <= i < NTREX_LINES)]
    if bad:
        raise ValueError(f"NTREX English ids must be integers in 0..{NTREX_LINES - 1}: {bad[:5]}")
    return [BitextPair(src[i], eng[i], code, ENGLISH, eng_id=i) for i in ids]


def flores_lines(lang: str, data_dir: str | Path | None = None) -> tuple[str, ...]:
    """The 1,012 FLORES-200 devtest sentences of ``lang`` (``eng`` for English)."""
    code = _resolve(lang, FLORES_FILES, "flores (FLORES-200)")
    return _lines(f"{FLORES_DIR}/{FLORES_FILES[code]}.devtest", FLORES_LINES, data_dir)


def flores_bitext(lang: str, data_dir: str | Path | None = None) -> list[BitextPair]:
    """FLORES-200 devtest ``lang``-eng pairs (1,012), ``eng_id`` = line number."""
    code = _resolve(lang, FLORES_FILES, "flores (FLORES-200)")
    if code == ENGLISH:
        raise ValueError("flores_bitext pairs a language with English; 'eng' is the pivot")
    src, eng = flores_lines(code, data_dir), flores_lines(ENGLISH, data_dir)
    pairs = enumerate(zip(src, eng, strict=True))
    return [BitextPair(s, e, code, ENGLISH, eng_id=i) for i, (s, e) in pairs]


Direction = Literal["x-eng", "eng-x"]


def flores_task(
    lang: str, direction: Direction = "x-eng", data_dir: str | Path | None = None
) -> RetrievalTask:
    """FLORES-200 devtest retrieval between ``lang`` and English: 1,012 queries, 1,012
    candidates, the relevant candidate is the same line.

    ``x-eng``: task ``flores-<lang>-eng``, queries ``flores-<lang>-q<i>`` in ``lang``,
    documents ``flores-eng-d<i>``. ``eng-x``: task ``flores-eng-<lang>``, queries
    ``flores-eng-q<i>``, documents ``flores-<lang>-d<i>``. English ids are shared across
    tasks, so English embeddings can be computed once.
    """
    if direction not in ("x-eng", "eng-x"):
        raise ValueError(f"direction must be 'x-eng' or 'eng-x', not {direction!r}")
    pairs = flores_bitext(lang, data_dir)
    code = pairs[0].src_lang
    if direction == "x-eng":
        q_lang, d_lang = code, ENGLISH
        q_text, d_text = [p.src_text for p in pairs], [p.tgt_text for p in pairs]
    else:
        q_lang, d_lang = ENGLISH, code
        q_text, d_text = [p.tgt_text for p in pairs], [p.src_text for p in pairs]
    queries = {f"flores-{q_lang}-q{i}": t for i, t in enumerate(q_text)}
    corpus = {f"flores-{d_lang}-d{i}": t for i, t in enumerate(d_text)}
    qrels = {f"flores-{q_lang}-q{i}": {f"flores-{d_lang}-d{i}": 1} for i in range(len(pairs))}
    return RetrievalTask(f"flores-{q_lang}-{d_lang}", corpus, queries, qrels, q_lang, d_lang)


def load_v2_tasks(
    flores: Iterable[str] = EVAL_LANGS_FLORES,
    directions: Sequence[Direction] = ("x-eng", "eng-x"),
    tatoeba: Iterable[str] = EVAL_LANGS_TATOEBA_V2,
    xquad: Iterable[str] = XQUAD_R_QUERY_LANGS,
    data_dir: str | Path | None = None,
) -> dict[str, RetrievalTask]:
    """Every v2 evaluation task by name: FLORES-200 in both directions for the evaluation
    languages, Tatoeba X->eng per language and pooled (``tatoeba-pooled``), XQuAD-R X->eng.
    Pass ``flores=DEV_LANGS_FLORES, tatoeba=(), xquad=()`` for the tuning tasks."""
    tasks: dict[str, RetrievalTask] = {}
    for lang in flores:
        for direction in directions:
            task = flores_task(lang, direction, data_dir)
            tasks[task.name] = task
    tatoeba = list(tatoeba)
    tasks.update(load_offline_tasks(tatoeba=tatoeba, xquad=(), data_dir=data_dir))
    if len(tatoeba) > 1:
        task = tatoeba_pooled_task(tatoeba, data_dir)
        tasks[task.name] = task
    tasks.update(load_offline_tasks(tatoeba=(), xquad=xquad, data_dir=data_dir))
    return tasks


# --------------------------------------------------------------------------- sampler


def max_fixed_budget(ks: Iterable[int], n_lines: int = NTREX_LINES) -> int:
    """Largest budget B <= ``n_lines`` that every k in ``ks`` divides: lcm(ks) * floor(n_lines
    / lcm(ks)). For ks = 1, 2, 4, ..., 64 and NTREX's 1,997 lines: 1,984."""
    ks = list(ks)
    if not ks or any(not isinstance(k, int) or k < 1 for k in ks):
        raise ValueError(f"ks must be positive integers, got {ks}")
    step = math.lcm(*ks)
    if step > n_lines:
        raise ValueError(
            f"No budget <= {n_lines} is divisible by every k in {ks} (lcm {step}); use ks "
            f"whose least common multiple is at most {n_lines}"
        )
    return step * (n_lines // step)


#: The study's numbers of training languages (k as a category) and its two budgets: the
#: largest budget every k divides (1,984 = 64 x 31 on NTREX's 1,997 lines) and a small one.
#: Fixed here, before any run.
STUDY_KS: tuple[int, ...] = (1, 2, 4, 8, 16, 32, 64)
STUDY_BUDGETS: tuple[int, ...] = (1984, 512)


def english_ids(budget: int, draw: int, n_lines: int = NTREX_LINES) -> tuple[int, ...]:
    """The ``budget`` English ids of draw ``draw``: the first ``budget`` of a permutation of
    ``range(n_lines)`` seeded by the draw only (not by k), so smaller budgets are prefixes."""
    if not isinstance(budget, int) or not 1 <= budget <= n_lines:
        raise ValueError(
            f"budget={budget!r} English ids cannot be drawn from a corpus of {n_lines} lines; "
            f"use 1 <= budget <= {n_lines} (e.g. max_fixed_budget(ks) = the largest budget "
            f"that every k divides)"
        )
    order = list(range(n_lines))
    random.Random(f"ntrex-english:{draw}").shuffle(order)
    return tuple(order[:budget])


def draw_languages(pool: Sequence[str], k: int, draw: int) -> tuple[str, ...]:
    """The k languages of draw ``draw``: the first k of a permutation of the sorted ``pool``
    seeded by the draw (nested across k within a draw; a uniform k-subset across draws)."""
    langs = sorted({normalize_code(x) for x in pool})
    if not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be a positive integer, not {k!r}")
    if k > len(langs):
        raise ValueError(
            f"k={k} is larger than the pool of {len(langs)} languages; use k <= {len(langs)} "
            f"(the 'no relatives' pool is smaller than the full one)"
        )
    random.Random(f"ntrex-languages:{draw}").shuffle(langs)
    return tuple(langs[:k])


@dataclass(frozen=True)
class FixedContentSample:
    """Output of :func:`sample_fixed_content`.

    ``pairs``: ``budget`` pairs, each with its English ``eng_id``, in a seeded shuffled order;
    ``languages``: the k languages in draw order; ``english_ids``: the English ids in draw
    order (share j = ``english_ids[j*B/k:(j+1)*B/k]`` belongs to ``languages[j]``);
    ``pool``: name of the pool (``ntrex`` or ``ntrex-no-relatives``).
    """

    pairs: list[BitextPair] = field(repr=False)
    draw: int
    budget: int
    k: int
    languages: tuple[str, ...]
    english_ids: tuple[int, ...] = field(repr=False)
    pool: str

    @property
    def shares(self) -> dict[str, int]:
        """Pairs per language (all equal to budget / k)."""
        return dict.fromkeys(self.languages, self.budget // self.k)

    def covariates(self) -> dict[str, Any]:
        """Per-run covariates (:func:`run_covariates` of the languages)."""
        return run_covariates(self.languages)

    def eval_covariates(self, eval_lang: str) -> dict[str, Any]:
        """Covariates for one evaluation language (:func:`eval_covariates`)."""
        return eval_covariates(self, eval_lang)

    def record(self) -> dict[str, Any]:
        """JSON-ready description of the sample (no texts)."""
        return {
            "pool": self.pool, "draw": self.draw, "budget": self.budget, "k": self.k,
            "languages": list(self.languages), **self.covariates(),
        }  # fmt: skip


def sample_fixed_content(
    k: int,
    budget: int,
    draw: int,
    relatives: bool = True,
    pool: Sequence[str] | None = None,
    data_dir: str | Path | None = None,
) -> FixedContentSample:
    """Fixed-content NTREX-128 sample: ``budget`` pairs from exactly ``k`` languages with the
    English side fixed by (``draw``, ``budget``) alone.

    English ids :func:`english_ids` (budget, draw) are split in order into k shares of
    ``budget / k``; share j is paired with language j of :func:`draw_languages` (pool, k,
    draw). ``pool`` defaults to :func:`training_pool_ntrex` (``relatives``); a pool language
    that is excluded (evaluation, development, close variety, English) is refused. Raises
    ``ValueError`` naming the value and the fix when ``budget`` exceeds the corpus, ``k``
    exceeds the pool or does not divide ``budget``.
    """
    name = "ntrex" if relatives else "ntrex-no-relatives"
    if pool is None:
        pool = training_pool_ntrex(relatives)
    else:
        pool = [_resolve(x, NTREX_FILES, "ntrex (NTREX-128)") for x in pool]
        banned = pool_exclusions(relatives)
        hit = sorted(x for x in pool if x in banned)
        if hit:
            raise ValueError(
                "The pool holds excluded languages: "
                + "; ".join(f"{x} ({banned[x]})" for x in hit)
                + ". Use training_pool_ntrex() or drop them."
            )
        name = "custom"
    if not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be a positive integer, not {k!r}")
    ids = english_ids(budget, draw)
    if budget % k:
        raise ValueError(
            f"budget={budget} is not divisible by k={k}: shares must be equal. Use a budget "
            f"that every k divides, e.g. max_fixed_budget([...]) (1984 for k up to 64)"
        )
    langs = draw_languages(pool, k, draw)
    share = budget // k
    pairs: list[BitextPair] = []
    for j, lang in enumerate(langs):
        pairs.extend(ntrex_bitext(lang, ids[j * share : (j + 1) * share], data_dir))
    random.Random(f"ntrex-order:{draw}:{budget}:{k}").shuffle(pairs)
    return FixedContentSample(pairs, draw, budget, k, langs, ids, name)


# --------------------------------------------------------------------------- learning curve

#: ``budget`` value that asks :func:`sample_pool` for the whole pool.
WHOLE_POOL = 0


@dataclass(frozen=True)
class PoolSample:
    """Output of :func:`sample_pool`: the first ``budget`` pairs of a seeded shuffle of the
    whole training pool (NTREX-128 and Tatoeba pairs of the pool languages). The English
    side is *not* held fixed: it grows with the budget."""

    pairs: list[BitextPair] = field(repr=False)
    draw: int
    budget: int
    languages: tuple[str, ...]
    pool: str
    n_ntrex: int
    n_tatoeba: int
    n_dropped_english: int

    @property
    def k(self) -> int:
        return len(self.languages)

    def record(self) -> dict[str, Any]:
        return {"pool": self.pool, "draw": self.draw, "budget": self.budget, "k": self.k,
                "languages": list(self.languages), "n_ntrex": self.n_ntrex,
                "n_tatoeba": self.n_tatoeba, "n_dropped_english": self.n_dropped_english,
                "english_fixed": False, **run_covariates(self.languages)}


def evaluation_english(data_dir: str | Path | None = None) -> frozenset[str]:
    """Every English sentence the v2 evaluation and development tasks use (FLORES-200
    devtest, the Tatoeba test sets of the evaluation languages, XQuAD-R's English questions
    and sentences), whitespace-normalised and lower-cased: training pairs with one of these
    on the English side are dropped from the learning-curve pool."""
    from .data import tatoeba_bitext, xquad_r_task

    def norm(text: str) -> str:
        return " ".join(text.split()).lower()

    out = {norm(t) for t in flores_lines(ENGLISH, data_dir)}
    for lang in EVAL_LANGS_TATOEBA_V2:
        out |= {norm(p.tgt_text) for p in tatoeba_bitext(lang, data_dir)}
    task = xquad_r_task("eng", "eng", data_dir)
    out |= {norm(t) for t in [*task.queries.values(), *task.corpus.values()]}
    return frozenset(out)


@lru_cache(maxsize=2)
def _pool_pairs(relatives: bool, data_dir: str | None) -> tuple[tuple[BitextPair, ...], int,
                                                                  int, int]:
    from .data import tatoeba_bitext, tatoeba_languages

    langs = training_pool_ntrex(relatives)
    banned = evaluation_english(data_dir)
    ntrex = [p for lang in langs for p in ntrex_bitext(lang, None, data_dir)]
    in_tatoeba = set(tatoeba_languages(data_dir))
    tatoeba = [p for lang in langs if lang in in_tatoeba for p in tatoeba_bitext(lang, data_dir)]
    keep = [p for p in ntrex + tatoeba if " ".join(p.tgt_text.split()).lower() not in banned]
    n_ntrex = sum(p.eng_id is not None for p in keep)
    return tuple(keep), n_ntrex, len(keep) - n_ntrex, len(ntrex) + len(tatoeba) - len(keep)


def pool_size(relatives: bool = True, data_dir: str | Path | None = None) -> int:
    """Pairs in the whole learning-curve pool (:func:`sample_pool` with :data:`WHOLE_POOL`)."""
    return len(_pool_pairs(relatives, None if data_dir is None else str(data_dir))[0])


def sample_pool(budget: int, draw: int, relatives: bool = True,
                data_dir: str | Path | None = None) -> PoolSample:
    """The learning-curve sample: the first ``budget`` pairs (:data:`WHOLE_POOL`: all) of
    the whole pool shuffled by ``draw``, so a smaller budget is a prefix of a larger one.
    Pairs whose English side is an evaluation sentence (:func:`evaluation_english`) are
    left out first."""
    pairs, n_ntrex, n_tatoeba, dropped = _pool_pairs(relatives, None if data_dir is None
                                                     else str(data_dir))
    if budget != WHOLE_POOL and not 1 <= budget <= len(pairs):
        raise ValueError(f"budget={budget} but the pool has {len(pairs)} pairs "
                         f"(use 1..{len(pairs)}, or {WHOLE_POOL} for all of them)")
    order = list(pairs)
    random.Random(f"pool-order:{draw}").shuffle(order)
    chosen = order if budget == WHOLE_POOL else order[:budget]
    langs = tuple(sorted({p.src_lang for p in chosen}))
    n_nt = sum(p.eng_id is not None for p in chosen)
    return PoolSample(chosen, draw, len(chosen), langs,
                      "ntrex+tatoeba" + ("" if relatives else "-no-relatives"),
                      n_nt, len(chosen) - n_nt, dropped)


# --------------------------------------------------------------------------- covariates


def run_covariates(languages: Sequence[str]) -> dict[str, Any]:
    """Per-run composition of a sample's languages (equal shares, so language shares are pair
    shares): ``n_families``, ``n_genera``, ``n_scripts``, ``share_xlmr`` (languages in XLM-R
    pretraining; languages of unknown status count as not seen) and ``n_xlmr_unknown``."""
    info = [language_info(x) for x in languages]
    n = len(info)
    return {
        "n_families": len({i["family"] for i in info}),
        "n_genera": len({i["genus"] for i in info}),
        "n_scripts": len({i["script"] for i in info}),
        "share_xlmr": sum(i["xlmr"] is True for i in info) / n,
        "n_xlmr_unknown": sum(i["xlmr"] is None for i in info),
    }


def eval_covariates(sample: FixedContentSample, eval_lang: str) -> dict[str, Any]:
    """Relatedness of a sample's training pairs to one evaluation language: the share of
    pairs whose language has the same family / genus / script as ``eval_lang``, plus the
    per-run covariates. Shares are over pairs (= over languages, shares being equal)."""
    target = language_info(eval_lang)
    counts = {lang: 0 for lang in sample.languages}
    for pair in sample.pairs:
        counts[pair.src_lang] += 1
    total = sum(counts.values())
    same = {"family": 0, "genus": 0, "script": 0}
    for lang, n in counts.items():
        info = language_info(lang)
        for key in same:
            same[key] += n * (info[key] == target[key])
    return {
        "eval_lang": target["iso639_3"],
        **{f"share_same_{key}": v / total for key, v in same.items()},
        **run_covariates(sample.languages),
    }


# --------------------------------------------------------------------------- tables


def split_table(data_dir: str | Path | None = None, check_files: bool = False):
    """The v2 splits, one row per language: ``split`` (evaluation / development / training /
    training (also without relatives) ...), ``code, name, family, genus, script, xlmr,
    in_tatoeba, ntrex_pairs, flores_pairs``. Pair counts are the corpora's fixed line counts
    (``check_files=True`` reads every file to confirm them)."""
    import pandas as pd

    from .data import tatoeba_languages

    tatoeba = set(tatoeba_languages(data_dir)) if check_files else set()
    no_rel = set(training_pool_ntrex(relatives=False))
    rows = []
    splits = [
        *(("evaluation", x) for x in EVAL_LANGS_FLORES),
        *(("development", x) for x in DEV_LANGS_FLORES),
        *(
            ("training" if x in no_rel else "training (not in no-relatives pool)", x)
            for x in training_pool_ntrex(True)
        ),
    ]
    for split, code in splits:
        info = language_info(code)
        ntrex = flores = 0
        if code in NTREX_FILES:
            ntrex = len(ntrex_lines(code, data_dir)) if check_files else NTREX_LINES
        if code in FLORES_FILES:
            flores = len(flores_lines(code, data_dir)) if check_files else FLORES_LINES
        rows.append({
            "split": split, "code": code, "name": info["name"], "family": info["family"],
            "genus": info["genus"], "script": info["script"], "xlmr": info["xlmr"],
            "in_tatoeba": (code in tatoeba) if check_files else "tatoeba" in info["datasets"],
            "ntrex_pairs": ntrex, "flores_pairs": flores,
        })  # fmt: skip
    return pd.DataFrame(rows)


def fetch_multiway(dest: str | Path | None = None, allow_download: bool = True) -> dict[str, int]:
    """Verify (and, where there is internet, download) the pinned NTREX-128 and FLORES-200
    files into ``dest`` (default: the data directory); see :mod:`optical_lib.fetch`."""
    from . import fetch

    return fetch.fetch(
        None if dest is None else Path(dest), folders=["ntrex-128", "flores-200"],
        allow_download=allow_download, progress=False,
    )  # fmt: skip
