"""``diffpose download``: fetch PoseTrack archives, person boxes and weights from a manifest.

    diffpose download SOURCE [--dest DIR] [--base-url URL] [--token-file FILE] [--url URL]
    diffpose download --list [--dest DIR]
    diffpose download NAME --params workflow/realdata/params.yaml --record FILE   (the DVC stage)

SOURCE is a manifest shipped in diffpose/data/manifests (``--list`` shows them) or the path of a
manifest file. Files are resumed, retried, verified against the manifest's size and sha256 where
known, stamped (a verified file is never fetched again), concatenated and extracted safely; see
:mod:`diffpose.data.download`. The base URL also comes from the manifest's environment variable
(``DIFFPOSE_POSETRACK_URL`` for PoseTrack), the token from ``--token-file`` or
``DIFFPOSE_POSETRACK_TOKEN``. There is no ``--token`` option: a command line is visible to other
users (``ps``) and lands in shell history.

With ``--params FILE`` (the real-data DVC stages, workflow/realdata/dvc.yaml) the source and its
options come from the entry ``sources.NAME`` of that params file (``manifest``, ``base_url``,
``url``, ``token_file``) and the destination from its ``dest``. A params file that holds something
like a secret is refused (:func:`diffpose.data.download.read_pipeline_params`).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from diffpose.data import download as dl
from diffpose.errors import DataError, DiffposeError
from diffpose.io import check_writable, write_json

DEFAULT_DEST = "data/real"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("source", nargs="?", metavar="SOURCE",
                        help=f"a manifest name ({', '.join(dl.available())}) or a manifest file")
    parser.add_argument("--dest", help=f"root of downloads and extracted data (default {DEFAULT_DEST})")
    parser.add_argument("--base-url", metavar="URL",
                        help="where the manifest's relative paths live: http(s) URL, file:// URL or folder "
                             "(default: the manifest's environment variable, DIFFPOSE_POSETRACK_URL for PoseTrack)")
    parser.add_argument("--url", metavar="URL_OR_FILE",
                        help="location of a single-file source (overrides the manifest; needed for user-copy sources)")
    parser.add_argument("--token-file", metavar="FILE",
                        help=f"file holding the PoseTrack21 access token (default: ${dl.TOKEN_ENV})")
    parser.add_argument("--retries", type=int, default=5,
                        help="attempts after consecutive failures without progress (default 5)")
    parser.add_argument("--backoff", type=float, default=1.0,
                        help="first wait before a retry, in seconds; doubles each time, at most 60 (default 1)")
    parser.add_argument("--timeout", type=float, default=60.0, help="network time-out in seconds (default 60)")
    parser.add_argument("--write-combined", action="store_true",
                        help="also write the concatenated archive of a multi-part source (needs its size again)")
    parser.add_argument("--record", metavar="FILE",
                        help="also write a small JSON record of the source (files and sha256, extraction folder): "
                             "the same bytes on every run, for DVC or Snakemake to track")
    parser.add_argument("--params", metavar="FILE",
                        help="take the source and its options from the entry sources.SOURCE of this params file "
                             "(workflow/realdata/params.yaml: manifest, base_url, url, token_file) and the "
                             "destination from its dest; refused when the file holds something like a secret")
    parser.add_argument("--list", action="store_true", help="list the sources and what is on disk under --dest")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--no-track", action="store_true", help="do not log this run to MLflow")


def list_sources(dest: str) -> list[str]:
    lines = []
    for manifest, status in dl.iter_status(dest=Path(dest)):
        checks = "sha256 known" if all(f.sha256 for f in manifest.files) else \
            "sha256 prefix only" if any(f.sha256_prefix for f in manifest.files) else "sha256 unpublished"
        lines.append(f"{manifest.name:32s} {status:8s} {manifest.access:16s} {checks:19s} {manifest.title}")
    return lines


def main(args: argparse.Namespace) -> int:
    if args.list:
        print("\n".join(list_sources(args.dest or DEFAULT_DEST)))
        return 0
    if not args.source:
        raise DataError("name a SOURCE (diffpose download --list shows them)")
    if args.retries < 0 or args.backoff < 0 or args.timeout <= 0:
        raise DataError("--retries and --backoff must be >= 0 and --timeout > 0")
    source, dest, base_url, url, token_file = args.source, args.dest, args.base_url, args.url, args.token_file
    if args.params:
        raw = dl.read_pipeline_params(args.params)
        entry = dl.pipeline_entry(raw, args.params, "sources", args.source, PARAMS_KEYS)
        source = entry.get("manifest") or args.source
        dest = dest or raw.get("dest")
        base_url, url = base_url or entry.get("base_url"), url or entry.get("url")
        token_file = token_file or _outside_repository(entry.get("token_file"), args.params)
    dest = str(dest or DEFAULT_DEST)
    manifest = dl.load_manifest(source)
    check_writable(dest, "dir")
    if args.record:
        check_writable(args.record, "file")
    token = dl.read_token(token_file) if manifest.uses_token else None
    if args.params and token_file:  # the token of the entry's token_file, unknown until it was read
        dl.refuse_token_in(args.params, Path(args.params).read_text(encoding="utf-8"), token)
    redactor = dl.Redactor(token)
    options = dl.Options(dest=Path(dest), base_url=base_url, url=url, token=token,
                         retries=args.retries, backoff=args.backoff, timeout=args.timeout,
                         progress=not args.no_progress, write_combined=args.write_combined)
    try:
        result = _run(manifest, options, track=not args.no_track)
    except DiffposeError as err:
        raise type(err)(redactor.text(str(err))) from None
    except OSError as err:
        if err.filename is None:  # not a file system error (a network one): its text is redacted too
            raise DataError(redactor.text(f"{manifest.name}: {type(err).__name__}: {err}")) from None
        raise  # the CLI names the path and the reason
    except Exception as err:  # noqa: BLE001 - whatever it is, its text must not carry the token
        raise DataError(redactor.text(f"{manifest.name}: {type(err).__name__}: {err}")) from None
    _report(result, manifest)
    if args.record:
        write_json(args.record, record(result, manifest, options), indent=1)
    return 0


PARAMS_KEYS = ("manifest", "base_url", "url", "token_file")


def _outside_repository(token_file: str | None, params: str) -> str | None:
    """``token_file`` of a params entry, refused when it lies under the working directory (the
    repository, for a DVC stage), where it could be committed."""
    if token_file is None:
        return None
    path = Path(token_file).expanduser()
    if path.resolve().is_relative_to(Path.cwd().resolve()):
        raise DataError(f"{params}: token_file {token_file} is inside the repository, where it could be committed: "
                        f"keep the token file outside it (e.g. ~/.config/diffpose/posetrack21.token)")
    return str(path)


def record(result: dl.Result, manifest: dl.Manifest, options: dl.Options) -> dict:
    """What a source gave: its files' sha256 (from their stamps when the run skipped them) and
    the extraction folder. No URL, no token, no time: the same bytes on every run."""
    folder = Path(options.dest) / manifest.folder
    files = {f.name: result.files.get(f.name) or (dl.read_stamp(folder / f.name) or {}).get("sha256")
             for f in manifest.files}
    if manifest.extract_to and not result.files:  # skipped as already extracted: the extraction stamp knows
        stamp = Path(options.dest) / manifest.extract_to / dl.EXTRACT_STAMP.format(name=manifest.name)
        files.update({name: sha for name, sha in json.loads(stamp.read_text(encoding="utf-8"))["archives"]})
    return {"source": manifest.name, "files": files,
            "sha256_published": {f.name: f.sha256 is not None for f in manifest.files},
            "extracted_to": str(Path(options.dest) / manifest.extract_to) if manifest.extract_to else None}


def _run(manifest: dl.Manifest, options: dl.Options, *, track: bool) -> dl.Result:
    if not track:
        return dl.run(manifest, options)
    from diffpose.tracking import stage_run

    # No URL and no token: the maintainers' address is not to be published, the token is secret.
    params = {"source": manifest.name, "dest": str(options.dest), "base_url_given": options.base_url is not None,
              "files": len(manifest.files)}
    with stage_run("download", params) as tracker:
        start = time.perf_counter()
        result = dl.run(manifest, options)
        tracker.log_metrics({"files_fetched": len(result.fetched), "bytes_fetched": result.bytes_fetched,
                             "requests": result.requests, "seconds": time.perf_counter() - start})
        tracker.set_tags({"files_sha256": " ".join(f"{n}={s}" for n, s in result.files.items())[:5000]})
    return result


def _report(result: dl.Result, manifest: dl.Manifest) -> None:
    if result.unverified:
        print(f"{manifest.name}: no published sha256 for {len(result.unverified)} file(s); the stamps in "
              f"{manifest.folder} record what was fetched", file=sys.stderr)
    done = f"{len(result.fetched)} file(s) fetched, {len(result.files) - len(result.fetched)} already verified"
    if result.extracted_to is not None:
        done += f"; {'extracted into' if result.extracted else 'already extracted in'} {result.extracted_to}"
    print(f"{manifest.name}: {done}")
