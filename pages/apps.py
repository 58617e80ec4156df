from django.apps import AppConfig


class PagesConfig(AppConfig):
    """What the reseller's dashboard and the client portal both draw with: money and number
    filters, chart data (``pages.charts``) and the shared shell ``templates/layout.html``.
    Below both page apps, above the domain apps whose reports it formats."""

    name = "pages"
    default_auto_field = "django.db.models.BigAutoField"
