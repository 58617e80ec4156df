"""The REST API's JSON parser: the proxy's (orjson), so both surfaces read a body alike.

DRF's own parser (the standard library's ``json``) recurses once per nesting level, and a
body of a few thousand ``[`` raised RecursionError past DRF's ``ValueError`` handler: an
HTML 500. It also read a lone surrogate (``"\\ud800"``) into a string that PostgreSQL then
refuses: another 500. orjson refuses both, with ``NaN``/``Infinity`` and invalid UTF-8, as
``JSONDecodeError``; nesting stops at 1,024 levels whatever the stack. Each is a 400
``{"detail": "JSON parse error - …", "code": "parse_error"}``.
"""

from __future__ import annotations

from typing import Any

import orjson
from rest_framework.exceptions import ParseError
from rest_framework.parsers import BaseParser


class JsonParser(BaseParser):
    media_type = "application/json"

    def parse(self, stream: Any, media_type: str | None = None, parser_context: Any = None) -> Any:
        try:
            return orjson.loads(stream.read())
        except orjson.JSONDecodeError as exc:
            raise ParseError(f"JSON parse error - {exc}") from exc
