"""Sample photos that install from PyPI: the real photographs in scikit-image's
and scikit-learn's data folders."""

from __future__ import annotations

from pathlib import Path

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
