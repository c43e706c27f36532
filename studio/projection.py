"""Projection: find the latent whose image is closest to a target picture ("start from my own image").

No perceptual network can be downloaded here, so the loss is built from what ships: a Laplacian-pyramid
L1 (pixels at every scale), structural similarity (SSIM, Gaussian window) and, where the model folder
keeps its discriminator, the distance between the discriminator's features of both images. A DCGAN
searches z (and, for a conditional model with no class given, class weights as softmax logits); a
StyleGAN2 searches w (or W+, one w per style layer) from the mean style plus a little noise. Several
short random starts run side by side in one batch; the best is then continued.
"""

from __future__ import annotations

import copy
import io
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps, UnidentifiedImageError
from safetensors.torch import load_file
from torch import nn

from studio import latent
from studio.media import to_uint8
from studio.models.folder import DISCRIMINATOR_FILE, build_discriminator
from studio.recipe import Latent, Recipe
from studio.sampling import styled
from studio.zoo import LoadedModel

DEFAULT_STEPS = 150
DEFAULT_STARTS = 6
MAX_STEPS = 5000
MAX_TARGET_BYTES = 50 * 1024 * 1024
LR = 0.08  # Adam's step on z (unit normal) and on w offsets counted in w's own spread
D_FEATURE_WEIGHT = 0.5
Z_NORM_WEIGHT = 0.05  # keeps z near the prior's shell, where the generator was trained

Progress = Callable[[int, int, np.ndarray, float], None]


class ProjectionError(ValueError):
    """A target or setting projection cannot use; the message says why in one sentence."""


@dataclass(frozen=True)
class Projection:
    """What a projection found.

    Attributes:
        latent: z ``[z_dim]`` (DCGAN), w ``[w_dim]`` or W+ ``[L, w_dim]`` (StyleGAN2), float32 on the CPU.
        classes: The class blend ``{name: weight}`` (conditional DCGAN); empty otherwise.
        loss: The best loss reached.
        steps: Optimisation steps taken on the kept start (short starts not counted).
        stopped: Whether the artist stopped it early.
    """

    latent: torch.Tensor
    classes: dict[str, float]
    loss: float
    steps: int
    stopped: bool

    def recipe(self, model: LoadedModel, seed: int = 0) -> Recipe:
        """The recipe that draws the found image (``seed`` only names it: the latent replaces its draw)."""
        return Recipe(model.name, model.weights_sha256, seed, dict(self.classes), latent=Latent.of(self.latent))


def load_target(source: Path | bytes, resolution: int) -> np.ndarray:
    """A picture as the model's ``[R, R, 3]`` uint8 target: EXIF-upright, alpha on white, centre square, resized.

    Raises:
        ProjectionError: The file cannot be read or is not an image.
    """
    try:
        data = source if isinstance(source, bytes) else Path(source).read_bytes()
    except OSError as e:
        raise ProjectionError(f"cannot read the picture {source}: {e.strerror or e}") from None
    if len(data) > MAX_TARGET_BYTES:
        raise ProjectionError(f"the picture is over {MAX_TARGET_BYTES // 2**20} MB; use a smaller file")
    try:
        with Image.open(io.BytesIO(data)) as im:
            im = ImageOps.exif_transpose(im)
            im.load()
            rgba = im.convert("RGBA")
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, Image.DecompressionBombError):
        raise ProjectionError("the file is not a picture the studio can read (try a PNG or JPEG)") from None
    flat = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    flat.alpha_composite(rgba)  # transparent parts become white, not the black of their hidden colour
    side = min(flat.size)
    left, top = (flat.width - side) // 2, (flat.height - side) // 2
    square = flat.crop((left, top, left + side, top + side)).convert("RGB")
    return np.asarray(square.resize((resolution, resolution), Image.Resampling.LANCZOS), dtype=np.uint8)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """Peak signal-to-noise ratio of two uint8 images in dB (higher is closer; identical gives inf)."""
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(255.0**2 / mse)


def _gaussian(size: int, sigma: float = 1.5) -> torch.Tensor:
    x = torch.arange(size, dtype=torch.float32) - (size - 1) / 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    return g / g.sum()


def ssim(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Structural similarity (Wang et al. 2004) of images in [0, 1] ``[N, C, H, W]``, one value per image."""
    size = min(11, x.shape[-1] - (1 - x.shape[-1] % 2))  # an odd window no wider than a tiny image
    n, channels = x.shape[:2]
    # The five local statistics blurred in one pass, with the Gaussian split into a row and a column
    # filter: on a CPU that is ~10x faster than five full 11x11 depthwise convolutions, backward included.
    maps = torch.cat([x, y, x * x, y * y, x * y], 1)
    g = _gaussian(size).to(x)
    k = 5 * channels
    blurred = F.conv2d(F.conv2d(maps, g.view(1, 1, 1, size).repeat(k, 1, 1, 1), groups=k),
                       g.view(1, 1, size, 1).repeat(k, 1, 1, 1), groups=k)
    mx, my, xx, yy, xy = blurred.split(channels, 1)
    vx, vy, cxy = xx - mx**2, yy - my**2, xy - mx * my
    c1, c2 = 0.01**2, 0.03**2
    s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2))
    return s.reshape(n, -1).mean(1)


def pyramid_l1(x: torch.Tensor, y: torch.Tensor, levels: int = 4) -> torch.Tensor:
    """L1 between the Laplacian pyramids of ``x`` and ``y``, one value per image: every scale counts alike."""
    total = x.new_zeros(len(x))
    for _ in range(levels):
        if x.shape[-1] < 4:
            break
        dx, dy = F.avg_pool2d(x, 2), F.avg_pool2d(y, 2)
        up = lambda t: F.interpolate(t, scale_factor=2, mode="bilinear", align_corners=False)  # noqa: E731
        total = total + ((x - up(dx)) - (y - up(dy))).abs().flatten(1).mean(1)
        x, y = dx, dy
    return total + (x - y).abs().flatten(1).mean(1)


class _Features:
    """The discriminator's block outputs for a batch of images, caught by forward hooks on its face's blocks."""

    def __init__(self, d: nn.Module) -> None:
        self.d = d
        self.caught: list[torch.Tensor] = []
        for block in d.freezable_blocks():
            block.register_forward_hook(lambda _m, _i, out: self.caught.append(out))

    def __call__(self, images: torch.Tensor, c: torch.Tensor | None) -> list[torch.Tensor]:
        """Each block's features of ``images`` (and class vectors ``c``), batched along the first dimension.

        One image per pass: a StyleGAN2 discriminator's minibatch-stddev layer mixes the images of a batch
        (and needs whole groups), and one start's features must not depend on the other starts.
        """
        per_image = []
        for i in range(len(images)):
            self.caught = []
            self.d(images[i : i + 1], None if c is None else c[i : i + 1])
            per_image.append(self.caught)
        return [torch.cat(parts) for parts in zip(*per_image)]


def _discriminator(model: LoadedModel, device: torch.device) -> _Features | None:
    """The model's own discriminator as a feature extractor, or None when its folder keeps none."""
    path = model.folder / DISCRIMINATOR_FILE
    if not path.is_file():
        return None
    d = build_discriminator(model.config)
    d.load_state_dict(load_file(str(path)))
    return _Features(d.to(device).eval().requires_grad_(False))


def project(model: LoadedModel, target: np.ndarray, *, steps: int = DEFAULT_STEPS, starts: int = DEFAULT_STARTS,
            class_name: str | None = None, seed: int = 0, w_plus: bool = False,
            progress: Progress | None = None, should_stop: Callable[[], bool] = lambda: False,
            every: int = 10) -> Projection:
    """Search ``model``'s latent space for ``target`` (``[R, R, 3]`` uint8 at the model's resolution).

    Args:
        steps: Steps of the kept start after the short starts (each ``max(steps // 10, 1)`` steps).
        starts: How many random starts run side by side before the best is continued.
        class_name: Hold a conditional model to this class; None searches the class blend too (DCGAN).
        seed: Seeds the random starts, so one seed gives one search.
        w_plus: StyleGAN2 only: one w per style layer (closer fits, less editable) instead of one w.
        progress: Called every ``every`` steps and at the end with (step, total, best image, best loss).
        should_stop: Polled every step; when true the search ends, keeping the best so far.

    Raises:
        ProjectionError: Settings or a target the model cannot use.
    """
    config = model.config
    if not 1 <= steps <= MAX_STEPS or not 1 <= starts <= 64:
        raise ProjectionError(f"steps must be 1-{MAX_STEPS} and starts 1-64, not {steps} and {starts}")
    if target.shape != (config.resolution, config.resolution, 3) or target.dtype != np.uint8:
        raise ProjectionError(f"the target must be {config.resolution}x{config.resolution} RGB; load it with load_target")
    if w_plus and not styled(model):
        raise ProjectionError(f"model {model.name!r} has no style layers: W+ needs a StyleGAN model")
    if class_name is not None and class_name not in config.class_names:
        known = ", ".join(config.class_names) or "none (the model is unconditional)"
        raise ProjectionError(f"unknown class {class_name!r} for {model.name}; classes: {known}")
    device = next(model.generator.parameters()).device
    # A private fp32 copy with frozen weights: the engine may be drawing with the shared module in its
    # worker thread (perhaps in fp16), and gradients here must reach the latent alone, never its weights.
    g = copy.deepcopy(model.generator).float().eval().requires_grad_(False)
    search = _Search(model, g, device, starts, class_name, seed, w_plus)
    goal = torch.from_numpy(target.copy()).permute(2, 0, 1)[None].float().div(127.5).sub(1).to(device)
    feats = _discriminator(model, device)
    goal_feats = None
    if feats is not None:
        with torch.no_grad():
            goal_feats = feats(goal, search.d_classes(1))

    def losses(images: torch.Tensor) -> torch.Tensor:
        x, y = images.clamp(-1, 1), goal.expand_as(images)
        loss = pyramid_l1(x, y) + (1 - ssim((x + 1) / 2, (y + 1) / 2))
        if feats is not None:
            got = feats(x, search.d_classes(len(x)))
            loss = loss + D_FEATURE_WEIGHT * sum(((a - b).abs().flatten(1).mean(1) / (b.abs().mean() + 1e-8))
                                                 for a, b in zip(got, goal_feats)) / len(got)
        return loss + search.regulariser()

    start_steps = max(steps // 10, 1)
    total = start_steps + steps
    best_loss, best_image, best_state, stopped, done = math.inf, None, (), False, 0
    for phase, n_steps in enumerate((start_steps, steps)):
        opt = torch.optim.Adam(search.params(), lr=LR)
        for i in range(n_steps):
            if done and should_stop():  # after one step at least, so there is a best to keep
                stopped = True
                break
            with torch.enable_grad():  # a UI callback may run under no_grad
                images = search.images()
                loss = losses(images)
                opt.zero_grad()
                loss.sum().backward()  # the starts are independent: each row's gradient is its own loss's
            loss, images = loss.detach(), images.detach()
            row = int(loss.argmin())
            if float(loss[row]) < best_loss:
                best_loss, best_state, best_image = float(loss[row]), search.snapshot(row), images[row]
            if phase == 1:  # cosine decay on the kept start: fine detail arrives in the last steps
                opt.param_groups[0]["lr"] = LR * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * i / n_steps)))
            opt.step()
            done += 1
            if progress is not None and done % every == 0:
                progress(done, total, to_uint8(best_image[None])[0], best_loss)
        if stopped:
            break
        if phase == 0:  # continue the best start from its best moment, alone
            search.restore(best_state)
            search.keep(0)
    search.restore(best_state)
    result = search.result(best_loss, max(done - start_steps, 0), stopped)
    if progress is not None:
        progress(done, total, to_uint8(best_image[None])[0], best_loss)
    return result


class _Search:
    """The variables of one search (a batch of starts) and how they make images."""

    def __init__(self, model: LoadedModel, g: nn.Module, device: torch.device, starts: int,
                 class_name: str | None, seed: int, w_plus: bool) -> None:
        self.model, self.g, self.device, self.w_plus = model, g, device, w_plus
        names = model.config.class_names
        rng = torch.Generator().manual_seed(seed)
        self.fixed_c = latent.class_vector(class_name, names).to(device) if names and class_name else None
        self.logits = None
        if styled(model):
            with torch.no_grad():
                z = torch.randn(512, model.config.z_dim, generator=rng).to(device)
                c = None if not names else self.d_classes(512)
                w = g.styles(z, c, 1.0)[:, 0].float()
            self.w_avg, self.w_std = g.styles(z[:1], None if c is None else c[:1], 0.0)[0, 0].float().detach(), w.std(0)
            shape = (starts, g.num_style_layers, w.shape[1]) if w_plus else (starts, w.shape[1])
            self.x = (0.1 * torch.randn(shape, generator=rng)).to(device).requires_grad_(True)
        else:
            self.x = torch.randn(starts, model.config.z_dim, generator=rng).to(device).requires_grad_(True)
            if names and class_name is None:
                self.logits = (0.5 * torch.randn(starts, len(names), generator=rng)).to(device).requires_grad_(True)

    def params(self) -> list[torch.Tensor]:
        """The tensors the optimiser moves."""
        return [self.x] if self.logits is None else [self.x, self.logits]

    def classes(self, n: int) -> torch.Tensor | None:
        """The DCGAN's class vectors for ``n`` images (None: unconditional)."""
        if self.fixed_c is not None:
            return self.fixed_c.expand(n, -1)
        return None if self.logits is None else self.logits.softmax(1)

    def d_classes(self, n: int) -> torch.Tensor | None:
        """Class vectors for the discriminator (and a style model's mapping): the held class or the uniform blend."""
        names = self.model.config.class_names
        if not names:
            return None
        c = self.fixed_c if self.fixed_c is not None else latent.class_vector(None, names).to(self.device)
        return c.expand(n, -1)

    def styles(self) -> torch.Tensor:
        """The style model's per-layer styles ``[N, L, w_dim]`` of the current variables."""
        w = self.w_avg + self.w_std * self.x
        return w if self.w_plus else w[:, None].expand(-1, self.g.num_style_layers, -1)

    def images(self) -> torch.Tensor:
        """The images of every start ``[N, C, R, R]`` in [-1, 1]."""
        if styled(self.model):
            return self.g.draw(self.styles())
        return self.g.draw(self.x, self.classes(len(self.x)))

    def regulariser(self) -> torch.Tensor:
        """A DCGAN's pull of each z toward the prior's shell (|z|^2 ~ z_dim); none for styles."""
        if styled(self.model):
            return self.x.new_zeros(len(self.x))
        return Z_NORM_WEIGHT * (self.x.pow(2).mean(1) - 1).pow(2)

    def snapshot(self, row: int) -> tuple[torch.Tensor, ...]:
        """Start ``row``'s variables, copied."""
        return tuple(p[row : row + 1].detach().clone() for p in self.params())

    def restore(self, state: tuple[torch.Tensor, ...]) -> None:
        """Set the variables to one start's ``state`` (from ``snapshot``)."""
        with torch.no_grad():
            for p, s in zip(self.params(), state):
                p.copy_(s.expand_as(p))

    def keep(self, row: int) -> None:
        """Narrow the batch to start ``row`` alone."""
        self.x = self.x[row : row + 1].detach().clone().requires_grad_(True)
        if self.logits is not None:
            self.logits = self.logits[row : row + 1].detach().clone().requires_grad_(True)

    def result(self, loss: float, steps: int, stopped: bool) -> Projection:
        """The first start's variables as a ``Projection``."""
        names = self.model.config.class_names
        with torch.no_grad():
            if styled(self.model):
                found = (self.w_avg + self.w_std * self.x[0]).float().cpu()
                classes = {}
            else:
                found = self.x[0].float().cpu()
                c = self.classes(1)
                classes = {} if c is None else {n: float(v) for n, v in zip(names, c[0].float().cpu()) if float(v) > 0}
        return Projection(found.clone(), classes, loss, steps, stopped)
