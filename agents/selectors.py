"""Reads for the agent: its settings per business."""

from __future__ import annotations

from agents.models import Agent
from businesses.models import Business


def agent_for(business: Business) -> Agent:
    """The business's agent settings, created with the defaults on first use."""
    agent, _ = Agent.objects.get_or_create(
        business=business, defaults={"name": f"{business.name} assistant"[:100]}
    )
    return agent
