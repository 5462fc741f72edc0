"""Conv modules shared by the from_module and to_linear tests: one table, every layer kind.

Each case is a float64 ``torch.nn`` conv layer (fresh on each ``make()``) and the shape of one
input sample. ``MODULE_CASES`` have a bias; ``NO_BIAS_CASES`` the same kinds without one.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import nn


class ModuleCase(NamedTuple):
    id: str
    make: Callable[[], nn.Module]
    input_shape: tuple[int, ...]


F64 = dict(dtype=torch.float64)

MODULE_CASES = [
    ModuleCase(
        "conv1d-stride2-pad1", lambda: nn.Conv1d(3, 4, 3, stride=2, padding=1, **F64), (3, 11)
    ),
    ModuleCase(
        "conv1d-dilation-groups-reflect",
        lambda: nn.Conv1d(4, 6, 3, padding=2, dilation=2, groups=2, padding_mode="reflect", **F64),
        (4, 9),
    ),
    ModuleCase(
        "conv1d-same-even-kernel-circular",
        lambda: nn.Conv1d(2, 3, 4, padding="same", padding_mode="circular", **F64),
        (2, 7),
    ),
    ModuleCase(
        "conv2d-stride-dilation-groups",
        lambda: nn.Conv2d(
            4, 6, (3, 2), stride=(2, 1), padding=(1, 2), dilation=(1, 2), groups=2, **F64
        ),
        (4, 9, 8),
    ),
    ModuleCase(
        "conv2d-reflect-stride2",
        lambda: nn.Conv2d(3, 4, 3, stride=2, padding=2, padding_mode="reflect", **F64),
        (3, 7, 6),
    ),
    ModuleCase(
        "conv2d-replicate-padding-exceeds-size",
        lambda: nn.Conv2d(2, 2, 3, padding=(5, 1), padding_mode="replicate", **F64),
        (2, 4, 5),
    ),
    ModuleCase(
        "conv2d-circular-depthwise",
        lambda: nn.Conv2d(
            3, 6, 3, stride=(1, 2), padding=1, groups=3, padding_mode="circular", **F64
        ),
        (3, 6, 7),
    ),
    ModuleCase(
        "conv2d-same-dilated-even-kernel",
        lambda: nn.Conv2d(2, 4, (2, 4), padding="same", dilation=(3, 1), **F64),
        (2, 8, 7),
    ),
    ModuleCase(
        "conv2d-same-reflect",
        lambda: nn.Conv2d(2, 3, (4, 3), padding="same", padding_mode="reflect", **F64),
        (2, 5, 6),
    ),
    ModuleCase(
        "conv2d-valid-stride2",
        lambda: nn.Conv2d(2, 3, 3, stride=2, padding="valid", **F64),
        (2, 8, 9),
    ),
    ModuleCase(
        "conv3d-stride-groups",
        lambda: nn.Conv3d(2, 4, (3, 2, 3), stride=(2, 1, 2), padding=(1, 0, 1), groups=2, **F64),
        (2, 5, 4, 6),
    ),
    ModuleCase(
        "conv3d-circular-dilation",
        lambda: nn.Conv3d(2, 3, 2, dilation=2, padding=1, padding_mode="circular", **F64),
        (2, 4, 4, 5),
    ),
    ModuleCase(
        "conv3d-same-replicate",
        lambda: nn.Conv3d(1, 2, (2, 3, 4), padding="same", padding_mode="replicate", **F64),
        (1, 4, 5, 6),
    ),
    ModuleCase(
        "conv_transpose1d-stride-output-padding-groups",
        lambda: nn.ConvTranspose1d(
            4, 6, 3, stride=3, padding=1, output_padding=2, groups=2, **F64
        ),
        (4, 7),
    ),
    ModuleCase(
        "conv_transpose1d-output-padding-ge-stride-lt-dilation",
        lambda: nn.ConvTranspose1d(2, 3, 3, stride=2, output_padding=2, dilation=3, **F64),
        (2, 5),
    ),
    ModuleCase(
        "conv_transpose2d-full",
        lambda: nn.ConvTranspose2d(
            4,
            2,
            (3, 4),
            stride=(2, 3),
            padding=(1, 2),
            output_padding=(1, 0),
            dilation=(1, 2),
            groups=2,
            **F64,
        ),
        (4, 5, 6),
    ),
    ModuleCase(
        "conv_transpose3d-stride-groups",
        lambda: nn.ConvTranspose3d(
            2, 4, (2, 3, 2), stride=2, padding=(0, 1, 1), output_padding=(1, 0, 1), groups=2, **F64
        ),
        (2, 3, 4, 3),
    ),
]


def _without_bias(case: ModuleCase, input_shape: tuple[int, ...] | None = None) -> ModuleCase:
    """The same layer with its bias removed, as ``bias=False`` would have built it."""

    def make() -> nn.Module:
        module = case.make()
        module.register_parameter("bias", None)
        return module

    return ModuleCase(f"{case.id}-nobias", make, input_shape or case.input_shape)


_BY_ID = {case.id: case for case in MODULE_CASES}
NO_BIAS_CASES = [
    _without_bias(_BY_ID["conv1d-dilation-groups-reflect"]),
    _without_bias(
        ModuleCase(
            "conv2d-replicate",
            lambda: nn.Conv2d(2, 2, 3, padding=(3, 1), padding_mode="replicate", **F64),
            (2, 4, 5),
        )
    ),
    _without_bias(
        ModuleCase(
            "conv3d-same-circular",
            lambda: nn.Conv3d(1, 2, (2, 3, 2), padding="same", padding_mode="circular", **F64),
            (1, 3, 4, 3),
        )
    ),
    _without_bias(_BY_ID["conv_transpose2d-full"], (4, 4, 3)),
]
