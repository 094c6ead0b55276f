"""Reading a model's text as real teachers write it: reasoning first (a `<think>` block, or the
message's own `reasoning_content`), then an answer that may sit in a code fence, come after a
draft object, or be followed by prose. Reasoning is split off before anything else is read,
so none of it reaches a task text, a verdict or a command."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any


class InvalidOutput(ValueError):
    """Raised by parse functions when the model's text is unusable."""


def one_line(e: BaseException | str) -> str:
    return " ".join(str(e).split())[:300]


_OPEN = re.compile(r"<(think|thinking|reasoning)>", re.I)
_CLOSE = re.compile(r"</(think|thinking|reasoning)>", re.I)


def split_reasoning(text: str) -> tuple[str, str]:
    """(answer, reasoning) of a model's text. Reasoning is everything up to the last closing
    `</think>` (Qwen3 thinking models and MiniMax-M2 write `<think>...</think>` first; a chat
    template that opens the block itself leaves only the closing tag in the text). A block
    that never closes is all reasoning: the model ran out of room before it answered."""
    closes = list(_CLOSE.finditer(text))
    if closes:
        last = closes[-1]
        reasoning = _CLOSE.sub("\n", _OPEN.sub("", text[: last.start()]))
        return text[last.end() :].strip(), reasoning.strip()
    opened = _OPEN.search(text)
    if opened and not text[: opened.start()].strip():
        return "", text[opened.end() :].strip()
    return text, ""


_FENCE = re.compile(r"```[ \t]*([A-Za-z0-9_+-]*)[ \t]*\n(.*?)```", re.S)


def json_candidates(text: str) -> list[Any]:
    """Every JSON value an answer offers, most likely first: fenced blocks (```json first),
    then each top-level `{...}` of the text in order."""
    out: list[Any] = []
    fenced = sorted(_FENCE.finditer(text), key=lambda m: m.group(1).lower() != "json")
    for m in fenced:
        try:
            out.append(json.loads(m.group(2)))
        except json.JSONDecodeError:
            out += _objects(m.group(2))
    out += _objects(text)
    return out


def _objects(text: str) -> list[Any]:
    found = []
    decoder = json.JSONDecoder()
    i = text.find("{")
    while i >= 0:
        try:
            obj, end = decoder.raw_decode(text, i)
        except json.JSONDecodeError:
            i = text.find("{", i + 1)
            continue
        found.append(obj)
        i = text.find("{", end)
    return found


def parse_json_object(text: str) -> dict[str, Any]:
    """The answer's JSON object (reasoning split off first; see `json_candidates`)."""
    return parse_json_as(text, lambda d: d)


def parse_json_as[T](text: str, validate: Callable[[dict[str, Any]], T]) -> T:
    """The first JSON object of the answer that `validate` accepts (a draft or an example
    object before the real one is passed over); InvalidOutput with the reason otherwise."""
    answer, _ = split_reasoning(text)
    if not answer:
        raise InvalidOutput("no answer after the reasoning (it never ended)")
    objects = [c for c in json_candidates(answer) if isinstance(c, dict)]
    if not objects:
        if "{" not in answer:
            raise InvalidOutput("no JSON object in the answer")
        start = answer.find("{")
        try:
            json.JSONDecoder().raw_decode(answer, start)
        except json.JSONDecodeError as e:
            raise InvalidOutput(f"bad JSON: {e.msg} at position {e.pos - start}") from None
        raise InvalidOutput("the JSON answer is not an object")
    first_error: Exception | None = None
    for obj in objects:
        try:
            return validate(obj)
        except (ValueError, TypeError) as e:  # pydantic's ValidationError is a ValueError
            first_error = first_error or e
    assert first_error is not None
    raise InvalidOutput(one_line(first_error)) from None
