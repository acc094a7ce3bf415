"""Which catalog links may be stored and rendered: http(s) addresses and paths on this server, nothing else.

A link is tenant-supplied text that ends up in ``href`` and ``src`` attributes (the demo storefront, the
dashboard, the widget's product cards, Meta messages). Anything but http(s) (``javascript:``, ``vbscript:``,
``data:``, ``file:``...) can run script or smuggle content when clicked, so it is dropped on import and never
rendered. Kept:

- an absolute ``http://`` or ``https://`` URL with a host (the scheme in any case, as browsers read it);
- a root-relative path (``/static/demo/tent.svg``: the demo catalog's images live on this server).

Dropped as well: protocol-relative ``//host/...`` and ``/\\host`` (a browser reads both as another host, with
whatever scheme the page has: a shop's feed gives full addresses), and any link holding a control character
(browsers delete tabs and newlines inside a URL, so ``java\\tscript:`` would run). Surrounding whitespace is
trimmed first. ``LINK_CHECK_SQL`` is the same rule as a database CHECK (catalogs.models.Item), so a write that
skips this module (the COPY upsert, a shell) cannot store a link the pages would render.
"""

from __future__ import annotations

import re

# Positive rules only: a scheme blocklist is always one spelling short.
_ABSOLUTE = re.compile(r"^https?://[^/?#\\]", re.IGNORECASE)
_ROOT_RELATIVE = re.compile(r"^/[^/\\]")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")

# Postgres regexes for the CHECK constraints, equivalent to _ABSOLUTE and _ROOT_RELATIVE (the control character
# rule is enforced in Python only; such a link never has an http(s) scheme to a browser that it lacks here).
ABSOLUTE_SQL_REGEX = r"^https?://[^/?#\\]"
ROOT_RELATIVE_SQL_REGEX = r"^/[^/\\]"


def http_link(raw: object) -> str | None:
    """``raw`` trimmed when it is a link we store and render, ``""`` for no link, ``None`` for one to drop."""
    if raw is None:
        return ""
    text = str(raw).strip()
    if not text:
        return ""
    if _CONTROL.search(text):
        return None
    if _ABSOLUTE.match(text) or _ROOT_RELATIVE.match(text):
        return text
    return None


def safe_link(raw: object) -> str:
    """For rendering: the link when it may be rendered, else ``""`` (templates then show no link at all)."""
    return http_link(raw) or ""
