"""README.md against the run of record: the results block is generated from the committed tables
(results/tables, written by the tables stage), no run-of-record figure is typed elsewhere, links
resolve, no internal work items."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from pathlib import Path

import pandas as pd
import pytest
import yaml

from diffpose.report import readme_table
from diffpose.report.tables import write_tables
from tests import fake_results

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


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def _dvc_dir_md5(folder: Path) -> str:
    """DVC's hash of a folder output: md5 of the sorted JSON list of its files' md5 and relpath."""
    entries = sorted(({"md5": _md5(p), "relpath": p.relative_to(folder).as_posix()}
                      for p in folder.rglob("*") if p.is_file()), key=lambda e: e["relpath"])
    return hashlib.md5(json.dumps(entries, sort_keys=True).encode()).hexdigest() + ".dir"


@pytest.fixture(scope="module")
def fake_tables(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """results/tables written by the tables stage from a fake results tree (tests/fake_results.py)."""
    root = tmp_path_factory.mktemp("fake_run")
    fake_results.make_results(root)
    write_tables(fake_results.PARAMS, root / readme_table.TABLES, root)
    return root


def _copy_fake_run(fake_tables: Path, dst: Path) -> Path:
    """The fake tables and README.md in ``dst``, the block generated from them."""
    shutil.copytree(fake_tables / readme_table.TABLES, dst / readme_table.TABLES)
    shutil.copy2(README, dst / "README.md")
    assert readme_table.main(["--write", str(dst / "README.md")]) == 0
    return dst / "README.md"


# -- (a) the block is what the committed files generate ------------------------------------------

def test_the_results_block_is_generated_from_the_committed_tables() -> None:
    generated = readme_table.results_block(REPO)
    assert readme_table.readme_block(README.read_text()) == generated, (
        "README.md's results block is stale: run `python -m diffpose.report.readme_table --write README.md`")
    assert readme_table.main(["--check", str(README)]) == 0


def test_the_tables_are_the_ones_dvc_lock_records() -> None:
    """The block describes the run of record only if its files are outputs dvc.lock names (a file
    output, or a file inside a folder output whose files all hash as dvc.lock records)."""
    recorded = {out["path"]: out["md5"]
                for stage in yaml.safe_load((REPO / "dvc.lock").read_text())["stages"].values()
                for out in stage.get("outs", [])}
    sources = readme_table.source_files(REPO)
    assert len(sources) == 4, "results/tables/summary.json, per_joint.csv, steps.csv and flip.csv of the run of record"
    for path in sources:
        rel = path.relative_to(REPO)
        owner = next((p for p in (rel, *rel.parents) if p.as_posix() in recorded), None)
        assert owner is not None, f"{rel.as_posix()} is not (inside) an output in dvc.lock"
        expected = recorded[owner.as_posix()]
        actual = _dvc_dir_md5(REPO / owner) if expected.endswith(".dir") else _md5(path)
        assert actual == expected, f"{owner.as_posix()} differs from dvc.lock"


def test_the_folder_hash_is_dvcs(tmp_path: Path) -> None:
    """Guards the test above: DVC's hash of a folder of two files, computed by DVC itself."""
    from dvc_data.hashfile.hash_info import HashInfo
    from dvc_data.hashfile.meta import Meta
    from dvc_data.hashfile.tree import Tree

    (tmp_path / "d" / "sub").mkdir(parents=True)
    (tmp_path / "d" / "a.csv").write_text("x,y\n1,2\n")
    (tmp_path / "d" / "sub" / "b.json").write_text("{}")
    tree = Tree()
    for rel in ("a.csv", "sub/b.json"):
        tree.add(tuple(rel.split("/")), Meta(), HashInfo("md5", _md5(tmp_path / "d" / rel)))
    tree.digest()
    assert _dvc_dir_md5(tmp_path / "d") == tree.hash_info.value


@pytest.mark.parametrize("rel,keys", [
    ("summary.json", ["models", "diffpose", "Total", "gt_all", "mean"]),
    ("summary.json", ["models", "baseline", "Total", "detected_all", "mean"]),
    ("summary.json", ["models", "baseline", "training", "seconds_total"]),
    ("summary.json", ["detector", "detect", "box_ap", "AP50"]),
    ("summary.json", ["detector", "train", "seconds"]),
    ("per_joint.csv", [1, "Wri"]),  # a row of this run
    ("per_joint.csv", [-1, "Ankl"]),  # a row quoted from the paper
])
def test_a_changed_table_makes_the_readme_stale(fake_tables: Path, tmp_path: Path, rel: str,
                                                keys: list) -> None:
    readme = _copy_fake_run(fake_tables, tmp_path)
    assert readme_table.main(["--check", str(readme)]) == 0
    path = tmp_path / readme_table.TABLES / rel
    if rel.endswith(".json"):
        data = json.loads(path.read_text())
        leaf = data
        for key in keys[:-1]:
            leaf = leaf[key]
        leaf[keys[-1]] = leaf[keys[-1]] * 0.9 + 1.0
        path.write_text(json.dumps(data))
    else:
        frame = pd.read_csv(path, dtype={"seeds": str})
        frame.loc[frame.index[keys[0]], keys[1]] += 1.0
        frame.to_csv(path, index=False)
    assert readme_table.main(["--check", str(readme)]) == 1
    assert readme_table.main(["--write", str(readme)]) == 0
    assert readme_table.main(["--check", str(readme)]) == 0
    text = readme.read_text()
    assert text.startswith(README.read_text().split(readme_table.BEGIN)[0])  # only the block changed
    assert text.split(readme_table.END)[1] == README.read_text().split(readme_table.END)[1]


def test_the_block_states_the_tables_figures(fake_tables: Path) -> None:
    block = readme_table.results_block(fake_tables)
    assert "| DiffPose (`demo_diffpose`) | 41.5 | 38.5 | 36.5 | 67 s (100 clips/s) |" in block
    assert "| DiffPose - single-frame baseline | +10.0 | +10.0 | +10.0 |  |" in block
    assert "| detected boxes, frames with a degraded person | single-frame baseline | 23.5 |" in block
    assert "| PoseTrack21 val | 84.7 | 85.6 | 83.6 | 80.8 | 81.4 | 83.5 | 80.0 | 82.9 |" in block
    assert "| the detect stage's output, gaps filled along each video | 0.867 |" in block
    assert "Training took 613 s in all (133 s for the pose models, 480 s for the detector)." in block
    assert "±" not in block  # one seed


def test_missing_markers_are_an_error(fake_tables: Path, tmp_path: Path) -> None:
    readme = _copy_fake_run(fake_tables, tmp_path)
    readme.write_text(README.read_text().replace(readme_table.END, ""))
    assert readme_table.main(["--check", str(readme)]) == 2
    assert readme_table.main(["--write", str(readme)]) == 2


def test_missing_tables_are_an_error_naming_the_stage(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    shutil.copy2(README, tmp_path / "README.md")
    assert readme_table.main(["--check", str(tmp_path / "README.md")]) == 2
    assert "summary.json not found: run `dvc repro tables`" in capsys.readouterr().err


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


def test_the_setting_sentence_states_steps_flip_test_and_seeds(fake_tables: Path) -> None:
    """The sampler settings and the seeds come from summary.json, as the tables stage ran them."""
    summary = json.loads((fake_tables / readme_table.SUMMARY).read_text())
    assert "1 denoising step, 1 noise start, with flip test" in readme_table._setting_sentence(summary)
    summary["setting"] = {"steps": 4, "ensemble": 2, "flip_test": False}
    summary["seeds"] = [0, 1]
    sentence = readme_table._setting_sentence(summary)
    assert "4 denoising steps, 2 noise starts, without flip test" in sentence
    assert "2 training seeds (0, 1): mean ± standard deviation" in sentence
    assert "synthetic `demo` benchmark, val split (216 labelled frames, 556 people)" in sentence
    summary.update(synth_preset=None, dataset="PoseTrack2018 val")
    assert readme_table._setting_sentence(summary).startswith(
        "Run of record (`dvc.lock`): PoseTrack2018 val (216 labelled frames, 556 people);")
