"""The customer message is its reply's outbox: ``reply_due_at``, and the sweeper's partial index."""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("messaging", "0004_webhook_delivery_digest_and_purge"),
    ]

    operations = [
        migrations.AddField(
            model_name="message",
            name="reply_due_at",
            field=models.DateTimeField(blank=True, null=True),
        ),
        migrations.AddIndex(
            model_name="message",
            index=models.Index(
                condition=models.Q(("role", "customer"), ("status", "received")),
                fields=["reply_due_at"],
                name="message_reply_due",
            ),
        ),
    ]
