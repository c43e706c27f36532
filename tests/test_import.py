"""The DCGAN-tutorial importer and the digiface-faces model it brings in from the gan-face-generate package."""

from __future__ import annotations

import io
import pickle
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from studio import engine, zoo
from studio.models.dcgan import DCGANConfig
from studio.models.folder import load_config
from studio.latent import seed_latents
from studio.media import to_uint8
from tests.conftest import run_cli

def tutorial_generator(nz: int = 16, ngf: int = 8, nc: int = 3, resolution: int = 32, seed: int = 0) -> nn.Sequential:
    """The PyTorch DCGAN tutorial's generator (its ``main``) for ``resolution``, with non-trivial BN statistics."""
    torch.manual_seed(seed)
    layers: list[nn.Module] = []
    width = ngf * resolution // 8
    layers += [nn.ConvTranspose2d(nz, width, 4, 1, 0, bias=False), nn.BatchNorm2d(width), nn.ReLU(True)]
    while width > ngf:
        layers += [nn.ConvTranspose2d(width, width // 2, 4, 2, 1, bias=False), nn.BatchNorm2d(width // 2),
                   nn.ReLU(True)]
        width //= 2
    layers += [nn.ConvTranspose2d(ngf, nc, 4, 2, 1, bias=False), nn.Tanh()]
    main = nn.Sequential(*layers)
    for module in main.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-0.2, 0.2)
            module.running_var.uniform_(0.5, 1.5)
            module.weight.data.uniform_(0.5, 1.5)
            module.bias.data.uniform_(-0.2, 0.2)
    return main.eval()


def main_state(main: nn.Sequential, prefix: str = "main.") -> dict[str, torch.Tensor]:
    return {prefix + k: v for k, v in main.state_dict().items()}


def direct(main: nn.Sequential, seeds: range, z_dim: int, onehot: torch.Tensor | None = None) -> np.ndarray:
    """The network run as its authors run it: z (and a one-hot) as a [N, C, 1, 1] input."""
    z = seed_latents(seeds, z_dim)
    if onehot is not None:
        z = torch.cat([z, onehot], 1)
    with torch.no_grad():
        return to_uint8(main(z[:, :, None, None]))


def test_import_from_the_command_line_draws_the_networks_own_pixels(home: Path, tmp_path: Path) -> None:
    main = tutorial_generator()
    path = tmp_path / "netG.pth"
    torch.save(main_state(main), path)
    result = run_cli("import", str(path), "--name", "imported", "--resolution", "32", "--latent", "16",
                    "--license", "cc0-1.0", "--author", "Ada", home=home)
    assert result.returncode == 0, result.stderr
    config = load_config(home / "models" / "imported")
    assert config.arch == DCGANConfig(resolution=32, z_dim=16, base_width=8, num_classes=0, dropout=0.0, channels=3)
    assert (config.license, config.author, config.source) == ("cc0-1.0", "Ada", "imported from netG.pth")
    assert np.array_equal(engine.generate_unbatched(zoo.load("imported"), range(6)), direct(main, range(6), 16))

    out = tmp_path / "seed.png"
    result = run_cli("generate", "--model", "imported", "--seeds", "4", "--out", str(out), home=home)
    assert result.returncode == 0, result.stderr
    drawn = np.asarray(Image.open(out).convert("RGB")).astype(int)
    assert np.abs(drawn - direct(main, range(4, 5), 16)[0]).max() <= 1  # the engine's channels_last layout


def test_import_a_conditional_checkpoint_saved_from_data_parallel(home: Path, tmp_path: Path) -> None:
    main = tutorial_generator(nz=16 + 3, ngf=4, resolution=64, seed=3)
    path = tmp_path / "checkpoint.tar"
    torch.save({"epoch": 25, "netG_state_dict": main_state(main, "module.main."), "netD_state_dict": {}}, path)
    folder = zoo.import_tutorial_file(path, "cats", 64, 16, ("cat", "dog", "fox"))
    model = zoo.load("cats")
    assert folder == home / "models" / "cats"
    assert model.config.arch.base_width == 4 and model.config.class_names == ("cat", "dog", "fox")
    onehot = torch.zeros(5, 3)
    onehot[:, 1] = 1
    assert np.array_equal(engine.generate_unbatched(model, range(5), "dog"), direct(main, range(5), 16, onehot))


def test_import_checks_the_stated_shape(home: Path, tmp_path: Path) -> None:
    path = tmp_path / "netG.pth"
    torch.save(main_state(tutorial_generator()), path)
    with pytest.raises(zoo.ModelUnavailable, match="the generator has 4 convolutions, so it draws 32x32, not 64x64"):
        zoo.import_tutorial_file(path, "a", 64, 16)
    with pytest.raises(zoo.ModelUnavailable, match="reads 16 inputs, not a latent of 100 plus 0 classes"):
        zoo.import_tutorial_file(path, "a", 32, 100)
    with pytest.raises(zoo.ModelUnavailable, match="reads 16 inputs, not a latent of 16 plus 2 classes"):
        zoo.import_tutorial_file(path, "a", 32, 16, ("x", "y"))
    result = run_cli("import", str(path), "--name", "a", "--resolution", "64", "--latent", "16", home=home)
    assert result.returncode == 2 and result.stderr.startswith("error: the generator has 4 convolutions")
    assert not (home / "models").exists()


def test_import_refuses_names_it_would_clobber(home: Path, tmp_path: Path) -> None:
    path = tmp_path / "netG.pth"
    torch.save(main_state(tutorial_generator()), path)
    zoo.import_tutorial_file(path, "mine", 32, 16)
    for name, message in (("mine", "exists already"), ("omniart-eyes", "a built-in model and cannot be replaced"),
                          ("a/b", "not a usable model name"), (".hidden", "not a usable model name")):
        with pytest.raises(ValueError, match=message):
            zoo.import_tutorial_file(path, name, 32, 16)


class Detonator:
    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return (Path.touch, (self.path,))


def test_pickled_objects_are_never_unpickled(home: Path, tmp_path: Path) -> None:
    marker = tmp_path / "unpickled"
    path = tmp_path / "evil.pth"
    torch.save({**main_state(tutorial_generator()), "payload": Detonator(marker)}, path)
    with pytest.raises(zoo.ModelUnavailable, match="was refused: it asks to import and call getattr, and the studio "
                                                   "never runs code from a model file"):
        zoo.import_tutorial_file(path, "evil", 32, 16)
    assert not marker.exists()
    pickle.loads(pickle.dumps(Detonator(marker)))  # the payload was live
    assert marker.exists()


def test_foreign_layouts_are_refused(home: Path, tmp_path: Path) -> None:
    biased = tutorial_generator()
    biased[0] = nn.ConvTranspose2d(16, 32, 4, 1, 0, bias=True)
    path = tmp_path / "biased.pth"
    torch.save(main_state(biased), path)
    with pytest.raises(zoo.ModelUnavailable, match="convolution main.0 has a bias; the studio's DCGAN has none"):
        zoo.import_tutorial_file(path, "biased", 32, 16)
    torch.save({"optimizer": {"lr": 0.1}}, path)
    with pytest.raises(zoo.ModelUnavailable, match="holds optimizer, not a generator state dict"):
        zoo.import_tutorial_file(path, "x", 32, 16)
    path.write_bytes(b"not a torch file")
    with pytest.raises(zoo.ModelUnavailable, match="is not a readable PyTorch tensor file"):
        zoo.import_tutorial_file(path, "x", 32, 16)


# -- digiface-faces ------------------------------------------------------------------------------


def test_digiface_reports_an_unreachable_index(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(zoo, "_package_file", lambda package, filename: None)  # as where it is not installed
    monkeypatch.setenv("PIP_INDEX_URL", "http://127.0.0.1:9/simple/")
    monkeypatch.setenv("PIP_RETRIES", "0")
    monkeypatch.setenv("PIP_TIMEOUT", "2")
    monkeypatch.delenv("PIP_FIND_LINKS", raising=False)
    with pytest.raises(zoo.ModelUnavailable, match=r"^could not download gan-face-generate==1\.1\.1 from the package "
                                                   r"index \(ERROR: .*\); check the connection to the index"):
        zoo.load("digiface-faces")
    assert not (home / "models" / "digiface-faces").exists()


def wheel_of(folder: Path, name: str, version: str, files: dict[str, bytes]) -> Path:
    """A pure-Python wheel of distribution ``name`` holding ``files``, with the dist-info pip reads."""
    stem = f"{name.replace('-', '_')}-{version}"
    info = f"{stem}.dist-info"
    files = {**files,
             f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n".encode(),
             f"{info}/WHEEL": b"Wheel-Version: 1.0\nGenerator: gan-studio-tests\nRoot-Is-Purelib: true\n"
                              b"Tag: py3-none-any\n"}
    files[f"{info}/RECORD"] = "".join(f"{path},,\n" for path in [*files, f"{info}/RECORD"]).encode()
    path = folder / f"{stem}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as zf:
        for member, data in files.items():
            zf.writestr(member, data)
    return path


@pytest.mark.slow
def test_digiface_is_fetched_and_draws_the_pixels_of_its_weights(home: Path, tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    # The package's Generator(ngpu, nc=3, nz=100, ngf=64) is the tutorial's, saved in a training checkpoint
    # as netG_state_dict: a wheel of that shape, served from a local folder instead of the index, goes
    # through the studio's own pip download, reading and conversion.
    reference = tutorial_generator(nz=100, ngf=64, resolution=64, seed=7)
    checkpoint = io.BytesIO()
    torch.save({"epoch": 4, "netG_state_dict": main_state(reference)}, checkpoint)
    links = tmp_path / "links"
    links.mkdir()
    wheel_of(links, "gan-face-generate", "1.1.1", {zoo.DIGIFACE_WEIGHTS: checkpoint.getvalue()})
    monkeypatch.setattr(zoo, "_package_file", lambda package, filename: None)  # as where it is not installed
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(links))

    assert "digiface-faces" in zoo.model_names()
    model = zoo.load("digiface-faces")
    assert (model.config.resolution, model.config.z_dim, model.config.num_classes) == (64, 100, 0)
    assert model.config.license == "mit" and model.config.author == "Chien Liu"
    ours = engine.generate_unbatched(model, range(8))
    assert ours.shape == (8, 64, 64, 3)
    assert np.array_equal(ours, direct(reference, range(8), 100))
    assert len(np.unique(ours)) > 50 and not np.array_equal(ours[0], ours[1])  # pictures, one per seed
