"""``django.contrib.admin`` with the operator's site (``config.admin_site``) as ``admin.site``,
so every app's ``@admin.register`` lands on it. Kept apart from the site: this module is
imported while the apps load, before any model may be."""

from __future__ import annotations

from django.contrib.admin.apps import AdminConfig


class OperatorAdminConfig(AdminConfig):
    default_site = "config.admin_site.OperatorAdminSite"
