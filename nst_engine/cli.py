"""Command line: stylize local files without Discord, with a progress bar.

    python -m nst_engine stylize CONTENT STYLE [STYLE ...] -o OUT.png [options]
    python -m nst_engine texture STYLE -o OUT.png [--tileable] [options]
    python -m nst_engine explain STYLE -o SHEET.png [options]
    python -m nst_engine samples DIR
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from .core.params import STYLE_LAYERS, EngineOptions, ParamError, StyleParams
from .images import procedural

if TYPE_CHECKING:  # annotations only
    from PIL import Image

    from .core.explain import Explanation
    from .core.optimize import StyleResult, Stylizer

log = logging.getLogger(__name__)
T = TypeVar("T")

_DEFAULTS = StyleParams()
_OUTPUT_FORMATS = {".png": "png", ".jpg": "jpeg", ".jpeg": "jpeg", ".webp": "webp"}


class CliError(Exception):
    """One line for the user; the CLI exits non-zero without a traceback."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, not the whole usage block
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="python -m nst_engine stylize",
        description="Neural style transfer (Gatys et al.) of CONTENT in the style of one or more STYLE images.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("content", help="content photo (JPEG, PNG, WebP, GIF, BMP, TIFF)")
    p.add_argument("styles", nargs="+", metavar="STYLE",
                   help=f"style image file(s), or a built-in generated style: {', '.join(procedural.NAMES)}")
    p.add_argument("-o", "--output", required=True, help="output file; .png, .jpg/.jpeg or .webp picks the format")

    g = p.add_argument_group("what you get")
    g.add_argument("--size", type=int, default=_DEFAULTS.size, help="long side of the output in pixels")
    g.add_argument("--strength", type=float, default=_DEFAULTS.strength,
                   help="style strength, 0 (barely) to 10 (style dominates); +1 doubles the style weight")
    g.add_argument("--preserve-colors", action="store_true", help="keep the content photo's colours")
    g.add_argument("--color-method", choices=("luminance", "match"), default=_DEFAULTS.color_method,
                   help="with --preserve-colors: luminance-only transfer, or match the style's colours to the photo")
    g.add_argument("--style-blend", type=float, nargs="+", metavar="W",
                   help="relative weight of each STYLE (default: equal)")
    g.add_argument("--style-scale", type=float, default=_DEFAULTS.style_scale,
                   help="style image size relative to the output; < 1 gives finer brush strokes")
    g.add_argument("--tv-weight", type=float, default=_DEFAULTS.tv_weight, help="total-variation smoothing weight")
    g.add_argument("--seed", type=int, help="random seed (reproducible runs on the CPU)")

    g = p.add_argument_group("optimisation")
    g.add_argument("--steps", type=int, default=_DEFAULTS.steps,
                   help="most iterations at the final scale (coarser scales get a quarter)")
    g.add_argument("--scales", type=int, help="coarse-to-fine scales (default: 1-4 by size, coarsest >= 64 px)")
    g.add_argument("--early-stop", type=float, default=_DEFAULTS.early_stop,
                   help="stop a scale when the loss improves by less than this fraction in 10 iterations; 0 = off")
    g.add_argument("--optimizer", choices=("lbfgs", "adam"), default=_DEFAULTS.optimizer)
    g.add_argument("--lr", type=float, default=_DEFAULTS.learning_rate, help="Adam learning rate (pixel units)")
    g.add_argument("--init", choices=("content", "noise"), default=_DEFAULTS.init, help="starting image")
    g.add_argument("--init-image", help="start from this image instead")

    g = p.add_argument_group("model and cost")
    g.add_argument("--backbone", choices=("caffe", "torchvision"), default=_DEFAULTS.backbone,
                   help="VGG19 weights: original ImageNet (offline) or torchvision's (downloads once)")
    g.add_argument("--pooling", choices=("max", "avg"), default=_DEFAULTS.pooling)
    g.add_argument("--content-layer", default=_DEFAULTS.content_layer)
    g.add_argument("--style-layers", nargs="+", default=list(STYLE_LAYERS), metavar="LAYER")
    g.add_argument("--style-layer-weights", type=float, nargs="+", metavar="LAMBDA",
                   help="lambda per style layer (default: equal)")
    g.add_argument("--content-weight", type=float, help="alpha (default 1)")
    g.add_argument("--style-weight", type=float, help="beta (default: from --strength)")

    g = p.add_argument_group("device")
    g.add_argument("--device", default="auto", help="auto (CUDA, then MPS, then CPU), cpu, cuda, cuda:1, mps")
    g.add_argument("--no-channels-last", dest="channels_last", action="store_false",
                   help="use NCHW instead of the faster NHWC layout")
    g.add_argument("--no-tf32", dest="tf32", action="store_false", help="full fp32 matmuls on CUDA")
    g.add_argument("--bf16", action="store_true", help="bfloat16 autocast for the VGG passes")
    g.add_argument("--compile", action="store_true", help="torch.compile the VGG (slow first run)")
    g.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    return p


def params_from_args(args: argparse.Namespace) -> StyleParams:
    return StyleParams(
        size=args.size, steps=args.steps, strength=args.strength,
        style_blend=tuple(args.style_blend) if args.style_blend else None, style_scale=args.style_scale,
        preserve_colors=args.preserve_colors, color_method=args.color_method, tv_weight=args.tv_weight,
        pooling=args.pooling, content_layer=args.content_layer, style_layers=tuple(args.style_layers),
        style_layer_weights=tuple(args.style_layer_weights) if args.style_layer_weights else None,
        content_weight=args.content_weight, style_weight=args.style_weight, optimizer=args.optimizer,
        learning_rate=args.lr, init="image" if args.init_image else args.init, seed=args.seed,
        scales=args.scales, early_stop=args.early_stop, backbone=args.backbone,
    )


def _load(path: str, what: str):
    from .images.codec import ImageError, read_image_file

    try:
        return read_image_file(path)
    except ImageError as exc:
        raise CliError(f"{what}: {exc.message}") from None


def _load_style(arg: str):
    if not os.path.exists(arg) and arg in procedural.NAMES:
        return procedural.generate(arg, 512)
    return _load(arg, "style image").rgb


def _output_format(path: str) -> str:
    ext = Path(path).suffix.lower()
    if ext not in _OUTPUT_FORMATS:
        raise CliError(f"output {path!r}: use a .png, .jpg, .jpeg or .webp file name")
    if not Path(path).resolve().parent.is_dir():
        raise CliError(f"output {path!r}: folder {str(Path(path).parent)!r} does not exist")
    return _OUTPUT_FORMATS[ext]


class _Bar:
    """tqdm over the iterations of all scales; the total shrinks when a scale stops early.

    `stage` names what Progress.scale counts ('scale' for stylize and texture, 'layer' for explain).
    """

    def __init__(self, enabled: bool, stage: str = "scale") -> None:
        self.enabled = enabled
        self.stage = stage
        self.bar = None

    def __call__(self, p) -> None:
        if not self.enabled:
            return
        from tqdm import tqdm

        if self.bar is None:
            self.bar = tqdm(total=p.total, unit="it", dynamic_ncols=True, file=sys.stderr)
        self.bar.total = p.total
        self.bar.set_description(f"{self.stage} {p.scale + 1}/{p.num_scales} {p.size[0]}x{p.size[1]}",
                                 refresh=False)
        self.bar.set_postfix(loss=f"{p.losses['total']:.3g}", refresh=False)
        self.bar.update(p.iteration - self.bar.n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def run(args: argparse.Namespace) -> Path:
    from .core.devices import DeviceUnavailable
    from .core.optimize import Stylizer
    from .core.vgg import BackboneUnavailable
    from .images.codec import ImageError, encode_image

    fmt = _output_format(args.output)
    try:
        params = params_from_args(args)
    except ParamError as exc:
        raise CliError(str(exc)) from None
    content = _load(args.content, "content image")
    styles = [_load_style(s) for s in args.styles]
    init = _load(args.init_image, "init image").rgb if args.init_image else None
    options = EngineOptions(device=args.device, channels_last=args.channels_last, tf32=args.tf32,
                            bf16=args.bf16, compile=args.compile)
    bar = _Bar(not args.quiet)
    try:
        stylizer = Stylizer(options)
        result = stylizer.stylize(content.rgb, styles, params, init_image=init, callback=bar)
    except (ParamError, DeviceUnavailable, BackboneUnavailable) as exc:
        raise CliError(str(exc)) from None
    finally:
        bar.close()
    try:
        encoded = encode_image(result.image, fmt, alpha=content.alpha)
    except ImageError as exc:
        raise CliError(exc.message) from None
    out = Path(args.output)
    out.write_bytes(encoded.data)
    log.info("%s: %dx%d, %d iterations on %s in %.1f s (content %.3g, style %.3g)", out, *result.image.size,
             result.iterations, result.device, result.timings["total"], result.losses["content"],
             result.losses["style"])
    return out


def _painting_parser(command: str, description: str, size: int, size_help: str, steps: int) -> argparse.ArgumentParser:
    """The flags `texture` and `explain` share."""
    p = _Parser(prog=f"python -m nst_engine {command}", description=description,
                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("style", metavar="STYLE",
                   help=f"the painting (an image file), or a built-in generated style: {', '.join(procedural.NAMES)}")
    p.add_argument("-o", "--output", required=True, help="output file; .png, .jpg/.jpeg or .webp picks the format")
    p.add_argument("--size", type=int, default=size, help=size_help)
    p.add_argument("--steps", type=int, default=steps, help="most iterations at the final scale")
    p.add_argument("--seed", type=int, default=0, help="random seed of the starting noise")
    p.add_argument("--device", default="auto", help="auto (CUDA, then MPS, then CPU), cpu, cuda, cuda:1, mps")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    return p


def build_texture_parser() -> argparse.ArgumentParser:
    from .core.texture import TEXTURE_SIZE, TEXTURE_STEPS

    p = _painting_parser(
        "texture", "The style of a painting alone: a texture painted from white noise by matching the painting's "
        "style matrices (Gram matrices), with no content (Gatys et al., Fig. 1).",
        TEXTURE_SIZE, "side of the square texture in pixels", TEXTURE_STEPS)
    p.add_argument("--tileable", action="store_true",
                   help="wrap around seamlessly, to repeat as a wallpaper (the side is rounded to a multiple of "
                        "16 px per scale)")
    return p


def build_explain_parser() -> argparse.ArgumentParser:
    from .core.explain import EXPLAIN_SIZE, EXPLAIN_STEPS

    p = _painting_parser(
        "explain", "One sheet that shows what the network calls the style of a painting, layer by layer: textures "
        "reconstructed from layers 1..l, each layer's style matrix, and the patches its strongest channels like.",
        EXPLAIN_SIZE, "side of each reconstruction in pixels", EXPLAIN_STEPS)
    p.add_argument("--name", help="what to call the painting in the title (default: the file name)")
    return p


def _painting_job(
    args: argparse.Namespace, stage: str, job: Callable[[Stylizer, Image.Image, _Bar], T]
) -> tuple[str, T]:
    """Shared by texture and explain: load the painting, run `job(stylizer, painting, bar)`, map errors."""
    from .core.devices import DeviceUnavailable
    from .core.optimize import Stylizer
    from .core.vgg import BackboneUnavailable

    fmt = _output_format(args.output)
    painting = _load_style(args.style)
    bar = _Bar(not args.quiet, stage)
    try:
        return fmt, job(Stylizer(EngineOptions(device=args.device)), painting, bar)
    except (ParamError, DeviceUnavailable, BackboneUnavailable) as exc:
        raise CliError(str(exc)) from None
    finally:
        bar.close()


def _write(image: Image.Image, fmt: str, path: str) -> Path:
    from .images.codec import ImageError, encode_image

    try:
        encoded = encode_image(image, fmt)
    except ImageError as exc:
        raise CliError(exc.message) from None
    out = Path(path)
    out.write_bytes(encoded.data)
    return out


def run_texture(args: argparse.Namespace) -> Path:
    from .core.texture import synthesize

    def job(stylizer: Stylizer, painting: Image.Image, bar: _Bar) -> StyleResult:
        params = StyleParams(size=args.size, steps=args.steps, seed=args.seed, tileable=args.tileable)
        return synthesize(stylizer, painting, params, callback=bar)

    fmt, result = _painting_job(args, "scale", job)
    out = _write(result.image, fmt, args.output)
    log.info("%s: %dx%d%s, %d iterations on %s in %.1f s (style %.3g)", out, *result.image.size,
             " tileable" if args.tileable else "", result.iterations, result.device, result.timings["total"],
             result.losses["style"])
    return out


def run_explain(args: argparse.Namespace) -> Path:
    from .core.explain import Explainer, explain_params
    from .core.sheet import render_sheet

    def job(stylizer: Stylizer, painting: Image.Image, bar: _Bar) -> Explanation:
        params = explain_params(seed=args.seed, size=args.size, steps=args.steps)
        return Explainer(stylizer).explain(painting, params, callback=bar)

    fmt, explanation = _painting_job(args, "layer", job)
    name = args.name or (args.style if args.style in procedural.NAMES else Path(args.style).stem)
    out = _write(render_sheet(explanation, name), fmt, args.output)
    log.info("%s: %d layers in %.1f s", out, len(explanation.layers), explanation.timings["total"])
    return out


def _command(parser: argparse.ArgumentParser, run_job: Callable[[argparse.Namespace], Path], argv: list[str]) -> int:
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO, format="%(message)s")
    started = time.perf_counter()
    try:
        out = run_job(args)
    except CliError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    if not args.quiet:
        print(f"wrote {out} ({time.perf_counter() - started:.1f} s)")
    return 0


def stylize_main(argv: list[str]) -> int:
    return _command(build_parser(), run, argv)


def texture_main(argv: list[str]) -> int:
    return _command(build_texture_parser(), run_texture, argv)


def explain_main(argv: list[str]) -> int:
    return _command(build_explain_parser(), run_explain, argv)


def samples_main(argv: list[str]) -> int:
    """Write content.png (a CC0 photo from scikit-image's sample data) and style.png (generated) into DIR."""
    p = _Parser(prog="python -m nst_engine samples", description=samples_main.__doc__)
    p.add_argument("folder", help="where to write content.png and style.png")
    p.add_argument("--style", choices=procedural.NAMES, default="brushstrokes")
    args = p.parse_args(argv)
    try:
        from skimage import data
    except ImportError:
        print("error: the sample photo comes from scikit-image; install it with: pip install -e '.[demo]'",
              file=sys.stderr)
        return 1
    from PIL import Image

    folder = Path(args.folder)
    folder.mkdir(parents=True, exist_ok=True)
    Image.fromarray(data.chelsea()).save(folder / "content.png")  # CC0, Stefan van der Walt
    procedural.generate(args.style, 512).save(folder / "style.png")
    print(f"wrote {folder / 'content.png'} and {folder / 'style.png'}")
    return 0
