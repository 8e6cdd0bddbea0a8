"""README.md against the run of record: the results block is generated from the committed metrics
files, no run-of-record figure is typed elsewhere, links resolve, no internal work items."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from pathlib import Path

import pytest
import yaml

from diffpose.report import readme_table

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
DOCS = sorted((REPO / "docs").glob("*.md"))

# A decimal number with a detection/pose score word near it reads as a quoted result.
_DECIMAL = re.compile(r"(?<![\w.])\d+\.\d+(?![\w.])")
_SCORE_WORD = re.compile(r"\b(?:m?AP\d*|PCKh)\b")
_WINDOW = 60
_LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
_INTERNAL = re.compile(r"\b(?:issues?|sessions?)\b", re.IGNORECASE)


def quoted_figures(text: str) -> list[str]:
    """Decimal numbers outside the generated block with mAP/AP/AP50/PCKh within a few words."""
    try:
        head, _, tail = readme_table._split(text)
        text = head + tail
    except readme_table.ReadmeBlockError:
        pass
    found = []
    for match in _DECIMAL.finditer(text):
        near = text[max(0, match.start() - _WINDOW): match.end() + _WINDOW]
        if _SCORE_WORD.search(near):
            found.append(" ".join(near.split()))
    return found


def _slug(heading: str) -> str:
    """GitHub's anchor for a Markdown heading."""
    heading = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return heading.replace(" ", "-")


def broken_links(page: Path) -> list[str]:
    """Relative links of ``page`` whose file (or #anchor in a Markdown file) does not exist."""
    broken = []
    for target in _LINK.findall(page.read_text()):
        if re.match(r"^[a-z]+:", target):  # http:, https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        if not file.exists():
            broken.append(target)
        elif anchor and file.suffix == ".md":
            headings = re.findall(r"^#+\s+(.*)$", file.read_text(), flags=re.MULTILINE)
            if anchor not in {_slug(h) for h in headings}:
                broken.append(target)
    return broken


def _copy_run_of_record(dst: Path) -> Path:
    for src in readme_table.source_files(REPO):
        (dst / src.relative_to(REPO)).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dst / src.relative_to(REPO))
    shutil.copy2(REPO / "dvc.lock", dst / "dvc.lock")
    shutil.copy2(README, dst / "README.md")
    return dst / "README.md"


# -- (a) the block is what the committed files generate ------------------------------------------

def test_the_results_block_is_generated_from_the_committed_metrics_files() -> None:
    generated = readme_table.results_block(REPO)
    assert readme_table.readme_block(README.read_text()) == generated, (
        "README.md's results block is stale: run `python -m diffpose.report.readme_table --write README.md`")
    assert readme_table.main(["--check", str(README)]) == 0


def test_the_metrics_files_are_the_ones_dvc_lock_records() -> None:
    """The block describes the run of record only if the files are the outputs dvc.lock names."""
    recorded = {out["path"]: out["md5"]
                for stage in yaml.safe_load((REPO / "dvc.lock").read_text())["stages"].values()
                for out in stage.get("outs", [])}
    sources = readme_table.source_files(REPO)
    assert len(sources) >= 8  # 2 models x (training + 3 evaluations) + the detector's two files
    for path in sources:
        rel = path.relative_to(REPO).as_posix()
        assert rel in recorded, f"{rel} is not an output in dvc.lock"
        assert hashlib.md5(path.read_bytes()).hexdigest() == recorded[rel], f"{rel} differs from dvc.lock"


@pytest.mark.parametrize("rel,keys", [
    ("results/metrics/diffpose.json", ["Total"]),
    ("results/metrics/baseline_degraded.json", ["Total"]),
    ("results/metrics/diffpose_detected.json", ["Wri"]),
    ("models/baseline/metrics.json", ["train_seconds_this_run"]),
    ("results/detect/val_box_ap.json", ["box_ap", "AP50"]),
    ("results/detect/train_detector.json", ["seconds"]),
])
def test_a_changed_metrics_file_makes_the_readme_stale(tmp_path: Path, rel: str, keys: list[str]) -> None:
    readme = _copy_run_of_record(tmp_path)
    assert readme_table.main(["--check", str(readme)]) == 0
    data = json.loads((tmp_path / rel).read_text())
    leaf = data
    for key in keys[:-1]:
        leaf = leaf[key]
    leaf[keys[-1]] = leaf[keys[-1]] * 0.9 + 1.0
    (tmp_path / rel).write_text(json.dumps(data))
    assert readme_table.main(["--check", str(readme)]) == 1
    assert readme_table.main(["--write", str(readme)]) == 0
    assert readme_table.main(["--check", str(readme)]) == 0
    text = readme.read_text()
    assert text.startswith(README.read_text().split(readme_table.BEGIN)[0])  # only the block changed
    assert text.split(readme_table.END)[1] == README.read_text().split(readme_table.END)[1]


def test_missing_markers_are_an_error(tmp_path: Path) -> None:
    readme = _copy_run_of_record(tmp_path)
    readme.write_text(README.read_text().replace(readme_table.END, ""))
    assert readme_table.main(["--check", str(readme)]) == 2
    assert readme_table.main(["--write", str(readme)]) == 2


# -- (b) no run-of-record figure typed outside the block -----------------------------------------

def test_no_score_is_quoted_outside_the_generated_block() -> None:
    assert quoted_figures(README.read_text()) == []


def test_the_quoted_figure_scan_finds_a_typed_score() -> None:
    """Guards the test above: a figure typed beside the block is found, one inside it is not."""
    text = README.read_text()
    assert quoted_figures(text.replace(readme_table.END, readme_table.END + "\nDiffPose reaches 62.0 mAP.\n"))
    assert quoted_figures("the box AP50 of the stage is\n0.912 on val")
    assert not quoted_figures(text.replace(readme_table.BEGIN, readme_table.BEGIN + "\n62.0 mAP\n"))
    assert not quoted_figures("Python 3.11 and torch 2.13")


# -- (c) links ------------------------------------------------------------------------------------

@pytest.mark.parametrize("page", [README, *DOCS], ids=lambda p: p.relative_to(REPO).as_posix())
def test_every_relative_link_resolves(page: Path) -> None:
    assert broken_links(page) == []


def test_the_link_check_finds_a_missing_file_and_anchor(tmp_path: Path) -> None:
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.md").write_text("# A page\n\n## Some section\n")
    page = tmp_path / "README.md"
    page.write_text("[ok](docs/a.md) [ok](docs/a.md#some-section) [web](https://example.org/x)\n"
                    "[gone](docs/missing.md) [bad anchor](docs/a.md#no-such-section)\n")
    assert broken_links(page) == ["docs/missing.md", "docs/a.md#no-such-section"]


# -- (d) no internal work items -------------------------------------------------------------------

@pytest.mark.parametrize("page", [README, *DOCS], ids=lambda p: p.relative_to(REPO).as_posix())
def test_no_reference_to_internal_work_items(page: Path) -> None:
    hits = [line.strip() for line in page.read_text().splitlines() if _INTERNAL.search(line)]
    assert hits == []


def test_the_internal_reference_check_matches() -> None:
    assert _INTERNAL.search("Against the issue's targets") and _INTERNAL.search("see issues/03")
    assert _INTERNAL.search("measured in an earlier session")
    assert not _INTERNAL.search("the tissue of the issuer")


def test_lock_params_read_whole_sections_and_single_keys(tmp_path: Path) -> None:
    """dvc.lock records a whole section (`synth: {...}`) or single keys (`infer.steps: 1`): the
    sampler sentence of the block needs both."""
    (tmp_path / "dvc.lock").write_text(yaml.safe_dump({"schema": "2.0", "stages": {
        "synth": {"params": {"params.yaml": {"synth": {"preset": "demo"}}}},
        "infer@diffpose": {"params": {"params.yaml": {"infer.steps": 4, "infer.ensemble": 2, "infer.flip_test": False}}},
        "train@diffpose": {"params": {"params.yaml": {"models.diffpose": {"preset": "demo_diffpose"}}}},
    }}))
    (tmp_path / "models" / "diffpose").mkdir(parents=True)
    (tmp_path / "models" / "diffpose" / "metrics.json").write_text('{"epochs": 3, "training_clips": 100}')
    lock = readme_table._lock_params(tmp_path)
    assert lock["infer@diffpose"]["infer"] == {"steps": 4, "ensemble": 2, "flip_test": False}
    assert lock["synth"]["synth"] == {"preset": "demo"}
    assert lock["train@diffpose"]["models.diffpose"] == {"preset": "demo_diffpose"}
    sentence = readme_table._setting_sentence(tmp_path, ["diffpose"], lock)
    assert "4 denoising steps" in sentence and "without flip test" in sentence
