"""NVIDIA ``.pkl`` snapshots read by the restricted unpickler: tensors and kwargs out, nothing run.

The pickles are written here the way NVIDIA's ``torch_utils.persistence`` writes them: each network
reduces to ``torch_utils.persistence._reconstruct_persistent_obj(meta)`` with its ``__dict__`` as
``meta["state"]``. A throwaway ``torch_utils.persistence`` (and ``dnnlib.util``) exists in
``sys.modules`` only while pickling, unless a test keeps it there to show it is still not called.
"""

from __future__ import annotations

import copyreg
import io
import os
import pickle
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from studio.models.convert import ConversionError
from studio.models.convert.nvidia_pickle import read_snapshot
from tests.conftest import (
    EasyDict, Net, assert_import_refused, fake_modules, nest, reconstruct_by_running_source, snapshot_bytes,
)


def param(*shape: int, dtype: torch.dtype = torch.float32) -> torch.nn.Parameter:
    """A seeded-random parameter, frozen as in NVIDIA's snapshots."""
    return torch.nn.Parameter(torch.randn(*shape).to(dtype), requires_grad=False)


def read(data: bytes) -> object:
    """``read_snapshot`` on bytes in memory."""
    return read_snapshot(io.BytesIO(data), "snapshot.pkl")


def stylegan2_generator() -> tuple[Net, dict[str, torch.Tensor]]:
    """A tiny StyleGAN2-shaped generator and the state dict its tensors make, written out by hand."""
    torch.manual_seed(0)
    fc0_w, fc0_b, w_avg = param(8, 8), param(8), torch.randn(8)
    const, filt, conv_w, noise = param(16, 4, 4), torch.tensor([1.0, 3, 3, 1]), param(16, 16, 3, 3), torch.randn(4, 4)
    conv1 = Net("SynthesisLayer", weight=conv_w, noise_const=noise)
    conv1.register_buffer("scratch", torch.zeros(2), persistent=False)  # state_dict() leaves these out
    mapping = nest(Net("MappingNetwork", w_avg=w_avg), fc0=Net("FullyConnectedLayer", weight=fc0_w, bias=fc0_b))
    synthesis = nest(Net("SynthesisNetwork"), b4=nest(Net("SynthesisBlock", const=const, resample_filter=filt),
                                                      conv1=conv1))
    kwargs = {"z_dim": 8, "c_dim": 0, "w_dim": 8, "img_resolution": 4, "img_channels": 3,
              "mapping_kwargs": EasyDict(num_layers=1), "synthesis_kwargs": EasyDict(channel_base=64, conv_clamp=256)}
    generator = nest(Net("Generator", kwargs), mapping=mapping, synthesis=synthesis)
    expected = {"mapping.w_avg": w_avg, "mapping.fc0.weight": fc0_w, "mapping.fc0.bias": fc0_b,
                "synthesis.b4.const": const, "synthesis.b4.resample_filter": filt,
                "synthesis.b4.conv1.weight": conv_w, "synthesis.b4.conv1.noise_const": noise}
    return generator, expected


def discriminator() -> tuple[Net, dict[str, torch.Tensor]]:
    """A tiny discriminator-shaped tree and its hand-written state dict."""
    torch.manual_seed(1)
    out_w, out_b = param(1, 16), param(1)
    epilogue = nest(Net("DiscriminatorEpilogue"), mbstd=Net("MinibatchStdLayer"),
                    out=Net("FullyConnectedLayer", weight=out_w, bias=out_b))
    return nest(Net("Discriminator", {"c_dim": 0, "img_resolution": 4}), b4=epilogue), {"b4.out.weight": out_w,
                                                                                          "b4.out.bias": out_b}


def assert_same_tensors(got: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> None:
    """Same keys, and each tensor equal in value and dtype."""
    assert sorted(got) == sorted(expected)
    for key, tensor in expected.items():
        assert got[key].dtype == tensor.dtype, key
        assert torch.equal(got[key], tensor), key


@pytest.mark.parametrize("protocol", [3, 4])  # stylegan2-ada-pytorch ran on Python 3.7 (protocol 3), stylegan3 on 4
def test_snapshot_gives_generator_and_discriminator_state_and_kwargs(protocol: int) -> None:
    generator, g_expected = stylegan2_generator()
    disc, d_expected = discriminator()
    data = snapshot_bytes({"G": generator, "D": disc, "G_ema": generator, "augment_pipe": None,
                           "training_set_kwargs": EasyDict(path="art.zip", resolution=4)}, protocol)
    assert "torch_utils" not in sys.modules and "dnnlib" not in sys.modules
    snapshot = read(data)
    assert (snapshot.family, snapshot.class_name) == ("stylegan2", "Generator")
    assert_same_tensors(snapshot.generator_state, g_expected)
    assert_same_tensors(snapshot.discriminator_state, d_expected)
    assert snapshot.generator_kwargs == {"z_dim": 8, "c_dim": 0, "w_dim": 8, "img_resolution": 4, "img_channels": 3,
                                         "mapping_kwargs": {"num_layers": 1},
                                         "synthesis_kwargs": {"channel_base": 64, "conv_clamp": 256}}
    assert type(snapshot.generator_kwargs["mapping_kwargs"]) is dict
    assert snapshot.discriminator_kwargs == {"c_dim": 0, "img_resolution": 4}


def test_fp16_tensors_and_numpy_kwargs_come_out_as_stored() -> None:
    torch.manual_seed(2)
    weight = param(4, 4, dtype=torch.float16)
    kwargs = {"z_dim": np.int64(8), "cutoff": np.float64(2.5), "size": np.array([36, 36])}
    generator = nest(Net("Generator", kwargs), mapping=Net("MappingNetwork", w=weight))
    snapshot = read(snapshot_bytes({"G_ema": generator}))
    assert_same_tensors(snapshot.generator_state, {"mapping.w": weight})
    assert snapshot.generator_kwargs == {"z_dim": 8, "cutoff": 2.5, "size": [36, 36]}
    assert type(snapshot.generator_kwargs["cutoff"]) is float
    assert snapshot.discriminator_state is None


def stylegan3_snapshot() -> tuple[bytes, torch.Tensor, torch.nn.Parameter]:
    """A StyleGAN3 (alias-free) ``G_ema`` pickled as NVIDIA's training does, with its two tensors."""
    torch.manual_seed(3)
    freqs, layer_w = torch.randn(16, 2), param(16, 16, 1, 1)
    synthesis = nest(Net("SynthesisNetwork"), input=Net("SynthesisInput", freqs=freqs),
                     L0_36_16=Net("SynthesisLayer", weight=layer_w))
    generator = nest(Net("Generator", {"z_dim": 8}), synthesis=synthesis)
    return snapshot_bytes({"G_ema": generator}), freqs, layer_w


def test_stylegan3_generator_is_recognised() -> None:
    data, freqs, layer_w = stylegan3_snapshot()
    snapshot = read(data)
    assert snapshot.family == "stylegan3"
    assert_same_tensors(snapshot.generator_state, {"synthesis.input.freqs": freqs,
                                                   "synthesis.L0_36_16.weight": layer_w})


@pytest.mark.slow
def test_a_stylegan3_snapshot_is_refused_in_one_sentence_with_nothing_written(home: Path, tmp_path: Path) -> None:
    path = tmp_path / "stylegan3-t-ffhq-1024x1024.pkl"
    path.write_bytes(stylegan3_snapshot()[0])
    assert_import_refused(path, "holds a StyleGAN3 (alias-free) generator", home)
    assert not (home / "models" / "refused").exists()


def test_carried_source_never_runs(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    generator, _ = stylegan2_generator()
    generator.meta["module_src"] = f"open({str(marker)!r}, 'w').write('ran')\n"
    data = snapshot_bytes({"G_ema": generator})
    # NVIDIA's reconstruction is importable during the read: the reader still must not call it.
    with fake_modules(**{"torch_utils.persistence": {"_reconstruct_persistent_obj": reconstruct_by_running_source}}):
        snapshot = read(data)
    assert not marker.exists()
    assert snapshot.generator_state


class RunsCommand:
    """Pickles as a call of ``os.system(command)``: what a hostile model file does."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self) -> tuple:
        return os.system, (self.command,)


def test_os_system_is_refused_by_name_and_never_runs(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    generator, _ = stylegan2_generator()
    data = snapshot_bytes({"G_ema": generator, "x": RunsCommand(f"touch {marker}")})
    with pytest.raises(ConversionError, match=r"refused: it asks to import and call (os|posix|nt)\.system") as e:
        read(data)
    assert "\n" not in str(e.value)
    assert not marker.exists()


class StorageBytes:
    """Pickles as ``torch.storage._load_from_bytes(data)``, which in torch unpickles ``data`` unrestricted."""

    def __init__(self, data: bytes) -> None:
        self.data = data

    def __reduce__(self) -> tuple:
        return torch.storage._load_from_bytes, (self.data,)


def test_a_payload_inside_tensor_bytes_is_refused(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    data = snapshot_bytes({"G_ema": StorageBytes(pickle.dumps(RunsCommand(f"touch {marker}"), protocol=2))})
    refusal = r"refused: a tensor's bytes in it ask to import and call (os|posix|nt)\.system"
    with pytest.raises(ConversionError, match=refusal):
        read(data)
    assert not marker.exists()


def test_extension_codes_go_through_the_allow_list(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    module = RunsCommand.__reduce__(RunsCommand(""))[0].__module__  # os.system lives in posix or nt
    copyreg.add_extension(module, "system", 0x7FFF_FF00)  # pickle then writes EXT4 instead of the global's name
    try:
        data = pickle.dumps({"G_ema": RunsCommand(f"touch {marker}")}, protocol=4)
        assert b"system" not in data
        with pytest.raises(ConversionError, match=r"\.system"):
            read(data)
    finally:
        copyreg.remove_extension(module, "system", 0x7FFF_FF00)
    assert not marker.exists()


class NerfBlock:
    """Stands in for a class of another GAN project (StyleNeRF-style) pickled by reference."""


def test_a_class_from_another_project_is_refused_by_name() -> None:
    with fake_modules(**{"training.stylenerf": {"NerfBlock": NerfBlock}}):
        data = pickle.dumps({"G_ema": NerfBlock()}, protocol=4)
    with pytest.raises(ConversionError, match=r"training\.stylenerf\.NerfBlock.*another project"):
        read(data)


def test_a_network_with_foreign_layers_is_from_another_project() -> None:
    generator, _ = stylegan2_generator()
    generator.add_module("nerf", Net("NeRFSynthesisNetwork"))
    with pytest.raises(ConversionError, match="NeRFSynthesisNetwork.*another project"):
        read(snapshot_bytes({"G_ema": generator}))


def test_a_tensorflow_era_pickle_is_named_as_such() -> None:
    class Network:
        """Stands in for ``dnnlib.tflib.network.Network``."""

    with fake_modules(**{"dnnlib.tflib.network": {"Network": Network}}):
        data = pickle.dumps((Network(), Network(), Network()), protocol=3)
    with pytest.raises(ConversionError, match="TensorFlow-era"):
        read(data)


def test_missing_g_ema_is_said() -> None:
    generator, _ = stylegan2_generator()
    with pytest.raises(ConversionError, match="holds no G_ema network .it holds G, D"):
        read(snapshot_bytes({"G": generator, "D": generator}))


@pytest.mark.parametrize("fraction", [0.001, 0.3, 0.7, 0.999])
def test_a_truncated_file_ends_early(fraction: float) -> None:
    generator, _ = stylegan2_generator()
    data = snapshot_bytes({"G_ema": generator})
    with pytest.raises(ConversionError, match="ends early: the download may be incomplete"):
        read(data[:max(2, int(len(data) * fraction))])


@pytest.mark.parametrize(("data", "said"), [(b"", "is empty"), (b"PK\x03\x04rest", "zip archive"),
                                            (b"<html>not found</html>", "not a pickle")])
def test_what_is_not_a_pickle_is_said(data: bytes, said: str) -> None:
    with pytest.raises(ConversionError, match=said):
        read(data)


def test_reads_from_a_path(tmp_path: Path) -> None:
    generator, expected = stylegan2_generator()
    path = tmp_path / "network-snapshot-000100.pkl"
    path.write_bytes(snapshot_bytes({"G_ema": generator}))
    assert_same_tensors(read_snapshot(path, path.name).generator_state, expected)
