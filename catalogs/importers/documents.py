"""FAQs and policies: Markdown, plain text and PDF, cut into chunks by headings and then by size.

A chunk is what retrieval returns and the agent quotes, so it keeps its heading path ("Returns > Refunds")
and breaks at paragraph boundaries, never inside a sentence when a paragraph boundary is near.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TextIO

from catalogs.importers.base import FileRejected, ParsedChunk, RowResult

MAX_CHUNK_CHARS = 1200
# Memory per section and per line, whatever the file: a section is emitted in parts past this size.
MAX_SECTION_CHARS = 64 * 1024
MAX_LINE_CHARS = 64 * 1024
_ATX = re.compile(r"^(#{1,6})\s+(.+?)\s*#*\s*$")
_SETEXT = re.compile(r"^(=+|-+)\s*$")


def split_text(text: str, max_chars: int = MAX_CHUNK_CHARS) -> list[str]:
    """Paragraphs packed into pieces of at most ``max_chars`` (a longer paragraph is cut at sentence ends,
    and a sentence longer still at ``max_chars``), in the text's order."""
    parts: list[str] = []
    for paragraph in re.split(r"\n\s*\n", text):
        paragraph = paragraph.strip()
        if len(paragraph) > max_chars:
            parts.extend(_pack(_sentences(paragraph, max_chars), max_chars, " "))
        elif paragraph:
            parts.append(paragraph)
    return _pack(parts, max_chars, "\n\n")


def _sentences(paragraph: str, max_chars: int) -> Iterator[str]:
    for sentence in re.split(r"(?<=[.!?])\s+", paragraph):
        while len(sentence) > max_chars:
            yield sentence[:max_chars]
            sentence = sentence[max_chars:]
        if sentence:
            yield sentence


def _pack(units: Iterable[str], max_chars: int, joiner: str) -> list[str]:
    """``units`` (each at most ``max_chars``) joined into as few pieces of at most ``max_chars`` as they go."""
    pieces: list[str] = []
    current = ""
    for unit in units:
        if current and len(current) + len(joiner) + len(unit) > max_chars:
            pieces.append(current)
            current = ""
        current = f"{current}{joiner}{unit}" if current else unit
    if current:
        pieces.append(current)
    return pieces


def markdown_sections(lines: Iterator[str]) -> Iterator[tuple[int, str, str]]:
    """(line number, heading path, body) per section of a Markdown document."""
    path: list[tuple[int, str]] = []
    body: list[str] = []
    start = 1
    size = 0
    previous: str | None = None

    def flush() -> tuple[int, str, str]:
        return start, " > ".join(title for _, title in path), "\n".join(body).strip()

    for number, raw in enumerate(lines, start=1):
        line = raw.rstrip("\n")
        atx = _ATX.match(line)
        setext = _SETEXT.match(line) if previous and previous.strip() and body else None
        if atx or setext:
            if setext:
                title, level = body.pop().strip(), 1 if line.startswith("=") else 2
            else:
                assert atx is not None
                title, level = atx.group(2).strip(), len(atx.group(1))
            section = flush()
            if section[2]:
                yield section
            path = [(lvl, t) for lvl, t in path if lvl < level] + [(level, title)]
            body, start, size = [], number, 0
        else:
            body.append(line)
            size += len(line) + 1
            # Bounded memory: a long section goes out in parts (same heading), at a paragraph break when
            # there is one, else at MAX_SECTION_CHARS * 4.
            if size > MAX_SECTION_CHARS and (not line.strip() or size > MAX_SECTION_CHARS * 4):
                section = flush()
                if section[2]:
                    yield section
                body, start, size = [], number + 1, 0
        previous = line
    section = flush()
    if section[2]:
        yield section


def _chunks(sections: Iterator[tuple[int, str, str]]) -> Iterator[RowResult]:
    for number, heading, body in sections:
        for piece in split_text(body):
            yield ParsedChunk(number, heading[:500], piece)


def _bounded_lines(f: TextIO) -> Iterator[str]:
    # A line is never read whole past MAX_LINE_CHARS: a longer one arrives in pieces (as separate lines).
    while piece := f.readline(MAX_LINE_CHARS):
        yield piece


def markdown_results(path: Path) -> Iterator[RowResult]:
    with path.open(encoding="utf-8-sig", errors="replace") as f:
        yield from _chunks(markdown_sections(_bounded_lines(f)))


def text_results(path: Path) -> Iterator[RowResult]:
    # Plain text often underlines headings (setext); the Markdown reader handles that and plain paragraphs.
    yield from markdown_results(path)


def pdf_results(path: Path) -> Iterator[RowResult]:
    from pypdf import PdfReader
    from pypdf.errors import PdfReadError

    try:
        reader = PdfReader(path)
        if reader.is_encrypted:
            raise FileRejected("the PDF is encrypted")
        pages = list(reader.pages)
    except PdfReadError as exc:
        raise FileRejected(f"the PDF cannot be read ({exc})") from exc
    found = False
    for number, page in enumerate(pages, start=1):
        text = page.extract_text() or ""
        for _line, heading, body in markdown_sections(iter(text.splitlines())):
            for piece in split_text(body):
                found = True
                yield ParsedChunk(number, (heading or f"Page {number}")[:500], piece)
    if not found:
        raise FileRejected("the PDF holds no extractable text (a scanned image?)")
