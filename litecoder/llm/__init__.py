"""The LLM client layer: every LLM call in litecoder goes through `LLMClient` (`client`), with
its response cache (`litecoder.cache`), circuit breaker (`breaker`), usage and spending guard
(`usage`) and output parsing (`parse`). `litecoder.gateway` puts Harbor's agents behind it."""

from litecoder.cache import ResponseCache, open_cache
from litecoder.llm.breaker import outage_status
from litecoder.llm.client import (
    META_HEADER,
    REASK_MESSAGE,
    REASK_SEED_STRIDE,
    EndpointError,
    LLMClient,
    LLMError,
    Outcome,
    Response,
    request_key,
)
from litecoder.llm.parse import InvalidOutput, parse_json_as, parse_json_object, split_reasoning
from litecoder.llm.usage import BudgetExceeded, Limit, Usage, UsageBook

__all__ = [
    "META_HEADER",
    "REASK_MESSAGE",
    "REASK_SEED_STRIDE",
    "BudgetExceeded",
    "EndpointError",
    "InvalidOutput",
    "LLMClient",
    "LLMError",
    "Limit",
    "Outcome",
    "Response",
    "ResponseCache",
    "Usage",
    "UsageBook",
    "open_cache",
    "outage_status",
    "parse_json_as",
    "parse_json_object",
    "request_key",
    "split_reasoning",
]
