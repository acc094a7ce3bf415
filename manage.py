#!/usr/bin/env python
"""Django's command-line utility, with the embedded services started on demand."""

from __future__ import annotations

import os
import sys


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    from devstack import services

    # With DATABASE_URL / REDIS_URL unset, reuse the embedded servers if they run, or start them
    # for the duration of this command.
    services.ensure_core_services()
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)


if __name__ == "__main__":
    main()
