"""DCGAN networks: shapes, conditioning, configuration checks, the family's face."""

import re
import tokenize
from pathlib import Path

import pytest
import torch

from studio.models.dcgan import RESOLUTIONS, DCGANConfig, Discriminator, Generator
from studio.models.face import DiscriminatorFace, GeneratorFace
from studio.models.folder import ModelConfig, build_discriminator, build_generator


@pytest.mark.parametrize("resolution", RESOLUTIONS)
@pytest.mark.parametrize("num_classes", [0, 4])
def test_shapes_at_every_resolution(resolution: int, num_classes: int) -> None:
    config = DCGANConfig(resolution=resolution, z_dim=12, base_width=4, num_classes=num_classes)
    g, d = Generator(config).eval(), Discriminator(config).eval()
    c = torch.eye(4)[:3] if num_classes else None
    with torch.no_grad():
        x = g(torch.randn(3, 12), c)
        assert x.shape == (3, 3, resolution, resolution)
        assert x.min() >= -1 and x.max() <= 1  # tanh output
        assert d(x, c).shape == (3,)


def test_first_block_is_widest_and_reads_z_and_class() -> None:
    g = Generator(DCGANConfig(resolution=128, z_dim=100, base_width=64, num_classes=8, dropout=0.2))
    conv = g.blocks[0][0]
    assert tuple(conv.weight.shape) == (108, 1024, 4, 4)
    assert any(isinstance(m, torch.nn.Dropout) for m in g.blocks[0])
    assert not any(isinstance(m, torch.nn.Dropout) for m in g.blocks[1])
    assert all(m.bias is None for m in g.modules() if isinstance(m, torch.nn.ConvTranspose2d))


def test_class_vector_changes_both_networks() -> None:
    torch.manual_seed(0)
    config = DCGANConfig(resolution=32, z_dim=8, base_width=4, num_classes=2)
    g, d = Generator(config).eval(), Discriminator(config).eval()
    z = torch.randn(1, 8)
    a, b = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]])
    with torch.no_grad():
        assert not torch.allclose(g(z, a), g(z, b))
        x = g(z, a)
        assert not torch.allclose(d(x, a), d(x, b))
        # Projection is linear in the class vector, so a 50/50 blend scores halfway.
        half = torch.tensor([[0.5, 0.5]])
        assert torch.allclose(d(x, half), (d(x, a) + d(x, b)) / 2, atol=1e-5)


def test_conditional_networks_require_a_class_vector() -> None:
    config = DCGANConfig(resolution=32, z_dim=8, base_width=4, num_classes=2)
    with pytest.raises(ValueError, match="class-conditional"):
        Generator(config)(torch.randn(1, 8))
    with pytest.raises(ValueError, match="class-conditional"):
        Discriminator(config)(torch.randn(1, 3, 32, 32))


@pytest.mark.parametrize(("bad", "message"), [
    ({"resolution": 48}, r"resolution must be one of \(32, 64, 128, 256\), not 48"),
    ({"dropout": 1.0}, r"dropout must be in \[0, 1\), not 1.0"),
    ({"z_dim": 0}, r"invalid DCGAN config: DCGANConfig\(resolution=64, z_dim=0,"),
])
def test_invalid_configs_are_refused(bad: dict, message: str) -> None:
    with pytest.raises(ValueError, match=f"^{message}"):
        DCGANConfig(**bad)


def test_registry_builds_by_name_and_refuses_unknown() -> None:
    kwargs = {"resolution": 32, "z_dim": 8, "base_width": 4}
    assert isinstance(build_generator(ModelConfig("dcgan", kwargs)), Generator)
    assert isinstance(build_discriminator(ModelConfig("dcgan", kwargs)), Discriminator)
    with pytest.raises(ValueError, match="unknown architecture 'stylegan9'"):
        build_generator(ModelConfig("stylegan9", kwargs))


def test_the_generator_face_reads_the_layer_that_takes_z() -> None:
    torch.manual_seed(0)
    config = DCGANConfig(resolution=32, z_dim=8, base_width=4, num_classes=3)
    g = Generator(config).eval()
    assert isinstance(g, GeneratorFace) and g.num_style_layers == 0
    first = g.blocks[0][0].weight  # [z_dim + classes, widest, 4, 4]
    weight = g.latent_weight()
    assert weight.shape == (8, 16 * 4 * 4)  # one row per latent dimension, the class rows left out
    assert torch.equal(weight, first[:8].flatten(1))
    z, c = torch.randn(5, 8), torch.eye(3)[[0, 1, 2, 0, 1]]
    with torch.no_grad():
        features = g.latent_features(z, c)
        assert torch.equal(features, g.blocks[0](torch.cat([z, c], 1)[:, :, None, None]).flatten(1))
        assert not torch.equal(features, g.latent_features(z, torch.eye(3)[[1, 2, 0, 1, 2]]))  # the class is read
    with pytest.raises(ValueError, match="class-conditional"):
        g.latent_features(z, None)


@pytest.mark.parametrize("resolution", RESOLUTIONS)
def test_freezable_blocks_run_coarse_to_fine_and_leave_out_the_output_layers(resolution: int) -> None:
    config = DCGANConfig(resolution=resolution, z_dim=8, base_width=4, num_classes=2)
    g, d = Generator(config), Discriminator(config)
    assert isinstance(d, DiscriminatorFace)
    upsamplings = config.num_upsamplings
    assert len(g.freezable_blocks()) == len(d.freezable_blocks()) == upsamplings
    x = torch.randn(2, 8 + 2, 1, 1)
    for i, block in enumerate(g.freezable_blocks()):
        x = block(x)
        assert x.shape[-1] == 4 * 2**i  # the 4x4 block first, each later one doubles the side
    frozen = {id(p) for block in g.freezable_blocks() for p in block.parameters()}
    assert frozen == {id(p) for p in g.parameters()} - {id(p) for p in g.to_rgb.parameters()}
    frozen = {id(p) for block in d.freezable_blocks() for p in block.parameters()}
    head = [*d.head.parameters(), *d.embed.parameters()]
    assert frozen == {id(p) for p in d.parameters()} - {id(p) for p in head}


def test_nothing_outside_models_names_a_networks_blocks() -> None:
    """Code outside studio/models asks the family's face; it never reaches into ``.blocks`` or their tensors."""
    studio = Path(__file__).resolve().parents[1] / "studio"
    reaching = []
    for path in sorted(studio.rglob("*.py")):
        if (studio / "models") in path.parents:
            continue
        with open(path, "rb") as f:
            for token in tokenize.tokenize(f.readline):
                named = token.type == tokenize.NAME and token.string == "blocks"
                keyed = token.type == tokenize.STRING and re.search(r"\bblocks\.[\d{]", token.string)
                if named or keyed:
                    reaching.append(f"{path.relative_to(studio.parent)}:{token.start[0]}: {token.line.strip()}")
    assert not reaching, "\n".join(reaching)
