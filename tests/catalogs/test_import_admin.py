"""The Django admin pages of the catalog open for superusers, and for nobody else."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model

from tests.factories import BusinessFactory, UserFactory
from tests.fixtures.catalogs import SMALL_CATALOG_CSV

pytestmark = pytest.mark.django_db

PAGES = ("/django-admin/catalogs/item/", "/django-admin/catalogs/import/", "/django-admin/catalogs/document/")


def test_superuser_sees_items_imports_and_documents(client, import_catalog):
    business = BusinessFactory()
    imp = import_catalog(business, SMALL_CATALOG_CSV)
    admin = get_user_model().objects.create_superuser("root@example.com", "root@example.com", "pw-123456789")
    client.force_login(admin)
    for page in PAGES:
        assert client.get(page).status_code == 200
    assert b"Ridgeline 2-person tent" in client.get(PAGES[0]).content
    assert client.get(f"/django-admin/catalogs/import/{imp.pk}/change/").status_code == 200
    assert client.get("/django-admin/catalogs/import/add/").status_code == 403


def test_business_owner_without_staff_rights_is_sent_to_login(client):
    client.force_login(UserFactory())
    for page in PAGES:
        response = client.get(page)
        assert response.status_code == 302
        assert response["Location"].startswith("/django-admin/login/")
