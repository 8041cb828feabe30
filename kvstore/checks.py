"""The checks of one YAML setting each: a value in, the checked value out, or a
:class:`~kvstore.ConfigError` that names the setting (``persistence.redis.url: expected a
string, got int 5``). :mod:`kvstore.config` builds its sections from them, and a third-party
backend's ``settings`` function (see :mod:`kvstore.registry`) may too.

Every string has ``${VAR}`` / ``${VAR:-default}`` expanded; paths have ``~`` expanded.
"""

from __future__ import annotations

import os
import re
from dataclasses import fields
from pathlib import Path
from typing import Any, Mapping

from .errors import ConfigError, InvalidTTLError
from .store import parse_ttl

__all__ = ["expand_env", "mask_secrets", "text", "opt_text", "boolean", "whole", "opt_whole", "seconds",
           "duration", "path", "choice", "mapping", "section", "serializer", "SERIALIZERS"]

SERIALIZERS = ("json", "msgpack", "pickle", "json+gzip", "msgpack+gzip", "pickle+gzip")
_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-(.*?))?\}")


def expand_env(value: str, setting: str) -> str:
    """Replace ``${VAR}`` and ``${VAR:-default}``; an unset variable without default is an error."""

    def sub(m: re.Match[str]) -> str:
        name, default = m.group(1), m.group(2)
        found = os.environ.get(name)
        if found is None or (found == "" and default is not None):
            if default is None:
                raise ConfigError(f"{setting}: environment variable {name} is not set "
                                  f"(write ${{{name}:-default}} to give a default)")
            return default
        return found

    return _ENV.sub(sub, value)


def text(value: Any, setting: str) -> str:
    if not isinstance(value, str):
        raise ConfigError(f"{setting}: expected a string, got {type(value).__name__} {value!r}")
    return expand_env(value, setting)


def opt_text(value: Any, setting: str) -> str | None:
    if value is None:
        return None
    return text(value, setting) or None


def boolean(value: Any, setting: str) -> bool:
    if isinstance(value, str):
        value = expand_env(value, setting).strip().lower()
        if value in ("true", "yes", "on", "1"):
            return True
        if value in ("false", "no", "off", "0", ""):
            return False
    if not isinstance(value, bool):
        raise ConfigError(f"{setting}: expected true or false, got {value!r}")
    return value


def whole(value: Any, setting: str, minimum: int = 0) -> int:
    if isinstance(value, str):
        digits = expand_env(value, setting).strip()
        value = int(digits) if digits.lstrip("-").isdigit() else value
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{setting}: expected a whole number, got {value!r}")
    if value < minimum:
        raise ConfigError(f"{setting}: must be at least {minimum}, got {value}")
    return value


def opt_whole(value: Any, setting: str, minimum: int = 0) -> int | None:
    return None if value is None else whole(value, setting, minimum)


def seconds(value: Any, setting: str) -> float:
    """A positive number of seconds."""
    if isinstance(value, str):
        try:
            value = float(expand_env(value, setting))
        except ValueError:
            pass
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        raise ConfigError(f"{setting}: expected a positive number of seconds, got {value!r}")
    return float(value)


def duration(value: Any, setting: str) -> float | None:
    """A duration (``90``, ``'15m'``, ``'7d'``), or None for never / permanent."""
    if value is None:
        return None
    if isinstance(value, str):
        value = expand_env(value, setting)
        if value.strip().lower() in ("", "none", "never", "permanent"):
            return None
    try:
        return parse_ttl(value, setting)
    except InvalidTTLError:
        raise ConfigError(f"{setting}: {value!r} is not a duration "
                          "(use seconds or e.g. '90s', '15m', '1h', '7d')") from None


def path(value: Any, setting: str) -> Path | None:
    found = opt_text(value, setting)
    return None if found is None else Path(os.path.expanduser(found))


def choice(value: Any, setting: str, choices: tuple[str, ...]) -> str:
    found = text(value, setting)
    if found not in choices:
        raise ConfigError(f"{setting}: {found!r} is not one of {', '.join(choices)}")
    return found


def serializer(value: Any, setting: str) -> str:
    return choice(value, setting, SERIALIZERS)


def mapping(value: Any, setting: str) -> Mapping[str, Any]:
    """A mapping with string keys (None: an empty one)."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ConfigError(f"{setting}: expected a mapping, got {type(value).__name__} {value!r}")
    for key in value:
        if not isinstance(key, str):
            raise ConfigError(f"{setting}: setting names must be strings, got {key!r}")
    return value


def section(cls: type, value: Any, setting: str, checkers: Mapping[str, Any]) -> Any:
    """Build dataclass ``cls`` from a mapping, refusing unknown keys, checking each value with
    ``checkers[key](value, setting)``."""
    data = mapping(value, setting)
    known = {f.name for f in fields(cls)}
    for key in data:
        if key not in known:
            raise ConfigError(f"{setting}.{key}: unknown setting (known: {', '.join(sorted(known))})")
    return cls(**{key: checkers[key](raw, f"{setting}.{key}") for key, raw in data.items()})


_SECRET_IN_URL = re.compile(r"(?P<scheme>[a-z][a-z0-9+.-]*://)(?P<user>[^:@/]*):(?P<pw>[^@/]+)@",
                            re.IGNORECASE)


def mask_secrets(text: str) -> str:
    """``redis://user:***@host`` for ``redis://user:secret@host`` (also DSN ``password=...``)."""
    text = _SECRET_IN_URL.sub(lambda m: f"{m['scheme']}{m['user']}:***@", text)
    return re.sub(r"(password\s*=\s*)(\S+)", r"\1***", text, flags=re.IGNORECASE)
