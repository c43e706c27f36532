"""The README's Space front matter stays valid for the Hub and in step with the pins."""

import shlex
from pathlib import Path

from huggingface_hub import RepoCard

ROOT = Path(__file__).resolve().parents[1]


def pinned(package: str) -> str:
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        if line.startswith(f"{package}=="):
            return line.split("==", 1)[1].strip()
    raise AssertionError(f"{package} is not pinned in requirements.txt")


def test_space_front_matter() -> None:
    meta = RepoCard.load(ROOT / "README.md", repo_type="space").data.to_dict()
    assert meta["sdk"] == "gradio"
    assert meta["sdk_version"] == pinned("gradio")
    assert meta["app_file"] == "app.py" and (ROOT / meta["app_file"]).is_file()
    assert meta["python_version"] == "3.11"
    assert meta["license"] == "mit"


def test_quick_start_has_the_launch_and_test_commands() -> None:
    text = (ROOT / "README.md").read_text()
    quick = text.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    assert "pip install -r requirements.txt && python app.py" in quick
    assert "bash scripts/test.sh" in quick
    assert "exec bash scripts/test.sh" in (ROOT / ".ci" / "run").read_text()


def section(title: str) -> str:
    """The text of the README's ``## title`` section."""
    return (ROOT / "README.md").read_text().split(f"\n## {title}\n", 1)[1].split("\n## ", 1)[0]


def test_share_section_commands_parse() -> None:
    from studio.__main__ import build_parser

    text = section("Share your model")
    block = text.split("```bash\n", 1)[1].split("```", 1)[0]
    commands = [shlex.split(line.split("  #", 1)[0]) for line in block.splitlines() if line.strip()]
    verbs = set()
    for words in commands:
        words = words[words.index("python") + 3:]  # after any VAR=value and "python -m studio"
        args = build_parser().parse_args(words)
        verbs.add(args.command)
        if args.command == "push":
            assert args.repo == "alice/inky-eyes"
    assert verbs == {"pull", "generate", "push", "import"}
    assert "HF_TOKEN" in text and "--dry-run --out DIR" in text and "pickled" in text


def test_docker_space_front_matter_from_the_deploy_section() -> None:
    text = section("Deploy as a Space")
    docker = text.split("```yaml\n", 1)[1].split("```", 1)[0]
    readme = (ROOT / "README.md").read_text()
    front = readme.split("---\n", 2)[1]
    replaced = ("sdk:", "sdk_version:", "python_version:", "app_file:")
    kept = "".join(line + "\n" for line in front.splitlines() if not line.startswith(replaced))
    meta = RepoCard(f"---\n{kept}{docker}---\n").data.to_dict()
    assert meta["sdk"] == "docker" and "sdk_version" not in meta
    assert f"EXPOSE {meta['app_port']}" in (ROOT / "Dockerfile").read_text()
    assert "uid 1000" in text and "STUDIO_HOME" in text and "spaces.GPU" in text


def test_scaling_out_commands_parse() -> None:
    from studio.__main__ import build_parser

    text = section("Scaling out")
    lines = [line.split("  #", 1)[0] for block in text.split("```bash\n")[1:]
             for line in block.split("```", 1)[0].replace("\\\n", " ").splitlines()]
    studio = [shlex.split(line)[3:] for line in lines if line.startswith("python -m studio ")]
    parsed = [build_parser().parse_args(words) for words in studio]
    assert any(a.command == "serve" and a.ray and a.address == "HEAD_IP:6379" for a in parsed)
    assert any(a.command == "bench" and a.backend == "ray" and a.replicas == [1, 2] for a in parsed)
    assert any(line.startswith("ray start --head") for line in lines)
    assert any(line.startswith("ray start --address HEAD_IP:6379") for line in lines)
    assert any(line.startswith("torchrun --nnodes 2") and "--rdzv-endpoint HEAD_IP:29400" in line for line in lines)
