"""A jointly trained image-text model (CLIP, SigLIP) through ``transformers``.

Text and images share one space, so the visual and the semantic vector are the
same image embedding. ``model`` is a hub name or a local folder; loading from
the hub needs network access, which a site with a model mirror or cache has.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
from PIL import Image

from ..fusion import weight_identity
from ..imaging import centre_box
from .base import Encoder, ImageEmbeddings, l2_normalize
from .text import missing_model


class CLIPEncoder(Encoder):
    name = "clip"

    def __init__(
        self,
        model: str | os.PathLike[str] = "openai/clip-vit-base-patch32",
        device: str = "auto",
        identity: str | None = None,
    ) -> None:
        super().__init__(device)
        model = os.fspath(model)  # a folder as a Path (BASE_DIR / "clip") too; a TypeError for anything else
        if not isinstance(model, str):
            raise TypeError(f"CLIPEncoder's model must be a hub name or a folder, not {model!r}.")
        self.model_name = model  # the identity's name, as configured
        #: What the stored vectors are named by (``None``: the model's name or folder); set a new one
        #: when other weights take the same folder or name, so that ``reindex --stale`` re-embeds.
        self.explicit_identity = identity
        self.source = os.path.expanduser(model)  # what transformers loads (it reads ``~`` as a hub name)
        # transformers' auto classes: the concrete types depend on the checkpoint.
        self.model: Any = None
        self.processor: Any = None
        self.tokenizer: Any = None
        self._dim: int | None = None

    @property
    def identity(self) -> str:
        named = self.model_name if self.explicit_identity is None else f"identity:{self.explicit_identity}"
        named = "|".join((named, *weight_identity()))  # how much the words weigh in the stored vectors
        return f"{self.name}:{hashlib.sha1(named.encode()).hexdigest()[:8]}"

    @property
    def visual_dimensions(self) -> int:  # type: ignore[override]
        if self._dim is None:
            from transformers import AutoConfig

            config = AutoConfig.from_pretrained(self.source)
            self._dim = int(getattr(config, "projection_dim", None) or config.text_config.hidden_size)
        return self._dim

    semantic_dimensions = visual_dimensions

    def missing_requirements(self) -> list[str]:
        """The model, where it must be had without the network (a folder; a hub name offline)."""
        why = missing_model(self.model_name)
        return [] if why is None else [f"its model {self.model_name!r}, which is {why}"]

    def prepare(self) -> list[str]:
        """Load the model once at deploy time (``semantic_images_prepare``): a hub name is downloaded
        into the local hub cache then, not by the first upload or search."""
        self.ensure_loaded()
        return [f"model: {self.model_name} (loaded)"]

    def load(self) -> None:
        from transformers import AutoImageProcessor, AutoModel, AutoTokenizer

        self.model = AutoModel.from_pretrained(self.source).to(self.device).eval()
        if self.device.startswith("cuda"):
            self.model = self.model.half()
        self.processor = AutoImageProcessor.from_pretrained(self.source)
        self.tokenizer = AutoTokenizer.from_pretrained(self.source)

    def preprocess(self, image: Image.Image) -> np.ndarray:
        self.ensure_loaded()
        box = centre_box(*image.size)  # the processor reads a centred square: a long strip's ends are cut first
        return self.processor(images=(image.crop(box) if box else image).convert("RGB"), return_tensors="np")[
            "pixel_values"
        ][0]

    @staticmethod
    def _tensor(out: Any) -> Any:
        # transformers 5 may return a model output instead of a bare tensor.
        return out if hasattr(out, "float") else out.pooler_output

    def encode_pixels(self, pixels: np.ndarray) -> ImageEmbeddings:
        import torch

        self.ensure_loaded()
        x = torch.from_numpy(np.ascontiguousarray(pixels)).to(self.device, dtype=self.model.dtype)
        with torch.inference_mode():
            vec = self._tensor(self.model.get_image_features(pixel_values=x)).float().cpu().numpy()
        vec = l2_normalize(vec)
        return ImageEmbeddings(visual=vec, semantic=vec.copy())

    def _padding(self) -> dict[str, Any]:
        """Texts are cut to the text tower's length (a tokenizer may not say it: longer ones failed).
        SigLIP reads a text's vector off its last position and was trained on texts padded to that
        length: padded so here too (else a vector would depend on its batch's longest text). CLIP reads
        it off the end token, behind a causal mask: the batch's longest will do."""
        config = self.model.config
        length = getattr(getattr(config, "text_config", None), "max_position_embeddings", None)
        if not isinstance(length, int):  # a model that does not say: as its tokenizer says
            return {"padding": True}
        if str(getattr(config, "model_type", "")).startswith("siglip"):
            return {"padding": "max_length", "max_length": length}
        return {"padding": True, "max_length": length}

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        import torch

        self.ensure_loaded()
        batch = self.tokenizer(list(texts), truncation=True, return_tensors="pt", **self._padding()).to(self.device)
        with torch.inference_mode():
            vec = self._tensor(self.model.get_text_features(**batch)).float().cpu().numpy()
        return l2_normalize(vec)
