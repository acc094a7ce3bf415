from django.apps import AppConfig


class InferenceConfig(AppConfig):
    name = "inference"
    label = "inference"
    verbose_name = "inference pool"
    default_auto_field = "django.db.models.BigAutoField"
