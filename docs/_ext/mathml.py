"""Math rendered to MathML when the site is built: nothing to load when a page is viewed.

Sphinx's HTML math renderers (MathJax, KaTeX) typeset in the browser, from a script that is
usually fetched from a CDN, so a page opened offline shows raw LaTeX. This extension renders
every ``math`` (inline) and ``math_block`` (display) node to MathML with the
``latex2mathml`` package instead; browsers display MathML natively (MathML Core: Firefox,
Chromium 109+, Safari), without any script.

A formula that ``latex2mathml`` cannot convert is a build warning (an error under ``-W``),
shown as its LaTeX source on the page.

Enabled in conf.py with ``extensions = [..., "mathml"]``; it sets ``html_math_renderer``.
"""

from __future__ import annotations

import re
from typing import Any

from docutils import nodes
from sphinx.application import Sphinx
from sphinx.util import logging

logger = logging.getLogger(__name__)

# \text{output\_padding}: LaTeX needs the escape, latex2mathml would print it.
_TEXT_ARGUMENT = re.compile(r"\\(text|textrm|textit|textbf|texttt)\{([^{}]*)\}")
_TEXT_ESCAPE = re.compile(r"\\([_%&$#])")


def to_mathml(latex: str, display: str) -> str:
    """MathML for ``latex``; ``display`` is ``"inline"`` or ``"block"``."""
    from latex2mathml.converter import convert

    def unescape(match: re.Match) -> str:
        return "\\" + match.group(1) + "{" + _TEXT_ESCAPE.sub(r"\1", match.group(2)) + "}"

    return convert(_TEXT_ARGUMENT.sub(unescape, latex).strip(), display=display)


def _render(self: Any, node: nodes.Element, latex: str, display: str) -> str:
    try:
        return to_mathml(latex, display)
    except Exception as error:  # latex2mathml raises assorted exception types
        logger.warning(
            "cannot render this formula to MathML (%s: %s): %s",
            type(error).__name__,
            error,
            latex,
            location=node,
        )
        return f'<code class="math-error">{self.encode(latex)}</code>'


def visit_math(self: Any, node: nodes.math) -> None:
    self.body.append(
        f'<span class="math notranslate">{_render(self, node, node.astext(), "inline")}</span>'
    )
    raise nodes.SkipNode


def visit_math_block(self: Any, node: nodes.math_block) -> None:
    self.body.append(self.starttag(node, "div", CLASS="math notranslate"))
    if node.get("number"):  # a labelled equation
        self.body.append(f'<span class="eqno">({node["number"]})</span>')
    self.body.append(_render(self, node, node.astext(), "block"))
    self.body.append("</div>\n")
    raise nodes.SkipNode


def setup(app: Sphinx) -> dict[str, Any]:
    app.add_html_math_renderer(
        "mathml",
        inline_renderers=(visit_math, None),
        block_renderers=(visit_math_block, None),
    )
    app.config.html_math_renderer = "mathml"
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
