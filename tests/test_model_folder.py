"""The model folder: bit-exact round trip, config.json as before, clear errors that name the offending tensor."""

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from studio.models.dcgan import DCGANConfig
from studio.models.folder import (
    CONFIG_FILE,
    WEIGHTS_FILE,
    ArchitectureError,
    ModelConfig,
    ModelFolderError,
    build_generator,
    from_pretrained,
    load_config,
    save_pretrained,
)
from tests.conftest import make_tiny_model, tiny_config


def test_round_trip_is_bit_exact(tmp_path) -> None:
    torch.manual_seed(3)
    config = tiny_config()
    original = build_generator(config).eval()
    save_pretrained(tmp_path / "m", config, original)
    loaded_config, loaded = from_pretrained(tmp_path / "m")
    assert loaded_config == config
    before, after = original.state_dict(), loaded.state_dict()
    assert before.keys() == after.keys()
    for name in before:
        assert before[name].dtype == after[name].dtype and torch.equal(before[name], after[name]), name
    z, c = torch.randn(4, 16), torch.eye(3)[[0, 1, 2, 0]]
    with torch.no_grad():
        assert torch.equal(original(z, c), loaded(z, c))


def test_config_records_resolution_latent_classes_and_licence(tmp_path) -> None:
    folder = make_tiny_model(tmp_path)
    doc = json.loads((folder / CONFIG_FILE).read_text())
    assert doc["resolution"] == 32 and doc["z_dim"] == 16
    assert doc["class_names"] == ["cat", "dog", "fox"]
    assert doc["license"] == "mit" and doc["architecture"] == "dcgan"
    assert load_config(folder) == tiny_config()


def _drop_running_var(state: dict) -> None:
    del state["blocks.1.1.running_var"]


def _reshape_to_rgb(state: dict) -> None:
    state["to_rgb.0.weight"] = torch.zeros(8, 3, 3, 3)


def _add_extra(state: dict) -> None:
    state["extra.weight"] = torch.zeros(1)


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (_drop_running_var, r"missing tensor 'blocks\.1\.1\.running_var'"),
        (_reshape_to_rgb, r"'to_rgb\.0\.weight' has shape \(8, 3, 3, 3\), expected \(8, 3, 4, 4\)"),
        (_add_extra, r"unexpected tensor 'extra\.weight'"),
    ],
)
def test_a_tensor_that_does_not_fit_is_named(tmp_path, damage, message: str) -> None:
    folder = make_tiny_model(tmp_path)
    state = load_file(str(folder / WEIGHTS_FILE))
    damage(state)
    save_file(state, str(folder / WEIGHTS_FILE))
    with pytest.raises(ModelFolderError, match=message):
        from_pretrained(folder)


def test_corrupt_or_missing_files_give_clear_errors(tmp_path) -> None:
    folder = make_tiny_model(tmp_path)
    (folder / WEIGHTS_FILE).write_bytes(b"\x00garbage")
    with pytest.raises(ModelFolderError, match="not a readable safetensors file"):
        from_pretrained(folder)
    (folder / WEIGHTS_FILE).unlink()
    with pytest.raises(ModelFolderError, match="has no model.safetensors"):
        from_pretrained(folder)
    (folder / CONFIG_FILE).write_text("{not json")
    with pytest.raises(ModelFolderError, match="not a valid model config"):
        from_pretrained(folder)
    with pytest.raises(ModelFolderError, match="has no config.json"):
        from_pretrained(tmp_path / "nowhere")


# config.json exactly as the studio wrote it before the architecture's config became a dataclass
# (checkpoint.save_model, with ``arch`` a plain dict): models made then must round-trip byte for byte.
FULL_ARCH = {"resolution": 32, "z_dim": 16, "base_width": 8, "num_classes": 3, "dropout": 0.0, "channels": 3}
WRITTEN_BEFORE = """{
  "resolution": 32,
  "z_dim": 16,
  "architecture": "dcgan",
  "arch": {
    "resolution": 32,
    "z_dim": 16,
    "base_width": 8,
    "num_classes": 3,
    "dropout": 0.0,
    "channels": 3
  },
  "class_names": [
    "cat",
    "dog",
    "fox"
  ],
  "title": "Tiny – ünï",
  "description": "",
  "license": "mit",
  "author": "",
  "source": "",
  "lineage": {
    "base_model": "tiny",
    "steps": 3
  }
}
"""


def test_config_json_round_trips_byte_for_byte_with_the_architectures_own_config(tmp_path) -> None:
    config = ModelConfig("dcgan", FULL_ARCH, ("cat", "dog", "fox"), title="Tiny – ünï", license="mit",
                         lineage={"base_model": "tiny", "steps": 3})
    assert isinstance(config.arch, DCGANConfig) and config.arch.base_width == 8
    assert (config.resolution, config.z_dim, config.num_classes) == (32, 16, 3)
    save_pretrained(tmp_path / "m", config, build_generator(config))
    assert (tmp_path / "m" / CONFIG_FILE).read_text() == WRITTEN_BEFORE
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / CONFIG_FILE).write_text(WRITTEN_BEFORE)
    loaded = load_config(tmp_path / "old")
    assert loaded == config and isinstance(loaded.arch, DCGANConfig)
    save_pretrained(tmp_path / "again", loaded, build_generator(loaded))
    assert (tmp_path / "again" / CONFIG_FILE).read_bytes() == WRITTEN_BEFORE.encode()


def test_the_architecture_config_may_be_given_built_and_is_checked() -> None:
    built = ModelConfig("dcgan", DCGANConfig(**FULL_ARCH), ("cat", "dog", "fox"))
    assert built == ModelConfig("dcgan", FULL_ARCH, ("cat", "dog", "fox"))
    with pytest.raises(ArchitectureError, match="^unknown architecture 'stylegan9'; known: dcgan, stylegan2$"):
        ModelConfig("stylegan9", FULL_ARCH)
    with pytest.raises(ArchitectureError, match="^resolution must be one of"):
        ModelConfig("dcgan", {**FULL_ARCH, "resolution": 48})
    with pytest.raises(ArchitectureError, match="^the config of a dcgan model is a DCGANConfig or a dict of its "
                                                "fields, not list$"):
        ModelConfig("dcgan", [32, 16])
    with pytest.raises(ModelFolderError, match="^config lists 2 class names for 3 classes$"):
        ModelConfig("dcgan", FULL_ARCH, ("cat", "dog"))


def test_a_config_of_no_buildable_model_is_refused_when_read(tmp_path) -> None:
    folder = make_tiny_model(tmp_path)
    doc = json.loads((folder / CONFIG_FILE).read_text())
    doc["arch"]["colours"] = 3
    (folder / CONFIG_FILE).write_text(json.dumps(doc))
    with pytest.raises(ModelFolderError, match=r"config\.json describes no buildable model: .*'colours'"):
        from_pretrained(folder)
