from django.db import migrations, models

# businesses.demo.DEMO_SLUG, spelled out: a migration must not change when application code does.
DEMO_SLUG = "trailhead-outfitters"


def enable_for_the_demo_business(apps, schema_editor):
    # Every other business starts with its demo storefront off, until its owner turns it on.
    Business = apps.get_model("businesses", "Business")
    Business.objects.filter(slug=DEMO_SLUG).update(demo_page_enabled=True)


class Migration(migrations.Migration):
    dependencies = [
        ("businesses", "0002_enable_pgvector"),
    ]

    operations = [
        migrations.AddField(
            model_name="business",
            name="demo_page_enabled",
            field=models.BooleanField(default=False),
        ),
        migrations.RunPython(enable_for_the_demo_business, migrations.RunPython.noop, elidable=True),
    ]
