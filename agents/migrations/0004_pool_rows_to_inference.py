"""The pool's rows now belong to the inference app (its 0001): forgotten here in Django's state only, their
tables stay."""

from django.db import migrations


class Migration(migrations.Migration):

    dependencies = [
        ('agents', '0003_encrypt_endpoint_api_keys'),
        ('inference', '0001_pool_rows_from_agents'),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.DeleteModel(name='InferenceCall'),
                migrations.DeleteModel(name='InferenceEndpoint'),
            ],
            database_operations=[],
        ),
    ]
