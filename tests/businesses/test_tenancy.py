from __future__ import annotations

import pytest
from django.http import Http404

from businesses import selectors, services
from businesses.models import ApiKey, Business
from tests.factories import BusinessFactory, MembershipFactory, UserFactory

pytestmark = pytest.mark.django_db


def test_business_create_makes_the_creator_owner_and_normalises_origins() -> None:
    owner = UserFactory()
    business = services.business_create(
        name="Café Olé", owner=owner, allowed_origins=["https://Shop.Example:443/", "http://x.test:80"]
    )
    assert business.slug == "cafe-ole"
    assert business.widget_key.startswith("pk_")
    assert business.allowed_origins == ["https://shop.example", "http://x.test"]
    assert business.memberships.get().role == "owner"


def test_slugs_stay_unique() -> None:
    first = services.business_create(name="Bike Shop")
    second = services.business_create(name="Bike Shop")
    assert (first.slug, second.slug) == ("bike-shop", "bike-shop-2")


def test_scoped_lookup_hides_other_tenants_rows_as_404() -> None:
    a, b = BusinessFactory(), BusinessFactory()
    key_b = services.api_key_issue(b, name="ci").api_key
    with pytest.raises(Http404):
        selectors.get_scoped_or_404(a, ApiKey.objects.all(), pk=key_b.pk)
    assert selectors.get_scoped_or_404(b, ApiKey.objects.all(), pk=key_b.pk) == key_b
    assert list(selectors.scoped(a, ApiKey.objects.all())) == []


def test_membership_for_never_reveals_another_business() -> None:
    membership = MembershipFactory()
    stranger = UserFactory()
    assert selectors.membership_for(membership.user, membership.business.slug) == membership
    with pytest.raises(Http404):
        selectors.membership_for(stranger, membership.business.slug)
    with pytest.raises(Http404):
        selectors.membership_for(membership.user, "no-such-business")


def test_api_keys_are_stored_hashed_and_shown_once() -> None:
    business = BusinessFactory()
    issued = services.api_key_issue(business, name="import script")
    stored = ApiKey.objects.get()
    assert issued.raw_key not in (stored.key_hash, stored.prefix)
    assert issued.raw_key.startswith(stored.prefix)
    assert selectors.api_key_for(issued.raw_key).business == business
    assert selectors.api_key_for(issued.raw_key + "x") is None
    assert selectors.api_key_for("") is None
    assert ApiKey.objects.get().last_used_at is not None


def test_revoked_key_stops_working_and_only_its_business_can_revoke_it() -> None:
    a, b = BusinessFactory(), BusinessFactory()
    issued = services.api_key_issue(a, name="k")
    assert services.api_key_revoke(b, api_key_id=issued.api_key.pk) is False
    assert selectors.api_key_for(issued.raw_key).business == a
    assert services.api_key_revoke(a, api_key_id=issued.api_key.pk) is True
    assert selectors.api_key_for(issued.raw_key) is None


@pytest.mark.parametrize(
    ("origin", "allowed"),
    [
        ("https://shop.example", True),
        ("https://SHOP.example:443", True),
        ("http://shop.example", False),
        ("https://evil.example", False),
        ("https://shop.example.evil.example", False),
        (None, False),
        ("", False),
    ],
)
def test_origin_allowed(origin: str | None, allowed: bool) -> None:
    business = Business(allowed_origins=["https://shop.example"])
    assert selectors.origin_allowed(business, origin) is allowed
