"""OpenCV's classical flow estimators, DIS and Farneback, behind the genloss flow interface (CPU, no weights).

Registered as ``'dis'`` (Kroeger et al., *Fast Optical Flow using Dense Inverse Search*, ECCV 2016)
and ``'farneback'`` (Farneback, *Two-Frame Motion Estimation Based on Polynomial Expansion*, SCIA
2003). They need ``opencv-python-headless`` (``pip install genloss[flow]``); building one without it
raises an ``ImportError`` that says so.

OpenCV works on single 8-bit greyscale images on the CPU: the batch is converted to Rec. 601 luma,
rounded to uint8 and processed image by image in a Python loop; the flow is returned on the input's
device and in its dtype. Neither estimator is differentiable (the result carries no gradient).
OpenCV's flow convention is genloss' (``prev(y, x) ~ next(y + flow_y, x + flow_x)``, x first).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ._learned import check_flow_pair
from .base import FlowEstimator
from .classical import to_grey


def _import_cv2() -> Any:
    try:
        import cv2
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError(
            "the 'dis' and 'farneback' flow estimators need OpenCV: pip install opencv-python-headless "
            "(or pip install 'genloss[flow]'); the default 'coarse2fine' estimator needs nothing"
        ) from e
    return cv2


def _to_uint8_grey(x: torch.Tensor) -> np.ndarray:
    """(N, C, H, W) in [0, 1] -> (N, H, W) uint8 luma, C-contiguous, on the CPU."""
    # The clamp is kept: it does not hide bad input (check_flow_pair has refused images outside [0, 1]
    # beyond the tolerance, NaN and Inf), it only keeps the tolerated overshoot of generator outputs
    # (e.g. -0.02 or 1.03) from wrapping around in the uint8 cast (-0.02 * 255 -> 251).
    g = to_grey(x.detach().float()).squeeze(1).clamp(0, 1).mul(255.0).round().to(torch.uint8)
    return np.ascontiguousarray(g.cpu().numpy())


class _OpenCVFlow(FlowEstimator):
    learned = False
    #: smallest height and width OpenCV handles (``None``: any)
    min_size: int | None = None

    def __init__(self, check_range: bool = True) -> None:
        super().__init__()
        _import_cv2()  # fail at construction, with the install hint, when OpenCV is missing
        self.check_range = check_range

    @property
    def _cv2(self) -> Any:
        # not stored on the instance: a module (or an OpenCV object) cannot be copied or pickled
        return _import_cv2()

    def _pair(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def forward(self, image1: torch.Tensor, image2: torch.Tensor) -> torch.Tensor:
        a, b = check_flow_pair(image1, image2, check_range=self.check_range)
        h, w = a.shape[-2:]
        if self.min_size is not None and min(h, w) < self.min_size:
            raise ValueError(
                f"{type(self).__name__} needs images of at least {self.min_size}x{self.min_size} pixels, got {h}x{w} "
                "(OpenCV refuses smaller ones or crashes the process); use flow='coarse2fine' for small images"
            )
        g1, g2 = _to_uint8_grey(a), _to_uint8_grey(b)
        flows = np.stack([self._pair(g1[i], g2[i]) for i in range(g1.shape[0])])  # (N, H, W, 2)
        return torch.from_numpy(flows).permute(0, 3, 1, 2).to(device=a.device, dtype=a.dtype)


class DISFlow(_OpenCVFlow):
    """OpenCV's Dense Inverse Search flow (``cv2.DISOpticalFlow``).

    Args:
        preset: ``'ultrafast'``, ``'fast'`` or ``'medium'`` (OpenCV's presets: patch size, stride,
            gradient-descent iterations, variational refinement). Default ``'medium'``, the most
            accurate; on 64 x 64 images it is also not slower than the others here.
        variational_refinement_iterations: override of the preset's number of variational
            refinement iterations (``None`` keeps the preset's).
        check_range: reject images clearly outside [0, 1].

    Input: (N, C, H, W) float in [0, 1], C in {1, 3}, any device. Output: (N, 2, H, W) pixels.
    """

    PRESETS = ("ultrafast", "fast", "medium")
    #: OpenCV 5's DIS raises below 12 px and segfaults on e.g. 11 x 64 images
    min_size = 12

    def __init__(self, preset: str = "medium", variational_refinement_iterations: int | None = None,
                 check_range: bool = True) -> None:
        super().__init__(check_range)
        if preset not in self.PRESETS:
            raise ValueError(f"preset must be one of {self.PRESETS}, got {preset!r}")
        self.preset = preset
        self.variational_refinement_iterations = variational_refinement_iterations
        self._create()

    def _create(self) -> None:
        cv2 = self._cv2
        code = {"ultrafast": cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST, "fast": cv2.DISOPTICAL_FLOW_PRESET_FAST,
                "medium": cv2.DISOPTICAL_FLOW_PRESET_MEDIUM}[self.preset]
        self._dis = cv2.DISOpticalFlow_create(code)
        if self.variational_refinement_iterations is not None:
            self._dis.setVariationalRefinementIterations(int(self.variational_refinement_iterations))

    def __getstate__(self) -> dict:
        # the OpenCV object cannot be pickled (deepcopy, EMA copies, spawn): rebuilt from the options
        state = self.__dict__.copy()
        state.pop("_dis", None)
        return state

    def __setstate__(self, state: dict) -> None:
        super().__setstate__(state)
        self._create()

    def extra_repr(self) -> str:
        return f"preset={self.preset!r}"

    def _pair(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return self._dis.calc(a, b, None)


class FarnebackFlow(_OpenCVFlow):
    """OpenCV's Farneback flow (``cv2.calcOpticalFlowFarneback``); the arguments are OpenCV's.

    Defaults are OpenCV's documented example values (3 levels, scale 0.5, window 15, 3 iterations,
    polynomial neighbourhood 5 with sigma 1.2) with Gaussian window weighting, which is more accurate
    than the box window at the same cost on natural images.

    Input: (N, C, H, W) float in [0, 1], C in {1, 3}, any device. Output: (N, 2, H, W) pixels.
    """

    def __init__(self, pyr_scale: float = 0.5, levels: int = 3, winsize: int = 15, iterations: int = 3,
                 poly_n: int = 5, poly_sigma: float = 1.2, gaussian_window: bool = True,
                 check_range: bool = True) -> None:
        super().__init__(check_range)
        if not 0 < pyr_scale < 1:
            raise ValueError(f"pyr_scale must be in (0, 1), got {pyr_scale}")
        if poly_n not in (5, 7):
            raise ValueError(f"poly_n must be 5 or 7, got {poly_n}")
        self.params = dict(pyr_scale=float(pyr_scale), levels=int(levels), winsize=int(winsize),
                           iterations=int(iterations), poly_n=int(poly_n), poly_sigma=float(poly_sigma))
        self.flags = self._cv2.OPTFLOW_FARNEBACK_GAUSSIAN if gaussian_window else 0

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.params.items())

    def _pair(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        p = self.params
        return self._cv2.calcOpticalFlowFarneback(a, b, None, p["pyr_scale"], p["levels"], p["winsize"],
                                                  p["iterations"], p["poly_n"], p["poly_sigma"], self.flags)
