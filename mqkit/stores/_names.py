"""Table names checked before they go into SQL (internal; shared by every SQL store)."""

from __future__ import annotations

import re

from mqkit.errors import ConfigurationError

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")


def check_table_name(table: str) -> str:
    """``table`` if it is a plain SQL identifier (letters, digits, ``_``; at most 63 chars).

    Raises ``ConfigurationError`` otherwise, so a name can be quoted into SQL safely.
    """
    if not _IDENTIFIER.fullmatch(table):
        raise ConfigurationError(
            f"bad table name {table!r}: use letters, digits and _ "
            "(not starting with a digit, at most 63 characters)"
        )
    return table
