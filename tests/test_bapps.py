"""BAPPS 2AFC data: resumable download, safe extraction, layout checks and the triplet loader."""

from __future__ import annotations

import http.server
import io
import os
import subprocess
import sys
import tarfile
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from genloss.data.bapps import (
    BAPPS_CATEGORIES,
    BAPPS_URLS,
    BAPPSError,
    TwoAFCDataset,
    download_bapps,
    download_file,
    extract_archive,
    list_triplets,
    make_synthetic_bapps,
    normalize_category,
    verify_bapps,
)


class _RangeHandler(http.server.BaseHTTPRequestHandler):
    """Serves one payload as a real server does: ``Range: bytes=N-`` gets a 206 with ``Content-Range``,
    a range past the end a 416 with ``Content-Range: bytes */size``. It can cut the first response
    short, send it chunked (and cut), or send slowly."""

    protocol_version = "HTTP/1.1"
    payload = b""
    cut_first_at: int | None = None
    chunked = False
    delay = 0.0
    requests: list[str | None] = []

    def do_GET(self):  # noqa: N802 - http.server's naming
        rng = self.headers.get("Range")
        type(self).requests.append(rng)
        start = int(rng.split("=")[1].rstrip("-")) if rng else 0
        size = len(self.payload)
        self.close_connection = True
        if start >= size and rng:
            self.send_response(416)
            self.send_header("Content-Range", f"bytes */{size}")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        body = self.payload[start:]
        self.send_response(206 if rng else 200)
        if rng:
            self.send_header("Content-Range", f"bytes {start}-{size - 1}/{size}")
        cls = type(self)
        cut, cls.cut_first_at = cls.cut_first_at, None
        if cls.chunked:
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            sent = body[:cut] if cut is not None else body
            for i in range(0, len(sent), 4096):
                self.wfile.write(f"{len(sent[i:i + 4096]):x}\r\n".encode() + sent[i:i + 4096] + b"\r\n")
            if cut is None:
                self.wfile.write(b"0\r\n\r\n")
            return
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if cut is not None:
            self.wfile.write(body[:cut])  # the connection drops mid-way
            return
        for i in range(0, len(body), 8192):
            self.wfile.write(body[i:i + 8192])
            if cls.delay:
                self.wfile.flush()
                time.sleep(cls.delay)

    def log_message(self, *args):  # keep test output clean
        pass


@pytest.fixture
def server():
    _RangeHandler.requests = []
    _RangeHandler.chunked, _RangeHandler.delay, _RangeHandler.cut_first_at = False, 0.0, None
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _RangeHandler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def _tar_of(folder: Path, arcroot: str) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        tar.add(folder, arcname=arcroot)
    return buf.getvalue()


def test_urls_are_the_official_archives():
    assert BAPPS_URLS["val"].endswith("/2018_perceptual/dataset/twoafc_val.tar.gz")
    assert BAPPS_URLS["train"].endswith("/2018_perceptual/dataset/twoafc_train.tar.gz")
    assert set(BAPPS_CATEGORIES["val"]) == {"traditional", "cnn", "superres", "deblur", "frameinterp", "color"}
    assert normalize_category("val/colorization") == "val/color"


def test_interrupted_download_resumes_with_range(server, tmp_path):
    _RangeHandler.payload = bytes(range(256)) * 400
    _RangeHandler.cut_first_at = 30_000
    dest = tmp_path / "a.bin"
    with pytest.raises(BAPPSError, match="resume"):
        download_file(server + "/a.bin", dest, progress=False, chunk_size=4096)
    part = tmp_path / "a.bin.part"
    assert part.stat().st_size == 30_000 and not dest.exists()
    download_file(server + "/a.bin", dest, progress=False)
    assert dest.read_bytes() == _RangeHandler.payload
    assert _RangeHandler.requests == [None, "bytes=30000-"]


def test_download_error_names_url_and_destination(tmp_path):
    with pytest.raises(BAPPSError, match="download it by hand"):
        download_file("http://127.0.0.1:9/nothing.tar.gz", tmp_path / "x.tar.gz", progress=False, timeout=2)


def test_download_bapps_extracts_and_verifies(server, tmp_path):
    src = tmp_path / "src"
    make_synthetic_bapps(src, {f"val/{c}": 2 for c in BAPPS_CATEGORIES["val"]}, size=8)
    _RangeHandler.payload = _tar_of(src / "val", "val")
    out = download_bapps(tmp_path / "data", ["val"], urls={"val": server + "/twoafc_val.tar.gz"}, progress=False)
    assert out == tmp_path / "data" / "2afc"
    assert verify_bapps(out, ["val"]) == {f"val/{c}": 2 for c in BAPPS_CATEGORIES["val"]}
    assert not (tmp_path / "data" / "twoafc_val.tar.gz").exists()  # archive removed after extraction
    # a second call finds the data and does not download again
    n = len(_RangeHandler.requests)
    download_bapps(tmp_path / "data", ["val"], urls={"val": server + "/gone.tar.gz"}, progress=False)
    assert len(_RangeHandler.requests) == n


def test_extraction_refuses_paths_outside_the_target(tmp_path):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        info = tarfile.TarInfo("../evil.txt")
        info.size = 3
        tar.addfile(info, io.BytesIO(b"bad"))
    archive = tmp_path / "evil.tar.gz"
    archive.write_bytes(buf.getvalue())
    with pytest.raises(BAPPSError, match="outside"):
        extract_archive(archive, tmp_path / "out", progress=False)
    assert not (tmp_path / "evil.txt").exists()


def test_malformed_folders_are_reported(tmp_path):
    make_synthetic_bapps(tmp_path, {"val/cnn": 3}, size=8)
    (tmp_path / "val/cnn/p1/000001.png").unlink()
    with pytest.raises(BAPPSError, match="p1.*missing \\['000001'\\]"):
        list_triplets(tmp_path / "val/cnn")
    with pytest.raises(BAPPSError, match="does not exist"):
        TwoAFCDataset(tmp_path / "nope")
    np.save(tmp_path / "val/cnn/judge/000000.npy", np.array([1.5]))
    (tmp_path / "val/cnn/p1/000001.png").write_bytes((tmp_path / "val/cnn/p1/000000.png").read_bytes())
    with pytest.raises(BAPPSError, match="fraction"):
        TwoAFCDataset(tmp_path, ["val/cnn"])[0]


def test_loader_pairs_files_by_name_and_resizes(tmp_path):
    make_synthetic_bapps(tmp_path, {"val/cnn": 3, "val/color": 2}, size=16, seed=3)
    ds = TwoAFCDataset(tmp_path, ["cnn", "colorization"], split="val", load_size=32)
    assert len(ds) == 5 and ds.categories == ["val/cnn", "val/color"]
    item = ds[4]
    assert item["category"] == "val/color"
    for k in ("ref", "p0", "p1"):
        assert item[k].shape == (3, 32, 32) and item[k].dtype == torch.float32
        assert 0.0 <= float(item[k].min()) and float(item[k].max()) <= 1.0
    stored = float(np.load(tmp_path / "val/color/judge/000001.npy")[0])
    assert float(item["judge"]) == pytest.approx(stored)
    native = TwoAFCDataset(tmp_path, ["val/cnn"], load_size=None)[0]
    assert native["ref"].shape == (3, 16, 16)


def test_synthetic_judgments_follow_distortion_strength(tmp_path):
    """Same-kind pairs: the raters prefer the weaker distortion, so the judgment tracks pixel error."""
    make_synthetic_bapps(tmp_path, {"val/traditional": 40}, size=16, seed=0)
    ds = TwoAFCDataset(tmp_path, ["val/traditional"], load_size=None)
    err = []
    judge = []
    for item in ds:
        e0 = (item["p0"] - item["ref"]).abs().mean()
        e1 = (item["p1"] - item["ref"]).abs().mean()
        err.append(float(e0 - e1))
        judge.append(float(item["judge"]))
    # p1 less distorted (e0 > e1) -> raters prefer p1 (judge > 0.5)
    corr = np.corrcoef(err, judge)[0, 1]
    assert corr > 0.5
    assert set(np.round(np.array(judge) * 5, 6)) <= {0, 1, 2, 3, 4, 5}  # five raters


def test_stale_partial_file_larger_than_the_remote_one_is_discarded(server, tmp_path):
    _RangeHandler.payload = bytes(range(256)) * 40
    dest = tmp_path / "a.bin"
    (tmp_path / "a.bin.part").write_bytes(b"x" * (len(_RangeHandler.payload) + 100))  # from another file
    assert download_file(server + "/a.bin", dest, progress=False).read_bytes() == _RangeHandler.payload
    assert _RangeHandler.requests == [f"bytes={len(_RangeHandler.payload) + 100}-", None]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.bin"]


def test_complete_partial_file_is_taken_on_416(server, tmp_path):
    _RangeHandler.payload = bytes(range(256)) * 40
    (tmp_path / "a.bin.part").write_bytes(_RangeHandler.payload)
    assert download_file(server + "/a.bin", tmp_path / "a.bin", progress=False).read_bytes() == _RangeHandler.payload
    assert _RangeHandler.requests == [f"bytes={len(_RangeHandler.payload)}-"]


def test_cut_chunked_reply_is_an_error_and_then_resumes(server, tmp_path):
    _RangeHandler.payload = bytes(range(256)) * 400
    _RangeHandler.chunked, _RangeHandler.cut_first_at = True, 40_000
    dest = tmp_path / "a.bin"
    with pytest.raises(BAPPSError, match="broke off .* run again to resume"):
        download_file(server + "/a.bin", dest, progress=False, chunk_size=4096)
    kept = (tmp_path / "a.bin.part").stat().st_size  # whole chunks received (a cut read keeps nothing)
    assert not dest.exists() and 0 < kept <= 40_000
    assert download_file(server + "/a.bin", dest, progress=False).read_bytes() == _RangeHandler.payload
    assert _RangeHandler.requests == [None, f"bytes={kept}-"]


def test_stalled_download_is_an_error(server, tmp_path):
    _RangeHandler.payload = bytes(range(256)) * 400
    _RangeHandler.delay = 2.0
    with pytest.raises(BAPPSError, match="timed out"):
        download_file(server + "/a.bin", tmp_path / "a.bin", progress=False, timeout=0.5)
    assert not (tmp_path / "a.bin").exists()


def test_truncated_archive_is_never_kept_and_the_next_run_downloads_again(server, tmp_path):
    src = tmp_path / "src"
    make_synthetic_bapps(src, {f"val/{c}": 2 for c in BAPPS_CATEGORIES["val"]}, size=8)
    good = _tar_of(src / "val", "val")
    _RangeHandler.payload = good[: len(good) // 2]  # the server itself serves a cut archive
    urls = {"val": server + "/twoafc_val.tar.gz"}
    archive = tmp_path / "data" / "twoafc_val.tar.gz"
    with pytest.raises(BAPPSError, match="twoafc_val.tar.gz is truncated or corrupt.*download it anew"):
        download_bapps(tmp_path / "data", ["val"], urls=urls, progress=False)
    assert not archive.exists() and not archive.with_name(archive.name + ".part").exists()
    _RangeHandler.payload = good
    out = download_bapps(tmp_path / "data", ["val"], urls=urls, progress=False)
    assert verify_bapps(out, ["val"]) == {f"val/{c}": 2 for c in BAPPS_CATEGORIES["val"]}
    assert _RangeHandler.requests == [None, None]


def test_two_processes_downloading_the_same_archive_share_one_download(server, tmp_path):
    _RangeHandler.payload = os.urandom(64 * 1024)
    _RangeHandler.delay = 0.15  # 8 blocks: ~1.2 s, so the two processes overlap
    code = ("import sys; from genloss.data.bapps import download_file; "
            "download_file(sys.argv[1], sys.argv[2], progress=False)")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[1] / "src"),
                                                        os.environ.get("PYTHONPATH", "")])}
    dest = tmp_path / "a.bin"
    procs = [subprocess.Popen([sys.executable, "-c", code, server + "/a.bin", str(dest)], env=env,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    for p in procs:
        _, stderr = p.communicate(timeout=120)
        assert p.returncode == 0, stderr
    assert dest.read_bytes() == _RangeHandler.payload
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.bin"]
    assert _RangeHandler.requests == [None]  # the second process used the first one's file
