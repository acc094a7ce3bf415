"""Outbound parts are recorded ``pending`` before they are claimed (``sending``); a send whose outcome is
unknown is ``ambiguous`` (and its message's delivery ``Unconfirmed``), never sent again.

Existing ``sending`` rows that nobody claimed were waiting to be sent: they become ``pending``. Claimed ones
keep ``sending``: after the claim's lease the new code reports them ambiguous rather than resending them.
"""

from django.db import migrations, models

DELIVERY_CHOICES = [
    ("", "-"),
    ("queued", "Queued"),
    ("sent", "Sent"),
    ("delivered", "Delivered"),
    ("read", "Read"),
    ("failed", "Failed"),
    ("ambiguous", "Unconfirmed"),
]


def unclaimed_to_pending(apps, schema_editor):
    OutboundPart = apps.get_model("messaging", "OutboundPart")
    OutboundPart.objects.filter(state="sending", claimed_at__isnull=True).update(state="pending")


def back_to_old_states(apps, schema_editor):
    # The old code resends a "sending" part, and knows no unconfirmed delivery: an ambiguous part (and its
    # message) becomes failed, so that it is still never sent twice.
    OutboundPart = apps.get_model("messaging", "OutboundPart")
    Message = apps.get_model("messaging", "Message")
    OutboundPart.objects.filter(state="pending").update(state="sending")
    OutboundPart.objects.filter(state="ambiguous").update(state="failed")
    Message.objects.filter(delivery="ambiguous").update(delivery="failed")


class Migration(migrations.Migration):
    dependencies = [
        ("messaging", "0005_message_reply_due_at"),
    ]

    operations = [
        migrations.AlterField(
            model_name="message",
            name="delivery",
            field=models.CharField(blank=True, choices=DELIVERY_CHOICES, default="", max_length=10),
        ),
        migrations.AlterField(
            model_name="outboundpart",
            name="delivery",
            field=models.CharField(blank=True, choices=DELIVERY_CHOICES, default="", max_length=10),
        ),
        migrations.AlterField(
            model_name="outboundpart",
            name="state",
            field=models.CharField(
                choices=[
                    ("pending", "Pending"),
                    ("sending", "Sending"),
                    ("sent", "Sent"),
                    ("failed", "Failed"),
                    ("ambiguous", "Ambiguous"),
                ],
                default="pending",
                max_length=10,
            ),
        ),
        migrations.RunPython(unclaimed_to_pending, back_to_old_states),
    ]
