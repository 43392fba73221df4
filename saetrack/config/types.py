"""Type checks of config values before a section is built, so a wrong type is one clear :class:`ConfigError`.

A value from ``--set`` or a JSON file reaches a dataclass untyped; without this, ``--set seed=abc`` would fail deep in
a range check with a ``TypeError``. :func:`check_types` compares every value with its field's annotation (int, float,
bool, str, ``None``, unions, ``Literal``, tuples and mappings) and names the field, the value and the type allowed.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Mapping
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

from saetrack.config.base import fail

__all__ = ["check_types", "conforms", "describe"]


def conforms(value: Any, hint: Any) -> bool:
    """Whether ``value`` is of the annotated type ``hint`` (an int passes for a float; a bool is never a number);
    annotations it does not know pass."""
    origin = get_origin(hint)
    if hint is Any:
        return True
    if origin in (Union, types.UnionType):
        return any(conforms(value, arg) for arg in get_args(hint))
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    if origin is Literal:
        return value in get_args(hint)
    if origin is tuple:
        if not isinstance(value, (tuple, list)):
            return False
        args = get_args(hint)
        if len(args) == 2 and args[1] is Ellipsis:
            return all(conforms(v, args[0]) for v in value)
        return not args or (len(args) == len(value) and all(conforms(v, a) for v, a in zip(value, args, strict=True)))
    if origin in (dict, Mapping, typing.Mapping):
        return isinstance(value, Mapping)
    return True


def describe(hint: Any) -> str:
    """``hint`` as a reader writes it: ``int``, ``float | None``, ``tuple[str, ...]``, one of ``'a', 'b'``."""
    origin = get_origin(hint)
    if origin in (Union, types.UnionType):
        return " or ".join(describe(arg) for arg in get_args(hint))
    if hint is type(None):
        return "None"
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in get_args(hint))
    if origin is tuple:
        args = get_args(hint)
        if len(args) == 2 and args[1] is Ellipsis:
            return f"a tuple of {describe(args[0])}"
        return "a tuple (" + ", ".join(describe(a) for a in args) + ")"
    return getattr(hint, "__name__", str(hint))


def check_types(owner: str, cls: type, values: Mapping[str, Any]) -> None:
    """Raise :class:`~saetrack.config.base.ConfigError` for the first of ``values`` (field name -> value) whose
    value is not of the type ``cls`` (a dataclass) annotates for that field, naming ``owner.field``."""
    hints = get_type_hints(cls)
    for name, value in values.items():
        if name in hints and not conforms(value, hints[name]):
            fail(owner, name, value, f"must be {describe(hints[name])}")
