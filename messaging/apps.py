from django.apps import AppConfig


class MessagingConfig(AppConfig):
    name = "messaging"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Celery autodiscovers only messaging.tasks: the channel tasks live in messaging.meta.tasks.
        import messaging.meta.tasks  # noqa: F401
