from __future__ import annotations

import re
from typing import Any

from rest_framework.exceptions import ValidationError
from rest_framework.pagination import PageNumberPagination
from rest_framework.request import Request

# A page number or size as the schema documents it: a whole number from 1, in ASCII digits.
POSITIVE_WHOLE_NUMBER = re.compile(r"[1-9][0-9]{0,17}")


class Pagination(PageNumberPagination):
    """``?page=N&page_size=M`` (at most 200); lists answer ``{count, next, previous, results}``.

    Either parameter, when sent, is a whole number from 1, or the answer is a 400 naming
    it (DRF would take a malformed size for the default, and ``?page=x`` for a missing
    page); a page past the last is a 404, a size over 200 reads as 200.
    """

    page_size = 50
    page_size_query_param = "page_size"
    max_page_size = 200

    def get_page_size(self, request: Request) -> int:
        size = self._whole_number(request, self.page_size_query_param)
        return self.page_size if size is None else min(size, self.max_page_size)

    def get_page_number(self, request: Request, paginator: Any) -> int:
        number = self._whole_number(request, self.page_query_param)
        return 1 if number is None else number

    @staticmethod
    def _whole_number(request: Request, name: str) -> int | None:
        if name not in request.query_params:
            return None
        text = request.query_params[name]
        if not POSITIVE_WHOLE_NUMBER.fullmatch(text):
            raise ValidationError({name: ["A whole number from 1 is required."]})
        return int(text)
