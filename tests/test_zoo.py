"""The zoo: the omniart-eyes conversion is faithful, local folders are listed, failures are clear."""

from pathlib import Path

import numpy as np
import pytest
import torch

from studio import engine, zoo
from studio.models.convert import ConversionError
from studio.models.convert.tutorial_dcgan import sequential_dcgan_state
from studio.models.folder import load_config
from studio.latent import seed_latents
from studio.media import to_uint8
from tests.conftest import make_tiny_model, package_reference_generator


@pytest.mark.slow
def test_converted_model_matches_the_package_weights(eyes: zoo.LoadedModel) -> None:
    reference = package_reference_generator()
    seeds = [0, 1, 2, 3]
    for cls in ("blue", "red"):
        z = seed_latents(seeds, 100)
        onehot = torch.zeros(len(seeds), 8)
        onehot[:, zoo.OMNIART_CLASSES.index(cls)] = 1
        with torch.no_grad():
            expected = to_uint8(reference(torch.cat([z, onehot], 1)[:, :, None, None]))
        ours = engine.generate_unbatched(eyes, seeds, cls)
        assert ours.shape == (4, 128, 128, 3)
        assert np.abs(ours.astype(int) - expected).max() <= 2


def test_conversion_writes_a_described_model_folder(eyes_home: Path) -> None:
    folder = zoo.model_folder("omniart-eyes")
    config = load_config(folder)
    assert folder == eyes_home / "models" / "omniart-eyes"
    assert (config.resolution, config.z_dim, config.num_classes) == (128, 100, 8)
    assert config.class_names == zoo.OMNIART_CLASSES
    assert config.license == "mit" and config.author == "Rogier Knoester" and "omniart" in config.source
    assert not any(p.name.endswith(".tmp") for p in folder.parent.iterdir())


def test_lists_builtin_first_then_local_folders(home: Path) -> None:
    make_tiny_model(home, "zebra")
    make_tiny_model(home, "aardvark", num_classes=0)
    (home / "models" / "not-a-model").mkdir()
    assert zoo.model_names() == [*zoo.BUILTIN, "aardvark", "zebra"]
    assert zoo.model_names()[0] == zoo.DEFAULT_MODEL
    assert zoo.model_config("aardvark").num_classes == 0
    loaded = zoo.load("zebra")
    assert loaded.config.class_names == ("cat", "dog", "fox") and not loaded.generator.training


def test_unknown_model_names_the_available_ones(home: Path) -> None:
    for name in ("nope", "../etc", ""):
        with pytest.raises(zoo.ModelUnavailable, match="unknown model .*available: omniart-eyes"):
            zoo.load(name)


def test_missing_package_says_what_to_install(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(zoo, "_package_file", lambda package, filename: None)
    with pytest.raises(zoo.ModelUnavailable, match=r"pip install omniart-eye-generator==0\.1"):
        zoo.load("omniart-eyes")
    assert not (home / "models" / "omniart-eyes").exists()


def test_unreadable_weights_say_what_to_install(home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    corrupt = tmp_path / "generator_model_state.pth"
    corrupt.write_bytes(b"PK\x03\x04 truncated download")
    monkeypatch.setattr(zoo, "_package_file", lambda package, filename: corrupt)
    with pytest.raises(zoo.ModelUnavailable, match="unreadable.*pip install omniart-eye-generator==0.1"):
        zoo.load("omniart-eyes")
    assert not (home / "models" / "omniart-eyes").exists()


def test_sequential_import_refuses_foreign_layouts() -> None:
    with pytest.raises(ConversionError, match="not a sequential DCGAN"):
        sequential_dcgan_state({"net.0.weight": torch.zeros(1, 1, 4, 4)})
