"""Development settings for tools: ``config.settings`` with DEBUG on unless the environment says otherwise.

pytest (pyproject's DJANGO_SETTINGS_MODULE) and mypy (django-stubs) load this module, so that a bare
``python -m pytest`` or ``mypy .`` works without a production SECRET_KEY. The variable is set in the
environment, not only here, so that the processes the tests start (tests/fixtures/stack.py) inherit it.
Never deploy with it: production uses ``config.settings`` with DEBUG unset.
"""

from __future__ import annotations

import os

os.environ.setdefault("DEBUG", "1")

from config.settings import *  # noqa: F403
