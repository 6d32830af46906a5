#!/usr/bin/env python
"""Speed and quality of `texture` and `explain` (a tool, not a test).

    .venv/bin/python benchmarks/bench_texture.py                                    # a generated painting
    .venv/bin/python benchmarks/bench_texture.py --style ../shared/images/style/starry_night_van_gogh.jpg

Prints one table: each job's seconds, iterations, and the style loss it reached relative to the
style loss of the uniform noise it starts from (same size, same cost), plus the seam ratio of the
textures (1 = the wrap-around step is like any step inside; a plain texture's edges give ~2).
The explain rows are its five reconstructions, then the whole sheet, then the same sheet again
(from the Explainer's cache). See benchmarks/README.md.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run from a checkout without installing
    sys.path.insert(0, str(REPO))

import nst_engine  # noqa: E402,F401  (before torch: sets the OpenMP wait policy)
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from nst_engine.core.explain import (  # noqa: E402
    EXPLAIN_SIZE,
    EXPLAIN_STEPS,
    Explainer,
    analysed,
    explain_params,
    stage_plan,
)
from nst_engine.core.optimize import Stylizer  # noqa: E402
from nst_engine.core.params import EngineOptions, StyleParams  # noqa: E402
from nst_engine.core.sheet import render_sheet  # noqa: E402
from nst_engine.core.texture import (  # noqa: E402
    TEXTURE_SIZE,
    TEXTURE_STEPS,
    noise_image,
    seam_ratio,
    style_loss,
    synthesize,
)
from nst_engine.images import procedural  # noqa: E402

log = logging.getLogger("bench_texture")

COLUMNS = ("job", "size", "iters", "seconds", "noise loss", "reached", "ratio", "seam")


def load_average() -> str:
    try:
        return " ".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:
        return "n/a"


def row(job: str, size: str, iters: int | str, seconds: float, start: float | None, reached: float | None,
        seam: float | None = None) -> tuple[str, ...]:
    ratio = f"{reached / start:.2e}" if start and reached is not None else "-"
    return (job, size, str(iters), f"{seconds:.1f}", f"{start:.3g}" if start else "-",
            f"{reached:.3g}" if reached is not None else "-", ratio, f"{seam:.2f}" if seam is not None else "-")


def print_table(rows: list[tuple[str, ...]]) -> None:
    widths = [max(len(c), *(len(r[i]) for r in rows)) for i, c in enumerate(COLUMNS)]
    print("| " + " | ".join(c.ljust(w) for c, w in zip(COLUMNS, widths)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for r in rows:
        print("| " + " | ".join(v.ljust(w) for v, w in zip(r, widths)) + " |")


def bench_texture(stylizer: Stylizer, painting: Image.Image, params: StyleParams, label: str) -> tuple[str, ...]:
    t = time.perf_counter()
    result = synthesize(stylizer, painting, params)
    seconds = time.perf_counter() - t
    side = result.image.width
    start = style_loss(stylizer, noise_image(side, side, params.seed or 0), painting, params)
    reached = style_loss(stylizer, result.image, painting, params)
    return row(label, f"{side}x{side}", result.iterations, seconds, start, reached, seam_ratio(result.image))


def bench_explain(stylizer: Stylizer, painting: Image.Image, params: StyleParams, out: Path) -> list[tuple[str, ...]]:
    explainer = Explainer(stylizer)
    t = time.perf_counter()
    explanation = explainer.explain(painting, params, key="bench")
    sheet = render_sheet(explanation, "bench")
    seconds = time.perf_counter() - t
    sheet.save(out)
    rows = []
    small = analysed(painting)
    for index, (stage, view) in enumerate(zip(stage_plan(small.size, params), explanation.layers)):
        side = view.reconstruction.width
        start = style_loss(stylizer, noise_image(side, side, params.seed or 0), small, stage)
        reached = style_loss(stylizer, view.reconstruction, small, stage)
        rows.append(row(f"  explain: layers 1..{index + 1} ({view.layer})", f"{side}x{side}", "-",
                        explanation.timings[f"layer{index}"], start, reached))
    rows.append(row("explain sheet (first time)", f"{sheet.width}x{sheet.height}", "-", seconds, None, None))
    t = time.perf_counter()
    again = explainer.explain(painting, params, key="bench")
    render_sheet(again, "bench")
    rows.append(row(f"explain sheet (cached: {again.cached})", f"{sheet.width}x{sheet.height}", "-",
                    time.perf_counter() - t, None, None))
    return rows


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--style", help=f"painting file (default: the generated {procedural.NAMES[0]!r})")
    p.add_argument("--size", type=int, default=TEXTURE_SIZE, help="texture side")
    p.add_argument("--steps", type=int, default=TEXTURE_STEPS, help="texture iterations at the final scale")
    p.add_argument("--explain-size", type=int, default=EXPLAIN_SIZE)
    p.add_argument("--explain-steps", type=int, default=EXPLAIN_STEPS)
    p.add_argument("--skip", choices=("texture", "tileable", "explain"), nargs="*", default=[])
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", default="/tmp", help="folder for the sheet (explain.png)")
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(message)s")

    painting = Image.open(args.style).convert("RGB") if args.style else procedural.generate(procedural.NAMES[0], 512)
    stylizer = Stylizer(EngineOptions(device=args.device))
    stylizer.warm_up()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {stylizer.device}, "
          f"{os.cpu_count()} CPUs, load {load_average()}")
    print(f"painting: {args.style or procedural.NAMES[0]} {painting.width}x{painting.height}")
    rows = []
    texture = StyleParams(size=args.size, steps=args.steps, seed=0)
    if "texture" not in args.skip:
        rows.append(bench_texture(stylizer, painting, texture, "texture"))
    if "tileable" not in args.skip:
        rows.append(bench_texture(stylizer, painting, replace(texture, tileable=True),
                                  "texture --tileable"))
    if "explain" not in args.skip:
        out = Path(args.out) / "explain.png"
        rows += bench_explain(stylizer, painting, explain_params(size=args.explain_size, steps=args.explain_steps),
                              out)
        print(f"sheet: {out}")
    print_table(rows)
    print(f"load at the end: {load_average()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
