"""Bad output paths, params files and command-line overrides end in one error line and exit 2.

The case IDs are those of the bad-input sweep (docs: bad-input-sweep-2026-11). Tests may run as
root, where ``chmod`` does not stop writes, so an unwritable output is a path under a regular file
(``<file>/x``: NotADirectoryError for root too) or a folder where a file is expected (and the
reverse); a real read-only folder is tried only when it actually refuses writes.
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

import pytest
import yaml

from diffpose.cli import main as cli_main
from diffpose.config import load_params

REPO = Path(__file__).resolve().parents[1]
PARAMS = REPO / "params.yaml"


@pytest.fixture(autouse=True)
def _no_tracking(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DIFFPOSE_TRACKING", "off")


def run_cli(argv: list[str], capsys: pytest.CaptureFixture) -> tuple[int, str]:
    """Exit code and the one error line; fails unless stderr holds exactly one such line."""
    code = cli_main([str(a) for a in argv])
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if f"diffpose {argv[0]}: error: " in line]
    assert len(lines) == 1, err
    return code, lines[0]


def files_under(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


@pytest.fixture
def scratch(tmp_path: Path) -> Path:
    """A folder holding a regular file ``f`` (with content) and an empty folder ``d``."""
    (tmp_path / "f").write_text("keep me\n")
    (tmp_path / "d").mkdir()
    return tmp_path


# (sweep ID, argv with {f} = a regular file and {d} = a folder, the path the error must name)
OUTPUT_CASES = [
    ("S01", ["synth", "--out", "{f}", "--preset", "tiny", "--no-progress"], "{f}"),
    ("S02", ["synth", "--out", "{f}/x", "--preset", "tiny", "--no-progress"], "{f}/x"),
    ("E33", ["evaluate", "--gt", "{d}", "--pred", "{d}", "--out", "{d}", "--no-track"], "{d}"),
    ("E34", ["evaluate", "--gt", "{d}", "--pred", "{d}", "--out", "{f}/m.json", "--no-track"], "{f}/m.json"),
    ("E35", ["evaluate", "--gt", "{d}", "--pred", "{d}", "--per-sequence", "{f}", "--no-track"], "{f}"),
    ("C03", ["convert", "--to", "17", "{d}", "{f}/x"], "{f}/x"),
    ("T04", ["train", "--model", "tiny", "--out", "{f}", "--params", PARAMS, "--annotations", "{d}", "--images", "{d}"],
     "{f}"),
    ("T05", ["train", "--model", "tiny", "--out", "{f}/m", "--params", PARAMS, "--annotations", "{d}",
             "--images", "{d}"], "{f}/m"),
    ("I14", ["infer", "--checkpoint", "{d}/c.pt", "--annotations", "{d}", "--out", "{f}", "--params", PARAMS], "{f}"),
    ("I15", ["infer", "--checkpoint", "{d}/c.pt", "--annotations", "{d}", "--out", "{f}/p", "--params", PARAMS],
     "{f}/p"),
    ("D14", ["detect", "--annotations", "{d}", "--images", "{d}", "--out", "{f}/d.json"], "{f}/d.json"),
    ("D15", ["detect", "--annotations", "{d}", "--images", "{d}", "--out", "{d}"], "{d}"),
    ("D14m", ["detect", "--annotations", "{d}", "--images", "{d}", "--out", "{d}/d.json", "--metrics", "{f}/m.json"],
     "{f}/m.json"),
    # train-detector: the annotations do not exist, so naming --out proves it is checked before training
    ("R03", ["train-detector", "--annotations", "{d}/none", "--images", "{d}", "--out", "{d}"], "{d}"),
    ("R06", ["train-detector", "--annotations", "{d}/none", "--images", "{d}", "--out", "{f}/det.pt"], "{f}/det.pt"),
    ("R06m", ["train-detector", "--annotations", "{d}/none", "--images", "{d}", "--out", "{d}/det.pt",
              "--metrics", "{d}"], "{d}"),
    ("P08", ["predict", "{d}/v.mp4", "--checkpoint", "{d}/c.pt", "--out", "{f}"], "{f}"),
    ("P08b", ["predict", "{d}/v.mp4", "--checkpoint", "{d}/c.pt", "--out", "{f}/o"], "{f}/o"),
]


@pytest.mark.parametrize(("case", "argv", "named"), OUTPUT_CASES, ids=[c[0] for c in OUTPUT_CASES])
def test_bad_output_path_is_one_line_before_any_work(case, argv, named, scratch, capsys):
    fill = {"f": scratch / "f", "d": scratch / "d"}
    argv = [a.format(**fill) if isinstance(a, str) else a for a in argv]
    named = named.format(**fill)
    before = files_under(scratch)
    code, line = run_cli(argv, capsys)
    assert code == 2
    assert line.startswith(f"diffpose {argv[0]}: error: {named}: "), line
    assert files_under(scratch) == before  # nothing written, not even a temporary file
    assert (scratch / "f").read_text() == "keep me\n"


def test_read_only_folder_is_refused_before_the_stage(tmp_path, capsys):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        if os.access(ro, os.W_OK):
            pytest.skip("running with permission to write anywhere (root)")
        code, line = run_cli(["detect", "--annotations", tmp_path, "--images", tmp_path, "--out", ro / "d.json"],
                             capsys)
        assert code == 2 and f"{ro / 'd.json'}: Permission denied" in line
        assert list(ro.iterdir()) == []
    finally:
        ro.chmod(0o755)


def test_an_os_error_during_the_stage_is_one_line(monkeypatch, capsys):
    """A failure the pre-check cannot foresee (disk full, a rename refused) names the final path."""
    import diffpose.stages.convert as convert

    def fail(args):
        raise IsADirectoryError(21, "Is a directory", "/out/.m.json.abc.tmp.json", None, "/out/m.json")

    monkeypatch.setattr(convert, "main", fail)
    code, line = run_cli(["convert", "--to", "17", "a", "b"], capsys)
    assert code == 2 and line == "diffpose convert: error: /out/m.json: Is a directory"


# -- command-line overrides obey the params schema ------------------------------------------------

OVERRIDE_CASES = [
    ("D10", ["detect", "--annotations", "{d}", "--images", "{d}", "--out", "{d}/o.json", "--score-threshold", "nan"],
     "--score-threshold: must be a finite number, got nan"),
    ("D11", ["detect", "--annotations", "{d}", "--images", "{d}", "--out", "{d}/o.json", "--score-threshold", "5"],
     "--score-threshold: 5.0 is greater than the maximum of 1"),
    ("D12", ["detect", "--annotations", "{d}", "--images", "{d}", "--out", "{d}/o.json", "--batch-size", "0"],
     "--batch-size: 0 is less than the minimum of 1"),
    ("D05", ["detect", "--annotations", "{d}", "--images", "{d}", "--out", "{d}/o.json", "--backend", "bogus"],
     "--backend: 'bogus' is not one of"),
    ("R01", ["train-detector", "--annotations", "{d}", "--images", "{d}", "--out", "{d}/o.pt", "--max-steps", "0"],
     "--max-steps: 0 is less than the minimum of 1"),
    ("R02", ["train-detector", "--annotations", "{d}", "--images", "{d}", "--out", "{d}/o.pt", "--max-steps", "-5"],
     "--max-steps: -5 is less than the minimum of 1"),
    ("I23", ["infer", "--checkpoint", "{d}/c.pt", "--annotations", "{d}", "--out", "{d}/o", "--params", PARAMS,
             "--steps", "0"], "infer.steps must be >= 1, got 0"),
    ("I23b", ["infer", "--checkpoint", "{d}/c.pt", "--annotations", "{d}", "--out", "{d}/o", "--params", PARAMS,
              "--steps", "-1"], "infer.steps must be >= 1, got -1"),
    ("I24", ["infer", "--checkpoint", "{d}/c.pt", "--annotations", "{d}", "--out", "{d}/o", "--params", PARAMS,
             "--ensemble", "-1"], "infer.ensemble must be >= 1, got -1"),
    ("P12", ["predict", "{d}/v.mp4", "--checkpoint", "{d}/c.pt", "--out", "{d}/o", "--steps", "0"],
     "--steps: 0 is less than the minimum of 1"),
    ("P09", ["predict", "{d}/v.mp4", "--checkpoint", "{d}/c.pt", "--out", "{d}/o", "--max-frames", "-1"],
     "--max-frames: -1 is less than the minimum of 0"),
    ("P09b", ["predict", "{d}/v.mp4", "--checkpoint", "{d}/c.pt", "--out", "{d}/o", "--score-threshold", "inf"],
     "--score-threshold: must be a finite number, got inf"),
]


@pytest.mark.parametrize(("case", "argv", "message"), OVERRIDE_CASES, ids=[c[0] for c in OVERRIDE_CASES])
def test_bad_override_is_one_line_and_nothing_is_written(case, argv, message, scratch, capsys):
    argv = [a.format(d=scratch / "d") if isinstance(a, str) else a for a in argv]
    code, line = run_cli(argv, capsys)
    assert code == 2
    assert line.startswith(f"diffpose {argv[0]}: error: {message}"), line
    assert list((scratch / "d").iterdir()) == []


def test_overrides_within_the_rules_still_apply():
    from diffpose.detect.train import TrainConfig
    from diffpose.stages.detect import resolve_params
    from diffpose.stages.train_detector import resolve_config

    assert resolve_params(None, score_threshold=0.0, batch_size=3)["score_threshold"] == 0.0
    assert resolve_config(None, max_steps=7) == TrainConfig(max_steps=7)


# -- params files ---------------------------------------------------------------------------------


def params_with(tmp_path: Path, edit) -> Path:
    params = yaml.safe_load(PARAMS.read_text())
    edit(params)
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return path


PARAM_CASES = [
    ("Y05", lambda p: p["train"].update(epochs=2.0), r"train\.epochs: 2\.0 is not of type 'integer'"),
    ("Y07", lambda p: p["train"].update(lr=float("nan")), r"train\.lr: must be a finite number, got nan"),
    ("Y08", lambda p: p["data"].update(box_enlarge=float("inf")), r"data\.box_enlarge: must be a finite number, got inf"),
    ("Y19", lambda p: p["train"].update(warmup_epochs=float("nan")), r"train\.warmup_epochs: must be a finite number"),
    ("Y19b", lambda p: p["detect"].update(score_threshold=float("-inf")), r"detect\.score_threshold: must be a finite"),
    ("Y05b", lambda p: p["train"].update(milestones=[3, 4.0]), r"train\.milestones\.1: 4\.0 is not of type 'integer'"),
    ("Y05c", lambda p: p["detect"]["train"].update(max_steps=20.0), r"detect\.train\.max_steps: 20\.0 is not of type"),
]


@pytest.mark.parametrize(("case", "edit", "message"), PARAM_CASES, ids=[c[0] for c in PARAM_CASES])
def test_non_finite_numbers_and_float_integers_are_refused(case, edit, message, tmp_path, capsys):
    bad = params_with(tmp_path, edit)
    out = tmp_path / "model"
    code, line = run_cli(["train", "--model", next(iter(load_params(PARAMS)["models"])), "--out", out,
                          "--params", bad, "--annotations", tmp_path, "--images", tmp_path], capsys)
    assert code == 2
    assert line.startswith(f"diffpose train: error: {bad}: "), line
    assert re.search(message, line), line
    assert not out.exists()


def write(tmp_path: Path, data: bytes | str) -> Path:
    path = tmp_path / "p.yaml"
    path.write_bytes(data if isinstance(data, bytes) else data.encode())
    return path


def train_argv(tmp_path: Path, params: Path) -> list:
    return ["train", "--model", "x", "--out", tmp_path / "out", "--params", params,
            "--annotations", tmp_path, "--images", tmp_path]


def test_y26_duplicate_key_names_the_key_and_both_lines(tmp_path, capsys):
    params = write(tmp_path, "train:\n  epochs: 2\n  lr: 0.1\n  epochs: 500\n")
    code, line = run_cli(train_argv(tmp_path, params), capsys)
    assert code == 2
    assert f"{params}: line 4: duplicate key 'epochs' (first on line 2)" in line


def test_merge_keys_and_small_anchors_are_still_allowed(tmp_path):
    """A merged block whose key is then overridden is not a duplicate; a small anchor is fine."""
    path = write(tmp_path, "models:\n  base: &m {preset: tiny, sigma: 2.0}\n  merged:\n    <<: *m\n    sigma: 3.0\n")
    loaded = load_params(path)
    assert loaded["models"]["merged"] == {"preset": "tiny", "sigma": 3.0}
    assert loaded["models"]["base"] == {"preset": "tiny", "sigma": 2.0}


@pytest.mark.parametrize(("case", "data", "message"), [
    ("Y29", b"# caf\xe9\ntrain:\n  epochs: 2\n", "line 1: not UTF-8 text (byte 0xe9)"),
    ("Y17", "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join([f'*{chr(97 + i)}'] * 10)}]\n" for i in range(8)),
     "refused: its aliases expand to more than"),
    ("Y17b", "train: &t\n  milestones: [*t]\n", "refused: an alias refers to a block that contains it"),
])
def test_unreadable_or_explosive_params_file_is_one_line(case, data, message, tmp_path, capsys):
    params = write(tmp_path, data)
    start = time.perf_counter()
    code, line = run_cli(train_argv(tmp_path, params), capsys)
    assert time.perf_counter() - start < 10  # the alias bomb is refused, not expanded
    assert code == 2 and f"{params}: {message}" in line, line


def test_y27_params_is_a_folder(tmp_path, capsys):
    code, line = run_cli(train_argv(tmp_path, tmp_path), capsys)
    assert code == 2 and f"error: {tmp_path}: cannot read params file (Is a directory)" in line


def test_y28_params_unreadable(tmp_path, capsys):
    params = write(tmp_path, "train: {}\n")
    params.chmod(0)
    try:
        if os.access(params, os.R_OK):
            pytest.skip("running with permission to read anything (root)")
        code, line = run_cli(train_argv(tmp_path, params), capsys)
        assert code == 2 and f"{params}: cannot read params file (Permission denied)" in line
    finally:
        params.chmod(0o644)
