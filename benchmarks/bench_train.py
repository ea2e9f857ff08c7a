"""Training throughput of the distillation step, per student depth.

For each depth L it times full training steps (teacher forward, student forward+backward,
AdamW) on real Tatoeba pairs for OPTICAL and, as the reference measured in the same run,
for sentence-MSE. It reports pairs/s, the share of the OPTICAL step spent in Sinkhorn
(the OT loss call, which holds all iterations under the detached gradient), and the
OPTICAL/MSE step-time ratio::

    python benchmarks/bench_train.py [--layers 3 6 12] [--steps 10] [--device cpu] [--json PATH]
                                      [--threads T]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from _threads import describe, thread_settings  # benchmarks/_threads.py

from optical_lib.distill import DistillConfig, Distiller
from optical_lib.experiment import ExperimentConfig, training_sample


def time_steps(distiller: Distiller, pairs, steps: int, batch: int) -> dict:
    params = distiller.trainable()
    optimizer = torch.optim.AdamW(params, lr=1e-5)
    distiller.student.model.train()
    timings, ot = [], []
    for step in range(steps + 2):  # two warm-up steps
        idx = [(step * batch + i) % len(pairs) for i in range(batch)]
        if distiller.config.device.startswith("cuda"):
            torch.cuda.synchronize()
        start = time.perf_counter()
        parts = distiller.loss([pairs[i].src_text for i in idx], [pairs[i].tgt_text for i in idx])
        optimizer.zero_grad(set_to_none=True)
        parts["loss"].backward()
        optimizer.step()
        if distiller.config.device.startswith("cuda"):
            torch.cuda.synchronize()
        if step >= 2:
            timings.append(time.perf_counter() - start)
            ot.append(float(parts.get("ot_seconds", 0.0)))
    total = sum(timings)
    return {"step_s": total / steps, "pairs_per_s": batch * steps / total,
            "sinkhorn_share": sum(ot) / total}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, nargs="+", default=[3, 6, 12])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--threads", type=int, default=None,
                        help="torch intra-op threads (default: torch's default, all cores)")
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    print(describe(), flush=True)
    pairs = training_sample(ExperimentConfig.from_parameters(k_langs=8, budget=512, seed=0)).pairs
    rows = []
    teacher = None
    for depth in args.layers:
        row = {"layers": depth}
        for method in ("mse", "optical"):
            config = DistillConfig(method=method, student_layers=depth, device=args.device,
                                   batch_size=args.batch)
            distiller = Distiller(config, teacher=teacher)
            teacher = distiller.teacher
            result = time_steps(distiller, pairs, args.steps, args.batch)
            row.update({f"{method}_{k}": v for k, v in result.items()})
        row["optical_over_mse"] = row["optical_step_s"] / row["mse_step_s"]
        rows.append(row)
        print(f"L{depth:>2}: OPTICAL {row['optical_pairs_per_s']:6.1f} pairs/s "
              f"(Sinkhorn {100 * row['optical_sinkhorn_share']:4.1f}% of the step), "
              f"MSE {row['mse_pairs_per_s']:6.1f} pairs/s, OPTICAL/MSE step time "
              f"{row['optical_over_mse']:.2f}x", flush=True)
    info = {"torch": torch.__version__,
            "threads": torch.get_num_threads(), "thread_settings": thread_settings(),
            "device": args.device, "batch": args.batch,
            "steps": args.steps}
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"info": info, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
