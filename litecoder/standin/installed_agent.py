"""A test instrument: Harbor's OpenHands agent as Harbor wires it (its model connection, its
environment, its commands run in the trial container), with the install and the agent loop
replaced by one chat request made from inside the container with what OpenHands would get
(LLM_BASE_URL, LLM_API_KEY). Nothing is downloaded, so it runs offline; it shows what an
installed agent sees and reaches, and is not an agent."""

from __future__ import annotations

import shlex
from typing import Any

from harbor.agents.installed.openhands import OpenHands

PROBE = "/logs/agent/probe.json"
_SCRIPT = r"""
import json, os, urllib.request, urllib.error
key, base = os.environ.get("LLM_API_KEY", ""), os.environ.get("LLM_BASE_URL", "")
body = {"model": os.environ["LLM_MODEL"].split("/", 1)[-1],
        "messages": [{"role": "user", "content": "Reply with one word."}]}
req = urllib.request.Request(base.rstrip("/") + "/chat/completions",
                             data=json.dumps(body).encode(), method="POST",
                             headers={"Authorization": "Bearer " + key,
                                      "Content-Type": "application/json"})
out = {"key": key, "base_url": base}
try:
    with urllib.request.urlopen(req, timeout=60) as r:
        out["status"] = r.status
        out["answer"] = json.load(r)["choices"][0]["message"]["content"]
except urllib.error.HTTPError as e:
    out["status"] = e.code
except Exception as e:
    out["status"], out["error"] = None, repr(e)
json.dump(out, open(%r, "w"))
"""


class OpenHandsProbe(OpenHands):
    @staticmethod
    def name() -> str:
        return "openhands"

    async def install(self, environment: Any) -> None:
        pass  # nothing to install: the probe needs only the image's python3

    async def run(self, instruction: str, environment: Any, context: Any) -> None:
        env = dict(self.model_connection.env)
        env["LLM_MODEL"] = self.model_name or ""
        script = _SCRIPT % PROBE
        await self.exec_as_agent(
            environment, command=f"python3 -c {shlex.quote(script)}", env=env, timeout_sec=120
        )

    def populate_context_post_run(self, context: Any) -> None:
        pass  # no OpenHands session to read
