import django.contrib.postgres.fields
from django.db import migrations, models

import businesses.models


class Migration(migrations.Migration):
    """API keys get scopes; the keys that exist get all three, so that every script using one keeps working."""

    dependencies = [
        ("businesses", "0004_invitation"),
    ]

    operations = [
        migrations.AddField(
            model_name="apikey",
            name="scopes",
            field=django.contrib.postgres.fields.ArrayField(
                base_field=models.CharField(
                    choices=[
                        ("read", "Read the catalog, documents, settings, analytics"),
                        ("write", "Change the catalog, documents, settings, curated answers"),
                        ("conversations", "Read and answer conversations, contacts"),
                    ],
                    max_length=20,
                ),
                blank=True,
                default=businesses.models.all_api_scopes,
                size=None,
            ),
        ),
    ]
