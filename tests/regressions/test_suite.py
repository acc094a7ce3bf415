"""The regression suite: cases generated from a business's data, runs through the real agent, the triggers
(catalog import, agent settings), the page, the API and the command, each inside one business."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import Client
from django.utils import timezone

from agents.selectors import agent_for
from agents.services import agent_update, curated_answer_create
from businesses.models import Membership
from businesses.services import api_key_issue
from catalogs.models import Item
from dashboard.forms import AgentForm
from regressions import selectors
from regressions.generation import distinctive_phrase
from regressions.models import RegressionCase, RegressionResult, RegressionRun
from regressions.services import (
    cases_regenerate,
    run_execute,
    run_start,
    suite_after_import,
    suite_after_settings_change,
)
from tests.agents.test_respond import FAQ_MD
from tests.factories import BusinessFactory, MembershipFactory
from tests.fixtures.catalogs import SMALL_CATALOG_CSV

CHEAPER_TENT_CSV = SMALL_CATALOG_CSV.replace("249.00 EUR", "229.00 EUR")


@pytest.fixture
def shop(import_catalog: Any) -> Any:
    business = BusinessFactory()
    import_catalog(business, SMALL_CATALOG_CSV, embed=True)
    import_catalog(business, FAQ_MD, filename="faq.md", embed=True)
    return business


def run_now(business: Any, trigger: str = RegressionRun.Trigger.MANUAL, **kwargs: Any) -> RegressionRun:
    run = run_start(business=business, trigger=trigger, enqueue=False, **kwargs)
    finished = run_execute(run_id=run.pk)
    assert finished is not None
    return finished


def cases_of(business: Any) -> list[tuple[str, str, str, dict[str, Any]]]:
    return [
        (c.kind, c.language, c.question, c.expected)
        for c in RegressionCase.objects.filter(business=business, active=True).order_by(
            "kind", "source_key", "language"
        )
    ]


def queued(redis_client: Any, queue: str = "ingest") -> list[tuple[str, list[Any]]]:
    """The tasks waiting on the real broker's ``queue``: (name, args), oldest first."""
    found = []
    for raw in reversed(redis_client.lrange(queue, 0, -1)):
        envelope = json.loads(raw)
        args, _, _ = json.loads(base64.b64decode(envelope["body"]))
        found.append((envelope["headers"]["task"], args))
    return found


# --- Generation -----------------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_cases_come_from_the_catalog_the_faq_and_the_curated_answers(shop: Any) -> None:
    agent_update(shop, languages=["de"])
    curated_answer_create(
        business=shop, question="Do you rent tents?", answer="No, we only sell them. Ask us about used ones."
    )
    done = cases_regenerate(business=shop)
    cases = cases_of(shop)
    tent = {"title": "Ridgeline 2-person tent", "external_id": "TENT-2P"}
    assert (
        "price",
        "en",
        "How much is Ridgeline 2-person tent?",
        {**tent, "price": "249.00", "currency": "EUR"},
    ) in cases
    assert (
        "price",
        "de",
        "Wie viel kostet Ridgeline 2-person tent?",
        {**tent, "price": "249.00", "currency": "EUR"},
    ) in cases
    bag = {"title": "Alpine down sleeping bag", "external_id": "BAG-0C"}
    assert ("stock", "en", "Is Alpine down sleeping bag in stock?", {**bag, "stock": "out_of_stock"}) in cases
    assert (
        "stock",
        "de",
        "Ist Alpine down sleeping bag auf Lager?",
        {**bag, "stock": "out_of_stock"},
    ) in cases
    faq = [c for c in cases if c[0] == "faq"]
    assert [(c[2], c[3]) for c in faq] == [
        ("Opening hours", {"contains": ["Friday 10:00 to 19:00, Saturday 9:00"]}),
        ("Returns", {"contains": ["gear can be returned within 30"]}),
    ]
    assert [c[2:] for c in cases if c[0] == "curated"] == [
        ("Do you rent tents?", {"contains": ["No, we only sell them."]})
    ]
    # 3 items x 2 languages x (price, stock), 2 FAQ headings, 1 curated answer.
    assert (done.created, done.updated, done.retired, done.active) == (15, 0, 0, 15)


@pytest.mark.django_db
def test_regenerating_keeps_the_cases_and_retires_those_whose_source_is_gone(
    shop: Any, import_catalog: Any
) -> None:
    cases_regenerate(business=shop)
    before = dict(RegressionCase.objects.filter(business=shop).values_list("pk", "question"))
    again = cases_regenerate(business=shop)
    assert (again.created, again.updated, again.retired) == (0, 0, 0)
    assert dict(RegressionCase.objects.filter(business=shop).values_list("pk", "question")) == before
    Item.objects.filter(business=shop, external_id="STOVE-1").update(is_active=False)
    Item.objects.filter(business=shop, external_id="TENT-2P").update(price="229.00")
    changed = cases_regenerate(business=shop)
    assert (changed.created, changed.updated, changed.retired) == (0, 1, 2)
    tent_price = RegressionCase.objects.get(business=shop, kind="price", source_key="item:TENT-2P")
    assert tent_price.expected["price"] == "229.00"
    assert set(RegressionCase.objects.filter(active=False).values_list("source_key", flat=True)) == {
        "item:STOVE-1"
    }


@pytest.mark.django_db
def test_the_sample_is_deterministic_and_bounded(settings: Any, import_catalog: Any) -> None:
    settings.REGRESSION_SAMPLE_ITEMS = 5
    business = BusinessFactory()
    rows = "".join(
        f"SKU-{i},Widget number {i},A widget.,in stock,{i}.00 EUR,https://x.example/{i},,Acme\n"
        for i in range(40)
    )
    import_catalog(business, "id,title,description,availability,price,link,image_link,brand\n" + rows)
    cases_regenerate(business=business)
    first = set(RegressionCase.objects.filter(business=business).values_list("source_key", flat=True))
    assert len(first) == 5
    RegressionCase.objects.filter(business=business).delete()
    cases_regenerate(business=business)
    assert set(RegressionCase.objects.filter(business=business).values_list("source_key", flat=True)) == first


def test_distinctive_phrase() -> None:
    assert (
        distinctive_phrase("Unused gear can be returned within 30 days.") == "gear can be returned within 30"
    )
    assert distinctive_phrase("Free delivery.") == "Free delivery"


# --- Runs -----------------------------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_a_run_passes_on_a_correct_catalog(shop: Any) -> None:
    run = run_now(shop)
    failing = [
        (r.question, r.missing, r.reply_text) for r in RegressionResult.objects.filter(run=run, passed=False)
    ]
    assert failing == []
    assert (run.state, run.total, run.passed, run.failed) == ("succeeded", 8, 8, 0)
    assert run.trigger == "manual" and run.finished_at is not None
    tent = RegressionResult.objects.get(run=run, case__kind="price", case__source_key="item:TENT-2P")
    assert "Ridgeline 2-person tent: 249.00 EUR, in stock." in tent.reply_text
    assert tent.expected == {
        "title": "Ridgeline 2-person tent",
        "external_id": "TENT-2P",
        "price": "249.00",
        "currency": "EUR",
    }


@pytest.mark.django_db(transaction=True)
def test_a_run_counts_the_model_calls_and_tokens(pool_server: Any, shop: Any) -> None:
    pool_server.script("Happy to help.")
    run = run_now(shop)
    assert run.failed == 0
    # Only the items' answers ask the model (FAQ quotes and the no-model small talk do not): 6 calls.
    assert run.inference_calls == pool_server.chat_requests > 0
    assert run.completion_tokens > 0 and run.prompt_tokens > 0


@pytest.mark.django_db(transaction=True)
def test_a_changed_price_fails_until_the_cases_are_regenerated_and_the_import_regenerates_them(
    shop: Any, import_catalog: Any, redis_client: Any
) -> None:
    first = run_now(shop)
    assert first.failed == 0
    # The catalog changes behind the suite's back (no import: nothing regenerates the cases).
    Item.objects.filter(business=shop, external_id="TENT-2P").update(price="229.00")
    second = run_now(shop)
    assert (second.passed, second.failed) == (7, 1)
    result = RegressionResult.objects.get(run=second, passed=False)
    assert result.question == "How much is Ridgeline 2-person tent?"
    assert result.missing == ["the price 249.00 EUR"]
    assert "229.00 EUR" in result.reply_text
    report = selectors.run_report(second)
    assert report.previous == first
    assert [r.result.pk for r in report.regressions] == [result.pk]
    assert report.rows[0].regression
    # An import is what changes a catalog: it queues the suite, which is generated again from the new data.
    redis_client.delete("ingest")
    imp = import_catalog(shop, CHEAPER_TENT_CSV, embed=True)
    assert imp.state == "succeeded"
    assert queued(redis_client) == [("regressions.tasks.after_import", [shop.pk])]
    third_start = suite_after_import(business_id=shop.pk, enqueue=False)
    assert third_start is not None and third_start.trigger == "import"
    third = run_execute(run_id=third_start.pk)
    assert third is not None and (third.passed, third.failed) == (8, 0)
    assert (
        RegressionCase.objects.get(business=shop, kind="price", source_key="item:TENT-2P").expected["price"]
        == "229.00"
    )


@pytest.mark.django_db
def test_a_business_without_a_suite_is_skipped_after_an_import_and_a_settings_change(
    import_catalog: Any,
) -> None:
    business = BusinessFactory()
    import_catalog(business, SMALL_CATALOG_CSV)
    assert suite_after_import(business_id=business.pk, enqueue=False) is None
    assert suite_after_settings_change(business=business, model_changed=True, enqueue=False) is None
    assert not RegressionRun.objects.exists() and not RegressionCase.objects.exists()


@pytest.mark.django_db
def test_one_run_at_a_time_and_a_run_is_claimed_once(shop: Any) -> None:
    run = run_start(business=shop, trigger=RegressionRun.Trigger.MANUAL, enqueue=False)
    assert run_start(business=shop, trigger=RegressionRun.Trigger.API, enqueue=False) == run
    # New data while it is queued: it will ask the new cases, no second run.
    assert suite_after_import(business_id=shop.pk, enqueue=False) == run
    # New data while it is running (its cases read): a run of its own follows.
    RegressionRun.objects.filter(pk=run.pk).update(
        state=RegressionRun.State.RUNNING, claimed_at=timezone.now()
    )
    follow_up = suite_after_import(business_id=shop.pk, enqueue=False)
    assert follow_up is not None and follow_up != run and follow_up.trigger == "import"
    assert run_start(business=shop, trigger=RegressionRun.Trigger.API, enqueue=False) == follow_up
    RegressionRun.objects.filter(pk=follow_up.pk).delete()
    RegressionRun.objects.filter(pk=run.pk).update(state=RegressionRun.State.SUCCEEDED)
    # A finished run is not run again (a task delivered twice).
    assert run_execute(run_id=run.pk) == RegressionRun.objects.get(pk=run.pk)
    assert not RegressionResult.objects.exists()
    assert run_execute(run_id=999_999) is None


# --- Agent settings -------------------------------------------------------------------------------------------


def agent_post(business: Any) -> dict[str, Any]:
    """The agent settings form as the page fills it in (checked boxes "on", unchecked ones absent)."""
    initial = AgentForm.initial_from(agent_for(business))
    return {k: ("on" if v is True else v) for k, v in initial.items() if v is not False and v is not None}


@pytest.mark.django_db
def test_saving_changed_agent_settings_queues_a_run_of_the_draft(
    shop: Any, client: Client, redis_client: Any, django_capture_on_commit_callbacks: Any
) -> None:
    owner = MembershipFactory(business=shop, role=Membership.Role.OWNER).user
    client.force_login(owner)
    cases_regenerate(business=shop)
    # Saved unchanged: no draft, nothing to test again.
    response = client.post(f"/app/{shop.slug}/agent/", agent_post(shop))
    assert response.status_code == 302
    assert not RegressionRun.objects.exists() and queued(redis_client) == []
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(f"/app/{shop.slug}/agent/", {**agent_post(shop), "languages": "de"})
    assert response.status_code == 302
    assert response["Location"] == f"/app/{shop.slug}/agent/"
    # The draft's run, and the published settings' first run that it is compared with.
    baseline = RegressionRun.objects.get(business=shop, on_draft=False)
    run = RegressionRun.objects.get(business=shop, on_draft=True)
    assert (run.trigger, run.state, run.draft) == ("settings", "pending", {"languages": ["de"]})
    assert queued(redis_client) == [
        ("regressions.tasks.run_suite", [baseline.pk]),
        ("regressions.tasks.run_suite", [run.pk]),
    ]
    # The draft's new language's questions are in the suite the run asks.
    assert RegressionCase.objects.filter(business=shop, language="de", active=True).count() == 6
    assert run.total == 14
    assert agent_for(shop).languages == []  # customers still get the published settings


# --- The page, the API, the command: each inside one business ----------------------------------------------------


def owner_client(business: Any) -> Client:
    client = Client()
    client.force_login(MembershipFactory(business=business, role=Membership.Role.OWNER).user)
    return client


@pytest.mark.django_db(transaction=True)
def test_the_page_shows_the_last_run_with_its_regressions(shop: Any) -> None:
    first = run_now(shop)
    Item.objects.filter(business=shop, external_id="TENT-2P").update(price="229.00")
    second = run_now(shop)
    client = owner_client(shop)
    html = client.get(f"/app/{shop.slug}/regressions/").content.decode()
    assert f"Run {second.pk}" in html
    assert "<strong>7</strong> passed · <strong>1</strong> failed of 8" in html
    assert f'compared with <a href="/app/{shop.slug}/regressions/runs/{first.pk}/">run {first.pk}</a>' in html
    assert '<strong class="regressions-count">1</strong> regression' in html
    assert html.count('<span class="badge bad">Regression</span>') == 1
    assert "Missing: the price 249.00 EUR" in html
    assert "Ridgeline 2-person tent: 229.00 EUR, in stock." in html
    # The earlier run, on its own page: all passed, nothing before it to compare with.
    older = client.get(f"/app/{shop.slug}/regressions/runs/{first.pk}/").content.decode()
    assert "<strong>8</strong> passed · <strong>0</strong> failed of 8" in older
    assert "Regression</span>" not in older


@pytest.mark.django_db
def test_run_now_and_regenerate_from_the_page(
    shop: Any, redis_client: Any, django_capture_on_commit_callbacks: Any
) -> None:
    client = owner_client(shop)
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(f"/app/{shop.slug}/regressions/run/")
    assert response.status_code == 302
    run = RegressionRun.objects.get(business=shop)
    assert (run.trigger, run.state, run.total) == ("manual", "pending", 8)
    assert queued(redis_client) == [("regressions.tasks.run_suite", [run.pk])]
    # A second click while it is queued starts nothing more.
    client.post(f"/app/{shop.slug}/regressions/run/")
    assert RegressionRun.objects.count() == 1
    RegressionCase.objects.filter(business=shop).delete()
    response = client.post(f"/app/{shop.slug}/regressions/regenerate/", follow=True)
    assert "8 cases from your catalog, FAQ and curated answers (8 new, 0 changed, 0 retired)." in (
        response.content.decode()
    )


@pytest.mark.django_db
def test_another_business_cannot_see_or_run_the_suite_through_the_page(shop: Any) -> None:
    run = run_start(business=shop, trigger=RegressionRun.Trigger.MANUAL, enqueue=False)
    other = BusinessFactory()
    intruder = owner_client(other)
    assert intruder.get(f"/app/{shop.slug}/regressions/").status_code == 404
    assert intruder.post(f"/app/{shop.slug}/regressions/run/").status_code == 404
    assert intruder.post(f"/app/{shop.slug}/regressions/regenerate/").status_code == 404
    # A's run under B's own slug.
    assert intruder.get(f"/app/{other.slug}/regressions/runs/{run.pk}/").status_code == 404
    assert not RegressionRun.objects.filter(business=other).exists()
    assert not RegressionCase.objects.filter(business=other).exists()
    assert RegressionRun.objects.filter(business=shop).count() == 1


def api(client: Client, method: str, path: str, key: str, **kwargs: Any) -> Any:
    return getattr(client, method)(path, HTTP_AUTHORIZATION=f"Bearer {key}", **kwargs)


@pytest.mark.django_db(transaction=True)
def test_the_api_runs_and_shows_the_suite_of_the_keys_business_only(shop: Any, redis_client: Any) -> None:
    key = api_key_issue(shop, name="agency").raw_key
    other = BusinessFactory()
    other_key = api_key_issue(other, name="agency").raw_key
    client = Client()
    assert api(client, "get", "/api/v1/regressions/runs/latest", key).json()["detail"] == (
        "no run yet: POST /api/v1/regressions/runs starts one"
    )
    response = api(client, "post", "/api/v1/regressions/runs", key)
    assert response.status_code == 202
    run = RegressionRun.objects.get(business=shop)
    assert response.json() == {
        "id": run.pk,
        "state": "pending",
        "status_url": f"/api/v1/regressions/runs/{run.pk}",
    }
    assert [q for q in queued(redis_client) if q[0] == "regressions.tasks.run_suite"] == [
        ("regressions.tasks.run_suite", [run.pk])
    ]
    # Asked again while it is queued: the same run.
    again = api(client, "post", "/api/v1/regressions/runs", key)
    assert (again.status_code, again.json()["id"]) == (200, run.pk)
    run_execute(run_id=run.pk)
    latest = api(client, "get", "/api/v1/regressions/runs/latest", key).json()
    assert {k: latest[k] for k in ("id", "state", "trigger", "total", "passed", "failed", "regressions")} == {
        "id": run.pk,
        "state": "succeeded",
        "trigger": "api",
        "total": 8,
        "passed": 8,
        "failed": 0,
        "regressions": 0,
    }
    tent = next(r for r in latest["results"] if r["question"] == "How much is Ridgeline 2-person tent?")
    assert tent["passed"] is True and tent["expected"]["price"] == "249.00"
    assert "249.00 EUR" in tent["reply"]
    # Business B: A's run is not found, and B's latest is B's (none).
    assert api(client, "get", f"/api/v1/regressions/runs/{run.pk}", other_key).status_code == 404
    assert api(client, "get", "/api/v1/regressions/runs/latest", other_key).status_code == 404
    assert not RegressionRun.objects.filter(business=other).exists()


@pytest.mark.django_db
def test_the_api_refuses_a_missing_key_and_a_bad_body(shop: Any) -> None:
    key = api_key_issue(shop, name="agency").raw_key
    client = Client()
    response = client.post("/api/v1/regressions/runs")
    assert response.status_code == 401
    for body in ("not json", '{"regenerate": "yes"}', '{"other": 1}', "[]"):
        response = api(
            client, "post", "/api/v1/regressions/runs", key, data=body, content_type="application/json"
        )
        assert response.status_code == 400, body
        assert response.json()["detail"] == 'the body must be JSON: {"regenerate": true|false}'
    assert api(client, "get", "/api/v1/regressions/runs", key).status_code == 405
    assert not RegressionRun.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_the_command_runs_and_shows_one_business_or_all(shop: Any, import_catalog: Any, capsys: Any) -> None:
    other = BusinessFactory()
    import_catalog(other, SMALL_CATALOG_CSV, embed=True)
    call_command("regressions", "run", "--business", shop.slug)
    out = capsys.readouterr().out
    assert out.startswith(f"{shop.slug}: run ")
    assert "succeeded, 8/8 passed, 0 failed, 0 regressions, 0 inference calls" in out
    assert not RegressionRun.objects.filter(business=other).exists()
    # --all: the businesses that have a suite (B has none yet).
    call_command("regressions", "run", "--all")
    assert RegressionRun.objects.filter(business=shop).count() == 2
    assert not RegressionRun.objects.filter(business=other).exists()
    Item.objects.filter(business=shop, external_id="STOVE-1").update(price="35.00")
    with pytest.raises(CommandError, match="1 business"):
        call_command("regressions", "run", "--business", shop.slug)
    capsys.readouterr()
    call_command("regressions", "show", "--business", shop.slug)
    out = capsys.readouterr().out
    assert "7/8 passed, 1 failed, 1 regressions" in out
    assert "  REGRESSION [price] How much is Pocket gas stove?\n    missing: the price 39.90 EUR\n" in out
    call_command("regressions", "show", "--business", other.slug)
    assert capsys.readouterr().out == f"{other.slug}: no run yet\n"
    with pytest.raises(CommandError, match="no business with slug 'nope'"):
        call_command("regressions", "run", "--business", "nope")


@pytest.mark.django_db
def test_the_django_admin_lists_cases_and_runs_for_superusers(shop: Any) -> None:
    from tests.factories import UserFactory

    run = run_start(business=shop, trigger=RegressionRun.Trigger.MANUAL, enqueue=False)
    client = Client()
    client.force_login(UserFactory(is_staff=True, is_superuser=True))
    for path in (
        "/django-admin/regressions/regressioncase/",
        "/django-admin/regressions/regressionrun/",
        f"/django-admin/regressions/regressionrun/{run.pk}/change/",
    ):
        assert client.get(path).status_code == 200, path
