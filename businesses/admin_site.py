"""Django's admin (/django-admin/): superusers only, and secrets it can set but never show.

The admin sees every tenant's rows, so a staff flag is not enough: the business-facing admin is the dashboard
(/app/), scoped by membership. Secrets (``EncryptedTextField``: inference endpoint API keys, channel tokens)
are write-only there: a password input that never renders the stored value; left blank, the stored value
stays. A ModelAdmin of a model with such a field must use ``WriteOnlySecretsAdmin`` (a test walks the
registry to check it).
"""

from __future__ import annotations

from typing import Any, TypeVar

from django import forms
from django.contrib import admin
from django.contrib.admin.apps import AdminConfig
from django.db import models
from django.http import HttpRequest

from businesses.crypto import EncryptedTextField


class SuperuserAdminSite(admin.AdminSite):
    def has_permission(self, request: HttpRequest) -> bool:
        user = request.user
        return bool(user.is_active and user.is_superuser)


class SuperuserAdminConfig(AdminConfig):
    """Replaces ``django.contrib.admin`` in INSTALLED_APPS so that ``admin.site`` is a SuperuserAdminSite."""

    default_site = "businesses.admin_site.SuperuserAdminSite"


KEEP_HELP = "Stored encrypted and never shown. Leave blank to keep the current value."


class WriteOnlySecretsForm(forms.ModelForm[Any]):
    """A blank secret field keeps the stored value (it is dropped from cleaned_data, so it is not assigned).

    One form for every model with secrets: ``get_form`` builds the model's own subclass of it."""

    secret_fields: tuple[str, ...] = ()

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        for name in self.secret_fields:
            if name in cleaned and not cleaned[name]:
                del cleaned[name]
        return cleaned


_M = TypeVar("_M", bound=models.Model)


class WriteOnlySecretsAdmin(admin.ModelAdmin[_M]):
    form = WriteOnlySecretsForm

    def _secret_fields(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.model._meta.get_fields() if isinstance(f, EncryptedTextField))

    def formfield_for_dbfield(
        self, db_field: models.Field[Any, Any], request: HttpRequest, **kwargs: Any
    ) -> forms.Field | None:
        if isinstance(db_field, EncryptedTextField):
            return forms.CharField(
                label=db_field.verbose_name.capitalize(),
                required=False,
                strip=True,
                # render_value=False: the page never carries the stored secret, not even masked.
                widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"}),
                help_text=KEEP_HELP,
            )
        return super().formfield_for_dbfield(db_field, request, **kwargs)

    def get_form(self, request: HttpRequest, obj: Any = None, change: bool = False, **kwargs: Any) -> Any:
        form = super().get_form(request, obj, change=change, **kwargs)
        if issubclass(form, WriteOnlySecretsForm):
            form.secret_fields = self._secret_fields()
        return form
