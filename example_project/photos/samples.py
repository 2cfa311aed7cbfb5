"""Sample photos that install from PyPI: the real photographs in scikit-image's
and scikit-learn's data folders, with a title and an alt text for each."""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple


class SampleText(NamedTuple):
    """What an editor would write for a sample photo: a short title and an alt text."""

    title: str
    alt_text: str


SKIMAGE = [
    "astronaut.png",
    "chelsea.png",
    "coffee.png",
    "rocket.jpg",
    "motorcycle_left.png",
    "hubble_deep_field.jpg",
    "camera.png",
    "coins.png",
    "retina.jpg",
    "horse.png",
]
SKLEARN = ["china.jpg", "flower.jpg"]

#: By file name. Written from looking at each picture (and, for who and where, the packages' notes).
TEXTS = {
    "astronaut.png": SampleText(
        "Astronaut Eileen Collins",
        "Portrait of a smiling astronaut in an orange flight suit with a helmet in front of her; "
        "an American flag and a model of the space shuttle stand behind.",
    ),
    "chelsea.png": SampleText(
        "Chelsea the cat",
        "Close-up of a tabby cat's face: green eyes, a pink nose and long white whiskers.",
    ),
    "coffee.png": SampleText(
        "Espresso",
        "A cup of coffee on a red-brown saucer with a spoon, on a wooden table.",
    ),
    "rocket.jpg": SampleText(
        "Falcon 9 on the launch pad",
        "A white rocket stands between four lattice towers at dusk, lit by floodlights against a deep blue sky.",
    ),
    "motorcycle_left.png": SampleText(
        "Red Yamaha motorcycle",
        "A red motorcycle with a black seat and chrome engine parked in a garage, "
        "with a wooden bench and shelves of boxes behind it.",
    ),
    "hubble_deep_field.jpg": SampleText(
        "Hubble eXtreme Deep Field",
        "Thousands of distant galaxies: points and smudges of white, orange and blue light on a black sky.",
    ),
    "camera.png": SampleText(
        "The cameraman",
        "Black-and-white photo of a man in a dark coat looking through a camera on a tripod, "
        "on a lawn with buildings in the distance.",
    ),
    "coins.png": SampleText(
        "Greek coins from Pompeii",
        "Black-and-white photo of two dozen ancient coins laid out in four rows, showing heads and figures.",
    ),
    "retina.jpg": SampleText(
        "Human retina",
        "The back of a human eye: an orange-red retina with branching blood vessels and a bright optic disc "
        "at the left, in a black circle.",
    ),
    "horse.png": SampleText(
        "Horse silhouette",
        "The black silhouette of a standing horse facing right, on a white background.",
    ),
    "china.jpg": SampleText(
        "Summer Palace, Beijing",
        "A tall Chinese temple tower with red pillars and green and orange tiled roofs above the trees; "
        "a lake with a long bridge lies in the haze behind.",
    ),
    "flower.jpg": SampleText(
        "Orange dahlia",
        "Close-up of a round, peach-orange dahlia flower in front of blurred dark green leaves.",
    ),
}


def sample_photo_paths() -> list[Path]:
    """Paths of the sample photos that are installed (skips any missing)."""
    paths: list[Path] = []
    try:
        import skimage.data

        root = Path(skimage.data.__file__).parent
        paths += [root / name for name in SKIMAGE]
    except ImportError:
        pass
    try:
        import sklearn.datasets

        root = Path(sklearn.datasets.__file__).parent / "images"
        paths += [root / name for name in SKLEARN]
    except ImportError:
        pass
    return [p for p in paths if p.exists()]


def sample_text(path: Path) -> SampleText:
    """The title and alt text of a sample photo (empty for a file that is not one)."""
    return TEXTS.get(path.name, SampleText("", ""))
