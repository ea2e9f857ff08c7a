"""What the v2 caches save per run: frozen-teacher token states and evaluation embeddings.

*Training*: the same distillation (centred OPTICAL, me5-small teacher, a fixed-content
NTREX-128 sample) with the teacher's token vectors recomputed at every step ("before": a
store that keeps nothing) and with :class:`~optical_lib.distill.TeacherStates` ("after":
each English sentence once per run; with a disk store, once for all runs sharing it, shown
as "after, warm store").

*Evaluation*: a v2 evaluation of a changed student (its vectors cannot be cached) under both
protocols with Δ over the pristine student, with an empty embedding cache ("before": the
pristine student's and the teacher's vectors are recomputed) and with a warm on-disk cache
("after": only the student's own vectors are computed). A third variant keys the in-memory
cache by the texts' ids as well, as it was until the memo became texts-only ("after, memo
by ids"): FLORES-200's X sentences (queries of X→eng, documents of eng→X) and English ones
are then encoded twice by the student.

The variants run round-robin, so load from other processes hits them alike; the table gives
the median over repeats and the ratio before/after (above 1: the cache saves time)::

    python benchmarks/bench_caching.py [--layers 2] [--epochs 3] [--budget 256] [--repeats 3]
                                       [--threads T] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch
from _threads import add_run_arguments, start  # benchmarks/_threads.py

from optical_lib import multiway, protocol
from optical_lib.distill import DistillConfig, TeacherStates, distill
from optical_lib.models import load_encoder
from optical_lib.retrieval import EmbeddingCache
from optical_lib.tune import _head


class NoStore(TeacherStates):
    """The "before" variant: every request runs the teacher again."""

    def states(self, teacher, texts, prompt_name, max_length):
        self._memory.clear()
        return super().states(teacher, texts, prompt_name, max_length)


def time_training(layers: int, epochs: int, budget: int, teacher, store) -> float:
    config = DistillConfig(method="optical", student_layers=layers, epochs=epochs,
                           batch_size=16, lr=1e-3)
    pairs = multiway.sample_fixed_content(8, budget, 0).pairs
    student = load_encoder("me5-small", layers)
    start = time.perf_counter()
    distill(config, pairs, student=student, teacher=teacher, teacher_states=store,
            progress=False)
    return time.perf_counter() - start


class MemoByIds(EmbeddingCache):
    """The in-memory cache keyed by ids and texts (the disk as in EmbeddingCache): a text
    set met again under other ids is encoded again."""

    def encode(self, encoder, ids, texts, role, **kwargs):
        prompt = kwargs.get("prompt") or {"query": "query", "document": "passage"}[role]
        key = (id(encoder), tuple(ids), tuple(texts), prompt, kwargs.get("max_length"))
        if key not in self._memory:
            self._memory[key] = EmbeddingCache(self.directory).encode(encoder, ids, texts,
                                                                      role, **kwargs)
        return self._memory[key]


def time_evaluation(layers: int, teacher, suites, cache_dir: Path | None,
                    cache_type: type = EmbeddingCache) -> float:
    student = load_encoder("me5-small", layers)
    student.cache_key = None  # a distilled student: its vectors are never cached
    baseline = load_encoder("me5-small", layers)
    meta = {"run_id": "bench", "profile": "offline", "model": "me5-small", "layers": layers,
            "nonemb_params": 0, "method": "optical", "k_langs": 8, "budget": 0, "seed": 0}
    start = time.perf_counter()
    protocol.evaluate_v2(meta, student, teacher, baseline, suites, cache_type(cache_dir),
                         n_boot=100)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--budget", type=int, default=256)
    parser.add_argument("--sentences", type=int, default=300,
                        help="FLORES-200 sentences per language in the evaluation")
    add_run_arguments(parser)
    args = parser.parse_args()
    settings = start(args)
    teacher = load_encoder("me5-small")
    suites = [_head(s, args.sentences)
              for s in protocol.suites(flores=("hau", "amh"), tatoeba=(), xquad=())]
    times: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        warm_states, warm_cache = Path(tmp) / "states", Path(tmp) / "embeddings"
        time_training(args.layers, 1, args.budget, teacher, TeacherStates(warm_states))
        time_evaluation(args.layers, teacher, suites, warm_cache)
        time_evaluation(args.layers, teacher, suites, warm_cache, MemoByIds)  # its files too
        for _ in range(args.repeats):
            variants = {
                "train before (no store)": lambda: time_training(
                    args.layers, args.epochs, args.budget, teacher, NoStore()),
                "train after (per run)": lambda: time_training(
                    args.layers, args.epochs, args.budget, teacher, TeacherStates()),
                "train after, warm store": lambda: time_training(
                    args.layers, args.epochs, args.budget, teacher, TeacherStates(warm_states)),
                "eval before (no cache)": lambda: time_evaluation(
                    args.layers, teacher, suites, None),
                "eval after (warm cache)": lambda: time_evaluation(
                    args.layers, teacher, suites, warm_cache),
                "eval after, memo by ids": lambda: time_evaluation(
                    args.layers, teacher, suites, warm_cache, MemoByIds),
            }
            for name, run in variants.items():
                times.setdefault(name, []).append(run())
    median = {k: statistics.median(v) for k, v in times.items()}
    ratios = {
        "train: before / after (per run)": median["train before (no store)"]
        / median["train after (per run)"],
        "train: before / after, warm store": median["train before (no store)"]
        / median["train after, warm store"],
        "eval: before / after": median["eval before (no cache)"]
        / median["eval after (warm cache)"],
        "eval: memo by ids / by texts": median["eval after, memo by ids"]
        / median["eval after (warm cache)"],
    }
    print(f"L{args.layers} student, me5-small teacher, {args.budget} pairs x {args.epochs} "
          f"epochs; evaluation: FLORES-200 hau+amh x {args.sentences} sentences, both "
          f"directions and protocols, with Δ; median of {args.repeats}")
    for name, value in median.items():
        print(f"  {name:28s} {value:8.1f} s")
    for name, value in ratios.items():
        print(f"  {name:36s} {value:6.2f}x")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({
            "threads": settings, "python": platform.python_version(),
            "torch": torch.__version__, "args": {k: str(v) for k, v in vars(args).items()},
            "times_s": times, "median_s": median, "ratios": ratios}, indent=1))


if __name__ == "__main__":
    main()
