"""Speed beside other work: a job alone and beside CPU burners, per OpenMP wait policy and thread count.

A self-hosted CPU box always runs something else. Each row runs a short job (one scale, fixed iterations)
in a fresh process, because OpenMP reads its wait policy once, when torch loads it, and prints seconds per
evaluation, CPU seconds per evaluation and the slowdown against the same setting alone.

    .venv/bin/python benchmarks/bench_load.py [--size 256] [--iters 12] [--burners 1]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

JOB = r"""
import json, os, sys, time
policy, threads, size, iters = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
if policy != "default":
    os.environ["OMP_WAIT_POLICY"] = policy
else:
    os.environ["OMP_WAIT_POLICY"] = "ACTIVE"  # libgomp's own default spins for a while: make it explicit
import torch
if threads:
    torch.set_num_threads(threads)
import numpy as np
from PIL import Image
from nst_engine.core import EngineOptions, StyleParams, Stylizer
rng = np.random.default_rng(0)
content = Image.fromarray((rng.random((size * 3 // 4, size, 3)) * 255).astype("uint8"))
style = Image.fromarray((rng.random((size, size, 3)) * 255).astype("uint8"))
stylizer = Stylizer(EngineOptions(device="cpu"))
stylizer.stylize(content, [style], StyleParams(size=size, steps=2, scales=1, seed=0))
t, c = time.perf_counter(), time.process_time()
result = stylizer.stylize(content, [style], StyleParams(size=size, steps=iters, scales=1, seed=0, early_stop=0))
print(json.dumps({"s_eval": (time.perf_counter() - t) / result.evaluations,
                  "cpu_eval": (time.process_time() - c) / result.evaluations,
                  "threads": torch.get_num_threads()}))
"""

BURN = "import time\nend = time.monotonic() + 3600\nwhile time.monotonic() < end: pass\n"


def run(policy: str, threads: int, size: int, iters: int) -> dict:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("OMP_WAIT_POLICY", None)
    out = subprocess.run([sys.executable, "-c", JOB, policy, str(threads), str(size), str(iters)], env=env,
                         capture_output=True, text=True, check=True, timeout=900)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--iters", type=int, default=12)
    ap.add_argument("--burners", type=int, default=1, help="busy processes beside the job")
    args = ap.parse_args()
    cpus = len(os.sched_getaffinity(0))
    configs = [("default", 0), ("PASSIVE", 0), ("PASSIVE", 1)]
    print(f"size {args.size} px, {args.iters} iterations, {cpus} CPUs, load at start {os.getloadavg()[0]:.2f}")
    alone = {cfg: run(*cfg, args.size, args.iters) for cfg in configs}
    burners = [subprocess.Popen([sys.executable, "-c", BURN]) for _ in range(args.burners)]
    try:
        time.sleep(1.0)  # let the burners get going
        loaded = {cfg: run(*cfg, args.size, args.iters) for cfg in configs}
    finally:
        for b in burners:
            b.kill()
            b.wait()
    best_alone = min(r["s_eval"] for r in alone.values())
    print(f"{'wait policy':12} {'threads':>7} {'alone s/eval':>12} {'cpu/eval':>8} "
          f"{'+' + str(args.burners) + ' burner s/eval':>18} {'cpu/eval':>8} {'slowdown':>8} {'vs best alone':>13}")
    for cfg in configs:
        a, b = alone[cfg], loaded[cfg]
        print(f"{cfg[0]:12} {a['threads']:>7} {a['s_eval']:>12.3f} {a['cpu_eval']:>8.3f} {b['s_eval']:>18.3f} "
              f"{b['cpu_eval']:>8.3f} {b['s_eval'] / a['s_eval']:>7.2f}x {b['s_eval'] / best_alone:>12.2f}x")
    print("slowdown: beside the burners / alone, same setting; vs best alone: beside the burners / fastest alone")
    print(f"load at end {os.getloadavg()[0]:.2f} (other processes than the burners skew these timings)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
