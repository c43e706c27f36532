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


def compute(model: LoadedModel, method: str, k: int = MAX_DIRECTIONS,
            samples: int = PCA_SAMPLES) -> torch.Tensor:
    """Find ``k`` directions ``[k, z_dim]`` for ``model`` with ``method`` ("sefa" or "pca").

    Both read the layer that takes z through the generator's face: SeFa its weight, PCA its output.
    """
    z_dim = model.config.z_dim
    k = min(k, z_dim)
    if method == "sefa":
        return latent.sefa_directions(model.generator.latent_weight().cpu(), k)  # weight [z_dim, F]
    if method != "pca":
        raise ValueError(f"unknown directions method {method!r}; choose one of {', '.join(METHODS)}")
    # Sample with a fixed seed range so the directions are reproducible; the class vector is the
    # uniform blend so no single class dominates the features.
    z = latent.seed_latents(range(samples), z_dim)
    c = latent.class_vector(None, model.config.class_names).expand(samples, -1)
    device = next(model.generator.parameters()).device
    features = []
    chunk = 256
    with torch.inference_mode():
        for start in range(0, samples, chunk):
            zc, cc = z[start : start + chunk].to(device), c[start : start + chunk].to(device)
            features.append(model.generator.latent_features(zc, cc).cpu())  # [chunk, F]
    return latent.pca_directions(z, torch.cat(features), k)


def load_or_compute(model: LoadedModel, method: str) -> torch.Tensor:
    """The model's ``[MAX_DIRECTIONS, z_dim]`` directions for ``method``, computed once then cached.

    The file cache is keyed by the weights' hash, so a model folder whose weights change recomputes;
    the loaded model keeps them in memory too, since every slider move needs them.
    """
    memo_key = ("directions", method)
    if memo_key in model.memo:
        return model.memo[memo_key]
    path = model.folder / DIRECTIONS_FILE
    cached: dict[str, torch.Tensor] = {}
    if path.is_file():
        try:
            cached = load_file(str(path))
        except Exception:  # a damaged cache is only a cache: recompute it
            cached = {}
    key = f"{method}:{model.weights_sha256[:16]}"
    if key not in cached:
        cached = {k: v for k, v in cached.items() if k.endswith(model.weights_sha256[:16])}
        cached[key] = compute(model, method).contiguous()
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
