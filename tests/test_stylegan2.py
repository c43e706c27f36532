"""StyleGAN2 networks against naive references written here from the paper's maths.

Each reference reads the weights from the state dict by name and computes step by step: matrix
products for the mapping, per-sample modulated/demodulated kernels with ``F.conv2d``, FIR
up-sampling as zero insertion followed by a 4x4 convolution.
"""

import math

import pytest
import torch
import torch.nn.functional as F

from studio.models.face import DiscriminatorFace, GeneratorFace
from studio.models.folder import ModelConfig, build_generator, from_pretrained, save_pretrained
from studio.models.stylegan2 import StyleGAN2Discriminator, StyleGAN2Generator, StyleGAN2Config

SQRT2 = math.sqrt(2.0)
TAPS = torch.tensor([1.0, 3.0, 3.0, 1.0])
FIR = torch.outer(TAPS, TAPS) / 64.0  # [4, 4], sums to 1


def tiny(**overrides) -> StyleGAN2Config:
    """A 16 px config with few channels (b4 and b8 at 16 channels, b16 at 8)."""
    kwargs = dict(resolution=16, z_dim=6, w_dim=5, mapping_layers=3, channel_base=128, channel_max=16)
    return StyleGAN2Config(**{**kwargs, **overrides})


def randomized(module: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Give every bias, noise strength and ``w_avg`` non-trivial values, so each term is exercised."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for name, tensor in [*module.named_parameters(), *module.named_buffers()]:
            if tensor.ndim <= 1 and "resample_filter" not in name:
                tensor.add_(0.3 * torch.randn_like(tensor))
    return module.eval()


def lrelu(x: torch.Tensor) -> torch.Tensor:
    return torch.where(x >= 0, x, 0.2 * x) * SQRT2


def fc(sd: dict, name: str, x: torch.Tensor, lr: float = 1.0, act: bool = False) -> torch.Tensor:
    """An equalized-lr layer: stored weights times lr / sqrt(fan_in), bias times lr."""
    weight, bias = sd[f"{name}.weight"], sd[f"{name}.bias"]
    y = x @ (weight * lr / math.sqrt(weight.shape[1])).T + bias * lr
    return lrelu(y) if act else y


def fir_up(x: torch.Tensor, pad: tuple[int, int] = (2, 1)) -> torch.Tensor:
    """Zeros after every pixel, zero padding, then each channel convolved with 4 * FIR."""
    n, c, h, w = x.shape
    up = torch.zeros(n, c, 2 * h, 2 * w)
    for i in range(h):
        for j in range(w):
            up[:, :, 2 * i, 2 * j] = x[:, :, i, j]
    up = F.pad(up, [pad[0], pad[1], pad[0], pad[1]])
    return torch.cat([F.conv2d(up[:, k : k + 1], 4 * FIR[None, None]) for k in range(c)], dim=1)


def fir_down(x: torch.Tensor, pad: int = 1, take_every: int = 2) -> torch.Tensor:
    """Each channel convolved with FIR after zero padding, then every ``take_every``-th pixel."""
    x = F.pad(x, [pad] * 4)
    y = torch.cat([F.conv2d(x[:, k : k + 1], FIR[None, None]) for k in range(x.shape[1])], dim=1)
    return y[:, :, ::take_every, ::take_every]


def modconv(x: torch.Tensor, weight: torch.Tensor, styles: torch.Tensor, demodulate: bool, up: bool) -> torch.Tensor:
    """Sample by sample: scale the kernel's input channels by the styles, normalize each output channel."""
    outs = []
    for n in range(x.shape[0]):
        w = weight * styles[n][None, :, None, None]  # [O, I, k, k]
        if demodulate:
            w = w / (w.square().sum(dim=[1, 2, 3], keepdim=True) + 1e-8).sqrt()
        if up:  # the up-sampling layer convolves (kernel flipped) on the zero-filled, filtered grid
            outs.append(F.conv2d(fir_up(x[n : n + 1], pad=(3, 2)), w.flip([2, 3])))
        else:
            outs.append(F.conv2d(x[n : n + 1], w, padding=w.shape[-1] // 2))
    return torch.cat(outs)


def layer(sd: dict, name: str, x: torch.Tensor, w: torch.Tensor, up: bool, clamp: float | None) -> torch.Tensor:
    """A synthesis layer with the stored constant noise."""
    y = modconv(x, sd[f"{name}.weight"], fc(sd, f"{name}.affine", w), True, up)
    y = y + sd[f"{name}.noise_const"] * sd[f"{name}.noise_strength"] + sd[f"{name}.bias"][:, None, None]
    y = lrelu(y)
    return y.clamp(-clamp, clamp) if clamp is not None else y


def torgb(sd: dict, name: str, x: torch.Tensor, w: torch.Tensor, clamp: float | None) -> torch.Tensor:
    weight = sd[f"{name}.weight"]
    styles = fc(sd, f"{name}.affine", w) / math.sqrt(weight.shape[1])
    y = modconv(x, weight, styles, False, False) + sd[f"{name}.bias"][:, None, None]
    return y.clamp(-clamp, clamp) if clamp is not None else y


def mapping(sd: dict, config: StyleGAN2Config, z: torch.Tensor, c: torch.Tensor | None) -> torch.Tensor:
    """w ``[N, w_dim]``: both inputs normalized to unit second moment, then the MLP."""
    x = z / z.square().mean(dim=1, keepdim=True).add(1e-8).sqrt()
    if c is not None:
        e = fc(sd, "mapping.embed", c)
        x = torch.cat([x, e / e.square().mean(dim=1, keepdim=True).add(1e-8).sqrt()], dim=1)
    for i in range(config.mapping_layers):
        x = fc(sd, f"mapping.fc{i}", x, lr=config.lr_multiplier, act=True)
    return x


def generator(g: StyleGAN2Generator, z: torch.Tensor, c: torch.Tensor | None) -> torch.Tensor:
    """The whole skip generator at psi=1 with constant noise; every layer reads the same w."""
    sd, config = g.state_dict(), g.config
    clamp = config.conv_clamp
    w = mapping(sd, config, z, c)
    x = sd["synthesis.b4.const"][None].repeat(len(z), 1, 1, 1)
    x = layer(sd, "synthesis.b4.conv1", x, w, False, clamp)
    img = torgb(sd, "synthesis.b4.torgb", x, w, clamp)
    res = 8
    while res <= config.resolution:
        b = f"synthesis.b{res}"
        x = layer(sd, f"{b}.conv0", x, w, True, clamp)
        x = layer(sd, f"{b}.conv1", x, w, False, clamp)
        img = fir_up(img) + torgb(sd, f"{b}.torgb", x, w, clamp)
        res *= 2
    return img


def test_config_counts_style_inputs_and_refuses_bad_values() -> None:
    config = tiny()
    assert config.num_ws == 6  # b4: conv + torgb; b8, b16: two convs each; the last torgb's w is its own
    assert [config.block_channels(r) for r in config.block_resolutions] == [16, 16, 8]
    assert StyleGAN2Config(resolution=1024).num_ws == 18  # the FFHQ generator's 18 style inputs
    with pytest.raises(ValueError, match="power of two >= 8, not 48"):
        StyleGAN2Config(resolution=48)
    with pytest.raises(ValueError, match="conv_clamp must be positive"):
        StyleGAN2Config(conv_clamp=0.0)
    built = build_generator(ModelConfig("stylegan2", {"resolution": 16, "z_dim": 6, "w_dim": 5}))
    assert isinstance(built, StyleGAN2Generator)


def test_mapping_normalizes_z_uses_the_lr_multiplier_and_truncates_toward_w_avg() -> None:
    g = randomized(StyleGAN2Generator(tiny(lr_multiplier=0.05)))
    sd = g.state_dict()
    z = torch.randn(4, 6) * 7  # normalization removes the scale
    with torch.no_grad():
        w = mapping(sd, g.config, z, None)
        ws = g.mapping(z, None)
        assert ws.shape == (4, 6, 5)
        torch.testing.assert_close(ws, w[:, None].expand(4, 6, 5), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(g.mapping(z / 7, None), ws, atol=1e-5, rtol=1e-5)
        avg = sd["mapping.w_avg"]
        cut = g.mapping(z, None, truncation_psi=0.3, truncation_cutoff=2)
        torch.testing.assert_close(cut[:, :2], (avg + 0.3 * (w - avg))[:, None].expand(4, 2, 5), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(cut[:, 2:], ws[:, 2:])
        torch.testing.assert_close(g.mapping(z, None, truncation_psi=0.0), avg.expand(4, 6, 5))
        torch.testing.assert_close(g.latent_features(z, None), w, atol=1e-5, rtol=1e-5)


def test_w_avg_tracks_the_batch_mean_only_in_training() -> None:
    g = randomized(StyleGAN2Generator(tiny()))
    z = torch.randn(8, 6)
    before = g.mapping.w_avg.clone()
    with torch.no_grad():
        w = mapping(g.state_dict(), g.config, z, None)
        g.latent_features(z, None)
        g(z)  # eval mode
        assert torch.equal(g.mapping.w_avg, before)
        g.train()(z)
    torch.testing.assert_close(g.mapping.w_avg, 0.995 * before + 0.005 * w.mean(0), atol=1e-6, rtol=1e-5)


def test_conditional_mapping_embeds_and_normalizes_the_class() -> None:
    g = randomized(StyleGAN2Generator(tiny(num_classes=3, embed_features=4)))
    z, c = torch.randn(3, 6), torch.tensor([[1.0, 0, 0], [0, 1, 0], [0.5, 0, 0.5]])
    with torch.no_grad():
        torch.testing.assert_close(g.mapping(z, c)[:, 0], mapping(g.state_dict(), g.config, z, c), atol=1e-5, rtol=1e-5)
        assert not torch.allclose(g.mapping(z, c), g.mapping(z, c.roll(1, 0)))
    with pytest.raises(ValueError, match="class-conditional"):
        g(z)


def test_fir_upsampling_keeps_a_constant_image_constant_inside() -> None:
    from studio.models.stylegan2 import fir_filter, upsample

    torch.testing.assert_close(fir_filter(), FIR)
    x = torch.randn(2, 3, 5, 5)
    torch.testing.assert_close(upsample(x, fir_filter()), fir_up(x), atol=1e-6, rtol=1e-6)
    flat = upsample(torch.ones(1, 1, 6, 6), fir_filter())
    assert flat.shape == (1, 1, 12, 12)
    torch.testing.assert_close(flat[..., 2:-2, 2:-2], torch.ones(1, 1, 8, 8))


def test_one_synthesis_block_matches_the_per_sample_computation() -> None:
    g = randomized(StyleGAN2Generator(tiny(conv_clamp=0.8)))
    sd, block = g.state_dict(), g.synthesis.b8
    x, img, ws = torch.randn(3, 16, 4, 4), torch.randn(3, 3, 4, 4), torch.randn(3, 3, 5)
    with torch.no_grad():
        got_x, got_img = block(x, img, ws, "const")
    hidden = layer(sd, "synthesis.b8.conv0", x, ws[:, 0], True, 0.8)
    want_x = layer(sd, "synthesis.b8.conv1", hidden, ws[:, 1], False, 0.8)
    want_img = fir_up(img) + torgb(sd, "synthesis.b8.torgb", want_x, ws[:, 2], 0.8)
    torch.testing.assert_close(got_x, want_x, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(got_img, want_img, atol=1e-5, rtol=1e-5)
    assert got_x.abs().max() <= 0.8 and (got_x.abs() == 0.8).any()  # the clamp did bite


@pytest.mark.parametrize(("num_classes", "clamp"), [(0, None), (3, 1.5)])
def test_generator_matches_the_naive_reference(num_classes: int, clamp: float | None) -> None:
    g = randomized(StyleGAN2Generator(tiny(resolution=32, num_classes=num_classes, conv_clamp=clamp)))
    torch.manual_seed(1)
    z = torch.randn(4, 6)
    c = torch.eye(3)[[0, 1, 2, 0]] if num_classes else None
    with torch.no_grad():
        images = g(z, c)
    assert images.shape == (4, 3, 32, 32)
    torch.testing.assert_close(images, generator(g, z, c), atol=1e-4, rtol=0)


def test_noise_modes() -> None:
    g = randomized(StyleGAN2Generator(tiny()))
    ws = g.mapping(torch.randn(2, 6), None).detach()
    with torch.no_grad():
        const = g.synthesis(ws, noise_mode="const")
        assert torch.equal(const, g.synthesis(ws))
        random = g.synthesis(ws, noise_mode="random")
        assert not torch.allclose(random, const) and not torch.allclose(random, g.synthesis(ws, noise_mode="random"))
        for layer_ in g.modules():
            if hasattr(layer_, "noise_const"):
                layer_.noise_const.zero_()
        torch.testing.assert_close(g.synthesis(ws, noise_mode="none"), g.synthesis(ws, noise_mode="const"))
    with pytest.raises(ValueError, match="noise_mode must be one of"):
        g.synthesis(ws, noise_mode="fresh")
    with pytest.raises(ValueError, match=r"ws must be \[N, 6, w_dim\]"):
        g.synthesis(ws[:, :4])


def minibatch_stddev(x: torch.Tensor, group: int) -> torch.Tensor:
    """One extra channel: sample i's group is every sample j with j = i mod (N / group)."""
    n = x.shape[0]
    groups = n // group
    extra = torch.empty(n, 1, *x.shape[2:])
    for i in range(n):
        members = x[[j for j in range(n) if j % groups == i % groups]]
        std = (members - members.mean(0)).square().mean(0).add(1e-8).sqrt()
        extra[i] = std.mean()
    return torch.cat([x, extra], dim=1)


def conv(sd: dict, name: str, x: torch.Tensor, act: bool = True, down: bool = False, gain: float = 1.0) -> torch.Tensor:
    weight = sd[f"{name}.weight"]
    weight = weight / math.sqrt(weight[0].numel())
    k = weight.shape[-1]
    if down and k == 1:
        y = F.conv2d(fir_down(x), weight)
    elif down:  # the 3x3 convolution at every pixel of the filtered image, then every second pixel
        y = F.conv2d(fir_down(x, pad=2, take_every=1), weight)[:, :, ::2, ::2]
    else:
        y = F.conv2d(x, weight, padding=k // 2)
    if f"{name}.bias" in sd:
        y = y + sd[f"{name}.bias"][:, None, None]
    return (lrelu(y) if act else y) * gain


def discriminator(d: StyleGAN2Discriminator, x: torch.Tensor, c: torch.Tensor | None) -> torch.Tensor:
    sd, config = d.state_dict(), d.config
    res = config.resolution
    x = conv(sd, f"b{res}.fromrgb", x)
    while res > 4:
        b, half = f"b{res}", math.sqrt(0.5)
        x = conv(sd, f"{b}.skip", x, act=False, down=True, gain=half) + conv(
            sd, f"{b}.conv1", conv(sd, f"{b}.conv0", x), down=True, gain=half)
        res //= 2
    x = conv(sd, "b4.conv", minibatch_stddev(x, config.mbstd_group_size))
    out = fc(sd, "b4.out", fc(sd, "b4.fc", x.flatten(1), act=True))
    if c is None:
        return out[:, 0]
    e = fc(sd, "mapping.embed", c)
    cmap = e / e.square().mean(dim=1, keepdim=True).add(1e-8).sqrt()
    for i in range(8):
        cmap = fc(sd, f"mapping.fc{i}", cmap, lr=0.01, act=True)
    return (out * cmap).sum(1) / math.sqrt(cmap.shape[1])


@pytest.mark.parametrize("num_classes", [0, 3])
def test_discriminator_matches_the_naive_reference(num_classes: int) -> None:
    d = randomized(StyleGAN2Discriminator(tiny(num_classes=num_classes, mbstd_group_size=2)))
    torch.manual_seed(2)
    x = torch.randn(4, 3, 16, 16)
    c = torch.eye(3)[[0, 1, 2, 1]] if num_classes else None
    with torch.no_grad():
        logits = d(x, c)
        assert logits.shape == (4,)
        torch.testing.assert_close(logits, discriminator(d, x, c), atol=1e-5, rtol=1e-4)
        if num_classes:  # the projection is linear in the mapped class, not the class vector: just check it is read
            assert not torch.allclose(logits, d(x, c.roll(1, 0)))
    if num_classes:
        with pytest.raises(ValueError, match="class-conditional"):
            d(x)


def test_the_face_reads_w_and_the_style_affines() -> None:
    config = tiny(num_classes=2)
    g, d = StyleGAN2Generator(config), StyleGAN2Discriminator(config)
    assert isinstance(g, GeneratorFace) and isinstance(d, DiscriminatorFace)
    assert g.num_style_layers == config.num_ws == 6
    sd = g.state_dict()
    layers = ["b4.conv1", "b4.torgb", "b8.conv0", "b8.conv1", "b8.torgb", "b16.conv0", "b16.conv1", "b16.torgb"]
    affines = [sd[f"synthesis.{name}.affine.weight"] for name in layers]  # each [in_channels, w_dim]
    weight = g.latent_weight()
    assert weight.shape == (5, 16 * 6 + 8 * 2)  # b16.conv0 reads the 16 channels of b8
    assert torch.equal(weight, torch.cat(affines, dim=0).T)
    assert [b.conv1.resolution for b in g.freezable_blocks()] == [4, 8, 16]  # coarse to fine
    assert g.freezable_blocks()[0] is g.synthesis.b4
    assert [b.conv0.weight.shape[1] for b in d.freezable_blocks()] == [8, 16]  # b16 (the image's side), then b8
    assert d.freezable_blocks()[0] is d.b16 and hasattr(d.b16, "fromrgb")


LAYER = ["weight", "bias", "noise_strength", "noise_const", "resample_filter", "affine.weight", "affine.bias"]
RGB = ["weight", "bias", "affine.weight", "affine.bias"]
CONV = ["weight", "bias", "resample_filter"]


def test_state_dict_keys_are_nvidias() -> None:
    g, d = StyleGAN2Generator(tiny()), StyleGAN2Discriminator(tiny())
    g_keys = {"mapping.w_avg", "synthesis.b4.const"}
    g_keys |= {f"mapping.fc{i}.{p}" for i in range(3) for p in ["weight", "bias"]}
    for res, convs in [(4, ["conv1"]), (8, ["conv0", "conv1"]), (16, ["conv0", "conv1"])]:
        b = f"synthesis.b{res}"
        g_keys |= {f"{b}.resample_filter", *(f"{b}.{cv}.{p}" for cv in convs for p in LAYER)}
        g_keys |= {f"{b}.torgb.{p}" for p in RGB}
    d_keys = {*(f"b16.fromrgb.{p}" for p in CONV), *(f"b4.conv.{p}" for p in CONV),
              *(f"b4.{fc}.{p}" for fc in ["fc", "out"] for p in ["weight", "bias"])}
    for res in [16, 8]:
        d_keys |= {f"b{res}.resample_filter", f"b{res}.skip.weight", f"b{res}.skip.resample_filter",
                   *(f"b{res}.{cv}.{p}" for cv in ["conv0", "conv1"] for p in CONV)}
    assert set(g.state_dict()) == g_keys
    assert set(d.state_dict()) == d_keys
    # Equalized lr stores raw weights: N(0, 1), divided by the lr multiplier in the mapping.
    assert 0.8 < g.synthesis.b8.conv0.weight.std() < 1.2
    assert 80 < g.mapping.fc1.weight.std() < 120
    conditional = StyleGAN2Discriminator(tiny(num_classes=3))
    assert {k for k in conditional.state_dict() if k.startswith("mapping.")} == {
        f"mapping.{name}.{p}" for name in ["embed", *(f"fc{i}" for i in range(8))] for p in ["weight", "bias"]}
    assert conditional.b4.out.weight.shape == (16, 16)  # cmap_dim defaults to the 4x4 channels


def test_a_saved_folder_opens_to_the_same_pixels(tmp_path) -> None:
    config = ModelConfig("stylegan2", tiny(num_classes=2, conv_clamp=256.0), class_names=("a", "b"))
    g = randomized(StyleGAN2Generator(config.arch))
    save_pretrained(tmp_path / "m", config, g)
    loaded_config, loaded = from_pretrained(tmp_path / "m")
    assert loaded_config.arch == config.arch
    z, c = torch.randn(2, 6), torch.eye(2)
    with torch.no_grad():
        assert torch.equal(loaded(z, c), g(z, c))
