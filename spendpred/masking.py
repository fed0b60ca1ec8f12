"""What a message may show of its input: secrets masked, echoed input cut short.

The one rule for every message, log line, page and summary that names a URL or echoes a
value. It sits on the ground floor with ``spendpred.errors``: it imports nothing of
spendpred, so every module may use it.

* :func:`mask_url` shows a URL (text or a SQLAlchemy ``URL``) with its password replaced by
  ``***``, also when the URL cannot be parsed;
* :func:`mask_secrets` masks every URL password and ``password=...`` inside free text (a
  library's error message that echoes a URL);
* :func:`excerpt` cuts echoed input to a short ``repr``.
"""

from __future__ import annotations

import re

MASK = "***"
"""What a secret is replaced by."""

_NETLOC_SECRET = re.compile(r"(?P<head>://[^:/@\s'\"]*):(?P<secret>[^\s'\"]*)@")
"""``scheme://user:<secret>@``: what sits between the user's ':' and the '@' of a URL's netloc."""
_LIBPQ_PASSWORD = re.compile(r"(?i)(password\s*=\s*)('[^']*'|\S+)")
_PLACEHOLDERS = frozenset({"password", "PASSWORD", MASK})


def mask_secrets(text: object) -> str:
    """Return ``text`` with every URL password (``scheme://user:<here>@``) and ``password=...`` masked."""
    text = _NETLOC_SECRET.sub(
        lambda m: m.group(0) if m.group("secret") in _PLACEHOLDERS else f"{m.group('head')}:{MASK}@", str(text)
    )
    return _LIBPQ_PASSWORD.sub(lambda m: f"{m.group(1)}{MASK}", text)


def mask_url(url: object) -> str:
    """Return a URL fit for a message: its password replaced by ``***``, even when it cannot be parsed.

    ``url`` is text or a SQLAlchemy ``URL`` (an engine's ``engine.url``); a URL SQLAlchemy can
    parse is rendered as SQLAlchemy renders it, then masked by :func:`mask_secrets` (a password
    in the query string too); anything else is masked by :func:`mask_secrets` alone. Raises nothing.
    """
    try:
        from sqlalchemy.engine import make_url

        return mask_secrets(make_url(str(url)).render_as_string(hide_password=True))
    except Exception:  # noqa: BLE001 - an unparsable URL is masked by pattern instead
        return mask_secrets(str(url))


def excerpt(text: object, limit: int = 60) -> str:
    """Return echoed input fit for a message: its ``repr``, cut to ``limit`` characters with its length when longer."""
    value = str(text)
    if len(value) <= limit:
        return repr(value)
    return f"{value[:limit]!r}... ({len(value):,} characters)"
