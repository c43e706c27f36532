"""NVIDIA StyleGAN2 snapshots imported from the command line: the file's own pixels, nothing in it run.

The snapshots are written here the way NVIDIA's training writes them (see ``conftest.Net``), from the
state of a studio StyleGAN2 network with random weights: its state-dict keys are NVIDIA's, so the
pickle's tree is built from the keys, with NVIDIA's class name for each layer.
"""

from __future__ import annotations

import os
import pickle
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from studio import zoo
from studio.latent import seed_latents
from studio.media import to_uint8
from studio.models.folder import DISCRIMINATOR_FILE, load_config
from studio.models.stylegan2 import StyleGAN2Config, StyleGAN2Discriminator, StyleGAN2Generator
from tests.conftest import EasyDict, Net, run_cli, snapshot_bytes

CONFIG = {"resolution": 16, "z_dim": 8, "w_dim": 8, "mapping_layers": 2, "channel_base": 128, "channel_max": 16,
          "conv_clamp": 256.0}


def nvidia_class(path: str, discriminator: bool) -> str:
    """NVIDIA's class for the layer at ``path`` (``synthesis.b8.conv0``) of its generator or discriminator."""
    last = path.rpartition(".")[2]
    if path == "":
        return "Discriminator" if discriminator else "Generator"
    if last in ("mapping",):
        return "MappingNetwork"
    if last == "synthesis":
        return "SynthesisNetwork"
    if re.fullmatch(r"b\d+", last):
        return ("DiscriminatorEpilogue" if last == "b4" else "DiscriminatorBlock") if discriminator else "SynthesisBlock"
    if last == "mbstd":
        return "MinibatchStdLayer"
    if re.fullmatch(r"fc\d*|embed|affine|out", last):
        return "FullyConnectedLayer"
    if last == "torgb":
        return "ToRGBLayer"
    return "Conv2dLayer" if discriminator else "SynthesisLayer"


def persistent_tree(state: dict[str, torch.Tensor], kwargs: dict, discriminator: bool,
                    dtype: torch.dtype = torch.float32) -> Net:
    """NVIDIA-style persistent networks holding ``state``, one per key prefix, tensors stored in ``dtype``."""
    nets: dict[str, Net] = {"": Net(nvidia_class("", discriminator), kwargs)}
    for key, tensor in state.items():
        path, _, name = key.rpartition(".")
        parts = path.split(".") if path else []
        for i in range(1, len(parts) + 1):
            sub = ".".join(parts[:i])
            if sub not in nets:
                nets[sub] = Net(nvidia_class(sub, discriminator))
                nets[".".join(parts[: i - 1])].add_module(parts[i - 1], nets[sub])
        value = tensor.to(dtype) if tensor.is_floating_point() and name != "resample_filter" else tensor
        if name in ("w_avg", "resample_filter", "noise_const"):
            nets[path].register_buffer(name, value.clone())
        else:
            nets[path].register_parameter(name, torch.nn.Parameter(value.clone(), requires_grad=False))
    return nets[""]


def networks(num_classes: int, seed: int = 0) -> tuple[StyleGAN2Generator, StyleGAN2Discriminator]:
    """A studio StyleGAN2 pair with seeded random weights, w_avg and noise included (as trained ones have)."""
    torch.manual_seed(seed)
    config = StyleGAN2Config(**CONFIG, num_classes=num_classes)
    g, d = StyleGAN2Generator(config).eval(), StyleGAN2Discriminator(config).eval()
    with torch.no_grad():
        for module in (g, d):
            for name, tensor in module.state_dict().items():
                if name.endswith(("bias", "w_avg", "noise_const", "noise_strength")):
                    tensor.copy_(torch.randn_like(tensor) * 0.5)
    return g, d


def write_snapshot(path: Path, num_classes: int = 0, dtype: torch.dtype = torch.float32, source: str = "",
                   drop_from_d: str = "") -> tuple[StyleGAN2Generator, StyleGAN2Discriminator]:
    """An NVIDIA-style ``network-snapshot.pkl`` of a fresh pair at ``path`` (``drop_from_d``: a D tensor left
    out); returns the pair."""
    g, d = networks(num_classes)
    g_kwargs = {"z_dim": 8, "c_dim": num_classes, "w_dim": 8, "img_resolution": 16, "img_channels": 3,
                "mapping_kwargs": EasyDict(num_layers=2),
                "synthesis_kwargs": EasyDict(channel_base=128, channel_max=16, num_fp16_res=2, conv_clamp=256)}
    d_kwargs = {"c_dim": num_classes, "img_resolution": 16, "img_channels": 3, "architecture": "resnet",
                "channel_base": 128, "channel_max": 16, "num_fp16_res": 2, "conv_clamp": 256,
                "epilogue_kwargs": EasyDict(mbstd_group_size=4)}
    g_tree = persistent_tree(g.state_dict(), g_kwargs, False, dtype)
    for net in g_tree.modules():
        net.meta["module_src"] = source
    snapshot = {"G": persistent_tree(g.state_dict(), g_kwargs, False), "G_ema": g_tree,
                "D": persistent_tree({k: v for k, v in d.state_dict().items() if k != drop_from_d}, d_kwargs, True),
                "augment_pipe": None,
                "training_set_kwargs": EasyDict(path="art.zip", resolution=16)}
    path.write_bytes(snapshot_bytes(snapshot))
    return g, d


def drawn(folder: Path) -> list[np.ndarray]:
    return [np.asarray(Image.open(p).convert("RGB")) for p in sorted(folder.glob("seed*.png"))]


@pytest.mark.parametrize("num_classes", [0, 3])
def test_an_imported_snapshot_draws_the_networks_own_pixels(home: Path, tmp_path: Path, num_classes: int) -> None:
    g, d = write_snapshot(tmp_path / "network-snapshot-000100.pkl", num_classes)
    classes = ["--classes", "ink,oil,wash"] if num_classes else []
    result = run_cli("import", str(tmp_path / "network-snapshot-000100.pkl"), "--name", "mine", *classes, home=home)
    assert result.returncode == 0, result.stderr
    config = load_config(home / "models" / "mine")
    assert config.architecture == "stylegan2" and config.resolution == 16 and config.arch.num_fp16_res == 2
    assert config.class_names == (("ink", "oil", "wash") if num_classes else ())
    args = ["--class", "oil"] if num_classes else []
    result = run_cli("generate", "--model", "mine", "--seeds", "0-3", *args, "--out-dir", str(tmp_path / "out"),
                     home=home)
    assert result.returncode == 0, result.stderr
    z = seed_latents(range(4), 8)
    c = torch.eye(3)[[1] * 4] if num_classes else None
    with torch.no_grad():
        expected = to_uint8(g(z, c))
    # The engine draws in channels_last: the layout may move a value by one level, no more.
    for image, want in zip(drawn(tmp_path / "out"), expected):
        assert np.abs(image.astype(int) - want.astype(int)).max() <= 1
    kept = load_file(str(home / "models" / "mine" / DISCRIMINATOR_FILE))  # D kept for fine-tuning
    assert set(kept) == set(d.state_dict()) and all(torch.equal(kept[k], v) for k, v in d.state_dict().items())


def test_fp16_layers_are_stored_in_float32(home: Path, tmp_path: Path) -> None:
    write_snapshot(tmp_path / "half.pkl", dtype=torch.float16)
    assert run_cli("import", str(tmp_path / "half.pkl"), "--name", "half", home=home).returncode == 0
    weights = load_file(str(home / "models" / "half" / "model.safetensors"))
    assert {t.dtype for t in weights.values() if t.is_floating_point()} == {torch.float32}


def test_code_in_the_file_never_runs_and_hostile_files_are_refused_with_nothing_written(home: Path,
                                                                                        tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    write_snapshot(tmp_path / "src.pkl", source=f"open({str(marker)!r}, 'w').write('ran')")
    assert run_cli("import", str(tmp_path / "src.pkl"), "--name", "safe", home=home).returncode == 0
    assert not marker.exists()

    good = (tmp_path / "src.pkl").read_bytes()
    (tmp_path / "cut.pkl").write_bytes(good[: len(good) // 2])
    refused = run_cli("import", str(tmp_path / "cut.pkl"), "--name", "cut", home=home)
    assert refused.returncode == 2 and "ends early" in refused.stderr

    class System:
        def __reduce__(self) -> tuple:
            return os.system, (f"touch {marker}",)

    (tmp_path / "evil.pkl").write_bytes(pickle.dumps({"G_ema": System()}))
    refused = run_cli("import", str(tmp_path / "evil.pkl"), "--name", "evil", home=home)
    assert refused.returncode == 2 and "system" in refused.stderr and "never runs code" in refused.stderr
    assert not marker.exists() and zoo.model_names()[len(zoo.BUILTIN):] == ["safe"]
    wrong = run_cli("import", str(tmp_path / "src.pkl"), "--name", "few", "--classes", "a,b", home=home)
    assert wrong.returncode == 2 and "is a model of 0 classes, not 2" in wrong.stderr


def test_the_layout_is_read_from_the_bytes_whatever_the_file_is_called(home: Path, tmp_path: Path) -> None:
    # A DCGAN-tutorial state dict saved in torch's pre-1.6 (non-zip) format is a pickle too: still the tutorial's.
    torch.manual_seed(0)
    state, widths = {}, [8, 32, 16, 8, 3]  # z of 8, three hidden blocks, RGB: a 32 px generator
    for i, (cin, cout) in enumerate(zip(widths, widths[1:])):
        state[f"main.{3 * i}.weight"] = torch.randn(cin, cout, 4, 4)
        if cout != 3:
            state |= {f"main.{3 * i + 1}.{k}": v for k, v in torch.nn.BatchNorm2d(cout).state_dict().items()}
    torch.save(state, tmp_path / "legacy.pkl", _use_new_zipfile_serialization=False)
    result = run_cli("import", str(tmp_path / "legacy.pkl"), "--name", "old", "--resolution", "32", "--latent", "8",
                     home=home)
    assert result.returncode == 0, result.stderr
    assert load_config(home / "models" / "old").architecture == "dcgan"
    no_side = run_cli("import", str(tmp_path / "legacy.pkl"), "--name", "old2", home=home)
    assert no_side.returncode == 2 and "give the side its generator draws (--resolution)" in no_side.stderr
    write_snapshot(tmp_path / "snapshot.pth")  # a snapshot under a .pth name is still a snapshot
    assert run_cli("import", str(tmp_path / "snapshot.pth"), "--name", "sg", home=home).returncode == 0
    assert load_config(home / "models" / "sg").architecture == "stylegan2"


def test_a_discriminator_that_does_not_fit_is_refused_with_nothing_written(home: Path, tmp_path: Path) -> None:
    write_snapshot(tmp_path / "bad-d.pkl", drop_from_d="b4.out.weight")
    refused = run_cli("import", str(tmp_path / "bad-d.pkl"), "--name", "bad", home=home)
    assert refused.returncode == 2 and "(D) is missing tensor 'b4.out.weight'" in refused.stderr
    assert zoo.model_names()[len(zoo.BUILTIN):] == []
