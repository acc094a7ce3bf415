"""Catalog and FAQ importers, one module per format, each a streaming generator of row results.

``open_source(path, filename=..., format=..., mapping=..., sheet=...)`` detects the format (from the content
first, then the name), reads what must be read up front (a table's header) and returns a ``Source``: its
``format``, its ``kind`` (``items`` or ``document``) and ``results()``, the generator of ``ParsedRow`` /
``ParsedChunk`` / ``RowError``. Anything that makes the whole file unreadable raises ``FileRejected``, either
here or while the generator runs.
"""

from __future__ import annotations

import gzip
import tempfile
import zlib
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from catalogs.importers import documents, jsonfeed, tabular, xlsx, xmlfeed
from catalogs.importers.base import FileRejected, ParsedChunk, ParsedRow, RowError, RowResult
from catalogs.importers.values import parse_availability, parse_price, strip_html

__all__ = [
    "FORMATS",
    "FileRejected",
    "ParsedChunk",
    "ParsedRow",
    "RowError",
    "RowResult",
    "Source",
    "detect_format",
    "gunzipped",
    "open_source",
    "parse_availability",
    "parse_price",
    "strip_html",
]

FORMATS = ("csv", "tsv", "xlsx", "json", "jsonl", "xml", "markdown", "text", "pdf")
FORMAT_ALIASES = {"rss": "xml", "atom": "xml", "md": "markdown", "txt": "text", "ndjson": "jsonl"}
EXTENSIONS = {
    ".csv": "csv",
    ".tsv": "tsv",
    ".tab": "tsv",
    ".xlsx": "xlsx",
    ".xlsm": "xlsx",
    ".json": "json",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".xml": "xml",
    ".rss": "xml",
    ".atom": "xml",
    ".md": "markdown",
    ".markdown": "markdown",
    ".txt": "text",
    ".pdf": "pdf",
}
SNIFF = 8192


@contextmanager
def gunzipped(path: Path, filename: str, *, limit: int) -> Iterator[tuple[Path, str]]:
    """A gzip file (Google Merchant accepts ``feed.xml.gz``) unpacked to a temporary file, streaming, refused
    when it inflates past ``limit`` bytes (a gzip bomb); any other file as it is."""
    with path.open("rb") as f:
        magic = f.read(2)
    if magic != b"\x1f\x8b":
        yield path, filename
        return
    inner_name = filename[:-3] if filename.lower().endswith(".gz") else filename
    with tempfile.TemporaryDirectory(prefix="catalog-gunzip-") as folder:
        target = Path(folder) / (Path(inner_name).name or "feed")
        written = 0
        try:
            with gzip.open(path, "rb") as source, target.open("wb") as out:
                while chunk := source.read(1 << 20):
                    written += len(chunk)
                    if written > limit:
                        raise FileRejected(f"the gzip file inflates past the limit of {limit:,} bytes")
                    out.write(chunk)
        except (OSError, EOFError, zlib.error) as exc:
            raise FileRejected(f"the gzip file is damaged ({exc})") from exc
        yield target, inner_name


@dataclass
class Source:
    format: str
    kind: str  # "items" or "document"
    results: Callable[[], Iterator[RowResult]]


def normalize_format(name: str | None) -> str | None:
    if not name:
        return None
    name = name.strip().lower()
    name = FORMAT_ALIASES.get(name, name)
    if name not in FORMATS:
        raise FileRejected(f"unknown format {name!r} (known: {', '.join(FORMATS)})")
    return name


def detect_format(path: Path, filename: str) -> str:
    """The format from the first bytes, falling back on the file name's extension."""
    with path.open("rb") as f:
        head = f.read(SNIFF)
    if not head.strip():
        raise FileRejected("the file is empty")
    extension = EXTENSIONS.get(Path(filename).suffix.lower())
    if head.startswith(b"%PDF-"):
        return "pdf"
    if head.startswith(b"PK\x03\x04"):
        return "xlsx"  # check_archive refuses zips that are not workbooks
    if head.startswith((b"\x1f\x8b", b"BZh", b"7z\xbc\xaf", b"Rar!")):
        # gzip is unpacked before detection (gunzipped()); these others are not accepted.
        raise FileRejected(
            "compressed files are not accepted (except .gz): upload the CSV, XML or XLSX inside"
        )
    if head.startswith(b"\xd0\xcf\x11\xe0"):
        raise FileRejected("legacy Excel .xls files are not accepted: save the sheet as .xlsx or .csv")
    utf16 = head.startswith((b"\xff\xfe", b"\xfe\xff"))
    if b"\x00" in head and not utf16:
        raise FileRejected(
            "the file is binary, not a catalog (CSV, TSV, JSON, XLSX, XML, Markdown, text or PDF)"
        )
    text = head.decode("utf-16" if utf16 else "utf-8", errors="replace").lstrip("\ufeff \t\r\n")
    if text.startswith("<"):
        lowered = text[:2000].lower()
        if "<html" in lowered or "<!doctype html" in lowered:
            raise FileRejected("the file is an HTML page, not a feed")
        return "xml"
    if text.startswith("["):
        return "json"
    if text.startswith("{"):
        return "jsonl" if extension != "json" else "json"
    if extension in ("markdown", "text"):
        if extension == "text" and tabular.sniff_delimiter(text) == "\t":
            return "tsv"
        return extension
    if extension in ("csv", "tsv"):
        return extension
    if extension in ("xlsx", "pdf", "json", "jsonl", "xml"):
        raise FileRejected(f"the file's content does not match its {extension.upper()} extension")
    first = next((line for line in text.splitlines() if line.strip() and not line.startswith("#")), "")
    if any(d in first for d in (",", "\t", ";", "|")):
        return "csv"
    return "text"


def open_source(
    path: Path,
    *,
    filename: str,
    format: str | None = None,
    mapping: Mapping[str, str] | None = None,
    sheet: str | None = None,
) -> Source:
    fmt = normalize_format(format) or detect_format(path, filename)
    if fmt in ("csv", "tsv"):
        table = tabular.Table(tabular.csv_rows(path, delimiter="\t" if format == "tsv" else None), mapping)
        return Source(fmt, table.kind, table.results)
    if fmt == "xlsx":
        table = tabular.Table(xlsx.xlsx_rows(path, sheet=sheet), mapping)
        return Source(fmt, table.kind, table.results)
    if fmt == "json":
        return Source(fmt, "items", lambda: jsonfeed.json_results(path, mapping))
    if fmt == "jsonl":
        return Source(fmt, "items", lambda: jsonfeed.jsonl_results(path, mapping))
    if fmt == "xml":
        return Source(fmt, "items", lambda: xmlfeed.xml_results(path, mapping))
    if fmt == "markdown":
        return Source(fmt, "document", lambda: documents.markdown_results(path))
    if fmt == "text":
        return Source(fmt, "document", lambda: documents.text_results(path))
    return Source(fmt, "document", lambda: documents.pdf_results(path))
