"""The Hugging Face Hub: pull a model folder from a model repository, push one with its model card.

A Hub model is the studio's own model folder (``config.json`` + ``model.safetensors``) with a
``README.md`` model card. A repository without one that holds a single StyleGAN2 file (an NVIDIA ``.pkl``
or a rosinality ``.pt``) is converted as ``python -m studio import`` converts it, by the studio's own
readers, which never run code from the file; other pickled weights (``.bin``, ``.pth``, ...) are refused
unread. A pulled model is written into ``STUDIO_HOME/hub/OWNER/NAME`` and goes by ``OWNER/NAME`` everywhere
(pickers, ``--model``).

Pushing builds the exact folder to upload once (``write_upload``), then uploads it as one commit;
``--dry-run`` stops after the first step. The token is passed in by the caller, held only in memory
for the upload, and scrubbed from every message.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import httpx2
import numpy as np
from huggingface_hub import HfApi, ModelCard, ModelCardData, constants, get_cached_repo_tree, snapshot_download
from huggingface_hub.errors import (
    CachedRepoTreeNotFoundError,
    GatedRepoError,
    HfHubHTTPError,
    HFValidationError,
    IncompleteSnapshotError,
    LocalEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from huggingface_hub.utils import validate_repo_id

from studio import zoo
from studio.media import grid, png_bytes
from studio.models import ARCHITECTURES
from studio.models.folder import CONFIG_FILE, WEIGHTS_FILE, ModelConfig, ModelFolderError, from_pretrained
from studio.sampling import Request
from studio.storage import atomic_dir, atomic_write_bytes, swap_dir

if TYPE_CHECKING:  # the caller's engine draws the card's grid; hub starts none of its own
    from studio.engine import Engine

CARD_FILE = "README.md"
SAMPLE_FILE = "sample.png"
PULL_FILES = (CONFIG_FILE, WEIGHTS_FILE, CARD_FILE)
UPLOAD_FILES = (CONFIG_FILE, WEIGHTS_FILE, SAMPLE_FILE, CARD_FILE)
# Weights in any of these formats are unpickled on loading, which can run arbitrary code.
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")
# StyleGAN2 files that pulling converts with the importer's readers (NVIDIA pickles, rosinality checkpoints).
CONVERTED_SUFFIXES = (".pkl", ".pt")
LIBRARY_NAME = "gan-studio"
TAGS = ["gan", "image-generation"]
SAMPLE_SEEDS = tuple(range(8))
SAMPLE_ROWS = 8


class HubError(RuntimeError):
    """A pull or push failed; the message is one sentence fit to show a user."""


@dataclass(frozen=True)
class Pulled:
    """A model pulled from the Hub: its name (the repository id), folder and commit."""

    name: str
    folder: Path
    commit: str


def _check_repo_id(repo_id: str) -> Path:
    """The local folder for ``repo_id``, which must be a full ``OWNER/NAME`` id."""
    try:
        validate_repo_id(repo_id)
    except HFValidationError:
        raise HubError(f"{repo_id!r} is not a Hub repository id: write it as OWNER/NAME") from None
    folder = zoo.folder_for(repo_id) if "/" in repo_id else None
    if folder is None:
        raise HubError(f"{repo_id!r} is not a Hub repository id: write it as OWNER/NAME")
    return folder


# -- pull ----------------------------------------------------------------------------------------


def pull(repo_id: str, revision: str | None = None, token: str | bool | None = None) -> Pulled:
    """Download ``repo_id`` (from the local Hugging Face cache when offline), check it, register it.

    Args:
        repo_id: ``OWNER/NAME``.
        revision: Branch, tag or commit; None: main.
        token: None: the machine's own (``HF_TOKEN`` or a saved login); False: none at all, for the
            visitors of a shared studio, who must not read private repositories with the owner's rights.

    Raises:
        HubError: The repository or revision does not exist, is neither reachable nor cached, lacks
            files, offers only pickled weights, holds a StyleGAN2 file the importer refuses, or holds no model
            of a known architecture.
    """
    dest = _check_repo_id(repo_id)
    snapshot = Path(_download(repo_id, revision, token))
    stylegan2_file = _stylegan2_file(repo_id, snapshot)
    if stylegan2_file:
        return _pull_converted(repo_id, snapshot.name, stylegan2_file, dest, token)
    _check_files(repo_id, snapshot)
    _check_model(repo_id, snapshot)
    with swap_dir(dest) as tmp:
        for name in PULL_FILES:
            if (snapshot / name).is_file():
                shutil.copyfile(snapshot / name, tmp / name)  # the cache's files are links to blobs
    return Pulled(repo_id, dest, snapshot.name)


def _stylegan2_file(repo_id: str, snapshot: Path) -> str | None:
    """The StyleGAN2 file to convert, for a repository that holds one and no studio model folder."""
    if (snapshot / WEIGHTS_FILE).is_file():
        return None
    files = sorted(f for f in _repo_files(repo_id, snapshot) if f.lower().endswith(CONVERTED_SUFFIXES))
    if len(files) > 1:
        raise HubError(f"{repo_id} holds several StyleGAN2 files ({', '.join(files)}) and no {WEIGHTS_FILE}: download "
                       f"the one you want and import it (python -m studio import FILE --name NAME)")
    return files[0] if files else None


def _pull_converted(repo_id: str, commit: str, filename: str, dest: Path, token: str | bool | None) -> Pulled:
    """Download ``filename`` at ``commit`` and convert it into the pulled model's folder ``dest``."""
    path = Path(_download(repo_id, commit, token, (filename,))) / filename
    if not path.is_file():
        raise HubError(f"{repo_id}'s {filename} is not in the local Hugging Face cache ({constants.HF_HUB_CACHE}) and "
                       f"the Hub cannot be reached to fetch it")
    try:
        zoo.import_pulled(path, repo_id, filename, dest)
    except zoo.ModelUnavailable as e:
        raise HubError(str(e)) from None
    return Pulled(repo_id, dest, commit)


def _download(repo_id: str, revision: str | None, token: str | bool | None,
              patterns: tuple[str, ...] = PULL_FILES) -> str:
    at = f" at revision {revision}" if revision else ""
    try:
        return snapshot_download(repo_id, revision=revision, allow_patterns=list(patterns),
                                 library_name=LIBRARY_NAME, token=token)
    except RevisionNotFoundError:
        raise HubError(f"{repo_id} has no revision {revision!r} on the Hub") from None
    except GatedRepoError:
        raise HubError(f"{repo_id} is gated: accept its conditions on the Hub, then set HF_TOKEN") from None
    except RepositoryNotFoundError:
        raise HubError(f"repository {repo_id} was not found on the Hub (a private one needs HF_TOKEN)") from None
    except IncompleteSnapshotError:
        raise HubError(f"the cached copy of {repo_id}{at} lacks files and the Hub cannot be reached to complete it") \
            from None
    except LocalEntryNotFoundError:
        if constants.is_offline_mode():
            raise HubError(f"{repo_id}{at} is not in the local Hugging Face cache ({constants.HF_HUB_CACHE}) and "
                           f"offline mode is on (HF_HUB_OFFLINE=1)") from None
        raise HubError(f"the Hub cannot be reached and {repo_id}{at} is not in the local Hugging Face cache "
                       f"({constants.HF_HUB_CACHE})") from None
    except HfHubHTTPError as e:
        raise HubError(f"the Hub refused to send {repo_id} ({_first_line(e)})") from None
    except (httpx2.HTTPError, ConnectionError) as e:
        raise HubError(f"the Hub cannot be reached ({type(e).__name__}: {_first_line(e)})") from None


def _first_line(error: Exception) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0]


def _repo_files(repo_id: str, snapshot: Path) -> set[str]:
    """Every file of the repository at the snapshot's commit, as far as this machine knows."""
    present = {p.relative_to(snapshot).as_posix() for p in snapshot.rglob("*") if p.is_file() or p.is_symlink()}
    try:  # the full listing, cached by any online download: files the patterns skipped show up here
        listed = {f.path for f in get_cached_repo_tree(repo_id, revision=snapshot.name)}
    except CachedRepoTreeNotFoundError:
        listed = set()
    return present | listed


def _check_files(repo_id: str, snapshot: Path) -> None:
    missing = [name for name in (CONFIG_FILE, WEIGHTS_FILE) if not (snapshot / name).is_file()]
    if WEIGHTS_FILE in missing:
        pickled = sorted(f for f in _repo_files(repo_id, snapshot) if f.lower().endswith(PICKLE_SUFFIXES))
        if pickled:
            raise HubError(f"{repo_id} offers only pickled weights ({', '.join(pickled)}), which the studio refuses "
                           f"to load because unpickling can run code: it needs a {WEIGHTS_FILE}")
    if missing:
        raise HubError(f"{repo_id} lacks {' and '.join(missing)}, so it is no GAN Studio model folder")


def _check_model(repo_id: str, snapshot: Path) -> None:
    """Refuse a config of an unknown architecture, then load the weights strictly (and throw them away)."""
    try:
        raw = json.loads((snapshot / CONFIG_FILE).read_text())
    except (ValueError, UnicodeDecodeError) as e:
        raise HubError(f"{repo_id}'s {CONFIG_FILE} is not valid JSON ({e})") from None
    architecture = raw.get("architecture") if isinstance(raw, dict) else None
    if architecture not in ARCHITECTURES:
        raise HubError(f"{repo_id} holds a model of architecture {architecture!r}, which the studio does not know "
                       f"(it knows: {', '.join(sorted(ARCHITECTURES))})")
    try:
        from_pretrained(snapshot)  # checks every tensor against the config from the header before loading
    except (ModelFolderError, ValueError, TypeError) as e:
        raise HubError(f"{repo_id} holds no loadable studio model: {_first_line(e)}") from None


# -- push ----------------------------------------------------------------------------------------


def write_upload(engine: Engine, name: str, repo_id: str, out: Path) -> list[str]:
    """Write into ``out`` exactly the files that ``push`` uploads for model ``name`` as ``repo_id``.

    The files: ``config.json`` and ``model.safetensors`` byte for byte, ``sample.png`` (a grid of
    the model's images, drawn by ``engine``) and ``README.md`` (the model card). ``out`` must be new
    or empty; it appears complete or not at all.

    Returns:
        The names of the files written.
    """
    _check_repo_id(repo_id)
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise HubError(f"{out} is not an empty folder: give a new one for the upload")
    try:
        model = zoo.load(name)
    except zoo.ModelUnavailable as e:
        raise HubError(str(e)) from None
    card = model_card(name, model.config, repo_id)
    with atomic_dir(out) as tmp:
        for file in (CONFIG_FILE, WEIGHTS_FILE):
            shutil.copyfile(model.folder / file, tmp / file)
        atomic_write_bytes(tmp / SAMPLE_FILE, png_bytes(sample_grid(engine, model)))
        atomic_write_bytes(tmp / CARD_FILE, str(card).encode())
    return list(UPLOAD_FILES)


def sample_grid(engine: Engine, model: zoo.LoadedModel) -> np.ndarray:
    """The card's picture: seeds 0-7, one row per class (the first eight) or two rows unconditional.

    Drawn through the studio's shared ``engine``, like every studio image, so the card shows the
    studio's own pixels.
    """
    classes = model.config.class_names[:SAMPLE_ROWS]
    if classes:
        images = np.concatenate([engine.generate(Request(model.name, SAMPLE_SEEDS, c)) for c in classes])
    else:
        images = engine.generate(Request(model.name, tuple(range(2 * len(SAMPLE_SEEDS)))))
    return grid(images, cols=len(SAMPLE_SEEDS))


def _base_config(base: str | None) -> ModelConfig | None:
    if not base or base == "none":
        return None
    try:
        return zoo.model_config(base)
    except zoo.ModelUnavailable:
        return None


def model_card(name: str, config: ModelConfig, repo_id: str) -> ModelCard:
    """The model card for model ``name`` published as ``repo_id``: Hub metadata and a description.

    The licence is the model's own, else its base model's. ``base_model`` goes into the metadata
    only when the base is itself a Hub model (``OWNER/NAME``); a built-in base has no Hub id, so
    the card's text names it and its source instead.
    """
    lineage = config.lineage
    base = lineage.get("base_model")
    base_config = _base_config(base)
    licence = config.license or (base_config.license if base_config else "")
    data = ModelCardData(library_name=LIBRARY_NAME, license=licence.lower() or "other", tags=TAGS,
                         base_model=base if base and "/" in base else None)
    rows = [("Architecture", _describe_architecture(config))]
    if base:
        about = ", ".join(x for x in (base_config.title, base_config.author and f"by {base_config.author}",
                                      base_config.source) if x) if base_config else ""
        link = f"[{base}](https://huggingface.co/{base})" if "/" in base else f"`{base}`"
        rows.append(("Base model", f"{link} ({about})" if about else link))
    if "dataset" in lineage:
        size = lineage.get("images", lineage.get("dataset_images"))
        rows.append(("Data set", f"the artist's set `{lineage['dataset']}`" + (f", {size} images" if size else "")))
    if "steps" in lineage:
        rows.append(("Training steps", str(lineage["steps"])))
    if isinstance(lineage.get("swd"), int | float):
        rows.append(("SWD ×10³ to the data set (lower is closer)", f"{lineage['swd']:.2f}"))
    inherited = " (inherited from the base model)" if base_config and not config.license else ""
    rows.append(("Licence", (licence.upper() or "not stated") + inherited))
    if config.author and not base:
        rows.append(("Author", config.author))
    if config.source and not base:
        rows.append(("Source", config.source))
    facts = "\n".join(f"- **{k}**: {v}" for k, v in rows)
    what = "seeds 0-7, one row per class" if config.class_names else "seeds 0-15"
    pick = f" --class {config.class_names[0]}" if config.class_names else ""
    body = f"""# {config.title or name}

{config.description}

![Images drawn by the model: {what}]({SAMPLE_FILE})

{facts}

## Use it in the studio

This repository is a GAN Studio model folder: `{CONFIG_FILE}` and `{WEIGHTS_FILE}` (no pickles).

```bash
python -m studio pull {repo_id}
python -m studio generate --model {repo_id} --seeds 0-7{pick} --out grid.png
```

or put `{repo_id}` into "Load from the Hub" in the studio's Share tab, then pick it in Explore.
"""
    return ModelCard(f"---\n{data.to_yaml()}\n---\n\n{body}")


def _describe_architecture(config: ModelConfig) -> str:
    classes = (f"{config.num_classes} classes ({', '.join(config.class_names)})" if config.class_names
               else "unconditional")
    side = f"{config.resolution}×{config.resolution}"
    return f"{config.architecture.upper()}, {side}, latent of {config.z_dim}, {classes}"


def push(engine: Engine, name: str, repo_id: str, token: str | None, private: bool = False) -> str:
    """Upload model ``name`` to the model repository ``repo_id`` (created if needed) as one commit.

    Args:
        engine: Draws the card's sample grid.
        name: The model to push.
        repo_id: ``OWNER/NAME`` on the Hub.
        token: A Hugging Face token with write access; used for this upload only, never written anywhere.
        private: Create the repository private (an existing repository keeps its visibility).

    Returns:
        The repository's URL.
    """
    if not token:
        raise HubError("pushing needs a Hugging Face token with write access: set HF_TOKEN or paste one into "
                       "the Share tab")
    try:
        with tempfile.TemporaryDirectory(prefix="gan-studio-push-") as tmp:
            folder = Path(tmp) / "upload"
            write_upload(engine, name, repo_id, folder)
            api = HfApi(token=token, library_name=LIBRARY_NAME)
            url = api.create_repo(repo_id, private=private, exist_ok=True)
            api.upload_folder(repo_id=repo_id, folder_path=folder, commit_message=f"Upload {name} from GAN Studio")
        return str(url)
    except HubError as e:
        raise HubError(str(e).replace(token, "***")) from None
    except HfHubHTTPError as e:
        status = e.response.status_code if e.response is not None else None
        if status == 401:
            message = "the Hub refused the token (401): check that it is a valid Hugging Face token"
        elif status == 403:
            message = f"the token may not write to {repo_id} (403): use a token with write access to its owner"
        else:
            message = f"the Hub refused the upload ({status}: {_first_line(e)})"
        raise HubError(message.replace(token, "***")) from None
    except (httpx2.HTTPError, ConnectionError) as e:
        raise HubError(f"the Hub cannot be reached ({type(e).__name__}: {_first_line(e)})".replace(token, "***")) \
            from None
