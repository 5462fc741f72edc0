"""convop's layers: the data behind the picture on docs/architecture.md, and the picture.

``LAYERS`` lists every room of the package, layer by layer, from the support code every
other layer uses down to the entry points. A room is a top-level module (``geometry``) or a
subpackage (``_fourier``, ``cli``), whose files belong to it wholesale: a new file inside a
package needs no change here. The rules the picture states, and tests/test_docs.py checks:

- a room imports (at import time) only from the layers above its own, or from the rooms to
  its left in its own layer (so the order inside a layer is checked too);
- a room never imports an underscore name from a module of another room (private means
  private: what two rooms share is public inside the package that holds it).

The lazy imports that go the other way (an operator's ``to_pylops()`` imports
``pylops_bridge``, ``to_pylops_mpi()`` imports ``distributed``, so that ``import convop``
never imports PyLops or MPI) are left out of the picture; the page states them.

Run ``python docs/_ext/architecture.py`` after changing ``LAYERS`` to redraw
``docs/_static/architecture.svg``; a test checks that the file is up to date.
"""

from __future__ import annotations

from html import escape
from pathlib import Path

# (layer, what it is for, [(room, what it owns, in a few words), ...]); inside a layer, a
# room may import the rooms to its left. A box may hold rooms that belong together:
# "matrix_io + _io".
LAYERS: list[tuple[str, str, list[tuple[str, str]]]] = [
    (
        "support",
        "used everywhere",
        [
            ("_shared", "validators, numpy ↔ torch, memory guard, files"),
            ("threads", "BLAS threads in solves"),
            ("data + imaging", "test images, image files, kernels"),
        ],
    ),
    (
        "describe",
        "what the convolution is",
        [
            ("geometry", "ConvGeometry: shapes, validation"),
            ("padding", "pad, its adjoint, source maps"),
        ],
    ),
    (
        "evaluate",
        "how products run",
        [
            ("functional", "direct: torch conv + fold"),
            ("_fft", "FFT frames, spectra"),
            ("_auto", "'auto': cost, calibration, trials"),
            ("_materialize", "todense / tosparse"),
        ],
    ),
    (
        "operators",
        "the linear operators",
        [
            ("_base", "the contract: every face, once"),
            ("_explicit", "an operator's matrices"),
            ("operator", "ConvOperator: weight, method"),
            ("weight_operator", "WeightOperator: kernel unknown"),
        ],
    ),
    (
        "construct",
        "from PyTorch's arguments",
        [
            ("constructors", "conv1d … conv_transpose3d, from_module"),
            ("extended", "extended_domain: a frame of a larger scene"),
        ],
    ),
    (
        "frequency",
        "the kernel's spectrum",
        [
            ("_fourier", "lags, Gram symbol, boundary models, norm bounds"),
            ("spectral", "svdvals, opnorm: exact, certified"),
            ("layer_norms + _layer_bounds", "lipschitz, spectral_normalize"),
        ],
    ),
    (
        "solve",
        "deconvolution",
        [
            ("deconvolution", "preconditioner"),
            ("solvers", "pcg, tikhonov, TV, Richardson–Lucy"),
            ("noise", "estimate_noise"),
            ("regularization", "choose_damping"),
        ],
    ),
    (
        "faces",
        "conversions, files, other engines",
        [
            ("linear", "to_linear, to_linear_model"),
            ("testing", "dot_test"),
            ("matrix_io + _io", "save_matrix, load_matrix"),
            ("pylops_bridge", "op.to_pylops()"),
            ("distributed + _mpi", "op.to_pylops_mpi()"),
        ],
    ),
    (
        "entry points",
        "what users import or run",
        [
            ("__init__", "convop.__all__"),
            ("cli + __main__", "the convop command"),
        ],
    ),
]


def rooms_by_layer() -> dict[str, tuple[int, int]]:
    """``{room: (layer index, box index within the layer)}`` for every room in ``LAYERS``."""
    rooms = {}
    for index, (_, _, boxes) in enumerate(LAYERS):
        for position, (box, _) in enumerate(boxes):
            for name in box.replace("+", ",").split(","):
                rooms[name.strip()] = (index, position)
    return rooms


# ---------------------------------------------------------------------- the picture
WIDTH, LEFT, RIGHT = 1000, 212, 16
BAND, GAP, TOP = 74, 22, 16
BOX_H, BOX_GAP = 50, 14
COLOURS = ["#eef1f5", "#e6f0fa", "#e8f5ec", "#fdf1e3", "#f3ecfa", "#e6f4f4", "#fbf6e0",
           "#eef3e6", "#f7ecee"]  # fmt: skip
EDGES = ["#7b8794", "#3d7cc9", "#3c9a5f", "#d98a2b", "#8a5cc2", "#2f9a9a", "#b08d1a",
         "#6b8e23", "#c0566a"]  # fmt: skip


def _boxes() -> dict[str, tuple[float, float, float, float]]:
    """``{box name: (x, y, width, height)}``."""
    boxes = {}
    for index, (_, _, row) in enumerate(LAYERS):
        y = TOP + index * (BAND + GAP) + (BAND - BOX_H) / 2
        usable = WIDTH - LEFT - RIGHT
        width = (usable - BOX_GAP * (len(row) - 1)) / len(row)
        width = min(width, 420)
        total = len(row) * width + BOX_GAP * (len(row) - 1)
        x0 = LEFT + (usable - total) / 2
        for n, (name, _) in enumerate(row):
            boxes[name] = (x0 + n * (width + BOX_GAP), y, width, BOX_H)
    return boxes


def _band_arrow(index: int) -> str:
    """A downward arrow in the label column, from band ``index`` to the next."""
    x = 34
    y1 = TOP + index * (BAND + GAP) + BAND - 6
    y2 = y1 + GAP + 10
    return (
        f'<path d="M{x},{y1} L{x},{y2 - 2}" stroke="#5b6675" stroke-width="2" '
        'marker-end="url(#head)"/>'
    )


def svg() -> str:
    """The picture, as an SVG document."""
    height = TOP * 2 + len(LAYERS) * BAND + (len(LAYERS) - 1) * GAP + 26
    boxes = _boxes()
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {height}" '
        f'width="{WIDTH}" height="{height}" font-family="system-ui, -apple-system, '
        f'\'Segoe UI\', Roboto, Helvetica, Arial, sans-serif" role="img" '
        f'aria-labelledby="title">',
        '<title id="title">convop\'s modules in layers; each imports only from its own '
        "layer's rooms to its left or the layers above</title>",
        "<defs>",
        '<marker id="head" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" '
        'markerHeight="7" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" '
        'fill="#5b6675"/></marker>',
        "</defs>",
        f'<rect x="0" y="0" width="{WIDTH}" height="{height}" fill="#ffffff"/>',
    ]
    for index, (layer, purpose, _) in enumerate(LAYERS):
        y = TOP + index * (BAND + GAP)
        out.append(
            f'<rect x="8" y="{y}" width="{WIDTH - 16}" height="{BAND}" rx="10" '
            f'fill="{COLOURS[index]}"/>'
        )
        out.append(
            f'<text x="50" y="{y + BAND / 2 - 4}" font-size="16" font-weight="700" '
            f'fill="#1f2933">{escape(layer)}</text>'
        )
        out.append(
            f'<text x="50" y="{y + BAND / 2 + 14}" font-size="12" fill="#52606d">'
            f"{escape(purpose)}</text>"
        )
    for index in range(len(LAYERS) - 1):
        out.append(_band_arrow(index))
    for index, (_, _, row) in enumerate(LAYERS):
        for name, owns in row:
            x, y, w, h = boxes[name]
            out.append(
                f'<rect x="{x:.1f}" y="{y:.1f}" width="{w:.1f}" height="{h}" rx="6" '
                f'fill="#ffffff" stroke="{EDGES[index]}" stroke-width="1.6"/>'
            )
            out.append(
                f'<text x="{x + w / 2:.1f}" y="{y + 21:.1f}" text-anchor="middle" '
                f'font-size="13.5" font-weight="600" font-family="ui-monospace, SFMono-Regular, '
                f'Menlo, Consolas, monospace" fill="#1f2933">{escape(name)}</text>'
            )
            out.append(
                f'<text x="{x + w / 2:.1f}" y="{y + 39:.1f}" text-anchor="middle" '
                f'font-size="12" fill="#52606d">{escape(owns)}</text>'
            )
    legend_y = height - 16
    out.append(
        f'<text x="20" y="{legend_y}" font-size="13" fill="#52606d">Each layer is used by '
        "the layers below it: a room imports only from the layers above, or from the rooms to "
        "its left."
        "</text>"
    )
    out.append("</svg>")
    return "\n".join(out) + "\n"


SVG_PATH = Path(__file__).resolve().parents[1] / "_static" / "architecture.svg"

if __name__ == "__main__":
    SVG_PATH.write_text(svg(), encoding="utf-8")
    print(f"wrote {SVG_PATH}")
