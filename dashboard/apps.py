from django.apps import AppConfig


class DashboardConfig(AppConfig):
    """The reseller's pages at ``/dashboard/``: server-rendered, htmx for live fragments."""

    name = "dashboard"
    default_auto_field = "django.db.models.BigAutoField"
