"""Fetch real data and weights from manifests: resumable, checksummed, safe to extract.

A *manifest* (``diffpose/data/manifests/<name>.yaml``, checked against :data:`MANIFEST_SCHEMA`
and a few rules the schema cannot say) lists the files of one source: each with a full ``url``,
or a ``path`` relative to a base URL the user gives (``--base-url``: an http(s) URL, a
``file://`` URL or a local folder), the expected ``size`` and ``sha256`` where they are known
(``null`` where not: never guessed), the ``folder`` they are saved in, how several parts are
concatenated (``combine``, in the listed order) and where the archive is extracted (``extract``).

What :func:`run` guarantees:

* **Resume.** A file is fetched into ``<name>.part``; a later attempt (after a dropped
  connection, a retry or another run) asks the server for the rest with an HTTP range request.
  A server that ignores the range gets the file again from the start.
* **Bounded retries.** Connection errors, time-outs and HTTP 5xx/408/429 are retried with
  exponential back-off; ``retries`` consecutive failures without progress end the command.
  HTTP 401/403/404 are not retried.
* **Verification.** Size and sha256 when the manifest knows them. A file that does not match is
  moved aside to ``<name>.bad`` and the command fails with one line. A verified file gets a
  stamp (``<name>.stamp.json``: size, mtime, sha256): it is never fetched or hashed again.
* **Safe extraction.** Every member of a tar or zip archive is checked before anything is
  written: absolute paths, ``..``, links that leave the target folder and device files refuse
  the whole archive. Multi-part archives are read as one stream over the parts (no second copy
  on disk unless ``write_combined``). A stamp in the target folder (the archives' sha256) makes
  a second extraction a no-op.
* **The token stays secret.** It is read from a file or the environment, sent only as the
  manifest says (a query parameter or a header; never to another host after a redirect), used
  as the zip password, and removed from every message (:class:`Redactor`): URLs are shown
  without their query string.
"""

from __future__ import annotations

import bisect
import contextlib
import hashlib
import http.client
import io
import json
import logging
import os
import re
import shutil
import socket
import stat
import tarfile
import time
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import yaml

from diffpose import __version__
from diffpose.errors import ConfigError, DataError
from diffpose.io import write_json
from diffpose.progress import progress_bar

LOG = logging.getLogger(__name__)

MANIFEST_DIR = Path(__file__).with_name("manifests")
TOKEN_ENV = "DIFFPOSE_POSETRACK_TOKEN"
CHUNK = 1 << 20
RETRY_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})
MAX_ATTEMPTS = 100  # attempts per file in all, even when each one makes some progress
AES_METHOD = 99  # zip "compression method" of WinZip AES encryption
STAMP_SUFFIX = ".stamp.json"
EXTRACT_STAMP = ".diffpose-extract-{name}.json"

_REL_PATH = r"^(?![/\\])(?![A-Za-z]:)[^\\]+$"
_NULLABLE_SHA = {"type": ["string", "null"], "pattern": "^[0-9a-f]{64}$"}
_NULLABLE_SIZE = {"type": ["integer", "null"], "minimum": 1}

MANIFEST_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["name", "title", "access", "folder", "files"],
    "properties": {
        "name": {"type": "string", "pattern": "^[a-z0-9][a-z0-9-]*$"},
        "title": {"type": "string", "minLength": 1},
        "datasets": {"type": "array", "items": {"enum": ["posetrack17", "posetrack18", "posetrack21"]}},
        # public: anyone can fetch; token: needs the PoseTrack21 token; maintainers-url: the base
        # URL comes from the dataset maintainers; manual: a browser download, then --base-url
        # FOLDER; user-copy: no known location, the user names the file (--url)
        "access": {"enum": ["public", "token", "maintainers-url", "manual", "user-copy"]},
        "page": {"type": ["string", "null"], "pattern": "^https?://"},
        "base_url_env": {"type": ["string", "null"], "pattern": "^[A-Z][A-Z0-9_]*$"},
        "folder": {"type": "string", "pattern": _REL_PATH},
        "token": {
            "type": ["object", "null"],
            "additionalProperties": False,
            "required": ["required", "send"],
            "properties": {
                "required": {"type": "boolean"},
                "send": {"enum": ["none", "query", "header"]},
                "name": {"type": ["string", "null"], "pattern": "^[A-Za-z0-9_-]+$"},
                "format": {"type": "string", "pattern": "\\{token\\}"},
                "zip_password": {"type": "boolean"},
            },
        },
        "files": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "additionalProperties": False,
                "required": ["name", "size", "sha256"],
                "properties": {
                    "name": {"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9._-]*$"},
                    "url": {"type": ["string", "null"], "pattern": "^https?://"},
                    "path": {"type": ["string", "null"], "pattern": _REL_PATH},
                    "size": _NULLABLE_SIZE,
                    "sha256": _NULLABLE_SHA,
                    "sha256_prefix": {"type": ["string", "null"], "pattern": "^[0-9a-f]{4,63}$"},
                    "content": {"enum": ["tar", "tar.gz", "zip", "json", "pth", "any"]},
                },
            },
        },
        "combine": {
            "type": ["object", "null"],
            "additionalProperties": False,
            "required": ["name", "size", "sha256"],
            "properties": {
                "name": {"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9._-]*$"},
                "size": _NULLABLE_SIZE,
                "sha256": _NULLABLE_SHA,
            },
        },
        "extract": {
            "type": ["object", "null"],
            "additionalProperties": False,
            "required": ["format", "to"],
            "properties": {"format": {"enum": ["tar", "zip", "auto"]}, "to": {"type": "string", "pattern": _REL_PATH}},
        },
        "instructions": {"type": "string"},
        "notes": {"type": "string"},
    },
}


# --------------------------------------------------------------------------------------------
# manifests


@dataclass(frozen=True)
class FileSpec:
    name: str
    url: str | None = None
    path: str | None = None
    size: int | None = None
    sha256: str | None = None
    sha256_prefix: str | None = None
    content: str = "any"


@dataclass(frozen=True)
class TokenSpec:
    required: bool = False
    send: str = "none"  # none | query | header
    name: str | None = None
    format: str = "{token}"
    zip_password: bool = False


@dataclass(frozen=True)
class Manifest:
    name: str
    title: str
    access: str
    folder: str
    files: tuple[FileSpec, ...]
    source: Path
    datasets: tuple[str, ...] = ()
    page: str | None = None
    base_url_env: str | None = None
    token: TokenSpec = field(default_factory=TokenSpec)
    combine: FileSpec | None = None
    extract_format: str | None = None
    extract_to: str | None = None
    instructions: str = ""
    notes: str = ""

    @property
    def uses_token(self) -> bool:
        return self.token.required or self.token.send != "none" or self.token.zip_password


def available() -> list[str]:
    """Names of the manifests shipped with diffpose."""
    return sorted(p.stem for p in MANIFEST_DIR.glob("*.yaml"))


def load_manifest(source: str | os.PathLike) -> Manifest:
    """A shipped manifest by name, or a manifest file by path; ConfigError names the problem."""
    text = str(source)
    path = Path(text)
    if not (text.endswith((".yaml", ".yml", ".json")) or os.sep in text or "/" in text):
        path = MANIFEST_DIR / f"{text}.yaml"
        if not path.is_file():
            raise ConfigError(f"unknown source {text!r}: choose one of {', '.join(available())} or give a manifest file")
    if not path.is_file():
        raise ConfigError(f"{path}: no such manifest file")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
        raise ConfigError(f"{path}: cannot read the manifest ({' '.join(str(err).split())})") from None
    return parse_manifest(raw, path)


def parse_manifest(raw: Any, path: Path) -> Manifest:
    """Validate a parsed manifest (schema, then cross-field rules) and build a :class:`Manifest`."""
    import jsonschema

    validator = jsonschema.Draft202012Validator(MANIFEST_SCHEMA)
    errors = sorted(validator.iter_errors(raw), key=lambda e: list(map(str, e.absolute_path)))
    if errors:
        err = errors[0]
        where = ".".join(str(p) for p in err.absolute_path) or "<top level>"
        raise ConfigError(f"{path}: manifest key {where}: {' '.join(err.message.split())[:200]}")
    files = tuple(FileSpec(**{"content": "any", **f}) for f in raw["files"])
    token = TokenSpec(**raw["token"]) if raw.get("token") else TokenSpec()
    combine = FileSpec(**raw["combine"]) if raw.get("combine") else None
    extract = raw.get("extract") or {}

    def bad(msg: str) -> ConfigError:
        return ConfigError(f"{path}: {msg}")

    if path.suffix in (".yaml", ".yml") and path.parent == MANIFEST_DIR and raw["name"] != path.stem:
        raise bad(f"manifest key name: {raw['name']!r} must equal the file name {path.stem!r}")
    names = [f.name for f in files] + ([combine.name] if combine else [])
    if len(set(names)) != len(names):
        raise bad("manifest key files: file names must be unique (the combined file's too)")
    for key, value in [("folder", raw["folder"]), ("extract.to", extract.get("to"))] + [
        (f"files.{i}.path", f.path) for i, f in enumerate(files)
    ]:
        if value is not None and ".." in re.split(r"[\\/]", value):
            raise bad(f"manifest key {key}: {value!r} must stay inside the destination folder (no '..')")
    if token.send != "none" and not token.name:
        raise bad(f"manifest key token.name: needed to send the token as a {token.send}")
    if combine and len(files) < 2:
        raise bad("manifest key combine: needs two or more files (the parts, in order)")
    if len(files) > 1 and extract and not combine:
        raise bad("manifest key extract: several files are extracted only as the parts of one archive (combine)")
    if token.zip_password and extract.get("format") == "tar":
        raise bad("manifest key token.zip_password: only a zip archive has a password")
    return Manifest(
        name=raw["name"], title=raw["title"], access=raw["access"], folder=raw["folder"], files=files,
        source=path, datasets=tuple(raw.get("datasets") or ()), page=raw.get("page"),
        base_url_env=raw.get("base_url_env"), token=token, combine=combine,
        extract_format=extract.get("format"), extract_to=extract.get("to"),
        instructions=raw.get("instructions", "").strip(), notes=raw.get("notes", "").strip(),
    )


# --------------------------------------------------------------------------------------------
# secrets


class Redactor:
    """Removes the token (as typed, URL-quoted or form-encoded) from text, and the query string
    and user:password part from URLs, before anything is printed, logged or raised."""

    def __init__(self, *secrets: str | None) -> None:
        variants: set[str] = set()
        for secret in secrets:
            if secret:
                variants |= {secret, urllib.parse.quote(secret, safe=""), urllib.parse.quote_plus(secret)}
        self._secrets = sorted(variants, key=len, reverse=True)

    def text(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "<token>")
        return text

    def url(self, url: str) -> str:
        parts = urllib.parse.urlsplit(url)
        netloc = parts.netloc.rsplit("@", 1)[-1]
        query = "<redacted>" if parts.query else ""
        return self.text(urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, query, "")))


def read_token(token_file: str | os.PathLike | None, env: str = TOKEN_ENV) -> str | None:
    """The token from ``token_file`` (first line, surrounding blanks removed) or ``$env``."""
    if token_file is not None:
        path = Path(token_file)
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as err:  # the type only: the text could quote the file
            what = "not found" if isinstance(err, FileNotFoundError) else f"unreadable ({type(err).__name__})"
            raise DataError(f"{path}: token file {what}") from None
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        if len(lines) != 1 or len(lines[0].split()) != 1:
            raise DataError(f"{path}: the token file must hold the token alone, on one line")
        with contextlib.suppress(OSError):
            if path.stat().st_mode & (stat.S_IRGRP | stat.S_IROTH):
                LOG.warning("%s: other users can read this token file (chmod 600 %s)", path, path)
        return lines[0]
    value = os.environ.get(env, "").strip()
    return value or None


# --------------------------------------------------------------------------------------------
# the params file of the real-data DVC stages (workflow/realdata/params.yaml)

# Key names that hold a secret; ``token_file`` names a file outside the repository, not a secret.
SECRET_KEY = re.compile(r"token|passw|secret|api[_-]?key|credential|auth", re.IGNORECASE)
PATH_KEYS = frozenset({"token_file"})


def _walk(node: Any, where: str = "") -> Iterator[tuple[str, Any, Any]]:
    """(dotted key, key, value) of every mapping entry in a parsed YAML document."""
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for key, value in items:
        here = f"{where}.{key}" if where else str(key)
        yield here, key, value
        yield from _walk(value, here)


def holds_secret(text: str, secret: str | None) -> bool:
    """Whether ``text`` contains ``secret`` as typed or URL-quoted."""
    return bool(secret) and Redactor(secret).text(text) != text


SECRET_FIX = f"give the token by {TOKEN_ENV} or a token_file outside the repository"


def refuse_token_in(path: str | os.PathLike, text: str, token: str | None) -> None:
    """ConfigError when the params file ``path`` (its ``text``) holds ``token``."""
    if holds_secret(text, token):
        raise ConfigError(f"{path}: holds the access token itself, and this file goes to git and dvc.lock: "
                          f"remove it; {SECRET_FIX}")


def read_pipeline_params(path: str | os.PathLike) -> dict[str, Any]:
    """The params file of the real-data DVC stages, refused on one line (naming the key, never the
    value) when it holds something that looks like a secret: a key named like one (token, password,
    secret, api_key, credential, auth; ``token_file`` is a path and allowed), a URL carrying a
    password or a query string, or the token of ``$DIFFPOSE_POSETRACK_TOKEN``. The file goes to git
    and its values to dvc.lock; the token belongs in the environment or a token file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        what = "not found" if isinstance(err, FileNotFoundError) else f"unreadable ({type(err).__name__})"
        raise ConfigError(f"{path}: params file {what}") from None
    refuse_token_in(path, text, read_token(None))
    try:
        raw = yaml.safe_load(text) or {}
    except yaml.YAMLError as err:  # the position only: the message could quote a line of the file
        mark = getattr(err, "problem_mark", None)
        raise ConfigError(f"{path}: not valid YAML" + (f" (line {mark.line + 1})" if mark else "")) from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of dest, sources and datasets")
    for where, key, value in _walk(raw):
        if isinstance(key, str) and key not in PATH_KEYS and SECRET_KEY.search(key):
            raise ConfigError(f"{path}: key {where} looks like a secret, and this file goes to git and dvc.lock: "
                              f"remove it; {SECRET_FIX}")
        if isinstance(value, str) and is_url(value):
            parts = urllib.parse.urlsplit(value)
            if parts.password or parts.query:
                what = "password" if parts.password else "query string"
                raise ConfigError(f"{path}: {where} is a URL with a {what}, which may hold a secret and would go "
                                  f"to git and dvc.lock: remove it; {SECRET_FIX}")
    return raw


def pipeline_entry(raw: dict[str, Any], path: str | os.PathLike, section: str, key: str,
                   allowed: tuple[str, ...]) -> dict[str, Any]:
    """``raw[section][key]`` of a params file from :func:`read_pipeline_params`, with its keys checked."""
    entries = raw.get(section) or {}
    if not isinstance(entries, dict) or key not in entries:
        names = ", ".join(map(str, entries)) if isinstance(entries, dict) else ""
        raise ConfigError(f"{path}: no entry {section}.{key} (the entries are {names or 'none'})")
    entry = entries[key] or {}
    if not isinstance(entry, dict):
        raise ConfigError(f"{path}: {section}.{key} must be a mapping of {', '.join(allowed)}")
    unknown = sorted(map(str, set(entry) - set(allowed)))
    if unknown:
        raise ConfigError(f"{path}: {section}.{key}.{unknown[0]}: unknown key (known: {', '.join(allowed)})")
    return entry


# --------------------------------------------------------------------------------------------
# locations


def is_url(text: str) -> bool:
    return text.startswith(("http://", "https://"))


def _local_path(text: str) -> Path:
    if text.startswith("file://"):
        return Path(urllib.parse.unquote(urllib.parse.urlsplit(text).path))
    return Path(text).expanduser()


def join_location(base: str, relative: str) -> str:
    """``relative`` under ``base`` (a URL, whose query string is kept, or a folder)."""
    if is_url(base):
        parts = urllib.parse.urlsplit(base)
        path = parts.path.rstrip("/") + "/" + urllib.parse.quote(relative)
        return urllib.parse.urlunsplit((parts.scheme, parts.netloc, path, parts.query, ""))
    return str(_local_path(base) / relative)


def with_token(url: str, spec: TokenSpec, token: str | None) -> tuple[str, dict[str, str]]:
    """The URL and headers of a request, with the token added as ``spec.send`` says."""
    if not token or spec.send == "none":
        return url, {}
    if spec.send == "header":
        return url, {str(spec.name): spec.format.format(token=token)}
    parts = urllib.parse.urlsplit(url)
    query = urllib.parse.parse_qsl(parts.query, keep_blank_values=True) + [(str(spec.name), token)]
    return urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(query))), {}


class _SameHostRedirects(urllib.request.HTTPRedirectHandler):
    """Follow redirects, but drop the token header (``secret_header``) when the host changes:
    a release download redirected to a storage host must not receive the credential."""

    secret_header: str | None = None

    def redirect_request(self, req, fp, code, msg, headers, newurl):  # noqa: ANN001 - urllib's signature
        new = super().redirect_request(req, fp, code, msg, headers, newurl)
        if new is not None and self.secret_header:
            if urllib.parse.urlsplit(newurl).hostname != urllib.parse.urlsplit(req.full_url).hostname:
                for key in list(new.headers):
                    if key.lower() == self.secret_header.lower():
                        del new.headers[key]
        return new


# --------------------------------------------------------------------------------------------
# the job


class _Transient(Exception):
    """A failure worth another attempt (connection lost, time-out, HTTP 5xx)."""


@dataclass
class Options:
    dest: Path = Path("data/real")
    base_url: str | None = None
    url: str | None = None  # location of a single-file source (overrides the manifest)
    token: str | None = None
    retries: int = 5
    backoff: float = 1.0
    max_backoff: float = 60.0
    timeout: float = 60.0
    progress: bool = True
    write_combined: bool = False


@dataclass
class Result:
    source: str
    files: dict[str, str] = field(default_factory=dict)  # name -> sha256
    fetched: list[str] = field(default_factory=list)
    bytes_fetched: int = 0
    requests: int = 0
    extracted_to: Path | None = None
    extracted: bool = False
    unverified: list[str] = field(default_factory=list)  # files without a published sha256


def run(manifest: Manifest, options: Options) -> Result:
    """Fetch, verify, (combine,) extract one source. Raises DataError/ConfigError on one line."""
    return _Job(manifest, options).run()


def sha256_file(path: Path, *, progress: bool = False, desc: str | None = None) -> str:
    digest = hashlib.sha256()
    size = path.stat().st_size
    bar = progress_bar(size, desc or f"sha256 {path.name}", "B", enabled=progress and size > 64 * CHUNK)
    with open(path, "rb") as fh, bar:
        while chunk := fh.read(CHUNK):
            digest.update(chunk)
            bar.update(len(chunk))
    return digest.hexdigest()


def _stamp_path(path: Path) -> Path:
    return path.with_name(path.name + STAMP_SUFFIX)


def read_stamp(path: Path) -> dict | None:
    """The stamp of ``path`` if it still describes the file on disk (name, size, mtime)."""
    try:
        stamp = json.loads(_stamp_path(path).read_text(encoding="utf-8"))
        st = path.stat()
    except (OSError, ValueError):
        return None
    if not isinstance(stamp, dict) or stamp.get("name") != path.name:
        return None
    if stamp.get("size") != st.st_size or stamp.get("mtime_ns") != st.st_mtime_ns:
        return None
    sha = stamp.get("sha256")
    return stamp if isinstance(sha, str) and re.fullmatch("[0-9a-f]{64}", sha) else None


def _stamped_sha(path: Path) -> str | None:
    """The sha256 an earlier stamp recorded for ``path``, whether or not the file changed since."""
    try:
        stamp = json.loads(_stamp_path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return stamp.get("sha256") if isinstance(stamp, dict) and stamp.get("name") == path.name else None


def _write_stamp(path: Path, sha: str, verified: bool) -> None:
    st = path.stat()
    write_json(_stamp_path(path), {"name": path.name, "size": st.st_size, "mtime_ns": st.st_mtime_ns,
                                   "sha256": sha, "checked_against_manifest": verified}, indent=1)


class _Job:
    def __init__(self, manifest: Manifest, options: Options) -> None:
        self.m = manifest
        self.o = options
        self.redact = Redactor(options.token)
        self.folder = Path(options.dest) / manifest.folder
        self.result = Result(manifest.name)
        self.sleep: Callable[[float], None] = time.sleep

    # -- messages ---------------------------------------------------------------------------
    def fail(self, message: str) -> DataError:
        return DataError(self.redact.text(message))

    def info(self, message: str, *args: Any) -> None:
        LOG.info(self.redact.text(message % args if args else message))

    def show(self, location: str | Path) -> str:
        return self.redact.url(location) if isinstance(location, str) and is_url(location) else str(location)

    # -- plan -------------------------------------------------------------------------------
    def run(self) -> Result:
        m = self.m
        if self.o.url is not None and len(m.files) != 1:
            raise self.fail(f"--url names one file; {m.name} has {len(m.files)} (use --base-url)")
        target = Path(self.o.dest) / m.extract_to if m.extract_to else None
        if target is not None and self._extracted_already(target):
            self.info("%s: already extracted in %s (stamp %s); nothing to do", m.name, target,
                      EXTRACT_STAMP.format(name=m.name))
            self.result.extracted_to = target
            return self.result
        if m.token.required and not self.o.token:
            raise self.fail(
                f"{m.name} needs the PoseTrack21 access token: write it to a file and pass --token-file FILE, "
                f"or set {TOKEN_ENV} (docs/real-data.md says how to obtain it)"
            )
        locations = [self._location(spec) for spec in m.files]
        self.folder.mkdir(parents=True, exist_ok=True)
        for spec, location in zip(m.files, locations):
            self.result.files[spec.name] = self._ensure(spec, location)
            if spec.sha256 is None:
                self.result.unverified.append(spec.name)
        if target is not None:
            self._extract(target)
        return self.result

    def _location(self, spec: FileSpec) -> str | None:
        base = self.o.base_url or (os.environ.get(self.m.base_url_env) if self.m.base_url_env else None) or None
        if self.o.url is not None:
            return self.o.url
        if base and spec.path:
            return join_location(base, spec.path)
        if spec.url:
            return spec.url
        final = self.folder / spec.name
        if read_stamp(final) is not None or final.is_file():
            return None  # already here; nothing to fetch
        env = f" (or set {self.m.base_url_env})" if self.m.base_url_env else ""
        if self.m.access == "user-copy":
            how = f"pass --url URL_OR_FILE with the location of your copy of {spec.name}"
        elif self.m.access == "manual":
            how = f"download it by hand ({self.m.page or 'see docs/real-data.md'}), then pass --base-url FOLDER{env}"
        else:
            how = f"pass --base-url URL{env}: the address the maintainers sent you"
        raise self.fail(f"{self.m.name}: no location for {spec.name}: {how}")

    # -- one file ---------------------------------------------------------------------------
    def _ensure(self, spec: FileSpec, location: str | None) -> str:
        final = self.folder / spec.name
        stamp = read_stamp(final)
        if stamp is not None and self._stamp_matches(spec, stamp):
            self.info("%s: verified earlier (sha256 %s), not fetched again", spec.name, stamp["sha256"][:12])
            return stamp["sha256"]
        if final.exists():
            self.info("%s: present without a valid stamp; checking it", spec.name)
            sha = self._verify(spec, final, sha256_file(final, progress=self.o.progress))
            earlier = _stamped_sha(final)
            if spec.sha256 is None and earlier is not None and earlier != sha:
                self._reject(final, spec.name, f"changed since it was fetched (sha256 {sha}, the stamp says {earlier})")
            _write_stamp(final, sha, spec.sha256 is not None)
            return sha
        if location is None:  # pragma: no cover - _location returns None only for present files
            raise self.fail(f"{spec.name}: vanished while checking it")
        part = final.with_name(final.name + ".part")
        digest = self._fetch(spec, location, part)
        sha = self._verify(spec, part, digest)
        os.replace(part, final)
        _write_stamp(final, sha, spec.sha256 is not None)
        self.result.fetched.append(spec.name)
        if spec.sha256 is None:
            self.info("%s: fetched; no published sha256 to compare with, recorded %s in its stamp", spec.name, sha)
        else:
            self.info("%s: fetched and verified (sha256 %s)", spec.name, sha[:12])
        return sha

    @staticmethod
    def _stamp_matches(spec: FileSpec, stamp: dict) -> bool:
        return (spec.sha256 is None or stamp["sha256"] == spec.sha256) and (
            spec.size is None or stamp["size"] == spec.size
        )

    def _verify(self, spec: FileSpec, path: Path, sha: str) -> str:
        size = path.stat().st_size
        if spec.size is not None and size != spec.size:
            self._reject(path, spec.name, f"{size} bytes, the manifest says {spec.size}")
        if spec.sha256 is not None and sha != spec.sha256:
            self._reject(path, spec.name, f"sha256 {sha} does not match the manifest's {spec.sha256}")
        problem = _content_problem(path, spec.content)
        if problem:
            self._reject(path, spec.name, problem)
        if spec.sha256_prefix and not sha.startswith(spec.sha256_prefix):
            LOG.warning("%s: sha256 %s does not start with %s (the hash in the published file name); "
                        "check the copy before using it", spec.name, sha, spec.sha256_prefix)
        return sha

    def _reject(self, path: Path, name: str, problem: str) -> None:
        bad = path.parent / f"{name}.bad"
        os.replace(path, bad)
        with contextlib.suppress(OSError):
            _stamp_path(path.parent / name).unlink()
        raise self.fail(f"{name}: {problem}; moved aside to {bad}")

    # -- fetching ---------------------------------------------------------------------------
    def _fetch(self, spec: FileSpec, location: str, part: Path) -> str:
        """Bring ``location`` into ``part`` (resuming what is there); return its sha256."""
        hasher = _PrefixHasher(part)
        if not is_url(location):
            self._copy_local(_local_path(location), part, spec, hasher)
            return hasher.hexdigest()
        url, headers = with_token(location, self.m.token, self.o.token)
        failures = attempts = 0
        while True:
            attempts += 1
            before = part.stat().st_size if part.exists() else 0
            try:
                self._http_attempt(url, headers, part, spec, hasher)
                return hasher.hexdigest()
            except _Transient as err:
                now = part.stat().st_size if part.exists() else 0
                failures = 0 if now > before else failures + 1
                if failures > self.o.retries or attempts >= MAX_ATTEMPTS:
                    kept = f"{now} bytes kept in {part}, the next run resumes from there" if now else "nothing fetched"
                    raise self.fail(
                        f"{spec.name}: giving up after {attempts} attempts ({err}) at {self.show(location)}; {kept}"
                    ) from None
                delay = min(self.o.backoff * 2 ** max(failures - 1, 0), self.o.max_backoff)
                self.info("%s: %s; attempt %d in %.1f s, resuming at byte %d", spec.name, err, attempts + 1,
                          delay, now)
                self.sleep(delay)

    def _http_attempt(self, url: str, headers: dict[str, str], part: Path, spec: FileSpec,
                      hasher: _PrefixHasher) -> None:
        offset = part.stat().st_size if part.exists() else 0
        if spec.size is not None and offset > spec.size:
            part.unlink()
            offset = 0
        if spec.size is not None and offset == spec.size:
            hasher.catch_up(offset)
            return  # an earlier attempt got it all
        request_headers = {"User-Agent": f"diffpose/{__version__}", "Accept-Encoding": "identity", **headers}
        if offset:
            request_headers["Range"] = f"bytes={offset}-"
        redirects = _SameHostRedirects()
        redirects.secret_header = next(iter(headers), None)
        opener = urllib.request.build_opener(redirects)
        self.result.requests += 1
        try:
            response = opener.open(urllib.request.Request(url, headers=request_headers), timeout=self.o.timeout)
        except urllib.error.HTTPError as err:
            with contextlib.suppress(OSError):
                err.close()
            self._http_error(err.code, err.headers, url, part, offset, spec)
            return
        except (urllib.error.URLError, OSError, http.client.HTTPException) as err:
            raise _Transient(_describe_network_error(err)) from None
        with response:
            status = response.status
            total = None
            if status == 206:
                start, total = _content_range(response.headers.get("Content-Range"))
                if start != offset:
                    self.info("%s: the server answered from byte %s instead of %d; fetching it again", spec.name,
                              start, offset)
                    part.unlink(missing_ok=True)
                    raise _Transient("unexpected range in the answer")
            elif status == 200:
                if offset:
                    self.info("%s: the server ignores range requests; fetching it from the start", spec.name)
                offset = 0
                length = response.headers.get("Content-Length")
                total = int(length) if length and length.isdigit() else None
            else:
                raise self.fail(f"{spec.name}: unexpected HTTP {status} from {self.show(url)}")
            if spec.size is not None and total is not None and total != spec.size:
                raise self.fail(f"{spec.name}: the server offers {total} bytes, the manifest says {spec.size}: "
                                f"{self.show(url)} is not the expected file")
            if total is not None:
                _check_space(part.parent, total - offset, spec.name)
            hasher.catch_up(offset)
            self._stream(response, part, offset, total, spec.name, hasher)

    def _stream(self, response: IO[bytes], part: Path, offset: int, total: int | None, name: str,
                hasher: _PrefixHasher) -> None:
        bar = progress_bar(total, name, "B", enabled=self.o.progress, initial=offset)
        with open(part, "ab" if offset else "wb") as out, bar:
            while True:
                try:
                    chunk = response.read(CHUNK)
                except (OSError, http.client.HTTPException) as err:
                    raise _Transient(_describe_network_error(err)) from None
                if not chunk:
                    break
                out.write(chunk)
                hasher.update(chunk)
                self.result.bytes_fetched += len(chunk)
                bar.update(len(chunk))
            out.flush()
            os.fsync(out.fileno())
        if total is not None and part.stat().st_size < total:
            raise _Transient(f"connection closed at byte {part.stat().st_size} of {total}")

    def _http_error(self, status: int, headers: Any, url: str, part: Path, offset: int, spec: FileSpec) -> None:
        where = self.show(url)
        if status == 416 and offset:
            _start, total = _content_range(headers.get("Content-Range") if headers else None)
            if total == offset:
                return  # the partial file is the whole file
            part.unlink(missing_ok=True)
            raise _Transient("the server refused the range (HTTP 416); starting over")
        if status in (401, 403):
            if self.m.uses_token and self.o.token:
                hint = "the token was refused: check it (it is the one the maintainers sent)"
            elif self.m.uses_token:
                hint = f"this source needs the token (--token-file FILE or {TOKEN_ENV})"
            else:
                hint = "the address may have expired: ask the maintainers for a new one"
            raise self.fail(f"{spec.name}: access refused (HTTP {status}) at {where}: {hint}")
        if status == 404:
            raise self.fail(f"{spec.name}: not found (HTTP 404) at {where}: the file moved or the base URL is wrong")
        if status in RETRY_STATUS or status >= 500:
            raise _Transient(f"HTTP {status}")
        raise self.fail(f"{spec.name}: HTTP {status} at {where}")

    def _copy_local(self, source: Path, part: Path, spec: FileSpec, hasher: _PrefixHasher) -> None:
        if not source.is_file():
            raise self.fail(f"{spec.name}: {source}: no such file")
        total = source.stat().st_size
        offset = part.stat().st_size if part.exists() else 0
        if offset > total:
            offset = 0
        _check_space(part.parent, total - offset, spec.name)
        hasher.catch_up(offset)
        bar = progress_bar(total, spec.name, "B", enabled=self.o.progress, initial=offset)
        with open(source, "rb") as src, open(part, "ab" if offset else "wb") as out, bar:
            src.seek(offset)
            while chunk := src.read(CHUNK):
                out.write(chunk)
                hasher.update(chunk)
                bar.update(len(chunk))

    # -- extraction -------------------------------------------------------------------------
    def _archive_identity(self) -> list[list[str]]:
        return [[name, sha] for name, sha in self.result.files.items()]

    def _extracted_already(self, target: Path) -> bool:
        stamp_file = target / EXTRACT_STAMP.format(name=self.m.name)
        try:
            stamp = json.loads(stamp_file.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return False
        archives = stamp.get("archives") if isinstance(stamp, dict) else None
        if not isinstance(archives, list) or [a[0] for a in archives] != [f.name for f in self.m.files]:
            return False
        return all(f.sha256 is None or f.sha256 == sha for f, (_name, sha) in zip(self.m.files, archives))

    def _archive_paths(self) -> list[Path]:
        parts = [self.folder / f.name for f in self.m.files]
        if self.m.combine is None:
            return parts
        combined = self.folder / self.m.combine.name
        stamp = read_stamp(combined)
        if stamp is not None and self._stamp_matches(self.m.combine, stamp):
            return [combined]
        if self.o.write_combined:
            self._write_combined(parts, combined)
            return [combined]
        if self.m.combine.sha256 is not None or self.m.combine.size is not None:
            total = sum(p.stat().st_size for p in parts)
            if self.m.combine.size is not None and total != self.m.combine.size:
                raise self.fail(f"{self.m.combine.name}: the parts add up to {total} bytes, the manifest says "
                                f"{self.m.combine.size}")
            if self.m.combine.sha256 is not None:
                with _concat(parts) as stream:
                    sha = _hash_stream(stream, total, self.m.combine.name, self.o.progress)
                if sha != self.m.combine.sha256:
                    raise self.fail(f"{self.m.combine.name}: the concatenated parts have sha256 {sha}, the manifest "
                                    f"says {self.m.combine.sha256}")
        return parts

    def _write_combined(self, parts: list[Path], combined: Path) -> None:
        from diffpose.io import atomic_path

        total = sum(p.stat().st_size for p in parts)
        _check_space(combined.parent, total, combined.name)
        digest = hashlib.sha256()
        bar = progress_bar(total, f"concatenate {combined.name}", "B", enabled=self.o.progress)
        with atomic_path(combined) as tmp, open(tmp, "wb") as out, bar:
            for part in parts:
                with open(part, "rb") as src:
                    while chunk := src.read(CHUNK):
                        out.write(chunk)
                        digest.update(chunk)
                        bar.update(len(chunk))
            out.flush()
            os.fsync(out.fileno())
        self._verify(self.m.combine, combined, digest.hexdigest())
        _write_stamp(combined, digest.hexdigest(), self.m.combine.sha256 is not None)
        self.info("%s: %d parts concatenated in order (sha256 %s)", combined.name, len(parts), digest.hexdigest())

    def _extract(self, target: Path) -> None:
        paths = self._archive_paths()
        fmt = self.m.extract_format or "auto"
        if fmt == "auto":
            fmt = _sniff_archive(paths[0])
            if fmt is None:
                raise self.fail(f"{paths[0].name}: neither a tar nor a zip archive; nothing was extracted")
        target.mkdir(parents=True, exist_ok=True)
        label = self.m.combine.name if self.m.combine else paths[0].name
        password = self.o.token if self.m.token.zip_password else None
        with _concat(paths) as stream:
            if fmt == "tar":
                _extract_tar(stream, target, label, progress=self.o.progress, fail=self.fail)
            else:
                _extract_zip(stream, target, label, password=password, progress=self.o.progress, fail=self.fail)
        write_json(target / EXTRACT_STAMP.format(name=self.m.name),
                   {"source": self.m.name, "archives": self._archive_identity()}, indent=1)
        self.result.extracted_to = target
        self.result.extracted = True
        self.info("%s: extracted into %s", label, target)


class _PrefixHasher:
    """sha256 of ``part`` as it grows: bytes already on disk are hashed once, on demand."""

    def __init__(self, part: Path) -> None:
        self.part = part
        self.digest = hashlib.sha256()
        self.count = 0

    def catch_up(self, offset: int) -> None:
        if offset == self.count:
            return
        self.digest, self.count = hashlib.sha256(), 0
        if offset:
            with open(self.part, "rb") as fh:
                while self.count < offset and (chunk := fh.read(min(CHUNK, offset - self.count))):
                    self.update(chunk)

    def update(self, chunk: bytes) -> None:
        self.digest.update(chunk)
        self.count += len(chunk)

    def hexdigest(self) -> str:
        if self.count != self.part.stat().st_size:
            self.catch_up(self.part.stat().st_size)
        return self.digest.hexdigest()


def _hash_stream(stream: IO[bytes], total: int, name: str, progress: bool) -> str:
    digest = hashlib.sha256()
    with progress_bar(total, f"sha256 {name}", "B", enabled=progress) as bar:
        while chunk := stream.read(CHUNK):
            digest.update(chunk)
            bar.update(len(chunk))
    return digest.hexdigest()


def _content_range(value: str | None) -> tuple[int | None, int | None]:
    """(first byte, total) of ``bytes 100-199/1000`` or ``bytes */1000``; None where unknown."""
    match = re.fullmatch(r"\s*bytes\s+(?:(\d+)-\d+|\*)/(\d+|\*)\s*", value or "")
    if not match:
        return None, None
    start = int(match.group(1)) if match.group(1) is not None else None
    total = int(match.group(2)) if match.group(2) != "*" else None
    return start, total


def _describe_network_error(err: BaseException) -> str:
    if isinstance(err, urllib.error.URLError) and not isinstance(err, urllib.error.HTTPError):
        reason = err.reason
        return f"connection failed ({type(reason).__name__}: {reason})" if isinstance(reason, BaseException) \
            else f"connection failed ({reason})"
    if isinstance(err, (socket.timeout, TimeoutError)):
        return "timed out"
    if isinstance(err, http.client.IncompleteRead):
        return f"connection closed early ({len(err.partial)} bytes in the last read)"
    return f"connection failed ({type(err).__name__}: {err})"


def _check_space(folder: Path, needed: int, name: str) -> None:
    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        return
    if needed > free:
        raise DataError(f"{name}: needs {needed} more bytes, only {free} free in {folder}")


_MAGIC = {
    "zip": (b"PK\x03\x04", b"PK\x05\x06"),
    "tar.gz": (b"\x1f\x8b",),
    "pth": (b"PK\x03\x04", b"\x80"),
}


def _content_problem(path: Path, content: str) -> str | None:
    """A reason why ``path`` is not the kind of file the manifest announces (an HTML error page
    saved under the file's name is the usual culprit), or None."""
    if content == "any":
        return None
    with open(path, "rb") as fh:
        head = fh.read(512)
    html = head.lstrip()[:1] == b"<"
    if content == "json":
        ok = head.lstrip()[:1] in (b"[", b"{")
    elif content == "tar":
        ok = len(head) == 512 and head[257:262] == b"ustar" or (len(head) == 512 and _tar_checksum_ok(head))
    else:
        ok = head.startswith(_MAGIC[content])
    if ok:
        return None
    what = "an HTML page (a login or error page, not the file)" if html else f"not a {content} file"
    return f"the content is {what}"


def _tar_checksum_ok(block: bytes) -> bool:
    """An old-style (pre-POSIX) tar header: its checksum field matches."""
    try:
        stored = int(block[148:156].replace(b"\0", b" ").strip() or b"-1", 8)
    except ValueError:
        return False
    return stored == sum(block[:148]) + 8 * 32 + sum(block[156:])


def _sniff_archive(path: Path) -> str | None:
    with open(path, "rb") as fh:
        head = fh.read(512)
    if head.startswith(_MAGIC["zip"]):
        return "zip"
    if head.startswith(_MAGIC["tar.gz"]) or (len(head) == 512 and (head[257:262] == b"ustar" or _tar_checksum_ok(head))):
        return "tar"
    for magic in (b"BZh", b"\xfd7zXZ"):
        if head.startswith(magic):
            return "tar"
    return None


# --------------------------------------------------------------------------------------------
# reading several parts as one file


class ConcatReader(io.RawIOBase):
    """Read-only, seekable view of files one after another (the parts of a split archive)."""

    def __init__(self, paths: list[Path]) -> None:
        super().__init__()
        self._files = [open(p, "rb") for p in paths]
        sizes = [os.fstat(f.fileno()).st_size for f in self._files]
        self._starts = [0]
        for size in sizes:
            self._starts.append(self._starts[-1] + size)
        self._pos = 0

    @property
    def size(self) -> int:
        return self._starts[-1]

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self.size}[whence]
        if base + offset < 0:
            raise ValueError("negative seek position")
        self._pos = base + offset
        return self._pos

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        done = 0
        while done < len(view) and self._pos < self.size:
            index = bisect.bisect_right(self._starts, self._pos) - 1
            fh = self._files[index]
            fh.seek(self._pos - self._starts[index])
            want = min(len(view) - done, self._starts[index + 1] - self._pos)
            got = fh.readinto(view[done:done + want])
            if not got:
                break
            done += got
            self._pos += got
        return done

    def close(self) -> None:
        for fh in self._files:
            fh.close()
        super().close()


class _concat:
    """``with _concat(paths) as stream``: a buffered :class:`ConcatReader`."""

    def __init__(self, paths: list[Path]) -> None:
        self.paths = paths

    def __enter__(self) -> io.BufferedReader:
        self.stream = io.BufferedReader(ConcatReader(self.paths), buffer_size=CHUNK)
        return self.stream

    def __exit__(self, *exc: Any) -> None:
        self.stream.close()


# --------------------------------------------------------------------------------------------
# extraction


def unsafe_name(name: str) -> str | None:
    """Why an archive member name must not be extracted (absolute, climbs out), or None."""
    if not name or name in (".", "./"):
        return None if name else "an empty name"
    if name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name):
        return "an absolute path"
    if ".." in re.split(r"[\\/]", name):
        return "a path that leaves the target folder (..)"
    return None


def _inside(root: Path, path: str) -> bool:
    real_root = os.path.realpath(root)
    real = os.path.realpath(path)
    return real == real_root or real.startswith(real_root + os.sep)


def _tar_member_problem(member: tarfile.TarInfo) -> str | None:
    problem = unsafe_name(member.name)
    if problem:
        return problem
    if member.issym():
        if member.linkname.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", member.linkname):
            return f"a symbolic link to an absolute path ({member.linkname})"
        resolved = os.path.normpath(os.path.join(os.path.dirname(member.name), member.linkname))
        if resolved == ".." or resolved.startswith(".." + os.sep) or os.path.isabs(resolved):
            return f"a symbolic link that points outside the target folder ({member.linkname})"
    if member.islnk():
        link_problem = unsafe_name(member.linkname)
        if link_problem:
            return f"a hard link to {link_problem} ({member.linkname})"
    if member.ischr() or member.isblk() or member.isfifo():
        return "a device file or pipe"
    return None


def _extract_tar(stream: IO[bytes], target: Path, label: str, *, progress: bool,
                 fail: Callable[[str], DataError]) -> None:
    try:
        tar = tarfile.open(fileobj=stream, mode="r:*")
    except tarfile.TarError as err:
        raise fail(f"{label}: not a readable tar archive ({err}); nothing was extracted") from None
    with tar:
        members = []
        try:
            for member in tar:  # first pass: refuse the whole archive before writing anything
                problem = _tar_member_problem(member)
                if problem:
                    raise fail(f"{label}: refused to extract {member.name!r}: {problem}; nothing was extracted")
                members.append(member)
        except tarfile.TarError as err:
            raise fail(f"{label}: damaged tar archive ({err}); nothing was extracted") from None
        _check_space(target, sum(m.size for m in members if m.isfile()), label)
        use_filter = hasattr(tarfile, "data_filter")
        with progress_bar(len(members), f"extract {label}", "files", enabled=progress) as bar:
            for member in members:
                where = os.path.join(target, member.name)
                link = None
                if member.issym():
                    link = os.path.join(target, os.path.dirname(member.name), member.linkname)
                elif member.islnk():
                    link = os.path.join(target, member.linkname)
                # second line of defence, on the real disk (links extracted earlier are followed)
                if not _inside(target, where) or (link and not _inside(target, link)):
                    raise fail(f"{label}: refused to extract {member.name!r}: it would land outside {target} "
                               f"(through a link); extraction stopped")
                try:
                    if use_filter:
                        tar.extract(member, target, filter="data")
                    else:  # pragma: no cover - Python < 3.11.4
                        tar.extract(member, target)
                except (tarfile.TarError, OSError) as err:
                    raise fail(f"{label}: cannot extract {member.name!r} ({type(err).__name__}: {err})") from None
                bar.update(1)


def _extract_zip(stream: IO[bytes], target: Path, label: str, *, password: str | None, progress: bool,
                 fail: Callable[[str], DataError]) -> None:
    try:
        archive = zipfile.ZipFile(stream)
    except (zipfile.BadZipFile, OSError) as err:
        raise fail(f"{label}: not a readable zip archive ({err}); nothing was extracted") from None
    with archive:
        infos = archive.infolist()
        for info in infos:
            problem = unsafe_name(info.filename)
            if stat.S_ISLNK(info.external_attr >> 16):
                problem = "a symbolic link (links are not extracted from zip archives)"
            if problem:
                raise fail(f"{label}: refused to extract {info.filename!r}: {problem}; nothing was extracted")
            if info.compress_type == AES_METHOD:
                raise fail(
                    f"{label}: {info.filename!r} is AES-encrypted, which Python's zipfile cannot decrypt; extract it "
                    f"with 7-Zip (7z x {label} -o{target}, and type the token when it asks for the password), "
                    f"then run diffpose register"
                )
            if info.flag_bits & 0x1 and not password:
                raise fail(f"{label}: {info.filename!r} is password-protected: give the token (--token-file FILE or "
                           f"{TOKEN_ENV})")
        _check_space(target, sum(i.file_size for i in infos), label)
        pwd = password.encode("utf-8") if password else None
        with progress_bar(sum(i.file_size for i in infos), f"extract {label}", "B", enabled=progress) as bar:
            for info in infos:
                dest = target / info.filename
                if not _inside(target, str(dest)):
                    raise fail(f"{label}: refused to extract {info.filename!r}: it would land outside {target}")
                if info.is_dir():
                    dest.mkdir(parents=True, exist_ok=True)
                    continue
                dest.parent.mkdir(parents=True, exist_ok=True)
                try:
                    with archive.open(info, pwd=pwd) as src, open(dest, "wb") as out:
                        while chunk := src.read(CHUNK):
                            out.write(chunk)
                            bar.update(len(chunk))
                except RuntimeError as err:
                    dest.unlink(missing_ok=True)
                    if "password" in str(err).lower():
                        raise fail(f"{label}: wrong password for {info.filename!r}: the token does not open this "
                                   f"archive") from None
                    raise fail(f"{label}: cannot extract {info.filename!r} ({type(err).__name__})") from None
                except zipfile.BadZipFile as err:
                    dest.unlink(missing_ok=True)
                    hint = " (a wrong password gives this too)" if info.flag_bits & 0x1 else ""
                    raise fail(f"{label}: damaged member {info.filename!r} ({err}){hint}") from None
                except NotImplementedError:
                    dest.unlink(missing_ok=True)
                    raise fail(f"{label}: {info.filename!r} uses compression method {info.compress_type}, which "
                               f"Python's zipfile cannot read; extract it with 7-Zip, then run diffpose register") \
                        from None


def iter_status(names: list[str] | None = None, dest: Path = Path("data/real")) -> Iterator[tuple[Manifest, str]]:
    """(manifest, one-word status) for ``--list``: done, partial, missing."""
    for name in names or available():
        manifest = load_manifest(name)
        folder = Path(dest) / manifest.folder
        stamped = [read_stamp(folder / f.name) is not None for f in manifest.files]
        extracted = manifest.extract_to and (Path(dest) / manifest.extract_to /
                                             EXTRACT_STAMP.format(name=manifest.name)).is_file()
        if extracted or (all(stamped) and not manifest.extract_to):
            status = "done"
        elif any(stamped) or any((folder / (f.name + ".part")).exists() for f in manifest.files):
            status = "partial"
        else:
            status = "missing"
        yield manifest, status
