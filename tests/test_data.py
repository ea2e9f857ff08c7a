"""Tests of optical_lib.data: real-file counts and alignment, malformed files, language
metadata, the diversity sampler (incl. property-based), study splits, WebFAQ fixtures and the
offline failure path."""

from __future__ import annotations

import csv
import math
import shutil
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from optical_lib import data as D
from optical_lib.paths import data_dir

FIXTURES = Path(__file__).parent / "fixtures" / "webfaq"
DATA = data_dir()
# The real data is required: a test that reads it fails (conftest's real_data_dir fixture,
# with the fix in its message) instead of being skipped when it is missing.
needs_data = pytest.mark.usefixtures("real_data_dir")

# Line counts of the evaluation languages' Tatoeba files (LASER v1), counted with wc -l.
EVAL_LINES = {
    "amh": 168, "ceb": 600, "gla": 829, "jav": 205, "kab": 1000, "khm": 722, "swh": 390,
    "tat": 1000, "tgl": 1000, "uig": 1000, "war": 1000, "xho": 142, "yid": 848,
}  # fmt: skip
# LAReQA README, "Dataset statistics": candidates per language (1190 questions each).
XQUAD_CANDIDATES = {
    "ar": 1222, "de": 1276, "el": 1234, "en": 1180, "es": 1215, "hi": 1244,
    "ru": 1219, "th": 852, "tr": 1167, "vi": 1209, "zh": 1196,
}  # fmt: skip


# --------------------------------------------------------------------------- Tatoeba


@needs_data
def test_tatoeba_languages_and_eval_line_counts():
    langs = D.tatoeba_languages()
    assert len(langs) == 112 and "eng" not in langs
    for lang, n in EVAL_LINES.items():
        assert len(D.tatoeba_bitext(lang)) == n, lang


@needs_data
def test_tatoeba_swh_alignment_and_task():
    pairs = D.tatoeba_bitext("swh")
    raw_src = (DATA / "tatoeba-v1/tatoeba.swh-eng.swh").read_text(encoding="utf-8").split("\n")
    raw_eng = (DATA / "tatoeba-v1/tatoeba.swh-eng.eng").read_text(encoding="utf-8").split("\n")
    assert len(pairs) == 390
    assert (pairs[0].src_text, pairs[0].tgt_text) == (raw_src[0].strip(), raw_eng[0].strip())
    assert (pairs[-1].src_text, pairs[-1].tgt_text) == (raw_src[389].strip(), raw_eng[389].strip())
    assert {(p.src_lang, p.tgt_lang) for p in pairs} == {("swh", "eng")}
    task = D.tatoeba_task("swh")
    assert (task.name, task.query_lang, task.doc_lang) == ("tatoeba-swh", "swh", "eng")
    assert len(task.queries) == len(task.corpus) == 390
    assert task.qrels["tatoeba-swh-q12"] == {"tatoeba-swh-d12": 1}
    assert task.queries["tatoeba-swh-q12"] == pairs[12].src_text
    assert task.corpus["tatoeba-swh-d12"] == pairs[12].tgt_text


@needs_data
def test_tatoeba_unknown_language_message():
    with pytest.raises(
        ValueError, match=r"Unknown language 'swa' in Tatoeba \(available: afr, amh,"
    ):
        D.tatoeba_bitext("swa")


@needs_data
def test_tatoeba_mismatched_line_counts(tmp_path):
    folder = tmp_path / "tatoeba-v1"
    folder.mkdir()
    for suffix in ("swh", "eng"):
        shutil.copy(DATA / f"tatoeba-v1/tatoeba.swh-eng.{suffix}", folder)
    eng = folder / "tatoeba.swh-eng.eng"
    eng.write_text("".join(eng.read_text(encoding="utf-8").splitlines(True)[:-3]), "utf-8")
    with pytest.raises(D.DataFormatError) as err:
        D.tatoeba_bitext("swh", data_dir=tmp_path)
    msg = str(err.value)
    assert "tatoeba.swh-eng.swh has 390 lines" in msg and "tatoeba.swh-eng.eng has 387" in msg


# --------------------------------------------------------------------------- XQuAD-R


@needs_data
def test_xquad_r_counts_match_lareqa_readme():
    for code, n in XQUAD_CANDIDATES.items():
        task = D.xquad_r_task("en", doc_lang=code)
        assert len(task.queries) == 1190 and len(task.corpus) == n, code
    assert D.XQUAD_R_LANGS == tuple(D.XQUAD_R_CODES.values()) and len(D.XQUAD_R_LANGS) == 11


@needs_data
def test_xquad_r_relevant_sentence_holds_the_answer():
    import json

    task = D.xquad_r_task("en", "en")
    raw = json.loads((DATA / "xquad-r/en.json").read_text(encoding="utf-8"))
    answers = {
        qa["id"]: qa["answers"][0]["text"]
        for art in raw["data"]
        for para in art["paragraphs"]
        for qa in para["qas"]
    }
    inside = 0
    for qid, judged in task.qrels.items():
        (doc_id,) = judged
        answer = answers[qid.removeprefix("xquad-r-eng-q")]
        assert answer[:3] in task.corpus[doc_id]  # the answer starts in the relevant sentence
        inside += answer in task.corpus[doc_id]
    assert inside >= 1185  # 3 of 1190 answers run over a sentence break ("E.I. du Pont")


@needs_data
def test_xquad_r_parallel_ids_and_cross_lingual_task():
    ar = D.xquad_r_task("ar")  # two-letter code accepted; English documents by default
    de = D.xquad_r_task("deu")
    assert (ar.name, ar.query_lang, ar.doc_lang) == ("xquad-r-ara-eng", "ara", "eng")
    strip = [lambda q: q.removeprefix("xquad-r-ara-q"), lambda q: q.removeprefix("xquad-r-deu-q")]
    assert {strip[0](q) for q in ar.queries} == {strip[1](q) for q in de.queries}
    assert [ar.qrels[q] for q in ar.queries] == [de.qrels[q] for q in de.queries]
    with pytest.raises(ValueError, match="Unknown language 'fr' in XQuAD-R"):
        D.xquad_r_task("fr")


@needs_data
def test_xquad_r_pool_task():
    pool = D.xquad_r_pool_task("de")
    assert len(pool.corpus) == sum(XQUAD_CANDIDATES.values())
    assert len(pool.queries) == 1190 and set(pool.query_langs.values()) == {"deu"}
    for judged in pool.qrels.values():
        assert sorted(pool.doc_langs[d] for d in judged) == sorted(D.XQUAD_R_LANGS)
    assert len(D.xquad_r_pool_task(data_dir=DATA).queries) == 11 * 1190


@needs_data
def test_xquad_r_truncated_json(tmp_path):
    folder = tmp_path / "xquad-r"
    folder.mkdir()
    text = (DATA / "xquad-r/en.json").read_text(encoding="utf-8")
    (folder / "en.json").write_text(text[: len(text) // 2], encoding="utf-8")
    with pytest.raises(D.DataFormatError, match=r"en\.json is not valid JSON .*truncated"):
        D.xquad_r_task("en", "en", data_dir=tmp_path)


# --------------------------------------------------------------------------- Bible


@needs_data
def test_bible_bitext_alignment():
    pairs = D.bible_bitext("kab", "swh")
    assert len(pairs) > 7000
    assert {(p.src_lang, p.tgt_lang) for p in pairs} == {("kab", "swh")}
    assert pairs[0].tgt_text.startswith("Yesu Kristo alikuwa mzawa wa Daudi")  # b.MAT.1.1
    langs = D.bible_languages()
    assert "afr" not in langs and "eng" not in langs and len(langs["quc"]) == 2
    task = D.bible_task("chr", "ukr", max_queries=50)
    assert len(task.queries) == 50 and len(task.corpus) > 7000


@needs_data
def test_bible_errors():
    with pytest.raises(D.DataFormatError, match=r"Afrikaans\.xml is empty \(0 bytes\)"):
        D.bible_bitext("afr", "zul")
    with pytest.raises(ValueError, match=r"'quc' has 2 translations"):
        D.bible_bitext("quc", "mam")
    assert len(D.bible_bitext("K'iche'-NT-SIL", "mam")) > 7000
    with pytest.raises(ValueError, match="leaves out English"):
        D.bible_bitext("eng", "zul")
    with pytest.raises(ValueError, match="Unknown language 'xyz' in the Bible corpus"):
        D.bible_bitext("xyz", "zul")


# --------------------------------------------------------------------------- language metadata


def test_language_table_values():
    df = D.language_table()
    assert df.index.is_unique and len(df) >= 150
    assert set(df["joshi_class"].dropna()) <= set(range(6))
    assert (df["script"] != "").all() and (df["family"] != "").all()
    xlmr = df[df["xlmr"].fillna(False)]
    assert xlmr["xlmr_code"].ne("").all() and xlmr["xlmr_code"].nunique() <= 100
    info = D.language_info("swh")
    assert (info["family"], info["joshi_class"], info["xlmr"]) == ("Niger-Congo", 2, True)
    assert D.language_info("kab")["xlmr"] is False and D.language_info("arz")["xlmr"] is None
    with pytest.raises(ValueError, match="Unknown language 'zzz' in languages.csv"):
        D.language_info("zzz")


@needs_data
def test_language_table_covers_every_language_used():
    df = D.language_table()
    used = {
        "tatoeba": set(D.tatoeba_languages()),
        "bible": set(D.bible_languages()),
        "xquad-r": set(D.XQUAD_R_LANGS),
    }
    for name, langs in used.items():
        assert langs <= set(df.index), (name, langs - set(df.index))
        tagged = {c for c, ds in df["datasets"].items() if name in ds.split(";")}
        assert tagged == langs, name


@needs_data
def test_bible_families_agree_with_metadata():
    # Documented departures from metadata.csv (see notes in languages.csv)
    renamed = {"ake": "Cariban", "kbh": "Camsa", "kor": "Koreanic", "tur": "Turkic"}
    with (DATA / "bible-corpus/metadata.csv").open(encoding="utf-8") as f:
        meta = {r["ISO_639-3"]: r["Family"] for r in csv.DictReader(f)}
    for code in D.bible_languages():
        assert D.language_info(code)["family"] == renamed.get(code, meta[code]), code


# --------------------------------------------------------------------------- sampler


def _toy_pool(sizes: dict[str, int]) -> dict[str, list[D.BitextPair]]:
    return {
        lang: [D.BitextPair(f"{lang} {i}", f"en {lang} {i}", lang) for i in range(n)]
        for lang, n in sizes.items()
    }


TOY_FAMILIES = {"aaa": "F1", "aab": "F1", "aac": "F1", "baa": "F2", "bab": "F2", "caa": "F3"}
TOY = _toy_pool(dict.fromkeys(TOY_FAMILIES, 50) | {"evl": 50})


def test_sampler_budget_shares_and_families():
    s = D.sample_bitext(TOY, k=3, budget=100, seed=0, exclude={"evl"}, families=TOY_FAMILIES)
    assert len(s.pairs) == 100 and len(set(s.pairs)) == 100
    d = s.diversity
    assert d.k == 3 and len(d.languages) == 3 and d.n_families == 3  # one per family
    assert sorted(d.pairs_per_language.values()) == [33, 33, 34]
    counts = {lang: sum(p.src_lang == lang for p in s.pairs) for lang in d.languages}
    assert counts == d.pairs_per_language
    assert math.isclose(d.entropy_bits, -sum(c / 100 * math.log2(c / 100) for c in counts.values()))
    even = D.sample_bitext(TOY, 4, 100, 1, exclude={"evl"}, families=TOY_FAMILIES)
    assert math.isclose(even.diversity.entropy_bits, 2.0) and even.diversity.n_families == 3


def test_sampler_determinism_and_seeds():
    a = D.sample_bitext(TOY, 2, 60, seed=7, exclude={"evl"}, families=TOY_FAMILIES)
    b = D.sample_bitext(TOY, 2, 60, seed=7, exclude={"evl"}, families=TOY_FAMILIES)
    c = D.sample_bitext(TOY, 2, 60, seed=8, exclude={"evl"}, families=TOY_FAMILIES)
    assert a.pairs == b.pairs and a.diversity == b.diversity
    assert a.pairs != c.pairs


def test_sampler_refusals():
    with pytest.raises(
        ValueError, match="k=7 exceeds the 6 languages available after excluding evl"
    ):
        D.sample_bitext(TOY, 7, 70, 0, exclude={"evl"}, families=TOY_FAMILIES)
    with pytest.raises(ValueError, match=r"Only 0 of 6 languages have the ceil\(120/2\) = 60"):
        D.sample_bitext(TOY, 2, 120, 0, exclude={"evl"}, families=TOY_FAMILIES)
    with pytest.raises(ValueError, match="budget"):
        D.sample_bitext(TOY, 3, 2, 0)
    with pytest.raises(ValueError, match="excluded .* evl"):
        D.sample_bitext(TOY, 2, 10, 0, exclude={"evl"}, on_excluded="error")
    bad = {"aaa": [D.BitextPair("x", "y", "evl")] * 5}
    with pytest.raises(ValueError, match="src_lang 'evl'"):
        D.sample_bitext(bad, 1, 5, 0, exclude={"evl"}, families={"aaa": "F"})


def test_sampler_skips_small_languages():
    pool = _toy_pool({"big1": 40, "big2": 40, "tiny": 5})
    s = D.sample_bitext(pool, 2, 60, 3, families={"big1": "A", "big2": "A", "tiny": "B"})
    assert set(s.diversity.languages) == {"big1", "big2"}  # tiny cannot give its share of 30
    assert D.max_budget(pool, [1, 2, 3]) == min(40, 2 * 40, 3 * 5)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    sizes=st.lists(st.integers(1, 30), min_size=1, max_size=9),
    n_fam=st.integers(1, 4),
    k=st.integers(1, 9),
    budget=st.integers(1, 120),
    seed=st.integers(0, 2**31),
    n_excl=st.integers(0, 3),
)
def test_sampler_properties(sizes, n_fam, k, budget, seed, n_excl):
    langs = [f"l{i:02d}" for i in range(len(sizes))]
    pool = _toy_pool(dict(zip(langs, sizes, strict=True)))
    families = {lang: f"f{i % n_fam}" for i, lang in enumerate(langs)}
    exclude = set(langs[:n_excl])
    kept = [lang for lang in langs if lang not in exclude]
    qualified = [lang for lang in kept if len(pool[lang]) >= -(-budget // k)] if k else []
    if budget < k or k > len(kept) or len(qualified) < k:
        with pytest.raises(ValueError):
            D.sample_bitext(pool, k, budget, seed, exclude=exclude, families=families)
        return
    s = D.sample_bitext(pool, k, budget, seed, exclude=exclude, families=families)
    d = s.diversity
    assert len(s.pairs) == budget and len(set(s.pairs)) == budget
    assert len(set(d.languages)) == k and not set(d.languages) & exclude
    assert not {p.src_lang for p in s.pairs} & exclude
    assert max(d.pairs_per_language.values()) - min(d.pairs_per_language.values()) <= 1
    assert d.n_families == min(k, len({families[lang] for lang in qualified}))
    assert D.sample_bitext(pool, k, budget, seed, exclude=exclude, families=families) == s


# --------------------------------------------------------------------------- study splits


@needs_data
def test_training_pool_is_disjoint_and_large_enough():
    pool = D.training_pool()
    assert not set(pool) & D.TRAINING_EXCLUDED
    assert not set(pool) & (set(D.EVAL_LANGS_TATOEBA) | set(D.XQUAD_R_LANGS) | {"ber", "yue"})
    assert len(pool) >= 64 and all(len(v) >= D.DEFAULT_MIN_PAIRS for v in pool.values())
    assert D.max_budget(pool, [1, 2, 4, 8, 16, 32, 64]) == 1000
    s = D.sample_bitext(pool, 64, 1000, seed=0, exclude=D.EVAL_LANGS_TATOEBA)
    assert len(s.pairs) == 1000 and s.diversity.k == 64 and s.diversity.n_families >= 10
    strict = D.training_pool(drop_eval_english=True)
    banned = {p.tgt_text for lang in D.EVAL_LANGS_TATOEBA for p in D.tatoeba_bitext(lang)}
    assert len(strict) >= 64 and not any(p.tgt_text in banned for v in strict.values() for p in v)


@needs_data
def test_tatoeba_pooled_task():
    task = D.tatoeba_pooled_task(["xho", "amh"])
    xho, amh = D.tatoeba_task("xho"), D.tatoeba_task("amh")
    assert (task.name, task.query_lang, task.doc_lang) == ("tatoeba-pooled", "mul", "eng")
    assert set(task.queries) == set(xho.queries) | set(amh.queries)  # 142 + 168
    assert set(task.corpus.values()) == set(xho.corpus.values()) | set(amh.corpus.values())
    assert len(task.corpus) == len(set(task.corpus.values()))  # each English text once
    for qid, judged in task.qrels.items():
        lang, i = qid.split("-")[1], int(qid.rsplit("-q", 1)[1])
        own = (xho if lang == "xho" else amh).corpus[f"tatoeba-{lang}-d{i}"]
        assert [task.corpus[d] for d in judged] == [own] and task.query_langs[qid] == lang
    with pytest.raises(ValueError, match="duplicate languages"):
        D.tatoeba_pooled_task(["xho", "xho"])
    assert D.BitextPair("a", "b", "xho").eng_id is None


@needs_data
def test_load_offline_tasks():
    tasks = D.load_offline_tasks()
    assert len(tasks) == 13 + 10
    assert {t.query_lang for t in tasks.values()} == set(D.EVAL_LANGS_TATOEBA) | set(
        D.XQUAD_R_QUERY_LANGS
    )
    assert all(t.doc_lang == "eng" for t in tasks.values())
    assert tasks["tatoeba-xho"].summary()["n_queries"] == 142


def test_retrieval_task_validation():
    with pytest.raises(ValueError, match="no relevant document"):
        D.RetrievalTask("t", {"d": "x"}, {"q": "y"}, {}, "a", "b")
    with pytest.raises(ValueError, match="not in corpus"):
        D.RetrievalTask("t", {"d": "x"}, {"q": "y"}, {"q": {"e": 1}}, "a", "b")


# --------------------------------------------------------------------------- WebFAQ


def _rows(name: str) -> list[dict]:
    import json

    return [json.loads(line) for line in (FIXTURES / name).read_text("utf-8").splitlines()]


def test_webfaq_config_naming():
    assert D.webfaq_config("deu") == "deu-eng"
    assert D.webfaq_config("fra") == "eng-fra"
    assert D.webfaq_config("cmn") == "eng-zho" and D.webfaq_config("pes") == "eng-fas"


def test_parse_webfaq_bitexts_fixture():
    rows = _rows("deu-eng.jsonl")
    pairs = D.parse_webfaq_bitexts(rows, "deu")
    assert len(pairs) == 5 and pairs[0] == D.BitextPair(
        "Wann ist der Check-in?", "When is check-in?", "deu", "eng"
    )
    assert len(D.parse_webfaq_bitexts(rows, "deu", text="both")) == 10
    assert len(D.parse_webfaq_bitexts(rows, "deu", min_similarity=0.8)) == 4
    swapped = [dict(rows[0], language1="eng", language2="deu", question1="Q en", question2="Q de")]
    assert D.parse_webfaq_bitexts(swapped, "deu")[0].src_text == "Q de"
    other = [dict(rows[0], language1="fra")]
    with pytest.raises(D.DataFormatError, match="No WebFAQ rows pair 'deu' with 'eng'"):
        D.parse_webfaq_bitexts(other, "deu")
    with pytest.raises(D.DataFormatError, match="lacks field"):
        D.parse_webfaq_bitexts([{"language1": "deu"}], "deu")


def test_webfaq_clir_fixture():
    task = D.webfaq_clir_from_rows(_rows("deu-eng.jsonl"), "deu", distractors=["Extra answer."])
    assert (task.query_lang, task.doc_lang, len(task.queries)) == ("deu", "eng", 5)
    assert len(task.corpus) == 5  # 4 distinct English answers (two rows share one) + 1
    q3, q4 = task.qrels["webfaq-deu-q2"], task.qrels["webfaq-deu-q3"]
    assert q3 == q4  # the shared answer is one document, relevant to both questions
    (doc,) = task.qrels["webfaq-deu-q0"]
    assert task.corpus[doc] == "Check-in is possible from 3 pm."


def test_webfaq_retrieval_fixture():
    task = D.parse_webfaq_retrieval(
        _rows("deu-corpus.jsonl"), _rows("deu-queries.jsonl"), _rows("deu-qrels.jsonl"), "deu"
    )
    assert len(task.corpus) == 4 and set(task.queries) == {"q1", "q2", "q3"}  # q4 only score 0
    assert task.corpus["d2"] == "Parken Wir haben eine Tiefgarage mit 40 Stellplätzen."
    assert task.qrels == {"q1": {"d1": 1}, "q2": {"d2": 1}, "q3": {"d3": 1}}


def test_webfaq_loaders_read_local_jsonl(tmp_path):
    pairs = D.webfaq_bitexts("deu", source=FIXTURES, cache_dir=tmp_path)
    assert pairs == D.parse_webfaq_bitexts(_rows("deu-eng.jsonl"), "deu")
    task = D.webfaq_retrieval_task("deu", source=FIXTURES, cache_dir=tmp_path)
    assert set(task.queries) == {"q1", "q2", "q3"}
    clir = D.webfaq_clir_task("deu", source=FIXTURES / "deu-eng.jsonl", cache_dir=tmp_path)
    assert len(clir.queries) == 5
    with pytest.raises(FileNotFoundError, match="eng-fra.jsonl"):
        D.webfaq_bitexts("fra", source=FIXTURES)  # config eng-fra, file missing


def test_webfaq_hub_unreachable_fails_fast(monkeypatch):
    class ConnectError(Exception):  # what httpx raises when DNS fails
        pass

    def no_network(*args, **kwargs):
        raise ConnectError("[Errno -2] Name or service not known")

    monkeypatch.setattr(D, "_hub_offline", lambda: False)
    monkeypatch.setattr(D, "_probe_hub", no_network)
    t0 = time.perf_counter()
    with pytest.raises(D.HubUnavailableError) as err:
        D.webfaq_bitexts("deu")
    assert time.perf_counter() - t0 < 5
    msg = str(err.value)
    assert (
        "PaDaS-Lab/webfaq-bitexts" in msg and "'offline' profile" in msg and "ConnectError" in msg
    )


def test_webfaq_hf_hub_offline_mode(monkeypatch):
    """HF_HUB_OFFLINE=1 (read by huggingface_hub/datasets at import, hence patched there):
    the real load_dataset refuses at once and we turn that into one clear error."""
    import datasets
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    t0 = time.perf_counter()
    with pytest.raises(D.HubUnavailableError, match="'offline' profile"):
        D.webfaq_retrieval_task("deu")
    assert time.perf_counter() - t0 < 5
