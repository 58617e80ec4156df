"""ASGI entry point: ``config.asgi:application``.

Model traffic (``/v1/chat/completions``, ``/v1/messages``, ...) takes the proxy's lean
async path; collected static files (``STATIC_ROOT``) are served by ServeStatic; everything
else (admin, REST API, portal) is Django's, at most ``DJANGO_CONCURRENCY`` requests at a
time per worker (``config.capacity``). Served by ``python -m config.serve`` (uvicorn
workers, see there) in ``make run`` and production.
"""

from __future__ import annotations

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

django_application = get_asgi_application()

from django.conf import settings  # noqa: E402 - after Django is set up
from servestatic import ServeStaticASGI  # noqa: E402

from config.capacity import DjangoGate  # noqa: E402
from proxy.asgi import ProxyApplication  # noqa: E402 - needs Django set up first

# At most DJANGO_CONCURRENCY requests in Django at once per worker, the rest wait their turn
# (config/capacity.py); static files and the proxy's paths do not queue behind them.
gated_django = DjangoGate(
    django_application,
    limit=settings.DJANGO_CONCURRENCY,
    wait_seconds=settings.DB_POOL_TIMEOUT,
)
static_and_django = ServeStaticASGI(gated_django)
if os.path.isdir(settings.STATIC_ROOT):  # collectstatic has run (make run, production)
    static_and_django.add_files(settings.STATIC_ROOT, prefix=settings.STATIC_URL)
application = ProxyApplication(static_and_django)
