"""The Hub: pulling from a Hugging Face cache laid out as the Hub lays it out, and the upload a push makes."""

from __future__ import annotations

import hashlib
import http.server
import json
import os
import pickle
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from huggingface_hub import ModelCard, constants, scan_cache_dir
from huggingface_hub._tree_cache import TreeCacheEntry, write_tree_cache
from PIL import Image

from studio import engine, hub, zoo
from studio.models.folder import CONFIG_FILE, WEIGHTS_FILE, from_pretrained, load_config, save_pretrained
from studio.engine import Engine, Request
from studio.zoo import LoadedModel
from studio.loadtest import free_port
from tests.conftest import make_tiny_model

ROOT = Path(__file__).resolve().parents[1]
COMMIT = "0123456789abcdef0123456789abcdef01234567"
OTHER_COMMIT = "fedcba9876543210fedcba9876543210fedcba98"
TOKEN = "hf_NotARealTokenButSecretAnyway0123456789"


def blob_name(path: str, data: bytes) -> str:
    """The Hub cache's blob name: the SHA-256 of an LFS file (weights), the git blob SHA-1 of any other."""
    if path.endswith((".safetensors", ".bin")):
        return hashlib.sha256(data).hexdigest()
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def lay_out_cache(cache: Path, repo_id: str, files: dict[str, bytes], commit: str = COMMIT, ref: str = "main") -> Path:
    """Write ``files`` into ``cache`` exactly as huggingface_hub caches a download of ``repo_id`` at ``commit``.

    ``models--OWNER--NAME/blobs/<hash>`` holds the bytes, ``snapshots/<commit>/<path>`` are relative
    links to the blobs, ``refs/<ref>`` names the commit.
    """
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / commit
    for path, data in files.items():
        blob = repo / "blobs" / blob_name(path, data)
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(data)
        link = snapshot / path
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / ref).write_text(commit)
    return snapshot


def model_files(folder: Path, card: str = "---\nlicense: mit\n---\n# Tiny\n") -> dict[str, bytes]:
    """A model folder's files as a repository holds them, with a card."""
    return {CONFIG_FILE: (folder / CONFIG_FILE).read_bytes(), WEIGHTS_FILE: (folder / WEIGHTS_FILE).read_bytes(),
            "README.md": card.encode()}


@pytest.fixture
def offline_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty Hugging Face cache, with huggingface_hub in offline mode and pointed at it (in this process)."""
    cache = tmp_path / "hf-cache"
    cache.mkdir()
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    return cache


@pytest.fixture
def source_model(tmp_path: Path) -> Path:
    """A tiny conditional model folder outside the studio's home: what someone else pushed."""
    return make_tiny_model(tmp_path / "elsewhere", "tiny", seed=7)


def studio(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "studio", *args], cwd=ROOT, env={**os.environ, **env},
                          capture_output=True, text=True, timeout=300)


def test_cache_layout_is_the_hubs_own(offline_cache: Path, source_model: Path) -> None:
    lay_out_cache(offline_cache, "alice/tiny-cats", model_files(source_model))
    (repo,) = scan_cache_dir(offline_cache).repos
    (revision,) = repo.revisions
    assert repo.repo_id == "alice/tiny-cats" and repo.refs["main"].commit_hash == COMMIT
    assert {f.file_name for f in revision.files} == {CONFIG_FILE, WEIGHTS_FILE, "README.md"}


def test_pull_offline_then_generate_from_the_command_line(tmp_path: Path, source_model: Path) -> None:
    cache = tmp_path / "hf-cache"
    lay_out_cache(cache, "alice/tiny-cats", model_files(source_model))
    home = tmp_path / "home"
    env = {"STUDIO_HOME": str(home), "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(cache)}

    result = studio("pull", "alice/tiny-cats", env=env)
    assert result.returncode == 0, result.stderr
    assert f"commit {COMMIT[:12]}" in result.stdout
    folder = home / "hub" / "alice" / "tiny-cats"
    for name in (CONFIG_FILE, WEIGHTS_FILE, "README.md"):  # real files with the cached bytes, not links
        assert not (folder / name).is_symlink() and (folder / name).read_bytes() == model_files(source_model)[name]

    listed = studio("models", env=env)
    assert "alice/tiny-cats" in listed.stdout
    out = tmp_path / "grid.png"
    result = studio("generate", "--model", "alice/tiny-cats", "--seeds", "0-3", "--class", "dog", "--cols", "4",
                    "--out", str(out), env=env)
    assert result.returncode == 0, result.stderr
    config, generator = from_pretrained(source_model)
    expected = engine.generate_unbatched(LoadedModel("src", config, generator, source_model), range(4), "dog")
    drawn = np.asarray(Image.open(out).convert("RGB"))
    assert drawn.shape == (32, 4 * 32 + 3 * 2, 3)
    for i in range(4):  # the engine's channels_last layout may move a rare pixel by one level
        tile = drawn[:, i * 34 : i * 34 + 32].astype(int)
        assert np.abs(tile - expected[i]).max() <= 1 and np.mean(tile != expected[i]) < 1e-3


def test_pull_a_revision_by_tag(home: Path, offline_cache: Path, source_model: Path, tmp_path: Path) -> None:
    other = make_tiny_model(tmp_path / "other", "tiny", seed=8)
    lay_out_cache(offline_cache, "alice/tiny-cats", model_files(source_model))
    lay_out_cache(offline_cache, "alice/tiny-cats", model_files(other), commit=OTHER_COMMIT, ref="v2")
    assert hub.pull("alice/tiny-cats").commit == COMMIT
    pulled = hub.pull("alice/tiny-cats", "v2")
    assert pulled.commit == OTHER_COMMIT and pulled.folder == home / "hub" / "alice" / "tiny-cats"
    assert (pulled.folder / WEIGHTS_FILE).read_bytes() == (other / WEIGHTS_FILE).read_bytes()
    assert zoo.model_names()[-1] == "alice/tiny-cats"
    assert zoo.load("alice/tiny-cats").config.class_names == ("cat", "dog", "fox")


def test_offline_and_not_cached_says_so(home: Path, offline_cache: Path, tmp_path: Path) -> None:
    with pytest.raises(hub.HubError, match=r"^alice/nothing is not in the local Hugging Face cache .*offline mode"):
        hub.pull("alice/nothing")
    env = {"STUDIO_HOME": str(home), "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tmp_path / "empty")}
    result = studio("pull", "alice/nothing", "--revision", "v1", env=env)
    assert result.returncode == 2
    assert result.stderr.startswith("error: alice/nothing at revision v1 is not in the local Hugging Face cache")
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (home / "hub").exists()


def test_missing_files_are_named(home: Path, offline_cache: Path, source_model: Path) -> None:
    lay_out_cache(offline_cache, "alice/half", {CONFIG_FILE: (source_model / CONFIG_FILE).read_bytes()})
    with pytest.raises(hub.HubError, match="alice/half lacks model.safetensors, so it is no GAN Studio model folder"):
        hub.pull("alice/half")
    lay_out_cache(offline_cache, "alice/weights-only", {WEIGHTS_FILE: (source_model / WEIGHTS_FILE).read_bytes()})
    with pytest.raises(hub.HubError, match="lacks config.json"):
        hub.pull("alice/weights-only")
    assert zoo.model_names() == list(zoo.BUILTIN)


def test_unknown_architecture_is_refused(home: Path, offline_cache: Path, source_model: Path) -> None:
    files = model_files(source_model)
    config = json.loads(files[CONFIG_FILE])
    files[CONFIG_FILE] = json.dumps({**config, "architecture": "stylegan9"}).encode()
    lay_out_cache(offline_cache, "alice/style", files)
    with pytest.raises(hub.HubError, match=r"'stylegan9', which the studio does not know \(it knows: dcgan, stylegan2\)"):
        hub.pull("alice/style")
    transformers_like = {**files, CONFIG_FILE: b'{"architectures": ["BertModel"], "model_type": "bert"}'}
    lay_out_cache(offline_cache, "alice/bert", transformers_like)
    with pytest.raises(hub.HubError, match="architecture None"):
        hub.pull("alice/bert")
    assert not (home / "hub").exists()


def test_weights_that_do_not_fit_the_config_are_refused_before_allocation(
        home: Path, offline_cache: Path, source_model: Path) -> None:
    files = model_files(source_model)
    config = json.loads(files[CONFIG_FILE])
    config["arch"]["base_width"] = 1 << 20  # a network of ~10^13 parameters, were it built for real
    files[CONFIG_FILE] = json.dumps(config).encode()
    lay_out_cache(offline_cache, "alice/huge", files)
    with pytest.raises(hub.HubError, match="holds no loadable studio model: .*tensor 'blocks.0.0.weight' has shape"):
        hub.pull("alice/huge")


class Detonator:
    """Unpickling this runs code: it creates the file at ``path``."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return (Path.touch, (self.path,))


def test_pickled_only_repository_is_refused_unread(home: Path, offline_cache: Path, source_model: Path,
                                                   tmp_path: Path) -> None:
    marker = tmp_path / "unpickled"
    bomb = pickle.dumps(Detonator(marker))
    pickle.loads(bomb)  # the bomb is live: loading it creates the marker
    assert marker.exists()
    marker.unlink()

    files = {CONFIG_FILE: (source_model / CONFIG_FILE).read_bytes(), "pytorch_model.bin": bomb}
    lay_out_cache(offline_cache, "mallory/bomb", files)
    with pytest.raises(hub.HubError, match=r"mallory/bomb offers only pickled weights \(pytorch_model.bin\), which the "
                                           r"studio refuses to load because unpickling can run code"):
        hub.pull("mallory/bomb")
    assert not marker.exists()
    assert not (home / "hub").exists()


def test_pickled_weights_skipped_by_the_download_are_known_from_the_tree_listing(
        home: Path, offline_cache: Path, source_model: Path) -> None:
    # Online, the allow-patterns keep the .pth out of the snapshot; the cached tree listing still names it.
    config = (source_model / CONFIG_FILE).read_bytes()
    lay_out_cache(offline_cache, "mallory/sly", {CONFIG_FILE: config})
    entries = {CONFIG_FILE: TreeCacheEntry(len(config), blob_name(CONFIG_FILE, config)),
               "generator.pth": TreeCacheEntry(1234, "ab" * 20, lfs_sha256="cd" * 32, lfs_size=1234)}
    write_tree_cache(str(offline_cache / "models--mallory--sly"), COMMIT, entries)
    with pytest.raises(hub.HubError, match=r"offers only pickled weights \(generator.pth\)"):
        hub.pull("mallory/sly")


@pytest.fixture
def fake_hub(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A local server that answers every request as the Hub answers for a repository that does not exist."""

    class NotFound(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(404)
            self.send_header("X-Error-Code", "RepoNotFound")
            self.send_header("X-Error-Message", "Repository not found")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), NotFound)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setattr(constants, "ENDPOINT", f"http://127.0.0.1:{server.server_address[1]}")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    yield constants.ENDPOINT
    server.shutdown()


def test_repository_not_found_online(home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                     fake_hub: str) -> None:
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    with pytest.raises(hub.HubError, match=r"^repository alice/nope was not found on the Hub \(a private one needs "
                                           r"HF_TOKEN\)$"):
        hub.pull("alice/nope")


def test_bad_repository_ids_are_refused(home: Path) -> None:
    for bad in ("tiny", "a/b/c", "alice/..", "../x", "alice/x--y"):
        with pytest.raises(hub.HubError, match="is not a Hub repository id: write it as OWNER/NAME"):
            hub.pull(bad)


# -- push ----------------------------------------------------------------------------------------


def test_dry_run_writes_exactly_the_upload_and_never_the_token(tiny_home: Path, tmp_path: Path) -> None:
    out = tmp_path / "upload"
    result = studio("push", "tiny", "--repo", "alice/tiny-cats", "--dry-run", "--out", str(out),
                    env={"STUDIO_HOME": str(tiny_home), "HF_TOKEN": TOKEN})
    assert result.returncode == 0, result.stderr
    assert "nothing was sent" in result.stdout
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "config.json", "model.safetensors", "sample.png"]
    model = tiny_home / "models" / "tiny"
    for name in (CONFIG_FILE, WEIGHTS_FILE):
        assert (out / name).read_bytes() == (model / name).read_bytes()

    sample = np.asarray(Image.open(out / "sample.png").convert("RGB"))
    assert sample.shape == (3 * 32 + 2 * 2, 8 * 32 + 7 * 2, 3)  # a row of seeds 0-7 per class
    with Engine() as studio_engine:  # the studio's own pixels for seed 1, class dog
        expected = studio_engine.generate(Request("tiny", (1,), "dog"))[0]
    assert np.array_equal(sample[34:66, 34:66], expected)

    card = ModelCard.load(out / "README.md")
    assert card.data.license == "mit" and card.data.library_name == "gan-studio"
    assert card.data.tags == ["gan", "image-generation"]
    assert "python -m studio pull alice/tiny-cats" in card.text
    assert "python -m studio generate --model alice/tiny-cats" in card.text
    for path in out.iterdir():
        assert TOKEN.encode() not in path.read_bytes()
    assert TOKEN not in result.stdout + result.stderr


def test_dry_run_needs_an_empty_folder_and_both_options(tiny_home: Path, tmp_path: Path) -> None:
    env = {"STUDIO_HOME": str(tiny_home)}
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("mine")
    result = studio("push", "tiny", "--repo", "alice/x", "--dry-run", "--out", str(tmp_path / "full"), env=env)
    assert result.returncode == 2 and "is not an empty folder" in result.stderr
    assert (tmp_path / "full" / "keep.txt").read_text() == "mine"
    result = studio("push", "tiny", "--repo", "alice/x", "--dry-run", env=env)
    assert result.returncode == 2 and "--dry-run and --out DIR go together" in result.stderr


@pytest.fixture
def card_engine() -> Iterator[Engine]:
    """The engine that draws the model cards' sample grids, as the studio's shared one does."""
    with Engine() as eng:
        yield eng


def finetuned(home: Path, base: str, license: str = "") -> str:
    """A model folder as a fine-tune leaves it: no licence of its own, a lineage naming its base."""
    folder = make_tiny_model(home, "prints-model", num_classes=0)
    config = replace(load_config(folder), license=license, title="Prints", description="Eyes in my print style.",
                     lineage={"base_model": base, "dataset": "prints", "images": 40, "steps": 600, "swd": 12.345})
    _, generator = from_pretrained(folder)
    save_pretrained(folder, config, generator)
    return "prints-model"


def test_card_inherits_the_hub_base_models_licence_and_names_it(home: Path, tmp_path: Path,
                                                                  card_engine: Engine) -> None:
    base = make_tiny_model(tmp_path, "base")
    save_pretrained(home / "hub" / "alice" / "base", replace(load_config(base), license="cc-by-4.0"),
                    from_pretrained(base)[1])
    name = finetuned(home, "alice/base")
    out = tmp_path / "upload"
    hub.write_upload(card_engine, name, "bob/prints", out)
    card = ModelCard.load(out / "README.md")
    assert card.data.license == "cc-by-4.0" and card.data.base_model == "alice/base"
    assert "- **Licence**: CC-BY-4.0 (inherited from the base model)" in card.text
    assert "- **Data set**: the artist's set `prints`, 40 images" in card.text
    assert "- **Training steps**: 600" in card.text
    assert "- **SWD ×10³ to the data set (lower is closer)**: 12.35" in card.text
    assert "[alice/base](https://huggingface.co/alice/base)" in card.text
    sample = np.asarray(Image.open(out / "sample.png"))
    assert sample.shape[:2] == (2 * 32 + 2, 8 * 32 + 7 * 2)  # unconditional: seeds 0-15 in two rows


def test_card_of_a_builtin_base_names_it_in_the_text_only(home: Path, tmp_path: Path, card_engine: Engine) -> None:
    name = finetuned(home, "omniart-eyes")
    out = tmp_path / "upload"
    hub.write_upload(card_engine, name, "bob/prints", out)
    card = ModelCard.load(out / "README.md")
    assert card.data.license == "mit"  # omniart-eyes' licence
    assert card.data.base_model is None  # no Hub id to point at
    assert "`omniart-eyes` (OmniArt eyes, by Rogier Knoester, https://pypi.org/project/omniart-eye" in card.text


class RecordingApi:
    """Stands in for HfApi: records what a push asks of the Hub."""

    calls: list[tuple[str, dict]] = []

    def __init__(self, token: str, library_name: str) -> None:
        self.calls.append(("init", {"token": token}))

    def create_repo(self, repo_id: str, private: bool, exist_ok: bool) -> str:
        self.calls.append(("create_repo", {"repo_id": repo_id, "private": private, "exist_ok": exist_ok}))
        return f"https://huggingface.co/{repo_id}"

    def upload_folder(self, repo_id: str, folder_path: Path, commit_message: str) -> None:
        files = {p.name: p.read_bytes() for p in Path(folder_path).iterdir()}
        self.calls.append(("upload_folder", {"repo_id": repo_id, "files": files}))


def test_push_uploads_the_dry_run_folder_with_the_token(tiny: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                        card_engine: Engine) -> None:
    RecordingApi.calls = []
    monkeypatch.setattr(hub, "HfApi", RecordingApi)
    url = hub.push(card_engine, tiny, "alice/tiny-cats", TOKEN, private=True)
    assert url == "https://huggingface.co/alice/tiny-cats"
    (_, init), (_, create), (_, upload) = RecordingApi.calls
    assert init == {"token": TOKEN}
    assert create == {"repo_id": "alice/tiny-cats", "private": True, "exist_ok": True}
    hub.write_upload(card_engine, tiny, "alice/tiny-cats", tmp_path / "dry")
    assert upload["files"] == {p.name: p.read_bytes() for p in (tmp_path / "dry").iterdir()}


def test_push_without_a_token_or_with_a_refused_one(tiny: str, monkeypatch: pytest.MonkeyPatch,
                                                     card_engine: Engine) -> None:
    with pytest.raises(hub.HubError, match="pushing needs a Hugging Face token with write access: set HF_TOKEN"):
        hub.push(card_engine, tiny, "alice/tiny-cats", None)
    import httpx2
    from huggingface_hub.errors import HfHubHTTPError

    class Refusing(RecordingApi):
        def create_repo(self, repo_id: str, private: bool, exist_ok: bool) -> str:
            response = httpx2.Response(500, request=httpx2.Request("POST", "https://huggingface.co/api/repos/create"))
            raise HfHubHTTPError(f"500 Server Error: bad request with Authorization: Bearer {TOKEN}",
                                 response=response)

    monkeypatch.setattr(hub, "HfApi", Refusing)
    with pytest.raises(hub.HubError, match=r"the Hub refused the upload \(500") as raised:
        hub.push(card_engine, tiny, "alice/tiny-cats", TOKEN)
    assert "the Hub refused the upload (500" in str(raised.value) and TOKEN not in str(raised.value)
    assert "Bearer ***" in str(raised.value)


# -- the Share tab -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def share_app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Engine, Path]]:
    """The Share tab alone in a Blocks, served, with a studio home (holding ``tiny``) and an offline HF cache."""
    import gradio as gr

    from studio.ui.share import build_share_tab

    root = tmp_path_factory.mktemp("share")
    make_tiny_model(root / "home")
    source = make_tiny_model(root / "elsewhere", "tiny", seed=7)
    lay_out_cache(root / "hf-cache", "alice/tiny-cats", model_files(source, "---\nlicense: mit\n---\n# Alice's cats\n"))
    with pytest.MonkeyPatch.context() as mp, Engine() as eng:
        mp.setenv("STUDIO_HOME", str(root / "home"))
        mp.delenv("HF_TOKEN", raising=False)
        mp.setattr(constants, "HF_HUB_OFFLINE", True)
        mp.setattr(constants, "HF_HUB_CACHE", str(root / "hf-cache"))
        with gr.Blocks() as demo:
            build_share_tab(demo, eng)
        demo.queue()
        port = free_port()
        demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
        yield f"http://127.0.0.1:{port}/", eng, source
        demo.close()


@pytest.mark.slow
def test_share_tab_loads_a_model_and_draws_it(share_app: tuple[str, Engine, Path]) -> None:
    from gradio_client import Client

    url, eng, source = share_app
    client = Client(url, verbose=False)
    status, picker, sample, card = client.predict("alice/tiny-cats", "", api_name="/pull_model")
    assert status.startswith(f"Loaded **alice/tiny-cats** (commit `{COMMIT[:12]}`)")
    assert picker["value"] == "alice/tiny-cats" and ["alice/tiny-cats"] * 2 in picker["choices"]
    assert "# Alice's cats" in card
    expected = eng.generate(engine.Request("alice/tiny-cats", tuple(range(8))))
    assert np.array_equal(np.asarray(Image.open(sample).convert("RGB"))[:, :32], expected[0])
    with pytest.raises(Exception, match="alice/nothing is not in the local Hugging Face cache"):
        client.predict("alice/nothing", "", api_name="/pull_model")


@pytest.mark.slow
def test_share_tab_previews_the_upload_and_needs_a_token(share_app: tuple[str, Engine, Path]) -> None:
    from gradio_client import Client

    client = Client(share_app[0], verbose=False)
    sample, preview = client.predict("tiny", "alice/tiny-cats", api_name="/push_preview")
    assert Image.open(sample).size == (8 * 32 + 7 * 2, 3 * 32 + 2 * 2)
    assert "nothing was sent" in preview and "license: mit" in preview and "- image-generation" in preview
    for name in ("README.md", "config.json", "model.safetensors", "sample.png"):
        assert f"| `{name}` |" in preview
    assert "python -m studio pull alice/tiny-cats" in preview
    with pytest.raises(Exception, match="pushing needs a Hugging Face token with write access"):
        client.predict("tiny", "alice/tiny-cats", False, "", api_name="/push_model")
    with pytest.raises(Exception, match="is not a Hub repository id"):
        client.predict("tiny", "no-owner", api_name="/push_preview")


def test_push_token_never_falls_back_to_the_servers_secret_in_a_shared_studio(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from studio.ui.owners import is_shared
    from studio.ui.share_logic import push_token

    monkeypatch.setenv("HF_TOKEN", TOKEN)
    monkeypatch.delenv("SPACE_ID", raising=False)
    assert not is_shared("127.0.0.1") and not is_shared("localhost") and not is_shared("::1")
    assert is_shared("0.0.0.0") and is_shared("192.168.1.7") and is_shared("studio.example")
    assert push_token("", shared=False) == TOKEN and push_token(" hf_typed ", shared=False) == "hf_typed"
    assert push_token("", shared=True) is None and push_token("hf_typed", shared=True) == "hf_typed"
    monkeypatch.setenv("SPACE_ID", "alice/gan-studio")
    assert is_shared("127.0.0.1")  # a Space is shared whatever its bind


# -- repositories holding a StyleGAN2 file instead of a model folder -----------------------------------------


def test_pull_converts_a_repositorys_rosinality_checkpoint(home: Path, offline_cache: Path, tmp_path: Path) -> None:
    from tests.test_rosinality_import import STYLE, checkpoint, ros_generator

    saved, g, _ = checkpoint(seed=11, latent_avg=True)
    torch.save(saved, tmp_path / "faces.pt")
    lay_out_cache(offline_cache, "artist/ros-faces", {"faces.pt": (tmp_path / "faces.pt").read_bytes(),
                                                      "README.md": b"# Faces\n"})
    pulled = hub.pull("artist/ros-faces")
    assert (pulled.name, pulled.commit) == ("artist/ros-faces", COMMIT)
    config = load_config(pulled.folder)
    assert config.architecture == "stylegan2" and "huggingface.co/artist/ros-faces (faces.pt)" in config.source
    z = torch.randn(3, STYLE, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        drawn = zoo.load("artist/ros-faces").generator(z)
    torch.testing.assert_close(drawn.double(), ros_generator(g, z), atol=1e-4, rtol=0)


@pytest.mark.slow  # runs the command line in a child process
def test_pull_converts_a_tf_era_pickle_from_the_command_line(home: Path, tmp_path: Path) -> None:
    from tests.test_tf_import import Z, gs_variables, random_variables, tf_generator, tf_pickle

    mapping, synthesis, d = random_variables(seed=12)
    cache = tmp_path / "hf-cache"
    lay_out_cache(cache, "artist/tf-art", {"stylegan2-art-config-f.pkl": tf_pickle(mapping, synthesis, d)})
    result = studio("pull", "artist/tf-art", env={"STUDIO_HOME": str(home), "HF_HUB_CACHE": str(cache),
                                                  "HF_HUB_OFFLINE": "1"})
    assert result.returncode == 0, result.stderr
    assert "pulled artist/tf-art" in result.stdout
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("STUDIO_HOME", str(home))
        z = torch.randn(2, Z, generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            drawn = zoo.load("artist/tf-art").generator(z)
    torch.testing.assert_close(drawn.double(), tf_generator(gs_variables(mapping, synthesis), z), atol=1e-4, rtol=0)


def test_pulled_stylegan2_files_that_cannot_be_converted_are_refused_and_nothing_is_written(
        home: Path, offline_cache: Path, tmp_path: Path) -> None:
    marker = tmp_path / "unpickled"
    lay_out_cache(offline_cache, "mallory/snapshot", {"network-snapshot.pkl": pickle.dumps(Detonator(marker))})
    with pytest.raises(hub.HubError, match=r"mallory/snapshot's network-snapshot.pkl was refused: it asks to import "
                                           r"and call pathlib.*never runs code"):
        hub.pull("mallory/snapshot")
    assert not marker.exists()

    module = tmp_path / "module.pt"
    torch.save(torch.nn.Linear(2, 2), module)
    lay_out_cache(offline_cache, "mallory/module", {"g.pt": module.read_bytes()})
    with pytest.raises(hub.HubError, match="holds a whole pickled object of class torch.nn.modules.linear.Linear"):
        hub.pull("mallory/module")

    lay_out_cache(offline_cache, "artist/two", {"a.pkl": b"\x80\x04N.", "b.pt": module.read_bytes()})
    with pytest.raises(hub.HubError, match=r"artist/two holds several StyleGAN2 files \(a.pkl, b.pt\)"):
        hub.pull("artist/two")
    assert not (home / "hub").exists() or not any((home / "hub").rglob("config.json"))
