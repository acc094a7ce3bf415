"""The pool's rows move here from agents: their tables (agents_inferenceendpoint, agents_inferencecall) stay
as they are, only Django's state changes (agents 0004 drops them from its state after this)."""

import businesses.crypto
import django.core.validators
import django.db.models.deletion
from django.db import migrations, models

MODELS = ["inferenceendpoint", "inferencecall"]


def content_types_to_inference(apps, schema_editor):
    # The same content type rows, relabelled: permissions granted on the pool's models and the admin's
    # history of them stay attached. On a new database there is nothing to relabel yet (post_migrate
    # creates the content types after this).
    move_content_types(apps, schema_editor, source="agents", target="inference")


def content_types_to_agents(apps, schema_editor):
    move_content_types(apps, schema_editor, source="inference", target="agents")


def move_content_types(apps, schema_editor, *, source, target):
    content_types = apps.get_model("contenttypes", "ContentType").objects.using(schema_editor.connection.alias)
    taken = list(content_types.filter(app_label=target, model__in=MODELS).values_list("model", flat=True))
    content_types.filter(app_label=source, model__in=MODELS).exclude(model__in=taken).update(app_label=target)


class Migration(migrations.Migration):

    initial = True

    dependencies = [
        ('agents', '0003_encrypt_endpoint_api_keys'),
        ('businesses', '0002_enable_pgvector'),
        ('contenttypes', '0002_remove_content_type_name'),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.CreateModel(
                    name='InferenceEndpoint',
                    fields=[
                        ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                        ('name', models.CharField(max_length=100)),
                        ('base_url', models.URLField(help_text='Without /v1, e.g. http://gpu1:8000', unique=True)),
                        ('weight', models.PositiveIntegerField(default=1, validators=[django.core.validators.MinValueValidator(1)])),
                        ('api_key', businesses.crypto.EncryptedTextField(blank=True)),
                        ('model', models.CharField(blank=True, help_text='Served model name; blank = LLAMA_MODEL', max_length=200)),
                        ('max_concurrency', models.PositiveIntegerField(default=0, help_text='Requests in flight across all workers; 0 = LLAMA_ENDPOINT_MAX_CONCURRENCY')),
                        ('kind', models.CharField(choices=[('any', 'Chat and embeddings'), ('chat', 'Chat only'), ('embeddings', 'Embeddings only')], default='any', max_length=12)),
                        ('enabled', models.BooleanField(default=True)),
                        ('created_at', models.DateTimeField(auto_now_add=True)),
                    ],
                    options={
                        'db_table': 'agents_inferenceendpoint',
                    },
                ),
                migrations.CreateModel(
                    name='InferenceCall',
                    fields=[
                        ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                        ('kind', models.CharField(choices=[('chat', 'Chat'), ('embeddings', 'Embeddings')], default='chat', max_length=12)),
                        ('endpoint', models.CharField(blank=True, help_text='The endpoint of the last try', max_length=300)),
                        ('model', models.CharField(blank=True, max_length=200)),
                        ('outcome', models.CharField(choices=[('ok', 'Complete'), ('cut', 'Cut after the first token'), ('unavailable', 'No endpoint could answer'), ('rejected', 'Rejected by the server'), ('cancelled', 'Cancelled by the caller')], max_length=12)),
                        ('error', models.TextField(blank=True)),
                        ('tries', models.PositiveSmallIntegerField(default=0)),
                        ('prompt_tokens', models.PositiveIntegerField(default=0)),
                        ('completion_tokens', models.PositiveIntegerField(default=0)),
                        ('first_token_ms', models.FloatField(blank=True, null=True)),
                        ('total_ms', models.FloatField()),
                        ('created_at', models.DateTimeField(auto_now_add=True, db_index=True)),
                        ('business', models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.CASCADE, related_name='inference_calls', to='businesses.business')),
                    ],
                    options={
                        'db_table': 'agents_inferencecall',
                        'indexes': [models.Index(fields=['business', 'created_at'], name='inferencecall_business_time')],
                    },
                ),
            ],
            database_operations=[],
        ),
        migrations.RunPython(content_types_to_inference, content_types_to_agents),
    ]
