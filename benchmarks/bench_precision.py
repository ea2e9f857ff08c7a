"""What bf16 autocast (``amp="bf16"``) buys on this machine, and what it costs in accuracy.

*Speed*, fp32 against bf16 in the same run, round-robin (load from other processes hits
both alike), median over repeats:

- encoding FLORES-200 sentences with the zero-shot student of each depth in ``--layers``;
- distillation steps (``--method``, batch 16) of each depth against the me5-small teacher,
  the teacher's token states precomputed (as the per-run store does).

*Accuracy*, the reason a study may use it at all:

- nDCG@10 on FLORES-200 X→eng under the student protocol (the model encodes both sides)
  for each zero-shot depth, fp32 and bf16, on ``--langs`` (development languages by
  default: this is a check of arithmetic, not a result), and the largest difference;
- the training loss over the timed steps, fp32 against bf16 from the same start.

bf16 runs in two ways, both timed and scored: ``bf16`` with PyTorch's own bf16 kernels
(fast only where the CPU has bf16 instructions, ``avx512_bf16`` / AMX; the line ``cpu bf16``
says; elsewhere a scalar fallback several times slower than float32) and ``bf16-emulated``
with :mod:`optical_lib.bf16` (float32 products of the bf16 operands, rounded to bf16: the
same arithmetic up to summation order, at float32 speed), which the study uses on CPUs
without bf16 instructions::

    python benchmarks/bench_precision.py [--layers 2 6 12] [--sentences 256] [--steps 6]
                                         [--repeats 3] [--threads T] [--json PATH]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import time

import torch
from _threads import add_run_arguments, start  # benchmarks/_threads.py

from optical_lib import bf16, multiway, protocol
from optical_lib.distill import DistillConfig, Distiller, TeacherStates
from optical_lib.models import load_encoder
from optical_lib.retrieval import EmbeddingCache
from optical_lib.tune import _head

#: What is compared: float32, bf16 with PyTorch's kernels, bf16 emulated (optical_lib.bf16).
PRECISIONS = ("fp32", "bf16", "bf16-emulated")


@contextlib.contextmanager
def arithmetic(precision: str):
    """The encoder precision of ``precision`` with its bf16 kernels forced
    (``OPTICAL_BF16_KERNELS``): yields ``"fp32"`` or ``"bf16"``."""
    old = os.environ.get(bf16.ENV)
    os.environ[bf16.ENV] = "emulated" if precision == "bf16-emulated" else "native"
    try:
        yield "fp32" if precision == "fp32" else "bf16"
    finally:
        os.environ.pop(bf16.ENV) if old is None else os.environ.__setitem__(bf16.ENV, old)


def time_encoding(layers: int, texts: list[str], precision: str) -> float:
    encoder = load_encoder("me5-small", layers)
    with arithmetic(precision) as encoder.precision:
        start = time.perf_counter()
        encoder.encode(texts, batch_size=32, progress=False)
        return time.perf_counter() - start


def time_training(layers: int, method: str, pairs, teacher, states, precision: str):
    """Seconds per step and the losses of ``len(pairs) // 16`` steps from the same start."""
    torch.manual_seed(0)
    with arithmetic(precision) as p:
        config = DistillConfig(method=method, student_layers=layers, batch_size=16, lr=1e-4,
                               amp=None if p == "fp32" else "bf16")
        dist = Distiller(config, student=load_encoder("me5-small", layers), teacher=teacher,
                         teacher_states=states)
        dist.student.model.train()
        optimizer = torch.optim.AdamW(dist.trainable(), lr=config.lr)
        losses, start = [], time.perf_counter()
        for i in range(0, len(pairs) - 15, 16):
            batch = pairs[i:i + 16]
            parts = dist.loss([p.src_text for p in batch], [p.tgt_text for p in batch])
            optimizer.zero_grad()
            with dist.backward_region():
                parts["loss"].backward()
            optimizer.step()
            losses.append(float(parts["loss"].detach()))
        return (time.perf_counter() - start) / len(losses), losses


def ndcg(layers: int, suites, precision: str) -> float:
    encoder = load_encoder("me5-small", layers)
    with arithmetic(precision) as encoder.precision:
        return _ndcg(encoder, layers, suites)


def _ndcg(encoder, layers: int, suites) -> float:
    meta = {"run_id": "bench", "profile": "offline", "model": "me5-small", "layers": layers,
            "nonemb_params": 0, "method": "none", "k_langs": 0, "budget": 0, "seed": 0}
    # the encoder stands in for the teacher too: its "teacher" rows are the student's again
    rows, _ = protocol.evaluate_v2(meta, encoder, encoder, None, suites, EmbeddingCache(),
                                   n_boot=1)
    return next(r["value"] for r in rows if r["scope"] == "macro" and r["protocol"] == "student"
                and r["metric"] == protocol.PRIMARY_METRIC)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, nargs="+", default=[2, 6, 12])
    parser.add_argument("--method", default="optical+mse")
    parser.add_argument("--sentences", type=int, default=256)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--langs", nargs="+", default=list(multiway.DEV_LANGS_FLORES[:2]))
    add_run_arguments(parser)
    args = parser.parse_args()
    settings = start(args)
    print(f"# cpu bf16 instructions: {bf16.cpu_has_bf16()}")
    texts = list(multiway.flores_lines("eng"))[:args.sentences]
    pairs = multiway.sample_fixed_content(8, 1984, 0).pairs[:16 * args.steps]
    teacher = load_encoder("me5-small")
    states = TeacherStates()
    states.states(teacher, [p.tgt_text for p in pairs], "query", 128)  # warm, as per run
    times: dict[str, list[float]] = {}
    losses: dict[str, list[float]] = {}
    for _ in range(args.repeats):
        for layers in args.layers:
            for precision in PRECISIONS:
                times.setdefault(f"encode L{layers} {precision}", []).append(
                    time_encoding(layers, texts, precision))
                step, loss = time_training(layers, args.method, pairs, teacher, states,
                                           precision)
                times.setdefault(f"train L{layers} {precision}", []).append(step)
                losses[f"L{layers} {precision}"] = loss
    median = {k: statistics.median(v) for k, v in times.items()}
    ratios = {f"{what} L{n}: {ref} / {p}": median[f"{what} L{n} {ref}"]
              / median[f"{what} L{n} {p}"] for what in ("encode", "train") for n in args.layers
              for ref, p in (("fp32", "bf16"), ("fp32", "bf16-emulated"),
                             ("bf16", "bf16-emulated"))}
    suites = [_head(s, args.sentences)
              for s in protocol.suites(flores=tuple(args.langs), tatoeba=(), xquad=())
              if s.name == "flores-x-eng"]
    scores = {f"L{n} {p}": ndcg(n, suites, p) for n in args.layers for p in PRECISIONS}
    loss_gap = {f"L{n} {p}": max(abs(a - b) / abs(a) for a, b in zip(
        losses[f"L{n} fp32"], losses[f"L{n} {p}"], strict=True))
        for n in args.layers for p in PRECISIONS[1:]}
    steps = len(losses[f"L{args.layers[0]} fp32"])
    print(f"{args.sentences} FLORES-200 sentences per encoding; {steps} {args.method} steps "
          f"of 16 pairs; median of {args.repeats}")
    for name, value in median.items():
        print(f"  {name:28s} {value:8.3f} s{' per step' if name.startswith('train') else ''}")
    for name, value in ratios.items():
        print(f"  {name:38s} {value:6.2f}x")
    print(f"nDCG@10, FLORES-200 X→eng ({', '.join(args.langs)}; {args.sentences} sentences), "
          "student protocol:")
    for n in args.layers:
        a, b, e = (scores[f"L{n} {p}"] for p in PRECISIONS)
        print(f"  L{n}: fp32 {a:.4f}  bf16 {b:.4f} ({b - a:+.4f})  bf16-emulated {e:.4f} "
              f"({e - a:+.4f}); largest relative training-loss gap to fp32: bf16 "
              f"{loss_gap[f'L{n} bf16']:.2%}, emulated {loss_gap[f'L{n} bf16-emulated']:.2%}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({
            "threads": settings, "cpu_bf16": bf16.cpu_has_bf16(),
            "python": platform.python_version(), "torch": torch.__version__,
            "args": {k: str(v) for k, v in vars(args).items()}, "times_s": times,
            "median_s": median, "ratios": ratios, "ndcg10": scores, "losses": losses,
            "max_relative_loss_gap": loss_gap}, indent=1))


if __name__ == "__main__":
    main()
