"""A readable, unique id per configuration: its label and a short hash of what it is.

``config_id`` (a column of :func:`mimbench.table` and of the report's frames) is the
configuration's full label (``design.json``'s ``full`` view, see :mod:`mimbench.design`) and ``#`` with the first 8 hex digits of the SHA-256 of its configuration id in ``design.json``,
e.g. ``vit / patch / labels_per_class=10 #3fa2c1d0``. The hash keeps two configurations apart that
a label does not tell apart (a dataset param, say); the same suite folder always gives the same ids.
"""

from __future__ import annotations

import hashlib
from typing import Sequence

#: Hex digits of the hash; more only if two configurations of one suite would share an id.
DIGITS = 8


def readable_ids(keys: Sequence[str], labels: Sequence[str]) -> list[str]:
    """One id per row: ``labels[i]`` and a hash of ``keys[i]`` (the row's configuration id); rows with the same key get the same id, rows with different keys different ids."""
    digests = [hashlib.sha256(key.encode()).hexdigest() for key in keys]
    distinct = len(set(keys))
    digits = DIGITS
    while len({(label, digest[:digits]) for label, digest in zip(labels, digests)}) < distinct:
        digits += 4  # a prefix collision: longer hashes, for every row alike
    return [f"{label} #{digest[:digits]}" for label, digest in zip(labels, digests)]
