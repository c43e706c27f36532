"""The fine-tuning loop on tiny models: losses, resume, stopping, freezing, augmentation, outputs."""

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from studio import train, zoo
from studio.augment import diff_augment
from studio.models.folder import load_config


def synthetic_set(n: int = 32, resolution: int = 32) -> torch.Tensor:
    """Smooth colour gradients, a 'style' clearly unlike a random generator's output."""
    g = torch.Generator().manual_seed(1)
    ramp = torch.linspace(-1, 1, resolution)
    base = torch.stack([ramp.view(1, -1).expand(resolution, -1), ramp.view(-1, 1).expand(-1, resolution),
                        -ramp.view(1, -1).expand(resolution, -1)])
    shift = torch.rand(n, 3, 1, 1, generator=g) * 0.5 - 0.25
    return (base.unsqueeze(0) + shift).clamp(-1, 1)


def config(tiny: str, out: str, **kwargs) -> train.TrainConfig:
    defaults = {"data": "synthetic", "out": out, "base": tiny, "steps": 8, "batch": 8, "checkpoint_every": 100,
                "preview_every": 4}
    return train.TrainConfig(**{**defaults, **kwargs})


def weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(str(folder / "model.safetensors"))


@pytest.mark.parametrize("loss", train.LOSSES)
def test_each_loss_trains_and_publishes_a_model_with_lineage(tiny: str, loss: str) -> None:
    calls = []
    result = train.finetune(config(tiny, f"out-{loss}", loss=loss), synthetic_set(),
                            progress_fn=lambda step, total, losses, previews: calls.append((step, total, losses, previews)))
    assert result.status == "finished" and result.step == 8
    assert [c[0] for c in calls] == list(range(1, 9)) and all(c[1] == 8 for c in calls)
    assert {"d", "g"} <= set(calls[-1][2])
    assert [c[3] is not None for c in calls] == [s % 4 == 0 for s in range(1, 9)]
    assert calls[-1][3].shape == (8, 32, 32, 3)
    cfg = load_config(result.model_dir)
    assert cfg.lineage["base_model"] == tiny and cfg.lineage["steps"] == 8 and cfg.lineage["loss"] == loss
    assert cfg.license == "mit"  # inherited from the base model
    assert "out-" + loss in zoo.model_names()
    before, after = weights(zoo.model_folder(tiny)), weights(result.model_dir)
    assert any(not torch.equal(before[k], after[k]) for k in before)  # it learned something
    assert (result.model_dir / train.DISCRIMINATOR_FILE).is_file()


def test_resume_continues_exactly_like_an_uninterrupted_run(tiny: str) -> None:
    whole = train.finetune(config(tiny, "whole", steps=10), synthetic_set())
    polls = iter(range(100))
    stopped = train.finetune(config(tiny, "split", steps=10), synthetic_set(), should_stop=lambda: next(polls) >= 6)
    assert stopped.status == "stopped" and stopped.step == 6 and stopped.model_dir is None
    assert not (zoo.models_dir() / "split").exists()  # nothing half-trained is published
    resumed = train.finetune(config(tiny, "split", steps=10), synthetic_set(), resume=True)
    assert resumed.step == 10
    a, b = weights(whole.model_dir), weights(resumed.model_dir)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_checkpoints_are_kept_to_the_last_few(tiny: str) -> None:
    result = train.finetune(config(tiny, "ckpt", steps=9, checkpoint_every=2, keep_checkpoints=2), synthetic_set())
    names = sorted(p.name for p in (result.run_dir / "checkpoints").iterdir())
    assert names == ["step-0000008.safetensors", "step-0000009.safetensors"]
    assert train.latest_checkpoint(result.run_dir.name).name == "step-0000009.safetensors"


def test_frozen_blocks_do_not_move(tiny: str) -> None:
    first = train.finetune(config(tiny, "stage1", steps=3), synthetic_set())
    d_before = load_file(str(first.model_dir / train.DISCRIMINATOR_FILE))
    second = train.finetune(config("stage1", "stage2", steps=4, freeze_d=2, freeze_g=1), synthetic_set())
    d_after = load_file(str(second.model_dir / train.DISCRIMINATOR_FILE))
    g_before, g_after = weights(first.model_dir), weights(second.model_dir)
    for k in d_before:
        frozen = k.startswith(("blocks.0.", "blocks.1."))
        assert torch.equal(d_before[k], d_after[k]) == frozen or "running" in k or "num_batches" in k, k
    assert torch.equal(g_before["blocks.0.0.weight"], g_after["blocks.0.0.weight"])
    assert not torch.equal(g_before["blocks.1.0.weight"], g_after["blocks.1.0.weight"])


def test_freezing_a_fresh_discriminator_is_refused(tiny: str) -> None:
    with pytest.raises(ValueError, match="needs a pretrained discriminator"):
        train.finetune(config(tiny, "x", freeze_d=1), synthetic_set())


def test_resolution_mismatch_and_bad_settings_are_refused(tiny: str) -> None:
    with pytest.raises(ValueError, match="ingest it at 32"):
        train.finetune(config(tiny, "x"), synthetic_set(resolution=64))
    with pytest.raises(ValueError, match="unknown loss"):
        config(tiny, "x", loss="mse")
    with pytest.raises(ValueError, match="is not a usable model name"):
        config(tiny, "../evil")
    with pytest.raises(ValueError, match=f"at most {train.MAX_STEPS:,} steps"):
        config(tiny, "x", steps=10**12)
    with pytest.raises(ValueError, match=f"{train.MAX_BATCH} images per step"):
        config(tiny, "x", batch=train.MAX_BATCH + 1)
    for lr in (float("nan"), float("inf"), 0.0, -1e-4):
        with pytest.raises(ValueError, match="learning rate"):
            config(tiny, "x", lr=lr)


def test_from_scratch_trains_an_unconditional_generator(home: Path) -> None:
    result = train.finetune(train.TrainConfig(data="s", out="scratch", base="none", resolution=32, steps=3, batch=4),
                            synthetic_set())
    cfg = load_config(result.model_dir)
    assert cfg.num_classes == 0 and cfg.resolution == 32 and cfg.lineage["base_model"] == "none"


def test_diff_augment_is_seeded_differentiable_and_keeps_shape() -> None:
    x = torch.rand(4, 3, 16, 16) * 2 - 1
    x.requires_grad_(True)
    a = diff_augment(x, generator=torch.Generator().manual_seed(3))
    b = diff_augment(x, generator=torch.Generator().manual_seed(3))
    c = diff_augment(x, generator=torch.Generator().manual_seed(4))
    assert a.shape == x.shape and torch.equal(a, b) and not torch.equal(a, c)
    a.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    ones = torch.ones(8, 3, 16, 16)
    holes = diff_augment(ones, ("cutout",), torch.Generator().manual_seed(0))
    kept = holes.mean(dim=(1, 2, 3))  # a half-by-half square cut out, clipped where it crosses the border
    assert ((kept >= 0.75) & (kept < 1)).all() and (kept == 0.75).any()
    with pytest.raises(ValueError, match="unknown augmentation"):
        diff_augment(ones, ("flip",))


def test_any_checkpoint_can_be_saved_as_a_model(tiny: str) -> None:
    result = train.finetune(config(tiny, "ck", steps=6, checkpoint_every=3, keep_checkpoints=5), synthetic_set())
    early = result.run_dir / "checkpoints" / "step-0000003.safetensors"
    folder = train.export_checkpoint(early, "ck-early")
    cfg = load_config(folder)
    assert cfg.lineage["steps"] == 3 and cfg.lineage["checkpoint"] == early.name and "ck-early" in zoo.model_names()
    final = train.export_checkpoint(result.run_dir / "checkpoints" / "step-0000006.safetensors", "ck-final")
    assert weights(final).keys() == weights(result.model_dir).keys()
    assert all(torch.equal(weights(final)[k], weights(result.model_dir)[k]) for k in weights(final))
    assert not all(torch.equal(weights(folder)[k], weights(final)[k]) for k in weights(final))


def test_runs_never_share_a_folder_and_models_are_replaced_only_when_asked(tiny: str) -> None:
    first = train.finetune(config(tiny, "same", steps=3, checkpoint_every=1), synthetic_set())
    kept = sorted(p.name for p in (first.run_dir / "checkpoints").iterdir())
    before = weights(first.model_dir)
    with pytest.raises(ValueError, match="a model named 'same' exists already"):
        train.finetune(config(tiny, "same", steps=3), synthetic_set())
    with pytest.raises(ValueError, match="exists already"):
        train.export_checkpoint(first.run_dir / "checkpoints" / kept[0], "same")
    assert all(torch.equal(before[k], weights(zoo.model_folder("same"))[k]) for k in before)  # untouched
    second = train.finetune(config(tiny, "same", steps=3, checkpoint_every=1, seed=5, overwrite=True),
                            synthetic_set())
    assert second.run_dir != first.run_dir
    assert sorted(p.name for p in (first.run_dir / "checkpoints").iterdir()) == kept  # the first run's are kept
    after = weights(zoo.model_folder("same"))
    assert not all(torch.equal(before[k], after[k]) for k in before)  # replaced, as asked


def test_a_built_in_model_is_never_replaced(home: Path) -> None:
    original = (zoo.model_folder("omniart-eyes") / "model.safetensors").read_bytes()
    for overwrite in (False, True):
        with pytest.raises(ValueError, match="'omniart-eyes' is a built-in model and cannot be replaced"):
            train.finetune(train.TrainConfig(data="s", out="omniart-eyes", base="none", resolution=32, steps=2,
                                             batch=4, overwrite=overwrite), synthetic_set())
    assert (zoo.model_folder("omniart-eyes") / "model.safetensors").read_bytes() == original
    assert not (home / "runs").exists()  # refused before the first step: nothing written
