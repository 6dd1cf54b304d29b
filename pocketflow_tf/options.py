"""Typed learner options: one declaration serves validation, records, the CLI and the docs.

Every learner declares its constructor options once, as a frozen dataclass subclassing
:class:`Options` whose fields are made with :func:`option`. A field carries its help text,
its accepted values (``choices``, a numeric range) and how a command-line string becomes a
value. From that one declaration:

* the learner's constructor validates every keyword (one path, :meth:`Options.validate`:
  types, booleans never taken for integers, choices, ranges, then the class's own
  cross-field :meth:`Options.check`);
* ``Learner.get_config`` / ``Learner.from_config`` round-trip the options through JSON;
* the application layer defines a flag per field (flags shared by learners with the same
  field, e.g. ``cp_channel_round``, are one flag) and :func:`reference_markdown` writes the
  flag reference of the documentation, so neither can drift from the code.

Example:
    >>> import dataclasses
    >>> @dataclasses.dataclass(frozen=True)
    ... class SketchOptions(Options):
    ...     sk_bits: int = option(8, help="bits per weight", low=2, high=8)
    ...     sk_mode: str = option("fast", help="how", choices=("fast", "exact"))
    >>> SketchOptions(sk_bits=4).sk_bits
    4
    >>> SketchOptions(sk_bits=True)
    Traceback (most recent call last):
    ...
    pocketflow_tf.errors.InvalidArgumentError: Invalid value for `sk_bits`: True. Accepted: an integer in [2, 8].
    >>> SketchOptions.from_config(SketchOptions(sk_mode="exact").to_config()).sk_mode
    'exact'
"""

from __future__ import annotations

import dataclasses
import functools
import numbers
import operator
import sys
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar

import numpy as np

from pocketflow_tf import errors

_MISSING = dataclasses.MISSING


def option(
    default: Any = _MISSING,
    *,
    help: str,  # noqa: A002  (the word every CLI library uses for it)
    choices: Sequence[Any] | None = None,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
    parse: Callable[[str], Any] | None = None,
    metavar: str | None = None,
    cli: bool = True,
    accepted: str | None = None,
    path: str | None = None,
) -> Any:
    """A field of an :class:`Options` dataclass with what the CLI and the docs need.

    Args:
        default: The default value; omit it for a required option. Lists are stored as
            tuples and mappings as dicts, so a default can be given as either.
        help: One line saying what the option does (flag help and reference page).
        choices: The accepted values (a CLI enum).
        low: Smallest accepted number (inclusive unless ``low_open``).
        high: Largest accepted number (inclusive unless ``high_open``).
        low_open: ``low`` itself is refused.
        high_open: ``high`` itself is refused.
        parse: Turns a command-line string into the value (for mappings, pairs...); it
            raises ``ValueError`` on a bad string.
        metavar: How the CLI shows the expected string (with ``parse``).
        cli: ``False`` for options of the Python API only (e.g. a callable hook).
        accepted: What the error and the reference say is accepted, when the type and range
            do not say it well.
        path: ``"dir"`` or ``"file"`` for an option naming an output the learner writes: the
            application checks it is writable before any work.

    Returns:
        A ``dataclasses.Field``.

    Example:
        >>> f = option(0.5, help="keep ratio", low=0, high=1, low_open=True)
        >>> f.metadata["help"], f.default
        ('keep ratio', 0.5)
    """
    if isinstance(default, list):
        default = tuple(default)
    metadata = {
        "help": help,
        "choices": None if choices is None else tuple(choices),
        "low": low,
        "high": high,
        "low_open": low_open,
        "high_open": high_open,
        "parse": parse,
        "metavar": metavar,
        "cli": cli,
        "accepted": accepted,
        "path": path,
    }
    if isinstance(default, dict):
        return dataclasses.field(default_factory=lambda: dict(default), metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def hook(signature: str, *, help: str) -> Any:  # noqa: A002  (as in option())
    """A Python-only option holding a callable that replaces a built-in step (a search).

    ``None`` by default; anything else must be callable. Not a command-line flag and not
    recorded by :meth:`Options.to_config` (a function has no JSON form).

    Args:
        signature: How it is called, e.g. ``"(layer_infos, target)"`` (said by the error).
        help: What it replaces.

    Returns:
        A ``dataclasses.Field``.

    Example:
        >>> import dataclasses
        >>> @dataclasses.dataclass(frozen=True)
        ... class O(Options):
        ...     search: Any = hook("(problem)", help="replaces the search")
        >>> O(search=len).search is len
        True
        >>> O(search=3)
        Traceback (most recent call last):
        ...
        pocketflow_tf.errors.InvalidArgumentError: Invalid value for `search`: 3. Accepted: None or a callable(problem).
    """
    field = option(None, cli=False, help=help, accepted=f"None or a callable{signature}")
    field.metadata = types.MappingProxyType({**field.metadata, "hook": True})
    return field


@dataclasses.dataclass(frozen=True)
class Options:
    """Base class of a learner's options (a frozen dataclass of :func:`option` fields).

    Subclasses are frozen dataclasses too; they add cross-field rules in :meth:`check`.
    Values are normalised on construction: lists become tuples, numpy numbers Python
    numbers, integral floats given for an ``int`` refused (not truncated).

    Example:
        >>> Options().to_config()
        {}
    """

    #: Prefix that the fields share (``cp_``...), dropped by ``compress``-style keywords.
    prefix: ClassVar[str] = ""

    def __post_init__(self):
        self.validate()
        self.check()

    # -- validation --------------------------------------------------------------------
    def validate(self) -> None:
        """Checks and normalises every field against its type, choices and range.

        Example:
            >>> import dataclasses
            >>> @dataclasses.dataclass(frozen=True)
            ... class O(Options):
            ...     o_ratio: float = option(0.5, help="r", low=0, high=1, low_open=True)
            >>> O(o_ratio=0)
            Traceback (most recent call last):
            ...
            pocketflow_tf.errors.InvalidArgumentError: Invalid value for `o_ratio`: 0. Accepted: a number in (0, 1].
        """
        hints = _hints(type(self))
        for f in dataclasses.fields(self):
            value = _coerce(f, hints[f.name], getattr(self, f.name))
            object.__setattr__(self, f.name, value)

    def check(self) -> None:
        """Cross-field rules of a subclass (default: none); raises ``InvalidArgumentError``.

        Example:
            >>> Options().check() is None
            True
        """

    def _set(self, name: str, value: Any) -> None:
        """Replaces a field's value from :meth:`check` (a derived default, a canonical
        name): the dataclass is frozen for everyone else."""
        object.__setattr__(self, name, value)

    # -- (de)serialisation -------------------------------------------------------------
    def to_config(self) -> dict[str, Any]:
        """The options as JSON-ready values (tuples as lists, mappings as dicts).

        Example:
            >>> import dataclasses
            >>> @dataclasses.dataclass(frozen=True)
            ... class O(Options):
            ...     o_layers: tuple[str, ...] = option((), help="layers")
            >>> O(o_layers=["a", "b"]).to_config()
            {'o_layers': ['a', 'b']}
        """
        return {
            f.name: _jsonable(getattr(self, f.name))
            for f in dataclasses.fields(self)
            if f.metadata.get("cli", True) or _jsonable_value(getattr(self, f.name))
        }

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> Options:
        """Options from :meth:`to_config`'s dict (keys of other settings are ignored).

        Example:
            >>> Options.from_config({"learner": "x"})
            Options()
        """
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in config.items() if k in names})

    @classmethod
    def names(cls) -> tuple[str, ...]:
        """The option names, in declaration order.

        Example:
            >>> Options.names()
            ()
        """
        return tuple(f.name for f in dataclasses.fields(cls))

    @classmethod
    def split(cls, kwargs: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        """``kwargs`` parted into ``(this class's options, the rest)``.

        Example:
            >>> Options.split({"verbose": 0})
            ({}, {'verbose': 0})
        """
        names = set(cls.names())
        mine = {k: v for k, v in kwargs.items() if k in names}
        return mine, {k: v for k, v in kwargs.items() if k not in names}


# -- field checking -----------------------------------------------------------------------


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    """Each field's type; an annotation that cannot be evaluated (a hook's callable type
    naming a forward reference) counts as ``Any``: such options are checked by the learner."""
    out: dict[str, Any] = {}
    for klass in reversed(cls.__mro__):
        namespace = vars(sys.modules[klass.__module__])
        for name, annotation in klass.__dict__.get("__annotations__", {}).items():
            if isinstance(annotation, str):
                try:
                    annotation = eval(annotation, namespace, dict(vars(klass)))  # noqa: S307
                except Exception:  # noqa: BLE001 (any failure: not a checkable type)
                    annotation = Any
            out[name] = annotation
    return out


def unwrap_optional(tp: Any) -> tuple[Any, bool]:
    """``(T, True)`` for ``T | None``; ``(tp, False)`` otherwise.

    Example:
        >>> unwrap_optional(int | None), unwrap_optional(str)
        ((<class 'int'>, True), (<class 'str'>, False))
    """
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) < len(typing.get_args(tp)):
            return functools.reduce(operator.or_, args), True
    return tp, False


#: :func:`default_of` a required option (one without a default).
REQUIRED = "(required)"


def field_type(options_cls: type[Options], name: str) -> Any:
    """The evaluated type of option ``name`` of ``options_cls`` (``Any`` when unknown).

    Example:
        >>> import dataclasses
        >>> @dataclasses.dataclass(frozen=True)
        ... class O(Options):
        ...     o_n: int | None = option(None, help="n")
        >>> field_type(O, "o_n")
        int | None
    """
    return _hints(options_cls).get(name, Any)


def default_of(f: dataclasses.Field) -> Any:
    """A field's default, JSON-ready (:data:`REQUIRED` when it has none).

    Example:
        >>> import dataclasses
        >>> @dataclasses.dataclass(frozen=True)
        ... class O(Options):
        ...     o_layers: tuple[str, ...] = option(("a",), help="layers")
        >>> default_of(dataclasses.fields(O)[0])
        ['a']
    """
    if f.default is not _MISSING:
        return _jsonable(f.default)
    if f.default_factory is not _MISSING:
        return _jsonable(f.default_factory())
    return REQUIRED


def is_integer(value: Any) -> bool:
    """True for Python and numpy integers, never for ``bool`` (``True`` is not a count).

    Example:
        >>> is_integer(3), is_integer(np.int64(3)), is_integer(True), is_integer(3.0)
        (True, True, False, False)
    """
    return isinstance(value, numbers.Integral) and not isinstance(value, bool | np.bool_)


def is_number(value: Any) -> bool:
    """True for real numbers (integers included), never for ``bool``.

    Example:
        >>> is_number(0.5), is_number(2), is_number(False), is_number("1")
        (True, True, False, False)
    """
    return isinstance(value, numbers.Real) and not isinstance(value, bool | np.bool_)


def check_integer(name: str, value: Any, low: int | None = None, high: int | None = None) -> int:
    """``value`` as an ``int`` when it is an integer in ``[low, high]``; else the error.

    The one integer check of the project (booleans refused: ``True`` is not a count).

    Example:
        >>> check_integer("epochs", 3, low=1)
        3
        >>> check_integer("epochs", 0, low=1)
        Traceback (most recent call last):
        ...
        pocketflow_tf.errors.InvalidArgumentError: Invalid value for `epochs`: 0. Accepted: an integer >= 1.
    """
    if not is_integer(value) or not _in_range(value, low, high, False, False):
        raise errors.InvalidArgumentError(name, value, _describe_range("an integer", low, high))
    return int(value)


def _in_range(v, low, high, low_open, high_open) -> bool:
    if low is not None and (v < low or (low_open and v == low)):
        return False
    return not (high is not None and (v > high or (high_open and v == high)))


def _describe_range(noun: str, low, high, low_open=False, high_open=False) -> str:
    if low is not None and high is not None:
        return f"{noun} in {'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"
    if low is not None:
        return f"{noun} {'>' if low_open else '>='} {low}"
    if high is not None:
        return f"{noun} {'<' if high_open else '<='} {high}"
    return noun


def accepted(f: dataclasses.Field, tp: Any) -> str:
    """What a field accepts, in words (errors and the flag reference).

    Example:
        >>> import dataclasses
        >>> @dataclasses.dataclass(frozen=True)
        ... class O(Options):
        ...     o_n: int | None = option(None, help="n", low=1)
        >>> accepted(dataclasses.fields(O)[0], int | None)
        'an integer >= 1, or None'
    """
    md = f.metadata
    tp, optional = unwrap_optional(tp)
    if md.get("accepted"):
        text = md["accepted"]
    elif md.get("choices"):
        text = f"one of {list(md['choices'])}"
    elif tp is bool:
        text = "True or False"
    elif tp in (int, float):
        noun = "an integer" if tp is int else "a number"
        text = _describe_range(noun, md["low"], md["high"], md["low_open"], md["high_open"])
    elif typing.get_origin(tp) is tuple:
        text = "a list of names" if typing.get_args(tp)[:1] == (str,) else "a tuple"
    elif typing.get_origin(tp) in (dict, Mapping) or tp in (dict, Mapping):
        text = "a {name: value} mapping"
    elif tp is str:
        text = "a string"
    else:
        text = getattr(tp, "__name__", str(tp))
    return f"{text}, or None" if optional and not md.get("accepted") else text


def _coerce(f: dataclasses.Field, tp: Any, value: Any) -> Any:
    """``value`` checked against field ``f`` of type ``tp``, normalised."""
    md = f.metadata
    inner, optional = unwrap_optional(tp)
    if value is None:
        if optional or f.default is None:
            return None
        raise errors.InvalidArgumentError(f.name, value, accepted(f, tp))
    bad = errors.InvalidArgumentError(f.name, value, accepted(f, tp))
    if md.get("hook"):
        if not callable(value):
            raise bad
        return value
    if md.get("choices") is not None:
        if isinstance(value, bool | np.bool_) and not all(
            isinstance(c, bool) for c in md["choices"]
        ):
            raise bad
        if value not in md["choices"]:
            raise bad
        return value
    range_args = (md.get("low"), md.get("high"), md.get("low_open"), md.get("high_open"))
    if inner is bool:
        if not isinstance(value, bool | np.bool_):
            raise bad
        return bool(value)
    if inner is int:
        if not is_integer(value) or not _in_range(value, *range_args):
            raise bad
        return int(value)
    if inner is float:
        if not is_number(value) or not np.isfinite(value) or not _in_range(value, *range_args):
            raise bad
        return float(value)
    if inner is str:
        if not isinstance(value, str):
            raise bad
        return value
    origin = typing.get_origin(inner)
    if origin is tuple:
        args = typing.get_args(inner)
        if isinstance(value, str) and args[-1:] == (Ellipsis,) and args[0] is str:
            value = (value,)  # one name given alone
        if isinstance(value, str | bytes) or not isinstance(value, Sequence | tuple | list):
            raise bad
        if args[-1:] == (Ellipsis,) and args[0] is str:
            if not all(isinstance(v, str) for v in value):
                raise bad
        elif args and args[-1] is not Ellipsis:
            if len(value) != len(args) or not all(is_integer(v) for v in value):
                raise bad
            return tuple(int(v) for v in value)
        return tuple(value)
    if origin in (dict, Mapping) or inner in (dict, Mapping):
        if not isinstance(value, Mapping):
            raise bad
        # A plain dict (not a read-only proxy): learners are deep-copied and pickled.
        return dict(value)
    return value  # other types (e.g. callables): the learner checks them


def _jsonable(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, Mapping):
        return {k: _jsonable(v) for k, v in value.items()}
    return value


def _jsonable_value(value: Any) -> bool:
    return value is None or isinstance(value, str | int | float | bool | tuple | list | Mapping)


# -- parsers for command-line strings -------------------------------------------------------


def parse_mapping(text: str | Sequence[str]) -> dict[str, float]:
    """``'a=0.5,b=0.25'`` (or its comma-split parts) as ``{'a': 0.5, 'b': 0.25}``.

    Example:
        >>> parse_mapping("conv1=0.5, conv2=0.25")
        {'conv1': 0.5, 'conv2': 0.25}
        >>> parse_mapping("conv1")
        Traceback (most recent call last):
        ...
        ValueError: 'conv1' is not a 'name=number' pair
    """
    items = text.split(",") if isinstance(text, str) else list(text)
    out = {}
    for item in items:
        name, sep, number = item.partition("=")
        try:
            if not sep or not name.strip():
                raise ValueError
            out[name.strip()] = float(number)
        except ValueError:
            raise ValueError(f"{item.strip()!r} is not a 'name=number' pair") from None
    return out


def parse_pair(text: str) -> tuple[int, int]:
    """``'2:4'`` as ``(2, 4)``.

    Example:
        >>> parse_pair("2:4")
        (2, 4)
        >>> parse_pair("2-4")
        Traceback (most recent call last):
        ...
        ValueError: '2-4' is not 'm:n'
    """
    parts = text.replace(",", ":").split(":")
    if len(parts) != 2 or not all(p.strip().isdigit() for p in parts):
        raise ValueError(f"{text!r} is not 'm:n'")
    return int(parts[0]), int(parts[1])


# -- the documentation ---------------------------------------------------------------------


def rows(options_cls: type[Options]) -> list[dict[str, Any]]:
    """One row per command-line option of ``options_cls``: name, type, default, accepted, help.

    Example:
        >>> import dataclasses
        >>> @dataclasses.dataclass(frozen=True)
        ... class O(Options):
        ...     o_n: int = option(3, help="how many", low=1)
        >>> rows(O)
        [{'name': 'o_n', 'type': 'int', 'default': 3, 'accepted': 'an integer >= 1', 'help': 'how many'}]
    """
    hints = _hints(options_cls)
    out = []
    for f in dataclasses.fields(options_cls):
        if not f.metadata.get("cli", True):
            continue
        out.append(
            {
                "name": f.name,
                "type": type_name(hints[f.name]),
                "default": default_of(f),
                "accepted": accepted(f, hints[f.name]),
                "help": f.metadata["help"],
            }
        )
    return out


def type_name(tp: Any) -> str:
    """A short readable name of an option's type.

    Example:
        >>> type_name(int | None), type_name(tuple[str, ...])
        ('int', 'list')
    """
    tp, _ = unwrap_optional(tp)
    origin = typing.get_origin(tp)
    if origin is tuple:
        return "list" if typing.get_args(tp)[-1:] == (Ellipsis,) else "pair"
    if origin in (dict, Mapping) or tp in (dict, Mapping):
        return "mapping"
    return getattr(tp, "__name__", str(tp))


def reference_markdown() -> str:
    """The flag reference of every registered learner, as Markdown (the docs page).

    Generated from the ``Options`` fields, so it cannot drift from the code. The learners
    must be registered first (``import pocketflow_tf.learners``): the core does not import
    them.

    Example:
        >>> import pocketflow_tf.learners
        >>> text = reference_markdown()
        >>> "`--cp_preserve_ratio`" in text and "## channel" in text
        True
    """
    from pocketflow_tf import learner as learner_lib  # the registry imports this module

    lines = [
        "Each learner reads the flags below (`--name value` on the command line, the same",
        "name as a keyword of the learner's constructor in Python). A flag of another",
        "learner is refused, not ignored.",
        "",
    ]
    for name in learner_lib.available():
        cls = learner_lib.get_learner_class(name)
        table = rows(cls.Options)
        lines += [f"## {name}", "", (cls.__doc__ or "").strip().splitlines()[0], ""]
        if not table:
            lines += ["No options of its own: the common flags only.", ""]
            continue
        lines += ["| flag | type | default | accepted | what it does |", "|---|---|---|---|---|"]
        for row in table:
            cells = [
                f"`--{row['name']}`",
                row["type"],
                f"`{row['default']}`",
                str(row["accepted"]),
                row["help"],
            ]
            lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
        lines.append("")
    return "\n".join(lines)
