"""The ImageNet-1k class list shipped with the package (WordNet synsets, lemmas, glosses)."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from importlib import resources


@dataclass(frozen=True)
class ImageNetClass:
    synset: str
    lemmas: tuple[str, ...]
    gloss: str

    @property
    def name(self) -> str:
        """The first lemma, the usual human name of the class."""
        return self.lemmas[0]


@lru_cache(maxsize=1)
def imagenet_classes() -> tuple[ImageNetClass, ...]:
    """The 1000 classes in the CNN's output order."""
    text = resources.files(__package__).joinpath("data/imagenet_classes.tsv").read_text("utf-8")
    rows = []
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        synset, lemmas, gloss = line.split("\t")
        rows.append(ImageNetClass(synset, tuple(s.strip() for s in lemmas.split(",")), gloss))
    if len(rows) != 1000:
        raise RuntimeError(f"imagenet_classes.tsv holds {len(rows)} classes, expected 1000")
    return tuple(rows)
