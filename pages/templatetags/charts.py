"""A chart's data in the page, for ``<canvas data-chart=… data-chart-data="ID">`` (app.js).

``{{ data|chart_data:"ID" }}`` writes the JSON as the text of a hidden element instead of a
``<script type="application/json">`` (``json_script``): htmx, told to run no script from a
swapped fragment (``allowScriptTags: false``), removes every ``<script>`` element from one,
data included, so a chart inside a fragment htmx swaps would find no data. The text is
HTML-escaped; app.js reads it back with ``textContent``, which unescapes it.
"""

from __future__ import annotations

import json
from typing import Any

from django import template
from django.core.serializers.json import DjangoJSONEncoder
from django.utils.html import format_html
from django.utils.safestring import SafeString

register = template.Library()


@register.filter
def chart_data(value: Any, element_id: str) -> SafeString:
    return format_html(
        '<div hidden id="{}" class="chart-data">{}</div>',
        element_id,
        json.dumps(value, cls=DjangoJSONEncoder),
    )
