"""MAGPIE pre-query templates taken from a model's own chat template.

MAGPIE sends the chat template rendered up to (and including) the user-turn header, with a
system message and nothing after it, as a raw completion: the model writes a user turn. The
template text is model-specific; rather than copying it by hand, render the tokenizer's
template for a system and a user message made of sentinels and cut right before the user
sentinel. The stop strings are what the template writes right after a user message (its
end-of-turn marker) and the tokenizer's EOS token.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from litecoder import models
from litecoder.config import Magpie, Teacher

_SYS = "LITECODER_SYSTEM_SENTINEL"
_USER = "LITECODER_USER_SENTINEL"


def derive(tok: Any) -> Magpie:
    """The pre-query template and stop strings of a tokenizer's chat template."""
    if not getattr(tok, "chat_template", None):
        raise ValueError(f"{getattr(tok, 'name_or_path', tok)} has no chat template")
    msgs = [{"role": "system", "content": _SYS}, {"role": "user", "content": _USER}]
    text: str = tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=False)
    if text.count(_SYS) != 1 or text.count(_USER) != 1 or text.index(_SYS) > text.index(_USER):
        raise ValueError("the chat template does not render one system then one user message")
    prefix, after = text.split(_USER)
    bos = getattr(tok, "bos_token", None)
    if bos and prefix.startswith(bos) and _adds_bos(tok):
        # The server's tokenizer adds BOS to a raw prompt itself (Llama 3): keep it once.
        prefix = prefix[len(bos) :]
    # Braces in the model's template text are kept literally: only `{system}` is replaced
    # (sample.py uses str.replace, not str.format).
    template = prefix.replace(_SYS, "{system}")
    # The end-of-turn marker: what follows the user message up to the first line break, or
    # the whole remainder when the template adds none (e.g. "<|im_end|>", "<|eot_id|>").
    end = after.split("\n")[0].strip() or after.strip()
    stop = [s for s in dict.fromkeys([end, getattr(tok, "eos_token", None) or ""]) if s]
    return Magpie(pre_query_template=template, stop=stop)


def _adds_bos(tok: Any) -> bool:
    try:
        ids = tok("x")["input_ids"]
    except Exception:  # a tokenizer that cannot encode plain text: keep the template as is
        return False
    return bool(ids) and ids[0] == getattr(tok, "bos_token_id", None)


def effective(teacher: Teacher, train_python: str, root: Path) -> Magpie | None:
    """The teacher's MAGPIE settings with a null template derived from its tokenizer (stop
    strings from config come first, the derived ones are added)."""
    m = teacher.magpie
    if m is None or m.pre_query_template is not None:
        return m
    ref = m.tokenizer or (teacher.serve.model if teacher.serve else None)
    assert ref is not None  # the config validator asks for one
    d = derive(models.tokenizer(ref, train_python, root))
    return m.model_copy(
        update={
            "pre_query_template": d.pre_query_template,
            "stop": [*dict.fromkeys(m.stop + d.stop)],
        }
    )


def check(configured: Magpie, tok: Any) -> list[str]:
    """How a configured pre-query template and stop strings differ from what the tokenizer's
    chat template gives (empty: they agree)."""
    d = derive(tok)
    problems = []
    if configured.pre_query_template is not None and configured.pre_query_template != (
        d.pre_query_template
    ):
        problems.append(
            f"pre_query_template {configured.pre_query_template!r} != {d.pre_query_template!r}"
        )
    missing = [s for s in d.stop if s not in configured.stop]
    if missing:
        problems.append(f"stop lacks {missing}")
    return problems
