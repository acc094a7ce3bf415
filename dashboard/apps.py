from __future__ import annotations

import logging

from django.apps import AppConfig
from django.conf import settings

logger = logging.getLogger("dashboard.mail")


class DashboardConfig(AppConfig):
    name = "dashboard"
    verbose_name = "Business web admin"

    def ready(self) -> None:
        # Production without EMAIL_URL still starts (the admin works), but password resets, sign-up
        # confirmations and invitations go to the console and reach nobody: say so at every start.
        if not settings.DEBUG and not settings.EMAIL_CONFIGURED:
            logger.warning(
                "EMAIL_URL is not set: account mails (password resets, sign-up confirmations, invitations) "
                "are printed to the console and never delivered. Set EMAIL_URL (README, Configuration)."
            )
