"""Griffe extension (mkdocs.yml): the house's docstrings as Markdown, before griffe parses them.

* The docstrings are Google style with a singular ``Example:`` heading (the doctests run in
  CI). Griffe knows only ``Examples:`` as the examples section and would render ``Example:``
  as an admonition of plain Markdown, where ``>>>`` lines become quotes; renaming the
  heading makes it a code block of the session, as written.
* Sphinx roles (``:mod:`.surgery```, ``:class:`~pocketflow_tf.learner.Learner```) would show
  as written; they become code spans of the name as Sphinx shows it (``~``: the last part,
  ``title <target>``: the title).
"""

from __future__ import annotations

import re

import griffe

_HEADING = re.compile(r"^(\s*)Example:[ \t]*$", re.MULTILINE)
_ROLE = re.compile(r":(?:py:)?(?:mod|class|func|meth|data|attr|exc|obj|const):`(~?)([^`]+)`")


def _role(match: re.Match) -> str:
    # ":meth:`title <target>`" shows its title.
    name = match.group(2).split("<", 1)[0].strip().lstrip(".")
    return f"`{name.rsplit('.', 1)[-1] if match.group(1) else name}`"


class HouseDocstrings(griffe.Extension):
    """Rewrites every docstring griffe loads: ``Examples:`` headings, roles as code spans."""

    def on_instance(self, *, obj: griffe.Object, **kwargs) -> None:  # noqa: ARG002 (griffe API)
        if obj.docstring is not None:
            text = _HEADING.sub(r"\1Examples:", obj.docstring.value)
            obj.docstring.value = _ROLE.sub(_role, text)
