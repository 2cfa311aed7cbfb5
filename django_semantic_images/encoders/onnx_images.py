"""The CNN through ONNX Runtime on a CPU worker: exported once, then run lean.

On a CPU, torch's eager forward of EfficientNet-Lite0 (or Lite1) runs 80 small operators one by
one, each with its own dispatch and memory traffic. ONNX Runtime runs the same graph
with BatchNorm folded into the convolutions and the activations fused into them: about
a third of torch's time per image on the development VM (docs/performance.md), with the
same vectors (float32 both ways; the largest difference measured is in the sixth
decimal: visual cosine to torch 1.0000, class probabilities within 1e-5).

The network (pooled features and class logits, for inputs of its side, 224 x 224 for Lite0
and 240 x 240 for Lite1, any batch) is exported with ``torch.onnx.export`` into
``MODEL_CACHE_DIR`` as ``<cnn>-<fingerprint>.onnx``, the fingerprint covering its weights file,
the input side and the export recipe, once per machine and network, and checked against the torch
model before it is used. With the file there, a worker builds no torch CNN at all.
Anything that goes wrong (the ``onnx`` extra not installed, a read-only folder, a
failed export or check) leaves the CNN on torch, with a warning. ``IMAGE_RUNTIME``
chooses: ``"auto"`` (ONNX Runtime when the extra is installed and the device is the
CPU), ``"onnx"``, ``"torch"``.

The vectors are those of the torch model within float32 rounding, so the encoder's
identity does not change with the runtime: stored vectors stay comparable.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import logging
import os
import threading
import warnings
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np

from ..conf import on_change
from .cache import build_once, digest, open_or_rebuild
from .networks import CNNS
from .onnx_queries import NOISY_LOGGERS, _quiet_loggers, cpu_session, onnx_available

logger = logging.getLogger(__name__)

#: Bumped when the exported graph changes shape or meaning.
EXPORT_VERSION = 1
#: The input side the graph is exported for by default (Lite0's centre crop; ``networks.CNN.side``).
SIDE = 224
#: A fresh export must agree with torch on the probe images: visual cosine at least this,
#: class logits within this (they span about -10 to 20).
MIN_COSINE = 0.9999
MAX_LOGIT_DIFF = 1e-2


@functools.lru_cache(maxsize=8)
def _file_digest(path: str, size: int, mtime: float) -> str:
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()[:16]


def weights_digest(path: str) -> str:
    """sha256 of a weights file (kept per path, size and modification time)."""
    stat = os.stat(path)
    return _file_digest(path, stat.st_size, stat.st_mtime)


def fingerprint(weights_path: str, side: int = SIDE) -> str:
    """Names the exported file: the weights, the input side, the export recipe, the versions
    (read from the installed packages' metadata, so torch is not imported)."""
    return digest([weights_digest(weights_path), EXPORT_VERSION, side, version("torch"), version("onnxruntime")])


def probe_pixels(side: int = SIDE) -> np.ndarray:
    """Four fixed, picture-like inputs of ``side`` x ``side`` (smooth colour fields with some texture)."""
    rng = np.random.default_rng(8)
    cells = -(-side // 32)
    coarse = rng.uniform(-1, 1, (4, 3, cells, cells)).astype(np.float32)
    smooth = np.kron(coarse, np.ones((1, 1, 32, 32), np.float32))
    noisy = np.clip(smooth + 0.2 * rng.standard_normal(smooth.shape).astype(np.float32), -1, 1)
    return np.ascontiguousarray(noisy[..., :side, :side])


def export_cnn(cnn: Any, target: Path, side: int = SIDE) -> None:
    """Write ``cnn`` (an ``EfficientNetLite``) as ONNX: pixels (n, 3, side, side) -> (features, logits)."""
    import torch

    class FeaturesAndLogits(torch.nn.Module):
        def __init__(self, model: Any) -> None:
            super().__init__()
            self.model = model

        def forward(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            features = self.model.features(pixels)
            return features, self.model._fc(features)

    parameter = next(cnn.parameters())
    if parameter.device.type != "cpu" or parameter.dtype != torch.float32:
        raise RuntimeError("the ONNX image path exports the CPU float32 model only")
    example = torch.from_numpy(probe_pixels(side)[:2])
    # The exporter reports its progress on stdout and warns about its own internals.
    with open(os.devnull, "w") as devnull, contextlib.redirect_stdout(devnull), _quiet_loggers(*NOISY_LOGGERS):
        warnings.simplefilter("ignore")
        torch.onnx.export(
            FeaturesAndLogits(cnn).eval(),
            (example,),
            str(target),
            input_names=["pixels"],
            output_names=["features", "logits"],
            dynamic_shapes={"pixels": {0: "batch"}},
            dynamo=True,
            external_data=False,
        )


def torch_forward(cnn: Any, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The torch model's pooled features and logits for a CPU batch (the reference)."""
    import torch

    x = torch.from_numpy(np.ascontiguousarray(pixels)).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        features = cnn.features(x)
        logits = cnn._fc(features)
    return features.numpy(), logits.numpy()


def agreement(got: tuple[np.ndarray, np.ndarray], expected: tuple[np.ndarray, np.ndarray]) -> tuple[float, float]:
    """(smallest cosine of the features, largest absolute difference of the logits)."""
    a, b = got[0], expected[0]
    cosine = np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1) + 1e-12)
    return float(cosine.min()), float(np.abs(got[1] - expected[1]).max())


class OnnxImageModel:
    """An EfficientNet-Lite in ONNX Runtime: ``run(pixels)`` gives (features, logits) like torch.
    ``cnn`` names the network (``networks.CNNS``): its stages and its input side."""

    def __init__(self, weights_path: str, cache_dir: Path, *, threads: int | None = None, cnn: str = "lite0") -> None:
        self.weights_path = weights_path
        self.cnn = cnn
        self.side = CNNS[cnn].side
        self.cache_dir = Path(cache_dir)
        self.threads = threads
        self.session: Any = None
        self.path: Path | None = None
        self.exported = False  # whether this instance made the file (rather than found it)

    def prepare(self, torch_model: Any = None) -> Path:
        """The exported model file; made once per machine (then the torch model is built,
        or ``torch_model`` used, to export it and to check the export)."""
        stem = f"{self.cnn}-{fingerprint(self.weights_path, self.side)}"
        path = self.cache_dir / f"{stem}.onnx"

        def export(scratch: Path) -> Path:
            model = torch_model
            if model is None:
                from .efficientnet_lite import load_lite

                model = load_lite(self.cnn, self.weights_path)
            made = scratch / "model.onnx"
            export_cnn(model, made, self.side)
            probe = probe_pixels(self.side)
            got = self._run(self._session(made), probe)
            cosine, logit_diff = agreement(got, torch_forward(model, probe))
            if not (cosine >= MIN_COSINE and logit_diff <= MAX_LOGIT_DIFF):
                raise RuntimeError(
                    f"the exported CNN disagrees with torch (cosine {cosine:.5f}, logits off by {logit_diff:.4f})"
                )
            return made

        if build_once(path, export, f"{stem}.lock"):
            self.exported = True
            logger.info("Exported the image model to %s", path)
        return path

    def _session(self, path: Path) -> Any:
        return cpu_session(path, self.threads)

    def load(self, torch_model: Any = None) -> None:
        """The session; a cached file that ONNX Runtime cannot open is exported again."""
        self.path = self.prepare(torch_model)
        stem = self.path.stem
        self.session = open_or_rebuild(
            self.path, lambda: self.prepare(torch_model), self._session, f"{stem}.lock", made=self.exported
        )

    @staticmethod
    def _run(session: Any, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        features, logits = session.run(None, {"pixels": np.ascontiguousarray(pixels, dtype=np.float32)})
        return np.asarray(features, dtype=np.float32), np.asarray(logits, dtype=np.float32)

    def run(self, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Pooled features ``(n, 1280)`` and class logits ``(n, 1000)`` of a batch of crops."""
        if self.session is None:
            self.load()
        if pixels.shape[1:] != (3, self.side, self.side):
            raise ValueError(f"the ONNX image model takes (n, 3, {self.side}, {self.side}) inputs, not {pixels.shape}")
        return self._run(self.session, pixels)


def wants_onnx(runtime: str, device: str) -> bool:
    """Whether ``IMAGE_RUNTIME`` (``runtime``) sends the CNN on ``device`` to ONNX Runtime."""
    if runtime not in ("auto", "onnx", "torch"):
        raise ValueError(f"IMAGE_RUNTIME must be 'auto', 'onnx' or 'torch', not {runtime!r}")
    if runtime == "torch":
        return False
    if not device.startswith("cpu"):
        if runtime == "onnx":
            logger.warning("IMAGE_RUNTIME is 'onnx' but the device is %s; the CNN runs in torch there.", device)
        return False
    if not onnx_available():
        if runtime == "onnx":
            logger.warning("IMAGE_RUNTIME is 'onnx' but onnxruntime is not installed; the CNN runs in torch.")
        return False
    return True


_models: dict[tuple[str, str, str], OnnxImageModel] = {}
_lock = threading.Lock()


def onnx_image_model(weights_path: str, cache_dir: Path, cnn: str = "lite0") -> OnnxImageModel | None:
    """The process's ``OnnxImageModel`` for this network, weights and folder, loaded; None when it
    cannot be had (the export, the check or the session failed: logged, the caller uses torch)."""
    key = (cnn, weights_path, str(cache_dir))
    with _lock:
        found = _models.get(key)
        if found is None:
            model = OnnxImageModel(weights_path, cache_dir, cnn=cnn)
            try:
                model.load()
            except Exception as exc:  # any failure leaves the CNN on torch
                logger.warning("The CNN stays on torch; the ONNX image model could not be used: %s", exc)
                return None
            found = _models[key] = model
    return found


@on_change
def reset() -> None:
    """Forget the loaded models (settings changed; tests)."""
    with _lock:
        _models.clear()
