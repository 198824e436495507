"""BAPPS 2AFC data: resumable download, safe extraction, layout checks and the triplet loader."""

from __future__ import annotations

import http.server
import io
import tarfile
import threading
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
    """Serves one payload, honouring ``Range: bytes=N-``; can cut the first response short."""

    payload = b""
    cut_first_at: int | None = None
    requests: list[str | None] = []

    def do_GET(self):  # noqa: N802 - http.server's naming
        rng = self.headers.get("Range")
        type(self).requests.append(rng)
        start = int(rng.split("=")[1].rstrip("-")) if rng else 0
        body = self.payload[start:]
        self.send_response(206 if rng else 200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        cut = type(self).cut_first_at
        if cut is not None:
            type(self).cut_first_at = None
            self.wfile.write(body[:cut])  # the connection drops mid-way
            return
        self.wfile.write(body)

    def log_message(self, *args):  # keep test output clean
        pass


@pytest.fixture
def server():
    _RangeHandler.requests = []
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
