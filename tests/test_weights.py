"""Weight files: local override, cache, download with sha256, clear offline errors."""

from __future__ import annotations

import hashlib
import http.server
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import genloss
from genloss import weights as W


@pytest.fixture
def fake_file(tmp_path):
    """A weight file that the test writes, served through a file:// URL (the real download code path)."""
    src = tmp_path / "origin" / "tiny_weights.pth"
    src.parent.mkdir()
    torch.save({"a": torch.arange(4.0)}, src)
    sha = hashlib.sha256(src.read_bytes()).hexdigest()
    spec = W.WeightFile("tiny_weights.pth", src.as_uri(), sha, "a test file")
    return spec, src


def test_download_verifies_hash_and_caches(fake_file, monkeypatch):
    spec, src = fake_file
    monkeypatch.setenv("GENLOSS_OFFLINE", "0")
    path = W.resolve(spec, progress=False)
    assert path.parent == W.cache_dir() and path.read_bytes() == src.read_bytes()
    src.unlink()  # now only the cache has it
    assert W.resolve(spec) == path
    assert torch.equal(W.load_state_dict(spec)["a"], torch.arange(4.0))


def test_torchvision_files_are_read_from_torch_hub_but_downloaded_into_the_genloss_cache(fake_file, tmp_path,
                                                                                         monkeypatch):
    """What the demo's help and the docs say: a backbone missing everywhere goes into genloss' cache."""
    from dataclasses import replace

    spec, src = fake_file
    spec = replace(spec, torch_hub=True)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("GENLOSS_OFFLINE", "0")
    path = W.resolve(spec, progress=False)
    assert path == W.cache_dir() / spec.name and not (tmp_path / "torch").exists()
    hub = tmp_path / "torch" / "hub" / "checkpoints"
    hub.mkdir(parents=True)
    path.rename(hub / spec.name)
    assert W.resolve(spec) == hub / spec.name  # torch's own copy is used where it is


def test_download_with_wrong_hash_leaves_nothing(fake_file, monkeypatch):
    spec, _ = fake_file
    monkeypatch.setenv("GENLOSS_OFFLINE", "0")
    bad = W.WeightFile(spec.name, spec.url, "0" * 64, "wrong hash")
    with pytest.raises(W.WeightsUnavailableError, match="sha256"):
        W.download(bad, progress=False)
    assert not any(W.cache_dir().iterdir())


def test_offline_error_says_what_to_download_and_where(monkeypatch):
    with pytest.raises(W.WeightsUnavailableError) as err:
        W.resolve("rgb_watson_dct_trial0.pth")
    msg = str(err.value)
    assert "rgb_watson_dct_trial0.pth" in msg and "https://github.com/SteffenCzolbe/PerceptualSimilarity" in msg
    assert str(W.cache_dir()) in msg and "GENLOSS_WEIGHTS_DIR" in msg
    with pytest.raises(W.WeightsUnavailableError):
        genloss.get_loss("Watson-DCT", pretrained=True)


def test_offline_download_creates_no_folder(fake_file, tmp_path):
    spec, _ = fake_file
    dest = tmp_path / "not-yet"
    with pytest.raises(W.WeightsUnavailableError, match="GENLOSS_OFFLINE"):
        W.download(spec, dest_dir=dest, progress=False)
    assert not dest.exists()


def test_unreachable_url_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("GENLOSS_OFFLINE", "0")
    spec = W.WeightFile("nothing.pth", (tmp_path / "missing.pth").as_uri(), None, "missing")
    with pytest.raises(W.WeightsUnavailableError, match="could not be downloaded"):
        W.download(spec, progress=False)


def test_local_override_argument_and_env(fake_file, tmp_path, monkeypatch):
    spec, src = fake_file
    assert W.find_local(spec, weights_dir=src.parent) == src
    monkeypatch.setenv("GENLOSS_WEIGHTS_DIR", str(src.parent))
    assert W.find_local(spec) == src


def test_corrupt_local_file_is_rejected(fake_file, tmp_path):
    spec, src = fake_file
    other = tmp_path / "other"
    other.mkdir()
    (other / spec.name).write_bytes(b"not the file")
    with pytest.raises(W.ChecksumError, match="sha256"):
        W.find_local(spec, weights_dir=other)


def test_reference_weights_match_their_hashes(reference_weights):
    """Every file of shared/reference-weights is in the table, and verifies against the table's hash."""
    shipped = sorted(p.name for p in reference_weights.iterdir() if p.name != "SHA256SUMS")
    assert set(shipped) <= set(W.WEIGHT_FILES)
    assert all(W.WEIGHT_FILES[n].sha256 for n in shipped)
    status = W.status(shipped)
    assert all(p is not None for p in status.values()), status


def test_the_table_describes_every_file_once_with_hash_or_reason():
    """One table: every file has a URL, a size, a user and a source, and a sha256 or a stated reason."""
    from genloss.hub import WEIGHT_FILES, default_files

    for name, f in WEIGHT_FILES.items():
        assert f.name == name and f.url.startswith(("https://", "http://")), name
        assert f.used_by and f.source and f.description, name
        assert f.sha256 or f.hash_note, f"{name}: no sha256 and no reason"
        assert f.size_text != "?", f"{name}: no size"
    for needed in ("vgg16-397923af.pth", "squeezenet1_1-b8a52dc0.pth", "raft_large_C_T_V1-22a6c225.pth",
                   "raft_small_C_T_V1-ad48884c.pth", "raft-things.pth", "pwc-default.pytorch", "bg.png", "car.png",
                   "rgb_watson_vgg_trial0.pth", "gray_watson_vgg_trial0.pth"):
        assert needed in WEIGHT_FILES
    # the published tuned weights; Watson-VGG's files are not published (not in the authors' repository)
    assert sorted(default_files()) == sorted(n for n in WEIGHT_FILES if n.endswith("_trial0.pth")
                                             and "watson_vgg" not in n)


def test_table_needs_no_imports_of_the_modules_that_use_it():
    """Registered without import side effects: the table is complete before any loss or flow module loads."""
    import subprocess
    import sys

    code = ("import sys; from genloss.hub import WEIGHT_FILES; n = len(WEIGHT_FILES); "
            "assert not any(m.startswith(('genloss.losses', 'genloss.corrwise', 'genloss.data', 'torchvision')) "
            "for m in sys.modules), sorted(sys.modules); print(n)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert int(out.stdout) == len(W.WEIGHT_FILES)


# ------------------------------------------------------------------------------------------------
# downloads under faults: a real HTTP server on 127.0.0.1 that cuts, stalls and chunks
# ------------------------------------------------------------------------------------------------
PAYLOAD = bytes(range(256)) * 64  # 16 KiB


class _FaultyHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # chunked transfer encoding needs HTTP/1.1
    hits: list[str] = []

    def do_GET(self):  # noqa: N802 - http.server's naming
        type(self).hits.append(self.path)
        kind = self.path.strip("/").split("/")[0]
        self.send_response(200)
        if kind.startswith("chunked"):
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            body = PAYLOAD if kind == "chunked" else PAYLOAD[: len(PAYLOAD) // 2]
            for i in range(0, len(body), 4096):
                part = body[i : i + 4096]
                self.wfile.write(f"{len(part):x}\r\n".encode() + part + b"\r\n")
            if kind == "chunked":
                self.wfile.write(b"0\r\n\r\n")  # the last chunk; "chunked-cut" closes without it
        else:
            self.send_header("Content-Length", str(len(PAYLOAD)))
            self.end_headers()
            if kind == "short":
                self.wfile.write(PAYLOAD[:5000])  # the connection drops mid-way
            elif kind == "stall":
                self.wfile.write(PAYLOAD[:5000])
                self.wfile.flush()
                time.sleep(3)  # longer than the client's timeout
            elif kind == "slow":
                for i in range(0, len(PAYLOAD), 2048):
                    self.wfile.write(PAYLOAD[i : i + 2048])
                    self.wfile.flush()
                    time.sleep(0.15)
            else:
                self.wfile.write(PAYLOAD)
        self.close_connection = True

    def log_message(self, *args):  # keep test output clean
        pass


@pytest.fixture
def faulty_server():
    _FaultyHandler.hits = []
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _FaultyHandler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def _no_hash(url: str, *mirrors: str) -> W.WeightFile:
    return W.WeightFile("payload.bin", url, None, "a file without a published sha256", mirrors=tuple(mirrors))


@pytest.mark.parametrize("fault", ["short", "chunked-cut", "stall"])
def test_cut_or_stalled_download_is_an_error_and_leaves_nothing(faulty_server, tmp_path, monkeypatch, fault):
    monkeypatch.setenv("GENLOSS_OFFLINE", "0")
    with pytest.raises(W.WeightsUnavailableError, match=f"/{fault}/payload.bin") as err:
        W.download(_no_hash(f"{faulty_server}/{fault}/payload.bin"), dest_dir=tmp_path, progress=False,
                   timeout=0.5)
    assert {"short": "5000 of 16384", "chunked-cut": "IncompleteRead", "stall": "timed out"}[fault] in str(err.value)
    assert list(tmp_path.iterdir()) == []  # no partial file, no lock, nothing a later run could trust
    assert W.find_local(_no_hash("unused"), tmp_path) is None


def test_next_mirror_is_tried_after_a_cut_reply(faulty_server, tmp_path, monkeypatch):
    monkeypatch.setenv("GENLOSS_OFFLINE", "0")
    spec = _no_hash(f"{faulty_server}/short/payload.bin", f"{faulty_server}/chunked-cut/payload.bin",
                    f"{faulty_server}/chunked/payload.bin")
    path = W.download(spec, dest_dir=tmp_path, progress=False, timeout=2)
    assert path.read_bytes() == PAYLOAD
    assert _FaultyHandler.hits == ["/short/payload.bin", "/chunked-cut/payload.bin", "/chunked/payload.bin"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["payload.bin"]


def test_two_processes_downloading_the_same_file_get_one_intact_copy(faulty_server, tmp_path):
    # resolve: as a loss does it, use the file when present, else download it into the cache
    code = ("import sys; import genloss.weights as W; "
            "W.resolve(W.WeightFile('payload.bin', sys.argv[1], None, ''), progress=False)")
    env = {**os.environ, "GENLOSS_OFFLINE": "0", "GENLOSS_CACHE_DIR": str(tmp_path),
           "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[1] / "src"),
                                          os.environ.get("PYTHONPATH", "")])}
    module = Path(W.__file__)
    procs = [subprocess.Popen([sys.executable, "-c", code, f"{faulty_server}/slow/payload.bin", str(module)],
                              env=env, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    for p in procs:
        _, stderr = p.communicate(timeout=120)
        assert p.returncode == 0, stderr
    assert (tmp_path / "payload.bin").read_bytes() == PAYLOAD
    assert sorted(p.name for p in tmp_path.iterdir()) == ["payload.bin"]
    # the second process waited for the first one's download instead of fetching it again
    assert _FaultyHandler.hits == ["/slow/payload.bin"]


@pytest.mark.parametrize("damage", [b"", b"PK\x03\x04 truncated zip", "half"])
def test_corrupted_spline_cache_is_recomputed_not_fatal(tmp_path, monkeypatch, damage):
    from genloss.losses import robust

    monkeypatch.setenv("GENLOSS_CACHE_DIR", str(tmp_path))
    robust.genloss_partition_spline.cache_clear()
    try:
        good = robust.genloss_partition_spline()
        path = tmp_path / f"log_partition_spline_{robust.NUM_KNOTS}.npz"
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2] if damage == "half" else damage)
        robust.genloss_partition_spline.cache_clear()
        again = robust.genloss_partition_spline()  # no exception: the damaged cache is recomputed
        np.testing.assert_array_equal(again.values, good.values)
        assert path.read_bytes() == data  # and rewritten
        assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]
    finally:
        robust.genloss_partition_spline.cache_clear()


def test_a_weights_dir_that_does_not_exist_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="weights_dir .*nope.* is not a folder"):
        W.find_local("rgb_watson_dct_trial0.pth", weights_dir=tmp_path / "nope")


def test_an_unpublished_file_is_never_offered_as_a_download():
    """Watson-VGG's tuned files are not in the authors' repository: the messages say where a copy must go."""
    from genloss.hub import WEIGHT_FILES, default_files, published_files

    unpublished = sorted(n for n, f in WEIGHT_FILES.items() if not f.published)
    assert unpublished == ["gray_watson_vgg_trial0.pth", "rgb_watson_vgg_trial0.pth"]
    assert not set(unpublished) & (set(default_files()) | set(published_files()))
    with pytest.raises(W.WeightsUnavailableError) as info:
        W.resolve("rgb_watson_vgg_trial0.pth")
    message = str(info.value)
    assert "not published" in message and "a copy from the authors" in message
    assert "genloss weights download" not in message and "Download it from" not in message
    note = W.missing_note(["rgb_watson_vgg_trial0.pth", "vgg16-397923af.pth"], ["vgg16-397923af.pth"])
    assert "`genloss weights download vgg16-397923af.pth`" in note and "download rgb_watson_vgg" not in note
    assert "rgb_watson_vgg_trial0.pth is not published" in note and "a copy from the authors" in note
    assert "genloss weights download" not in W.missing_note(["gray_watson_vgg_trial0.pth"])


def test_atomic_writes_give_the_usual_mode_and_leave_nothing_on_failure(tmp_path):
    from genloss import _files

    umask = os.umask(0o022)
    try:
        path = _files.write_text(tmp_path / "sub" / "a.txt", "one")
        assert path.read_text() == "one" and path.stat().st_mode & 0o777 == 0o644
        path.chmod(0o640)
        _files.write_text(path, "two")
        assert path.read_text() == "two" and path.stat().st_mode & 0o777 == 0o640
        with pytest.raises(RuntimeError), _files.atomic_write(path, "wb", fsync=True) as fh:
            fh.write(b"half")
            raise RuntimeError("interrupted")
        assert path.read_text() == "two" and sorted(p.name for p in path.parent.iterdir()) == ["a.txt"]
    finally:
        os.umask(umask)
