"""Request body parsers for the API."""

from __future__ import annotations

from typing import Any

from rest_framework import parsers
from rest_framework.exceptions import ParseError


class JSONParser(parsers.JSONParser):
    """DRF's JSON parser, with JSON nested deeper than Python's recursion limit (a few kB of ``[``)
    refused as a 400 like any other bad JSON; it raised RecursionError, an HTML 500, on every JSON
    endpoint, the anonymous token endpoint included."""

    def parse(self, stream: Any, media_type: str | None = None, parser_context: Any = None) -> Any:
        try:
            return super().parse(stream, media_type, parser_context)
        except RecursionError as exc:
            raise ParseError("JSON parse error - nested too deeply") from exc
