"""Command line: ``python -m studio COMMAND``; ``python -m studio --help`` lists them, ``--help`` on each explains it."""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from studio import bending, latent, zoo
from studio import recipe as recipe_mod
from studio.bench_parser import add_parser as add_bench_parser
from studio.precision import REQUESTS
from studio.projection import DEFAULT_STEPS
from studio.storage import MAX_NAME_LENGTH

if TYPE_CHECKING:
    from studio.engine import Engine


class UsageError(Exception):
    """Bad input from the command line; printed as one line, exit status 2."""


def cmd_models(args: argparse.Namespace) -> None:
    """Print one line per model: name, resolution, classes, licence."""
    rows = [("name", "resolution", "classes", "licence", "title")]
    for name in zoo.model_names():
        cfg = zoo.model_config(name)
        classes = ",".join(cfg.class_names) if cfg.class_names else "-"
        rows.append((name, f"{cfg.resolution}x{cfg.resolution}", classes, cfg.license or "?", cfg.title))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)) + "  " + row[-1])


def parse_pairs(text: str, what: str, key: type, value: type = float) -> dict:
    """Parse ``k=v,k=v`` (``--edit 0=3,2=-2``, ``--blend blue=0.6,hazel=0.4``) into a dict."""
    pairs = {}
    for part in text.replace(" ", "").split(","):
        k, sep, v = part.partition("=")
        try:
            if not sep:
                raise ValueError
            pairs[key(k)] = value(v)
        except ValueError:
            raise UsageError(f"bad {what} {part!r}: write it as {'0=3,2=-2' if key is int else 'blue=0.6,hazel=0.4'}") from None
    return pairs


def generate_recipes(args: argparse.Namespace, weights_sha256: str) -> list[recipe_mod.Recipe]:
    """One recipe per requested seed, from the command's options."""
    try:
        seeds = latent.parse_seeds(args.seeds)
    except ValueError as e:
        raise UsageError(str(e)) from None
    if args.class_name and args.blend:
        raise UsageError("give either --class or --blend, not both")
    config = zoo.model_config(args.model)
    classes = parse_pairs(args.blend, "blend", str) if args.blend else {args.class_name: 1.0} if args.class_name else {}
    for name in classes:
        if name not in config.class_names:
            known = ", ".join(config.class_names) if config.class_names else "none (the model is unconditional)"
            raise UsageError(f"unknown class {name!r} for {args.model}; classes: {known}")
    edits = parse_pairs(args.edit, "edit", int) if args.edit else {}
    mix_seed, mix_layers = parse_mix(args.mix) if args.mix else (None, None)
    edit_layers = parse_layers(args.edit_layers, "--edit-layers") if args.edit_layers else None
    try:
        bends = bending.parse_lines("\n".join(args.bend or ()))
        return [recipe_mod.Recipe(args.model, weights_sha256, s, classes, args.truncation, args.directions, edits,
                                  edit_layers, mix_seed, mix_layers, args.noise_seed, bends, tuned=args.tuned)
                for s in seeds]
    except ValueError as e:  # RecipeError too
        raise UsageError(str(e)) from None


def parse_layers(text: str, what: str) -> tuple[int, int]:
    """Style layers ``A-B`` (or one layer ``A``) as (first, last)."""
    first, _, last = text.strip().partition("-")
    try:
        return int(first), int(last or first)
    except ValueError:
        raise UsageError(f"bad {what} {text!r}: write style layers as FIRST-LAST, such as 0-3") from None


def parse_mix(text: str) -> tuple[int, tuple[int, int]]:
    """``SEED:A-B`` as (seed, (first, last))."""
    seed, sep, layers = text.partition(":")
    try:
        if not sep:
            raise ValueError
        return int(seed), parse_layers(layers, "--mix")
    except ValueError:
        raise UsageError(f"bad --mix {text!r}: write it as SEED:FIRST-LAST, such as 5:0-3") from None


def cmd_generate(args: argparse.Namespace) -> None:
    """Draw images for the given seeds (or a recipe) into a grid and/or one PNG per seed."""
    from studio import media
    from studio.engine import Engine

    if not args.out and not args.out_dir:
        raise UsageError("say where to write: --out FILE.png and/or --out-dir DIR")
    if args.recipe:
        try:
            recipes = [recipe_mod.read_recipe(Path(args.recipe))]
        except recipe_mod.RecipeError as e:
            raise UsageError(str(e)) from None
        args.model = recipes[0].model
    zoo.model_config(args.model)  # an unknown or over-long name: ModelUnavailable, in words
    # The CLI draws through the same engine as the studio (the same pixels); a long seed list may
    # take minutes on a CPU, which is no timeout for a batch job.
    with Engine(timeout_s=24 * 3600) as engine:
        model = engine.model(args.model)
        if args.recipe:
            try:
                recipe_mod.check_weights(recipes[0], model)
            except recipe_mod.RecipeError as e:
                raise UsageError(str(e)) from None
        else:
            recipes = generate_recipes(args, model.weights_sha256)
        recipes = [recipe_mod.stamped(r, drawn_in(engine, args)) for r in recipes]
        first = recipes[0]
        request = recipe_mod.request_for(first, args.precision)
        images = engine.generate(replace(request, seeds=tuple(r.seed for r in recipes)))
    if args.out:
        if len(images) == 1:  # a single image is saved as itself, recipe included
            recipe_mod.save_with_recipe(Path(args.out), images[0], first)
        else:
            media.save_png(Path(args.out), media.grid(images, cols=args.cols))
        print(f"wrote {args.out} ({len(images)} images)")
    if args.out_dir:
        out_dir = Path(args.out_dir)
        for r, image in zip(recipes, images):
            recipe_mod.save_with_recipe(out_dir / f"seed{r.seed:04d}.png", image, r)
        print(f"wrote {len(images)} images to {out_dir}/")


def cmd_interpolate(args: argparse.Namespace) -> None:
    """Animate a path through the seeds' images and write it as a GIF or an MP4 (by --out's extension)."""
    from studio import animation
    from studio.engine import Engine

    options = animation.PathOptions(args.frames, args.mode, args.easing, args.loop)
    zoo.model_config(args.model)  # an unknown or over-long name: ModelUnavailable, in words
    keyframes = len(latent.parse_seeds(args.seeds))
    # Settings are checked before drawing, so a typo costs no rendering time.
    animation.check_export(Path(args.out), len(options.times(keyframes)), zoo.model_config(args.model).resolution,
                           args.fps, args.size)
    # The same engine as the studio, so a frame at a keyframe is that seed's studio image exactly;
    # a long path may take minutes on a CPU, which is no timeout for a batch job.
    with Engine(timeout_s=24 * 3600) as engine:
        recipes = generate_recipes(args, engine.model(args.model).weights_sha256)
        # Streamed from the engine into the file: a long path is never all in memory.
        frames = animation.draw_frames(engine, recipes, options, precision=args.precision)
        animation.export(Path(args.out), frames, args.fps, args.size)
    count = len(options.times(keyframes))
    print(f"wrote {args.out} ({count} frames, {count / args.fps:.1f} s at {args.fps:g} fps)")


def cmd_music(args: argparse.Namespace) -> None:
    """Render a music video: the seeds' path moved by the audio, the sound muxed in, its recipe inside and beside."""
    from studio import music
    from studio.engine import Engine

    if args.recipe:
        try:
            chosen = music.read_music_recipe(Path(args.recipe))
        except recipe_mod.RecipeError as e:
            raise UsageError(str(e)) from None
        if not args.audio:
            raise UsageError(f"give the audio the recipe was made from with --audio ({chosen.audio_name!r})")
    elif not args.seeds or not args.audio:
        raise UsageError("give --audio FILE and --seeds such as 1,5,9 (or --recipe of an earlier video)")
    else:
        zoo.model_config(args.model)  # an unknown or over-long name: ModelUnavailable, in words
        direction = None if args.pulse_direction == "random" else _whole(args.pulse_direction, "--pulse-direction")
        mapping = music.Mapping(args.pace, args.per, args.tempo, args.beats_per_bar, args.mode, args.pulse,
                                args.pulse_decay, direction, args.pulse_seed, args.motion, args.harmony,
                                args.harmony_to)
    # The same engine as the studio; a whole song may take many minutes on a CPU: no timeout for a batch job.
    with Engine(timeout_s=24 * 3600) as engine:
        if not args.recipe:
            keyframes = generate_recipes(args, engine.model(args.model).weights_sha256)
            chosen = music.recipe_for(keyframes, Path(args.audio), args.start, args.duration, args.fps, args.size,
                                      mapping)
        done = music.render(engine, chosen, Path(args.audio), Path(args.out))
    sidecar = music.write_sidecar(Path(args.out), chosen)
    print(f"wrote {args.out} ({done.frames} frames, {done.frames / chosen.fps:.1f} s at {chosen.fps:g} fps, with "
          f"sound; {done.seconds / (done.frames / chosen.fps):.2f} s of rendering per second) and its recipe {sidecar}")


def _whole(text: str, what: str) -> int:
    """``text`` as a whole number, or a UsageError naming ``what``."""
    try:
        return int(text)
    except ValueError:
        raise UsageError(f"bad {what} {text!r}: give a whole number or random") from None


def cmd_ingest(args: argparse.Namespace) -> None:
    """Turn image files, folders and zip archives into a named data set; print what was kept and rejected."""
    import json

    from studio import data
    from studio.storage import atomic_write_bytes

    missing = [p for p in args.paths if not Path(p).exists()]
    if missing:
        raise UsageError(f"no such file or folder: {missing[0]}")
    resolution = args.resolution or zoo.model_config(zoo.DEFAULT_MODEL).resolution
    try:
        report = data.ingest([Path(p) for p in args.paths], args.name, resolution, background=args.background,
                             fit=args.fit, overwrite=args.overwrite, drop_near_duplicates=args.drop_near_duplicates)
    except data.NoUsableImages as e:
        for r in e.rejected:
            print(f"  rejected {r.source}: {r.reason}")
        raise UsageError(str(e)) from None
    print(f"kept {len(report.kept)} images, rejected {len(report.rejected)}; wrote {report.dataset}")
    for r in report.rejected:
        print(f"  rejected {r.source}: {r.reason}")
    for n in report.near_duplicates:
        print(f"  near duplicate kept: {n.source} {n.detail}")
    if args.json:
        atomic_write_bytes(Path(args.json), json.dumps(report.to_json(), indent=2).encode())


def cmd_finetune(args: argparse.Namespace) -> None:
    """Fine-tune a model on an ingested data set, with a progress bar; the result is a new model."""
    from tqdm import tqdm

    from studio import data, metrics, train

    preset = train.QUICK_PRESET if args.steps is None else {}
    settings = {"steps": args.steps, "batch": args.batch, "d_width": args.d_width, "freeze_g": args.freeze_g}
    settings = {k: v for k, v in settings.items() if v is not None}
    try:
        images = data.load_dataset(args.data)
        config = train.TrainConfig(
            data=args.data, out=args.out, base=args.base, loss=args.loss, lr=args.lr, augment=args.augment,
            freeze_d=args.freeze_d, class_name=args.class_name, seed=args.seed, overwrite=args.overwrite,
            checkpoint_every=args.checkpoint_every, resolution=images.shape[-1], **{**preset, **settings})
    except (ValueError, FileNotFoundError) as e:
        raise UsageError(str(e)) from None
    bar = tqdm(total=config.steps, desc=f"fine-tuning {config.out}", unit="step",
               disable=int(os.environ.get("RANK", "0")) != 0)

    def progress(step: int, total: int, losses: dict[str, float], previews: object) -> None:
        bar.n = step
        bar.set_postfix({k: f"{v:.3f}" for k, v in losses.items()}, refresh=True)

    tracker = metrics.SWDTracker(images, metrics.TRACKING_SAMPLES)  # the final SWD goes into the model's lineage
    tracker.lineage["processes"] = int(os.environ.get("WORLD_SIZE", "1"))
    result = train.finetune(config, images, progress, resume=args.resume, lineage=tracker.lineage,
                            sample_fn=tracker, samples=metrics.TRACKING_SAMPLES)
    bar.close()
    if result.model_dir:
        print(f"wrote model {config.out} to {result.model_dir} ({result.step} steps, SWD to the data set "
              f"{tracker.lineage['swd']:.1f}); "
              f"try: python -m studio generate --model {config.out} --seeds 0-7 --out grid.png")


def cmd_metrics(args: argparse.Namespace) -> None:
    """Print the SWD between a model's samples and a data set, and the fraction of near-copies."""
    import torch

    from studio import data, metrics
    from studio.engine import Engine, Request

    zoo.model_config(args.model)  # an unknown or over-long name: ModelUnavailable, in words
    if args.samples < 1:
        raise UsageError(f"--samples must be at least 1, got {args.samples}")
    try:
        images = data.load_dataset(args.data)  # [N, 3, R, R] in [-1, 1]
    except FileNotFoundError as e:
        raise UsageError(str(e)) from None
    resolution = zoo.model_config(args.model).resolution
    if images.shape[-1] != resolution:
        raise UsageError(f"the data set is {images.shape[-1]}px but {args.model} draws {resolution}px")
    # The same engine as the studio; many samples may take minutes on a CPU, which is no timeout for a batch job.
    with Engine(timeout_s=24 * 3600) as engine:
        samples = engine.generate(Request(args.model, seeds=tuple(range(args.samples))))  # [N, R, R, 3] uint8
    result = metrics.swd(samples, images, generator=torch.Generator().manual_seed(args.seed))
    report = metrics.memorization(samples, images)
    print(f"SWD x1e3, {args.samples} samples of {args.model} vs {len(images)} images of {args.data} (lower is closer):")
    for side, value in result.levels.items():
        print(f"  {f'{side}px':>6}  {value:8.1f}")
    print(f"  {'mean':>6}  {result.mean:8.1f}")
    print(f"near-copies: {report.fraction:.1%} of samples (RMS difference under {report.threshold} at 32x32; "
          f"closest sample {report.distances.min().item():.3f})")


def cmd_pull(args: argparse.Namespace) -> None:
    """Download a model from the Hugging Face Hub (or the local Hugging Face cache) and register it."""
    from studio import hub

    try:
        pulled = hub.pull(args.repo, args.revision)
    except hub.HubError as e:
        raise UsageError(str(e)) from None
    print(f"pulled {pulled.name} (commit {pulled.commit[:12]}) into {pulled.folder}; "
          f"try: python -m studio generate --model {pulled.name} --seeds 0-7 --out grid.png")


def cmd_push(args: argparse.Namespace) -> None:
    """Upload a model with a sample grid and a model card to the Hub, or write that upload to a folder."""
    from studio import hub
    from studio.engine import Engine

    if args.dry_run != bool(args.out):
        raise UsageError("--dry-run and --out DIR go together: the dry run writes the upload into DIR")
    try:
        with Engine(timeout_s=24 * 3600) as engine:
            if args.dry_run:
                files = hub.write_upload(engine, args.model, args.repo, Path(args.out))
                print(f"wrote the upload of {args.model} as {args.repo} to {args.out}: {', '.join(files)}; "
                      f"nothing was sent")
            else:
                url = hub.push(engine, args.model, args.repo, os.environ.get("HF_TOKEN"), private=args.private)
                print(f"pushed {args.model} to {url}")
    except hub.HubError as e:
        raise UsageError(str(e)) from None


def cmd_import(args: argparse.Namespace) -> None:
    """Convert a DCGAN-tutorial generator state dict file into a studio model."""
    classes = tuple(c.strip() for c in args.classes.split(",") if c.strip()) if args.classes else ()
    folder = zoo.import_file(Path(args.path), args.name, classes, args.resolution, args.latent,
                             license=args.license, author=args.author, source=args.source)
    print(f"imported {args.path} as model {args.name} into {folder}; "
          f"try: python -m studio generate --model {args.name} --seeds 0-7 --out grid.png")


def cmd_blend(args: argparse.Namespace) -> None:
    """Write a new model whose weights blend two models of one architecture, everywhere or on some blocks."""
    from studio import remix

    layers = remix.parse_layer_range(args.layers) if args.layers else None
    folder = remix.blend(args.a, args.b, args.alpha, args.out, layers)
    print(f"wrote model {args.out} ({args.a} and {args.b} at alpha {args.alpha:g}) to {folder}; "
          f"try: python -m studio generate --model {args.out} --seeds 0-7 --out grid.png")


def cmd_project(args: argparse.Namespace) -> None:
    """Find the latent whose image is closest to a picture; write that image with its recipe (and a JSON report)."""
    import json
    import time

    from studio import projection
    from studio.engine import Engine
    from studio.storage import atomic_write_bytes

    config = zoo.model_config(args.model)
    target = projection.load_target(Path(args.target), config.resolution)  # a bad picture fails before any work
    latent.check_seed(args.seed)
    start = time.perf_counter()
    with Engine(timeout_s=24 * 3600) as engine:  # the studio's engine draws the result: the PNG replays exactly
        model = engine.model(args.model)
        found = projection.project(model, target, steps=args.steps, class_name=args.class_name, seed=args.seed,
                                   w_plus=args.w_plus)
        recipe = recipe_mod.stamped(found.recipe(model, args.seed), drawn_in(engine, args))
        image = engine.generate(recipe_mod.request_for(recipe, args.precision))[0]
    seconds = time.perf_counter() - start
    psnr = projection.psnr(image, target)
    recipe_mod.save_with_recipe(Path(args.out), image, recipe)
    if args.json:
        report = {"model": args.model, "target": str(args.target), "steps": args.steps, "seconds": round(seconds, 2),
                  "psnr_db": round(psnr, 3), "loss": round(found.loss, 5), "classes": found.classes}
        atomic_write_bytes(Path(args.json), (json.dumps(report, indent=2) + "\n").encode())
    print(f"wrote {args.out}: PSNR {psnr:.2f} dB against the target after {args.steps} steps in {seconds:.1f} s")


def cmd_serve(args: argparse.Namespace) -> None:
    """Launch the browser studio; with ``--ray``, its inference runs on Ray Serve replicas."""
    import signal

    from studio.ui import launch

    if not args.ray:
        launch(host=args.host, port=args.port)
        return
    try:
        from studio.ray_backend import RayEngine
    except ModuleNotFoundError as e:
        if e.name != "ray":
            raise
        raise UsageError("--ray needs Ray Serve: pip install -r requirements-scale.txt") from None
    if args.replicas < 1:
        raise UsageError(f"--replicas must be at least 1, got {args.replicas}")
    with RayEngine(replicas=args.replicas, address=args.address) as engine:
        # Terminated like Ctrl-C (in place of Ray's own handler), so the studio removes its deployment and
        # stops the Ray it started on its way out.
        signal.signal(signal.SIGTERM, signal.default_int_handler)
        launch(host=args.host, port=args.port, engine=engine)


def drawn_in(engine: Engine, args: argparse.Namespace) -> str:
    """The precision ``--precision`` draws ``--model`` in: "fp32" when exact, else the engine's choice."""
    return "fp32" if args.precision == "exact" else engine.precision_for(args.model).name


def add_precision_argument(p: argparse.ArgumentParser) -> None:
    """Add ``--precision``: exact fp32 (the default) or the engine's fast precision."""
    p.add_argument("--precision", choices=REQUESTS, default="exact",
                   help="exact: fp32, the same pixels on every machine (default); fast: the precision the studio "
                        "chose for this device (bf16 or fp16 where native and faster), as its interactive views draw")


def add_recipe_arguments(p: argparse.ArgumentParser) -> None:
    """The options that make up a recipe besides its seed (read by ``generate_recipes``)."""
    p.add_argument("--model", default=zoo.DEFAULT_MODEL, help="model name (see: python -m studio models)")
    p.add_argument("--class", dest="class_name", metavar="CLASS", help="class name for a conditional model")
    p.add_argument("--blend", help=f"class weights (relative, 0 to {latent.MAX_CLASS_WEIGHT:g}) instead of --class, "
                                   "such as blue=0.6,hazel=0.4")
    p.add_argument("--truncation", type=float, default=1.0,
                   help=f"psi from 0 to {latent.MAX_TRUNCATION:g}: 1 = untouched, 0 = the mean image")
    p.add_argument("--edit", help=f"semantic slider values from -{latent.MAX_EDIT:g} to {latent.MAX_EDIT:g}, "
                                  "direction index = value, such as 0=3,2=-2")
    p.add_argument("--directions", choices=["sefa", "pca"], default="sefa",
                   help="directions the edits refer to: closed-form (sefa, default) or GANSpace PCA (pca)")
    styles = p.add_argument_group("StyleGAN models", "per-layer style controls (0 = the coarsest, 4x4 layer)")
    styles.add_argument("--mix", metavar="SEED:A-B", help="style mixing: style layers A..B (inclusive) from SEED, "
                                                           "such as 5:0-3 (coarse: pose and shape)")
    styles.add_argument("--edit-layers", metavar="A-B", help="the style layers the --edit sliders move (default: all)")
    styles.add_argument("--noise-seed", type=int, metavar="N",
                        help="seed of the fine-detail noise (default: the model's constant noise)")
    p.add_argument("--bend", action="append", metavar="LAYER:OP[=VALUE][@CHANNELS]",
                   help="network bending, repeatable, applied in order: such as 2:rotate=90, 1:ablate@0-31 or "
                        f"3:multiply=1.5@random=25%%; operations: {', '.join(bending.OPS)}; layer 0 is the coarsest")
    p.add_argument("--tuned", type=float, metavar="X",
                   help="a fine-tuned model's weights blended from its base model's (0) to its own (1, the default)")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with one sub-command per verb."""
    parser = argparse.ArgumentParser(prog="python -m studio", description="GAN Studio command line.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("serve", help="launch the browser studio", description="Launch the browser studio.")
    p.add_argument("--host", default=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"))
    p.add_argument("--port", type=int, default=int(os.environ.get("GRADIO_SERVER_PORT", "7860")))
    p.add_argument("--ray", action="store_true",
                   help="run inference on Ray Serve replicas (pip install -r requirements-scale.txt)")
    p.add_argument("--replicas", type=int, default=1,
                   help="with --ray: inference replicas, one GPU each where the cluster has GPUs (default 1)")
    p.add_argument("--address", help="with --ray: the Ray cluster to join, such as HEAD_IP:6379 "
                                     "(default: start Ray on this machine, loopback only)")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("generate", help="draw images from seeds", description="Draw one image per seed.")
    p.add_argument("--seeds", default="0-7", help="seeds such as 0-7, 1,5,9 or 0-3,10 (default 0-7)")
    add_recipe_arguments(p)
    p.add_argument("--recipe", help="regenerate the image of a recipe: a PNG saved by the studio or a JSON file")
    p.add_argument("--out", help="write the image here (several seeds: one grid PNG)")
    p.add_argument("--out-dir", help="write one PNG per seed (seed0005.png) into this folder")
    p.add_argument("--cols", type=int, default=None, help="grid columns (default: square-ish)")
    add_precision_argument(p)
    p.set_defaults(func=cmd_generate)

    p = sub.add_parser("interpolate", help="animate a path through seeds' images (GIF or MP4)",
                       description="Animate a path through the images of 2 to 16 seeds; write a GIF or an "
                                   "H.264 MP4 by --out's extension.")
    p.add_argument("--seeds", required=True, help="the keyframes' seeds in path order, such as 1,5,9")
    add_recipe_arguments(p)
    p.add_argument("--frames", type=int, default=12, help="frames per segment, 1 to 120 (default 12)")
    p.add_argument("--loop", action="store_true", help="add the segment from the last keyframe back to the first")
    p.add_argument("--mode", choices=["lerp", "slerp"], default="slerp", help="interpolation in z (default slerp)")
    p.add_argument("--easing", choices=list(latent.EASINGS), default="linear",
                   help="speed along each segment (default linear)")
    p.add_argument("--fps", type=float, default=12, help="frames per second, 1 to 60 (default 12)")
    p.add_argument("--size", type=int, default=None,
                   help="output side in pixels, a multiple of the model's resolution (default: the resolution)")
    p.add_argument("--out", required=True, help="the animation file: NAME.gif or NAME.mp4")
    add_precision_argument(p)
    p.set_defaults(func=cmd_interpolate)

    p = sub.add_parser("music", help="a music video: a path through seeds' images that moves with an audio file",
                       description="Render an H.264 MP4 with the audio muxed in: the keyframes follow one another at "
                                   "a pace, the audio's energy sets the speed (motion), its onsets push the picture "
                                   "along a direction (pulse) and its chroma blends the classes of a conditional model "
                                   "or moves slider directions (harmony). The recipe goes into the MP4's comment and "
                                   "beside it as OUT.json; --recipe renders the same video again. Audio: any file "
                                   "ffmpeg reads (WAV, MP3, FLAC, OGG, M4A), at most 10 minutes (or an excerpt).")
    p.add_argument("--audio", help="the audio file")
    p.add_argument("--seeds", help="the keyframes' seeds in path order, such as 1,5,9")
    add_recipe_arguments(p)
    p.add_argument("--recipe", help="render again from a music recipe: the OUT.json or the MP4 a render wrote "
                                    "(with the same --audio)")
    p.add_argument("--start", type=float, default=0.0, help="where the excerpt starts, in seconds (default 0)")
    p.add_argument("--duration", type=float, help="the excerpt's length in seconds (default: to the end)")
    p.add_argument("--fps", type=float, default=24, help="frames per second, 1 to 60 (default 24)")
    p.add_argument("--size", type=int, default=None,
                   help="output side in pixels, a multiple of the model's resolution (default: the resolution)")
    p.add_argument("--pace", type=float, default=12,
                   help="keyframes per minute, or per bar with --per bar (default 12)")
    p.add_argument("--per", choices=["minute", "bar", "song"], default="minute",
                   help="the pace's unit; song spreads the keyframes once over the excerpt (default minute)")
    p.add_argument("--tempo", type=float, help="beats per minute for --per bar (default: estimated from the onsets)")
    p.add_argument("--beats-per-bar", type=int, default=4, help="beats in a bar (default 4)")
    p.add_argument("--mode", choices=["lerp", "slerp"], default="slerp", help="interpolation in z (default slerp)")
    p.add_argument("--pulse", type=float, default=1.5,
                   help="how far an onset pushes the picture, in slider units, 0 to 5 (default 1.5)")
    p.add_argument("--pulse-decay", type=float, default=0.15, help="seconds for a pulse to fall to half (default 0.15)")
    p.add_argument("--pulse-direction", default="0",
                   help="the slider direction the pulse pushes along, or random (default 0, the strongest)")
    p.add_argument("--pulse-seed", type=int, default=0, help="seed of the random pulse direction (default 0)")
    p.add_argument("--motion", type=float, default=0.5,
                   help="0: a steady pace; 1: the speed follows the loudness (default 0.5)")
    p.add_argument("--harmony", type=float, default=0.5,
                   help="0: the keyframes' own classes; 1: the classes (or directions) the chroma picks (default 0.5)")
    p.add_argument("--harmony-to", choices=["auto", "classes", "directions"], default="auto",
                   help="what harmony moves; auto: classes on a conditional model, else slider directions")
    p.add_argument("--out", required=True, help="the video: NAME.mp4 (its recipe goes beside it as NAME.json)")
    p.set_defaults(func=cmd_music)

    p = sub.add_parser("ingest", help="make a data set from image files, folders and zip archives",
                       description="Check, square, resize and de-duplicate images (PNG, JPEG, WebP, BMP, TIFF, GIF; "
                                   "files, folders or zip archives) into a data set for finetune; every rejected "
                                   "input is listed with its reason.")
    p.add_argument("paths", nargs="+", metavar="PATH", help="image files, folders and zip archives")
    p.add_argument("--name", required=True,
                   help=f"data set name: letters, digits, '.', '_' and '-', at most {MAX_NAME_LENGTH} characters")
    p.add_argument("--overwrite", action="store_true", help="replace an existing data set of that name")
    p.add_argument("--drop-near-duplicates", action="store_true",
                   help="reject images that look the same as an earlier one (same structure and colours) "
                        "instead of keeping and listing them")
    p.add_argument("--resolution", type=int, metavar="R",
                   help="side of the square images (default: the default model's, 128)")
    p.add_argument("--background", choices=["white", "black"], default="white",
                   help="colour under transparency and around padded images (default white)")
    p.add_argument("--fit", choices=["crop", "pad"], default="crop",
                   help="crop the centre square (default) or pad the whole image to a square")
    p.add_argument("--json", metavar="FILE", help="also write the report here: {dataset, kept, rejected}")
    p.set_defaults(func=cmd_ingest)

    p = sub.add_parser("finetune", help="fine-tune a model on an ingested data set",
                       description="Fine-tune a model on a data set made by 'ingest'. Without --steps, the quick "
                       "preset runs (600 steps, batch 16, a half-width discriminator, the generator's first two blocks "
                       "frozen). Under torchrun it trains "
                       "data-parallel.")
    p.add_argument("--data", required=True, help="data set name (see: python -m studio ingest)")
    p.add_argument("--from", dest="base", default=zoo.DEFAULT_MODEL, help="base model, or none to train from scratch")
    p.add_argument("--out", required=True, help="name of the new model")
    p.add_argument("--steps", type=int, help="generator steps (default: the quick preset)")
    p.add_argument("--batch", type=int, help="images per step (default 16)")
    p.add_argument("--loss", choices=["logistic", "hinge", "wgan-gp"], default="logistic",
                   help="logistic = non-saturating with R1 (default)")
    p.add_argument("--lr", type=float, default=2e-4, help="Adam learning rate (default 2e-4)")
    p.add_argument("--augment", choices=["auto", "on", "off"], default="auto",
                   help="DiffAugment: auto = on below 1,000 images")
    p.add_argument("--freeze-d", type=int, default=0, help="freeze the discriminator's first k blocks")
    p.add_argument("--freeze-g", type=int, help="freeze the generator's first k blocks")
    p.add_argument("--d-width", type=int, help="base width of a fresh discriminator")
    p.add_argument("--class", dest="class_name", help="class of a conditional base to fine-tune (default: all)")
    p.add_argument("--seed", type=int, default=0, help="seed of every random draw (default 0)")
    p.add_argument("--checkpoint-every", type=int, default=100, help="steps between checkpoints (default 100)")
    p.add_argument("--resume", action="store_true", help="continue the newest run of --out from its latest checkpoint")
    p.add_argument("--overwrite", action="store_true", help="replace an existing model called --out "
                   "(built-in models are never replaced)")
    p.set_defaults(func=cmd_finetune)

    p = sub.add_parser("metrics", help="SWD and near-copies of a model's samples against a data set",
                       description="Sliced Wasserstein distance (per pyramid level and mean) between a model's "
                                   "samples (seeds 0..N-1) and a data set, and the fraction of samples that are "
                                   "near-copies of a data-set image.")
    p.add_argument("--model", default=zoo.DEFAULT_MODEL, help="model name (see: python -m studio models)")
    p.add_argument("--data", required=True, help="data set name (see: python -m studio ingest)")
    p.add_argument("--samples", type=int, default=500, help="images to draw, seeds 0 to N-1 (default 500)")
    p.add_argument("--seed", type=int, default=0, help="seed of the SWD's patch and direction draws (default 0)")
    p.set_defaults(func=cmd_metrics)

    p = sub.add_parser("pull", help="download a model from the Hugging Face Hub",
                       description="Download config.json, model.safetensors and the card of a GAN Studio model "
                                   "repository (offline: from the local Hugging Face cache, HF_HUB_CACHE), check them "
                                   "and register the model as OWNER/NAME. A repository holding one StyleGAN2 file "
                                   "instead (.pkl or rosinality .pt) is converted as import does.")
    p.add_argument("repo", metavar="OWNER/NAME", help="the model repository")
    p.add_argument("--revision", help="branch, tag or commit (default: main)")
    p.set_defaults(func=cmd_pull)

    p = sub.add_parser("push", help="upload a model and its model card to the Hugging Face Hub",
                       description="Upload config.json, model.safetensors, a sample grid and a model card as one "
                                   "commit; the token comes from HF_TOKEN and is never stored.")
    p.add_argument("model", metavar="MODEL", help="model name (see: python -m studio models)")
    p.add_argument("--repo", required=True, metavar="OWNER/NAME", help="the model repository (created if needed)")
    p.add_argument("--private", action="store_true", help="create the repository private")
    p.add_argument("--dry-run", action="store_true", help="upload nothing: write the upload into --out")
    p.add_argument("--out", metavar="DIR", help="with --dry-run: a new or empty folder for the upload")
    p.set_defaults(func=cmd_push)

    p = sub.add_parser("import", help="turn a StyleGAN2 .pkl/.pt or a DCGAN-tutorial generator file into a model",
                       description="Convert a model file into a model folder, its layout read from its content: an "
                                   "NVIDIA StyleGAN2 training snapshot (network-snapshot-*.pkl of stylegan2-ada-pytorch "
                                   "or stylegan3, or a TensorFlow-era (G, D, Gs) pickle), read by a restricted "
                                   "unpickler that never runs the code it carries, sizes taken from its tensors; a "
                                   "rosinality/stylegan2-pytorch checkpoint (.pt with g_ema); or a PyTorch "
                                   "DCGAN-tutorial generator state dict "
                                   "(main.N.* tensors, or a checkpoint holding it as netG_state_dict), read with "
                                   "torch.load(weights_only=True).")
    p.add_argument("path", metavar="PATH", help="the .pkl, .pth, .pt or .tar file")
    p.add_argument("--name", required=True, help="name of the new model")
    p.add_argument("--resolution", type=int, metavar="R",
                   help="image side a DCGAN-tutorial generator draws (a StyleGAN2 file says its own)")
    p.add_argument("--latent", type=int, default=100, help="size of z (default 100, the tutorial's)")
    p.add_argument("--classes", help="class names of a conditional generator, in input order: a,b,c "
                                     "(a StyleGAN2 model's default to 0, 1, ...)")
    p.add_argument("--license", default="", help="licence of the weights, such as mit")
    p.add_argument("--author", default="", help="who trained the weights")
    p.add_argument("--source", default="", help="where the weights come from (default: the file name)")
    p.set_defaults(func=cmd_import)

    p = sub.add_parser("blend", help="a new model blended from two models of one architecture and size",
                       description="Blend the generator weights of models A and B (same architecture, size and "
                                   "classes) into a new model: each tensor is A + alpha * (B - A), and alpha 0 or 1 "
                                   "gives A or B exactly. --layers A-B blends only generator blocks A to B, coarse "
                                   "to fine, and takes all else from A (layer swapping): block i draws at 4*2^i px, "
                                   "so for a DCGAN block 0 is the 4x4 transposed convolution that reads z and the "
                                   "last block the one before to_rgb, and for a StyleGAN2 they are the synthesis "
                                   "blocks b4 (0), b8 (1), b16 (2), ... with their noise and toRGB. Outside the "
                                   "range, DCGAN's to_rgb and StyleGAN2's mapping network and w_avg are A's too; "
                                   "without --layers they blend like the rest. Batch-norm statistics and other "
                                   "buffers blend with their block (integer counters come from the nearer parent).")
    p.add_argument("a", metavar="A", help="parent A: the base, the model at alpha 0")
    p.add_argument("b", metavar="B", help="parent B: the model at alpha 1")
    p.add_argument("--alpha", type=float, required=True, help="from 0 (A) to 1 (B)")
    p.add_argument("--layers", metavar="A-B", help="blend generator blocks A to B only, such as 0-2 (default: all)")
    p.add_argument("--out", required=True, help="name of the new model")
    p.set_defaults(func=cmd_blend)

    p = sub.add_parser("project", help="find the latent whose image is closest to a picture (start from your image)",
                       description="Search the model's latent space for the image closest to TARGET (any picture: "
                                   "centre-cropped to a square and resized to the model's size). Writes that image "
                                   "as a PNG whose recipe holds the found latent exactly, so it replays and can be "
                                   "edited, mixed and animated like any seed's image.")
    p.add_argument("target", metavar="TARGET", help="the picture to start from (PNG, JPEG, ...)")
    p.add_argument("--model", default=zoo.DEFAULT_MODEL, help="model name (see: python -m studio models)")
    p.add_argument("--class", dest="class_name", help="hold a conditional model to this class (default: search "
                                                     "the class blend too)")
    p.add_argument("--steps", type=int, default=DEFAULT_STEPS,
                   help="optimisation steps after the short random starts (default %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="seeds the random starts and names the recipe (default 0)")
    p.add_argument("--w-plus", action="store_true", help="StyleGAN2: one w per style layer (closer, less editable)")
    p.add_argument("--out", required=True, help="the PNG to write (recipe inside)")
    p.add_argument("--json", help="also write PSNR against the target, steps and seconds as JSON")
    add_precision_argument(p)
    p.set_defaults(func=cmd_project)

    p = sub.add_parser("models", help="list the models", description="List models: resolution, classes, licence.")
    p.set_defaults(func=cmd_models)

    add_bench_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one command; bad input prints one line on stderr and returns 2."""
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except (UsageError, zoo.ModelUnavailable, ValueError) as e:  # ValueError: a request the model refuses
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
