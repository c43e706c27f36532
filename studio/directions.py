"""A model's semantic directions (SeFa or GANSpace PCA), cached in its model folder with slider names."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from studio import latent
from studio.storage import atomic_write, atomic_write_bytes
from studio.zoo import LoadedModel

METHODS = ("sefa", "pca")
MAX_DIRECTIONS = 20
PCA_SAMPLES = 1024
DIRECTIONS_FILE = "directions.safetensors"
NAMES_FILE = "sliders.json"


def compute(model: LoadedModel, method: str, k: int = MAX_DIRECTIONS, samples: int = PCA_SAMPLES,
            layers: tuple[int, int] | None = None) -> torch.Tensor:
    """Find ``k`` directions ``[k, D]`` in ``model``'s latent (z, or W for a style family) with ``method``.

    Both read the layers that take the latent through the generator's face: SeFa their weights (of
    style ``layers`` only, when given), PCA their output. Each direction is scaled to one slider unit
    (``direction_units``): z's standard deviation for DCGAN, the spread of w along it in W.
    """
    if method not in METHODS:
        raise ValueError(f"unknown directions method {method!r}; choose one of {', '.join(METHODS)}")
    # Sample with a fixed seed range so the directions are reproducible; the class vector is the
    # uniform blend so no single class dominates the features.
    z = latent.seed_latents(range(samples), model.config.z_dim)
    c = latent.class_vector(None, model.config.class_names).expand(samples, -1)
    device = next(model.generator.parameters()).device
    generator = model.generator
    with torch.inference_mode():
        if method == "sefa":
            weight = generator.latent_weight(layers).cpu()  # [D, F]
            dirs = latent.sefa_directions(weight, min(k, len(weight)))
        else:
            features = [generator.latent_features(z[i : i + 256].to(device), c[i : i + 256].to(device)).cpu()
                        for i in range(0, samples, 256)]  # [N, F], a chunk at a time
            dirs = latent.pca_directions(_latents_pca_reads(model, z, c), torch.cat(features), k)
        units = generator.direction_units(dirs.to(device), z.to(device), c.to(device)).cpu()
    return dirs * units[:, None]


def _latents_pca_reads(model: LoadedModel, z: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """The latents PCA regresses its components onto: z itself, or w (the features) for a style family."""
    if not model.generator.num_style_layers:
        return z
    device = next(model.generator.parameters()).device
    return torch.cat([model.generator.latent_features(z[i : i + 256].to(device), c[i : i + 256].to(device)).cpu()
                      for i in range(0, len(z), 256)])


def load_or_compute(model: LoadedModel, method: str, layers: tuple[int, int] | None = None) -> torch.Tensor:
    """The model's ``[MAX_DIRECTIONS, D]`` directions for ``method`` (SeFa: of style ``layers``), computed
    once then cached.

    The file cache is keyed by the weights' hash, so a model folder whose weights change recomputes;
    the loaded model keeps them in memory too, since every slider move needs them.
    """
    # PCA's directions are the same for every layer range; only where they are added differs.
    scope = f"{layers[0]}-{layers[1]}" if layers is not None and method == "sefa" else ""
    memo_key = ("directions", method, scope)
    if memo_key in model.memo:
        return model.memo[memo_key]
    path = model.folder / DIRECTIONS_FILE
    cached: dict[str, torch.Tensor] = {}
    if path.is_file():
        try:
            cached = load_file(str(path))
        except Exception:  # a damaged cache is only a cache: recompute it
            cached = {}
    key = f"{method}{'@' + scope if scope else ''}:{model.weights_sha256[:16]}"
    if key not in cached:
        cached = {k: v for k, v in cached.items() if k.endswith(model.weights_sha256[:16])}
        cached[key] = compute(model, method, layers=layers).contiguous()
        atomic_write(path, lambda tmp: save_file(cached, str(tmp)))
    model.memo[memo_key] = cached[key]
    return cached[key]


def slider_names(folder: Path, method: str, k: int) -> list[str]:
    """The artist's names for the first ``k`` sliders of ``method`` (defaults: "direction N")."""
    names: dict[str, dict[str, str]] = {}
    path = Path(folder) / NAMES_FILE
    if path.is_file():
        try:
            names = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError):
            names = {}
    chosen = names.get(method, {})
    return [chosen.get(str(i), f"direction {i}") for i in range(k)]


def rename_slider(folder: Path, method: str, index: int, name: str) -> None:
    """Save ``name`` for slider ``index`` of ``method`` in the model folder (an empty name resets it)."""
    path = Path(folder) / NAMES_FILE
    try:
        names = json.loads(path.read_text()) if path.is_file() else {}
    except (json.JSONDecodeError, UnicodeDecodeError):
        names = {}
    method_names = names.setdefault(method, {})
    name = name.strip()[:60]
    if name:
        method_names[str(index)] = name
    else:
        method_names.pop(str(index), None)
    atomic_write_bytes(path, (json.dumps(names, indent=2, ensure_ascii=False) + "\n").encode())
