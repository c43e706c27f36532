"""rosinality/stylegan2-pytorch checkpoints (``.pt``) imported from the command line.

The checkpoints are written here with ``torch.save`` in rosinality's layout (``g_ema``, ``g``, ``d``,
optimizer states, ``args`` as an ``argparse.Namespace``), from seeded random tensors. The reference follows
rosinality's networks sample by sample: equalized-lr layers, the modulated kernel built per sample, the
up-sampling convolution as a stride-2 transposed convolution written out as a scatter, then the blur, and
ToRGB skips up-sampled by zero insertion and the same filter.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from studio import zoo
from studio.models.folder import DISCRIMINATOR_FILE, load_config
from tests.conftest import assert_import_refused, kept_discriminator_logits, run_cli

SQRT2 = math.sqrt(2.0)
TAPS = torch.tensor([1.0, 3.0, 3.0, 1.0])
BLUR = torch.outer(TAPS, TAPS) / 64.0  # rosinality's make_kernel([1, 3, 3, 1])
SIDES = (4, 8, 16)
WIDTHS = {4: 16, 8: 16, 16: 8}
STYLE = 8
LR_MLP = 0.01


def checkpoint(seed: int = 0, latent_avg: bool = False) -> tuple[dict, dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """A training checkpoint of a 16 px rosinality StyleGAN2, its g_ema and its d."""
    gen = torch.Generator().manual_seed(seed)

    def r(*shape: int, scale: float = 1.0) -> torch.Tensor:
        return torch.randn(*shape, generator=gen) * scale

    g = {}
    for i in (1, 2):  # EqualLinear stores N(0, 1) / lr_mul
        g |= {f"style.{i}.weight": r(STYLE, STYLE, scale=1 / LR_MLP), f"style.{i}.bias": r(STYLE, scale=30)}
    g["input.input"] = r(1, WIDTHS[4], 4, 4)

    def styled(name: str, cin: int, cout: int, up: bool) -> None:
        g.update({f"{name}.conv.weight": r(1, cout, cin, 3, 3), f"{name}.conv.modulation.weight": r(cin, STYLE),
                  f"{name}.conv.modulation.bias": 1 + r(cin, scale=0.3), f"{name}.noise.weight": r(1, scale=0.5),
                  f"{name}.activate.bias": r(cout, scale=0.5)})
        if up:
            g[f"{name}.conv.blur.kernel"] = BLUR * 4

    def to_rgb(name: str, cin: int, up: bool) -> None:
        g.update({f"{name}.conv.weight": r(1, 3, cin, 1, 1), f"{name}.conv.modulation.weight": r(cin, STYLE),
                  f"{name}.conv.modulation.bias": 1 + r(cin, scale=0.3), f"{name}.bias": r(1, 3, 1, 1, scale=0.5)})
        if up:
            g[f"{name}.upsample.kernel"] = BLUR * 4

    styled("conv1", WIDTHS[4], WIDTHS[4], False)
    to_rgb("to_rgb1", WIDTHS[4], False)
    for k, side in enumerate(SIDES[1:]):
        styled(f"convs.{2 * k}", WIDTHS[side // 2], WIDTHS[side], True)
        styled(f"convs.{2 * k + 1}", WIDTHS[side], WIDTHS[side], False)
        to_rgb(f"to_rgbs.{k}", WIDTHS[side], True)
    for j, side in enumerate((4, 8, 8, 16, 16)):
        g[f"noises.noise_{j}"] = r(1, 1, side, side)

    d = {"convs.0.0.weight": r(8, 3, 1, 1), "convs.0.1.bias": r(8, scale=0.5)}
    for i, (cin, cout) in enumerate(((8, 16), (16, 16)), start=1):
        d |= {f"convs.{i}.conv1.0.weight": r(cin, cin, 3, 3), f"convs.{i}.conv1.1.bias": r(cin, scale=0.5),
              f"convs.{i}.conv2.0.kernel": BLUR.clone(), f"convs.{i}.conv2.1.weight": r(cout, cin, 3, 3),
              f"convs.{i}.conv2.2.bias": r(cout, scale=0.5), f"convs.{i}.skip.0.kernel": BLUR.clone(),
              f"convs.{i}.skip.1.weight": r(cout, cin, 1, 1)}
    d |= {"final_conv.0.weight": r(16, 17, 3, 3), "final_conv.1.bias": r(16, scale=0.5),
          "final_linear.0.weight": r(16, 256), "final_linear.0.bias": r(16, scale=0.5),
          "final_linear.1.weight": r(1, 16), "final_linear.1.bias": r(1)}
    optim = {"state": {0: {"step": torch.tensor(10.0), "exp_avg": r(3)}},
             "param_groups": [{"lr": 0.002, "betas": (0, 0.99), "params": [0]}]}
    args = argparse.Namespace(path="lmdb", arch="stylegan2", size=16, latent=STYLE, n_mlp=2, channel_multiplier=2,
                              ckpt=None, lr=0.002, wandb=False, augment=True)
    saved = {"g": {k: v.clone() for k, v in g.items()}, "d": d, "g_ema": g, "g_optim": optim, "d_optim": optim,
             "args": args, "ada_aug_p": 0.12}
    if latent_avg:
        saved["latent_avg"] = r(STYLE)
    return saved, g, d


# -- the reference, rosinality's networks written out -------------------------------------------------------


def lrelu(x: torch.Tensor) -> torch.Tensor:
    return torch.where(x >= 0, x, 0.2 * x) * SQRT2


def blur(x: torch.Tensor, pad0: int, pad1: int, kernel: torch.Tensor) -> torch.Tensor:
    """upfirdn2d without resampling: pad, then convolve each channel with ``kernel``."""
    x = F.pad(x, [pad0, pad1, pad0, pad1])
    k = kernel.flip([0, 1]).to(x.dtype)[None, None].repeat(x.shape[1], 1, 1, 1)
    return F.conv2d(x, k, groups=x.shape[1])


def transposed_conv(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Stride-2 transposed convolution of ``x [1, I, H, W]`` by ``weight [O, I, k, k]``: each input pixel adds
    the kernel, scaled by it, at twice its position."""
    _, _, h, w = x.shape
    k = weight.shape[-1]
    out = x.new_zeros(1, weight.shape[0], 2 * h + k - 2, 2 * w + k - 2)
    for i in range(k):
        for j in range(k):
            out[:, :, i : i + 2 * h : 2, j : j + 2 * w : 2] += torch.einsum("nchw,oc->nohw", x, weight[:, :, i, j])
    return out


def mapping(g: dict, z: torch.Tensor) -> torch.Tensor:
    x = z.double() * (z.double().square().mean(1, keepdim=True) + 1e-8).rsqrt()
    for i in (1, 2):
        weight = g[f"style.{i}.weight"].double()
        x = lrelu(x @ (weight * LR_MLP / math.sqrt(weight.shape[1])).T + g[f"style.{i}.bias"].double() * LR_MLP)
    return x


def ros_generator(g: dict[str, torch.Tensor], z: torch.Tensor) -> torch.Tensor:
    """rosinality's ``g_ema([z], randomize_noise=False)`` at truncation 1, in float64."""
    t = {k: v.double() for k, v in g.items()}
    w = mapping(g, z)

    def modconv(x: torch.Tensor, name: str, up: bool = False, demodulate: bool = True) -> torch.Tensor:
        weight = t[f"{name}.conv.weight"][0]
        cin, k = weight.shape[1], weight.shape[-1]
        styles = w @ (t[f"{name}.conv.modulation.weight"] / math.sqrt(STYLE)).T + t[f"{name}.conv.modulation.bias"]
        outs = []
        for n in range(len(x)):
            per_sample = weight / math.sqrt(cin * k * k) * styles[n][None, :, None, None]
            if demodulate:
                per_sample = per_sample * (per_sample.square().sum(dim=[1, 2, 3], keepdim=True) + 1e-8).rsqrt()
            if up:
                outs.append(blur(transposed_conv(x[n : n + 1], per_sample), 1, 1, t[f"{name}.conv.blur.kernel"]))
            else:
                outs.append(F.conv2d(x[n : n + 1], per_sample, padding=k // 2))
        return torch.cat(outs)

    def styled(x: torch.Tensor, name: str, noise: int, up: bool = False) -> torch.Tensor:
        y = modconv(x, name, up) + t[f"{name}.noise.weight"] * t[f"noises.noise_{noise}"]
        return lrelu(y + t[f"{name}.activate.bias"][None, :, None, None])

    def to_rgb(x: torch.Tensor, name: str, skip: torch.Tensor | None) -> torch.Tensor:
        out = modconv(x, name, demodulate=False) + t[f"{name}.bias"]
        if skip is None:
            return out
        n, c, h, w_ = skip.shape
        spread = skip.new_zeros(n, c, 2 * h, 2 * w_)
        spread[:, :, ::2, ::2] = skip
        return out + blur(spread, 2, 1, t[f"{name}.upsample.kernel"])

    x = t["input.input"].repeat(len(z), 1, 1, 1)
    x = styled(x, "conv1", 0)
    skip = to_rgb(x, "to_rgb1", None)
    for k in range(len(SIDES) - 1):
        x = styled(x, f"convs.{2 * k}", 2 * k + 1, up=True)
        x = styled(x, f"convs.{2 * k + 1}", 2 * k + 2)
        skip = to_rgb(x, f"to_rgbs.{k}", skip)
    return skip


def ros_discriminator(d: dict[str, torch.Tensor], images: torch.Tensor) -> torch.Tensor:
    """rosinality's ``d(images)`` ``[N]``, in float64."""
    t = {k: v.double() for k, v in d.items()}

    def conv_layer(x: torch.Tensor, name: str, down: bool = False, activate: bool = True) -> torch.Tensor:
        weight = t[f"{name}.{1 if down else 0}.weight"]
        scaled = weight / math.sqrt(weight[0].numel())
        if down:
            pad = 2 if weight.shape[-1] == 3 else 1
            x = F.conv2d(blur(x, pad, pad, t[f"{name}.0.kernel"]), scaled, stride=2)
        else:
            x = F.conv2d(x, scaled, padding=weight.shape[-1] // 2)
        if not activate:
            return x
        return lrelu(x + t[f"{name}.{2 if down else 1}.bias"][None, :, None, None])

    x = conv_layer(images.double(), "convs.0")
    for i in (1, 2):
        out = conv_layer(conv_layer(x, f"convs.{i}.conv1"), f"convs.{i}.conv2", down=True)
        x = (out + conv_layer(x, f"convs.{i}.skip", down=True, activate=False)) / SQRT2
    groups = x.reshape(4, -1, 1, 16, 4, 4)
    std = (groups.var(0, unbiased=False) + 1e-8).sqrt().mean(dim=[2, 3, 4], keepdim=True).squeeze(2)
    x = torch.cat([x, std.repeat(4, 1, 4, 4)], dim=1)
    x = conv_layer(x, "final_conv").flatten(1)
    weight = t["final_linear.0.weight"]
    x = lrelu(x @ (weight / math.sqrt(weight.shape[1])).T + t["final_linear.0.bias"])
    weight = t["final_linear.1.weight"]
    return (x @ (weight / math.sqrt(weight.shape[1])).T + t["final_linear.1.bias"])[:, 0]


# -- tests ----------------------------------------------------------------------------------------------------


@pytest.mark.slow  # runs the command line in a child process
def test_a_rosinality_checkpoint_draws_and_judges_what_rosinality_would(home: Path, tmp_path: Path) -> None:
    saved, g, d = checkpoint()
    torch.save(saved, tmp_path / "550000.pt")
    result = run_cli("import", str(tmp_path / "550000.pt"), "--name", "ros", home=home)
    assert result.returncode == 0, result.stderr
    config = load_config(home / "models" / "ros")
    assert (config.architecture, config.resolution, config.z_dim, config.arch.w_dim) == ("stylegan2", 16, 8, 8)
    assert (config.arch.channel_base, config.arch.channel_max, config.arch.mapping_layers) == (128, 16, 2)

    model = zoo.load("ros")
    z = torch.randn(4, STYLE, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        drawn = model.generator(z)
    torch.testing.assert_close(drawn.double(), ros_generator(g, z), atol=1e-4, rtol=0)

    # No latent_avg in a training checkpoint: w_avg is the mean w of 10,000 samples, close to the true mean.
    many = torch.randn(20_000, STYLE, generator=torch.Generator().manual_seed(99))
    w_avg = model.generator.state_dict()["mapping.w_avg"].double()
    torch.testing.assert_close(w_avg, mapping(g, many).mean(0), atol=0.03, rtol=0)

    images = torch.randn(4, 3, 16, 16, generator=torch.Generator().manual_seed(2))
    judged = kept_discriminator_logits(home / "models" / "ros", images)
    torch.testing.assert_close(judged.double(), ros_discriminator(d, images), atol=1e-4, rtol=0)


def test_a_stored_latent_avg_is_w_avg_and_a_foreign_discriminator_is_left_out(home: Path, tmp_path: Path) -> None:
    saved, _, _ = checkpoint(seed=5, latent_avg=True)
    saved["d"]["final_linear.2.weight"] = torch.ones(1)  # a D of another design
    path = tmp_path / "converted.pt"
    torch.save(saved, path)
    folder = zoo.import_file(path, "ros")
    assert torch.equal(zoo.load("ros").generator.state_dict()["mapping.w_avg"], saved["latent_avg"])
    assert not (folder / DISCRIMINATOR_FILE).exists()
    assert "discriminator was not kept" in load_config(folder).description
    assert "final_linear.2.weight" in load_config(folder).description


@pytest.mark.slow  # runs the command line in a child process
def test_bad_pt_files_are_refused_in_one_line_and_leave_earlier_models_alone(home: Path, tmp_path: Path) -> None:
    saved, g, _ = checkpoint()
    torch.save(saved, tmp_path / "good.pt")
    zoo.import_file(tmp_path / "good.pt", "kept")
    before = {p.name: p.read_bytes() for p in (home / "models" / "kept").iterdir()}

    torch.save(torch.nn.Sequential(torch.nn.Linear(8, 8)), tmp_path / "module.pt")
    data = (tmp_path / "good.pt").read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 2])
    for name, said in (("module.pt", "holds a whole pickled object of class torch.nn.modules"),
                       ("cut.pt", "is not a readable PyTorch tensor file")):
        assert_import_refused(tmp_path / name, said, home)

    cases = [({**g, "convs.1.extra": torch.ones(2)}, "tensor convs.1.extra that rosinality's StyleGAN2 has not"),
             ({**g, "convs.3.conv.modulation.weight": torch.ones(8, 5)},
              r"tensor 'synthesis.b16.conv1.affine.weight' has shape \(8, 5\)"),
             ({**g, "convs.0.conv.blur.kernel": torch.ones(4, 4)}, "another filter than"),
             ({k: v for k, v in g.items() if k != "noises.noise_3"}, "lacks the tensor noises.noise_3")]
    for bad_g, said in cases:
        torch.save({**saved, "g_ema": bad_g}, tmp_path / "bad.pt")
        with pytest.raises(zoo.ModelUnavailable, match=said):
            zoo.import_file(tmp_path / "bad.pt", "bad")
    with pytest.raises(zoo.ModelUnavailable, match="is a model of 0 classes, not 2"):
        zoo.import_file(tmp_path / "good.pt", "bad", ("a", "b"))
    assert zoo.model_names()[len(zoo.BUILTIN):] == ["kept"]
    assert {p.name: p.read_bytes() for p in (home / "models" / "kept").iterdir()} == before
