"""Benchmark exact dense search (and, optionally, encoding throughput) on this CPU.

Search: random L2-normalised 384-d vectors, 1000 queries, k = 100, against 1k / 10k / 100k
candidates. ``optical_lib.retrieval.search`` (document blocks, running top-k merge,
deterministic ties) is timed against a naive reference measured in the same run: one full
(Q, D) matmul followed by ``torch.topk``. Peak memory is an analytic estimate of the
largest score buffer each method holds (float32), not a measurement.

Usage::

    python benchmarks/bench_retrieval.py                 # search table
    python benchmarks/bench_retrieval.py --json out.json # also write the rows as JSON
    python benchmarks/bench_retrieval.py --encode        # + encoding throughput at L12, L3
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _threads import describe, thread_settings  # noqa: E402  (benchmarks/_threads.py)

from optical_lib.retrieval import DEFAULT_BLOCK_SIZE, search  # noqa: E402

MiB = 1024 * 1024


def _best_time(fn: Callable[[], object], repeats: int) -> float:
    fn()  # warm-up (allocator, thread pool)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def naive_search(q: torch.Tensor, x: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Reference: materialise the full (Q, D) score matrix, then ``torch.topk``."""
    with torch.inference_mode():
        return torch.topk(q @ x.T, min(k, x.shape[0]), dim=1)


def bench_search(
    sizes: Sequence[int] = (1_000, 10_000, 100_000),
    n_queries: int = 1000,
    dim: int = 384,
    k: int = 100,
    block_size: int = DEFAULT_BLOCK_SIZE,
    repeats: int = 3,
    seed: int = 0,
) -> list[dict]:
    """Time blocked vs naive search; one row per corpus size."""
    g = torch.Generator().manual_seed(seed)
    q = torch.nn.functional.normalize(torch.randn(n_queries, dim, generator=g), dim=1)
    rows = []
    for n_docs in sizes:
        x = torch.nn.functional.normalize(torch.randn(n_docs, dim, generator=g), dim=1)
        reps = repeats if n_docs <= 10_000 else max(1, repeats - 1)
        t_blocked = _best_time(lambda x=x: search(q, x, k=k, block_size=block_size), reps)
        t_naive = _best_time(lambda x=x: naive_search(q, x, k), reps)
        s_b, idx_b = search(q, x, k=k, block_size=block_size)
        s_n, idx_n = naive_search(q, x, k)
        kk = min(k, n_docs)
        width = min(block_size, n_docs)
        rows.append(
            {
                "n_docs": n_docs,
                "n_queries": n_queries,
                "dim": dim,
                "k": k,
                "block_size": block_size,
                "blocked_s": t_blocked,
                "naive_s": t_naive,
                "ratio_blocked_over_naive": t_blocked / t_naive,
                "queries_per_s_blocked": n_queries / t_blocked,
                # the naive topk orders exact ties arbitrarily; search by document index
                "max_abs_score_diff": float((s_b - s_n).abs().max()),
                "index_agreement": float((idx_b == idx_n).float().mean()),
                # largest score buffer: (Q, block) block + (Q, 2k) merge vs the full (Q, D)
                "peak_mem_blocked_mib": 4 * n_queries * (width + 2 * kk) / MiB,
                "peak_mem_naive_mib": 4 * n_queries * n_docs / MiB,
            }
        )
    return rows


# ----------------------------------------------------------------------------------------
# HOOK for the models step: encoding throughput (sentences/s) at L12 and L3.
# Call bench_encoding(lambda layers: load_encoder(layers=layers)) once optical_lib.models
# exists; the CLI does exactly this with --encode.
# ----------------------------------------------------------------------------------------
def bench_encoding(
    encoder_factory: Callable[[int], object],
    layers: Sequence[int] = (12, 3),
    n_sentences: int = 512,
    batch_size: int = 64,
    prompt_name: str = "query",
    repeats: int = 1,
) -> list[dict]:
    """Encoding throughput of ``encoder_factory(L).encode`` for each depth ``L``.

    Parameters
    ----------
    encoder_factory : callable ``layers -> encoder`` (an object with ``encode``)
    layers : depths to measure
    n_sentences : synthetic sentences of 6 to 30 words (mixed scripts)

    Returns
    -------
    rows with ``layers, n_sentences, batch_size, seconds, sentences_per_s``.
    """
    words = [
        "habari",
        "ya",
        "leo",
        "ខ្ញុំ",
        "ស្រលាញ់",
        "kucing",
        "makan",
        "the",
        "river",
        "2024",
        "Nairobi",
        "ndiyo",
        "bahasa",
        "សៀវភៅ",
        "water",
        "school",
    ]
    texts = [
        " ".join(words[(i * 7 + j) % len(words)] for j in range(6 + i % 25))
        for i in range(n_sentences)
    ]
    rows = []
    for n_layers in layers:
        enc = encoder_factory(n_layers)
        enc.encode(texts[:batch_size], prompt_name, batch_size=batch_size, progress=False)
        seconds = _best_time(
            lambda enc=enc: enc.encode(texts, prompt_name, batch_size=batch_size, progress=False),
            repeats,
        )
        rows.append(
            {
                "layers": n_layers,
                "n_sentences": n_sentences,
                "batch_size": batch_size,
                "seconds": seconds,
                "sentences_per_s": n_sentences / seconds,
            }
        )
    return rows


def _table(rows: list[dict], columns: list[tuple[str, str, str]]) -> str:
    head = " | ".join(title for _, title, _ in columns)
    lines = [f"| {head} |", "|" + "|".join("---" for _ in columns) + "|"]
    for r in rows:
        lines.append("| " + " | ".join(format(r[key], fmt) for key, _, fmt in columns) + " |")
    return "\n".join(lines)


SEARCH_COLUMNS = [
    ("n_docs", "candidates", ","),
    ("blocked_s", "blocked (s)", ".3f"),
    ("naive_s", "naive (s)", ".3f"),
    ("ratio_blocked_over_naive", "blocked/naive", ".2f"),
    ("queries_per_s_blocked", "queries/s (blocked)", ",.0f"),
    ("peak_mem_blocked_mib", "peak MiB blocked", ".1f"),
    ("peak_mem_naive_mib", "peak MiB naive", ".1f"),
    ("max_abs_score_diff", "max abs score diff", ".1e"),
    ("index_agreement", "same index", ".4%"),
]
ENCODE_COLUMNS = [
    ("layers", "layers", "d"),
    ("n_sentences", "sentences", "d"),
    ("seconds", "seconds", ".2f"),
    ("sentences_per_s", "sentences/s", ".1f"),
]


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[1_000, 10_000, 100_000])
    p.add_argument("--queries", type=int, default=1000)
    p.add_argument("--dim", type=int, default=384)
    p.add_argument("-k", type=int, default=100)
    p.add_argument("--block-size", type=int, default=DEFAULT_BLOCK_SIZE)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument(
        "--encode",
        action="store_true",
        help="also measure encoding throughput at L12 and L3 (needs optical_lib.models)",
    )
    p.add_argument("--json", type=Path, default=None, help="write all rows to this JSON file")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    env = {
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "thread_settings": thread_settings(),
    }
    print(
        f"# search: {args.queries} queries, d={args.dim}, k={args.k}, "
        f"block={args.block_size}, torch {env['torch']}, {env['threads']} threads"
    )
    print(describe(env["thread_settings"]))
    search_rows = bench_search(
        args.sizes, args.queries, args.dim, args.k, args.block_size, args.repeats
    )
    print(_table(search_rows, SEARCH_COLUMNS))

    encode_rows: list[dict] = []
    encode_error = None
    if args.encode:
        try:
            from optical_lib.models import load_encoder
        except ImportError as exc:
            encode_error = f"optical_lib.models.load_encoder is not available yet ({exc})"
        else:
            try:
                encode_rows = bench_encoding(lambda n: load_encoder(layers=n))
            except Exception as exc:  # report, do not hide the search results
                encode_error = f"encoding benchmark failed: {type(exc).__name__}: {exc}"
        if encode_error:
            print(f"\n--encode skipped: {encode_error}")
        else:
            print("\n# encoding throughput")
            print(_table(encode_rows, ENCODE_COLUMNS))

    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        payload = {
            "env": env,
            "search": search_rows,
            "encode": encode_rows,
            "encode_error": encode_error,
        }
        args.json.write_text(json.dumps(payload, indent=1) + "\n")
        print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
