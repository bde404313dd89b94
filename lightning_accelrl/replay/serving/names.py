"""Names of served tables: the rule both ends check, and how a name picks one of a server's tables.

A served table's name is a short identifier: a letter or ``_``, then up to 63 letters, digits, ``_``, ``.`` or
``-``. The first table given to a server is its default: a call that names no table addresses it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Any

from lightning_accelrl.errors import ConfigError

__all__ = ["check_table_name", "check_table_names", "is_table_name", "pick_table", "unknown_table"]

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.\-]{0,63}")


def is_table_name(name: Any) -> bool:
    return isinstance(name, str) and _NAME.fullmatch(name) is not None


def check_table_name(name: Any) -> str:
    """``name`` if it is a valid served table name, else ConfigError."""
    if not is_table_name(name):
        raise ConfigError(
            f"table name {name!r} is not a short identifier (a letter or _, then up to 63 letters, digits, _ . -)"
        )
    return name


def check_table_names(names: Iterable[Any]) -> tuple[str, ...]:
    """The names of one server's tables, each valid and none twice; ConfigError otherwise."""
    out: list[str] = []
    for name in names:
        if check_table_name(name) in out:
            raise ConfigError(f"two tables are named {name!r}: the tables of one server need distinct names")
        out.append(name)
    if not out:
        raise ConfigError("a table server needs at least one table")
    return tuple(out)


def unknown_table(name: Any, names: Sequence[str]) -> ConfigError:
    return ConfigError(f"no table {name!r} on this server; its tables are {', '.join(map(repr, names))}")


def pick_table(name: str | None, names: Sequence[str]) -> str:
    """``name`` if the server has such a table, the default (first) table for None; ConfigError otherwise."""
    if name is None:
        return names[0]
    if check_table_name(name) not in names:
        raise unknown_table(name, names)
    return name
