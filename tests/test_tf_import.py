"""TensorFlow-era NVIDIA pickles (``(G, D, Gs)`` of ``dnnlib.tflib.network.Network``) imported from the command line.

The pickles are written here as TensorFlow's ``dnnlib`` writes them: each Network pickles as its class (a
throwaway ``dnnlib.tflib.network.Network`` exists only while pickling) and its ``__getstate__`` dict, the
variables numpy arrays in TensorFlow's layouts (kernels ``[kh, kw, in, out]``, dense ``[in, out]``). The
reference computes straight from those variables, in TensorFlow's NHWC layout and float64, step by step as
TensorFlow's ops define them: ``conv2d`` correlates; the up-sampling convolution is the zero-filled grid,
padded once (3 before, 2 after), filtered, then correlated with the kernel as stored.
"""

from __future__ import annotations

import math
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from studio import zoo
from studio.models.folder import DISCRIMINATOR_FILE, load_config
from tests.conftest import assert_import_refused, fake_modules, kept_discriminator_logits, run_cli

SQRT2 = math.sqrt(2.0)
TAPS = torch.tensor([1.0, 3.0, 3.0, 1.0], dtype=torch.float64)
FIR = torch.outer(TAPS, TAPS) / 64.0
SIDES = (4, 8, 16)
WIDTHS = {4: 16, 8: 16, 16: 8}  # fmap_base 64, fmap_max 16: nf(stage) = min(64 / 2^stage, 16)
Z = W = 8
LRMUL = 0.01


class Network:
    """Stands in for ``dnnlib.tflib.network.Network`` while pickling: its pickled state is ``state``."""

    def __init__(self, **state: object) -> None:
        self.state = state

    def __getstate__(self) -> dict:
        return self.state


def network(name: str, func: str, variables: dict[str, np.ndarray], source: str = "", **components: Network) -> Network:
    """A Network's state as ``dnnlib`` (version 4) pickles it."""
    kwargs = {"num_channels": 3, "resolution": 16, "label_size": 0, "fmap_base": 64, "fmap_max": 16,
              "latent_size": Z, "dlatent_size": W, "mapping_layers": 2}
    return Network(version=4, name=name, static_kwargs=kwargs, components=components, build_module_src=source,
                   build_func_name=func, variables=list(variables.items()))


def random_variables(seed: int = 0) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Seeded mapping, synthesis and discriminator variables of a 16 px StyleGAN2 (Gs's ``dlatent_avg`` is
    in the mapping dict under ``../``)."""
    rng = np.random.default_rng(seed)

    def r(*shape: int, scale: float = 1.0) -> np.ndarray:
        return (rng.standard_normal(shape) * scale).astype(np.float32)

    mapping = {}
    for i in range(2):  # stored as N(0, 1/lrmul), as TensorFlow's equalized lr keeps them
        mapping |= {f"Dense{i}/weight": r(Z if i == 0 else W, W, scale=1 / LRMUL), f"Dense{i}/bias": r(W, scale=30)}
    synthesis = {"4x4/Const/const": r(1, WIDTHS[4], 4, 4)}
    noise = 0
    for side in SIDES:
        out = WIDTHS[side]
        convs = [("Conv", WIDTHS[4])] if side == 4 else [("Conv0_up", WIDTHS[side // 2]), ("Conv1", out)]
        for name, cin in convs:
            scope = f"{side}x{side}/{name}"
            synthesis |= {f"{scope}/weight": r(3, 3, cin, out), f"{scope}/bias": r(out, scale=0.5),
                          f"{scope}/noise_strength": r(scale=0.5), f"{scope}/mod_weight": r(W, cin),
                          f"{scope}/mod_bias": r(cin, scale=0.3), f"noise{noise}": r(1, 1, side, side)}
            noise += 1
        synthesis |= {f"{side}x{side}/ToRGB/weight": r(1, 1, out, 3), f"{side}x{side}/ToRGB/bias": r(3, scale=0.5),
                      f"{side}x{side}/ToRGB/mod_weight": r(W, out), f"{side}x{side}/ToRGB/mod_bias": r(out, scale=0.3)}
    d = {"16x16/FromRGB/weight": r(1, 1, 3, 8), "16x16/FromRGB/bias": r(8, scale=0.5)}
    for side, cin, cout in ((16, 8, 16), (8, 16, 16)):
        d |= {f"{side}x{side}/Conv0/weight": r(3, 3, cin, cin), f"{side}x{side}/Conv0/bias": r(cin, scale=0.5),
              f"{side}x{side}/Conv1_down/weight": r(3, 3, cin, cout),
              f"{side}x{side}/Conv1_down/bias": r(cout, scale=0.5), f"{side}x{side}/Skip/weight": r(1, 1, cin, cout)}
    d |= {"4x4/Conv/weight": r(3, 3, 17, 16), "4x4/Conv/bias": r(16, scale=0.5), "4x4/Dense0/weight": r(256, 16),
          "4x4/Dense0/bias": r(16, scale=0.5), "Output/weight": r(16, 1), "Output/bias": r(1)}
    return mapping | {"../dlatent_avg": r(W)}, synthesis, d


def tf_pickle(mapping: dict, synthesis: dict, d: dict | None, source: str = "", extra: dict | None = None,
              only_gs: bool = False) -> bytes:
    """``(G, D, Gs)`` pickled as TensorFlow's StyleGAN2 training writes it (protocol 3, Python 3.6's default)."""
    own = {k.removeprefix("../"): v for k, v in mapping.items() if k.startswith("../")}

    def generator(name: str) -> Network:
        return network(name, "G_main", own | (extra or {}), source,
                       mapping=network("G_mapping", "G_mapping", {k: v for k, v in mapping.items() if "../" not in k}),
                       synthesis=network("G_synthesis", "G_synthesis_stylegan2", synthesis, source))

    gs = generator("Gs")
    networks = gs if only_gs else (generator("G"), network("D", "D_stylegan2", d or {}, source), gs)
    with fake_modules(**{"dnnlib.tflib.network": {"Network": Network}}):
        return pickle.dumps(networks, protocol=3)


# -- the reference, in TensorFlow's layout -------------------------------------------------------------


def lrelu(x: torch.Tensor) -> torch.Tensor:
    return torch.where(x >= 0, x, 0.2 * x) * SQRT2


def correlate(x: torch.Tensor, kernel: torch.Tensor, pad: int = 0) -> torch.Tensor:
    """TensorFlow's conv2d on NHWC ``x`` with a ``[kh, kw, in, out]`` kernel: a correlation, stride 1."""
    kh, kw = kernel.shape[:2]
    x = F.pad(x, (0, 0, pad, pad, pad, pad))
    h, w = x.shape[1] - kh + 1, x.shape[2] - kw + 1
    return sum(torch.einsum("nhwc,co->nhwo", x[:, i : i + h, j : j + w], kernel[i, j])
               for i in range(kh) for j in range(kw))


def fir(x: torch.Tensor, pad0: int, pad1: int, gain: float = 1.0) -> torch.Tensor:
    """Each channel padded (``pad0`` before, ``pad1`` after) and filtered with ``gain`` times the [1,3,3,1] filter."""
    x = F.pad(x, (0, 0, pad0, pad1, pad0, pad1))
    return correlate(x, (FIR * gain)[:, :, None, None] * torch.eye(x.shape[3], dtype=x.dtype))


def zeros_between(x: torch.Tensor) -> torch.Tensor:
    n, h, w, c = x.shape
    spread = x.new_zeros(n, 2 * h, 2 * w, c)
    spread[:, ::2, ::2] = x
    return spread


def tf_generator(v: dict[str, np.ndarray], z: torch.Tensor) -> torch.Tensor:
    """Images ``[N, 3, 16, 16]`` (NCHW, as the studio's) from Gs's variables at psi 1, with the stored noise."""
    def t(name: str) -> torch.Tensor:
        return torch.from_numpy(np.asarray(v[name])).double()

    x = z.double()
    x = x * (x.square().mean(1, keepdim=True) + 1e-8).rsqrt()
    for i in range(2):
        weight = t(f"mapping/Dense{i}/weight")
        x = lrelu(x @ weight * (LRMUL / math.sqrt(weight.shape[0])) + t(f"mapping/Dense{i}/bias") * LRMUL)
    w = x

    def modconv(x: torch.Tensor, scope: str, up: bool = False, demodulate: bool = True) -> torch.Tensor:
        kernel = t(f"{scope}/weight")
        kh, kw, cin, _ = kernel.shape
        styles = w @ t(f"{scope}/mod_weight") / math.sqrt(W) + t(f"{scope}/mod_bias") + 1
        outs = []
        for n in range(len(x)):
            k = kernel / math.sqrt(kh * kw * cin) * styles[n][None, None, :, None]
            if demodulate:
                k = k * (k.square().sum(dim=[0, 1, 2]) + 1e-8).rsqrt()
            if up:
                outs.append(correlate(fir(zeros_between(x[n : n + 1]), 3, 2, gain=4.0), k))
            else:
                outs.append(correlate(x[n : n + 1], k, kh // 2))
        return torch.cat(outs)

    def layer(x: torch.Tensor, scope: str, noise: int, up: bool = False) -> torch.Tensor:
        y = modconv(x, f"synthesis/{scope}", up)
        y = y + t(f"synthesis/noise{noise}")[0, 0, :, :, None] * t(f"synthesis/{scope}/noise_strength")
        return lrelu(y + t(f"synthesis/{scope}/bias"))

    def torgb(x: torch.Tensor, side: int) -> torch.Tensor:
        return modconv(x, f"synthesis/{side}x{side}/ToRGB", demodulate=False) + t(f"synthesis/{side}x{side}/ToRGB/bias")

    x = t("synthesis/4x4/Const/const").permute(0, 2, 3, 1).repeat(len(z), 1, 1, 1)
    x = layer(x, "4x4/Conv", 0)
    img = torgb(x, 4)
    for i, side in enumerate(SIDES[1:]):
        x = layer(x, f"{side}x{side}/Conv0_up", 2 * i + 1, up=True)
        x = layer(x, f"{side}x{side}/Conv1", 2 * i + 2)
        img = fir(zeros_between(img), 2, 1, gain=4.0) + torgb(x, side)
    return img.permute(0, 3, 1, 2)


def tf_discriminator(v: dict[str, np.ndarray], images: torch.Tensor) -> torch.Tensor:
    """Logits ``[N]`` of D's variables for NCHW ``images``."""
    def conv(x: torch.Tensor, name: str, pad: int = 0) -> torch.Tensor:
        kernel = torch.from_numpy(v[f"{name}/weight"]).double()
        return correlate(x, kernel / math.sqrt(kernel[:, :, :, 0].numel()), pad)

    def bias(name: str) -> torch.Tensor:
        return torch.from_numpy(v[f"{name}/bias"]).double()

    x = images.double().permute(0, 2, 3, 1)
    x = lrelu(conv(x, "16x16/FromRGB") + bias("16x16/FromRGB"))
    for side in (16, 8):
        s = f"{side}x{side}"
        skip = conv(fir(x, 1, 1), f"{s}/Skip")[:, ::2, ::2]
        x = lrelu(conv(x, f"{s}/Conv0", 1) + bias(f"{s}/Conv0"))
        x = lrelu(conv(fir(x, 2, 2), f"{s}/Conv1_down")[:, ::2, ::2] + bias(f"{s}/Conv1_down"))
        x = (x + skip) / SQRT2
    nchw = x.permute(0, 3, 1, 2)
    groups = nchw.reshape(4, -1, 1, 16, 4, 4)  # groups of 4 samples, one feature
    std = ((groups - groups.mean(0)).square().mean(0) + 1e-8).sqrt().mean(dim=[2, 3, 4])  # [N/4, 1]
    x = torch.cat([x, std.repeat(4, 1)[:, None, None, :].expand(-1, 4, 4, 1)], dim=3)
    x = lrelu(conv(x, "4x4/Conv", 1) + bias("4x4/Conv")).permute(0, 3, 1, 2).flatten(1)
    for name, act in (("4x4/Dense0", True), ("Output", False)):
        weight = torch.from_numpy(v[f"{name}/weight"]).double()
        x = x @ weight / math.sqrt(weight.shape[0]) + bias(name)
        x = lrelu(x) if act else x
    return x[:, 0]


# -- tests ----------------------------------------------------------------------------------------------


def gs_variables(mapping: dict, synthesis: dict) -> dict[str, np.ndarray]:
    """Gs's variables by their full path, as the reference reads them."""
    return {("dlatent_avg" if k.startswith("../") else f"mapping/{k}"): v for k, v in mapping.items()} | \
           {f"synthesis/{k}": v for k, v in synthesis.items()}


@pytest.mark.slow  # runs the command line in a child process
def test_a_tf_pickle_draws_and_judges_what_tensorflow_would_and_its_source_never_runs(home: Path,
                                                                                        tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    mapping, synthesis, d = random_variables()
    path = tmp_path / "stylegan2-art-config-f.pkl"
    path.write_bytes(tf_pickle(mapping, synthesis, d, source=f"open({str(marker)!r}, 'w').write('ran')"))
    result = run_cli("import", str(path), "--name", "tf", home=home)
    assert result.returncode == 0, result.stderr
    assert not marker.exists()
    config = load_config(home / "models" / "tf")
    assert (config.architecture, config.resolution, config.z_dim, config.num_classes) == ("stylegan2", 16, Z, 0)
    assert (config.arch.channel_base, config.arch.channel_max, config.arch.mapping_layers) == (128, 16, 2)

    model = zoo.load("tf")
    z = torch.randn(4, Z, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        drawn = model.generator(z)
    torch.testing.assert_close(drawn.double(), tf_generator(gs_variables(mapping, synthesis), z), atol=1e-4, rtol=0)
    assert torch.equal(model.generator.state_dict()["mapping.w_avg"], torch.from_numpy(mapping["../dlatent_avg"]))

    images = torch.randn(4, 3, 16, 16, generator=torch.Generator().manual_seed(2))
    judged = kept_discriminator_logits(home / "models" / "tf", images)
    torch.testing.assert_close(judged.double(), tf_discriminator(d, images), atol=1e-4, rtol=0)


def test_a_lone_gs_imports_without_a_discriminator(home: Path, tmp_path: Path) -> None:
    mapping, synthesis, _ = random_variables(3)
    (tmp_path / "gs.pkl").write_bytes(tf_pickle(mapping, synthesis, None, only_gs=True))
    folder = zoo.import_file(tmp_path / "gs.pkl", "lone")
    assert not (folder / DISCRIMINATOR_FILE).exists()
    z = torch.randn(2, Z, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        drawn = zoo.load("lone").generator(z)
    torch.testing.assert_close(drawn.double(), tf_generator(gs_variables(mapping, synthesis), z), atol=1e-4, rtol=0)


@pytest.mark.slow  # runs the command line in a child process
def test_bad_tf_pickles_are_refused_in_one_line_and_leave_earlier_models_alone(home: Path, tmp_path: Path) -> None:
    mapping, synthesis, d = random_variables()
    good = tf_pickle(mapping, synthesis, d)
    (tmp_path / "good.pkl").write_bytes(good)
    zoo.import_file(tmp_path / "good.pkl", "kept")
    before = {p.name: p.read_bytes() for p in (home / "models" / "kept").iterdir()}

    (tmp_path / "cut.pkl").write_bytes(good[: len(good) * 2 // 3])

    class Session:
        """Stands in for a TensorFlow helper a foreign pickle might name."""

    with fake_modules(**{"dnnlib.tflib.tfutil": {"Session": Session}}):
        (tmp_path / "foreign.pkl").write_bytes(pickle.dumps((Session(), Session(), Session()), protocol=3))
    for name, said in (("cut.pkl", "ends early"), ("foreign.pkl", "dnnlib.tflib.tfutil.Session")):
        assert_import_refused(tmp_path / name, said, home)

    labelled = {**mapping, "LabelConcat/weight": np.ones((3, Z), np.float32)}
    odd = {**synthesis, "16x16/Conv1/extra": np.ones(3, np.float32)}
    small = {**synthesis, "16x16/Conv1/mod_weight": np.ones((W, 5), np.float32)}
    cases = [(tf_pickle(labelled, synthesis, d), "conditional TensorFlow-era model"),
             (tf_pickle(mapping, odd, d), "variable synthesis/16x16/Conv1/extra that StyleGAN2's has not"),
             (tf_pickle(mapping, small, d), r"tensor 'synthesis.b16.conv1.affine.weight' has shape \(5, 8\)"),
             (tf_pickle(mapping, {k: v for k, v in synthesis.items() if k != "noise3"}, d),
              "lacks the variable synthesis/noise3")]
    for data, said in cases:
        (tmp_path / "bad.pkl").write_bytes(data)
        with pytest.raises(zoo.ModelUnavailable, match=said):
            zoo.import_file(tmp_path / "bad.pkl", "bad")
    with pytest.raises(zoo.ModelUnavailable, match="is a model of 0 classes, not 2"):
        zoo.import_file(tmp_path / "good.pkl", "bad", ("a", "b"))
    assert zoo.model_names()[len(zoo.BUILTIN):] == ["kept"]
    assert {p.name: p.read_bytes() for p in (home / "models" / "kept").iterdir()} == before
