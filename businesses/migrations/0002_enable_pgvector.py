from django.db import migrations
from pgvector.django import VectorExtension


class Migration(migrations.Migration):
    """pgvector for embeddings: the catalogs and agents apps rely on it."""

    dependencies = [("businesses", "0001_initial")]

    operations = [VectorExtension()]
