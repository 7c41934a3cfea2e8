"""JSON values: refuse what would not come back equal, with the same types, before writing."""

from __future__ import annotations

import json
import math
import sys
from typing import Any

from .errors import CorruptValueError, ValueNotSerializableError


def _refuse_constant(name: str) -> Any:
    # json decodes NaN and Infinity, which encode() never writes.
    raise ValueError(f"{name} is not a JSON number")


_encoder = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":"))
_decode = json.JSONDecoder(parse_constant=_refuse_constant).decode
_SCALARS = frozenset({str, int, float, bool, type(None)})
# Python refuses to write an int of more than sys.get_int_max_str_digits() digits (4,300
# by default) as text; an int of at most this many bits is below any limit it allows.
_INT_TEXT_BITS = sys.int_info.str_digits_check_threshold * 3

MAX_DEPTH = 500
"""How many containers deep a stored value may nest (``[[1]]`` is 2).

A fixed bound rather than Python's recursion limit, which the JSON encoder and decoder
hit at a depth that depends on how deep the caller's stack already is: what is accepted
once is then accepted everywhere, also nested inside a session's row.
"""


def encode(key: str, value: Any, *, max_depth: int = MAX_DEPTH) -> str:
    """Return `value` as JSON text, or raise `ValueNotSerializableError` naming `key`.

    Accepted: dicts with str keys, lists and tuples (stored as lists), str, int, float,
    bool and None, exactly (no subclasses, whose type would not survive the round trip),
    nested at most `max_depth` containers deep. Refused: anything else, NaN and
    infinity, cycles, deeper nesting, and strings with lone surrogates.
    """
    # The C encoder refuses unknown types, NaN, infinity and cycles by itself; what it
    # lets through silently (non-str dict keys, subclasses, depth) is caught by _plain.
    # The careful walk in _check runs only to say what is wrong and where.
    try:
        text = _encoder.encode(value)
        plain = _plain(value, max_depth)
    except (TypeError, ValueError, RecursionError) as exc:
        _check(key, value, max_depth)
        raise ValueNotSerializableError(
            f"Value for session key {key!r} cannot be written as JSON: {exc}."
        ) from exc
    if not plain:
        _check(key, value, max_depth)
    return _valid_text(key, text)


def _valid_text(key: str, text: str) -> str:
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise ValueNotSerializableError(
                f"Value for session key {key!r} contains a string with a lone surrogate, "
                "which is not valid Unicode text and cannot be stored as JSON."
            ) from None
    return text


def encode_trusted(value: Any) -> str:
    """`value` as JSON text, without `encode`'s checks: for data sqlsession decoded itself.

    What `decode` returns is plain JSON already (dicts, lists, str, int, float, bool,
    None), so its text can be written back without walking it again.
    """
    return _encoder.encode(value)


def encode_changed(key: str, value: Any, text: str, *, max_depth: int = MAX_DEPTH) -> str | None:
    """`encode(key, value)` if that is not `text`, else None: one encode, checked when changed.

    Raises:
        ValueNotSerializableError: as `encode`, for a value whose JSON changed.
    """
    try:
        new = _encoder.encode(value)
    except (TypeError, ValueError, RecursionError):
        return encode(key, value, max_depth=max_depth)  # raises, saying what is wrong
    if new == text:
        return None
    if not _plain(value, max_depth):
        _check(key, value, max_depth)
        return encode(key, value, max_depth=max_depth)
    return _valid_text(key, new)


def encodes_to(value: Any, text: str) -> bool:
    """Whether `value` encodes to `text`: a cheap test for "unchanged", which validates nothing.

    Equal text means equal stored data; a value that fails to encode (or encodes to
    other text) must go through `encode` to be checked.
    """
    try:
        return _encoder.encode(value) == text
    except (TypeError, ValueError, RecursionError):
        return False


def _plain(value: Any, depth: int) -> bool:
    """Whether `value` holds only the exact accepted types and str dict keys, `depth` deep.

    Only called on a value the encoder accepted, so it has no cycles.
    """
    kind = type(value)
    if kind is dict:
        if depth < 1:
            return False
        for k, item in value.items():
            if type(k) is not str:
                return False
            if type(item) not in _SCALARS and not _plain(item, depth - 1):
                return False
        return True
    if kind is list or kind is tuple:
        if depth < 1:
            return False
        for item in value:
            if type(item) not in _SCALARS and not _plain(item, depth - 1):
                return False
        return True
    return kind in _SCALARS


def decode(text: str, key: str = "") -> Any:
    """Return the Python value of the JSON text stored under `key`.

    Raises:
        CorruptValueError: `text` is not JSON that `encode` could have written: invalid,
            nested deeper than Python's decoder follows, NaN or Infinity, or an int
            longer than Python's int/str conversion limit. Names the key, never the text.
    """
    try:
        return _decode(text)
    except RecursionError:
        reason = "it is nested too deeply for Python's JSON decoder"
    except ValueError as exc:
        # A JSONDecodeError's text gives a position, not the document.
        reason = str(exc).splitlines()[0]
    # Not chained: a JSONDecodeError carries the whole stored text in its .doc.
    raise CorruptValueError(
        f"The value stored under session key {key!r} cannot be read: {reason}. Something "
        "other than sqlsession wrote it, or it was damaged; remove_item or set_item on "
        "that key replaces it."
    ) from None


def _check(key: str, value: Any, max_depth: int) -> None:
    # An explicit stack rather than recursion: deep values must fail with our error,
    # not a RecursionError, and ids on the stack of containers catch cycles.
    # Paths are kept as (parent, step) pairs and rendered only for an error message.
    stack: list[tuple[Any, Any]] = [(value, None)]
    open_containers: set[int] = set()
    exits: list[tuple[int, int]] = []  # (stack depth at which to close, container id)
    while stack:
        while exits and len(stack) <= exits[-1][0]:
            open_containers.discard(exits.pop()[1])
        item, where = stack.pop()
        kind = type(item)
        if kind is float:
            if not math.isfinite(item):
                _refuse(key, where, f"the float {item!r}, which JSON cannot represent")
            continue
        if kind is int and item.bit_length() > _INT_TEXT_BITS:
            try:
                str(item)
            except ValueError:
                _refuse(
                    key,
                    where,
                    f"an int of more than {sys.get_int_max_str_digits()} digits, Python's "
                    "limit for converting an int to text (sys.set_int_max_str_digits); "
                    "store it as a str, or in parts",
                )
            continue
        if kind in _SCALARS:
            continue
        if kind is dict or kind is list or kind is tuple:
            ident = id(item)
            if ident in open_containers:
                _refuse(key, where, "a reference cycle")
            if len(open_containers) >= max_depth:
                raise ValueNotSerializableError(
                    f"Value for session key {key!r} nests containers more than {max_depth} "
                    "levels deep; store it flatter."
                )
            open_containers.add(ident)
            exits.append((len(stack), ident))
            if kind is dict:
                for k, v in item.items():
                    if type(k) is not str:
                        _refuse(
                            key,
                            where,
                            f"a dict key of type {type(k).__name__}; JSON object keys must be str",
                        )
                    stack.append((v, (where, k)))
            else:
                for index, v in enumerate(item):
                    stack.append((v, (where, index)))
            continue
        # The type, never the value: this message may end up in a log.
        _refuse(key, where, f"a {kind.__module__}.{kind.__qualname__}")


def _path(where: Any) -> str:
    steps: list[str] = []
    while where is not None:
        where, step = where
        steps.append(f"[{step!r}]")
    return "value" + "".join(reversed(steps))


def _refuse(key: str, where: Any, what: str) -> None:
    raise ValueNotSerializableError(
        f"Value for session key {key!r} is not JSON: {_path(where)} is {what}. Store dicts with "
        "str keys, lists, str, int, float, bool or None, and convert other types first "
        "(for example a datetime to an ISO string)."
    )
