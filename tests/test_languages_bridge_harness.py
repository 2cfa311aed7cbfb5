"""The learned-bridge-in-other-languages benchmark's own parts: its train reader and its text-vector cache."""

from __future__ import annotations

import csv
from types import SimpleNamespace

import numpy as np
from PIL import Image

from benchmarks import languages_bridge as bench


class CountingText:
    """A stand-in text model: a vector per text from its characters, and a count of what it encoded."""

    def __init__(self) -> None:
        self.spec = SimpleNamespace(identity="counting|mean")
        self.encoded: list[str] = []

    def weights_fingerprint(self) -> str:
        return "counting-v1"

    def encode(self, texts, query=False):
        self.encoded += list(texts)
        out = np.array([[len(t), sum(map(ord, t)) % 97, 1.0 if query else 0.0] for t in texts], np.float32)
        return out / np.linalg.norm(out, axis=1, keepdims=True)


def test_text_vectors_are_cached_per_prefix_and_returned_in_the_asked_order(tmp_path):
    texts = ["a dog runs", "un chien court", "pes běží po trávě", "a dog runs"]
    first = CountingText()
    got = bench.TextVectors(first, False, tmp_path, log=lambda s: None)(texts)
    assert got.shape == (4, 3)
    assert sorted(first.encoded) == sorted(set(texts))  # each distinct text once
    np.testing.assert_array_equal(got[0], got[3])
    assert got[0][0] != got[1][0]  # rows follow the asked order, not the length-sorted one

    again = CountingText()
    np.testing.assert_array_equal(bench.TextVectors(again, False, tmp_path, log=lambda s: None)(texts[::-1]), got[::-1])
    assert again.encoded == []  # everything came from the cache

    as_query = CountingText()
    bench.TextVectors(as_query, True, tmp_path, log=lambda s: None)(texts[:1])
    assert as_query.encoded == ["a dog runs"]  # search-word vectors are another cache


def test_read_train_takes_task1_captions_of_the_chosen_images(tmp_path):
    train = tmp_path / "train"
    (train / "images").mkdir(parents=True)
    rows = [("b.jpg", "a cat"), ("a.jpg", "a dog"), ("a.jpg", "a brown dog"), ("c.jpg", "a bird")]
    with (train / "captions.csv").open("w", newline="", encoding="utf-8") as fh:
        csv.writer(fh).writerows([("image", "caption"), *rows])
    for name in ("a.jpg", "b.jpg", "c.jpg"):
        Image.new("RGB", (8, 8)).save(train / "images" / name)
    multi = tmp_path / "multi" / "flickr8k_train"
    multi.mkdir(parents=True)
    with (multi / "queries.csv").open("w", newline="", encoding="utf-8") as fh:
        csv.writer(fh).writerows(
            [
                ("image", "lang", "source", "caption"),
                ("a.jpg", "fr", "task1", "un chien"),
                ("a.jpg", "de", "task2", "ein Hund"),
                ("c.jpg", "cs", "task1", "pták"),
            ]
        )
    data = bench.read_train(train, tmp_path / "multi", limit=2, german_task2=False)
    assert data.images == ["a.jpg", "b.jpg"]
    assert data.english == [["a dog", "a brown dog"], ["a cat"]]
    assert data.other == [[("fr", "un chien")], []]
    with_task2 = bench.read_train(train, tmp_path / "multi", limit=None, german_task2=True)
    assert with_task2.other == [[("fr", "un chien"), ("de", "ein Hund")], [], [("cs", "pták")]]
