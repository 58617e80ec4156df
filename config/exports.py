"""CSV answers of the REST API's reads: ``?format=csv`` or ``Accept: text/csv``.

A view that can answer CSV derives from :class:`CsvApiView`: DRF's content negotiation
then picks JSON (the default) or :class:`CsvRenderer`, and the view builds a
:class:`CsvTable` instead of its JSON body when ``wants_csv``. Errors stay JSON, in the
shapes of ``config.exceptions``, whatever was asked for. A list too long to hold in memory
is streamed instead (:func:`csv_stream`): an *async* iterator of pages, which Django's ASGI
handler sends page by page (a sync iterator it would first read to the end).

Cells are text as a spreadsheet shows it: money as decimal strings (cents where the JSON
has cents), dates in ISO 8601, booleans ``true``/``false``, nothing for null. A cell of a
column the caller's clients control (a model or tag name, a label) that starts with
``= + - @``, a tab or a carriage return gets a leading ``'``, so a spreadsheet shows it as
text instead of running it as a formula (OWASP "CSV Injection").
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from django.http import HttpResponse, StreamingHttpResponse
from rest_framework.exceptions import ValidationError
from rest_framework.negotiation import DefaultContentNegotiation
from rest_framework.renderers import BaseRenderer, JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

CSV_MEDIA_TYPE = "text/csv"
CSV_CONTENT_TYPE = "text/csv; charset=utf-8"
FORMULA_TRIGGERS = ("=", "+", "-", "@", "\t", "\r")
# What a download's file name may hold (it goes into a header): anything else becomes "-".
FILENAME_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")

Row = Mapping[str, Any]


def guarded(text: str) -> str:
    """``text`` as a spreadsheet must show it: a leading ``'`` when it could start a formula."""
    return "'" + text if text.startswith(FORMULA_TRIGGERS) else text


def _cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return value


@dataclass(frozen=True, slots=True)
class CsvTable:
    """A CSV answer: its header (``columns``) and rows (mappings of column to a value
    already formatted; a missing column is an empty cell). ``guarded_columns`` hold text
    the caller's clients control (see :func:`guarded`)."""

    columns: Sequence[str]
    rows: Iterable[Row]
    guarded_columns: frozenset[str] = field(default_factory=frozenset)

    def encode(self, rows: Iterable[Row] | None = None, *, header: bool = True) -> bytes:
        """The header (unless ``header`` is false) and ``rows`` (the table's own by
        default) as UTF-8 CSV, lines ending CRLF (RFC 4180)."""
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        if header:
            writer.writerow(self.columns)
        for row in self.rows if rows is None else rows:
            writer.writerow(
                [
                    guarded(value)
                    if name in self.guarded_columns and isinstance(value := row.get(name), str)
                    else _cell(row.get(name))
                    for name in self.columns
                ]
            )
        return buffer.getvalue().encode()


class CsvRenderer(BaseRenderer):
    """Renders a :class:`CsvTable` (what a ``CsvExportMixin`` view answers with for CSV)."""

    media_type = CSV_MEDIA_TYPE
    format = "csv"
    charset = "utf-8"

    def render(
        self,
        data: Any,
        accepted_media_type: str | None = None,
        renderer_context: Mapping[str, Any] | None = None,
    ) -> bytes:
        if not isinstance(data, CsvTable):
            raise TypeError(f"CsvRenderer renders a CsvTable, not {type(data).__name__}")
        return data.encode()


class FormatNegotiation(DefaultContentNegotiation):
    """DRF's negotiation, except that a ``?format=`` no renderer of the view has is a 400
    naming the formats (DRF answers 404, as for a missing page)."""

    def select_renderer(
        self, request: Request, renderers: Iterable[BaseRenderer], format_suffix: str | None = None
    ) -> tuple[BaseRenderer, str]:
        renderers = list(renderers)
        name = self.settings.URL_FORMAT_OVERRIDE
        formats = [renderer.format for renderer in renderers]
        if name and name in request.query_params and request.query_params[name] not in formats:
            raise ValidationError({name: [f"One of: {', '.join(formats)}."]})
        return super().select_renderer(request, renderers, format_suffix)  # type: ignore[no-any-return]


def attachment(filename: str) -> str:
    """A ``Content-Disposition`` value that downloads as ``filename`` (made header-safe)."""
    return f'attachment; filename="{FILENAME_UNSAFE.sub("-", filename)}"'


class CsvApiView(APIView):
    """An ``APIView`` that answers CSV too: JSON by default, CSV on ``?format=csv`` or
    ``Accept: text/csv``; its errors always in JSON."""

    renderer_classes = [JSONRenderer, CsvRenderer]
    content_negotiation_class = FormatNegotiation

    def wants_csv(self, request: Request) -> bool:
        return getattr(request, "accepted_renderer", None) is not None and (
            request.accepted_renderer.format == CsvRenderer.format
        )

    def csv_response(self, table: CsvTable, *, filename: str) -> Response:
        return Response(table, headers={"Content-Disposition": attachment(filename)})

    def handle_exception(self, exc: Exception) -> Response:
        response: Response = super().handle_exception(exc)
        self.request.accepted_renderer = JSONRenderer()
        self.request.accepted_media_type = JSONRenderer.media_type
        return response


def csv_download(table: CsvTable, *, filename: str) -> HttpResponse:
    """``table`` as a plain Django download, byte for byte what ``CsvApiView`` sends for
    it (the dashboard's ``?format=csv``, which shares the API's tables)."""
    response = HttpResponse(table.encode(), content_type=CSV_CONTENT_TYPE)
    response["Content-Disposition"] = attachment(filename)
    return response


async def _encoded(
    table: CsvTable, pages: AsyncIterator[Sequence[Any]], row: Callable[[Any], Row]
) -> AsyncIterator[bytes]:
    yield table.encode([], header=True)
    async for page in pages:
        yield table.encode(map(row, page), header=False)


def csv_stream(
    table: CsvTable,
    pages: AsyncIterator[Sequence[Any]],
    *,
    row: Callable[[Any], Row],
    filename: str,
) -> StreamingHttpResponse:
    """A CSV download sent page by page as ``pages`` yields them (``row`` turns an item
    into the table's row), in constant memory however long: ``pages`` is async, so under
    ASGI each page goes out before the next is read (``table.rows`` is not used)."""
    response = StreamingHttpResponse(_encoded(table, pages, row), content_type=CSV_CONTENT_TYPE)
    response["Content-Disposition"] = attachment(filename)
    return response
