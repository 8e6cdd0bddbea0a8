"""diffpose download against a local HTTP server (127.0.0.1, a thread; tests/http_server.py) that
answers range requests, drops a connection once, fails with 5xx, checks a token, and counts the
requests it gets."""

from __future__ import annotations

import io
import json
import logging
import os
import socket
import struct
import tarfile
import zipfile
import zlib
from pathlib import Path

import pytest

from diffpose import cli
from diffpose.data import download as dl
from diffpose.errors import ConfigError, DataError
from tests.http_server import TOKEN, file_member, running_server, sha, tar_bytes, write_manifest

JPEG = b"\xff\xd8\xff\xe0" + b"frame" * 40


# --------------------------------------------------------------------------------------------
# the server (tests/http_server.py)


@pytest.fixture
def server():
    with running_server() as state:
        yield state


@pytest.fixture(autouse=True)
def _no_tracking(monkeypatch):
    """Tracking is tested once, in the token test; elsewhere it only costs time."""
    monkeypatch.setenv("DIFFPOSE_TRACKING", "off")
    monkeypatch.delenv(dl.TOKEN_ENV, raising=False)
    monkeypatch.delenv("DIFFPOSE_POSETRACK_URL", raising=False)


# --------------------------------------------------------------------------------------------
# helpers


def download(args: list[str], capsys) -> tuple[int, str, str]:
    rc = cli.main(["download", *args, "--no-progress", "--backoff", "0"])
    out, err = capsys.readouterr()
    return rc, out, err


def link_member(name: str, target: str, kind: bytes = tarfile.SYMTYPE) -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = target
    return info, None


def frames_tar() -> bytes:
    return tar_bytes([file_member(f"images/val/000342_mpii_test/{i:06d}.jpg", JPEG + bytes([i])) for i in range(4)])


class ZipCrypto:
    """Traditional PKWARE encryption (APPNOTE 6.1), enough to build a password-protected test zip:
    Python's zipfile reads such archives but cannot write them."""

    def __init__(self, password: bytes) -> None:
        self.keys = [0x12345678, 0x23456789, 0x34567890]
        for byte in password:
            self._update(byte)

    @staticmethod
    def _crc(crc: int, byte: int) -> int:
        return zlib.crc32(bytes([byte]), crc ^ 0xFFFFFFFF) ^ 0xFFFFFFFF

    def _update(self, byte: int) -> None:
        k0, k1, k2 = self.keys
        k0 = self._crc(k0, byte)
        k1 = ((k1 + (k0 & 0xFF)) * 134775813 + 1) & 0xFFFFFFFF
        k2 = self._crc(k2, k1 >> 24)
        self.keys = [k0, k1, k2]

    def encrypt(self, data: bytes) -> bytes:
        out = bytearray()
        for plain in data:
            t = (self.keys[2] | 2) & 0xFFFF
            out.append(plain ^ (((t * (t ^ 1)) >> 8) & 0xFF))
            self._update(plain)
        return bytes(out)


def encrypted_zip(entries: dict[str, bytes], password: str) -> bytes:
    """A zip of stored (uncompressed) entries, each encrypted with ``password`` (ZipCrypto)."""
    out, central = io.BytesIO(), []
    for name, data in entries.items():
        crc, fname = zlib.crc32(data), name.encode()
        body = ZipCrypto(password.encode()).encrypt(os.urandom(11) + bytes([crc >> 24]) + data)
        offset = out.tell()
        out.write(struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, 1, 0, 0, 0x21, crc, len(body), len(data), len(fname), 0))
        out.write(fname + body)
        central.append(struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 20, 20, 1, 0, 0, 0x21, crc, len(body), len(data),
                                   len(fname), 0, 0, 0, 0, 0, offset) + fname)
    start = out.tell()
    out.write(b"".join(central))
    out.write(struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, len(central), len(central), out.tell() - start, start, 0))
    return out.getvalue()


def plain_zip(entries: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in entries.items():
            zf.writestr(zipfile.ZipInfo(name), data)
    return buf.getvalue()


def all_bytes_under(folder: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file() and not p.is_symlink())


# --------------------------------------------------------------------------------------------
# resume, retries, verification


def test_a_connection_dropped_mid_file_resumes_with_a_range_request(server, tmp_path, capsys):
    data = os.urandom(300_000)
    server.files["/d/blob.bin"] = data
    server.drop_after["/d/blob.bin"] = 100_000
    manifest = write_manifest(tmp_path, [{"name": "blob.bin", "url": f"{server.base}/d/blob.bin",
                                          "size": len(data), "sha256": sha(data)}])
    rc, out, err = download([str(manifest), "--dest", str(tmp_path / "dest")], capsys)
    assert rc == 0, err
    assert [r["range"] for r in server.requests] == [None, "bytes=100000-"]
    final = tmp_path / "dest" / "archives" / "blob.bin"
    assert final.read_bytes() == data
    assert not final.with_name("blob.bin.part").exists()
    stamp = json.loads(final.with_name("blob.bin.stamp.json").read_text())
    assert stamp["sha256"] == sha(data) and stamp["checked_against_manifest"] is True


def test_a_partial_file_left_by_an_earlier_run_is_resumed(server, tmp_path, capsys):
    data = os.urandom(50_000)
    server.files["/blob.bin"] = data
    part = tmp_path / "dest" / "archives" / "blob.bin.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(data[:12_345])
    manifest = write_manifest(tmp_path, [{"name": "blob.bin", "url": f"{server.base}/blob.bin", "size": None,
                                          "sha256": sha(data)}])
    rc, _, err = download([str(manifest), "--dest", str(tmp_path / "dest")], capsys)
    assert rc == 0, err
    assert [r["range"] for r in server.requests] == ["bytes=12345-"]
    assert (tmp_path / "dest" / "archives" / "blob.bin").read_bytes() == data


def test_a_server_that_ignores_ranges_gets_the_whole_file_again(server, tmp_path, capsys):
    data = os.urandom(40_000)
    server.files["/blob.bin"] = data
    server.ranges = False
    part = tmp_path / "dest" / "archives" / "blob.bin.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(b"stale bytes that must not survive")
    manifest = write_manifest(tmp_path, [{"name": "blob.bin", "url": f"{server.base}/blob.bin", "size": len(data),
                                          "sha256": sha(data)}])
    rc, _, err = download([str(manifest), "--dest", str(tmp_path / "dest")], capsys)
    assert rc == 0, err
    assert (tmp_path / "dest" / "archives" / "blob.bin").read_bytes() == data


def test_5xx_answers_are_retried_then_the_file_arrives(server, tmp_path, capsys):
    data = b"x" * 5000
    server.files["/f.bin"] = data
    server.statuses["/f.bin"] = [503, 500]
    manifest = write_manifest(tmp_path, [{"name": "f.bin", "url": f"{server.base}/f.bin", "size": 5000,
                                          "sha256": sha(data)}])
    rc, _, err = download([str(manifest), "--dest", str(tmp_path / "dest")], capsys)
    assert rc == 0, err
    assert server.count("/f.bin") == 3


def test_retries_are_bounded_and_the_failure_is_one_line(server, tmp_path, capsys):
    server.files["/f.bin"] = b"never served"
    server.statuses["/f.bin"] = [503] * 50
    manifest = write_manifest(tmp_path, [{"name": "f.bin", "url": f"{server.base}/f.bin", "size": None,
                                          "sha256": None}])
    rc, _, err = download([str(manifest), "--dest", str(tmp_path / "dest"), "--retries", "2"], capsys)
    assert rc == 2
    assert server.count("/f.bin") == 3  # the first attempt and 2 retries
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "giving up after 3 attempts (HTTP 503)" in lines[0], err


def test_backoff_doubles_and_is_capped(tmp_path, monkeypatch):
    data = b"y" * 100
    manifest = dl.parse_manifest({"name": "t", "title": "t", "access": "public", "folder": "a",
                                  "files": [{"name": "f", "url": "http://127.0.0.1:9/f", "size": None,
                                             "sha256": None}]}, tmp_path / "t.yaml")
    job = dl._Job(manifest, dl.Options(dest=tmp_path, retries=4, backoff=1.0, max_backoff=3.0, progress=False))
    waits: list[float] = []
    job.sleep = waits.append
    monkeypatch.setattr(job, "_http_attempt", lambda *a: (_ for _ in ()).throw(dl._Transient("HTTP 502")))
    with pytest.raises(DataError, match="giving up after 5 attempts"):
        job._fetch(manifest.files[0], "http://127.0.0.1:9/f", tmp_path / "f.part")
    assert waits == [1.0, 2.0, 3.0, 3.0]
    assert data  # the file itself never mattered


def test_a_404_is_not_retried(server, tmp_path, capsys):
    manifest = write_manifest(tmp_path, [{"name": "gone.json", "url": f"{server.base}/gone.json", "size": None,
                                          "sha256": None}])
    rc, _, err = download([str(manifest), "--dest", str(tmp_path / "dest")], capsys)
    assert rc == 2 and server.count() == 1
    assert "not found (HTTP 404)" in err and len(err.strip().splitlines()) == 1


def test_a_wrong_checksum_is_refused_and_the_file_kept_aside(server, tmp_path, capsys):
    data = os.urandom(20_000)
    server.files["/f.bin"] = data
    manifest = write_manifest(tmp_path, [{"name": "f.bin", "url": f"{server.base}/f.bin", "size": None,
                                          "sha256": sha(b"another file")}])
    rc, _, err = download([str(manifest), "--dest", str(tmp_path / "dest")], capsys)
    assert rc == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "does not match the manifest's" in lines[0] and "f.bin.bad" in lines[0], err
    folder = tmp_path / "dest" / "archives"
    assert (folder / "f.bin.bad").read_bytes() == data
    assert not (folder / "f.bin").exists() and not (folder / "f.bin.stamp.json").exists()
    assert not (folder / "f.bin.part").exists()


def test_a_wrong_size_is_refused_before_the_body_is_fetched(server, tmp_path, capsys):
    server.files["/f.bin"] = b"z" * 1000
    manifest = write_manifest(tmp_path, [{"name": "f.bin", "url": f"{server.base}/f.bin", "size": 999,
                                          "sha256": None}])
    rc, _, err = download([str(manifest), "--dest", str(tmp_path / "dest")], capsys)
    assert rc == 2 and "the server offers 1000 bytes, the manifest says 999" in err


def test_an_html_page_instead_of_the_file_is_refused(server, tmp_path, capsys):
    server.files["/boxes/val_boxes.json"] = b"<!DOCTYPE html><html>Sign in to continue</html>"
    manifest = write_manifest(tmp_path, [{"name": "val_boxes.json", "path": "boxes/val_boxes.json", "url": None,
                                          "size": None, "sha256": None, "content": "json"}], access="manual")
    rc, _, err = download([str(manifest), "--dest", str(tmp_path / "dest"), "--base-url", server.base], capsys)
    assert rc == 2 and "HTML page" in err and "val_boxes.json.bad" in err


def test_a_rerun_makes_no_request_and_reextracts_nothing(server, tmp_path, capsys):
    data = frames_tar()
    server.files["/a/frames.tar"] = data
    manifest = write_manifest(tmp_path, [{"name": "frames.tar", "url": f"{server.base}/a/frames.tar",
                                          "size": len(data), "sha256": sha(data), "content": "tar"}],
                              extract={"format": "tar", "to": "root"})
    dest = tmp_path / "dest"
    rc, out, err = download([str(manifest), "--dest", str(dest), "--record", str(tmp_path / "first.json")], capsys)
    assert rc == 0, err
    frame = dest / "root" / "images" / "val" / "000342_mpii_test" / "000000.jpg"
    assert frame.read_bytes() == JPEG + b"\0"
    before = frame.stat().st_mtime_ns
    assert server.count() == 1
    rc, out, err = download([str(manifest), "--dest", str(dest), "--record", str(tmp_path / "second.json")], capsys)
    assert rc == 0, err
    assert server.count() == 1 and "already extracted" in out
    assert (tmp_path / "first.json").read_bytes() == (tmp_path / "second.json").read_bytes()
    assert json.loads((tmp_path / "first.json").read_text())["files"] == {"frames.tar": sha(data)}
    assert frame.stat().st_mtime_ns == before
    # without the extraction stamp: extracted again from the verified archive, still no request
    (dest / "root" / dl.EXTRACT_STAMP.format(name="testsrc")).unlink()
    rc, out, err = download([str(manifest), "--dest", str(dest)], capsys)
    assert rc == 0 and server.count() == 1 and "1 already verified" in out and "extracted into" in out


def test_a_verified_file_changed_on_disk_is_checked_again(server, tmp_path, capsys):
    data = b"w" * 3000
    server.files["/f.bin"] = data
    manifest = write_manifest(tmp_path, [{"name": "f.bin", "url": f"{server.base}/f.bin", "size": None,
                                          "sha256": sha(data)}])
    dest = tmp_path / "dest"
    assert download([str(manifest), "--dest", str(dest)], capsys)[0] == 0
    (dest / "archives" / "f.bin").write_bytes(b"corrupted")
    rc, _, err = download([str(manifest), "--dest", str(dest)], capsys)
    assert rc == 2 and "f.bin.bad" in err and server.count() == 1


def test_a_file_without_a_published_checksum_is_held_to_its_stamp(server, tmp_path, capsys):
    server.files["/f.bin"] = b"v" * 3000
    manifest = write_manifest(tmp_path, [{"name": "f.bin", "url": f"{server.base}/f.bin", "size": None,
                                          "sha256": None}])
    dest = tmp_path / "dest"
    assert download([str(manifest), "--dest", str(dest)], capsys)[0] == 0
    final = dest / "archives" / "f.bin"
    os.utime(final, ns=(1, 1))  # touched: hashed again, same content, stamped again
    assert download([str(manifest), "--dest", str(dest)], capsys)[0] == 0
    final.write_bytes(b"v" * 2999 + b"!")
    rc, _, err = download([str(manifest), "--dest", str(dest)], capsys)
    assert rc == 2 and "changed since it was fetched" in err and (dest / "archives" / "f.bin.bad").exists()
    assert server.count() == 1


def test_a_local_folder_is_a_base_url_too(tmp_path, capsys):
    source = tmp_path / "usb"
    source.mkdir()
    data = b"\x80\x02weights" * 100
    (source / "vitpose-h.pth").write_bytes(data)
    rc, out, err = download(["vitpose-h-official", "--dest", str(tmp_path / "dest"), "--base-url", str(source)],
                            capsys)
    assert rc == 0, err
    assert (tmp_path / "dest" / "weights" / "vitpose-h.pth").read_bytes() == data
    assert "no published sha256" in err


def test_a_manual_source_without_a_location_says_where_to_get_it(tmp_path, capsys):
    rc, _, err = download(["vitpose-h-official", "--dest", str(tmp_path / "dest")], capsys)
    assert rc == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "--base-url FOLDER" in lines[0] and "1drv.ms" in lines[0]


def test_a_user_copy_source_takes_url(tmp_path, capsys):
    labels = tar_bytes([file_member("annotations/val/000342_mpii.json", b'{"annolist": []}')])
    archive = tmp_path / "my-pt17-labels.tar"
    archive.write_bytes(labels)
    rc, _, err = download(["posetrack17-annotations", "--dest", str(tmp_path / "dest")], capsys)
    assert rc == 2 and "--url" in err
    rc, out, err = download(["posetrack17-annotations", "--dest", str(tmp_path / "dest"), "--url", str(archive)],
                            capsys)
    assert rc == 0, err
    assert (tmp_path / "dest" / "posetrack17" / "annotations" / "val" / "000342_mpii.json").is_file()


# --------------------------------------------------------------------------------------------
# multi-part archives


def test_the_eighteen_image_parts_are_concatenated_in_order_and_extracted(server, tmp_path, capsys):
    data = frames_tar()
    manifest = dl.load_manifest("posetrack-images")
    names = [f.name for f in manifest.files]
    assert names[0].endswith(".aa") and names[-1].endswith(".ar") and len(names) == 18
    step = -(-len(data) // 18)
    for i, name in enumerate(names):
        server.files[f"/frames/{name}"] = data[i * step:(i + 1) * step]
    assert b"".join(server.files[f"/frames/{n}"] for n in names) == data
    dest = tmp_path / "dest"
    rc, out, err = download(["posetrack-images", "--dest", str(dest), "--base-url", f"{server.base}/frames",
                             "--write-combined"], capsys)
    assert rc == 0, err
    assert server.count() == 18
    assert (dest / "archives" / "posetrack-images" / "posetrack18_images.tar").read_bytes() == data
    for i in range(4):
        assert (dest / "posetrack" / "images" / "val" / "000342_mpii_test" / f"{i:06d}.jpg").read_bytes() == \
            JPEG + bytes([i])
    assert "no published sha256 for 18 file(s)" in err


def test_parts_are_read_as_one_stream_without_a_combined_copy(server, tmp_path, monkeypatch, capsys):
    data = frames_tar()
    monkeypatch.setenv("DIFFPOSE_POSETRACK_URL", f"{server.base}/frames")
    manifest = dl.load_manifest("posetrack-images")
    step = -(-len(data) // 18)
    for i, f in enumerate(manifest.files):
        server.files[f"/frames/{f.name}"] = data[i * step:(i + 1) * step]
    rc, _, err = download(["posetrack-images", "--dest", str(tmp_path / "dest")], capsys)
    assert rc == 0, err
    assert not (tmp_path / "dest" / "archives" / "posetrack-images" / "posetrack18_images.tar").exists()
    assert (tmp_path / "dest" / "posetrack" / "images" / "val" / "000342_mpii_test" / "000003.jpg").is_file()


def test_concat_reader_reads_and_seeks_across_parts(tmp_path):
    data = os.urandom(10_000)
    cuts = [0, 1, 1, 4000, 4001, 9999, 10_000]  # includes an empty part
    paths = []
    for i, (a, b) in enumerate(zip(cuts, cuts[1:])):
        paths.append(tmp_path / f"p{i}")
        paths[-1].write_bytes(data[a:b])
    reader = dl.ConcatReader(paths)
    assert reader.size == len(data) and reader.read() == data
    reader.seek(3999)
    assert reader.read(3) == data[3999:4002]
    reader.seek(-2, io.SEEK_END)
    assert reader.read(10) == data[-2:]
    reader.close()


# --------------------------------------------------------------------------------------------
# unsafe archives


def _serve_archive(server, tmp_path: Path, name: str, data: bytes, fmt: str, **extra) -> Path:
    server.files[f"/{name}"] = data
    return write_manifest(tmp_path, [{"name": name, "url": f"{server.base}/{name}", "size": None,
                                      "sha256": None}], extract={"format": fmt, "to": "target"}, **extra)


@pytest.mark.parametrize("member,why", [
    (file_member("../evil.txt", b"escaped"), "leaves the target folder"),
    (file_member("ok/../../evil.txt", b"escaped"), "leaves the target folder"),
    ("ABSOLUTE", "an absolute path"),
    (link_member("innocent", "../../evil.txt"), "symbolic link that points outside"),
    (link_member("innocent", "/etc/passwd"), "symbolic link to an absolute path"),
    (link_member("innocent", "../evil.txt", tarfile.LNKTYPE), "hard link"),
])
def test_tar_members_that_leave_the_target_are_refused(server, tmp_path, capsys, member, why):
    outside = tmp_path / "outside"
    outside.mkdir()
    if member == "ABSOLUTE":
        member = file_member(str(outside / "abs_evil.txt"), b"escaped")
    data = tar_bytes([file_member("fine/first.txt", b"ok"), member])
    assert tarfile.open(fileobj=io.BytesIO(data)).getnames()[1] == member[0].name  # written as given
    manifest = _serve_archive(server, tmp_path, "bad.tar", data, "tar")
    dest = tmp_path / "dest"
    rc, _, err = download([str(manifest), "--dest", str(dest)], capsys)
    assert rc == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "refused to extract" in lines[0] and why in lines[0], err
    assert "nothing was extracted" in lines[0]
    assert not list(outside.iterdir())
    assert not (dest / "evil.txt").exists() and not (tmp_path / "evil.txt").exists()
    assert not (dest / "target" / "fine").exists()  # refused as a whole, before writing


def test_a_chain_of_links_that_escapes_is_stopped_on_disk(server, tmp_path, capsys):
    # each link looks harmless on its own (lexically inside); followed on disk, s1/ is the parent
    data = tar_bytes([link_member("s2", "d/.."), link_member("s1", "s2/.."), file_member("s1/evil.txt", b"escaped")])
    manifest = _serve_archive(server, tmp_path, "chain.tar", data, "tar")
    rc, _, err = download([str(manifest), "--dest", str(tmp_path / "dest")], capsys)
    assert rc == 2 and "refused to extract 's1'" in err and "(through a link)" in err
    assert not (tmp_path / "dest" / "evil.txt").exists()


def test_links_inside_the_target_are_extracted(server, tmp_path, capsys):
    data = tar_bytes([file_member("a/frame.jpg", JPEG), link_member("a/latest.jpg", "frame.jpg")])
    manifest = _serve_archive(server, tmp_path, "ok.tar", data, "tar")
    rc, _, err = download([str(manifest), "--dest", str(tmp_path / "dest")], capsys)
    assert rc == 0, err
    assert (tmp_path / "dest" / "target" / "a" / "latest.jpg").read_bytes() == JPEG


@pytest.mark.parametrize("name", ["../evil.txt", "/abs_evil.txt", "a/../../evil.txt"])
def test_zip_members_that_leave_the_target_are_refused(server, tmp_path, capsys, name):
    data = plain_zip({"fine.txt": b"ok", name: b"escaped"})
    manifest = _serve_archive(server, tmp_path, "bad.zip", data, "zip")
    rc, _, err = download([str(manifest), "--dest", str(tmp_path / "dest")], capsys)
    assert rc == 2 and "refused to extract" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "dest" / "evil.txt").exists() and not (tmp_path / "evil.txt").exists()
    assert not (tmp_path / "dest" / "target" / "fine.txt").exists()


# --------------------------------------------------------------------------------------------
# the token


def _token_manifest(server, tmp_path: Path, send: str) -> Path:
    server.token, server.token_send = TOKEN, send
    data = encrypted_zip({"posetrack_data/val/000342_mpii_test.json": b'{"images": []}'}, TOKEN)
    server.files["/pt21/labels.zip"] = data
    token = {"required": True, "send": send, "name": "token" if send == "query" else "Authorization",
             "zip_password": True}
    if send == "header":
        token["format"] = "Bearer {token}"
    return write_manifest(tmp_path, [{"name": "labels.zip", "path": "labels.zip", "url": None, "size": len(data),
                                      "sha256": sha(data), "content": "zip"}], access="token", token=token,
                          extract={"format": "zip", "to": "pt21"})


@pytest.mark.parametrize("send", ["query", "header"])
def test_a_missing_token_fails_on_one_line_before_any_request(server, tmp_path, capsys, send):
    manifest = _token_manifest(server, tmp_path, send)
    rc, _, err = download([str(manifest), "--dest", str(tmp_path / "dest"), "--base-url", f"{server.base}/pt21"],
                          capsys)
    assert rc == 2 and server.count() == 0
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "--token-file" in lines[0] and dl.TOKEN_ENV in lines[0]


@pytest.mark.parametrize("send", ["query", "header"])
def test_a_wrong_token_is_refused_without_printing_it(server, tmp_path, capsys, caplog, monkeypatch, send):
    caplog.set_level(logging.DEBUG)
    manifest = _token_manifest(server, tmp_path, send)
    wrong = "Wr0ng-t0ken+/="
    monkeypatch.setenv(dl.TOKEN_ENV, wrong)
    rc, out, err = download([str(manifest), "--dest", str(tmp_path / "dest"), "--base-url",
                             f"{server.base}/pt21?mirror=eu"], capsys)
    assert rc == 2 and server.count() == 1
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "access refused (HTTP 403)" in lines[0] and "the token was refused" in lines[0]
    assert "?<redacted>" in lines[0]  # the URL is shown without its query string
    for spelling in (wrong, "Wr0ng-t0ken%2B%2F%3D", "Wr0ng-t0ken%2B/%3D"):
        assert spelling not in out + err + caplog.text
    sent = server.requests[0]
    assert (sent["query"].get("token") == [wrong]) if send == "query" else (sent["authorization"] == f"Bearer {wrong}")


def _fetch_with_the_right_token(server, tmp_path: Path, capsys) -> tuple[Path, str]:
    manifest = _token_manifest(server, tmp_path, "query")
    token_file = tmp_path / "secret" / "pt21.token"
    token_file.parent.mkdir()
    token_file.write_text(TOKEN + "\n")
    token_file.chmod(0o600)
    dest = tmp_path / "dest"
    rc, out, err = download([str(manifest), "--dest", str(dest), "--base-url", f"{server.base}/pt21",
                             "--token-file", str(token_file)], capsys)
    assert rc == 0, err
    assert (dest / "pt21" / "posetrack_data" / "val" / "000342_mpii_test.json").read_bytes() == b'{"images": []}'
    return dest, out + err


def _has_token(blob: bytes) -> bool:
    return any(s.encode() in blob for s in {TOKEN, *dl.Redactor(TOKEN)._secrets})


def test_the_right_token_opens_the_zip_and_appears_nowhere(server, tmp_path, capsys, caplog, monkeypatch):
    """Query-string token and zip password: the token is in no output, no log record, no file
    under the destination, and not in what is handed to MLflow (params, metrics, tags)."""
    from diffpose import tracking

    handed: list = []
    monkeypatch.setenv("DIFFPOSE_TRACKING", "on")
    monkeypatch.setattr(tracking.Tracker, "_start", lambda self, params, tags: handed.append((params, tags)))
    for method in ("log_params", "log_metrics", "set_tags"):
        monkeypatch.setattr(tracking.Tracker, method, lambda self, *a, **k: handed.append((a, k)))
    caplog.set_level(logging.DEBUG)
    dest, printed = _fetch_with_the_right_token(server, tmp_path, capsys)
    assert server.requests[0]["query"]["token"] == [TOKEN]  # it was sent as the manifest says
    assert len(handed) >= 3  # start, metrics, tags
    assert not _has_token((printed + caplog.text + repr(handed)).encode())
    assert not _has_token(all_bytes_under(dest))


@pytest.mark.slow
def test_the_token_is_not_in_the_mlflow_store(server, tmp_path, capsys, monkeypatch):
    """The same download tracked into a real MLflow store (slow when the store is new)."""
    monkeypatch.setenv("DIFFPOSE_TRACKING", "on")
    dest, printed = _fetch_with_the_right_token(server, tmp_path, capsys)
    assert "MLflow run" in printed
    store = Path(os.environ["MLFLOW_TRACKING_URI"].removeprefix("sqlite:///")).parent
    assert not _has_token(all_bytes_under(store) + printed.encode())


def test_a_wrong_zip_password_is_one_line_without_the_token(tmp_path, capsys, monkeypatch):
    data = encrypted_zip({"a.json": b"{}"}, TOKEN)
    (tmp_path / "usb").mkdir()
    (tmp_path / "usb" / "labels.zip").write_bytes(data)
    manifest = write_manifest(tmp_path, [{"name": "labels.zip", "path": "labels.zip", "url": None, "size": None,
                                          "sha256": None}], access="token",
                              token={"required": True, "send": "none", "zip_password": True},
                              extract={"format": "zip", "to": "pt21"})
    wrong = "not-the-token-42"
    monkeypatch.setenv(dl.TOKEN_ENV, wrong)
    rc, out, err = download([str(manifest), "--dest", str(tmp_path / "dest"), "--base-url", str(tmp_path / "usb")],
                            capsys)
    assert rc == 2 and "wrong password" in err and len(err.strip().splitlines()) == 1
    assert wrong not in out + err


def test_an_aes_zip_fails_clearly(tmp_path, capsys, monkeypatch):
    data = bytearray(plain_zip({"a.json": b"{}"}))
    central = data.index(b"PK\x01\x02")
    struct.pack_into("<HH", data, central + 8, 1, dl.AES_METHOD)  # flags (encrypted), method 99
    (tmp_path / "usb").mkdir()
    (tmp_path / "usb" / "labels.zip").write_bytes(bytes(data))
    manifest = write_manifest(tmp_path, [{"name": "labels.zip", "path": "labels.zip", "url": None, "size": None,
                                          "sha256": None}], access="token",
                              token={"required": True, "send": "none", "zip_password": True},
                              extract={"format": "zip", "to": "pt21"})
    monkeypatch.setenv(dl.TOKEN_ENV, TOKEN)
    rc, _, err = download([str(manifest), "--dest", str(tmp_path / "dest"), "--base-url", str(tmp_path / "usb")],
                          capsys)
    assert rc == 2 and "AES-encrypted" in err and "7z x" in err and TOKEN not in err


def test_a_refused_connection_names_the_url_without_the_token(tmp_path, capsys, monkeypatch):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again: nobody listens there
    manifest = write_manifest(tmp_path, [{"name": "f.bin", "path": "f.bin", "url": None, "size": None,
                                          "sha256": None}], access="token",
                              token={"required": True, "send": "query", "name": "token"})
    monkeypatch.setenv(dl.TOKEN_ENV, TOKEN)
    rc, out, err = download([str(manifest), "--dest", str(tmp_path / "dest"), "--base-url",
                             f"http://127.0.0.1:{port}/x", "--retries", "1"], capsys)
    assert rc == 2 and "giving up after 2 attempts (connection failed" in err
    assert f"at http://127.0.0.1:{port}/x/f.bin; nothing fetched" in err and len(err.strip().splitlines()) == 1
    assert not any(s in out + err for s in dl.Redactor(TOKEN)._secrets)


def test_the_token_header_is_not_forwarded_to_another_host(tmp_path):
    handler = dl._SameHostRedirects()
    handler.secret_header = "Authorization"
    import urllib.request

    req = urllib.request.Request("http://127.0.0.1/a", headers={"Authorization": "Bearer x", "Range": "bytes=5-"})
    other = handler.redirect_request(req, None, 302, "Found", {}, "http://storage.example/b")
    same = handler.redirect_request(req, None, 302, "Found", {}, "http://127.0.0.1/c")
    assert "Authorization" not in other.headers and other.headers.get("Range") == "bytes=5-"
    assert same.headers.get("Authorization") == "Bearer x"


def test_redactor_removes_every_spelling_of_the_token():
    r = dl.Redactor(TOKEN)
    url = "https://user:pw@host.example/p/file.tar?token=" + "s3cr3t-T0ken%2B%2F%3D&x=1"
    assert r.url(url) == "https://host.example/p/file.tar?<redacted>"
    assert r.text(f"a {TOKEN} b s3cr3t-T0ken%2B%2F%3D c") == "a <token> b <token> c"


def test_read_token(tmp_path, monkeypatch):
    good = tmp_path / "t"
    good.write_text(f"  {TOKEN}  \n\n")
    assert dl.read_token(good) == TOKEN
    bad = tmp_path / "two"
    bad.write_text("tok-part-1\ntok-part-2\n")
    with pytest.raises(DataError, match="on one line") as info:
        dl.read_token(bad)
    assert "tok-part" not in str(info.value)
    with pytest.raises(DataError, match="token file not found"):
        dl.read_token(tmp_path / "absent")
    monkeypatch.setenv(dl.TOKEN_ENV, f" {TOKEN} ")
    assert dl.read_token(None) == TOKEN


# --------------------------------------------------------------------------------------------
# manifests


def test_every_shipped_manifest_is_valid_and_invents_no_checksum():
    names = dl.available()
    assert {"posetrack-images", "posetrack21-annotations", "posetrack18-annotations", "posetrack17-annotations",
            "posetrack17-val-boxes", "posetrack18-val-boxes", "vitpose-h-mmpose", "vitpose-h-official"} <= set(names)
    for name in names:
        manifest = dl.load_manifest(name)
        # no checksum or size was published for any of these files: a value here would be invented
        assert all(f.sha256 is None and f.size is None for f in manifest.files), name
        for f in manifest.files:
            if f.sha256_prefix:  # only where the published file name carries it
                assert f"-{f.sha256_prefix}_" in f.name or f"-{f.sha256_prefix}." in f.name, name
    vit = dl.load_manifest("vitpose-h-mmpose").files[0]
    assert vit.url == ("https://download.openmmlab.com/mmpose/v1/body_2d_keypoint/topdown_heatmap/coco/"
                       "td-hm_ViTPose-huge_8xb64-210e_coco-256x192-e32adcd4_20230314.pth")
    assert dl.load_manifest("posetrack21-annotations").token.zip_password


@pytest.mark.parametrize("change,where", [
    (lambda m: m["files"][0].update(sha256="abc"), "files.0.sha256"),
    (lambda m: m["files"][0].update(size=-1), "files.0.size"),
    (lambda m: m.update(colour="red"), "<top level>"),
    (lambda m: m["files"][0].update(path="../up.bin"), "files.0.path"),
    (lambda m: m.update(extract={"format": "tar", "to": "/abs"}), "extract.to"),
    (lambda m: m.update(token={"required": True, "send": "query"}), "token.name"),
    (lambda m: m.update(combine={"name": "c", "size": None, "sha256": None}), "combine"),
])
def test_a_bad_manifest_names_the_key(tmp_path, change, where):
    raw = {"name": "t", "title": "t", "access": "public", "folder": "a",
           "files": [{"name": "f.bin", "url": "https://example.org/f.bin", "size": None, "sha256": None}]}
    change(raw)
    with pytest.raises(ConfigError) as info:
        dl.parse_manifest(raw, tmp_path / "t.yaml")
    assert where in str(info.value) and "\n" not in str(info.value)


def test_list_shows_every_source(tmp_path, capsys):
    rc = cli.main(["download", "--list", "--dest", str(tmp_path)])
    out = capsys.readouterr().out
    assert rc == 0
    assert all(name in out for name in dl.available()) and "missing" in out


def test_an_unknown_source_is_one_line(capsys):
    rc, _, err = download(["posetrack99"], capsys)
    assert rc == 2 and "unknown source 'posetrack99'" in err and "posetrack-images" in err


# --------------------------------------------------------------------------------------------
# end to end, on real PoseTrack18 files


def test_download_then_register_the_posetrack18_fixture(server, tmp_path, capsys, posetrack18_dir):
    """The frames as 18 tar parts and the labels as the official tar.gz layout, both served over
    HTTP, then registered: the counts are the fixture's (3 val sequences, 14 people)."""
    sequences = sorted(p.stem for p in (posetrack18_dir / "annotations" / "val").glob("*.json"))
    frames = tar_bytes([file_member(f"images/val/{s}/000000.jpg",
                                    (posetrack18_dir / "images" / "val" / s / "000000.jpg").read_bytes())
                        for s in sequences])
    labels = io.BytesIO()
    with tarfile.open(fileobj=labels, mode="w:gz") as tar:
        for s in sequences:
            tar.add(posetrack18_dir / "annotations" / "val" / f"{s}.json", f"posetrack_data/annotations/val/{s}.json")
    server.files["/pt/posetrack18_v0.45_public_labels.tar.gz"] = labels.getvalue()
    names = [f.name for f in dl.load_manifest("posetrack-images").files]
    step = -(-len(frames) // len(names))
    for i, name in enumerate(names):
        server.files[f"/pt/{name}"] = frames[i * step:(i + 1) * step]
    dest = tmp_path / "real"
    for source in ("posetrack-images", "posetrack18-annotations"):
        rc, _, err = download([source, "--dest", str(dest), "--base-url", f"{server.base}/pt"], capsys)
        assert rc == 0, err
    record = tmp_path / "pt18.json"
    rc = cli.main(["register", "--dataset", "posetrack18", "--root", str(dest / "posetrack"), "--splits", "val",
                   "--out", str(record), "--no-progress"])
    assert rc == 0, capsys.readouterr().err
    val = json.loads(record.read_text())["splits"]["val"]
    assert (val["sequences"], val["labelled_frames"], val["persons"]) == (3, 3, 14)
    assert val["annotations"] == str(dest / "posetrack" / "posetrack_data" / "annotations" / "val")
