"""The README's Space front matter stays valid for the Hub and in step with the pins."""

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
