"""Feeds (owners only: every run is a full sync): the list with the add form, one feed's settings and runs,
"Run now", and the owner's decision on a held run (confirm applies it, discard drops it)."""

from __future__ import annotations

from django.contrib import messages
from django.http import HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from catalogs.services import feeds as feed_services
from dashboard import selectors
from dashboard.forms import FeedEditForm, FeedForm
from dashboard.permissions import BusinessRequest, member_view


@member_view("owner")
def feeds(request: BusinessRequest) -> HttpResponse:
    business = request.business
    form = FeedForm(request.POST or None, business=business)
    status = 200
    if request.method == "POST":
        if form.is_valid():
            data = form.cleaned_data
            feed = feed_services.feed_create(
                business=business,
                url=data["url"],
                kind=data["kind"],
                interval_minutes=data["interval_minutes"],
                shrink_threshold_percent=data["shrink_threshold_percent"],
            )
            messages.success(request, "Feed added: its first run is under way.")
            return redirect("dashboard:feed", slug=business.slug, feed_id=feed.pk)
        status = 400
    return render(
        request,
        "dashboard/feeds.html",
        {"form": form, "feeds": selectors.feeds_overview(business), "runs": selectors.feed_runs(business)},
        status=status,
    )


@member_view("owner", feed_id="feed")
def feed(request: BusinessRequest, feed_id: int) -> HttpResponse:
    business = request.business
    source = selectors.feed_or_404(business, feed_id)
    initial = {
        "interval_minutes": source.interval_minutes,
        "shrink_threshold_percent": source.shrink_threshold_percent,
        "is_active": source.is_active,
    }
    form = FeedEditForm(request.POST or None, initial=initial)
    status = 200
    if request.method == "POST":
        if form.is_valid():
            feed_services.feed_update(feed=source, **form.cleaned_data)
            messages.success(request, "Feed saved.")
            return redirect("dashboard:feed", slug=business.slug, feed_id=source.pk)
        status = 400
    return render(
        request,
        "dashboard/feed.html",
        {
            "feed": source,
            "form": form,
            "held": selectors.feed_held_import(business, source),
            "runs": selectors.feed_runs(business, feed=source),
        },
        status=status,
    )


@member_view("owner", feed_id="feed")
@require_POST
def feed_run(request: BusinessRequest, feed_id: int) -> HttpResponse:
    business = request.business
    feed_services.feed_run_now(feed=selectors.feed_or_404(business, feed_id))
    messages.success(request, "Run queued: this page shows it when it is done.")
    return redirect("dashboard:feed", slug=business.slug, feed_id=feed_id)


@member_view("owner", feed_id="feed")
@require_POST
def feed_delete(request: BusinessRequest, feed_id: int) -> HttpResponse:
    business = request.business
    feed_services.feed_delete(feed=selectors.feed_or_404(business, feed_id))
    messages.success(request, "Feed deleted. Its runs stay in the import history.")
    return redirect("dashboard:feeds", slug=business.slug)


@member_view("owner", import_id="import")
@require_POST
def feed_import_confirm(request: BusinessRequest, import_id: int) -> HttpResponse:
    business = request.business
    if feed_services.feed_import_confirm(business=business, import_id=import_id):
        messages.success(request, "Confirmed: the run is being applied.")
    else:
        messages.info(request, "This run is no longer waiting for a decision.")
    return redirect("dashboard:catalog_import", slug=business.slug, import_id=import_id)


@member_view("owner", import_id="import")
@require_POST
def feed_import_discard(request: BusinessRequest, import_id: int) -> HttpResponse:
    business = request.business
    if feed_services.feed_import_discard(business=business, import_id=import_id):
        messages.success(request, "Discarded: the catalog stays as it is.")
    else:
        messages.info(request, "This run is no longer waiting for a decision.")
    return redirect("dashboard:catalog_import", slug=business.slug, import_id=import_id)
