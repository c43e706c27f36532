"""The model folder: bit-exact round trip and clear errors that name the offending tensor."""

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from studio.checkpoint import (
    CONFIG_FILE,
    WEIGHTS_FILE,
    ModelFolderError,
    build_generator,
    load_config,
    load_model,
    save_model,
)
from tests.conftest import make_tiny_model, tiny_config


def test_round_trip_is_bit_exact(tmp_path) -> None:
    torch.manual_seed(3)
    config = tiny_config()
    original = build_generator(config).eval()
    save_model(tmp_path / "m", config, original)
    loaded_config, loaded = load_model(tmp_path / "m")
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
        load_model(folder)


def test_corrupt_or_missing_files_give_clear_errors(tmp_path) -> None:
    folder = make_tiny_model(tmp_path)
    (folder / WEIGHTS_FILE).write_bytes(b"\x00garbage")
    with pytest.raises(ModelFolderError, match="not a readable safetensors file"):
        load_model(folder)
    (folder / WEIGHTS_FILE).unlink()
    with pytest.raises(ModelFolderError, match="has no model.safetensors"):
        load_model(folder)
    (folder / CONFIG_FILE).write_text("{not json")
    with pytest.raises(ModelFolderError, match="not a valid model config"):
        load_model(folder)
    with pytest.raises(ModelFolderError, match="has no config.json"):
        load_model(tmp_path / "nowhere")
