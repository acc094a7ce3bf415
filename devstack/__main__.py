"""``python -m devstack``: the whole stack in one terminal (``./dev start`` runs this)."""

from __future__ import annotations

import sys

from devstack.runner import main

sys.exit(main())
