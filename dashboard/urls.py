"""Routes of the business web admin: ``/accounts/...`` and ``/app/<business slug>/...``."""

from __future__ import annotations

from django.urls import path
from django.views.generic import RedirectView

from dashboard.views import (
    accounts,
    agent,
    analytics,
    catalog,
    channels,
    core,
    curated,
    feeds,
    inbox,
    regressions,
    team,
    unanswered,
    webhooks,
)

app_name = "dashboard"

urlpatterns = [
    path("", RedirectView.as_view(url="/app/", permanent=False), name="root"),
    path("accounts/login/", accounts.login_view, name="login"),
    path("accounts/logout/", accounts.logout_view, name="logout"),
    path("accounts/signup/", accounts.signup, name="signup"),
    path("accounts/signup/sent/", accounts.signup_sent, name="signup_sent"),
    path("accounts/signup/confirm/<str:token>/", accounts.signup_confirm, name="signup_confirm"),
    path("accounts/password-reset/", accounts.password_reset, name="password_reset"),
    path("accounts/password-reset/sent/", accounts.password_reset_done, name="password_reset_done"),
    path(
        "accounts/password-reset/<uidb64>/<token>/",
        accounts.password_reset_confirm,
        name="password_reset_confirm",
    ),
    path("accounts/password-reset/done/", accounts.password_reset_complete, name="password_reset_complete"),
    path("accounts/invitations/<str:token>/", accounts.invitation, name="invitation_accept"),
    path("app/", core.home, name="home"),
    path("app/new/", accounts.business_new, name="business_new"),
    path("app/<slug:slug>/", core.overview, name="overview"),
    path("app/<slug:slug>/install/", core.install, name="install"),
    path("app/<slug:slug>/install/origins/", core.install_origins, name="install_origins"),
    path("app/<slug:slug>/install/theme/", core.install_theme, name="install_theme"),
    path("app/<slug:slug>/install/demo-page/", core.install_demo_page, name="install_demo_page"),
    path("app/<slug:slug>/api-keys/", core.api_keys, name="api_keys"),
    path("app/<slug:slug>/api-keys/<int:api_key_id>/revoke/", core.api_key_revoke, name="api_key_revoke"),
    # Catalog (owners and staff)
    path("app/<slug:slug>/catalog/", catalog.catalog, name="catalog"),
    path("app/<slug:slug>/catalog/upload/", catalog.catalog_upload, name="catalog_upload"),
    path("app/<slug:slug>/catalog/import-url/", catalog.catalog_import_url, name="catalog_import_url"),
    path("app/<slug:slug>/catalog/imports/<int:import_id>/", catalog.catalog_import, name="catalog_import"),
    path(
        "app/<slug:slug>/catalog/imports/<int:import_id>/status/",
        catalog.catalog_import_status,
        name="catalog_import_status",
    ),
    path(
        "app/<slug:slug>/catalog/imports/<int:import_id>/errors.csv",
        catalog.catalog_import_errors,
        name="catalog_import_errors",
    ),
    path("app/<slug:slug>/catalog/items/", catalog.catalog_items, name="catalog_items"),
    path("app/<slug:slug>/catalog/items/<int:item_id>/", catalog.catalog_item, name="catalog_item"),
    path("app/<slug:slug>/catalog/search/", catalog.catalog_search, name="catalog_search"),
    # Curated answers (owners and staff)
    path("app/<slug:slug>/answers/", curated.curated_answers, name="curated_answers"),
    path("app/<slug:slug>/answers/new/", curated.curated_answer_new, name="curated_answer_new"),
    path(
        "app/<slug:slug>/answers/import/", curated.curated_answers_import_view, name="curated_answers_import"
    ),
    path("app/<slug:slug>/answers/export.csv", curated.curated_answers_export, name="curated_answers_export"),
    path(
        "app/<slug:slug>/answers/<int:curated_id>/", curated.curated_answer_edit, name="curated_answer_edit"
    ),
    path(
        "app/<slug:slug>/answers/<int:curated_id>/delete/",
        curated.curated_answer_delete_view,
        name="curated_answer_delete",
    ),
    # Inbox (owners and staff)
    path("app/<slug:slug>/inbox/", inbox.inbox, name="inbox"),
    path("app/<slug:slug>/inbox/list/", inbox.inbox_list, name="inbox_list"),
    path("app/<slug:slug>/inbox/<int:conversation_id>/", inbox.inbox_conversation, name="inbox_conversation"),
    path(
        "app/<slug:slug>/inbox/<int:conversation_id>/messages/", inbox.inbox_messages, name="inbox_messages"
    ),
    path(
        "app/<slug:slug>/inbox/<int:conversation_id>/take-over/", inbox.inbox_takeover, name="inbox_takeover"
    ),
    path(
        "app/<slug:slug>/inbox/<int:conversation_id>/hand-back/",
        inbox.inbox_hand_back,
        name="inbox_hand_back",
    ),
    path("app/<slug:slug>/inbox/<int:conversation_id>/reply/", inbox.inbox_reply, name="inbox_reply"),
    path("app/<slug:slug>/inbox/<int:conversation_id>/close/", inbox.inbox_close, name="inbox_close"),
    path("app/<slug:slug>/inbox/messages/<int:message_id>/mark/", inbox.inbox_mark, name="inbox_mark"),
    path("app/<slug:slug>/inbox/media/<int:media_id>/", inbox.inbox_media, name="inbox_media"),
    # Owners only
    path("app/<slug:slug>/agent/", agent.agent, name="agent"),
    path("app/<slug:slug>/agent/draft/", agent.agent_draft_status, name="agent_draft_status"),
    path("app/<slug:slug>/agent/publish/", agent.agent_publish, name="agent_publish"),
    path("app/<slug:slug>/agent/discard/", agent.agent_discard, name="agent_discard"),
    path("app/<slug:slug>/agent/check/", agent.agent_check, name="agent_check"),
    path("app/<slug:slug>/agent/publish-rule/", agent.agent_publish_rule, name="agent_publish_rule"),
    path(
        "app/<slug:slug>/agent/playground/allow/", agent.agent_playground_allow, name="agent_playground_allow"
    ),
    path("app/<slug:slug>/channels/", channels.channels, name="channels"),
    path("app/<slug:slug>/channels/rating/", channels.channel_rating, name="channel_rating"),
    path("app/<slug:slug>/channels/<str:kind>/connect/", channels.channel_connect, name="channel_connect"),
    path(
        "app/<slug:slug>/channels/accounts/<int:account_id>/disconnect/",
        channels.channel_disconnect,
        name="channel_disconnect",
    ),
    path("app/<slug:slug>/feeds/", feeds.feeds, name="feeds"),
    path("app/<slug:slug>/feeds/<int:feed_id>/", feeds.feed, name="feed"),
    path("app/<slug:slug>/feeds/<int:feed_id>/run/", feeds.feed_run, name="feed_run"),
    path("app/<slug:slug>/feeds/<int:feed_id>/delete/", feeds.feed_delete, name="feed_delete"),
    path(
        "app/<slug:slug>/feeds/imports/<int:import_id>/confirm/",
        feeds.feed_import_confirm,
        name="feed_import_confirm",
    ),
    path(
        "app/<slug:slug>/feeds/imports/<int:import_id>/discard/",
        feeds.feed_import_discard,
        name="feed_import_discard",
    ),
    path("app/<slug:slug>/analytics/", analytics.analytics, name="analytics"),
    path("app/<slug:slug>/unanswered/", unanswered.unanswered, name="unanswered"),
    path("app/<slug:slug>/regressions/", regressions.regressions, name="regressions"),
    path("app/<slug:slug>/regressions/run/", regressions.regressions_run, name="regressions_run"),
    path(
        "app/<slug:slug>/regressions/regenerate/",
        regressions.regressions_regenerate,
        name="regressions_regenerate",
    ),
    path("app/<slug:slug>/regressions/runs/<int:run_id>/", regressions.regression_run, name="regression_run"),
    path("app/<slug:slug>/webhooks/", webhooks.webhooks, name="webhooks"),
    path("app/<slug:slug>/webhooks/<int:endpoint_id>/", webhooks.webhook_endpoint, name="webhook_endpoint"),
    path(
        "app/<slug:slug>/webhooks/<int:endpoint_id>/enable/",
        webhooks.webhook_endpoint_enable,
        name="webhook_endpoint_enable",
    ),
    path(
        "app/<slug:slug>/webhooks/<int:endpoint_id>/test/",
        webhooks.webhook_endpoint_test,
        name="webhook_endpoint_test",
    ),
    path(
        "app/<slug:slug>/webhooks/<int:endpoint_id>/delete/",
        webhooks.webhook_endpoint_delete,
        name="webhook_endpoint_delete",
    ),
    path("app/<slug:slug>/team/", team.team, name="team"),
    path(
        "app/<slug:slug>/team/invitations/<int:invitation_id>/revoke/",
        team.team_invitation_revoke,
        name="team_invitation_revoke",
    ),
]
