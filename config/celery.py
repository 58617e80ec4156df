"""Celery application. Without REDIS_URL, tasks run in-process (see settings)."""

from __future__ import annotations

import os
from functools import partial

from celery import Celery, shared_task
from django.db import OperationalError

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

app = Celery("tollgate")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()

# Every task touches the database: a lost connection or a serialization failure is worth
# retrying (with backoff); anything else is a bug and fails loudly. Tasks must be safe to
# re-run. Time limits come from settings (CELERY_TASK_*_TIME_LIMIT).
database_task = partial(
    shared_task,
    autoretry_for=(OperationalError,),
    retry_backoff=True,
    retry_backoff_max=60,
    retry_jitter=True,
    max_retries=5,
    ignore_result=True,
)
