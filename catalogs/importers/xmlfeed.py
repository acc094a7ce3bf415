"""RSS 2.0 and Atom product feeds with the Google ``g:`` namespace (Meta and Google Merchant feeds).

Parsed incrementally with defusedxml: a document type declaration is refused outright, which refuses entity
expansion ("billion laughs") and external entities (local file reads, SSRF) before any is resolved. Each
``<item>`` / ``<entry>`` is turned into a row and then cleared, so memory stays flat.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from xml.etree.ElementTree import Element, ParseError

from defusedxml import DTDForbidden, EntitiesForbidden, ExternalReferenceForbidden
from defusedxml.ElementTree import iterparse

from catalogs.importers.base import ColumnPlan, FileRejected, RowResult, build_item
from catalogs.importers.xmlguard import scan_xml_texts

ATOM = "{http://www.w3.org/2005/Atom}"
DTD_REFUSAL = "the XML declares a document type or entities; refused (entity expansion attack?)"


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _record(element: Element) -> dict[str, str]:
    record: dict[str, str] = {}
    for child in element:
        name = _local(child.tag)
        if child.tag == f"{ATOM}link" or (name == "link" and child.get("href")):
            if child.get("rel", "alternate") == "alternate":
                record.setdefault("link", child.get("href", ""))
            continue
        if len(child):
            # <g:shipping><g:country>US</g:country><g:price>4.99 USD</g:price></g:shipping> -> "US:4.99 USD"
            text = ":".join((grandchild.text or "").strip() for grandchild in child)
        else:
            text = (child.text or "").strip()
        if name in record:
            if name == "additional_image_link":
                record[name] += ", " + text
            continue  # the first of repeated elements wins (Atom <id> before <g:id> is handled below)
        record[name] = text
    return record


def xml_results(path: Path, mapping: Mapping[str, str] | None = None) -> Iterator[RowResult]:
    number = 0
    plans: dict[frozenset[str], ColumnPlan] = {}
    with path.open("rb") as f:
        # Bounded memory: no text over CATALOG_MAX_FIELD_BYTES (ElementTree would build it whole).
        scan_xml_texts(f, "the XML feed", dtd_refusal=DTD_REFUSAL, malformed_ok=True)
    try:
        parser = iterparse(str(path), events=("start", "end"), forbid_dtd=True)
        root: Element | None = None
        seen_items = False
        for event, element in parser:
            if event == "start":
                if root is None:
                    root = element
                    if _local(root.tag) not in ("rss", "feed", "channel", "RDF"):
                        raise FileRejected(
                            f"the XML document is not an RSS or Atom feed (root <{_local(root.tag)}>)"
                        )
                continue
            if _local(element.tag) not in ("item", "entry"):
                continue
            seen_items = True
            number += 1
            record = _record(element)
            # Atom's own <id> is a URL or URN; the product id is g:id when present (its local name is "id" too,
            # so read it explicitly).
            g_id = element.find("{http://base.google.com/ns/1.0}id")
            if g_id is not None and g_id.text:
                record["id"] = g_id.text.strip()
            key = frozenset(record)
            plan = plans.get(key)
            if plan is None:
                plan = plans[key] = ColumnPlan.from_header(list(record), mapping)
            yield build_item(record, plan, number)
            element.clear()
            if root is not None:
                # Drop references to finished items so the tree never grows with the file.
                for parent in (root, *root):
                    if element in list(parent):
                        parent.remove(element)
                        break
        if not seen_items:
            raise FileRejected("the XML feed holds no <item> or <entry> elements")
    except (DTDForbidden, EntitiesForbidden) as exc:
        raise FileRejected(DTD_REFUSAL) from exc
    except ExternalReferenceForbidden as exc:
        raise FileRejected("the XML refers to an external entity; refused") from exc
    except ParseError as exc:
        raise FileRejected(f"the XML is not well-formed after item {number} ({exc})") from exc
