"""The Harbor agents litecoder runs, and how each reaches its model: one place for rollout,
calibrate and evaluate.

What an agent is comes from Harbor itself (its class, resolved the way Harbor resolves `-a`
names and import paths), not from a list kept here:

- Terminus-2 runs in Harbor's process (LiteLLM on this host): it calls the gateway on loopback
  (`api_base`), names its trial in a header (`session_id_headers`) and says what its requests
  are in the metadata header (`llm_call_kwargs`).
- An agent Harbor installs in the trial container (a `BaseInstalledAgent`: OpenHands,
  mini-swe-agent, ...) calls the gateway on the host's Docker bridge address (`base_url`),
  with its trial's own token (litecoder.trial_tokens); its trials get a bridged network.
  What it speaks is Harbor's own metadata (`MODEL_CONNECTION.supported_api_formats`): the
  gateway serves OpenAI chat/completions, so an agent that cannot speak that (Claude Code:
  Anthropic's Messages API; Codex: the Responses API; Gemini CLI) is refused, not run around
  the gateway.
- Agents without a model (oracle, nop) need no wiring; any other agent in Harbor's process is
  refused (litecoder cannot point it at the gateway).

Reading what an agent did (its tool calls as keystrokes) is `litecoder.trajectory.tools`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from typing import Any, Literal

from litecoder.gateway import SESSION_HEADER
from litecoder.io import StageError
from litecoder.llm import META_HEADER

SERVED_API = "openai_chat_completions"  # what the gateway speaks (Harbor's ModelApiFormat)
NO_MODEL = ("oracle", "nop")

Wiring = Literal["terminus", "container", "none", "unknown"]


@dataclass(frozen=True)
class AgentKind:
    name: str
    wiring: Wiring
    apis: tuple[str, ...] = ()  # what it speaks (Harbor's ModelApiFormat values)

    @property
    def in_container(self) -> bool:
        return self.wiring == "container"


@cache
def kind(name: str) -> AgentKind:
    """What Harbor runs for `name` (an agent name or a `module:Class` import path)."""
    if name in NO_MODEL:
        return AgentKind(name, "none")
    from harbor.agents.factory import AgentFactory
    from harbor.agents.installed.base import BaseInstalledAgent
    from harbor.agents.terminus_2 import Terminus2
    from harbor.models.trial.config import AgentConfig

    try:
        cls = AgentFactory.get_agent_class_from_config(AgentConfig(name=name))
    except (ValueError, ImportError) as e:
        raise StageError(f"agent {name!r}: {str(e).splitlines()[0]}") from None
    spec = getattr(cls, "MODEL_CONNECTION", None)
    apis = tuple(str(f.value) for f in getattr(spec, "supported_api_formats", None) or ())
    if issubclass(cls, Terminus2):
        return AgentKind(name, "terminus", (SERVED_API,))
    if issubclass(cls, BaseInstalledAgent):
        return AgentKind(name, "container", apis or (SERVED_API,))
    return AgentKind(name, "unknown", apis)


def check(name: str, *, local: bool) -> AgentKind:
    """The agent's kind, or a one-line StageError when its calls cannot all go through the
    gateway (`local`: the trials run on this machine's Docker engine)."""
    k = kind(name)
    if k.wiring == "unknown":
        raise StageError(
            f"agent {name!r} runs in Harbor's process and litecoder cannot point it at its "
            "gateway (Terminus-2 and agents installed in the container can)"
        )
    if k.in_container and SERVED_API not in k.apis:
        raise StageError(
            f"agent {name!r} speaks {', '.join(k.apis)}, which litecoder's gateway does not "
            "serve (OpenAI chat/completions only); every agent's calls go through the gateway, "
            "so it cannot run"
        )
    if k.in_container and not local:
        raise StageError(
            f"agent {name!r} runs inside the trial container and reaches its model through "
            "litecoder's gateway on this host; trials on a provider's machines cannot reach "
            "it (use environment=docker)"
        )
    return k


def wire(
    name: str,
    kwargs: dict[str, Any],
    *,
    loopback: str,
    container: str = "",
    meta: dict[str, Any] | None = None,
    trial_header: bool = True,
) -> dict[str, Any]:
    """The agent's kwargs pointed at the gateway (`loopback` for an agent in Harbor's process,
    `container`: the gateway's bridge address, for one inside the container)."""
    k, out = kind(name), dict(kwargs)
    if k.wiring == "terminus":
        out["api_base"] = loopback
        if trial_header:
            out.setdefault("session_id_headers", [SESSION_HEADER])
        if meta:
            call = dict(out.get("llm_call_kwargs") or {})
            headers = {**call.get("extra_headers", {}), META_HEADER: json.dumps(meta)}
            out["llm_call_kwargs"] = {**call, "extra_headers": headers}
    elif k.in_container:
        if not container:
            raise StageError(f"agent {name!r} needs the gateway's bridge address")
        out["base_url"] = container
    return out
