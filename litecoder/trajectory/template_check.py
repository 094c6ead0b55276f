"""SFT rows against the student's own chat template: what training will really see.

A row is only worth training on if the template renders every assistant turn with its
actions: the commands of a Terminus-2 reply (in its content) or the arguments of its tool
calls (a template without a tool-call branch, such as SmolLM2's ChatML, renders a tool-call
turn as an empty reply: the model would learn to answer nothing). Trained tokens are the
assistant turns' own tokens (loss on assistant turns only), counted the way Axolotl's
`chat_template` strategy trains them (roles_to_train: assistant, train_on_eos: turn): the
tokens a turn adds to the rendered conversation after the template's generation prompt, up to
and including its end-of-turn token.
"""

from __future__ import annotations

import json
from typing import Any


def actions(message: dict[str, Any]) -> list[str]:
    """What an assistant turn does, as strings the rendered text must contain: each tool
    call's name and argument values, or the reply itself."""
    out: list[str] = []
    for call in message.get("tool_calls") or []:
        fn = call.get("function") or {}
        out.append(str(fn.get("name") or ""))
        args = fn.get("arguments")
        try:
            parsed = json.loads(args) if isinstance(args, str) else args
        except json.JSONDecodeError:
            parsed = args
        if isinstance(parsed, dict):
            out += [v for v in parsed.values() if isinstance(v, str) and v.strip()]
        elif isinstance(parsed, str) and parsed.strip():
            out.append(parsed)
    content = message.get("content")
    if isinstance(content, str) and content.strip():
        out.append(content.strip())
    return [a for a in out if a]


def empty_turns(chat: dict[str, Any]) -> int:
    """Assistant turns with no reply and no tool call."""
    return sum(1 for m in chat["messages"] if m.get("role") == "assistant" and not actions(m))


def render(tok: Any, messages: list[dict[str, Any]], tools: Any, *, gen: bool = False) -> str:
    return str(
        tok.apply_chat_template(messages, tools=tools, tokenize=False, add_generation_prompt=gen)
    )


def _contains(text: str, piece: str) -> bool:
    # A template may write an argument as JSON (escaped) or as it is.
    return piece in text or json.dumps(piece)[1:-1] in text


def missing_actions(tok: Any, chat: dict[str, Any]) -> list[str]:
    """Actions of the row's assistant turns that its rendering lacks (empty: all there)."""
    text = render(tok, chat["messages"], chat.get("tools"))
    return [
        a
        for m in chat["messages"]
        if m.get("role") == "assistant"
        for a in actions(m)
        if not _contains(text, a)
    ]


def trained_tokens(tok: Any, chat: dict[str, Any]) -> int:
    """Tokens of the assistant turns (what the loss is computed on): the conversation is
    tokenized once, and each assistant turn's span is where the rendering of the turns before
    it (with the generation prompt) ends and the rendering with it ends."""
    msgs, tools = chat["messages"], chat.get("tools")
    full = render(tok, msgs, tools)
    enc = tok(full, add_special_tokens=False, return_offsets_mapping=True)
    offsets = enc["offset_mapping"]
    total = 0
    for i, m in enumerate(msgs):
        if m.get("role") != "assistant":
            continue
        start = len(render(tok, msgs[:i], tools, gen=True)) if i else 0
        upto = render(tok, msgs[: i + 1], tools)
        if not full.startswith(upto):
            raise ValueError("the chat template does not render a conversation turn by turn")
        end = len(upto.rstrip())  # the reply and its end-of-turn token, not the newline after
        total += sum(1 for a, b in offsets if a >= start and b <= end and b > a)
    return total
