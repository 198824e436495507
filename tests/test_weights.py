"""Weight files: local override, cache, download with sha256, clear offline errors."""

from __future__ import annotations

import hashlib

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
    assert sorted(default_files()) == sorted(n for n in WEIGHT_FILES if n.endswith("_trial0.pth"))


def test_table_needs_no_imports_of_the_modules_that_use_it():
    """Registered without import side effects: the table is complete before any loss or flow module loads."""
    import subprocess
    import sys

    code = ("import sys; from genloss.hub import WEIGHT_FILES; n = len(WEIGHT_FILES); "
            "assert not any(m.startswith(('genloss.losses', 'genloss.corrwise', 'genloss.data', 'torchvision')) "
            "for m in sys.modules), sorted(sys.modules); print(n)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert int(out.stdout) == len(W.WEIGHT_FILES)
