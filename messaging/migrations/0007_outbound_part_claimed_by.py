"""Who claimed an outbound part (host:pid): a part whose worker died mid-send is reported at once."""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("messaging", "0006_outbound_part_send_states")]

    operations = [
        migrations.AddField(
            model_name="outboundpart",
            name="claimed_by",
            field=models.CharField(blank=True, max_length=100),
        ),
    ]
