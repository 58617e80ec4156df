from __future__ import annotations

from django.apps import AppConfig


class DemoConfig(AppConfig):
    """The demo ``make run`` seeds: an orchestration over every app, so an app of its own
    above them all (no app imports it)."""

    name = "demo"
    default_auto_field = "django.db.models.BigAutoField"
