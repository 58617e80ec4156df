"""Per-request traces: what happened, what it cost, never what was said.

The proxy writes them (``proxy.traces``: batched, straight into the table); this app owns
the model and reads them (reports, earnings, retention). The table keeps the name it was
created with in the proxy app, ``proxy_trace``, and so do its indexes: moving the model
between apps moved no row (``usage/migrations/0001_initial.py``).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from django.conf import settings
from django.db import models
from django.utils import timezone

from keys.models import TAG_MAX_LENGTH

# A trace's model name, as the client sent it (and as the APIs filter it).
MODEL_MAX_LENGTH = 200


class Trace(models.Model):
    class Status(models.TextChoices):
        OK = "ok", "Completed"
        UPSTREAM_ERROR = "upstream_error", "Upstream error"
        CLIENT_DISCONNECTED = "client_disconnected", "Client disconnected"
        REFUSED = "refused", "Refused before dispatch"

    request_id = models.CharField(max_length=64, unique=True)
    # No index of their own (``db_index=False``): the lists' indexes below start with
    # them and serve every lookup by tenant or key (and the cascades) as well; every index
    # is paid on each of the thousands of traces written a second.
    tenant = models.ForeignKey(
        "accounts.Tenant", on_delete=models.CASCADE, related_name="+", db_index=False
    )
    client_key = models.ForeignKey(
        "keys.ClientKey", on_delete=models.CASCADE, related_name="traces", db_index=False
    )
    tag = models.CharField(max_length=TAG_MAX_LENGTH, blank=True, default="")
    endpoint = models.CharField(max_length=40)
    model = models.CharField(max_length=MODEL_MAX_LENGTH)
    upstream = models.ForeignKey(
        "billing.Upstream", on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    upstream_model = models.CharField(max_length=200, blank=True, default="")
    price = models.ForeignKey(
        "billing.ModelPrice", on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    is_stream = models.BooleanField(default=False)
    input_tokens = models.PositiveIntegerField(default=0)
    output_tokens = models.PositiveIntegerField(default=0)
    cached_input_tokens = models.PositiveIntegerField(default=0)
    cache_write_tokens = models.PositiveIntegerField(default=0)
    # True when the upstream never reported usage (client gone mid-stream) and tokens are counted by us.
    is_usage_estimated = models.BooleanField(default=False)
    cost_nanos = models.BigIntegerField(default=0)
    client_nanos = models.BigIntegerField(default=0)
    # The upstream reported more than the request's hold covers: the charge was clamped to
    # the hold, and the difference (at cost) is what the operator paid the upstream for
    # output nobody was charged for. ``db_default``: rows written by a worker that predates
    # these columns (a rolling deploy) still land.
    is_over_hold = models.BooleanField(default=False, db_default=False)
    overrun_cost_nanos = models.BigIntegerField(default=0, db_default=0)
    # What the request's cached reads saved at the posted prices (``billing.money.
    # request_charge``): at cost (the reseller's saving) and at the client price. Figures
    # for reports, not money moved; 0 for a request not settled. ``db_default`` as above.
    cache_savings_nanos = models.BigIntegerField(default=0, db_default=0)
    client_cache_savings_nanos = models.BigIntegerField(default=0, db_default=0)
    status_code = models.PositiveSmallIntegerField()
    status = models.CharField(max_length=24, choices=Status.choices)
    error_class = models.CharField(max_length=64, blank=True, default="")
    latency_ms = models.PositiveIntegerField(default=0)
    ttft_ms = models.PositiveIntegerField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    # Counted into its UsageRollup bucket (``usage.services.usage_roll_up``), which sets it
    # in the same transaction as it adds the trace to the bucket: the mark is what makes the
    # count exactly-once whatever the order, lateness or concurrency of the passes.
    # ``db_default``: the proxy's COPY writer names its columns and leaves this one out.
    is_rolled = models.BooleanField(default=False, db_default=False)

    class Meta:
        # The table the proxy app created (and ``proxy.traces`` copies into).
        db_table = "proxy_trace"
        ordering = ["-created_at", "-id"]
        # Named as they were created: a generated name hashes the table's name, so it would
        # change if the table were ever renamed, and the database's indexes would not.
        indexes = [
            # A key's requests and the tenant's, in the lists' order (``ordering``), so a
            # page is the first rows of one index range, and an export's next page
            # (``usage.selectors.traces_after``) starts where the last one ended. The
            # reports' time ranges of a tenant or key read them too.
            models.Index(
                fields=["client_key", "-created_at", "-id"], name="usage_trace_key_newest"
            ),
            models.Index(fields=["tenant", "-created_at", "-id"], name="usage_trace_tenant_newest"),
            # A key's failures (``?status=upstream_error``, ``refused``, ...), newest first:
            # a few percent of the traces, found without reading past every success; only
            # those rows pay for the index on insert.
            models.Index(
                fields=["client_key", "-created_at", "-id"],
                condition=~models.Q(status="ok"),
                name="usage_trace_key_failures",
            ),
            models.Index(fields=["created_at"], name="proxy_trace_created_489c52_idx"),
            # Few rows (the admin's "over the hold" filter and count): a partial index costs
            # the writes of every other trace nothing.
            models.Index(
                fields=["upstream", "-created_at"],
                condition=models.Q(is_over_hold=True),
                name="proxy_trace_over_hold",
            ),
            # Only the traces not rolled up yet (the last minute or so): what the rollup
            # pass claims and what the reports add to the rollups. Small, so cheap to keep.
            models.Index(
                fields=["tenant", "created_at"],
                condition=models.Q(is_rolled=False),
                name="usage_trace_unrolled",
            ),
        ]

    def __str__(self) -> str:
        return self.request_id


# What a usage report counts as an error: the upstream failed, or we refused the request
# (402, 429, ...). A client that hung up is not an error of the service.
ERROR_STATUSES = (Trace.Status.UPSTREAM_ERROR, Trace.Status.REFUSED)

# A rollup bucket's length. 15 minutes divides every UTC offset in use (+5:30, +5:45,
# -9:30 ...), so a day in any time zone is a whole number of buckets.
BUCKET_MINUTES = 15
BUCKET = timedelta(minutes=BUCKET_MINUTES)
BUCKET_SECONDS = BUCKET_MINUTES * 60


def bucket_floor(at: datetime) -> datetime:
    """The start of the 15-minute UTC bucket that holds ``at``."""
    epoch = int(at.timestamp())
    start = datetime.fromtimestamp(epoch - epoch % BUCKET_SECONDS, tz=UTC)
    return start


def bucket_ceiling(at: datetime) -> datetime:
    """``at`` itself if it starts a bucket, else the start of the next bucket."""
    start = bucket_floor(at)
    return start if start == at else start + BUCKET


# A rollup's summed columns.
ROLLUP_SUMS = (
    "request_count",
    "error_count",
    "input_tokens",
    "output_tokens",
    "cached_input_tokens",
    "cache_write_tokens",
    "cost_nanos",
    "client_nanos",
    "latency_ms_sum",
    "ttft_ms_sum",
    "ttft_count",
    "cache_savings_nanos",
    "client_cache_savings_nanos",
)


class UsageRollup(models.Model):
    """The sums of the rolled-up traces of one 15-minute UTC bucket, one tenant, client
    key, model and tag. Written only by ``usage.services.usage_roll_up`` (by adding, never
    by setting), kept after the traces are purged: last quarter's reports read these.
    Money in integer nano-dollars, like the traces it sums."""

    bucket_start = models.DateTimeField()
    tenant = models.ForeignKey("accounts.Tenant", on_delete=models.CASCADE, related_name="+")
    client_key = models.ForeignKey("keys.ClientKey", on_delete=models.CASCADE, related_name="+")
    model = models.CharField(max_length=MODEL_MAX_LENGTH)
    tag = models.CharField(max_length=TAG_MAX_LENGTH, blank=True, default="")
    request_count = models.BigIntegerField(default=0)
    # Traces whose status is one of ERROR_STATUSES.
    error_count = models.BigIntegerField(default=0)
    input_tokens = models.BigIntegerField(default=0)
    output_tokens = models.BigIntegerField(default=0)
    cached_input_tokens = models.BigIntegerField(default=0)
    cache_write_tokens = models.BigIntegerField(default=0)
    cost_nanos = models.BigIntegerField(default=0)
    client_nanos = models.BigIntegerField(default=0)
    latency_ms_sum = models.BigIntegerField(default=0)
    # Only streams report a time to first token: the mean is the sum over its own count.
    ttft_ms_sum = models.BigIntegerField(default=0)
    ttft_count = models.BigIntegerField(default=0)
    # What prompt caching saved (the traces' sums). ``db_default``: a pass still running the
    # previous code during a deploy names its columns and leaves these out.
    cache_savings_nanos = models.BigIntegerField(default=0, db_default=0)
    client_cache_savings_nanos = models.BigIntegerField(default=0, db_default=0)

    class Meta:
        constraints = [
            # The natural key: the pass adds into it (INSERT ... ON CONFLICT DO UPDATE).
            models.UniqueConstraint(
                fields=["bucket_start", "tenant", "client_key", "model", "tag"],
                name="usage_rollup_natural_key",
            ),
        ]
        indexes = [
            models.Index(fields=["tenant", "bucket_start"], name="usage_rollup_tenant_bucket"),
            models.Index(fields=["client_key", "bucket_start"], name="usage_rollup_key_bucket"),
        ]

    def __str__(self) -> str:
        return f"{self.bucket_start:%Y-%m-%d %H:%M} {self.client_key_id} {self.model} {self.tag}"


class TraceDeletion(models.Model):
    """One request to delete a key's raw traces (a privacy request), carried out by
    ``usage.services.key_traces_delete``: who asked, when, and how many went.

    The key's rollups stay (they hold only numbers), so its reports keep their figures;
    ``traces_before`` tells the rollup audit (``rollups_audit``) that the key's buckets
    starting before it have lost their traces and can no longer be checked against them.
    It is set, before any trace goes, past every trace the deletion may take."""

    tenant = models.ForeignKey("accounts.Tenant", on_delete=models.CASCADE, related_name="+")
    client_key = models.ForeignKey("keys.ClientKey", on_delete=models.CASCADE, related_name="+")
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
    )
    requested_at = models.DateTimeField(default=timezone.now)
    # A bucket boundary: the deletion takes only traces created before it.
    traces_before = models.DateTimeField()
    deleted_count = models.BigIntegerField(default=0)
    # Null while the deletion runs (or if it was cut short: it is safe to ask again).
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [models.Index(fields=["client_key", "traces_before"], name="usage_deletion_key")]

    def __str__(self) -> str:
        return f"traces of key {self.client_key_id} before {self.traces_before:%Y-%m-%d %H:%M}"


class UsageDay(models.Model):
    """The sums of one tenant's rollups of one local day in the tenant's daily zone, per
    client key, model and tag: the level a month's or a year's report reads (a 15-minute
    bucket of sparse traffic holds about one trace, so the 15-minute rows are nearly as many
    as the traces). ``day`` is the date in ``zone``; a tenant's rows are all in the zone its
    ``UsageDayState`` names. Written only by ``usage.services``: added to in the rollup
    pass's own transaction, rebuilt from the 15-minute rows when the tenant's zone changes."""

    day = models.DateField()
    # The IANA name of the zone ``day`` is a date in (the same on all of a tenant's rows).
    zone = models.CharField(max_length=64)
    tenant = models.ForeignKey("accounts.Tenant", on_delete=models.CASCADE, related_name="+")
    client_key = models.ForeignKey("keys.ClientKey", on_delete=models.CASCADE, related_name="+")
    model = models.CharField(max_length=MODEL_MAX_LENGTH)
    tag = models.CharField(max_length=TAG_MAX_LENGTH, blank=True, default="")
    request_count = models.BigIntegerField(default=0)
    error_count = models.BigIntegerField(default=0)
    input_tokens = models.BigIntegerField(default=0)
    output_tokens = models.BigIntegerField(default=0)
    cached_input_tokens = models.BigIntegerField(default=0)
    cache_write_tokens = models.BigIntegerField(default=0)
    cost_nanos = models.BigIntegerField(default=0)
    client_nanos = models.BigIntegerField(default=0)
    latency_ms_sum = models.BigIntegerField(default=0)
    ttft_ms_sum = models.BigIntegerField(default=0)
    ttft_count = models.BigIntegerField(default=0)
    cache_savings_nanos = models.BigIntegerField(default=0, db_default=0)
    client_cache_savings_nanos = models.BigIntegerField(default=0, db_default=0)

    class Meta:
        constraints = [
            # The natural key, led by tenant and day: the pass adds into it (INSERT ... ON
            # CONFLICT DO UPDATE) and its index serves a tenant's reports over a range of days.
            models.UniqueConstraint(
                fields=["tenant", "day", "client_key", "model", "tag"],
                name="usage_day_natural_key",
            ),
        ]
        indexes = [
            models.Index(fields=["client_key", "day"], name="usage_day_key_day"),
        ]

    def __str__(self) -> str:
        return f"{self.day:%Y-%m-%d} {self.zone} {self.client_key_id} {self.model} {self.tag}"


# The zone of a tenant whose daily rows were never built (no zone is named "").
NO_DAILY_ZONE = ""


class UsageDayState(models.Model):
    """Which zone a tenant's ``UsageDay`` rows are complete for: every rolled-up trace of the
    tenant is in them, by its date in ``zone``. The rollup pass adds into that zone's rows
    and, when the tenant's ``timezone`` is another one (it changed zone, or it is new),
    rebuilds them in the new zone and sets ``zone``, in one transaction. The reports use
    the daily rows only for a window in this zone. One row per tenant; the pass creates it."""

    tenant = models.OneToOneField(
        "accounts.Tenant", on_delete=models.CASCADE, primary_key=True, related_name="+"
    )
    zone = models.CharField(max_length=64, blank=True, default=NO_DAILY_ZONE)

    def __str__(self) -> str:
        return f"{self.tenant_id}: {self.zone or '(not built)'}"


class UsageDayLevel(models.Model):
    """A tenant-wide daily level: the sums of one tenant's ``UsageDay`` rows of one local day
    per value of one of their columns (``value``: a client key, a model or a tag), so that a
    report over all the tenant's keys reads about a thousand key rows a day, or a handful of
    model or tag rows, instead of every key x model x tag row. Same ``day``, ``zone`` and sums
    as the daily rows they regroup, and written with them, in the same transaction, only by
    ``usage.services`` (added to by the pass, rebuilt with the tenant's daily rows, purged
    with them); ``rollup_usage --check`` compares them."""

    # The column of UsageDay this level groups by (and its own): set by each level.
    value: str

    objects = models.Manager()

    day = models.DateField()
    zone = models.CharField(max_length=64)
    tenant = models.ForeignKey("accounts.Tenant", on_delete=models.CASCADE, related_name="+")
    request_count = models.BigIntegerField(default=0)
    error_count = models.BigIntegerField(default=0)
    input_tokens = models.BigIntegerField(default=0)
    output_tokens = models.BigIntegerField(default=0)
    cached_input_tokens = models.BigIntegerField(default=0)
    cache_write_tokens = models.BigIntegerField(default=0)
    cost_nanos = models.BigIntegerField(default=0)
    client_nanos = models.BigIntegerField(default=0)
    latency_ms_sum = models.BigIntegerField(default=0)
    ttft_ms_sum = models.BigIntegerField(default=0)
    ttft_count = models.BigIntegerField(default=0)
    cache_savings_nanos = models.BigIntegerField(default=0, db_default=0)
    client_cache_savings_nanos = models.BigIntegerField(default=0, db_default=0)

    class Meta:
        abstract = True

    def __str__(self) -> str:
        return f"{self.day:%Y-%m-%d} {self.zone} {getattr(self, self.value)}"


class UsageKeyDay(UsageDayLevel):
    """A tenant's daily rows of one local day summed per client key (all models and tags)."""

    value = "client_key_id"

    client_key = models.ForeignKey("keys.ClientKey", on_delete=models.CASCADE, related_name="+")

    class Meta:
        constraints = [
            # The natural key, led by tenant and day: what the pass adds into and what a
            # tenant's report over a range of days reads.
            models.UniqueConstraint(
                fields=["tenant", "day", "client_key"], name="usage_key_day_natural_key"
            ),
        ]


class UsageModelDay(UsageDayLevel):
    """A tenant's daily rows of one local day summed per model (all keys and tags)."""

    value = "model"

    model = models.CharField(max_length=MODEL_MAX_LENGTH)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["tenant", "day", "model"], name="usage_model_day_natural_key"
            ),
        ]


class UsageTagDay(UsageDayLevel):
    """A tenant's daily rows of one local day summed per tag (all keys and models)."""

    value = "tag"

    tag = models.CharField(max_length=TAG_MAX_LENGTH, blank=True, default="")

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["tenant", "day", "tag"], name="usage_tag_day_natural_key"
            ),
        ]


# The tenant-wide daily levels, in the order the pass writes them (always the same order, so
# that two passes lock their rows alike).
DAY_LEVELS: tuple[type[UsageDayLevel], ...] = (UsageKeyDay, UsageModelDay, UsageTagDay)


class UsageKeyMonth(models.Model):
    """A tenant's daily rows summed per client key and local month (all models and tags):
    what a report per key over months reads instead of a row per key and day (a year of a
    thousand keys is twelve thousand rows, not 365,000). ``month`` is the month's first day
    in ``zone``, the zone of the tenant's daily rows. Written with them, in the same
    transactions, only by ``usage.services`` (added to by the pass, rebuilt with the
    tenant's daily rows, purged with them); ``rollup_usage --check`` compares them with the
    daily rows."""

    month = models.DateField()
    zone = models.CharField(max_length=64)
    tenant = models.ForeignKey("accounts.Tenant", on_delete=models.CASCADE, related_name="+")
    client_key = models.ForeignKey("keys.ClientKey", on_delete=models.CASCADE, related_name="+")
    request_count = models.BigIntegerField(default=0)
    error_count = models.BigIntegerField(default=0)
    input_tokens = models.BigIntegerField(default=0)
    output_tokens = models.BigIntegerField(default=0)
    cached_input_tokens = models.BigIntegerField(default=0)
    cache_write_tokens = models.BigIntegerField(default=0)
    cost_nanos = models.BigIntegerField(default=0)
    client_nanos = models.BigIntegerField(default=0)
    latency_ms_sum = models.BigIntegerField(default=0)
    ttft_ms_sum = models.BigIntegerField(default=0)
    ttft_count = models.BigIntegerField(default=0)
    cache_savings_nanos = models.BigIntegerField(default=0, db_default=0)
    client_cache_savings_nanos = models.BigIntegerField(default=0, db_default=0)

    class Meta:
        constraints = [
            # The natural key, led by tenant and month: what the pass adds into and what a
            # tenant's report over a range of months reads.
            models.UniqueConstraint(
                fields=["tenant", "month", "client_key"], name="usage_key_month_natural_key"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.month:%Y-%m} {self.zone} {self.client_key_id}"
