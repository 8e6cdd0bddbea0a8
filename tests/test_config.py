from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from diffpose.config import flatten, load_params, validate_params
from diffpose.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]


def test_repository_params_are_valid() -> None:
    params = load_params(REPO / "params.yaml")
    assert params["synth"]["preset"] in {"tiny", "demo"}


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda p: p["frames"].update(jpeg_quality=120), r"frames\.jpeg_quality: 120 is greater than the maximum of 100"),
        (lambda p: p["frames"].update(workers="two"), r"frames\.workers: 'two' is not of type 'integer'"),
        (lambda p: p["synth"].update(preset="huge"), r"synth\.preset: 'huge' is not one of"),
        (lambda p: p["frames"].update(jpeg_qualty=90), r"frames\.jpeg_qualty: unknown key"),
        (lambda p: p.update(frame={}), r"params\.yaml: frame: unknown key \(allowed here: .*frames"),
        (lambda p: p["synth"].pop("seed"), r"synth: 'seed' is a required property"),
    ],
)
def test_errors_name_the_key_and_the_rule(mutate, message: str) -> None:
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    mutate(params)
    with pytest.raises(ConfigError, match=message):
        validate_params(params, source="params.yaml")


def test_load_params_reports_missing_and_malformed_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="params file not found"):
        load_params(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("synth: [unclosed\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml: not valid YAML"):
        load_params(bad)


def test_flatten() -> None:
    assert flatten({"a": {"b": 1, "c": {"d": 2}}, "e": 3}) == {"a.b": 1, "a.c.d": 2, "e": 3}
