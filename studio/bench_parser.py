"""The ``bench`` command's arguments, parsed without importing the benchmarks.

Every other command of ``python -m studio`` builds this parser too; the benchmarks' own code (and what
it imports) loads only when a benchmark runs.
"""

from __future__ import annotations

import argparse
import importlib
import math
from collections.abc import Callable
from pathlib import Path

from studio import zoo
from studio.projection import DEFAULT_STEPS


def _lazy(module: str, function: str) -> Callable[[argparse.Namespace], None]:
    """A command that imports ``studio.<module>`` only when it runs, then calls its ``function``."""
    def run(args: argparse.Namespace) -> None:
        getattr(importlib.import_module(f"studio.{module}"), function)(args)

    return run


def _client_counts(text: str) -> list[int]:
    """An argparse type: positive integers separated by commas, such as 1,4,16."""
    try:
        counts = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        counts = []
    if not counts or min(counts) < 1:
        raise argparse.ArgumentTypeError(f"bad client counts {text!r}: write positive integers like 1,4,16")
    return counts


def _model_argument(p: argparse.ArgumentParser) -> None:
    """Add ``--model``, the model to measure."""
    p.add_argument("--model", default=zoo.DEFAULT_MODEL, help="model name (see: python -m studio models)")


def _positive(kind: type) -> Callable[[str], int | float]:
    """An argparse type: a number of ``kind`` above zero."""
    def parse(text: str) -> int | float:
        try:
            value = kind(text)
        except ValueError:
            value = 0
        if not (value > 0 and math.isfinite(value)):  # also refuses NaN and infinity
            raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
        return value

    return parse


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``bench`` and each of its benchmarks on the studio's sub-command parser."""
    bench = sub.add_parser("bench", help="measure performance", description="Performance benchmarks.")
    kinds = bench.add_subparsers(dest="bench", required=True, metavar="BENCHMARK")
    p = kinds.add_parser(
        "engine",
        help="naive vs batched-engine throughput and latency",
        description="Throughput and latency of single-image clients served naively (one at a time, "
        "behind a lock) and by the batched engine, against a batch-64 ceiling; plus roofline figures.",
    )
    _model_argument(p)
    p.add_argument("--clients", type=_client_counts, default=[1, 4, 16], help="client counts (default 1,4,16)")
    p.add_argument("--seconds", type=float, default=10.0, help="duration of each measurement (default 10)")
    p.add_argument("--device", default=None, help="cpu, cuda... (default: $STUDIO_DEVICE, else cuda if present)")
    p.add_argument("--backend", choices=["local", "ray"], default="local",
                   help="local: naive vs engine vs ceiling in this process (default); ray: the engine on Ray Serve "
                        "replicas (pip install -r requirements-scale.txt), img/s and p50/p95 per replica count")
    p.add_argument("--replicas", type=_client_counts, default=[1, 2],
                   help="with --backend ray: replica counts (default 1,2)")
    p.add_argument("--json", type=Path, help="also write the results as JSON here")
    p.set_defaults(func=_lazy("bench", "cmd_bench_engine"))

    p = kinds.add_parser("forward", help="ms per image at several batch sizes, and the share of the roofline",
                         description="Median milliseconds per image of forward passes at each batch size, in the "
                         "default memory layout and the engine's (and fused modulated convolution, for a "
                         "StyleGAN2), each with its share of the roofline: GFLOP/s achieved over the machine's "
                         "fp32 matmul rate measured in the same run.")
    _model_argument(p)
    p.add_argument("--stylegan2", type=int, metavar="R",
                   help="beside --model: a StyleGAN2 of config-f's shape (512-wide z and w, 8 mapping layers, "
                        "channel_base 32768) at R px with random weights, built by the bench")
    p.add_argument("--batches", type=_client_counts, default=[1, 16, 64], help="batch sizes (default 1,16,64)")
    p.add_argument("--repeats", type=int, default=15, help="timed passes per batch size (default 15)")
    p.add_argument("--device", default=None, help="cpu, cuda... (default: $STUDIO_DEVICE, else cuda if present)")
    p.add_argument("--precision", choices=("exact", "fast"), default="exact",
                   help="exact: fp32 (default); fast: the precision the engine chooses for each model")
    p.set_defaults(func=_lazy("bench", "cmd_bench_forward"))

    p = kinds.add_parser("png", help="CPU ms and KiB per drawn image's PNG: Pillow's default vs the studio's",
                         description="Median CPU milliseconds and mean kilobytes per image of PNG-encoding the "
                         "model's images (one per seed), with Pillow's default deflate and with the options "
                         "the studio writes drawn images with.")
    _model_argument(p)
    p.add_argument("--images", type=int, default=64, help="images (seeds 0..N-1, default 64)")
    p.add_argument("--repeats", type=int, default=5, help="timed passes over the images (default 5)")
    p.set_defaults(func=_lazy("bench", "cmd_bench_png"))

    p = kinds.add_parser("sliders", help="one slider move vs one plain forward pass; direction compute times",
                         description="p50/p95 of one slider move (request to image, through the engine) against "
                         "one plain batch-1 forward pass, and the time to compute SeFa and PCA directions.")
    _model_argument(p)
    p.add_argument("--moves", type=int, default=60, help="slider moves to time (default 60)")
    p.add_argument("--device", default=None, help="cpu, cuda... (default: $STUDIO_DEVICE, else cuda if present)")
    p.set_defaults(func=_lazy("bench", "cmd_bench_sliders"))

    p = kinds.add_parser("finetune", help="seconds per fine-tuning step and images per second",
                         description="Median seconds per fine-tuning step (one D and one G step) and images per "
                         "second on random images at the model's resolution, with a full-width fresh "
                         "discriminator and with the quick preset.")
    _model_argument(p)
    p.add_argument("--steps", type=int, default=5, help="timed steps per setting (default 5)")
    p.set_defaults(func=_lazy("bench", "cmd_bench_finetune"))

    p = kinds.add_parser("responsive", help="generation latency while a fine-tune job runs",
                         description="p50/p95 of single-image requests through the engine, first alone, then "
                         "while a quick-preset fine-tune of the model runs in its worker process (on a "
                         "random 64-image set in a temporary studio home).")
    _model_argument(p)
    p.add_argument("--requests", type=int, default=60, help="requests timed in each phase (default 60)")
    p.set_defaults(func=_lazy("bench", "cmd_bench_responsive"))

    p = kinds.add_parser("export", help="generation latency while long animation exports run",
                         description="p50/p95 of single-image requests through the engine, first alone, then "
                         "while one and two long MP4 exports (4x enlarged) draw through the same engine; "
                         "with each figure's ratio to the idle one and the exports' frames per second.")
    _model_argument(p)
    p.add_argument("--requests", type=int, default=100, help="requests timed in each phase (default 100)")
    p.add_argument("--frames", type=int, default=480, help="frames of each export (default 480)")
    p.set_defaults(func=_lazy("bench", "cmd_bench_export"))

    p = kinds.add_parser("dedup", help="near-duplicate rule: false merges of distinct works, copies caught",
                         description="False merges (distinct works sharing a composition flagged as near "
                         "duplicates: the model's seeds under each of its classes, and procedural drawings in "
                         "several palettes) and recall (JPEG re-encodes, +-10% brightness, 1-pixel shifts "
                         "caught) of the luminance-only rule and of the structure-and-colour rule.")
    _model_argument(p)
    p.add_argument("--seeds", type=int, default=16, help="seeds drawn under every class (default 16)")
    p.add_argument("--compositions", type=int, default=16, help="procedural compositions (default 16)")
    p.add_argument("--palettes", type=int, default=6, help="palettes per composition (default 6)")
    p.set_defaults(func=_lazy("bench", "cmd_bench_dedup"))

    p = kinds.add_parser("startup", help="seconds from python app.py to the first image in Chromium",
                         description="Launch the studio (python app.py) and time until a real Chromium shows "
                         "the first image; cold runs start from an empty studio home (weights converted "
                         "first), warm runs reuse it. Needs the development requirements (playwright) and "
                         "Debian's chromium.")
    p.add_argument("--runs", type=int, default=3, help="runs of each kind (default 3)")
    p.add_argument("--chromium", default="/usr/bin/chromium", help="Chromium executable")
    p.set_defaults(func=_lazy("bench", "cmd_bench_startup"))
    p = kinds.add_parser("project", help="projection: seconds and PSNR on own samples and on drawings",
                         description="Project the model's own samples (targets it drew itself) and procedural "
                         "drawings (out of its domain) with the default settings; print seconds and PSNR "
                         "against each target, beside the PSNR the best of many random seeds reaches.")
    _model_argument(p)
    p.add_argument("--targets", type=_positive(int), default=3, help="targets of each kind (default 3)")
    p.add_argument("--steps", type=_positive(int), default=DEFAULT_STEPS,
                   help="steps per projection (default: the command line's, %(default)s)")
    p.add_argument("--seeds", type=_positive(int), default=128, help="random seeds to compare with (default 128)")
    p.add_argument("--json", type=Path, help="also write the results as JSON here")
    p.set_defaults(func=_lazy("bench", "cmd_bench_project"))
    p = kinds.add_parser("music", help="seconds of rendering per second of music video; engine frames/s",
                         description="Render a synthetic song (a kick on every beat, a chord each bar) as a music "
                         "video with the default mapping through the engine; print the median seconds of rendering "
                         "per second of video and the engine's frames per second while it drew.")
    _model_argument(p)
    p.add_argument("--seconds", type=_positive(float), default=10.0, help="length of the video (default 10)")
    p.add_argument("--fps", type=_positive(float), default=24.0, help="frames per second (default 24)")
    p.add_argument("--repeats", type=_positive(int), default=3, help="timed renders after a warm-up (default 3)")
    p.set_defaults(func=_lazy("bench", "cmd_bench_music"))
    _add_api_parser(kinds)


def _add_api_parser(kinds: argparse._SubParsersAction) -> None:
    """Register ``bench api``: a launched studio under many clients (``studio/loadtest.py``)."""
    p = kinds.add_parser(
        "api", help="a launched studio under many gradio_client clients, end to end",
        description="Launch the studio and call its /draw API from separate client processes (several client "
        "threads each, a Client per thread) for each client count. Prints img/s, latency p50/p95, errors, busy "
        "refusals, mismatches (images that differ from the command line's for their seed, out of those "
        "checked), the server's CPU ms per image and the engine's own throughput in the same run.")
    _model_argument(p)
    p.add_argument("--clients", type=_client_counts, default=[16, 64], help="client counts (default 16,64)")
    p.add_argument("--seconds", type=_positive(float), default=20.0, help="duration of each run (default 20)")
    p.add_argument("--processes", type=_positive(int), default=4, help="client processes (default 4)")
    p.add_argument("--current-home", action="store_true",
                   help="serve from the current studio home ($STUDIO_HOME) instead of a temporary one")
    p.add_argument("--json", type=Path, help="also write the results as JSON here")
    p.set_defaults(func=_lazy("loadtest", "cmd_bench_api"))
