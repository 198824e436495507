"""The one table of every file genloss can download: tuned weights, backbones, flow checkpoints, assets.

Each file is described once here (name, URLs, sha256 or why there is none, size, what uses it, where
it comes from) and resolved by one code path, :func:`genloss.weights.resolve` (local folder, then
cache, then download with a progress bar, a size check and the hash check). Nothing registers files
at import time: a module that needs a file looks it up here by name.

``default=True`` marks the small tuned weights that ``genloss weights download`` fetches without
arguments; the large files (ImageNet backbones, flow networks, toy assets) are fetched by name or
with ``--all``. ``published=False`` marks files that their authors never published (Watson-VGG's
tuned weights): their URL is where the paper's code expects them, so a download is expected to fail,
and they are left out of both; a copy from the authors goes into a weights folder.
"""

from __future__ import annotations

from dataclasses import dataclass

_PERCEPTUAL = "https://github.com/SteffenCzolbe/PerceptualSimilarity/raw/master/src/loss/weights/"
_BARRON = "https://github.com/jonbarron/robust_loss_pytorch/raw/master/robust_loss_pytorch/resources/"
_TORCHVISION = "https://download.pytorch.org/models/"
_SNIKLAUS = "http://content.sniklaus.com/github/pytorch-pwc/"
_CORRWISE_ASSETS = "https://github.com/dangeng/CorrWiseLosses/raw/main/code/assets/"

#: why a file has no sha256 in the table
NO_HASH_PAPER = "no published sha256 (the paper's repository does not list hashes for these files)"
NO_HASH_TORCHVISION = "torchvision publishes only the leading hex digits of the sha256, in the file name (checked)"
NO_HASH_THIRD_PARTY = "no published sha256 (third-party mirror)"


@dataclass(frozen=True)
class WeightFile:
    """One downloadable file.

    Attributes:
        name: the local file name (in weight folders and the cache).
        url: the primary public URL.
        sha256: the full hex sha256, or ``None`` when none is published (see ``hash_note``).
        description: what the file holds.
        mirrors: further public URLs, tried in order when ``url`` fails.
        size: exact size in bytes when known (a download of another size is rejected), else ``None``.
        size_hint: approximate size for people (e.g. ``"528 MB"``), shown before downloads.
        used_by: what uses the file (a loss, a flow estimator, an experiment).
        source: who published it (paper repository, torchvision, ...).
        sha256_prefix: leading hex digits of the sha256 published in the file name (torch.hub's
            convention), checked when ``sha256`` is unknown.
        hash_note: why ``sha256`` is ``None``.
        default: fetched by ``genloss weights download`` without arguments (the small tuned weights).
        torch_hub: torchvision's own cache (``$TORCH_HOME/hub/checkpoints``) may hold it as well.
        published: ``False`` for a file that is not at any public URL (``url`` is where the paper's
            code expects it): never fetched by default or by ``--all``; its messages say to put a copy
            from the authors into a weights folder instead of to download it.
    """

    name: str
    url: str
    sha256: str | None
    description: str = ""
    mirrors: tuple[str, ...] = ()
    size: int | None = None
    size_hint: str = ""
    used_by: str = ""
    source: str = ""
    sha256_prefix: str | None = None
    hash_note: str = ""
    default: bool = False
    torch_hub: bool = False
    published: bool = True

    @property
    def urls(self) -> tuple[str, ...]:
        """The primary URL followed by the mirrors."""
        return (self.url, *self.mirrors)

    @property
    def size_text(self) -> str:
        """The size for people: exact when known, else the hint, else ``'?'``."""
        if self.size is not None:
            return human_size(self.size)
        return self.size_hint or "?"


def human_size(n: float) -> str:
    """Bytes in binary units with the customary labels (as torchvision's and the README's "528 MB")."""
    for unit in ("B", "kB", "MB"):
        if n < 1024:
            return f"{n:.0f} {unit}" if unit == "B" or n >= 100 else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GB"


def _tuned(stem: str, cs: str, sha: str | None, size: int | None, used_by: str, what: str,
           size_hint: str = "", published: bool = True) -> WeightFile:
    prefix = "rgb" if cs == "RGB" else "gray"
    name = f"{prefix}_{stem}_trial0.pth"
    colour = "RGB" if cs == "RGB" else "greyscale"
    return WeightFile(
        name, _PERCEPTUAL + name, sha, f"{what}, {colour}, tuned on BAPPS 2AFC", size=size,
        used_by=f"{used_by} (colorspace={cs!r})", source="Czolbe et al. 2020, SteffenCzolbe/PerceptualSimilarity",
        hash_note="" if sha else NO_HASH_PAPER, default=published, size_hint=size_hint, published=published,
    )


_FILES = [
    _tuned("watson_dct", "RGB", "bde40e0bc1912060da45b4487df660450ba91fa44c031f22a144c661d99488ef", 4326,
           "WatsonDCT / Watson-DCT", "Watson-DCT"),
    _tuned("watson_dct", "LA", "6401e9d3a430ac5dac691f93f1b9b61562ce13457a26b4dcb87eea39c5ea7ff4", 1489,
           "WatsonDCT / Watson-DCT", "Watson-DCT"),
    _tuned("watson_fft", "RGB", "98386c0e0841fc346ab4c7d296788ed0af81f2ca8866a885be4405d03321a717", 3771,
           "WatsonDFT / Watson-DFT", "Watson-DFT"),
    _tuned("watson_fft", "LA", "74fda350525e4660671bc957944d6e9773b3989effc5aa9d2b73eccd5943584e", 1304,
           "WatsonDFT / Watson-DFT", "Watson-DFT"),
    # Not in the authors' published repository (its src/loss/weights holds the other ten tuned files), so
    # this URL is where their provider expects it, not a known download (published=False: not fetched by
    # default or by --all). The provider loads it with a strict load_state_dict of WatsonDistanceVgg, so it
    # holds the VGG16 conv layers it was tuned with (14.7 M float32 values, ~56 MB) beside the 1477 Watson
    # parameters.
    _tuned("watson_vgg", "RGB", None, None, "WatsonVGG / Watson-VGG", "Watson-VGG", size_hint="~56 MB",
           published=False),
    _tuned("watson_vgg", "LA", None, None, "WatsonVGG / Watson-VGG", "Watson-VGG", size_hint="~56 MB",
           published=False),
    _tuned("adaptive", "RGB", "3b2d5d28b8468f5e1d119f1fa709199b6c645dc7f58538d939ebc27287fb95d4", 98984,
           "AdaptiveLoss / Adaptive", "Adaptive robust loss, 64x64"),
    _tuned("adaptive", "LA", "db9673847841ebdfa130f9d861e6e8a27426cc4f88e5f8b702639eda7a089667", 98984,
           "AdaptiveLoss / Adaptive", "Adaptive robust loss, 64x64"),
    _tuned("pnet_lin_vgg", "RGB", "df4bad76bf9d8bca8466f4e34adc12289dbce25c6e040cba3a5152c24cdf3682", 7297,
           "DeepLoss('vgg') / Deeploss-VGG", "Deeploss-VGG linear layers"),
    _tuned("pnet_lin_vgg", "LA", "bbf8ea727bac61aaaefba7fae63a10547c03d4cd5b81a7ba05d8003a1ca96788", 7297,
           "DeepLoss('vgg') / Deeploss-VGG", "Deeploss-VGG linear layers"),
    _tuned("pnet_lin_squeeze", "RGB", "7f4c84e909231e6eb253f55f8484e5895c2044178fe3316912ef4ebd50dc7b14", 10811,
           "DeepLoss('squeeze') / Deeploss-Squeeze", "Deeploss-Squeeze linear layers"),
    _tuned("pnet_lin_squeeze", "LA", "09edfe8565911f6c275646e1a5a5a04a17997e8175bb79bbc10c6ca3e87e602a", 10811,
           "DeepLoss('squeeze') / Deeploss-Squeeze", "Deeploss-Squeeze linear layers"),
    WeightFile(
        "partition_spline.npz", _BARRON + "partition_spline.npz",
        "e60b3f3f55ee53bd72da29dc6ffd8e43024574aff03bf7d0dccc6dc60d78de10",
        "Barron's spline of the robust loss' log partition function (optional: genloss computes its own)",
        size=197188, used_by="AdaptiveLoss(partition='barron')", source="Barron 2019, jonbarron/robust_loss_pytorch",
    ),
    WeightFile(
        "vgg16-397923af.pth", _TORCHVISION + "vgg16-397923af.pth", None,
        "VGG16 ImageNet weights (torchvision IMAGENET1K_V1)", size=553433881, size_hint="528 MB",
        used_by="DeepLoss('vgg') / Deeploss-VGG, WatsonVGG / Watson-VGG", source="torchvision",
        sha256_prefix="397923af", hash_note=NO_HASH_TORCHVISION, torch_hub=True,
    ),
    WeightFile(
        "squeezenet1_1-b8a52dc0.pth", _TORCHVISION + "squeezenet1_1-b8a52dc0.pth", None,
        "SqueezeNet 1.1 ImageNet weights (torchvision IMAGENET1K_V1)", size_hint="4.7 MB",
        used_by="DeepLoss('squeeze') / Deeploss-Squeeze", source="torchvision",
        sha256_prefix="b8a52dc0", hash_note=NO_HASH_TORCHVISION, torch_hub=True,
    ),
    WeightFile(
        "raft_large_C_T_V1-22a6c225.pth", _TORCHVISION + "raft_large_C_T_V1-22a6c225.pth", None,
        "RAFT (large) trained on FlyingChairs + FlyingThings3D, the authors' weights ported by torchvision",
        size_hint="20 MB", used_by="flow='raft' (CorrWise)", source="torchvision (Teed & Deng 2020)",
        sha256_prefix="22a6c225", hash_note=NO_HASH_TORCHVISION, torch_hub=True,
    ),
    WeightFile(
        "raft_small_C_T_V1-ad48884c.pth", _TORCHVISION + "raft_small_C_T_V1-ad48884c.pth", None,
        "RAFT-small trained on FlyingChairs + FlyingThings3D, ported by torchvision",
        size_hint="3.8 MB", used_by="flow='raft-small' (CorrWise)", source="torchvision (Teed & Deng 2020)",
        sha256_prefix="ad48884c", hash_note=NO_HASH_TORCHVISION, torch_hub=True,
    ),
    WeightFile(
        "raft-things.pth", "https://github.com/sczhou/ProPainter/releases/download/v0.1.0/raft-things.pth", None,
        "original RAFT checkpoint (princeton-vl), FlyingChairs + FlyingThings3D, as used by the CorrWise paper",
        size_hint="21 MB", used_by="flow='raft' with weights='raft-things.pth' (CorrWise paper's checkpoint)",
        source="princeton-vl/RAFT models.zip, mirrored by the sczhou/ProPainter v0.1.0 release",
        hash_note=NO_HASH_THIRD_PARTY,
    ),
    WeightFile(
        "pwc-default.pytorch", _SNIKLAUS + "network-default.pytorch", None,
        "PWC-Net, authors' pwc_net.caffemodel (fine-tuned on Sintel, KITTI 2015, HD1K) converted by "
        "sniklaus/pytorch-pwc", size_hint="37 MB", used_by="flow='pwcnet' (CorrWise)",
        source="Sun et al. 2018, converted by sniklaus/pytorch-pwc", hash_note=NO_HASH_THIRD_PARTY,
    ),
    WeightFile(
        "pwc-chairs-things.pytorch", _SNIKLAUS + "network-chairs-things.pytorch", None,
        "PWC-Net, authors' pwc_net_chairs_things.caffemodel (FlyingChairs + FlyingThings3D) converted by "
        "sniklaus/pytorch-pwc", size_hint="37 MB", used_by="flow='pwcnet' with weights='chairs-things'",
        source="Sun et al. 2018, converted by sniklaus/pytorch-pwc", hash_note=NO_HASH_THIRD_PARTY,
    ),
    WeightFile(
        "bg.png", _CORRWISE_ASSETS + "bg.png", "28ac20546970c8afb38ba635f20919228e15ffa5ce2fbd24b75afb71ac08fab2",
        "CorrWise toy experiment: street background (1242x375 RGB)", size=853238,
        used_by="toy experiment (configs/toy_*.yaml)", source="Geng et al. 2022, dangeng/CorrWiseLosses",
    ),
    WeightFile(
        "car.png", _CORRWISE_ASSETS + "car.png", "f99deab0e1a4d92e1c7760d78d233d0c6f88cc50739eda0554c59464ba7d5d44",
        "CorrWise toy experiment: car sprite (222x85 RGBA)", size=25552,
        used_by="toy experiment (configs/toy_*.yaml)", source="Geng et al. 2022, dangeng/CorrWiseLosses",
    ),
]

#: every downloadable file, by file name
WEIGHT_FILES: dict[str, WeightFile] = {f.name: f for f in _FILES}


def default_files() -> list[str]:
    """Names of the files ``genloss weights download`` fetches without arguments: the published tuned weights."""
    return [n for n, f in WEIGHT_FILES.items() if f.default and f.published]


def published_files() -> list[str]:
    """Names of every file at a public URL (``genloss weights download --all``)."""
    return [n for n, f in WEIGHT_FILES.items() if f.published]


#: where a file that is not published must come from (messages of the resolver and the command line)
UNPUBLISHED_NOTE = "not published by its authors (it is not in their repository), so a download cannot work"


__all__ = ["UNPUBLISHED_NOTE", "WEIGHT_FILES", "WeightFile", "default_files", "human_size", "published_files"]
