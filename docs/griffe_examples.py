"""Griffe extension: reads the house style's ``Example:`` sections as examples (mkdocs.yml).

The docstrings are Google style with a singular ``Example:`` heading (the doctests run in
CI). Griffe knows only ``Examples:`` as the examples section and would render ``Example:``
as an admonition of plain Markdown, where ``>>>`` lines become quotes; renaming the heading
before the docstring is parsed makes it a code block of the session, as written.
"""

from __future__ import annotations

import re

import griffe

_HEADING = re.compile(r"^(\s*)Example:[ \t]*$", re.MULTILINE)


class ExampleSections(griffe.Extension):
    """Renames ``Example:`` headings to ``Examples:`` in every docstring griffe loads."""

    def on_instance(self, *, obj: griffe.Object, **kwargs) -> None:  # noqa: ARG002 (griffe API)
        if obj.docstring is not None:
            obj.docstring.value = _HEADING.sub(r"\1Examples:", obj.docstring.value)
