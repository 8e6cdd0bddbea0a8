"""diffpose download and register as DVC stages (workflow/realdata/dvc.yaml), which the demo's
`dvc repro` and the Snakefile never run.

In a repository copy, `dvc repro workflow/realdata/dvc.yaml` downloads a source built here (the
val split of the real PoseTrack18 fixture as one tar, served by the local HTTP server of
tests/http_server.py and asking for a token) and registers the extracted copy; a second repro runs
nothing and makes no request; the root `dvc repro --dry` lists neither stage; the token, given by
the environment, is in no lock file, output or file. Without dvc: the params file is refused when
it holds something like a secret, and the commands read their entries from it.
"""

from __future__ import annotations

import io
import json
import secrets
import tarfile
import urllib.parse
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from diffpose import cli
from diffpose.data import download as dl
from tests.http_server import TOKEN, running_server, sha, write_manifest
from tests.pipeline_copy import make_copy, run, tool_env

PIPELINE = "workflow/realdata/dvc.yaml"
PARAMS = "workflow/realdata/params.yaml"


def fixture_tar(posetrack18_dir: Path) -> bytes:
    """The fixture's val split (frames and per-sequence labels) as one tar, in PoseTrack's layout."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for sub in ("images/val", "annotations/val"):
            for path in sorted((posetrack18_dir / sub).rglob("*")):
                if path.is_file():
                    tar.add(path, path.relative_to(posetrack18_dir).as_posix(), recursive=False)
    return buf.getvalue()


def write_params(root: Path, sources: dict, datasets: dict) -> None:
    (root / PARAMS).write_text(yaml.safe_dump({"dest": "data/real", "sources": sources, "datasets": datasets}))


def ran_stages(stdout: str) -> set[str]:
    return {line.split("'")[1] for line in stdout.splitlines() if line.startswith("Running stage '")}


def spellings(secret: str) -> list[bytes]:
    return [s.encode() for s in {secret, urllib.parse.quote(secret, safe=""), urllib.parse.quote_plus(secret)}]


# --------------------------------------------------------------------------------------------
# the stages under dvc


@pytest.fixture(scope="module")
def realdata(posetrack18_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    data = fixture_tar(posetrack18_dir.resolve())
    token = f"rd-{secrets.token_urlsafe(16)}+/="  # made here, so no source file of the copy holds it
    outside = tmp_path_factory.mktemp("manifests")
    manifest = write_manifest(
        outside, [{"name": "pt18-val.tar", "path": "pt18-val.tar", "size": len(data), "sha256": sha(data),
                   "content": "tar"}],
        name="pt18-test", access="token", token={"required": True, "send": "query", "name": "token"},
        extract={"format": "tar", "to": "pt18"})
    with running_server() as server:
        server.files["/pt/pt18-val.tar"] = data
        server.token = token
        root = make_copy(tmp_path_factory.mktemp("realdata"))
        write_params(root, sources={"pt18-test": {"manifest": str(manifest), "base_url": f"{server.base}/pt"}},
                     datasets={"posetrack18": {"root": "data/real/pt18", "splits": ["val"]}})
        env = dict(tool_env(), DIFFPOSE_TRACKING="off", **{dl.TOKEN_ENV: token})
        first = run(["dvc", "repro", PIPELINE], root, env)
        requests_first = server.count()
        second = run(["dvc", "repro", PIPELINE], root, env)
        requests_second = server.count()
        status = run(["dvc", "status", "--json", "dvc.yaml"], root, env)
        token_sent = [r["query"].get("token") for r in server.requests]
    return SimpleNamespace(root=root, data=data, token=token, first=first, second=second, status=status,
                           token_sent=token_sent,
                           requests_first=requests_first, requests_second=requests_second)


@pytest.mark.slow
def test_repro_downloads_the_source_and_registers_the_copy(realdata):
    assert ran_stages(realdata.first.stdout) == {f"{PIPELINE}:download@pt18-test", f"{PIPELINE}:register@posetrack18"}
    assert realdata.requests_first == 1 and realdata.token_sent == [[realdata.token]]
    record = json.loads((realdata.root / "workflow/realdata/records/pt18-test.json").read_text())
    assert record == {"source": "pt18-test", "files": {"pt18-val.tar": sha(realdata.data)},
                      "sha256_published": {"pt18-val.tar": True}, "extracted_to": "data/real/pt18"}
    registered = json.loads((realdata.root / "data/registered/posetrack18.json").read_text())
    val = registered["splits"]["val"]
    assert (val["sequences"], val["labelled_frames"], val["persons"]) == (3, 3, 14)
    assert registered["root"] == str((realdata.root / "data/real/pt18").resolve())


@pytest.mark.slow
def test_a_second_repro_runs_nothing_and_makes_no_request(realdata):
    assert ran_stages(realdata.second.stdout) == set()
    assert realdata.requests_second == realdata.requests_first == 1


@pytest.mark.slow
def test_the_record_is_tracked_and_the_downloaded_data_is_not(realdata):
    lock = yaml.safe_load((realdata.root / "workflow/realdata/dvc.lock").read_text())["stages"]
    assert [o["path"] for o in lock["download@pt18-test"]["outs"]] == ["workflow/realdata/records/pt18-test.json"]
    assert [o["path"] for o in lock["register@posetrack18"]["outs"]] == ["data/registered/posetrack18.json"]
    assert "workflow/realdata/records" in [d["path"] for d in lock["register@posetrack18"]["deps"]]
    cache = realdata.root / ".dvc" / "cache"
    cached = sum(p.stat().st_size for p in cache.rglob("*") if p.is_file())
    assert cached < 20_000 < len(realdata.data)  # the two small records, not the tar nor the frames


@pytest.mark.slow
def test_the_demo_repro_and_snakemake_have_no_download_or_register_stage(realdata, monkeypatch):
    """The stages `dvc repro` with no target would run (DVC's own plan, taken where
    dvc.repo.reproduce hands it over; a `dvc repro --dry` of a fresh copy stops at frames, whose
    input synth has not written), the demo's `dvc status dvc.yaml` and the Snakefile's rules: none
    is a download or register stage."""
    import dvc.repo.reproduce
    from dvc.repo import Repo

    from diffpose.workflow import rules_from_dvc

    monkeypatch.setattr(dvc.repo.reproduce, "_reproduce", lambda steps, **kwargs: list(steps))
    monkeypatch.chdir(realdata.root)  # dvc resolves the default target, dvc.yaml, in the working directory

    def ours(names):
        return [n for n in names if "download" in n or "register" in n or "realdata" in n]

    with Repo(str(realdata.root)) as repo:
        planned = [s.addressing for s in repo.reproduce()]
        everything = [s.addressing for s in repo.index.stages]
    assert "synth" in planned and "report" in planned and not ours(planned), planned
    assert len(ours(everything)) == 2  # the stages exist: `dvc status` with no target does report them
    status = json.loads(realdata.status.stdout or "{}")
    assert "synth" in status and not ours(status), status
    rules = {spec.stage for spec in rules_from_dvc(realdata.root)}
    assert "synth" in rules and not ours(rules), rules


@pytest.mark.slow
def test_the_token_from_the_environment_appears_nowhere(realdata):
    forms = spellings(realdata.token)
    for proc in (realdata.first, realdata.second, realdata.status):
        assert not any(s.decode() in proc.stdout + proc.stderr for s in forms)
    leaks = [str(p) for p in realdata.root.rglob("*")
             if p.is_file() and not p.is_symlink() and any(s in p.read_bytes() for s in forms)]
    assert not leaks
    assert (realdata.root / "workflow/realdata/dvc.lock").is_file()


@pytest.mark.slow
def test_a_copy_you_already_have_registers_without_any_download(posetrack18_dir, tmp_path):
    root = make_copy(tmp_path)
    write_params(root, sources={}, datasets={"posetrack18": {"root": str(posetrack18_dir.resolve()),
                                                              "splits": ["val"]}})
    env = dict(tool_env(), DIFFPOSE_TRACKING="off")
    out = run(["dvc", "repro", PIPELINE], root, env).stdout
    assert ran_stages(out) == {f"{PIPELINE}:register@posetrack18"}
    assert json.loads((root / "data/registered/posetrack18.json").read_text())["splits"]["val"]["sequences"] == 3


# --------------------------------------------------------------------------------------------
# the params file, without dvc


@pytest.fixture
def repo(tmp_path, monkeypatch):
    """A working directory standing for the repository root."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DIFFPOSE_TRACKING", "off")
    monkeypatch.delenv(dl.TOKEN_ENV, raising=False)
    (tmp_path / "workflow/realdata").mkdir(parents=True)
    return tmp_path


def one_line(command: str, args: list[str], capsys) -> str:
    rc = cli.main([command, *args, "--no-progress"])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert rc == 2 and len(lines) == 1, err
    return lines[0]


@pytest.mark.parametrize("entry,where", [
    ({"token": "abc123secret"}, "sources.src.token"),
    ({"api_key": "abc123secret"}, "sources.src.api_key"),
    ({"base_url": "https://user:abc123secret@example.org/pt"}, "sources.src.base_url is a URL with a password"),
    ({"url": "https://example.org/f.tar?sig=abc123secret"}, "sources.src.url is a URL with a query string"),
])
def test_a_secret_in_the_params_file_is_refused_on_one_line(repo, capsys, entry, where):
    write_params(repo, sources={"src": entry}, datasets={})
    line = one_line("download", ["src", "--params", PARAMS, "--record", "rec.json"], capsys)
    assert where in line and "abc123secret" not in line and dl.TOKEN_ENV in line
    assert not (repo / "rec.json").exists() and not (repo / "data").exists()


def test_the_token_itself_in_the_params_file_is_refused_for_both_commands(repo, capsys, monkeypatch):
    monkeypatch.setenv(dl.TOKEN_ENV, TOKEN)
    write_params(repo, sources={"src": {"url": "/some/file"}},
                 datasets={"posetrack18": {"root": "/data/pt18", "images": f"/x/{TOKEN}"}})
    for command, args in (("download", ["src"]), ("register", ["--dataset", "posetrack18"])):
        line = one_line(command, [*args, "--params", PARAMS], capsys)
        assert "holds the access token itself" in line
        assert not any(s.decode() in line for s in spellings(TOKEN))


def test_the_token_of_a_token_file_in_the_params_file_is_refused(repo, capsys, tmp_path_factory):
    """No token in the environment: the one read from the entry's token_file (outside the
    repository) is looked for in the params file once it is known."""
    outside = tmp_path_factory.mktemp("home") / "tok"
    outside.write_text(TOKEN + "\n")
    manifest = write_manifest(repo, [{"name": "f.zip", "url": "http://127.0.0.1:9/f.zip", "size": None,
                                      "sha256": None}], name="tok-src", access="token",
                              token={"required": True, "send": "none", "zip_password": True})
    write_params(repo, sources={"src": {"manifest": str(manifest), "token_file": str(outside),
                                        "base_url": f"/mirror/{TOKEN}"}}, datasets={})
    line = one_line("download", ["src", "--params", PARAMS], capsys)
    assert "holds the access token itself" in line
    assert not any(s.decode() in line for s in spellings(TOKEN))


def test_a_token_file_inside_the_repository_is_refused(repo, capsys):
    (repo / "tok").write_text(TOKEN + "\n")
    manifest = write_manifest(repo, [{"name": "f.zip", "url": "http://127.0.0.1:9/f.zip", "size": None,
                                      "sha256": None}], name="tok-src", access="token",
                              token={"required": True, "send": "none", "zip_password": True})
    write_params(repo, sources={"src": {"manifest": str(manifest), "token_file": str(repo / "tok")}}, datasets={})
    line = one_line("download", ["src", "--params", PARAMS], capsys)
    assert "inside the repository" in line and TOKEN not in line


def test_unknown_keys_and_entries_are_named(repo, capsys):
    write_params(repo, sources={"src": {"base-url": "/x"}}, datasets={})
    assert "sources.src.base-url: unknown key" in one_line("download", ["src", "--params", PARAMS], capsys)
    assert "no entry sources.other (the entries are src)" in one_line("download", ["other", "--params", PARAMS],
                                                                     capsys)
    assert "no entry datasets.posetrack18" in one_line("register", ["--dataset", "posetrack18", "--params", PARAMS],
                                                       capsys)


def test_download_takes_manifest_base_url_and_dest_from_its_entry(repo, capsys):
    folder = repo / "mirror"
    folder.mkdir()
    (folder / "boxes.json").write_text("[]")
    manifest = write_manifest(repo, [{"name": "boxes.json", "path": "boxes.json", "size": None, "sha256": None,
                                      "content": "json"}], name="boxes-src", access="manual")
    write_params(repo, sources={"mine": {"manifest": str(manifest), "base_url": str(folder)}}, datasets={})
    assert cli.main(["download", "mine", "--params", PARAMS, "--record", "rec.json", "--no-progress"]) == 0
    assert (repo / "data/real/archives/boxes.json").read_text() == "[]"
    assert json.loads((repo / "rec.json").read_text())["source"] == "boxes-src"


def test_register_takes_root_and_splits_from_its_entry(repo, capsys, posetrack18_dir):
    write_params(repo, sources={}, datasets={"posetrack18": {"root": str(posetrack18_dir), "splits": ["val"]}})
    assert cli.main(["register", "--dataset", "posetrack18", "--params", PARAMS, "--out", "out.json",
                     "--no-progress"]) == 0
    record = json.loads((repo / "out.json").read_text())
    assert list(record["splits"]) == ["val"] and record["root"] == str(posetrack18_dir.resolve())


def test_register_without_root_or_params_says_so(repo, capsys):
    line = one_line("register", ["--dataset", "posetrack18"], capsys)
    assert "give --root" in line


def test_the_shipped_params_list_nothing_and_hold_no_secret():
    """Empty lists: until a user lists something, the pipeline has no stage (and `dvc status`, the
    Snakefile and the demo DAG are as before)."""
    from tests.pipeline_copy import REPO

    raw = dl.read_pipeline_params(REPO / PARAMS)
    assert raw == {"dest": "data/real", "sources": {}, "datasets": {}}
    assert (REPO / "workflow/realdata/records/.gitkeep").is_file()
