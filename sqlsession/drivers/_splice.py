"""Merging JSON texts into a stored JSON object, re-encoding only what must move.

`SupportsJSONText.merge_existing_text` gets the new members of a dict as JSON texts the
caller encoded. A driver that keeps the whole item as one text (the memory driver) puts
them in by string concatenation; what it must still decode and encode is the part of the
stored object those members replace. `Spliced` remembers how it built the last text of an
item: the members it left alone as one fragment (``base``) and the ones it spliced in
(``overrides``). The next merge of the same names then decodes and encodes nothing; a
merge touching a name in ``base`` decodes and re-encodes ``base`` only, once.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from json.encoder import encode_basestring

from .. import _codec
from ._base import apply_merge


# No repr: the texts are the visitor's data.
@dataclass(frozen=True, repr=False, eq=False)
class Spliced:
    """An item's JSON object text, and the parts it was assembled from."""

    text: str
    """The whole object, as stored."""
    base: str
    """The members left as they were, as one fragment without braces ("" for none)."""
    base_names: frozenset[str]
    overrides: dict[str, str]
    """The members spliced in, by name, as JSON texts; none of them is in `base`."""


def splice(
    key: str,
    stored: str,
    previous: Spliced | None,
    changes: Mapping[str, str],
    delete: Iterable[str],
) -> Spliced:
    """The object `stored` with `changes` (names to JSON texts) set and `delete` removed.

    Args:
        key: the item's key, for error messages.
        stored: the item's current text.
        previous: how the driver built its last text of this item, if it remembers; used
            only when that text is `stored` itself.
        changes: members to set, as JSON texts.
        delete: names of members to remove.

    Raises:
        ValueNotSerializableError: the stored item is not a dict.
        CorruptValueError: the stored text cannot be decoded.
    """
    touched = {*changes, *delete}
    if previous is not None and previous.text is stored:
        overrides = dict(previous.overrides)
        if touched.isdisjoint(previous.base_names):
            base, names = previous.base, previous.base_names
        else:
            base, names = _rebuild(key, "{" + previous.base + "}", touched)
    else:
        overrides = {}
        base, names = _rebuild(key, stored, touched)
    for name in delete:
        overrides.pop(name, None)
    overrides.update(changes)
    parts = [base] if base else []
    parts.extend(encode_basestring(n) + ":" + t for n, t in overrides.items())
    return Spliced("{" + ",".join(parts) + "}", base, names, overrides)


def _rebuild(key: str, source: str, touched: set[str]) -> tuple[str, frozenset[str]]:
    """The members of the object `source` other than `touched`, as a fragment, and their names."""
    kept = apply_merge(key, source, {}, list(touched))  # decodes, and checks it is a dict
    return _codec.encode_trusted(kept)[1:-1], frozenset(kept)
