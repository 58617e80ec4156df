from __future__ import annotations

import re
from typing import Any

from django.db.models import QuerySet
from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.pagination import PageNumberPagination
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.utils.urls import remove_query_param, replace_query_param

# A page number or size as the schema documents it: a whole number from 1, in ASCII digits.
POSITIVE_WHOLE_NUMBER = re.compile(r"[1-9][0-9]{0,17}")

# The largest row offset a database takes (a signed 64-bit integer): a page further on is
# past the last one whatever the list.
MAX_OFFSET = 2**63 - 1


class Pagination(PageNumberPagination):
    """``?page=N&page_size=M`` (at most 200); lists answer ``{count, count_is_exact, next,
    previous, results}``.

    Either parameter, when sent, is a whole number from 1, or the answer is a 400 naming
    it (DRF would take a malformed size for the default, and ``?page=x`` for a missing
    page); a page past the last is a 404, a size over 200 reads as 200.

    ``count`` is counted up to ``count_limit`` (10,000) rows and no further: counting every
    row of a list that holds a busy key's requests costs the database a scan of all of them
    on every page (hundreds of ms at a few 100,000 rows), which no page needs. Past the
    limit ``count_is_exact`` is false and ``count`` is a lower bound (the limit, or the
    rows up to this page's end and one more, whichever is larger); ``next`` is null only on
    the last page either way, since each page reads one row more than it shows to know
    whether another follows. On the last page the count is exact and costs no query.
    """

    page_size = 50
    page_size_query_param = "page_size"
    max_page_size = 200
    count_limit = 10_000

    def get_page_size(self, request: Request) -> int:
        size = self._whole_number(request, self.page_size_query_param)
        return self.page_size if size is None else min(size, self.max_page_size)

    def get_page_number(self, request: Request, paginator: Any) -> int:
        number = self._whole_number(request, self.page_query_param)
        return 1 if number is None else number

    def paginate_queryset(
        self, queryset: QuerySet[Any], request: Request, view: Any = None
    ) -> list[Any]:
        size = self.get_page_size(request)
        number = self.get_page_number(request, None)
        offset = (number - 1) * size
        if offset + size + 1 > MAX_OFFSET:
            raise self._past_the_last(number)
        rows = list(queryset[offset : offset + size + 1])
        has_next = len(rows) > size
        rows = rows[:size]
        if not rows and number > 1:
            raise self._past_the_last(number)
        if not has_next:
            count, exact = offset + len(rows), True  # the last page: counted already
        elif offset + size + 1 > self.count_limit:
            count, exact = offset + size + 1, False  # at least this page and one more row
        else:
            counted = queryset.order_by().values("pk")[: self.count_limit + 1].count()
            count, exact = min(counted, self.count_limit), counted <= self.count_limit
        self.request = request
        self.number, self.has_next = number, has_next
        self.count, self.count_is_exact = count, exact
        return rows

    def get_paginated_response(self, data: Any) -> Response:
        return Response(
            {
                "count": self.count,
                "count_is_exact": self.count_is_exact,
                "next": self.get_next_link(),
                "previous": self.get_previous_link(),
                "results": data,
            }
        )

    def get_next_link(self) -> str | None:
        if not self.has_next:
            return None
        url = self._url()
        return replace_query_param(url, self.page_query_param, self.number + 1)

    def get_previous_link(self) -> str | None:
        if self.number == 1:
            return None
        url = self._url()
        if self.number == 2:
            return remove_query_param(url, self.page_query_param)
        return replace_query_param(url, self.page_query_param, self.number - 1)

    def get_paginated_response_schema(self, schema: dict[str, Any]) -> dict[str, Any]:
        described = super().get_paginated_response_schema(schema)
        properties = described["properties"]
        described["properties"] = {
            "count": properties["count"],
            "count_is_exact": {"type": "boolean"},
            **{name: value for name, value in properties.items() if name != "count"},
        }
        described["required"] = ["count", "count_is_exact", "next", "previous", "results"]
        return described

    def _url(self) -> str:
        request = self.request
        if request is None:  # set by paginate_queryset, which runs first
            raise RuntimeError("paginate_queryset has not run")
        return request.build_absolute_uri()

    def _past_the_last(self, number: int) -> NotFound:
        return NotFound(
            self.invalid_page_message.format(
                page_number=number, message="That page contains no results"
            )
        )

    @staticmethod
    def _whole_number(request: Request, name: str) -> int | None:
        if name not in request.query_params:
            return None
        text = request.query_params[name]
        if not POSITIVE_WHOLE_NUMBER.fullmatch(text):
            raise ValidationError({name: ["A whole number from 1 is required."]})
        return int(text)
