"""The arguments of a merge as member texts: what a one-statement merge sends the database."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from .. import _codec, _validate
from ..errors import ValueNotSerializableError
from ._base import check_removals, check_text

__all__ = ["member_texts", "text_merge_args"]


def _changes(key: str, changes: Any) -> Mapping[Any, Any]:
    if changes is None:
        return {}
    if not isinstance(changes, Mapping):
        raise ValueNotSerializableError(
            f"merge(set=...) for session key {key!r} must be a mapping of str keys, got "
            f"{type(changes).__name__}."
        )
    for name in changes:
        if type(name) is not str:
            raise ValueNotSerializableError(
                f"merge(set=...) for session key {key!r} must have str keys, got "
                f"{type(name).__name__}: {name!r}."
            )
    return changes


def member_texts(
    key: str, changes: Mapping[str, Any] | None, delete: Iterable[str]
) -> tuple[dict[str, str], list[str]]:
    """`merge_item`'s arguments checked, each new member encoded on its own.

    Each value is encoded once, one level less deep than a whole item may be (it sits
    inside the stored dict).

    Raises:
        InvalidKeyError, ValueNotSerializableError: bad input.
    """
    _validate.check_key(key)
    members = _changes(key, changes)
    removals = check_removals(key, delete)
    depth = _codec.MAX_DEPTH - 1
    return {n: _codec.encode(key, v, max_depth=depth) for n, v in members.items()}, removals


def text_merge_args(
    key: str, texts: Mapping[str, str] | None, delete: Iterable[str]
) -> tuple[dict[str, str], list[str]]:
    """`merge_existing_text`'s arguments checked; the texts are left as they are.

    Raises:
        InvalidKeyError, ValueNotSerializableError: bad input (a text that is not a str).
    """
    _validate.check_key(key)
    members = _changes(key, texts)
    removals = check_removals(key, delete)
    return {name: check_text(key, text) for name, text in members.items()}, removals
