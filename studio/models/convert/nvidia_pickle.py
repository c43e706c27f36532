"""NVIDIA training snapshots (stylegan2-ada-pytorch, stylegan3) read without running anything in them.

A ``network-snapshot-*.pkl`` is a plain pickle of a dict with ``G``, ``D``, ``G_ema`` and training
details. Each network in it is a "persistent" object: it unpickles by calling
``torch_utils.persistence._reconstruct_persistent_obj(meta)``, which would execute the Python source
in ``meta["module_src"]`` and rebuild the class from it. Here that call makes a ``PersistentRecord``
from ``meta["state"]`` (the object's ``__dict__``: parameters, buffers, child modules, init kwargs)
and the source is kept as text, never run.

Every other global the pickle names must be on a short allow-list (tensor rebuilding, plain
containers, numpy scalars and arrays); any other is refused before it is imported, so neither
``REDUCE`` nor ``BUILD`` nor ``NEWOBJ`` can ever reach a callable the list does not hold. Tensor
storages arrive as ``torch.storage._load_from_bytes(bytes)``, which in torch calls an unrestricted
``torch.load``; here those bytes go through ``torch.load(weights_only=True)`` instead.

TensorFlow-era pickles (a tuple ``(G, D, Gs)`` of ``dnnlib.tflib.network.Network``) read through the same
list: each Network becomes a ``TFNetworkState`` holding the dict its ``__getstate__`` gave (variables as
numpy arrays, the build function's source as text); ``tf_stylegan2`` maps them onto the studio's network.

torch's own ``weights_only`` unpickler allows dtypes, storage and tensor classes, the tensor rebuild
functions, ``OrderedDict``, ``Counter``, ``torch.Size``, ``torch.device``, ``set``, ``bytearray`` and
``complex`` (and ``_codecs.encode`` for protocol-2 bytes): what ``torch.save`` files need, where storages are
persistent ids. It refuses ``_load_from_bytes`` (plain ``pickle`` of a tensor) because that function
unpickles its bytes without restriction, and it refuses numpy unless asked; snapshots need both.
"""

from __future__ import annotations

import collections
import contextlib
import io
import pickle
import re
import sys
import warnings
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import BinaryIO, Literal

import numpy as np
import torch

from studio.models.convert import ConversionError

try:  # numpy 2 pickles name numpy._core, numpy 1 numpy.core: both reach the same functions
    from numpy._core import multiarray as _multiarray
except ImportError:  # numpy < 2
    from numpy.core import multiarray as _multiarray

Family = Literal["stylegan2", "stylegan3"]

# The persistent classes of stylegan2-ada-pytorch's training/networks.py, which stylegan3's
# training/networks_stylegan2.py repeats with the same names and tensors.
_STYLEGAN2_GENERATOR = {"Generator", "MappingNetwork", "FullyConnectedLayer", "SynthesisNetwork", "SynthesisBlock",
                        "SynthesisLayer", "ToRGBLayer", "Conv2dLayer"}
# stylegan3's training/networks_stylegan3.py: alias-free layers fed by a Fourier-feature input.
_STYLEGAN3_GENERATOR = {"Generator", "MappingNetwork", "FullyConnectedLayer", "SynthesisNetwork", "SynthesisInput",
                        "SynthesisLayer"}
_DISCRIMINATOR = {"Discriminator", "DiscriminatorBlock", "DiscriminatorEpilogue", "MinibatchStdLayer", "Conv2dLayer",
                  "FullyConnectedLayer", "MappingNetwork"}


@dataclass(frozen=True)
class PersistentRecord:
    """What a persistent network object holds, read from its pickled state instead of rebuilt.

    Attributes:
        class_name: The class the source would have defined, e.g. ``Generator``.
        module_src: The Python source the pickle carries; text only, never executed.
        init_args: Positional arguments the object was built with.
        init_kwargs: Keyword arguments it was built with, numpy values made plain Python.
        parameters: Its own parameters (not its children's), as plain tensors, dtype kept.
        buffers: Its own persistent buffers, dtype kept.
        children: Its child modules' records, by attribute name.
    """

    class_name: str
    module_src: str
    init_args: tuple = ()
    init_kwargs: dict = field(default_factory=dict)
    parameters: dict[str, torch.Tensor] = field(default_factory=dict)
    buffers: dict[str, torch.Tensor] = field(default_factory=dict)
    children: dict[str, PersistentRecord] = field(default_factory=dict)


@dataclass(frozen=True)
class NvidiaSnapshot:
    """The networks of one NVIDIA training snapshot, as state dicts with NVIDIA's key names.

    Attributes:
        family: ``stylegan2`` (stylegan2-ada-pytorch, or stylegan3's StyleGAN2 config) or ``stylegan3``
            (the alias-free generator of stylegan3's networks_stylegan3.py).
        class_name: The generator's class name.
        generator_kwargs: ``G_ema``'s init kwargs (``z_dim``, ``c_dim``, ``w_dim``, ``img_resolution``, ...).
        generator_state: ``G_ema``'s state dict, tensors as stored (fp16 stays fp16).
        discriminator_kwargs: ``D``'s init kwargs, or None when the file holds no ``D``.
        discriminator_state: ``D``'s state dict, or None when the file holds no ``D``.
    """

    family: Family
    class_name: str
    generator_kwargs: dict
    generator_state: dict[str, torch.Tensor]
    discriminator_kwargs: dict | None
    discriminator_state: dict[str, torch.Tensor] | None


class TFNetworkState:
    """Stands in for a TensorFlow-era ``dnnlib.tflib.network.Network`` while unpickling: the unpickler makes one
    (``NEWOBJ``) and hands it the Network's pickled state (``BUILD``), which it keeps as it is, in ``state``.

    Nothing of the Network class runs: its ``__setstate__`` would import TensorFlow and execute the build
    module's source that the state carries.
    """

    def __setstate__(self, state: object) -> None:
        if not isinstance(state, dict):
            raise ConversionError(f"a TensorFlow-era network in the file has a {type(state).__name__} for its state, "
                                  f"not a dict")
        self.state = state


def read_snapshot(source: Path | BinaryIO, where: str) -> NvidiaSnapshot:
    """Read an NVIDIA ``.pkl`` snapshot's ``G_ema`` and ``D`` without running code from the file.

    Args:
        source: The file's path, or a binary file open at its start.
        where: How to name the file in messages, e.g. its file name.

    Raises:
        ConversionError: The file is truncated, not a pickle, asks for a global outside the allow-list,
            comes from another project, or holds no ``G_ema``; the message says which, in one sentence.
    """
    return snapshot_from_records(load_records(source, where), where)


def is_tf_pickle(loaded: object) -> bool:
    """Whether ``load_records`` read a TensorFlow-era pickle: a Network, or a tuple of them (``(G, D, Gs)``)."""
    items = loaded if isinstance(loaded, tuple) else (loaded,)
    return bool(items) and all(isinstance(item, TFNetworkState) for item in items)


def snapshot_from_records(loaded: object, where: str) -> NvidiaSnapshot:
    """The snapshot in what ``load_records`` read from a stylegan2-ada-pytorch or stylegan3 ``.pkl``.

    Raises:
        ConversionError: It is a TensorFlow-era pickle, comes from another project, or holds no ``G_ema``.
    """
    if is_tf_pickle(loaded):
        raise ConversionError(f"{where} is a TensorFlow-era NVIDIA pickle (dnnlib.tflib Networks), not a snapshot "
                              f"of stylegan2-ada-pytorch or stylegan3")
    if not isinstance(loaded, dict) or not isinstance(loaded.get("G_ema"), PersistentRecord):
        held = ", ".join(map(str, loaded)) if isinstance(loaded, dict) else type(loaded).__name__
        raise ConversionError(f"{where} holds no G_ema network (it holds {held or 'nothing'}), so it is not a "
                              f"stylegan2-ada-pytorch or stylegan3 training snapshot")
    generator = loaded["G_ema"]
    family = _generator_family(generator, where)
    discriminator = loaded.get("D")
    if discriminator is not None:
        if not isinstance(discriminator, PersistentRecord):
            raise ConversionError(f"{where} holds a D that is not a network ({type(discriminator).__name__})")
        _check_classes(discriminator, _DISCRIMINATOR, "D", where)
    return NvidiaSnapshot(
        family=family, class_name=generator.class_name,
        generator_kwargs=_keyword_only(generator, "G_ema", where), generator_state=flat_state(generator),
        discriminator_kwargs=_keyword_only(discriminator, "D", where) if discriminator else None,
        discriminator_state=flat_state(discriminator) if discriminator else None)


def load_records(source: Path | BinaryIO, where: str) -> object:
    """Unpickle an NVIDIA snapshot with persistent networks turned into ``PersistentRecord``.

    Raises:
        ConversionError: The file is truncated, not a pickle, or asks for a global outside the allow-list.
    """
    with open(source, "rb") if isinstance(source, Path) else contextlib.nullcontext(source) as file:
        head = file.read(2)
        file.seek(-len(head), io.SEEK_CUR)
        _check_header(head, where)
        try:
            return _SnapshotUnpickler(file, where).load()
        except ConversionError:
            raise
        except EOFError:
            raise ConversionError(f"{where} ends early: the download may be incomplete") from None
        except pickle.UnpicklingError as e:
            if "truncated" in str(e):
                raise ConversionError(f"{where} ends early: the download may be incomplete") from None
            raise ConversionError(f"{where} is not a readable pickle ({e})") from None
        except Exception as e:  # a damaged file fails inside torch or numpy in many ways; their first sentence says how
            raise ConversionError(f"{where} is not a readable NVIDIA snapshot ({str(e).split('. ')[0]})") from None


def flat_state(record: PersistentRecord, prefix: str = "") -> dict[str, torch.Tensor]:
    """A record tree's tensors under the keys ``state_dict()`` gives: own parameters, buffers, then children."""
    state = {f"{prefix}{name}": t for name, t in {**record.parameters, **record.buffers}.items()}
    for name, child in record.children.items():
        state.update(flat_state(child, f"{prefix}{name}."))
    return state


class _SnapshotUnpickler(pickle.Unpickler):
    """An unpickler whose only importable names are the allow-list's; everything else is refused."""

    def __init__(self, file: BinaryIO, where: str) -> None:
        super().__init__(file)
        self._where = where
        self._allowed = {
            ("torch_utils.persistence", "_reconstruct_persistent_obj"): _record_from_meta,
            ("torch.storage", "_load_from_bytes"): partial(_storage_from_bytes, where=where),
            ("torch._utils", "_rebuild_tensor_v2"): torch._utils._rebuild_tensor_v2,
            ("torch._utils", "_rebuild_parameter"): torch._utils._rebuild_parameter,
            ("torch", "device"): torch.device,
            ("collections", "OrderedDict"): collections.OrderedDict,
            ("builtins", "set"): set,  # protocol 3 (Python 3.7, as NVIDIA's repositories ran) pickles sets so
            ("builtins", "frozenset"): frozenset,
            ("dnnlib.util", "EasyDict"): dict,  # an attribute-access dict; a plain one holds the same
            ("dnnlib.tflib.network", "Network"): TFNetworkState,
            # stylegan3 layers keep sizes and cutoffs as numpy arrays and scalars.
            ("numpy", "dtype"): np.dtype,
            ("numpy", "ndarray"): np.ndarray,
            ("numpy.core.multiarray", "_reconstruct"): _multiarray._reconstruct,
            ("numpy.core.multiarray", "scalar"): _multiarray.scalar,
            ("numpy._core.multiarray", "_reconstruct"): _multiarray._reconstruct,
            ("numpy._core.multiarray", "scalar"): _multiarray.scalar,
        }

    def find_class(self, module: str, name: str) -> object:
        """The allowed object for ``module.name``; never imports anything."""
        allowed = self._allowed.get((module, name))
        if allowed is None:
            raise _refusal(module, name, self._where)
        return allowed


def _refusal(module: str, name: str, where: str) -> ConversionError:
    """The one-line refusal of a global outside the allow-list, worded by where it comes from."""
    wanted = f"{module}.{name}"
    if module.startswith("dnnlib"):
        return ConversionError(f"{where} was refused: it asks to import {wanted}, which no NVIDIA network pickle "
                               f"holds (of the TensorFlow era's dnnlib only Network records are read), and the studio "
                               f"never runs code from a model file")
    if module.partition(".")[0] in sys.stdlib_module_names:
        return ConversionError(f"{where} was refused: it asks to import and call {wanted}; the studio never runs "
                               f"code from a model file")
    return ConversionError(f"{where} was refused: it asks to import {wanted}, which no stylegan2-ada-pytorch or "
                           f"stylegan3 snapshot holds, so it is a pickle from another project, and the studio "
                           f"never runs code from a model file")


def _record_from_meta(meta: object) -> PersistentRecord:
    """What ``_reconstruct_persistent_obj(meta)`` would rebuild, as a record; ``module_src`` is not run."""
    if not isinstance(meta, dict) or not isinstance(meta.get("state"), dict) or meta.get("type") != "class":
        raise ConversionError("a persistent object in the file is not described as a class with its state")
    state = meta["state"]
    skipped = state.get("_non_persistent_buffers_set") or set()
    children = {name: child for name, child in (state.get("_modules") or {}).items() if child is not None}
    for name, child in children.items():
        if not isinstance(child, PersistentRecord):
            raise ConversionError(f"the module {name!r} of a {meta.get('class_name')} is a "
                                  f"{type(child).__name__}, not a persistent network")
    return PersistentRecord(
        class_name=str(meta.get("class_name")), module_src=str(meta.get("module_src", "")),
        init_args=tuple(_plain(state.get("_init_args", ()))), init_kwargs=_plain(state.get("_init_kwargs") or {}),
        parameters=_tensors(state.get("_parameters") or {}),
        buffers=_tensors({k: v for k, v in (state.get("_buffers") or {}).items() if k not in skipped}),
        children=children)


def _tensors(named: dict) -> dict[str, torch.Tensor]:
    """Plain tensors (a Parameter detached) by name, skipping the None a module may register."""
    out = {}
    for name, value in named.items():
        if value is None:
            continue
        if not isinstance(value, torch.Tensor):
            raise ConversionError(f"the tensor {name!r} of a network in the file is a {type(value).__name__}")
        out[name] = value.detach()
    return out


def _plain(value: object) -> object:
    """``value`` with numpy scalars and arrays made Python numbers and lists, so kwargs fit in JSON."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_plain(v) for v in value)
    if isinstance(value, (np.generic, np.ndarray)):
        return value.tolist()
    return value


def _storage_from_bytes(data: bytes, where: str) -> torch.storage.TypedStorage:
    """A tensor storage from the bytes ``torch.save`` wrote for it, read with ``weights_only=True``."""
    try:
        with warnings.catch_warnings():  # TypedStorage is deprecated in torch, and says so on every load
            warnings.simplefilter("ignore")
            storage = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        # torch names what it refused as "GLOBAL module.name"; the rest of its message advises loading unsafely
        wanted = ", ".join(sorted(set(re.findall(r"GLOBAL ([\w.]+)", str(e))))) or "more than tensor data"
        raise ConversionError(f"{where} was refused: a tensor's bytes in it ask to import and call {wanted}; the "
                              f"studio never runs code from a model file") from None
    if not isinstance(storage, torch.storage.TypedStorage):
        raise ConversionError(f"{where} holds a {type(storage).__name__} where a tensor's storage belongs")
    return storage


def _check_header(head: bytes, where: str) -> None:
    """Refuse what is plainly not a pickle before reading it (protocols 2-5 start with 0x80 and the number)."""
    if not head:
        raise ConversionError(f"{where} is empty: the download may be incomplete")
    if head.startswith(b"PK"):
        raise ConversionError(f"{where} is a zip archive (a torch.save file?), not an NVIDIA .pkl snapshot")
    if len(head) < 2 or head[0] != 0x80 or not 2 <= head[1] <= 5:
        raise ConversionError(f"{where} is not a pickle, so not an NVIDIA .pkl snapshot")


def _generator_family(generator: PersistentRecord, where: str) -> Family:
    """``stylegan3`` for the alias-free generator (it has a Fourier-feature ``SynthesisInput``), else ``stylegan2``."""
    if generator.class_name != "Generator":
        raise ConversionError(f"{where} holds a G_ema of class {generator.class_name}, not a StyleGAN Generator: "
                              f"a pickle from another project")
    classes = _classes(generator)
    family: Family = "stylegan3" if "SynthesisInput" in classes else "stylegan2"
    _check_classes(generator, _STYLEGAN3_GENERATOR if family == "stylegan3" else _STYLEGAN2_GENERATOR, "G_ema", where)
    return family


def _check_classes(record: PersistentRecord, known: set[str], name: str, where: str) -> None:
    """Refuse a network tree with a class its family does not have (a fork's extra layers would be lost)."""
    unknown = sorted(_classes(record) - known)
    if unknown:
        raise ConversionError(f"{where} holds a {name} with layers of class {', '.join(unknown)}, which "
                              f"stylegan2-ada-pytorch and stylegan3 do not have: a pickle from another project")


def _classes(record: PersistentRecord) -> set[str]:
    """Every class name in a record tree."""
    return {record.class_name}.union(*(_classes(child) for child in record.children.values()))


def _keyword_only(record: PersistentRecord, name: str, where: str) -> dict:
    """A network's init kwargs; NVIDIA's training builds networks from kwargs alone, so positional ones are foreign."""
    if record.init_args:
        raise ConversionError(f"{where} holds a {name} built with positional arguments, which NVIDIA's training "
                              f"never passes: a pickle from another project")
    return record.init_kwargs

