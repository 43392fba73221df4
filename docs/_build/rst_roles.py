"""Griffe extension for the API reference: the docstrings' reStructuredText roles (``:func:`x```) read as code."""

from __future__ import annotations

import re

import griffe

#: ``:role:`target``` or ``:role:`~target```: shown as ``target``.
ROLE = re.compile(r":(?:py:)?(?:func|meth|class|mod|data|attr|obj|exc|const):`~?([^`]+)`")


class RstRolesAsCode(griffe.Extension):
    """Rewrite every role in a docstring to a code span before mkdocstrings renders it."""

    def on_instance(self, *, obj: griffe.Object, **kwargs: object) -> None:
        """Called by griffe for each object loaded: replace the roles in its docstring."""
        if obj.docstring is not None:
            obj.docstring.value = ROLE.sub(r"`\1`", obj.docstring.value)
