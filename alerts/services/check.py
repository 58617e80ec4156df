"""The periodic check: claims each alert whose subject has crossed it, once per crossing,
and re-arms each whose subject is back on the safe side.

Design overview
---------------
What is measured (every ``ALERTS_CHECK_SECONDS``, active tenants only; a key only when it
may have something to say: past the lowest default share in SQL, with shares of its own,
or with a claim to re-arm, see ``_key_candidates``):

* a key alert: the share of an active key's limit it has used (``keys.selectors.key_use``:
  a prepaid key's client spend of its client budget, a wallet-funded key's spend this
  budget period of its spend cap; a wallet key without a cap has no share), at each of the
  key's thresholds (its ``KeyAlertOverride``, else the tenant's ``key_thresholds``),
  compared exactly in integers;
* the wallet balance alert: available money (balance less holds) under the threshold;
* the wallet runway alert: whole days the available money lasts at the last 7 days' draw
  (``billing.selectors.wallet_runway``, the overview's runway) under the threshold; a
  wallet that drew nothing has no runway and is never under it.

Where each alert stands is an ``AlertState`` row: ``crossed_at`` None (armed) or the time
its current crossing was claimed. An alert reached while armed is **claimed**: by the
insert of its state (the first time; a unique constraint lets one of two checks insert
it) or by a conditional update that sets ``crossed_at`` only where it is None (one of two
checks matches the row). The claim, its ``AlertEvent`` and one ``AlertDelivery`` per
channel (email when on, the webhook when set) commit together, and the deliveries are
enqueued once they have (``transaction.on_commit``): one event per crossing, whoever runs
the check and however often. An alert claimed whose subject is no longer past it (a
top-up, a raised cap, a new budget period, a wallet topped up) is **re-armed**: its
``crossed_at`` cleared by a conditional update on the stamp this check read, so a claim
made since is left alone. The next crossing is a new one.

A wallet alert re-arms with a margin (hysteresis): a wallet whose runway or balance hovers
around its threshold (a pace that wobbles from day to day) would otherwise cross, come
back and cross again, one email each time. So a claimed wallet alert re-arms only once
its figure is clearly back: the available balance at least ``BALANCE_REARM_PERCENT`` % of
the threshold, the runway at least ``RUNWAY_REARM_PERCENT`` % of it and at least
``RUNWAY_REARM_MIN_EXTRA_DAYS`` more days. A credit to the wallet since the claim (a
top-up or a manual credit, ``REARMING_CREDIT_KINDS``) re-arms it at once, as soon as the
figure is back at the threshold: money put in is a fresh start, not a wobble. Whether one
came is one query for all the wallets checked (``_credited_at``), and only for claimed
alerts between the threshold and the margin. A key alert re-arms as soon as the key is
back under the share (a top-up, a raised cap or a new period is always a step, never a
wobble).

States are read *before* the figures: a check that finds a claim and then a key below it
knows the key went below after that claim was made, so it may re-arm it. (Figures read
first could be older than a claim another check made from newer ones.)

When several of a key's thresholds are claimed at once (a key that went from 50 % to
100 % between two checks), only the highest is delivered; the lower ones are claimed
without a word, so the reseller gets one email, not a stack of stale ones.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from typing import Any

from django.db import IntegrityError, transaction
from django.db.models import F, Max, Q
from django.db.models.lookups import GreaterThanOrEqual
from django.utils import timezone

from accounts.models import Tenant
from alerts.events import (
    balance_event_data,
    event_id_new,
    key_event_data,
    runway_event_data,
)
from alerts.models import (
    AlertDelivery,
    AlertEvent,
    AlertKind,
    AlertSettings,
    AlertState,
    KeyAlertOverride,
)
from billing.models import LedgerEntry, Wallet
from billing.selectors import Runway, wallet_runway
from keys.models import ClientKey
from keys.selectors import FULL_PERCENT, KeyUse, key_use

logger = logging.getLogger(__name__)

# Tenants measured per round of queries, and keys read per round trip (the keys stream).
TENANT_CHUNK_SIZE = 200
KEY_CHUNK_SIZE = 2000

# (kind, tenant id, key id or None): what an alert watches.
Subject = tuple[str, int, int | None]

# The wallet alerts' hysteresis (see the module's doc): a claimed balance alert re-arms
# once the available balance is at least 110 % of its threshold ($55 for a $50 alert); a
# claimed runway alert once the runway is at least 125 % of its threshold and at least a
# day more, in whole days (a 3-day alert at 4 days, a 4-day one at 5, a 10-day one at 13).
# Compared exactly in integers.
BALANCE_REARM_PERCENT = 110
RUNWAY_REARM_PERCENT = 125
RUNWAY_REARM_MIN_EXTRA_DAYS = 1
# Money put into the wallet: a credit of these kinds since a wallet alert's claim re-arms
# it as soon as its figure is back at the threshold, without the margin.
REARMING_CREDIT_KINDS = (LedgerEntry.Kind.TOP_UP, LedgerEntry.Kind.MANUAL_CREDIT)


@dataclass(frozen=True, slots=True)
class _State:
    pk: int
    crossed_at: datetime | None


@dataclass(frozen=True, slots=True)
class _KeyMeasure:
    key: ClientKey
    use: KeyUse

    def reached(self, threshold: int) -> bool:
        return self.use.has_reached(threshold)

    def is_clear_of(self, threshold: int) -> bool:
        """Back under the share: no margin (see the module's doc)."""
        return not self.reached(threshold)

    def event(self, threshold: int) -> tuple[str, dict[str, Any]]:
        data = key_event_data(key=self.key, use=self.use, threshold=threshold)
        return AlertEvent.Type.KEY_THRESHOLD, data


@dataclass(frozen=True, slots=True)
class _BalanceMeasure:
    wallet: Wallet

    def reached(self, threshold: int) -> bool:
        return self.wallet.available_nanos < threshold

    def is_clear_of(self, threshold: int) -> bool:
        """At least ``BALANCE_REARM_PERCENT`` % of the threshold available."""
        return self.wallet.available_nanos * 100 >= threshold * BALANCE_REARM_PERCENT

    def event(self, threshold: int) -> tuple[str, dict[str, Any]]:
        data = balance_event_data(wallet=self.wallet, threshold_nanos=threshold)
        return AlertEvent.Type.WALLET_BALANCE, data


@dataclass(frozen=True, slots=True)
class _RunwayMeasure:
    runway: Runway

    def reached(self, threshold: int) -> bool:
        days = self.runway.days
        return days is not None and days < threshold

    def is_clear_of(self, threshold: int) -> bool:
        """At least ``RUNWAY_REARM_PERCENT`` % of the threshold's days, and at least
        ``RUNWAY_REARM_MIN_EXTRA_DAYS`` more; or no runway (nothing drawn of late)."""
        days = self.runway.days
        return days is None or (
            days * 100 >= threshold * RUNWAY_REARM_PERCENT
            and days >= threshold + RUNWAY_REARM_MIN_EXTRA_DAYS
        )

    def event(self, threshold: int) -> tuple[str, dict[str, Any]]:
        data = runway_event_data(runway=self.runway, threshold_days=threshold)
        return AlertEvent.Type.WALLET_RUNWAY, data


_Measure = _KeyMeasure | _BalanceMeasure | _RunwayMeasure


def alerts_check(
    *, tenant_ids: Collection[int] | None = None, now: datetime | None = None
) -> list[AlertEvent]:
    """Claim every armed alert that its subject has reached, with its event and
    deliveries (enqueued once committed), and re-arm every claimed alert whose subject is
    back on the safe side. Active tenants only, ``tenant_ids`` when given; figures at
    ``now`` (default: now). Returns the events this run created.

    Safe to re-run and to run twice at once: each crossing is claimed by one insert or
    one conditional update, so it is delivered once whoever runs the check.
    """
    now = now or timezone.now()
    tenants = Tenant.objects.active().order_by("pk")
    if tenant_ids is not None:
        tenants = tenants.filter(pk__in=list(tenant_ids))
    ids = list(tenants.values_list("pk", flat=True))
    events: list[AlertEvent] = []
    for start in range(0, len(ids), TENANT_CHUNK_SIZE):
        events += _check_tenants(ids[start : start + TENANT_CHUNK_SIZE], now)
    return events


def _check_tenants(tenant_ids: list[int], now: datetime) -> list[AlertEvent]:
    # The states first (see the module's doc): the figures below are newer than them.
    states: dict[Subject, dict[int, _State]] = defaultdict(dict)
    for pk, kind, tenant_id, key_id, threshold, crossed_at in AlertState.objects.filter(
        tenant_id__in=tenant_ids
    ).values_list("pk", "kind", "tenant_id", "key_id", "threshold", "crossed_at"):
        states[(kind, tenant_id, key_id)][threshold] = _State(pk=pk, crossed_at=crossed_at)
    configured = {s.tenant_id: s for s in AlertSettings.objects.filter(tenant_id__in=tenant_ids)}
    configs = {tid: configured.get(tid) or AlertSettings(tenant_id=tid) for tid in tenant_ids}
    overrides = dict(
        KeyAlertOverride.objects.filter(key__tenant_id__in=tenant_ids).values_list(
            "key_id", "thresholds"
        )
    )
    events: list[AlertEvent] = []

    keys = ClientKey.objects.filter(
        tenant_id__in=tenant_ids, status=ClientKey.Status.ACTIVE
    ).filter(_key_candidates(configs.values(), overrides, states))
    for key in keys.order_by("pk").iterator(chunk_size=KEY_CHUNK_SIZE):
        use = key_use(key=key, now=now)
        if use is None:
            continue
        config = configs[key.tenant_id]
        thresholds = overrides.get(key.pk, config.key_thresholds)
        subject: Subject = (AlertKind.KEY_USAGE.value, key.tenant_id, key.pk)
        events += _judge(
            subject, _KeyMeasure(key=key, use=use), thresholds, states[subject], config, now
        )

    # The wallets of the tenants that watch theirs, or have a wallet alert to re-arm.
    watching = {
        tid
        for tid, config in configs.items()
        if config.wallet_balance_below_nanos is not None
        or config.wallet_runway_days_below is not None
    }
    watching |= {
        tid
        for (kind, tid, _), by_threshold in states.items()
        if kind != AlertKind.KEY_USAGE and any(s.crossed_at for s in by_threshold.values())
    }
    measured: list[tuple[Subject, _Measure, list[int]]] = []
    wallet_ids: dict[int, int] = {}  # tenant id → wallet id
    for wallet in Wallet.objects.filter(tenant_id__in=watching).select_related("tenant"):
        wallet_ids[wallet.tenant_id] = wallet.pk
        config = configs[wallet.tenant_id]
        balance = config.wallet_balance_below_nanos
        balance_subject: Subject = (AlertKind.WALLET_BALANCE.value, wallet.tenant_id, None)
        measured.append(
            (balance_subject, _BalanceMeasure(wallet=wallet), [] if balance is None else [balance])
        )
        days = config.wallet_runway_days_below
        runway_subject: Subject = (AlertKind.WALLET_RUNWAY.value, wallet.tenant_id, None)
        if days is None and not states[runway_subject]:
            continue  # no runway to measure (one query): none asked for, none to re-arm
        runway = wallet_runway(tenant=wallet.tenant, wallet=wallet, now=now)
        measured.append(
            (runway_subject, _RunwayMeasure(runway=runway), [] if days is None else [days])
        )
    credited = _credited_at(measured, states, wallet_ids)
    for subject, measure, thresholds in measured:
        tenant_id = subject[1]
        events += _judge(
            subject,
            measure,
            thresholds,
            states[subject],
            configs[tenant_id],
            now,
            credited.get(wallet_ids[tenant_id]),
        )
    return events


def _credited_at(
    measured: Iterable[tuple[Subject, _Measure, list[int]]],
    states: dict[Subject, dict[int, _State]],
    wallet_ids: dict[int, int],
) -> dict[int, datetime]:
    """The last credit (``REARMING_CREDIT_KINDS``) of each wallet with a claimed alert
    between its threshold and the re-arm margin, posted since the earliest such claim:
    wallet id → when. One query for all of them, none when there is no such claim;
    bounded by those wallets' credits since their claims (``ledger_wallet_credits``, a
    partial index of credits only)."""
    since: dict[int, datetime] = {}
    for subject, measure, _ in measured:
        for threshold, state in states[subject].items():
            crossed_at = state.crossed_at
            if (
                crossed_at is not None
                and not measure.reached(threshold)
                and not measure.is_clear_of(threshold)
            ):
                wallet_id = wallet_ids[subject[1]]
                since[wallet_id] = min(since.get(wallet_id, crossed_at), crossed_at)
    if not since:
        return {}
    posted_since = Q()
    for wallet_id, crossed_at in since.items():
        posted_since |= Q(wallet_id=wallet_id, created_at__gt=crossed_at)
    return dict(
        LedgerEntry.objects.filter(posted_since, kind__in=REARMING_CREDIT_KINDS, amount_nanos__gt=0)
        .order_by()
        .values("wallet_id")
        .annotate(last=Max("created_at"))
        .values_list("wallet_id", "last")
    )


def _key_candidates(
    configs: Iterable[AlertSettings],
    overrides: dict[int, list[int]],
    states: dict[Subject, dict[int, _State]],
) -> Q:
    """The keys worth measuring, in SQL: those with a budget or a cap that have used at
    least the lowest default share of the tenants checked, those with shares of their own,
    and those with a claim to re-arm. Most keys are under every share: they are not read.
    (A capped key's stored period spend may belong to a period gone by: it is read, and
    ``key_use`` counts it as nothing.)"""
    claimed = [
        key_id
        for (kind, _, key_id), by_threshold in states.items()
        if kind == AlertKind.KEY_USAGE and any(s.crossed_at for s in by_threshold.values())
    ]
    candidates = Q(pk__in=[*overrides, *claimed])
    lowest = min((min(c.key_thresholds) for c in configs if c.key_thresholds), default=None)
    if lowest is not None:
        # used × 100 ≥ limit × lowest, in integers: at most 10^17, far inside 64 bits.
        candidates |= Q(
            GreaterThanOrEqual(
                F("client_spent_nanos") * FULL_PERCENT, F("client_budget_nanos") * lowest
            ),
            funding=ClientKey.Funding.PREPAID,
            client_budget_nanos__gt=0,
        ) | Q(
            GreaterThanOrEqual(
                F("period_client_spent_nanos") * FULL_PERCENT, F("spend_cap_nanos") * lowest
            ),
            funding=ClientKey.Funding.WALLET,
            spend_cap_nanos__gt=0,
        )
    return candidates


def _judge(
    subject: Subject,
    measure: _Measure,
    thresholds: Collection[int],
    states: dict[int, _State],
    config: AlertSettings,
    now: datetime,
    credited_at: datetime | None = None,
) -> list[AlertEvent]:
    """Claim the thresholds of ``subject`` it has reached (delivering the highest), and
    re-arm its claimed ones (configured or not any more) that it is clearly back from
    (``is_clear_of``), or back from with a credit to its wallet since the claim
    (``credited_at``: the wallet's last credit, when looked up; see ``_credited_at``)."""
    newly = [
        t
        for t in thresholds
        if measure.reached(t) and (t not in states or states[t].crossed_at is None)
    ]
    events = []
    # The most severe first: the highest share of a key; a wallet has one threshold a kind.
    for index, threshold in enumerate(sorted(newly, reverse=True)):
        event = _claim(
            subject,
            threshold,
            states.get(threshold),
            measure.event(threshold) if index == 0 else None,
            config,
            now,
        )
        if event is not None:
            events.append(event)
    for threshold, state in states.items():
        if state.crossed_at is None or measure.reached(threshold):
            continue
        credited = credited_at is not None and credited_at > state.crossed_at
        if measure.is_clear_of(threshold) or credited:
            # Re-armed only if the claim is still the one read before the figures, which
            # shows the subject came back after it was made; a claim made since (another
            # check's, another crossing's) is left alone.
            AlertState.objects.filter(pk=state.pk, crossed_at=state.crossed_at).update(
                crossed_at=None
            )
    return events


def _claim(
    subject: Subject,
    threshold: int,
    state: _State | None,
    event: tuple[str, dict[str, Any]] | None,
    config: AlertSettings,
    now: datetime,
) -> AlertEvent | None:
    """Claim ``threshold`` of ``subject`` for this crossing; with ``event``, also create
    the event and its deliveries, enqueued on commit. The event, or None (lost the claim
    to another check, or claimed without a word)."""
    kind, tenant_id, key_id = subject
    with transaction.atomic():
        if state is None:
            try:
                # The first claim of this alert is its state's insert: of two checks
                # inserting it at once, the unique constraint lets one through.
                with transaction.atomic():
                    row = AlertState.objects.create(
                        tenant_id=tenant_id,
                        key_id=key_id,
                        kind=kind,
                        threshold=threshold,
                        crossed_at=now,
                        crossings=1,
                    )
            except IntegrityError:
                return None
            state_id = row.pk
        else:
            # The claim: only an armed state (crossed_at None) becomes claimed. Two checks
            # that both saw the subject cross race here and one update matches the row.
            claimed = AlertState.objects.filter(pk=state.pk, crossed_at__isnull=True).update(
                crossed_at=now, crossings=F("crossings") + 1
            )
            if claimed != 1:
                return None
            state_id = state.pk
        if event is None:
            return None
        event_type, data = event
        created = AlertEvent.objects.create(
            public_id=event_id_new(),
            tenant_id=tenant_id,
            state_id=state_id,
            key_id=key_id,
            type=event_type,
            data=data,
            created_at=now,
        )
        delivery_ids = [
            AlertDelivery.objects.create(
                event=created,
                tenant_id=tenant_id,
                channel=channel,
                created_at=now,
                next_attempt_at=now,
            ).pk
            for channel in _channels(config)
        ]
        if delivery_ids:
            transaction.on_commit(partial(_enqueue, delivery_ids))
    logger.info("alert %s claimed: %s at %s", created.public_id, event_type, threshold)
    return created


def _channels(config: AlertSettings) -> list[str]:
    channels = []
    if config.is_email_on:
        channels.append(AlertDelivery.Channel.EMAIL.value)
    if config.webhook_url:
        channels.append(AlertDelivery.Channel.WEBHOOK.value)
    return channels


def _enqueue(delivery_ids: list[int]) -> None:
    from alerts.services.deliver import deliveries_enqueue

    deliveries_enqueue(delivery_ids)
