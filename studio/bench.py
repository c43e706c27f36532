"""``python -m studio bench {engine,forward,startup}``: the studio's performance figures.

``engine``: what the batched engine buys over one-at-a-time generation. Three ways to serve C client threads that each want single images, all in one process on one model:
*naive* (each client runs the model itself, serialized by a lock, as a plain Gradio handler would),
*engine* (each client submits to one shared ``Engine``), and the *ceiling* (one loop of batch-64
passes, no clients). Roofline figures put the ceiling in context: GFLOP per image and the machine's
measured fp32 matrix-multiply rate.

``forward``: milliseconds per image of plain forward passes at several batch sizes, in the default
memory layout and in the engine's (channels_last).

``png``: CPU milliseconds and kilobytes per image of the PNG a drawn image is served as, with Pillow's
default deflate and with the studio's options for drawn images (``media.DRAWN_PNG``).

``api``: a launched studio under many ``gradio_client`` clients, end to end (``studio/loadtest.py``).

``sliders``: the time of one slider move (a request with an edit, through the engine) against one
plain forward pass, and the time to compute each kind of semantic direction.

``finetune``: seconds per training step and images per second of a model (DCGAN or StyleGAN2) at its
resolution, with its own discriminator (pretrained when its folder keeps one) and with the quick preset.

``responsive``: the studio's generation latency with and without a fine-tune job running beside it.

``export``: the studio's generation latency while one and two long animation exports draw through
the same engine, against an idle engine.

``dedup``: the near-duplicate rule of ingestion, luminance-only (old) against structure and colour
(new): distinct works sharing a composition flagged as copies (false merges), and true near copies caught.

``music``: seconds of rendering per second of music video (a synthetic song, the default mapping), and
the engine's frames per second while it drew the frames.

``startup``: seconds from ``python app.py`` to the first image shown in a real Chromium.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from studio import directions, media, zoo
from studio.engine import Engine, default_device, generate_unbatched, precision_of, prepare, run_generator
from studio.models.folder import ModelConfig, build_generator
from studio.projection import project, psnr
from studio.recipe import request_for
from studio.sampling import Request, request_inputs
from studio.storage import temporary_home
from studio.zoo import LoadedModel

CEILING_BATCH = 64




def matmul_gflop_s(n: int = 2048, repeats: int = 7, device: torch.device | str = "cpu") -> float:
    """The machine's fp32 matrix-multiply rate: median over timed ``n x n`` products."""
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    torch.matmul(a, b)  # warm-up: thread pool, allocator
    times = []
    for _ in range(repeats):
        _sync(device)
        start = time.perf_counter()
        torch.matmul(a, b)
        _sync(device)
        times.append(time.perf_counter() - start)
    return 2 * n**3 / statistics.median(times) / 1e9


def gflop_per_image(model: LoadedModel) -> float:
    """Floating-point operations of one batch-1 forward pass, in GFLOP."""
    inputs = request_inputs(model, Request(model.name, (0,)))
    with FlopCounterMode(display=False) as counter:
        run_generator(model, inputs)
    return counter.get_total_flops() / 1e9


def _sync(device: torch.device | str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def ceiling_img_s(model: LoadedModel, seconds: float, dtype: torch.dtype | None = None) -> float:
    """Images per second of back-to-back batch-64 passes (no queue, no clients) in ``dtype`` (None: fp32)."""
    inputs = request_inputs(model, Request(model.name, tuple(range(CEILING_BATCH))))
    run_generator(model, inputs, dtype)  # warm-up
    images, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        run_generator(model, inputs, dtype)  # returns host arrays, so each pass has finished
        images += CEILING_BATCH
    return images / (time.perf_counter() - start)


def run_clients(clients: int, seconds: float, draw: Callable[[int], object]) -> tuple[float, list[float]]:
    """Run ``clients`` threads calling ``draw(seed)`` with fresh seeds for ``seconds``.

    Returns:
        Images per second over the whole run (until the last client finished) and each call's latency (s).
    """
    seeds = itertools.count(1000)  # next() on a count is atomic: every call draws a distinct seed
    latencies: list[float] = []
    start = time.perf_counter()
    stop_at = start + seconds

    def client() -> None:
        mine = []
        while time.perf_counter() < stop_at:
            t0 = time.perf_counter()
            draw(next(seeds))
            mine.append(time.perf_counter() - t0)
        latencies.extend(mine)

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return len(latencies) / (time.perf_counter() - start), latencies


def _percentiles_ms(latencies: list[float]) -> tuple[float, float]:
    p50, p95 = np.percentile(np.array(latencies) * 1000, [50, 95])
    return float(p50), float(p95)


def naive_drawer(model: LoadedModel) -> Callable[[int], object]:
    """One image per call on the caller's thread, in the chosen precision, serialized by a lock as a plain
    handler would be."""
    lock = threading.Lock()
    dtype = precision_of(model).dtype

    def draw(seed: int) -> object:
        with lock:
            return generate_unbatched(model, [seed], dtype=dtype)

    return draw


def engine_drawer(engine: Engine, name: str) -> Callable[[int], object]:
    """One single-image request per call, through ``engine``, in its fast precision (as the studio's views)."""
    return lambda seed: engine.generate(Request(name, (seed,), precision="fast"))


def bench_engine(name: str, clients: list[int], seconds: float, device: torch.device) -> dict:
    """Measure naive, engine and ceiling on model ``name``; the result has the JSON's shape."""
    model = prepare(zoo.load(name, device))  # one copy, in the engine's layout, for all three
    result: dict = {"device": str(device), "model": name}
    result["gflop_per_img"] = gflop_per_image(model)
    result["matmul_gflop_s"] = matmul_gflop_s(device=device)
    chosen = precision_of(model)
    result["precision"], result["precision_reason"] = chosen.name, chosen.reason
    result["ceiling_fp32_img_s"] = ceiling_img_s(model, seconds)
    # In the chosen precision: what the engine's fast requests can reach (the same figure where it is fp32).
    fast = ceiling_img_s(model, seconds, chosen.dtype) if chosen.dtype else result["ceiling_fp32_img_s"]
    result["ceiling_img_s"] = fast
    result["clients"] = {}
    with Engine(str(device), loader=lambda _name, _device: model) as engine:
        for n in clients:
            naive_img_s, naive_lat = run_clients(n, seconds, naive_drawer(model))
            engine_img_s, engine_lat = run_clients(n, seconds, engine_drawer(engine, name))
            naive_p50, naive_p95 = _percentiles_ms(naive_lat)
            engine_p50, engine_p95 = _percentiles_ms(engine_lat)
            result["clients"][str(n)] = {
                "naive_img_s": naive_img_s, "engine_img_s": engine_img_s,
                "naive_p50_ms": naive_p50, "naive_p95_ms": naive_p95,
                "engine_p50_ms": engine_p50, "engine_p95_ms": engine_p95,
            }
        result["engine_stats"] = engine.stats()
    return result


def format_report(result: dict) -> str:
    """The results as a table plus the roofline lines."""
    header = ("clients", "naive img/s", "engine img/s", "engine/naive", "engine/ceiling",
              "naive p50/p95 ms", "engine p50/p95 ms")
    rows = [header]
    for n, r in result["clients"].items():
        rows.append((
            n, f"{r['naive_img_s']:.1f}", f"{r['engine_img_s']:.1f}",
            f"{r['engine_img_s'] / r['naive_img_s']:.2f}", f"{r['engine_img_s'] / result['ceiling_img_s']:.2f}",
            f"{r['naive_p50_ms']:.1f} / {r['naive_p95_ms']:.1f}",
            f"{r['engine_p50_ms']:.1f} / {r['engine_p95_ms']:.1f}",
        ))
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = ["  ".join(cell.rjust(w) for cell, w in zip(row, widths)) for row in rows]
    bound = result["matmul_gflop_s"] / result["gflop_per_img"]
    lines += [
        "",
        f"model {result['model']} on {result['device']}",
        f"precision {result['precision']} ({result['precision_reason']})",
        f"ceiling (batch {CEILING_BATCH}): {result['ceiling_img_s']:.1f} img/s in {result['precision']}, "
        f"{result['ceiling_fp32_img_s']:.1f} in fp32 ({result['ceiling_img_s'] / result['ceiling_fp32_img_s']:.2f}x)",
        f"roofline: {result['gflop_per_img']:.3f} GFLOP/img, fp32 matmul {result['matmul_gflop_s']:.1f} GFLOP/s "
        f"-> {bound:.1f} img/s if convolutions ran at matmul speed; the ceiling reaches "
        f"{result['ceiling_fp32_img_s'] / bound:.0%} of that in fp32",
    ]
    return "\n".join(lines)


def bench_ray(name: str, replicas: list[int], clients: list[int], seconds: float) -> dict:
    """Measure the engine on Ray Serve at each replica count (a fresh local Ray each); the result has the JSON's shape.

    ``replicas_used``: how many replicas drew images during that measurement.
    """
    from studio.ray_backend import RayEngine  # Ray is an optional install

    result: dict = {"backend": "ray", "model": name, "cpu_count": os.cpu_count(), "replicas": {}}
    for n in replicas:
        with RayEngine(replicas=n, timeout_s=600) as engine:
            run_clients(max(clients), 2.0, engine_drawer(engine, name))  # every replica loads the model
            runs = {}
            for c in clients:
                before = engine.stats()["replicas"]
                img_s, latencies = run_clients(c, seconds, engine_drawer(engine, name))
                after = engine.stats()["replicas"]
                p50, p95 = _percentiles_ms(latencies)
                runs[str(c)] = {"img_s": img_s, "p50_ms": p50, "p95_ms": p95,
                                "replicas_used": sum(after[r] > before.get(r, 0) for r in after)}
            result["replicas"][str(n)] = {"device": engine.stats()["device"], "clients": runs}
    return result


def format_ray_report(result: dict) -> str:
    """The Ray results as a table: one row per replica count and client count."""
    rows = [("replicas", "clients", "img/s", "p50/p95 ms", "replicas used")]
    for n, run in result["replicas"].items():
        for c, r in run["clients"].items():
            rows.append((n, c, f"{r['img_s']:.1f}", f"{r['p50_ms']:.1f} / {r['p95_ms']:.1f}", str(r["replicas_used"])))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.rjust(w) for cell, w in zip(row, widths)) for row in rows]
    return "\n".join([*lines, "", f"model {result['model']} on Ray Serve, {result['cpu_count']} CPU cores here"])


def cmd_bench_engine(args: argparse.Namespace) -> None:
    """Run the engine benchmark (locally, or on Ray Serve), print its table and optionally write JSON."""
    if args.backend == "ray":
        result = bench_ray(args.model, args.replicas, args.clients, args.seconds)
        print(format_ray_report(result))
    else:
        device = torch.device(args.device) if args.device else default_device()
        result = bench_engine(args.model, args.clients, args.seconds, device)
        print(format_report(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {args.json}")


def forward_ms_per_image(model: LoadedModel, batch: int, repeats: int, dtype: torch.dtype | None = None) -> float:
    """Median milliseconds per image over ``repeats`` timed passes of ``batch`` images in ``dtype`` (None: fp32)."""
    inputs = request_inputs(model, Request(model.name, tuple(range(batch))))
    run_generator(model, inputs, dtype)  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        run_generator(model, inputs, dtype)
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1000 / batch


def random_stylegan2(resolution: int, device: torch.device) -> LoadedModel:
    """A StyleGAN2 of config-f's shape (the FFHQ/LSUN networks' widths) at ``resolution`` px, random weights."""
    config = ModelConfig("stylegan2", {"resolution": resolution, "channel_base": 32768, "channel_max": 512,
                                       "conv_clamp": 256.0}, title=f"random config-f {resolution} px")
    generator = build_generator(config).to(device).eval()
    return LoadedModel(f"stylegan2 config-f {resolution}px (random)", config, generator, Path("."))


def forward_table(model: LoadedModel, batches: list[int], repeats: int, matmul: float, fast: bool) -> list[str]:
    """Lines of ms per image at each batch in each layout (fused and not, for a family that has it), each with
    its share of the roofline: achieved GFLOP/s over the measured fp32 matmul rate."""
    gflop = gflop_per_image(model)
    variants: dict[str, Callable[[], None]] = {"default": lambda: None, "channels_last": lambda: prepare(model)}
    fuse = getattr(model.generator, "fuse", None)  # a style family's grouped modulated convolution
    if fuse is not None:
        variants["fused, channels_last"] = lambda: fuse(True)
        variants["fused, default"] = lambda: (fuse(True), model.generator.to(memory_format=torch.contiguous_format))
    times: dict[str, dict[int, float]] = {}
    for name, apply in variants.items():
        apply()
        dtype = precision_of(model).dtype if fast else None
        times[name] = {b: forward_ms_per_image(model, b, repeats, dtype) for b in batches}
    if fuse is not None:
        fuse(False)
    drawn_in = precision_of(model).name if fast else "fp32"
    lines = [f"{model.name}: {gflop:.2f} GFLOP per image, {drawn_in}; ms per image (share of the roofline)"]
    lines.append(f"{'batch':>6}" + "".join(f"  {name:>22}" for name in times))
    for b in batches:
        cells = [f"{t[b]:9.1f} ({gflop / (t[b] / 1000) / matmul:4.0%})" for t in times.values()]
        lines.append(f"{b:>6}" + "".join(f"  {cell:>22}" for cell in cells))
    return lines


def cmd_bench_forward(args: argparse.Namespace) -> None:
    """Print ms per image at each batch size in each layout, and each figure's share of the matmul roofline.

    With ``--stylegan2 R``, a config-f StyleGAN2 at R px is measured beside ``--model``, in the same run.
    """
    device = torch.device(args.device) if args.device else default_device()
    matmul = matmul_gflop_s(device=device)
    print(f"{device}: fp32 matmul {matmul:.1f} GFLOP/s (the roofline); median of {args.repeats} passes")
    models = [zoo.load(args.model, device)]
    if args.stylegan2:
        models.append(random_stylegan2(args.stylegan2, device))
    for model in models:
        if args.precision == "fast":
            prepare(model)  # chooses the precision (and takes the engine's layout)
            model.generator.to(memory_format=torch.contiguous_format)
        print("\n".join(forward_table(model, args.batches, args.repeats, matmul, args.precision == "fast")))


def png_cost(images: np.ndarray, repeats: int, **options: object) -> tuple[float, float]:
    """Median CPU ms per image over ``repeats`` passes of PNG-encoding ``images`` with ``options``, and mean KiB."""
    times = []
    for _ in range(repeats):
        t0 = time.process_time()  # CPU time: what the server pays, whatever else runs on the machine
        sizes = [len(media.png_bytes(image, **options)) for image in images]
        times.append((time.process_time() - t0) / len(images))
    return statistics.median(times) * 1000, sum(sizes) / len(sizes) / 1024


def cmd_bench_png(args: argparse.Namespace) -> None:
    """Print PNG encoding CPU time and size per image, Pillow's default vs ``media.DRAWN_PNG``."""
    model = zoo.load(args.model)
    cls = model.config.class_names[0] if model.config.class_names else None
    images = generate_unbatched(model, range(args.images), cls, 0.8)  # the Explore tab's first kind of image
    default_ms, default_kib = png_cost(images, args.repeats)
    drawn_ms, drawn_kib = png_cost(images, args.repeats, **media.DRAWN_PNG)
    print(f"{args.model}: PNG of {args.images} drawn images, median CPU ms per image over {args.repeats} passes")
    print(f"  Pillow default (deflate):   {default_ms:.2f} ms  {default_kib:.1f} KiB")
    print(f"  studio ({media.DRAWN_PNG}): {drawn_ms:.2f} ms  {drawn_kib:.1f} KiB")
    print(f"  default / studio: {default_ms / drawn_ms:.1f}x the CPU, {default_kib / drawn_kib:.2f}x the size")


CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                  "--disable-sync", "--no-first-run"]


def time_to_first_image(browser: object, home: Path, timeout_s: float = 180) -> float:
    """Seconds from starting ``python app.py`` (studio home ``home``) to its first image in ``browser``."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {**os.environ, "STUDIO_HOME": str(home), "GRADIO_SERVER_NAME": "127.0.0.1", "GRADIO_SERVER_PORT": str(port)}
    page = browser.new_page()
    root = Path(__file__).resolve().parents[1]
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "app.py"], cwd=root, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        while True:
            try:
                page.goto(f"http://127.0.0.1:{port}/", timeout=2000)
                break
            except Exception:  # playwright's error while the server is not listening yet
                if proc.poll() is not None or time.perf_counter() - start > timeout_s:
                    raise RuntimeError("the studio did not start") from None
                time.sleep(0.05)
        page.wait_for_selector("#main-image img", timeout=timeout_s * 1000)
        return time.perf_counter() - start
    finally:
        page.close()
        proc.terminate()
        proc.wait(timeout=30)


def cmd_bench_startup(args: argparse.Namespace) -> None:
    """Print cold and warm launch-to-first-image times and their medians."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        raise SystemExit("bench startup needs playwright: pip install -r requirements-dev.txt") from None
    with sync_playwright() as p, tempfile.TemporaryDirectory() as tmp:
        browser = p.chromium.launch(executable_path=args.chromium, args=CHROMIUM_FLAGS)
        cold = [time_to_first_image(browser, Path(tmp) / f"cold{i}") for i in range(args.runs)]
        warm = [time_to_first_image(browser, Path(tmp) / "cold0") for _ in range(args.runs)]
        browser.close()
    for kind, times in (("cold (empty studio home)", cold), ("warm (model converted)", warm)):
        runs = ", ".join(f"{t:.2f}" for t in times)
        print(f"{kind:>26}: median {statistics.median(times):.2f} s  (runs: {runs})")


def _timed(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def cmd_bench_sliders(args: argparse.Namespace) -> None:
    """Print slider-move vs forward-pass latency percentiles and direction compute times."""
    device = torch.device(args.device) if args.device else default_device()
    model = prepare(zoo.load(args.model, device))
    print(f"{args.model} on {device}")
    for method in directions.METHODS:
        times = [_timed(lambda m=method: directions.compute(model, m)) for _ in range(3)]
        print(f"  {method} directions: median {statistics.median(times) * 1000:.0f} ms to compute (3 runs)")
    directions.load_or_compute(model, "sefa")  # the cache a studio has after its first slider move
    cls = model.config.class_names[0] if model.config.class_names else None
    inputs = request_inputs(model, Request(model.name, (7,), cls))
    values = np.linspace(-5, 5, args.moves)
    with Engine(str(device), loader=lambda _name, _device: model) as engine:
        engine.generate(Request(model.name, (7,), cls, 1.0, ((0, 1.0),)))  # warm-up
        forward, moves = [], []
        for v in values:  # alternate, so both see the same machine load
            forward.append(_timed(lambda: run_generator(model, inputs)))
            moves.append(_timed(lambda v=v: engine.generate(Request(model.name, (7,), cls, 1.0, ((0, float(v)),)))))
    f50, f95 = _percentiles_ms(forward)
    m50, m95 = _percentiles_ms(moves)
    print(f"  plain forward pass (batch 1): p50 {f50:.1f} ms  p95 {f95:.1f} ms")
    print(f"  slider move through engine:   p50 {m50:.1f} ms  p95 {m95:.1f} ms")
    print(f"  slider move / forward (p50):  {m50 / f50:.2f}x  (target <= 1.2x)")


def cmd_bench_finetune(args: argparse.Namespace) -> None:
    """Print median seconds per step and images per second for the default settings and the quick preset, then
    the quick preset's seconds per step and the SWD it reaches in fp32 and in bf16 autocast (labelled emulated
    where this device has no native bf16)."""
    from studio import metrics, precision, train

    resolution = zoo.model_config(args.model).resolution
    images = torch.rand(256, 3, resolution, resolution, generator=torch.Generator().manual_seed(0)) * 2 - 1
    quick = {k: v for k, v in train.QUICK_PRESET.items() if k != "steps"}
    print(f"fine-tuning {args.model} ({zoo.model_config(args.model).architecture}) at {resolution}px, median of "
          f"{args.steps} steps after one warm-up")
    for label, settings in (("defaults (batch 16)", {}), (f"quick preset {quick}", quick)):
        config = train.TrainConfig(data="bench", out="bench", base=args.model, checkpoint_every=10**9, **settings)
        run = train.Run(config, images)
        run.train_step()
        times = [_timed(run.train_step) for _ in range(args.steps)]
        step_s = statistics.median(times)
        print(f"  {label}, discriminator {run.d_origin}: {step_s:.2f} s/step, {config.batch / step_s:.1f} img/s, "
              f"{train.QUICK_PRESET['steps']} steps = {train.QUICK_PRESET['steps'] * step_s / 60:.1f} min")
    config = train.TrainConfig(data="bench", out="bench", base=args.model, checkpoint_every=10**9, **quick)
    print(f"  quick preset in each precision ({precision.for_training(default_device(), 'auto').reason}); "
          f"SWD of {len(images)} samples against the data after {args.steps + 1} steps:")
    for mode in ("exact", "fast"):
        run = train.Run(config, images, mode)
        times = [_timed(run.train_step) for _ in range(args.steps + 1)][1:]  # the first step warms up
        native = mode == "exact" or torch.bfloat16 in precision.candidates(run.device)
        swd = metrics.swd(run.previews(range(len(images))), images).mean
        print(f"    {run.precision.name}{'' if native else ' (emulated: no native bf16 here)'}: "
              f"{statistics.median(times):.2f} s/step, SWD {swd:.1f}")


def cmd_bench_responsive(args: argparse.Namespace) -> None:
    """Print engine latency percentiles without and with a running fine-tune job."""
    from studio import data, jobs, train

    def latencies(engine: Engine) -> tuple[float, float]:
        times = [_timed(lambda s=s: engine.generate(Request(args.model, (s,)))) for s in range(args.requests)]
        return _percentiles_ms(times)

    with tempfile.TemporaryDirectory() as tmp, temporary_home(Path(tmp)):  # the job's worker inherits it
        resolution = zoo.model_config(args.model).resolution
        rng = np.random.default_rng(0)
        images = [(f"art{i}.png", media.png_bytes(rng.integers(0, 255, (resolution, resolution, 3), dtype=np.uint8)))
                  for i in range(64)]
        data.ingest(images, "bench", resolution)
        with Engine(timeout_s=600) as engine:
            latencies(engine)  # warm-up: load the model
            alone = latencies(engine)
            manager = jobs.JobManager()
            settings = {**train.QUICK_PRESET, "steps": 10**6}
            job_id = manager.submit(train.TrainConfig(data="bench", out="bench-job", base=args.model, **settings),
                                    "bench")
            while manager.get(job_id)["progress"].get("step", 0) < 3:
                time.sleep(0.5)
            busy = latencies(engine)
            step_s = manager.get(job_id)["progress"]["s_per_step"]
            manager.cancel(job_id)
            while manager.get(job_id)["status"] in jobs.ACTIVE:
                time.sleep(0.5)
            manager.close()
    print(f"{args.model}: single-image requests through the engine, {args.requests} each")
    print(f"  no job running:        p50 {alone[0]:.1f} ms  p95 {alone[1]:.1f} ms")
    print(f"  fine-tune job running: p50 {busy[0]:.1f} ms  p95 {busy[1]:.1f} ms  (job at {step_s:.2f} s/step)")


def cmd_bench_export(args: argparse.Namespace) -> None:
    """Print engine latency percentiles idle and while one and two animation exports run, as ratios."""
    from studio import animation
    from studio.recipe import Recipe

    with Engine(timeout_s=600) as engine, tempfile.TemporaryDirectory() as tmp:
        model = engine.model(args.model)
        keyframes = [Recipe(args.model, model.weights_sha256, seed) for seed in range(4)]
        options = animation.PathOptions(max(1, args.frames // 4), loop=True)
        size = 4 * model.config.resolution

        def latencies() -> tuple[float, float]:
            times = [_timed(lambda s=s: engine.generate(Request(args.model, (s,)))) for s in range(args.requests)]
            return _percentiles_ms(times)

        def export_while(stop: threading.Event, out: Path, frames: list[int]) -> None:
            def counted(drawn: Iterator[np.ndarray]) -> Iterator[np.ndarray]:
                for frame in drawn:
                    if stop.is_set():  # the requests are timed: end this export early
                        return
                    frames.append(1)
                    yield frame

            while not stop.is_set():  # export after export until the requests are timed
                animation.export(out, counted(animation.draw_frames(engine, keyframes, options)), 24, size)

        latencies()  # warm-up
        idle = latencies()
        rows = []
        for exports in (1, 2):
            stop, frames = threading.Event(), []
            threads = [threading.Thread(target=export_while, args=(stop, Path(tmp) / f"{i}.mp4", frames))
                       for i in range(exports)]
            for t in threads:
                t.start()
            while not frames:  # the exports are drawing
                time.sleep(0.01)
            start = time.perf_counter()
            busy = latencies()
            rate = len(frames) / (time.perf_counter() - start)
            stop.set()
            for t in threads:
                t.join()
            rows.append((exports, busy, rate))
    print(f"{args.model}: {args.requests} single-image requests through the engine in each phase; each export "
          f"{len(options.times(len(keyframes)))} frames, MP4 at {size}x{size}, in requests of "
          f"{animation.FRAMES_PER_REQUEST} frames ({animation.FRAMES_WHILE_DRAWING} while someone draws)")
    print(f"  idle:        p50 {idle[0]:.1f} ms  p95 {idle[1]:.1f} ms")
    for exports, (p50, p95), rate in rows:
        print(f"  {exports} export{'s' if exports > 1 else ' '}:   p50 {p50:.1f} ms  p95 {p95:.1f} ms  "
              f"(p50 x{p50 / idle[0]:.2f}, p95 x{p95 / idle[1]:.2f} idle; exports at {rate:.0f} frames/s)")


def class_variants(model: LoadedModel, seeds: int) -> list[list[np.ndarray]]:
    """Per seed, its image under each of the model's classes: ``[seeds][classes]`` of ``[H, W, 3]`` uint8."""
    per_class = [generate_unbatched(model, range(seeds), name) for name in model.config.class_names]  # [C][S, H, W, 3]
    return [[images[s] for images in per_class] for s in range(seeds)]


def palette_variants(compositions: int, palettes: int, size: int) -> list[list[np.ndarray]]:
    """Per composition (random flat shapes), the drawing in ``palettes`` hue-rotated palettes."""
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(0)
    out = []
    for _ in range(compositions):
        labels = Image.new("L", (size, size), 0)
        draw = ImageDraw.Draw(labels)
        for label in range(1, 7):  # shapes of labels 1-6 over a background of label 0
            (x0, x1), (y0, y1) = sorted(rng.integers(0, size, 2)), sorted(rng.integers(0, size, 2))
            (draw.ellipse if label % 2 else draw.rectangle)((x0, y0, x1 + 8, y1 + 8), fill=label)
        base = rng.integers(40, 256, (7, 3)).astype(np.uint8)
        hsv = np.asarray(Image.fromarray(base[None]).convert("HSV"), np.int32)  # [1, 7, 3]
        variants = []
        for j in range(palettes):
            turned = hsv.copy()
            turned[..., 0] = (turned[..., 0] + j * 256 // palettes) % 256
            palette = np.asarray(Image.fromarray(turned.astype(np.uint8), "HSV").convert("RGB"))[0]  # [7, 3]
            variants.append(palette[np.asarray(labels)])
        out.append(variants)
    return out


def near_copies(image: np.ndarray) -> dict[str, np.ndarray]:
    """True near copies of one ``[H, W, 3]`` uint8 image: JPEG re-encodes, +-10% brightness, 1-pixel shifts."""
    import io

    from PIL import Image

    copies = {}
    for quality in (30, 50, 70, 90):
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, "JPEG", quality=quality)
        copies[f"JPEG q{quality}"] = np.asarray(Image.open(buffer))
    for factor in (0.9, 1.1):
        copies[f"brightness x{factor}"] = (image * factor).round().clip(0, 255).astype(np.uint8)
    copies["1 px right"] = np.concatenate([image[:, :1], image[:, :-1]], axis=1)
    copies["1 px down"] = np.concatenate([image[:1], image[:-1]], axis=0)
    return copies


def flagged(prints: list, same: Callable[[object, object], bool]) -> int:
    """How many of a set's images a sequential pass flags as resembling an earlier one."""
    return sum(any(same(prints[i], prints[j]) for j in range(i)) for i in range(len(prints)))


def cmd_bench_dedup(args: argparse.Namespace) -> None:
    """Print false merges and recall of the luminance-only and the structure-and-colour near-duplicate rules."""
    from studio.data import NEAR_DUPLICATE_BITS, NEAR_DUPLICATE_COLOUR, Fingerprint

    model = zoo.load(args.model, "cpu")
    if not model.config.class_names:
        raise ValueError(f"bench dedup draws each seed under every class; {args.model} has no classes")
    eyes = class_variants(model, args.seeds)
    drawings = palette_variants(args.compositions, args.palettes, model.config.resolution)
    works = {f"{args.model} classes": [[Fingerprint.of(x) for x in group] for group in eyes],
             "palettes": [[Fingerprint.of(x) for x in group] for group in drawings]}
    rules = {"old (structure only)": Fingerprint.same_structure, "new (structure and colour)": Fingerprint.resembles}
    print(f"{args.model}: {args.seeds} seeds x {len(eyes[0])} classes; {args.compositions} procedural "
          f"compositions x {args.palettes} palettes; {model.config.resolution} px")
    print("false merges (distinct works flagged as a near duplicate of an earlier one):")
    for label, groups in works.items():
        prints = [p for group in groups for p in group]
        for rule, same in rules.items():
            n = flagged(prints, same)
            print(f"  {label:>22}, {rule:>26}: {n:4d} of {len(prints)} ({100 * n / len(prints):.1f}%)")
    originals = [group[0] for group in eyes + drawings]
    pairs = [(kind, Fingerprint.of(image), Fingerprint.of(copy))
             for image in originals for kind, copy in near_copies(image).items()]
    print(f"near copies caught (recall), {len(originals)} originals:")
    for rule, same in rules.items():
        caught = sum(same(a, b) for _, a, b in pairs)
        missed = ", ".join(dict.fromkeys(kind for kind, a, b in pairs if not same(a, b))) or "none"
        print(f"  {rule:>26}: {caught} of {len(pairs)} ({100 * caught / len(pairs):.1f}%); "
              f"kinds with misses: {missed}")
    copies = [a.colour_distance(b) for _, a, b in pairs if a.same_structure(b)]
    distinct = [a.colour_distance(b) for groups in works.values() for group in groups
                for a, b in itertools.combinations(group, 2) if a.same_structure(b)]
    print(f"colour distance of pairs within {NEAR_DUPLICATE_BITS} hash bits (threshold {NEAR_DUPLICATE_COLOUR:g}):")
    print(f"  near copies:    max {max(copies):.1f}  p95 {np.percentile(copies, 95):.1f}  ({len(copies)} pairs)")
    if distinct:
        print(f"  distinct works: min {min(distinct):.1f}  p5 {np.percentile(distinct, 5):.1f}  "
              f"({len(distinct)} pairs)")


def best_seed_psnr(model: LoadedModel, target: np.ndarray, seeds: int) -> float:
    """The PSNR the best of ``seeds`` random seeds (under the uniform blend and each class) reaches against ``target``."""
    blends = [None, *model.config.class_names]
    best = -math.inf
    for start in range(0, seeds, 64):
        chunk = range(100_000 + start, 100_000 + min(start + 64, seeds))  # seeds no target was drawn from
        for classes in blends:
            best = max(best, *(psnr(x, target) for x in generate_unbatched(model, chunk, classes)))
    return best


def cmd_bench_project(args: argparse.Namespace) -> None:
    """Print seconds and PSNR of projection with default settings on the model's own samples and on drawings."""
    model = zoo.load(args.model, "cpu")
    size = model.config.resolution
    targets = [(f"own sample, seed {s}", generate_unbatched(model, [s])[0]) for s in range(args.targets)]
    targets += [(f"drawing {i}", group[0]) for i, group in enumerate(palette_variants(args.targets, 1, size))]
    print(f"{args.model} ({size} px) on the CPU, {torch.get_num_threads()} threads: {args.steps} steps, "
          f"best of {args.seeds} seeds under every class for comparison")
    rows = []
    for label, target in targets:
        t0 = time.perf_counter()
        found = project(model, target, steps=args.steps)
        seconds = time.perf_counter() - t0
        request = request_for(found.recipe(model))
        image = run_generator(model, request_inputs(model, request))[0]
        row = {"target": label, "seconds": round(seconds, 1), "psnr_db": round(psnr(image, target), 2),
               "best_seed_psnr_db": round(best_seed_psnr(model, target, args.seeds), 2)}
        rows.append(row)
        print(f"  {label:>22}: {row['seconds']:6.1f} s  PSNR {row['psnr_db']:5.2f} dB  "
              f"(best random seed {row['best_seed_psnr_db']:5.2f} dB)")
    if args.json:
        args.json.write_text(json.dumps({"model": args.model, "steps": args.steps, "results": rows}, indent=2) + "\n")


def music_track(path: Path, seconds: float, bpm: float = 120.0, rate: int = 44100) -> Path:
    """Write a synthetic song as a WAV: a kick on every beat over a chord that changes each bar (A minor, F, C, G)."""
    from studio import audio

    t = np.arange(int(seconds * rate)) / rate
    chords = [(220.0, 261.63, 329.63), (174.61, 220.0, 261.63), (261.63, 329.63, 392.0), (196.0, 246.94, 293.66)]
    bar = (t // (4 * 60 / bpm)).astype(int) % len(chords)
    x = sum(0.1 * np.sin(2 * np.pi * np.array([c[i] for c in chords])[bar] * t) for i in range(3))
    since_beat = t % (60 / bpm)
    x = x + 0.6 * np.sin(2 * np.pi * 60 * since_beat) * np.exp(-since_beat / 0.05)
    return audio.write_wav(path, x, rate)


def cmd_bench_music(args: argparse.Namespace) -> None:
    """Print seconds of rendering per second of music video, and the engine's frames per second while rendering."""
    from studio import music
    from studio.recipe import Recipe

    with Engine(timeout_s=3600) as engine, tempfile.TemporaryDirectory() as tmp:
        model = engine.model(args.model)
        sound = music_track(Path(tmp) / "song.wav", args.seconds)
        keyframes = [Recipe(args.model, model.weights_sha256, seed) for seed in range(4)]
        recipe = music.recipe_for(keyframes, sound, fps=args.fps)
        runs = [music.render(engine, recipe, sound, Path(tmp) / f"{i}.mp4") for i in range(args.repeats + 1)][1:]
    per_second = statistics.median(r.seconds / args.seconds for r in runs)
    print(f"{args.model} ({model.config.resolution} px) on {engine.device}: a {args.seconds:g} s music video at "
          f"{args.fps:g} fps ({runs[0].frames} frames, default mapping), median of {args.repeats} renders after a "
          "warm-up")
    print(f"  {per_second:.2f} s of rendering per second of video ({statistics.median(r.seconds for r in runs):.1f} s "
          f"per render: analysis, drawing, encoding, muxing)")
    print(f"  engine: {statistics.median(r.engine_fps for r in runs):.0f} frames/s while drawing "
          f"({statistics.median(r.drawing_seconds / r.seconds for r in runs):.0%} of the render)")
