"""ASGI entry point: ``config.asgi:application``.

Model traffic (``/v1/chat/completions``, ``/v1/messages``, ...) takes the proxy's lean
async path; everything else (admin, REST API, portal) is Django's. Served by granian in
``make run`` and production.
"""

from __future__ import annotations

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

django_application = get_asgi_application()

from proxy.asgi import ProxyApplication  # noqa: E402 - needs Django set up first

application = ProxyApplication(django_application)
