"""Writes for the agent settings. Every function takes the business first."""

from __future__ import annotations

from typing import Any

from django.db import transaction

from agents.models import Agent
from agents.selectors import agent_for
from businesses.models import Business


def agent_update(business: Business, **fields: Any) -> Agent:
    """Change some of the business's agent settings (validated as a whole before saving)."""
    with transaction.atomic():
        agent = agent_for(business)
        unknown = set(fields) - {f.name for f in Agent._meta.get_fields()} | {
            "id",
            "business",
            "business_id",
        } & set(fields)
        if unknown:
            raise ValueError(f"not agent settings: {sorted(unknown)}")
        for name, value in fields.items():
            setattr(agent, name, value)
        agent.full_clean()
        agent.save()
    return agent
