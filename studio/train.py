"""The fine-tuning loop: losses, DiffAugment, EMA, freezing, checkpoints, exact resume, data parallel.

``finetune(config, images, progress_fn, should_stop)`` trains a generator (from a zoo model, or from
scratch with base "none") against a discriminator on an artist's image set. Everything random is drawn
from seeded generators whose states are checkpointed, so on the CPU a resumed run continues exactly
as an uninterrupted one would. Run under ``torchrun`` it trains data-parallel: each process takes its
share of every batch and only rank 0 writes files.
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
import os
import secrets
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from studio import latent, precision, zoo
from studio.augment import POLICIES, diff_augment
from studio.media import to_uint8
from studio.models.folder import (
    DISCRIMINATOR_FILE,
    ModelConfig,
    ModelFolderError,
    build_discriminator,
    build_generator,
    save_pretrained,
)
from studio.storage import MAX_NAME_LENGTH, atomic_write, check_name, runs_dir, swap_dir

LOSSES = ("logistic", "hinge", "wgan-gp")
PREVIEW_SEEDS = tuple(range(8))
AUGMENT_BELOW = 1000  # DiffAugment is on by default for sets smaller than this

# The quick preset is sized to finish within 10 minutes on a 2-core CPU at 128 px: a half-width
# fresh discriminator costs about a quarter of a full one, and freezing the generator's two coarsest
# freezable_blocks() keeps the base model's coarse structure while the later ones learn the artist's style.
QUICK_PRESET = {"steps": 600, "batch": 16, "d_width": 32, "freeze_g": 2}
# Limits of one run, so a typo (or a visitor) cannot book the machine for days: 20,000 steps is about
# 3.5 hours at the quick preset's 0.63 s/step on a 2-core CPU; batch 64 at 128 px fits in 4 GB.
MAX_STEPS = 20_000
MAX_BATCH = 64
TIMING_IMAGES = 4  # the synthetic set a step is timed on (time_steps)
PROBE_BATCH = 1  # the images of the first timed steps, few so that a slow model answers in one image's time
# Runs whose step is estimated slower than this are not timed at their batch: two such steps would keep
# the artist waiting a minute or more (a 256 px StyleGAN2 on a CPU takes minutes per step of 16).
TIME_AT_BATCH_BELOW_S = 10.0

ProgressFn = Callable[[int, int, dict[str, float], "np.ndarray | None"], None]


@dataclass(frozen=True)
class TrainConfig:
    """A fine-tuning run.

    Attributes:
        data: Dataset name (under ``STUDIO_HOME/datasets``), recorded in the lineage.
        out: Name of the model folder to create under ``STUDIO_HOME/models``.
        run: The run's own folder name under ``STUDIO_HOME/runs`` (a job's id); "" = a new one per run.
        overwrite: Replace an existing model called ``out`` (built-in models are never replaced).
        base: Zoo model to start from, or "none" to train from scratch.
        steps: Generator steps.
        batch: Images per step (split across processes under torchrun).
        loss: "logistic" (non-saturating, with R1), "hinge", or "wgan-gp".
        lr: Adam learning rate of both networks.
        betas: Adam betas.
        r1_gamma: R1 penalty weight (logistic loss), applied lazily every ``r1_every`` steps.
        r1_every: Steps between R1 penalties (lazy regularisation, StyleGAN2).
        gp_weight: Gradient-penalty weight (wgan-gp).
        augment: "auto" (on below 1,000 images), "on" or "off".
        augment_policy: DiffAugment transforms.
        ema_beta: Generator EMA decay per step (warmed up over the first steps).
        freeze_d: Freeze the first k of the discriminator's ``freezable_blocks()`` (FreezeD), when it is
            pretrained.
        freeze_g: Freeze the first k of the generator's ``freezable_blocks()``.
        d_width: Channels of a fresh discriminator's image-side block, the others in proportion (default:
            the base model's discriminator, pretrained when its folder has one). A narrowed discriminator
            is not kept in the published model folder, which keeps only one that fits its config.
        class_name: Class vector for a conditional base; None = the uniform blend.
        resolution: Resolution of a from-scratch generator (base "none").
        seed: Seeds every random draw.
        checkpoint_every: Steps between checkpoints.
        keep_checkpoints: How many recent checkpoints to keep.
        preview_every: Steps between previews sent to ``progress_fn``.
    """

    data: str
    out: str
    run: str = ""
    overwrite: bool = False
    base: str = zoo.DEFAULT_MODEL
    steps: int = 500
    batch: int = 16
    loss: str = "logistic"
    lr: float = 2e-4
    betas: tuple[float, float] = (0.5, 0.999)
    r1_gamma: float = 1.0
    r1_every: int = 4
    gp_weight: float = 10.0
    augment: str = "auto"
    augment_policy: tuple[str, ...] = POLICIES
    ema_beta: float = 0.995
    freeze_d: int = 0
    freeze_g: int = 0
    d_width: int | None = None
    class_name: str | None = None
    resolution: int = 64
    seed: int = 0
    checkpoint_every: int = 100
    keep_checkpoints: int = 3
    preview_every: int = 25

    def __post_init__(self) -> None:
        if self.loss not in LOSSES:
            raise ValueError(f"unknown loss {self.loss!r}; choose one of {', '.join(LOSSES)}")
        if self.augment not in ("auto", "on", "off"):
            raise ValueError(f"augment must be auto, on or off, not {self.augment!r}")
        check_name(self.out, "model")
        if self.run:
            check_name(self.run, "run")
        if self.steps < 1 or self.batch < 1 or self.checkpoint_every < 1 or self.keep_checkpoints < 1:
            raise ValueError("steps, batch, checkpoint_every and keep_checkpoints must be at least 1")
        if self.steps > MAX_STEPS or self.batch > MAX_BATCH:
            raise ValueError(f"a run takes at most {MAX_STEPS:,} steps and {MAX_BATCH} images per step")
        if not (math.isfinite(self.lr) and 0 < self.lr <= 1):
            raise ValueError(f"the learning rate must be a number above 0 and at most 1, not {self.lr}")
        object.__setattr__(self, "betas", tuple(self.betas))
        object.__setattr__(self, "augment_policy", tuple(self.augment_policy))

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        """Rebuild from ``asdict`` output (JSON turns tuples into lists; ``__post_init__`` turns them back)."""
        return cls(**d)


@dataclass
class TrainResult:
    """How a run ended: ``finished`` or ``stopped`` (``should_stop``), at which step, and where things are."""

    status: str
    step: int
    run_dir: Path
    model_dir: Path | None
    losses: dict[str, float]


def scratch_config(config: TrainConfig) -> ModelConfig:
    """The model config of a generator trained from scratch (base "none"): an unconditional DCGAN."""
    arch = {"resolution": config.resolution, "z_dim": 100, "base_width": 64, "num_classes": 0}
    return ModelConfig("dcgan", arch, title=config.out)


def run_dir(run: str) -> Path:
    """Where run ``run`` keeps its checkpoints: ``STUDIO_HOME/runs/<run>``."""
    return runs_dir() / run


def new_run(config: TrainConfig) -> TrainConfig:
    """``config`` with a run folder of its own (unless it names one), so two runs never share checkpoints.

    The run is named after the model, cut short where needed so that the name stays a usable one.
    """
    if config.run:
        return config
    suffix = f"-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(3)}"
    return replace(config, run=config.out[: MAX_NAME_LENGTH - len(suffix)] + suffix)


def latest_run(out: str) -> str | None:
    """The newest run that makes model ``out`` and has a checkpoint (what ``--resume`` continues)."""
    found = []
    for checkpoint in runs_dir().glob("*/checkpoints/step-*.safetensors"):
        if checkpoint_config(checkpoint).get("out") == out:
            found.append((checkpoint.stat().st_mtime, checkpoint.parents[1].name))
    return max(found)[1] if found else None


def checkpoint_config(path: Path) -> dict[str, Any]:
    """The training config stored in checkpoint ``path``, read from its header alone."""
    with safe_open(str(path), framework="pt") as f:
        return json.loads((f.metadata() or {}).get("json", "{}")).get("config", {})


def save_training_state(path: Path, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    """Write tensors and JSON-able metadata as one safetensors file, atomically (a checkpoint)."""
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    header = {"json": json.dumps(meta)}
    atomic_write(Path(path), lambda tmp: save_file(tensors, str(tmp), metadata=header))


def load_training_state(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read a ``save_training_state`` file: its tensors and metadata.

    Raises:
        ModelFolderError: The file is missing or damaged.
    """
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = json.loads((f.metadata() or {}).get("json", "{}"))
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:  # safetensors raises its own error types for damaged files
        raise ModelFolderError(f"{path} is not a readable training state: {e}") from None
    return tensors, meta


# -- distributed ---------------------------------------------------------------------------------


def _world() -> tuple[int, int]:
    """(rank, world size); initialises the process group when launched by torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return (dist.get_rank(), world) if world > 1 else (0, 1)


def _device(rank: int) -> torch.device:
    if torch.cuda.is_available() and os.environ.get("STUDIO_DEVICE", "cuda").startswith("cuda"):
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", rank)) % torch.cuda.device_count())
    return torch.device("cpu")


# -- losses ----------------------------------------------------------------------------------------


def d_loss(kind: str, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """Discriminator loss from its logits on real and generated images."""
    if kind == "logistic":
        return (F.softplus(-real) + F.softplus(fake)).mean()
    if kind == "hinge":
        return (F.relu(1 - real) + F.relu(1 + fake)).mean()
    return (fake - real).mean()  # wgan-gp; the penalty is added separately


def g_loss(kind: str, fake: torch.Tensor) -> torch.Tensor:
    """Generator loss from the discriminator's logits on generated images."""
    return F.softplus(-fake).mean() if kind == "logistic" else -fake.mean()


def gradient_norms(d: nn.Module, x: torch.Tensor, c: torch.Tensor | None) -> torch.Tensor:
    """Per-sample L2 norm of dD/dx, kept in the graph so a penalty on it can be trained ``[N]``."""
    x = x.detach().requires_grad_(True)
    (grad,) = torch.autograd.grad(d(x, c).sum(), x, create_graph=True)
    return grad.flatten(1).norm(dim=1)


# -- the run ---------------------------------------------------------------------------------------


class Run:
    """The state of one training run (networks, optimisers, random generators) and its steps."""

    def __init__(self, config: TrainConfig, images: torch.Tensor, precision_mode: str | None = None) -> None:
        """Build the networks and optimisers.

        Args:
            config: The run's settings.
            images: The data set ``[N, 3, R, R]`` in [-1, 1], on the CPU.
            precision_mode: "auto", "exact" or "fast" (see ``precision.for_training``); None reads
                ``$STUDIO_PRECISION``.
        """
        self.config = config
        self.rank, self.world = _world()
        self.device = _device(self.rank)
        self.images = images  # [N, 3, R, R] in [-1, 1], on the CPU
        torch.manual_seed(config.seed + self.rank)  # dropout draws from the global generator
        self.gen = torch.Generator().manual_seed(config.seed)  # batches and latents, same on every rank
        self.aug_gen = torch.Generator(self.device).manual_seed(config.seed * 1000 + 7 + self.rank)
        self.model_config, g, d, self.d_origin = self._networks(images.shape[-1])
        self.g = g.to(self.device).train()
        self.d = d.to(self.device).train()
        self.g_ema = copy.deepcopy(self.g).eval().requires_grad_(False)
        for module, k in ((self.d, config.freeze_d), (self.g, config.freeze_g)):
            for part in module.freezable_blocks()[:k]:
                part.requires_grad_(False)
        self.g_train, self.d_train = self._parallel(self.g), self._parallel(self.d)
        trainable = lambda m: [p for p in m.parameters() if p.requires_grad]  # noqa: E731
        self.opt_g = torch.optim.Adam(trainable(self.g), lr=config.lr, betas=config.betas)
        self.opt_d = torch.optim.Adam(trainable(self.d), lr=config.lr, betas=config.betas)
        self.augment = config.augment == "on" or (config.augment == "auto" and len(images) < AUGMENT_BELOW)
        names = self.model_config.class_names
        self.c = latent.class_vector(config.class_name, names) if self.model_config.num_classes else None
        # bf16 autocast where the device has it natively (no loss scaling needed), fp32 master weights, losses
        # and R1 penalty; fp32 throughout elsewhere (bf16 is emulated, and far slower, on AVX2-only CPUs).
        self.precision = precision.for_training(self.device, precision_mode)
        self.step = 0

    def _networks(self, resolution: int) -> tuple[ModelConfig, nn.Module, nn.Module, str]:
        """The model's config, its generator, the discriminator and where that came from (for the lineage)."""
        cfg = self.config
        if cfg.base == "none":
            model_config = scratch_config(cfg)
            g = build_generator(model_config)
            d_state = None
        else:
            base = zoo.load(cfg.base)
            model_config, g = base.config, base.generator
            d_file = base.folder / DISCRIMINATOR_FILE
            d_state = load_file(str(d_file)) if d_file.is_file() and cfg.d_width is None else None
        if model_config.resolution != resolution:
            raise ValueError(f"the data set {cfg.data!r} is {resolution}px but the model {cfg.base!r} draws "
                             f"{model_config.resolution}px: ingest it at {model_config.resolution}")
        if cfg.d_width:
            with torch.device("meta"):  # only its family and shape matter: never filled
                full = build_discriminator(model_config)
            d, origin = full.with_width(cfg.d_width), f"fresh, {cfg.d_width} channels wide"
        else:
            d, origin = build_discriminator(model_config), "fresh"
        if d_state is not None:
            d.load_state_dict(d_state)
            origin = f"pretrained, from {cfg.base}"
        elif cfg.freeze_d:
            raise ValueError("freeze_d needs a pretrained discriminator; this base model has none")
        d.check_batch(len(range(self.rank, cfg.batch, self.world)))  # this process's share of a batch
        return model_config, g, d, origin

    def _parallel(self, module: nn.Module) -> nn.Module:
        if self.world == 1:
            return module
        ids = [self.device.index] if self.device.type == "cuda" else None
        # Buffers (batch-norm statistics) stay per process: syncing them on every forward would modify
        # them in place between the passes that R1's double backward needs.
        return nn.parallel.DistributedDataParallel(module, device_ids=ids, forward_sync_buffers=False)

    def _ctx(self) -> contextlib.AbstractContextManager:
        return precision.autocast(self.device, self.precision.dtype)

    def _aug(self, x: torch.Tensor) -> torch.Tensor:
        return diff_augment(x, self.config.augment_policy, self.aug_gen) if self.augment else x

    def _batch(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """This process's share of a step's real images and latents (drawn for the whole batch)."""
        cfg = self.config
        idx = torch.randint(len(self.images), (cfg.batch,), generator=self.gen)[self.rank :: self.world]
        z = torch.randn(cfg.batch, self.model_config.z_dim, generator=self.gen)[self.rank :: self.world]
        c = None if self.c is None else self.c.expand(len(z), -1).to(self.device)
        return self.images[idx].to(self.device), z.to(self.device), c

    def train_step(self) -> dict[str, float]:
        """One discriminator step and one generator step; returns the losses."""
        cfg = self.config
        real, z, c = self._batch()
        with self._ctx():
            with torch.no_grad():
                fake = self.g_train(z, c)
            loss_d = d_loss(cfg.loss, self.d_train(self._aug(real), c).float(), self.d_train(self._aug(fake), c).float())
        losses = {"d": loss_d.item()}
        if cfg.loss == "logistic" and self.step % cfg.r1_every == 0:
            r1 = gradient_norms(self.d_train, self._aug(real), c).square().mean()
            loss_d = loss_d + r1 * (cfg.r1_gamma / 2 * cfg.r1_every)
            losses["r1"] = r1.item()
        elif cfg.loss == "wgan-gp":
            t = torch.rand(len(real), 1, 1, 1, generator=self.aug_gen, device=self.device)
            gp = (gradient_norms(self.d_train, torch.lerp(real, fake.float(), t), c) - 1).square().mean()
            loss_d = loss_d + cfg.gp_weight * gp
            losses["gp"] = gp.item()
        self.opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        self.opt_d.step()

        with self._ctx():
            loss_g = g_loss(cfg.loss, self.d_train(self._aug(self.g_train(z, c)), c).float())
        self.opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        self.opt_g.step()
        losses["g"] = loss_g.item()
        self._update_ema()
        self.step += 1
        return losses

    @torch.no_grad()
    def _update_ema(self) -> None:
        # Warm-up: early on, follow the generator closely rather than averaging in the base weights.
        beta = min(self.config.ema_beta, (1 + self.step) / (10 + self.step))
        for p_ema, p in zip(self.g_ema.parameters(), self.g.parameters()):
            p_ema.lerp_(p, 1 - beta)
        for b_ema, b in zip(self.g_ema.buffers(), self.g.buffers()):
            b_ema.copy_(b)

    @torch.no_grad()
    def previews(self, seeds: Iterable[int] = PREVIEW_SEEDS) -> np.ndarray:
        """The EMA generator's images for fixed seeds ``[N, H, W, 3]`` uint8 (default: the preview seeds)."""
        z = latent.seed_latents(seeds, self.model_config.z_dim).to(self.device)
        c = None if self.c is None else self.c.expand(len(z), -1).to(self.device)
        return to_uint8(self.g_ema(z, c))

    # -- checkpoints -------------------------------------------------------------------------------

    def save_checkpoint(self, folder: Path) -> Path:
        """Write everything needed to continue exactly: weights, optimisers, step and RNG states."""
        tensors: dict[str, torch.Tensor] = {}
        for prefix, module in (("G", self.g), ("G_ema", self.g_ema), ("D", self.d)):
            tensors.update({f"{prefix}.{k}": v for k, v in module.state_dict().items()})
        meta: dict[str, Any] = {"step": self.step, "config": _jsonable(asdict(self.config))}
        for prefix, opt in (("opt_g", self.opt_g), ("opt_d", self.opt_d)):
            opt_tensors, opt_meta = _flatten_optimizer(opt)
            tensors.update({f"{prefix}.{k}": v for k, v in opt_tensors.items()})
            meta[prefix] = opt_meta
        tensors["rng.torch"] = torch.get_rng_state()
        tensors["rng.gen"] = self.gen.get_state()
        tensors["rng.aug"] = self.aug_gen.get_state()
        path = folder / "checkpoints" / f"step-{self.step:07d}.safetensors"
        save_training_state(path, tensors, meta)
        for old in sorted(path.parent.glob("step-*.safetensors"))[: -self.config.keep_checkpoints]:
            old.unlink(missing_ok=True)
        return path

    def load_checkpoint(self, path: Path) -> None:
        """Continue from ``save_checkpoint``'s file."""
        tensors, meta = load_training_state(path)
        for prefix, module in (("G", self.g), ("G_ema", self.g_ema), ("D", self.d)):
            module.load_state_dict({k[len(prefix) + 1 :]: v for k, v in tensors.items() if k.startswith(prefix + ".")})
        for prefix, opt in (("opt_g", self.opt_g), ("opt_d", self.opt_d)):
            opt.load_state_dict(_unflatten_optimizer(tensors, prefix, meta[prefix]))
        torch.set_rng_state(tensors["rng.torch"])
        self.gen.set_state(tensors["rng.gen"])
        self.aug_gen.set_state(tensors["rng.aug"])
        self.step = int(meta["step"])


def _jsonable(d: dict[str, Any]) -> dict[str, Any]:
    return json.loads(json.dumps(d))


def _flatten_optimizer(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """An optimiser's state dict as flat tensors plus JSON metadata (safetensors holds no nesting)."""
    sd = opt.state_dict()
    tensors = {f"{pid}.{k}": v for pid, st in sd["state"].items() for k, v in st.items() if torch.is_tensor(v)}
    scalars = {f"{pid}.{k}": v for pid, st in sd["state"].items() for k, v in st.items() if not torch.is_tensor(v)}
    return tensors, {"param_groups": _jsonable(sd["param_groups"]), "scalars": scalars}


def _unflatten_optimizer(tensors: dict[str, torch.Tensor], prefix: str, meta: dict[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        if key.startswith(prefix + "."):
            pid, name = key[len(prefix) + 1 :].split(".", 1)
            state.setdefault(int(pid), {})[name] = value
    for key, value in meta["scalars"].items():
        pid, name = key.split(".", 1)
        state.setdefault(int(pid), {})[name] = value
    groups = meta["param_groups"]
    for group in groups:
        group["betas"] = tuple(group["betas"])
    return {"state": state, "param_groups": groups}


# -- timing ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StepTiming:
    """What one training step of a run costs on this machine.

    Attributes:
        seconds: Seconds per step at the run's batch (R1 steps counted at their share where two steps
            were timed).
        device: Where the steps ran ("cpu", "cuda").
        measured_batch: The batch of the timed steps: the run's own, or ``PROBE_BATCH`` for a model too
            slow to time at its batch, whose figure is then scaled up linearly (on the high side: batching
            only makes an image cheaper).
    """

    seconds: float
    device: str
    measured_batch: int


def time_steps(config: TrainConfig) -> StepTiming:
    """Time real training steps of ``config``'s run (its model, discriminator and settings) on this machine.

    The steps train on a few random images at the model's resolution (a step's cost does not depend on
    what the images show) and write nothing. Steps of ``PROBE_BATCH`` images come first: one, which also
    warms up, and a second past the warm-up unless the first already took ``TIME_AT_BATCH_BELOW_S``.
    When they show that a step of the run's batch takes that long or more (a 256 px StyleGAN2 on a
    CPU), their figure is scaled to the batch and returned. Otherwise two steps of the run's batch are
    timed, the first with R1 (logistic loss) and the second without, and weighted as a run mixes them.

    Raises:
        ValueError: The run's model or batch does not fit (as ``Run`` says it).
    """
    resolution = config.resolution if config.base == "none" else zoo.model_config(config.base).resolution
    images = torch.rand(TIMING_IMAGES, 3, resolution, resolution, generator=torch.Generator().manual_seed(0)) * 2 - 1
    with torch.random.fork_rng(devices=[]):  # a Run seeds the global generator: the caller's draws stay its own
        probe = Run(replace(config, batch=min(config.batch, PROBE_BATCH)), images)
        probe.d.check_batch(config.batch)  # the run's own batch must fit, even when only the probe runs
        probed = _timed_step(probe)
        if probed < TIME_AT_BATCH_BELOW_S:  # cheap enough to look again: the first step carried the warm-up
            probed = min(probed, _timed_step(probe))
        scaled = probed * config.batch / probe.config.batch
        if scaled >= TIME_AT_BATCH_BELOW_S:
            return StepTiming(scaled, probe.device.type, probe.config.batch)
        run = Run(config, images)
        first, second = _timed_step(run), _timed_step(run)
    if config.loss == "logistic":
        seconds = (first + (config.r1_every - 1) * second) / config.r1_every
    else:  # every step does the same work
        seconds = (first + second) / 2
    return StepTiming(seconds, run.device.type, config.batch)


def _timed_step(run: Run) -> float:
    t0 = time.perf_counter()
    run.train_step()
    if run.device.type == "cuda":
        torch.cuda.synchronize(run.device)
    return time.perf_counter() - t0


def latest_checkpoint(run: str) -> Path | None:
    """The newest checkpoint of run ``run``, if any."""
    found = sorted((run_dir(run) / "checkpoints").glob("step-*.safetensors"))
    return found[-1] if found else None


def finetune(config: TrainConfig, images: torch.Tensor, progress_fn: ProgressFn | None = None,
             should_stop: Callable[[], bool] | None = None, resume: bool = False,
             lineage: dict[str, Any] | None = None, sample_every: int = 0,
             sample_fn: Callable[[int, np.ndarray], None] | None = None, samples: int = 64) -> TrainResult:
    """Train per ``config`` on ``images`` ``[N, 3, R, R]`` in [-1, 1].

    Args:
        config: The run.
        images: The artist's set (CPU tensor).
        progress_fn: Called as ``progress_fn(step, total, losses, previews)``; previews (``[8, H, W, 3]``
            uint8 from the EMA generator) every ``preview_every`` steps and at the end, else None.
        should_stop: Polled every step; when it returns True the run checkpoints and returns "stopped".
        resume: Continue from the latest checkpoint of run ``config.run`` (or, when that is empty, of the
            newest run that makes ``config.out``) if there is one.
        lineage: Extra facts for the model's config (e.g. the dataset's size and SWD), merged in.
        sample_every: Steps between calls of ``sample_fn`` (0 = never); it is also called at the end.
        sample_fn: Called as ``sample_fn(step, images)`` with ``samples`` EMA-generator images
            ``[samples, H, W, 3]`` uint8 (fixed seeds), e.g. to track a metric during training.
        samples: How many images ``sample_fn`` gets.

    Returns:
        How the run ended; a finished run's model folder is ``STUDIO_HOME/models/<out>``, its checkpoints
        are in ``run_dir(config.run)`` (a new run folder when ``config.run`` is empty).

    Raises:
        ValueError: ``config.out`` is a built-in model, or an existing one and ``config.overwrite`` is off
            (checked before the first step, and again before publishing).
    """
    zoo.writable_folder(config.out, config.overwrite)
    if resume and not config.run:
        config = replace(config, run=latest_run(config.out) or "")
    config = new_run(config)
    run = Run(config, images)
    folder = run_dir(config.run)
    if resume and (path := latest_checkpoint(config.run)):
        run.load_checkpoint(path)
    writer = run.rank == 0
    losses: dict[str, float] = {}
    while run.step < config.steps:
        if should_stop and should_stop():
            if writer:
                run.save_checkpoint(folder)
            return TrainResult("stopped", run.step, folder, None, losses)
        losses = run.train_step()
        if not all(math.isfinite(v) for v in losses.values()):
            raise FloatingPointError(f"training diverged at step {run.step} (losses {losses}); try a lower lr")
        last = run.step == config.steps
        if sample_fn and writer and ((sample_every and run.step % sample_every == 0) or last):
            sample_fn(run.step, run.previews(range(samples)))
        if progress_fn and writer:
            show = run.step % config.preview_every == 0 or last
            progress_fn(run.step, config.steps, losses, run.previews() if show else None)
        # After the progress report: a process killed in between then resumes from an older checkpoint
        # whose curve is complete, never from one whose last steps the curve has not recorded.
        if writer and run.step % config.checkpoint_every == 0:
            run.save_checkpoint(folder)
    if run.world > 1:
        _check_replicas(run.g)
    model_dir = None
    if writer:
        if run.step % config.checkpoint_every:
            run.save_checkpoint(folder)
        model_dir = publish(run, {**(lineage or {}), "losses": losses})
    if run.world > 1:
        dist.barrier()
    return TrainResult("finished", run.step, folder, model_dir, losses)


def _check_replicas(module: nn.Module) -> None:
    """Raise unless every process ends with the same weights: data parallelism must keep replicas equal."""
    digest = torch.stack([p.detach().double().sum() for p in module.parameters()]).cpu()
    gathered = [torch.empty_like(digest) for _ in range(dist.get_world_size())]
    dist.all_gather(gathered, digest)
    if not all(torch.allclose(g, digest, rtol=1e-9, atol=0) for g in gathered):
        raise RuntimeError("data-parallel replicas diverged: the processes ended with different weights")


def publish(run: Run, lineage: dict[str, Any]) -> Path:
    """Write the finished model folder (EMA generator, discriminator, config with lineage) atomically."""
    cfg = run.config
    base = {"base_model": cfg.base, "dataset": cfg.data, "steps": run.step, "loss": cfg.loss,
            "images": len(run.images), "augment": run.augment, "discriminator": run.d_origin}
    config = replace(run.model_config, title=cfg.out, lineage={**base, **lineage},
                     description=f"Fine-tuned from {cfg.base} on the data set {cfg.data!r} "
                                 f"({len(run.images)} images, {run.step} steps).")
    return _write_model(cfg.out, config, run.g_ema, _kept_discriminator(cfg, run.d.state_dict()), cfg.overwrite)


def _kept_discriminator(cfg: TrainConfig, d_state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor] | None:
    """The discriminator state a published model keeps: only one of its own shape, so a later fine-tune of
    that model can load it (a narrowed one, ``d_width``, does not fit the model's config)."""
    return None if cfg.d_width else d_state


def _write_model(name: str, config: ModelConfig, generator: nn.Module, d_state: dict[str, torch.Tensor] | None,
                 overwrite: bool = False) -> Path:
    """A model folder with the generator, its config and the discriminator (for later fine-tunes).

    Raises:
        ValueError: ``name`` is a built-in model, or an existing one and ``overwrite`` is off.
    """
    folder = zoo.writable_folder(name, overwrite)
    with swap_dir(folder) as tmp:
        save_pretrained(tmp, config, generator, d_state)
    return folder


@dataclass(frozen=True)
class CheckpointGenerator:
    """A checkpoint's EMA generator, with the run and model configs it belongs to and all its tensors."""

    run: TrainConfig
    model_config: ModelConfig
    generator: nn.Module
    tensors: dict[str, torch.Tensor]
    step: int


def checkpoint_generator(path: Path) -> CheckpointGenerator:
    """Rebuild the EMA generator of checkpoint ``path`` (on the CPU, in eval mode).

    Raises:
        ModelFolderError: The file is missing or damaged.
    """
    tensors, meta = load_training_state(path)
    cfg = TrainConfig.from_dict(meta["config"])
    model_config = scratch_config(cfg) if cfg.base == "none" else zoo.model_config(cfg.base)
    generator = build_generator(model_config)
    generator.load_state_dict({k[len("G_ema.") :]: v for k, v in tensors.items() if k.startswith("G_ema.")})
    return CheckpointGenerator(cfg, model_config, generator.eval(), tensors, int(meta["step"]))


def export_checkpoint(path: Path, name: str, overwrite: bool = False) -> Path:
    """Publish the EMA generator of checkpoint ``path`` as model ``name`` (a model folder), atomically.

    Raises:
        ValueError: ``name`` is a built-in model, or an existing one and ``overwrite`` is off.
    """
    zoo.writable_folder(name, overwrite)
    loaded = checkpoint_generator(path)
    cfg, model_config, tensors, step = loaded.run, loaded.model_config, loaded.tensors, loaded.step
    config = replace(model_config, title=name, lineage={"base_model": cfg.base, "dataset": cfg.data, "steps": step,
                                                        "loss": cfg.loss, "checkpoint": path.name},
                     description=f"Fine-tuned from {cfg.base} on the data set {cfg.data!r} ({step} steps).")
    d_state = {k[len("D.") :]: v for k, v in tensors.items() if k.startswith("D.")}
    return _write_model(name, config, loaded.generator, _kept_discriminator(cfg, d_state), overwrite)
