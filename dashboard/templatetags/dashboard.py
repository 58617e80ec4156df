"""Small helpers for the dashboard's templates."""

from __future__ import annotations

import json
from typing import Any

from django import template
from django.core.serializers.json import DjangoJSONEncoder
from django.utils.html import format_html
from django.utils.safestring import SafeString

register = template.Library()


@register.filter
def startswith(text: str, prefix: str) -> bool:
    return str(text).startswith(prefix)


@register.filter
def thousands(number: int | None) -> str:
    """``12,345``: a count (requests, tokens) with thousands separators."""
    if number is None:
        return "—"
    return f"{int(number):,}"


@register.filter
def json_data(value: Any, element_id: str) -> SafeString:
    """``json_script`` for fragments: the JSON as the text of a hidden ``<div id=…>``.

    htmx is configured not to run scripts (``allowScriptTags: false``), and so removes every
    ``<script>`` from the HTML it swaps in, ``json_script``'s data included; a ``<div>``
    stays. ``app.js`` reads either element's text (``textContent`` undoes the escaping)."""
    return format_html(
        '<div id="{}" class="json-data" hidden>{}</div>',
        element_id,
        json.dumps(value, cls=DjangoJSONEncoder),
    )
