"""``manage.py import_catalog``: summary, exit status (non-zero only for a rejected file), --create, --json."""

from __future__ import annotations

import json
import subprocess
import sys
from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from businesses.models import Business
from catalogs.models import Item
from tests.factories import BusinessFactory
from tests.fixtures.catalogs import SMALL_CATALOG_CSV

pytestmark = pytest.mark.django_db


def run(*args):
    out, err = StringIO(), StringIO()
    call_command("import_catalog", *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def test_import_with_bad_rows_prints_summary_and_succeeds(catalog_media, tmp_path):
    business = BusinessFactory(slug="trail")
    path = tmp_path / "catalog.csv"
    path.write_text(SMALL_CATALOG_CSV + "BAD-1,Broken price,,in stock,twelve,,,,,\n")
    out, err = run(str(path), "--business", "trail", "--no-embed")
    lines = out.splitlines()
    assert lines[0].startswith(
        "catalog.csv: csv, 3 created, 0 updated, 0 unchanged, 0 retired, 1 failed rows, 0 embedded in "
    )
    assert lines[1:] == ["  row 6: price: not a price: 'twelve'"]
    assert "writing" in err
    assert Item.objects.filter(business=business).count() == 3


def test_rejected_file_exits_non_zero_and_changes_nothing(catalog_media, tmp_path):
    business = BusinessFactory(slug="trail")
    path = tmp_path / "feed.xml"
    path.write_text('<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "b">]><rss><channel/></rss>')
    with pytest.raises(CommandError) as excinfo:
        run(str(path), "--business", "trail", "--no-embed")
    assert str(excinfo.value) == (
        "feed.xml: rejected: the XML declares a document type or entities; refused (entity expansion attack?)"
    )
    assert Item.objects.filter(business=business).count() == 0


def test_unknown_business_needs_create(catalog_media, tmp_path):
    path = tmp_path / "catalog.csv"
    path.write_text(SMALL_CATALOG_CSV)
    with pytest.raises(CommandError) as excinfo:
        run(str(path), "--business", "new-shop")
    assert str(excinfo.value) == "no business with slug 'new-shop' (use --create to create it)"
    assert not Business.objects.filter(slug="new-shop").exists()
    out, _ = run(str(path), "--business", "new-shop", "--create", "--json")
    summary = json.loads(out)
    assert {
        k: summary[k] for k in ("state", "format", "created", "updated", "unchanged", "retired", "failed")
    } == {
        "state": "succeeded",
        "format": "csv",
        "created": 3,
        "updated": 0,
        "unchanged": 0,
        "retired": 0,
        "failed": 0,
    }
    # Embeddings are included by default: the catalog is searchable when the command returns.
    assert summary["embedded"] == 3
    business = Business.objects.get(slug="new-shop")
    assert Item.objects.filter(business=business, embedding__isnull=False).count() == 3


def test_full_mode_and_format_flag(catalog_media, tmp_path):
    business = BusinessFactory(slug="trail")
    path = tmp_path / "catalog.data"
    path.write_text(SMALL_CATALOG_CSV)
    run(str(path), "--business", "trail", "--no-embed", "--format", "csv")
    path.write_text("id\ttitle\nTENT-2P\tRidgeline 2-person tent\n")
    out, _ = run(
        str(path), "--business", "trail", "--no-embed", "--format", "tsv", "--mode", "full", "--json"
    )
    summary = json.loads(out)
    assert (summary["updated"], summary["retired"]) == (1, 2)
    assert Item.objects.filter(business=business, is_active=True).count() == 1


def test_exit_status_of_the_real_process(tmp_path):
    """The process exit status itself: 1 for a missing file (a whole-file rejection), via manage.py."""
    result = subprocess.run(
        [sys.executable, "manage.py", "import_catalog", "--business", "x", str(tmp_path / "missing.csv")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1
    assert "missing.csv: no such file" in result.stderr
