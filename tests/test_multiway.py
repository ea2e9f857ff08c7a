"""Tests of optical_lib.multiway on the real NTREX-128 / FLORES-200 files: counts and line
alignment, code tables, the v2 splits, the fixed-content sampler's invariants, covariates on a
hand-checked example, bad input, checksums and the download path (local HTTP server)."""

from __future__ import annotations

import csv
import functools
import hashlib
import http.server
import shutil
import threading
from collections import Counter
from pathlib import Path

import pytest

from optical_lib import data as D
from optical_lib import fetch
from optical_lib import multiway as M

KS = M.STUDY_KS
REQUIRED_EVAL = ("hau", "ibo", "yor", "zul", "kin", "bem", "twi", "swh", "amh", "som")


@pytest.fixture(scope="module", autouse=True)
def root(real_data_dir):
    for sub in ("ntrex-128/NTREX-128", "flores-200/devtest"):
        if not (real_data_dir / sub).is_dir():
            pytest.fail(f"{real_data_dir / sub} is missing; run `python -m optical_lib.fetch`")
    return real_data_dir


# --------------------------------------------------------------------------- files


@pytest.mark.slow
def test_every_file_has_the_corpus_line_count(root):
    assert len(M.ntrex_english()) == M.NTREX_LINES == 1997
    for lang in M.NTREX_FILES:
        assert len(M.ntrex_lines(lang)) == 1997, lang
    for lang in M.FLORES_FILES:
        assert len(M.flores_lines(lang)) == M.FLORES_LINES == 1012, lang
    # one document id per NTREX line, one metadata row (plus header) per FLORES line
    assert len((root / "ntrex-128/DOCUMENT_IDS.tsv").read_text("utf-8").splitlines()) == 1997
    meta = (root / "flores-200/metadata_devtest.tsv").read_text("utf-8").splitlines()
    assert len(meta) == 1013


def test_ntrex_alignment_and_ids(root):
    raw_hau = (root / "ntrex-128/NTREX-128/newstest2019-ref.hau.txt").read_bytes()
    raw_eng = (root / "ntrex-128/NTREX-128/newstest2019-src.eng.txt").read_bytes()
    hau_lines = raw_hau.decode("utf-8").split("\r\n")
    eng_lines = raw_eng.decode("utf-8").split("\r\n")  # NTREX files have CRLF line ends
    pairs = M.ntrex_bitext("hau")
    assert len(pairs) == 1997 and [p.eng_id for p in pairs] == list(range(1997))
    for i in (0, 1000, 1996):
        assert (pairs[i].src_text, pairs[i].tgt_text) == (hau_lines[i], eng_lines[i])
    assert {(p.src_lang, p.tgt_lang) for p in pairs} == {("hau", "eng")}
    some = M.ntrex_bitext("swa", ids=[5, 3])  # NTREX's own code is an alias of swh
    assert [(p.src_lang, p.eng_id) for p in some] == [("swh", 5), ("swh", 3)]
    assert some[0].tgt_text == M.ntrex_english()[5]


def test_flores_tasks_both_directions(root):
    hau = (root / "flores-200/devtest/hau_Latn.devtest").read_text("utf-8").split("\n")
    eng = (root / "flores-200/devtest/eng_Latn.devtest").read_text("utf-8").split("\n")
    x = M.flores_task("hau")
    assert (x.name, x.query_lang, x.doc_lang) == ("flores-hau-eng", "hau", "eng")
    assert len(x.queries) == len(x.corpus) == len(x.qrels) == 1012
    assert x.queries["flores-hau-q17"] == hau[17].strip()
    assert x.qrels["flores-hau-q17"] == {"flores-eng-d17": 1}
    assert x.corpus["flores-eng-d17"] == eng[17].strip()
    y = M.flores_task("hau_Latn", direction="eng-x")
    assert (y.name, y.query_lang, y.doc_lang) == ("flores-eng-hau", "eng", "hau")
    assert y.queries["flores-eng-q17"] == eng[17].strip()
    assert y.qrels["flores-eng-q17"] == {"flores-hau-d17": 1}
    assert y.corpus["flores-hau-d17"] == hau[17].strip()
    assert M.flores_task("zul").corpus == x.corpus  # English candidates shared across tasks
    with pytest.raises(ValueError, match="direction must be 'x-eng' or 'eng-x'"):
        M.flores_task("hau", direction="both")


def test_code_tables_agree_with_the_mirror_coverage_file(root):
    with (root / "language-coverage.csv").open(encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    flores = {f: r["lang_key"] for r in rows for f in r["flores200_files"].split()}
    for code, stem in M.FLORES_FILES.items():
        if code != "eng":
            assert stem in flores, code
            assert (root / f"flores-200/devtest/{stem}.devtest").is_file(), stem
    ntrex_files = {
        p.name.removeprefix("newstest2019-ref.").removesuffix(".txt")
        for p in (root / "ntrex-128/NTREX-128").glob("newstest2019-ref.*.txt")
    }
    assert set(M.NTREX_FILES.values()) | set(M.NTREX_UNUSED) == ntrex_files
    assert len(M.NTREX_FILES) == 119
    tatoeba = {r["lang_key"] for r in rows if r["in_laser_tatoeba"] == "yes"}
    in_tatoeba = {c for c in M.EVAL_LANGS_FLORES if flores[M.FLORES_FILES[c]] in tatoeba}
    assert in_tatoeba == set(M.EVAL_LANGS_TATOEBA_V2)
    assert set(M.EVAL_LANGS_TATOEBA_V2) <= set(D.tatoeba_languages())


# --------------------------------------------------------------------------- splits


def test_evaluation_and_development_sets():
    ev, dev = set(M.EVAL_LANGS_FLORES), set(M.DEV_LANGS_FLORES)
    assert len(ev) == len(M.EVAL_LANGS_FLORES) >= 24 and set(REQUIRED_EVAL) <= ev
    assert len(dev) >= 6 and not ev & dev
    info = {c: D.language_info(c) for c in ev}
    assert len({i["family"] for i in info.values()}) >= 8
    assert len({i["script"] for i in info.values()}) >= 8
    assert len(ev - set(D.tatoeba_languages())) > len(ev) / 2  # most are not in Tatoeba
    assert all(c in M.FLORES_FILES for c in ev | dev)
    assert not (ev | dev) & set(D.XQUAD_R_LANGS)


def test_training_pools_leave_out_evaluation_development_and_relatives():
    pool, strict = set(M.training_pool_ntrex()), set(M.training_pool_ntrex(relatives=False))
    assert strict < pool <= set(M.NTREX_FILES) and len(strict) >= 64 and len(pool) >= 64
    held = {*M.EVAL_LANGS_FLORES, *M.DEV_LANGS_FLORES, *D.XQUAD_R_QUERY_LANGS, "eng"}
    close = {c for codes, _ in M.CLOSE_VARIETIES.values() for c in codes}
    assert not pool & held and not pool & close
    assert {"ssw", "nde", "dzo", "shi", "tha", "yue", "mey", "urd", "aze"} <= close
    eval_genera = {D.language_info(c)["genus"] for c in M.EVAL_LANGS_FLORES}
    assert not {D.language_info(c)["genus"] for c in strict} & eval_genera
    assert {"nya", "sna", "tsn", "ewe", "heb"} <= pool - strict  # Bantoid, Kwa, Semitic relatives
    reasons = M.pool_exclusions()
    assert reasons["ssw"].startswith("close variety of zul") and reasons["hau"].startswith("eval")


def test_split_table_and_metadata_cover_every_code_used():
    df = M.split_table()
    assert set(df["split"]) == {"evaluation", "development", "training",
                                "training (not in no-relatives pool)"}  # fmt: skip
    assert (df.groupby("split").size()[["evaluation", "development"]] == [28, 6]).all()
    ev = df[df["split"] == "evaluation"].set_index("code")
    assert ev.loc["twi", "ntrex_pairs"] == 0 and ev.loc["twi", "flores_pairs"] == 1012
    assert ev.loc["hau", "ntrex_pairs"] == 1997 and not ev.loc["hau", "in_tatoeba"]
    assert ev.loc["swh", "in_tatoeba"] and ev.loc["swh", "xlmr"] and not ev.loc["zul", "xlmr"]
    table = D.language_table()
    used = set(M.NTREX_FILES) | set(M.FLORES_FILES)
    assert used <= set(table.index)
    assert (table.loc[sorted(used), "genus"] != "").all()
    for name, codes in (("ntrex", M.NTREX_FILES), ("flores", M.FLORES_FILES)):
        tagged = {c for c, ds in table["datasets"].items() if name in ds.split(";")}
        assert tagged == set(codes), name


# --------------------------------------------------------------------------- sampler


def test_max_fixed_budget():
    assert M.max_fixed_budget(KS) == 1984 == 31 * 64
    assert M.max_fixed_budget((1, 2, 4)) == 1996 and M.max_fixed_budget((3, 5)) == 1995
    assert 1984 % 64 == 0 and M.max_fixed_budget(KS, n_lines=1000) == 960
    with pytest.raises(ValueError, match="lcm 2520"):
        M.max_fixed_budget(range(1, 11))


def test_fixed_content_invariants_over_k_and_draws():
    english = M.ntrex_english()
    pool = set(M.training_pool_ntrex())
    budget = M.max_fixed_budget(KS)
    seen_sets = {k: set() for k in KS}
    for draw in range(3):
        first_eng = None
        for k in KS:
            s = M.sample_fixed_content(k, budget, draw)
            assert (s.k, s.budget, s.draw, s.pool) == (k, budget, draw, "ntrex")
            assert len(s.pairs) == budget and len(set(s.languages)) == k
            counts = Counter(p.src_lang for p in s.pairs)
            assert set(counts) == set(s.languages) <= pool
            assert set(counts.values()) == {budget // k} and s.shares == dict(counts)
            eng = Counter((p.eng_id, p.tgt_text) for p in s.pairs)
            assert all(text == english[i] for i, text in eng)  # English text is line eng_id
            assert max(eng.values()) == 1  # every English id once
            first_eng = first_eng or eng
            assert eng == first_eng  # identical English multiset for every k
            # share j of the English ids belongs to language j
            for j, lang in enumerate(s.languages):
                share = set(s.english_ids[j * (budget // k) : (j + 1) * (budget // k)])
                assert {p.eng_id for p in s.pairs if p.src_lang == lang} == share
            seen_sets[k].add(s.languages)
            if k > 1:
                assert s.languages[: k // 2] == M.draw_languages(sorted(pool), k // 2, draw)
    assert all(len(v) == 3 for k, v in seen_sets.items() if k > 1)  # draws differ
    again = M.sample_fixed_content(8, 512, 1)
    assert again == M.sample_fixed_content(8, 512, 1)  # deterministic
    assert set(again.english_ids) < set(M.sample_fixed_content(8, budget, 1).english_ids)


def test_no_relatives_sample_and_many_draws():
    strict = set(M.training_pool_ntrex(relatives=False))
    for draw in range(10):
        s = M.sample_fixed_content(64, 1984, draw, relatives=False)
        assert set(s.languages) <= strict and s.pool == "ntrex-no-relatives"
    firsts = Counter(M.draw_languages(sorted(strict), 1, d)[0] for d in range(200))
    assert len(firsts) > 40  # k=1 languages vary across draws (uniform over 66)


def test_covariates_hand_checked():
    # nya: Niger-Congo/Bantoid/Latin/not XLM-R; heb: Afro-Asiatic/Semitic/Hebrew/XLM-R;
    # kir: Turkic/Turkic/Cyrillic/XLM-R; mlt: Afro-Asiatic/Semitic/Latin/not XLM-R
    s = M.sample_fixed_content(4, 12, draw=5, pool=["nya", "heb", "kir", "mlt"])
    assert sorted(s.languages) == ["heb", "kir", "mlt", "nya"] and s.pool == "custom"
    assert s.covariates() == {"n_families": 3, "n_genera": 3, "n_scripts": 3,
                              "share_xlmr": 0.5, "n_xlmr_unknown": 0}  # fmt: skip
    zul = s.eval_covariates("zul")
    assert (zul["share_same_family"], zul["share_same_genus"], zul["share_same_script"]) == (
        0.25, 0.25, 0.5)  # fmt: skip
    tir = M.eval_covariates(s, "tir")
    assert (tir["share_same_family"], tir["share_same_genus"], tir["share_same_script"]) == (
        0.5, 0.5, 0.0)  # fmt: skip
    two = M.sample_fixed_content(2, 12, draw=5, pool=["nya", "heb", "kir", "mlt"])
    assert two.record()["k"] == 2 and len(two.record()["languages"]) == 2


# --------------------------------------------------------------------------- bad input


def test_bad_input_messages():
    with pytest.raises(
        ValueError,
        match=r"Unknown language 'xyz' in flores \(FLORES-200\) "
        r"\(available: afr, amh,.*e\.g\. 'swh', not 'swa'",
    ):
        M.flores_task("xyz")
    with pytest.raises(ValueError, match=r"Unknown language 'twi' in ntrex \(NTREX-128\)"):
        M.ntrex_bitext("twi")  # FLORES only
    with pytest.raises(ValueError, match=r"budget=2000 .* 1997 lines; use 1 <= budget <= 1997"):
        M.sample_fixed_content(1, 2000, 0)
    with pytest.raises(ValueError, match=r"k=100 is larger than the pool of 83 languages"):
        M.sample_fixed_content(100, 1900, 0)
    with pytest.raises(ValueError, match=r"k=80 is larger than the pool of 66"):
        M.sample_fixed_content(80, 1920, 0, relatives=False)
    with pytest.raises(ValueError, match=r"budget=1000 is not divisible by k=64.*max_fixed_budget"):
        M.sample_fixed_content(64, 1000, 0)
    with pytest.raises(ValueError, match=r"excluded languages: hau \(evaluation language"):
        M.sample_fixed_content(1, 10, 0, pool=["hau", "afr"])
    with pytest.raises(ValueError, match=r"ssw \(close variety of zul"):
        M.sample_fixed_content(1, 10, 0, pool=["ssw"])


def test_truncated_and_misaligned_files(tmp_path, root):
    flores = tmp_path / "flores-200/devtest"
    flores.mkdir(parents=True)
    shutil.copy(root / "flores-200/devtest/eng_Latn.devtest", flores)
    lines = (root / "flores-200/devtest/hau_Latn.devtest").read_text("utf-8").splitlines(True)
    (flores / "hau_Latn.devtest").write_text("".join(lines[:-12]), "utf-8")
    with pytest.raises(D.DataFormatError, match=r"hau_Latn\.devtest has 1000 lines but .* 1012"):
        M.flores_task("hau", data_dir=tmp_path)
    lines[3] = "\n"
    (flores / "hau_Latn.devtest").write_text("".join(lines), "utf-8")
    with pytest.raises(D.DataFormatError, match=r"1 empty line\(s\) \(first at 0-based line 3\)"):
        M.flores_task("hau", data_dir=tmp_path)
    with pytest.raises(FileNotFoundError, match=r"zul_Latn\.devtest.*python -m optical_lib"):
        M.flores_task("zul", data_dir=tmp_path)


# --------------------------------------------------------------------------- tasks, pins


def test_load_v2_tasks():
    tasks = M.load_v2_tasks()
    n_eval = len(M.EVAL_LANGS_FLORES)
    assert len(tasks) == 2 * n_eval + len(M.EVAL_LANGS_TATOEBA_V2) + 1 + 10
    assert {t.query_lang for n, t in tasks.items() if n.startswith("flores-eng-")} == {"eng"}
    pooled = tasks["tatoeba-pooled"]
    per_lang = [tasks[f"tatoeba-{c}"] for c in M.EVAL_LANGS_TATOEBA_V2]
    assert len(pooled.queries) == sum(len(t.queries) for t in per_lang)
    assert set(pooled.corpus.values()) == {x for t in per_lang for x in t.corpus.values()}
    assert len(pooled.corpus) == len(set(pooled.corpus.values()))
    assert sum(n.startswith("xquad-r-") for n in tasks) == 10
    dev = M.load_v2_tasks(flores=M.DEV_LANGS_FLORES, tatoeba=(), xquad=())
    assert len(dev) == 2 * len(M.DEV_LANGS_FLORES)


def _mirror_sums(root: Path) -> dict[str, str]:
    out = {}
    for line in (root / "SHA256SUMS").read_text().splitlines():
        digest, path = line.split(maxsplit=1)
        out[path.strip().removeprefix("./")] = digest
    return out


def test_pinned_checksums_and_sources(root):
    pinned = {e.path: e for e in fetch.read_manifest(folders=["ntrex-128", "flores-200"])}
    mirror = _mirror_sums(root)
    need = {f"ntrex-128/NTREX-128/newstest2019-ref.{f}.txt" for f in M.NTREX_FILES.values()}
    need |= {f"flores-200/devtest/{s}.devtest" for s in M.FLORES_FILES.values()}
    need |= {"ntrex-128/NTREX-128/newstest2019-src.eng.txt", "ntrex-128/LICENSE.md"}
    assert need <= set(pinned)
    assert all(pinned[p].sha256 == mirror[p] for p in pinned)
    hau = pinned["ntrex-128/NTREX-128/newstest2019-ref.hau.txt"].url
    assert hau == (
        "https://raw.githubusercontent.com/MicrosoftTranslator/NTREX/"
        "8561f6a622db9edad1217683e5c83daefd8bb2bf/NTREX-128/newstest2019-ref.hau.txt"
    )
    zul = pinned["flores-200/devtest/zul_Latn.devtest"].url
    assert zul.endswith(
        "OPUS-MT-testsets/ac0f19c0be3cb4e0d9450fcb2d7a9847c4bdd180/datasets/"
        "facebook/flores/flores200_dataset/devtest/zul_Latn.devtest"
    )


@pytest.mark.slow
def test_real_multiway_files_match_their_pins(root):
    counts = fetch.fetch(root, folders=["ntrex-128", "flores-200"], allow_download=False,
                         progress=False)  # fmt: skip
    assert counts == {"verified": 253, "downloaded": 0}


@pytest.fixture
def file_server(tmp_path):
    """An HTTP server on 127.0.0.1 serving tmp_path/served."""
    served = tmp_path / "served"
    served.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    handler.log_message = lambda *a, **k: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield served, f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


FILES = (
    "ntrex-128/NTREX-128/newstest2019-src.eng.txt",
    "ntrex-128/NTREX-128/newstest2019-ref.hau.txt",
    "flores-200/devtest/eng_Latn.devtest",
    "flores-200/devtest/hau_Latn.devtest",
)


def _serve(root, served, url, monkeypatch, tmp_path):
    for rel in FILES:  # the server lays files out as the upstream repositories do
        upstream = rel.replace("ntrex-128/", "ntrex/").replace("flores-200/", "flores/")
        (served / upstream).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(root / rel, served / upstream)
    monkeypatch.setitem(fetch.SOURCES, "ntrex-128", url + "ntrex/")
    monkeypatch.setitem(fetch.SOURCES, "flores-200", url + "flores/")
    pinned = {e.path: e.sha256 for e in fetch.read_manifest()}
    manifest = tmp_path / "SUMS"
    manifest.write_text("".join(f"{pinned[rel]}  ./{rel}\n" for rel in FILES))
    return manifest


def test_download_verify_and_load(root, file_server, monkeypatch, tmp_path):
    served, url = file_server
    manifest = _serve(root, served, url, monkeypatch, tmp_path)
    dest = tmp_path / "data"
    counts = fetch.fetch(dest, manifest=manifest, progress=False)
    assert counts == {"verified": 4, "downloaded": 4}
    assert fetch.fetch(dest, manifest=manifest, progress=False)["downloaded"] == 0
    assert M.flores_task("hau", data_dir=dest).corpus == M.flores_task("hau").corpus
    assert M.ntrex_bitext("hau", data_dir=dest) == M.ntrex_bitext("hau")


def test_download_checksum_mismatch(root, file_server, monkeypatch, tmp_path):
    served, url = file_server
    manifest = _serve(root, served, url, monkeypatch, tmp_path)
    bad = served / "flores/devtest/hau_Latn.devtest"
    bad.write_bytes(bad.read_bytes()[:-100])  # truncated upstream copy
    dest = tmp_path / "data"
    with pytest.raises(fetch.ChecksumError, match=r"hau_Latn\.devtest but its SHA-256 is"):
        fetch.fetch(dest, manifest=manifest, progress=False)
    assert not (dest / "flores-200/devtest/hau_Latn.devtest").exists()
    assert not list((dest / "flores-200/devtest").glob(".part-*"))
    expected = hashlib.sha256((root / FILES[3]).read_bytes()).hexdigest()
    assert expected in manifest.read_text()


def test_study_budgets_work_for_every_study_k():
    assert M.STUDY_BUDGETS[0] == M.max_fixed_budget(M.STUDY_KS)
    for budget in M.STUDY_BUDGETS:
        assert all(budget % k == 0 for k in M.STUDY_KS)
    for relatives in (True, False):
        assert len(M.training_pool_ntrex(relatives=relatives)) >= max(M.STUDY_KS)
