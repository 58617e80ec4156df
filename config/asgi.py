"""ASGI entry point: `config.asgi:application`.

Served by an ASGI server (granian in `make run` and production).
"""

from __future__ import annotations

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

application = get_asgi_application()
