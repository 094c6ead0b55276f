"""Reading a model's text: JSON objects out of prose, and the error a parser raises."""

from __future__ import annotations

import json
from typing import Any


class InvalidOutput(ValueError):
    """Raised by parse functions when the model's text is unusable."""


def one_line(e: BaseException | str) -> str:
    return " ".join(str(e).split())[:300]


def parse_json_object(text: str) -> dict[str, Any]:
    """The first JSON object in a model's text (tolerates code fences and prose around it)."""
    start = text.find("{")
    if start < 0:
        raise InvalidOutput("no JSON object in the answer")
    try:
        obj, _ = json.JSONDecoder().raw_decode(text[start:])
    except json.JSONDecodeError as e:
        raise InvalidOutput(f"bad JSON: {e.msg} at position {e.pos}") from None
    if not isinstance(obj, dict):
        raise InvalidOutput("the JSON answer is not an object")
    return obj
