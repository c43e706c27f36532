"""Remixing models: a new model whose weights blend two models of one architecture and size.

Parent A is the base and B the other: every blended tensor is ``lerp(A, B, alpha)``, and at alpha exactly
0 or 1 the parent's own tensors are taken as they are, so the child draws that parent's pixels to the bit.
A layer range blends only those generator blocks (the face's ``freezable_blocks()``, coarse to fine: block
i draws at 4·2^i px); everything else, including the tensors outside every block (DCGAN's ``to_rgb``,
StyleGAN2's mapping network and ``w_avg``), is A's, as in layer swapping ("toonification"), which keeps the
base model's mapping so that a seed keeps its pose. Without a range every tensor blends, the mapping too.

Buffers blend with their block: batch-norm running statistics are the best guess for the blended
weights' activations, ``w_avg`` follows its mapping network, and buffers both parents share (StyleGAN2's
constant noise when both come from one base, fixed resampling filters) stay exactly as they are, since a
lerp of two equal tensors is that tensor. Integer buffers (batch-norm step counters) cannot be blended and
come from the nearer parent (A below alpha 0.5). The child keeps no discriminator: neither parent's
judges its images, so a later fine-tune of it starts a fresh one.
"""

from __future__ import annotations

import copy
import math
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from studio import zoo
from studio.models.folder import ModelConfig, build_generator, save_pretrained
from studio.zoo import LoadedModel
from studio.storage import swap_dir


def parse_layer_range(text: str) -> tuple[int, int]:
    """Generator blocks ``A-B`` (or one block ``A``) as (first, last).

    Raises:
        ValueError: ``text`` is not one or two whole numbers joined by '-'.
    """
    first, _, last = text.strip().partition("-")
    try:
        return int(first), int(last or first)
    except ValueError:
        raise ValueError(f"bad layer range {text!r}: write generator blocks as FIRST-LAST, such as 0-2") from None


def check_alpha(alpha: float) -> float:
    """``alpha`` as a float, once checked that it is a finite number from 0 to 1.

    Raises:
        ValueError: It is not.
    """
    if not (math.isfinite(alpha) and 0.0 <= alpha <= 1.0):
        raise ValueError(f"alpha must be a number from 0 (parent A) to 1 (parent B), not {alpha}")
    return float(alpha)


def block_keys(generator: nn.Module, layers: tuple[int, int]) -> set[str]:
    """The state-dict keys of ``generator``'s freezable blocks ``layers`` (first, last, inclusive).

    Raises:
        ValueError: The range is empty or leaves the generator's blocks.
    """
    found = generator.freezable_blocks()
    first, last = layers
    if not 0 <= first <= last < len(found):
        raise ValueError(f"bad layer range {first}-{last}: this model's generator blocks are 0 (4 px) to "
                         f"{len(found) - 1} ({4 * 2 ** (len(found) - 1)} px), first <= last")
    names = {id(module): name for name, module in generator.named_modules()}
    prefixes = tuple(names[id(module)] + "." for module in found[first : last + 1])
    return {key for key in generator.state_dict() if key.startswith(prefixes)}


def blend_states(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], alpha: float,
                 keys: set[str] | None = None) -> dict[str, torch.Tensor]:
    """The child's state: ``keys`` (None: every key) blended by ``alpha``, every other tensor A's."""
    child = {}
    for key, tensor in a.items():
        if (keys is not None and key not in keys) or alpha == 0.0:
            child[key] = tensor
        elif alpha == 1.0:
            child[key] = b[key]
        elif tensor.is_floating_point():
            child[key] = torch.lerp(tensor, b[key], alpha)
        else:  # counters: no value lies between two of them that means anything
            child[key] = tensor if alpha < 0.5 else b[key]
    return child


def check_compatible(a: str, b: str, config_a: ModelConfig, config_b: ModelConfig) -> None:
    """Raise ValueError, in one sentence, unless models ``a`` and ``b`` share architecture, size and classes."""
    if config_a.architecture != config_b.architecture:
        raise ValueError(f"{a} is a {config_a.architecture} and {b} a {config_b.architecture}: only models of "
                         "one architecture blend")
    fields_a, fields_b = asdict(config_a.arch), asdict(config_b.arch)
    for field, value in fields_a.items():
        if fields_b[field] != value:
            raise ValueError(f"{a} and {b} differ in shape ({field} {value} against {fields_b[field]}): only "
                             "models of one architecture and size blend")
    if config_a.class_names != config_b.class_names:
        raise ValueError(f"{a} and {b} have different classes ({', '.join(config_a.class_names) or 'none'} against "
                         f"{', '.join(config_b.class_names) or 'none'}): conditional models blend only with the same "
                         "classes in the same order")


def _licence(config_a: ModelConfig, config_b: ModelConfig) -> str:
    """The child's licence: both parents' terms apply to weights made from both."""
    licences = (config_a.license, config_b.license)
    return " AND ".join(dict.fromkeys(licences)) if all(licences) else ""  # one unknown: the whole is unknown


def blend(a: str, b: str, alpha: float, out: str, layers: tuple[int, int] | None = None) -> Path:
    """Write model ``out``: models ``a`` and ``b`` blended by ``alpha`` (on generator blocks ``layers`` only).

    Everything is checked before any weights are read, so a refusal writes nothing.

    Raises:
        ValueError: A bad alpha or layer range, ``out`` taken (or a built-in name), or parents that do not
            share architecture, size and classes.
        zoo.ModelUnavailable: A parent is unknown or unreadable.
    """
    alpha = check_alpha(alpha)
    if out in zoo.model_names():
        raise ValueError(f"a model named {out!r} exists already: choose another name for the blend")
    zoo.writable_folder(out)  # the name rule
    config_a, config_b = zoo.model_config(a), zoo.model_config(b)
    check_compatible(a, b, config_a, config_b)
    with torch.device("meta"):  # the layer range is checked on a skeleton: no memory, no weights read
        keys = block_keys(build_generator(config_a), layers) if layers else None
    parent_a, parent_b = zoo.load(a), zoo.load(b)
    lineage: dict[str, Any] = {
        "blend": {"parents": [{"name": p.name, "weights_sha256": p.weights_sha256} for p in (parent_a, parent_b)],
                  "alpha": alpha, "layers": list(layers) if layers else None},
    }
    where = f" on generator blocks {layers[0]}-{layers[1]} (the rest from {a})" if layers else ""
    config = replace(config_a, title=out, lineage=lineage, license=_licence(config_a, config_b),
                     author=", ".join(dict.fromkeys(x for x in (config_a.author, config_b.author) if x)),
                     source=f"a blend of {a} and {b}",
                     description=f"{a} blended with {b} at alpha {alpha:g}{where}.")
    child = build_generator(config)
    child.load_state_dict(blend_states(parent_a.generator.state_dict(), parent_b.generator.state_dict(), alpha, keys))
    folder = zoo.writable_folder(out)  # again: another writer may have taken the name while the parents loaded
    with swap_dir(folder) as tmp:
        save_pretrained(tmp, config, child)
    return folder


def base_of(config: ModelConfig) -> str | None:
    """The model a fine-tuned model was trained from (its lineage's ``base_model``); None if it was not."""
    base = config.lineage.get("base_model")
    return base if isinstance(base, str) and base else None


def toward_tuned(base: LoadedModel, tuned: LoadedModel, alpha: float) -> LoadedModel:
    """Fine-tuned model ``tuned`` with its weights blended back toward ``base``'s: alpha 0 is the base, 1 ``tuned``.

    The live "base <-> fine-tuned" slider: every tensor blends (the mapping too), in memory, nothing
    written. The result is a copy of ``tuned``'s generator (so it keeps the layout the engine put it in)
    holding the blended tensors, under ``tuned``'s name and folder, and sharing its memo: the sliders
    keep the fine-tuned model's directions along the whole way, so a slider value means one move.

    Raises:
        ValueError: A bad alpha, or models that do not share architecture, size and classes.
    """
    alpha = check_alpha(alpha)
    check_compatible(base.name, tuned.name, base.config, tuned.config)
    generator = copy.deepcopy(tuned.generator)
    generator.load_state_dict(blend_states(base.generator.state_dict(), tuned.generator.state_dict(), alpha))
    blend = LoadedModel(tuned.name, tuned.config, generator, tuned.folder, memo=tuned.memo)
    # The same weights file, so the same hash: handed over rather than read and hashed again for every blend.
    blend.__dict__["weights_sha256"] = tuned.weights_sha256
    return blend
