"""A streamed guard for XML files (feeds, and the XML inside XLSX packages), run before a parser builds
anything: a text too long, a DTD or too many elements refuse the file."""

from __future__ import annotations

from typing import IO
from xml.parsers import expat

from catalogs.importers.base import FileRejected


def scan_xml_texts(
    stream: IO[bytes],
    what: str,
    *,
    max_count: int = 0,
    count_tag: str = "",
    dtd_refusal: str = "",
    malformed_ok: bool = False,
) -> None:
    """Stream XML through expat once: refuse a text run longer than CATALOG_MAX_FIELD_BYTES, a DTD, or (with
    ``count_tag``) more than ``max_count`` such elements. Memory: one read and a counter, whatever the text
    (ElementTree would build a huge text whole before anyone could look at it). ``malformed_ok``: stop at the
    first syntax error quietly, for a caller whose own parser reports it."""
    from django.conf import settings

    field_limit = settings.CATALOG_MAX_FIELD_BYTES
    run = 0
    count = 0

    def start(tag: str, attrs: object) -> None:
        nonlocal run, count
        run = 0
        if count_tag and tag == count_tag:
            count += 1

    def end(tag: str) -> None:
        nonlocal run
        run = 0

    def text(data: str) -> None:
        nonlocal run
        run += len(data)
        if run > field_limit:
            raise FileRejected(
                f"{what} holds a text over {field_limit:,} characters (CATALOG_MAX_FIELD_BYTES)"
            )

    def doctype(*args: object) -> None:
        raise FileRejected(dtd_refusal or f"{what} declares a DTD; refusing it")

    parser = expat.ParserCreate()
    parser.StartDoctypeDeclHandler = doctype
    parser.EntityDeclHandler = doctype
    parser.StartElementHandler = start
    parser.EndElementHandler = end
    parser.CharacterDataHandler = text
    try:
        while chunk := stream.read(1 << 20):
            parser.Parse(chunk, False)
            if count_tag and count > max_count:
                raise FileRejected(f"{what} has more than {max_count:,} <{count_tag}> elements")
        parser.Parse(b"", True)
    except expat.ExpatError as exc:
        if malformed_ok:
            return  # the parser that follows reports it in its own words (and rolls back what it wrote)
        raise FileRejected(f"{what} is not valid XML ({exc})") from exc
