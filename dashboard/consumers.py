"""Live import progress for the admin's progress bar.

The import publishes ``import.progress`` events on the Channels group ``import.<id>``
(``catalogs.services.progress.import_group``). This consumer lets a signed-in member of the import's business join
that group and forwards each event as the full status the page renders (the same JSON as the status
endpoint), so the bar never has to merge partial events.
"""

from __future__ import annotations

from typing import Any, Literal, TypedDict

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from django.http import Http404

from businesses.selectors import membership_for
from catalogs.services.progress import ImportProgressEvent, import_group
from dashboard import selectors
from dashboard.selectors import ImportBar


class ImportStatusFrame(TypedDict):
    """The one frame this socket sends: on connect, then on each progress event."""

    type: Literal["import.status"]
    status: ImportBar


@database_sync_to_async
def _status_for_member(user: Any, slug: str, import_id: int) -> ImportBar | None:
    """The import's status if ``user`` is a member of its business, else None."""
    try:
        membership = membership_for(user, slug)
        return selectors.import_status(selectors.import_or_404(membership.business, import_id))
    except Http404:
        return None


class ImportProgressConsumer(AsyncJsonWebsocketConsumer):
    group: str | None = None

    async def connect(self) -> None:
        kwargs = self.scope["url_route"]["kwargs"]
        self.slug, self.import_id = kwargs["slug"], int(kwargs["import_id"])
        status = await _status_for_member(self.scope.get("user"), self.slug, self.import_id)
        if status is None:
            # Not signed in, not a member, or not this business's import: refuse, revealing nothing.
            await self.close(code=4403)
            return
        self.group = import_group(self.import_id)
        await self.channel_layer.group_add(self.group, self.channel_name)
        await self.accept()
        await self.send_frame({"type": "import.status", "status": status})

    async def disconnect(self, code: int) -> None:
        if self.group:
            await self.channel_layer.group_discard(self.group, self.channel_name)

    async def import_progress(self, event: ImportProgressEvent) -> None:
        status = await _status_for_member(self.scope.get("user"), self.slug, self.import_id)
        if status is None:  # membership revoked while watching
            await self.close(code=4403)
            return
        await self.send_frame({"type": "import.status", "status": status})

    async def send_frame(self, frame: ImportStatusFrame) -> None:
        await self.send_json(frame)
