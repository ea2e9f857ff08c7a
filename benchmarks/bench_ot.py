"""Benchmark of the OPTICAL OT loss: ours (detached / unrolled) vs POT.

One run measures forward + backward for B problems of n = m tokens (384-d random token vectors,
``requires_grad`` on the student side, cost = ``cosine_cost``, eps 0.05, 50 iterations):

- ``ours_detached``: ``ot_alignment_loss(..., grad="detached")`` (plan under no_grad).
- ``ours_unrolled``: ``ot_alignment_loss(..., grad="unrolled")`` (backprop through iterations).
- ``pot_loop``: ``ot.sinkhorn2`` with torch tensors, one problem at a time (POT's default
  method, ``stopThr=0`` so that exactly 50 iterations run), losses summed, one backward.
- ``solve_batch``: ``ot.solve_batch(C, reg, max_iter=50, tol=0, method="log_sinkhorn")`` with
  ``grad="envelope"`` (gradient of the value with the plan held fixed: the counterpart of
  ``detached``) and ``grad="autodiff"`` (through the iterations: the counterpart of
  ``unrolled``); backward through ``res.value.sum()``.

Times are the median of ``--repeats`` runs after two warm-up calls; the cases run round-robin
so that load from other processes hits all of them alike (min and raw times go to the JSON).
Usage::

    python benchmarks/bench_ot.py [--json PATH] [--device cpu|cuda] [--sizes 32 64 128]
                                  [--batch 64] [--repeats N] [--peak-gbs 3350] [--threads T]

On CUDA it also reports problems/s and the fraction of the memory-bandwidth bound of the
Sinkhorn iterations at B=4096, n=m=64 (see ``bandwidth_estimate`` for the byte count).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _threads import describe, thread_settings  # noqa: E402  (benchmarks/_threads.py)

from optical_lib.ot import cosine_cost, ot_alignment_loss, sinkhorn  # noqa: E402

EPS = 0.05
N_ITERS = 50
DIM = 384
TARGET_POT_LOOP_AT_32 = 20.0
TARGET_SOLVE_BATCH = 1.5


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time(fn, device: torch.device, repeats: int) -> float:
    """Median wall time in ms of ``fn()`` after warm-up."""
    return statistics.median(_time_many({"fn": fn}, device, repeats)["fn"])


def _time_many(fns: dict, device: torch.device, repeats: int, warmup: int = 2) -> dict:
    """Wall times in ms (a list of ``repeats`` per function) after ``warmup`` calls of each.

    The functions are run round-robin (one repeat of each, then the next repeat), so that load
    from other processes on a shared machine affects all of them alike.
    """
    times: dict = {k: [] for k in fns}
    for fn in fns.values():
        for _ in range(warmup):
            fn()
        _sync(device)
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            _sync(device)
            times[name].append((time.perf_counter() - t0) * 1e3)
    return times


def _make_inputs(B: int, n: int, device: torch.device, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    S = torch.randn(B, n, DIM, generator=g).to(device).requires_grad_(True)
    T = torch.randn(B, n, DIM, generator=g).to(device)
    return S, T


def _cases(S: torch.Tensor, T: torch.Tensor):
    import ot

    B, n, _ = S.shape

    def ours(grad):
        def run():
            S.grad = None
            loss = ot_alignment_loss(S, T, None, None, EPS, N_ITERS, grad=grad, reduction="sum")
            loss.backward()

        return run

    def pot_loop():
        S.grad = None
        C = cosine_cost(S, T)
        w = torch.full((n,), 1.0 / n, dtype=C.dtype, device=C.device)
        loss = 0.0
        for k in range(B):
            loss = loss + ot.sinkhorn2(w, w, C[k], EPS, numItermax=N_ITERS, stopThr=0.0, warn=False)
        loss.backward()

    def solve_batch(grad):
        def run():
            S.grad = None
            C = cosine_cost(S, T)
            res = ot.solve_batch(
                C, EPS, max_iter=N_ITERS, tol=0.0, method="log_sinkhorn", grad=grad
            )
            res.value.sum().backward()

        return run

    return {
        "ours_detached": ours("detached"),
        "ours_unrolled": ours("unrolled"),
        "pot_loop": pot_loop,
        "solve_batch_envelope": solve_batch("envelope"),
        "solve_batch_autodiff": solve_batch("autodiff"),
    }


def _solve_batch_autograd_ok(device: torch.device) -> bool:
    import ot

    C = torch.rand(2, 4, 4, device=device, requires_grad=True)
    try:
        ot.solve_batch(C, EPS, max_iter=5, method="log_sinkhorn").value.sum().backward()
    except Exception:  # noqa: BLE001 - any failure means "no autograd support"
        return False
    return C.grad is not None


def bandwidth_estimate(device: torch.device, peak_gbs: float, repeats: int) -> dict:
    """Fraction of the memory-bandwidth bound of the Sinkhorn loop at B=4096, n=m=64.

    Byte count: a log-domain Sinkhorn iteration has to stream the kernel K = -C/eps (B*n*m
    float32 values) from memory once per half-update (row update, column update), so the
    lower bound for 50 iterations is ``50 * 2 * 4 * B*n*m`` bytes (potentials and marginals are
    O(B*(n+m)) and ignored). Our PyTorch implementation actually moves more per half-update
    (read K, write K+v, read it in the fused log-softmax, write its output: about 16 bytes per
    entry instead of 4), so its own-traffic fraction is also reported. Time is the forward
    ``sinkhorn`` call under ``no_grad`` with ``validate=False`` (no host syncs), median of
    ``repeats``.
    """
    B, n = 4096, 64
    g = torch.Generator(device=device).manual_seed(0)
    C = torch.rand(B, n, n, generator=g, device=device) * 2

    def run():
        with torch.no_grad():
            sinkhorn(C, eps=EPS, n_iters=N_ITERS, validate=False)

    ms = _time(run, device, repeats)
    entries = B * n * n
    ideal_bytes = N_ITERS * 2 * 4 * entries
    impl_bytes = N_ITERS * 2 * 16 * entries
    sec = ms / 1e3
    return {
        "B": B,
        "n": n,
        "m": n,
        "ms": ms,
        "problems_per_s": B / sec,
        "peak_gbs": peak_gbs,
        "ideal_bytes": ideal_bytes,
        "implemented_bytes": impl_bytes,
        "achieved_gbs_ideal_bytes": ideal_bytes / sec / 1e9,
        "fraction_of_bound_ideal_bytes": ideal_bytes / sec / 1e9 / peak_gbs,
        "fraction_of_bound_implemented_bytes": impl_bytes / sec / 1e9 / peak_gbs,
    }


def machine_info(device: torch.device) -> dict:
    import ot

    threads = thread_settings()
    cpu = threads["cpu"]
    info = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "pot": ot.__version__,
        "torch_threads": torch.get_num_threads(),
        "threads": threads,
        "cpu_count": os.cpu_count(),
        "cpu": cpu,
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else cpu,
    }
    return info


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--json", type=Path, default=None, help="write results to this JSON file")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--sizes", type=int, nargs="+", default=[32, 64, 128], help="n = m values")
    p.add_argument("--batch", type=int, default=64, help="number of problems B")
    p.add_argument("--repeats", type=int, default=9, help="timed repeats (median reported)")
    p.add_argument(
        "--peak-gbs",
        type=float,
        default=3350.0,
        help="peak memory bandwidth in GB/s for the CUDA bound (H100 SXM: 3350)",
    )
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch intra-op threads (default: torch's default, all cores)",
    )
    args = p.parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    print(describe(), flush=True)
    if args.device == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda given but torch.cuda.is_available() is False")
    device = torch.device(args.device)
    warnings.filterwarnings("ignore", module="ot")

    sb_autograd = _solve_batch_autograd_ok(device)
    rows = []
    for n in args.sizes:
        S, T = _make_inputs(args.batch, n, device)
        cases = _cases(S, T)
        if not sb_autograd:
            cases = {k: v for k, v in cases.items() if not k.startswith("solve_batch")}
        row = {"n": n, "m": n, "B": args.batch}
        for name, ts in _time_many(cases, device, args.repeats).items():
            row[name + "_ms"] = statistics.median(ts)
            row[name + "_min_ms"] = min(ts)
            row[name + "_all_ms"] = ts
            print(
                f"  n={n:4d} {name:22s} median {row[name + '_ms']:9.2f} ms  min {min(ts):9.2f} ms",
                file=sys.stderr,
                flush=True,
            )
        row["ratio_pot_loop_over_ours_detached"] = row["pot_loop_ms"] / row["ours_detached_ms"]
        if sb_autograd:
            row["ratio_solve_batch_over_ours_detached"] = (
                row["solve_batch_envelope_ms"] / row["ours_detached_ms"]
            )
            row["ratio_solve_batch_autodiff_over_ours_unrolled"] = (
                row["solve_batch_autodiff_ms"] / row["ours_unrolled_ms"]
            )
        row["problems_per_s_ours_detached"] = args.batch / (row["ours_detached_ms"] / 1e3)
        rows.append(row)
        del S, T, cases

    result = {
        "machine": machine_info(device),
        "config": {
            "eps": EPS,
            "n_iters": N_ITERS,
            "dim": DIM,
            "batch": args.batch,
            "sizes": args.sizes,
            "repeats": args.repeats,
            "statistic": "median (and min) of the repeats, after two warm-up calls each",
            "solve_batch_autograd": sb_autograd,
        },
        "results": rows,
    }
    targets = {}
    for row in rows:
        if row["n"] == 32:
            targets["pot_loop_over_ours_detached_at_32_ge_20"] = bool(
                row["ratio_pot_loop_over_ours_detached"] >= TARGET_POT_LOOP_AT_32
            )
    if sb_autograd:
        targets["solve_batch_over_ours_detached_ge_1.5_all_sizes"] = all(
            r["ratio_solve_batch_over_ours_detached"] >= TARGET_SOLVE_BATCH for r in rows
        )
    result["targets_met"] = targets
    if device.type == "cuda":
        result["cuda_bandwidth"] = bandwidth_estimate(device, args.peak_gbs, args.repeats)

    print(format_table(result))
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return result


def format_table(result: dict) -> str:
    """Markdown table of the results (times in ms, ratios = theirs / ours)."""
    sb = result["config"]["solve_batch_autograd"]
    head = ["n=m", "ours detached", "ours unrolled", "POT loop"]
    if sb:
        head += ["solve_batch envelope", "solve_batch autodiff"]
    head += ["POT loop / ours det."]
    if sb:
        head += ["solve_batch env. / ours det.", "solve_batch autodiff / ours unr."]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in result["results"]:
        cells = [str(r["n"]), f"{r['ours_detached_ms']:.2f}", f"{r['ours_unrolled_ms']:.2f}"]
        cells.append(f"{r['pot_loop_ms']:.2f}")
        if sb:
            cells += [f"{r['solve_batch_envelope_ms']:.2f}", f"{r['solve_batch_autodiff_ms']:.2f}"]
        cells.append(f"{r['ratio_pot_loop_over_ours_detached']:.1f}x")
        if sb:
            cells.append(f"{r['ratio_solve_batch_over_ours_detached']:.2f}x")
            cells.append(f"{r['ratio_solve_batch_autodiff_over_ours_unrolled']:.2f}x")
        lines.append("| " + " | ".join(cells) + " |")
    out = "\n".join(lines)
    if not sb:
        out += "\n\not.solve_batch does not support autograd here: its columns are omitted."
    m = result["machine"]
    out += (
        f"\n\nTimes in ms (median of {result['config']['repeats']} after warm-up), "
        f"forward+backward, B={result['config']['batch']}, d={DIM}, eps={EPS}, "
        f"{N_ITERS} iterations. Device: {m['device_name']} ({m['device']}), "
        f"torch {m['torch']}, {m['torch_threads']} threads, POT {m['pot']}."
    )
    out += f"\nTargets met: {result['targets_met']}"
    if "cuda_bandwidth" in result:
        c = result["cuda_bandwidth"]
        out += (
            f"\nCUDA B={c['B']} n=m={c['n']}: {c['ms']:.2f} ms, {c['problems_per_s']:.0f} "
            f"problems/s, {c['achieved_gbs_ideal_bytes']:.0f} GB/s on the ideal byte count = "
            f"{100 * c['fraction_of_bound_ideal_bytes']:.1f}% of {c['peak_gbs']:.0f} GB/s "
            f"({100 * c['fraction_of_bound_implemented_bytes']:.1f}% counting the bytes the "
            f"implementation moves)."
        )
    return out


if __name__ == "__main__":
    main()
