"""`terminus_json`: Terminus-2's JSON format (the release's training format)."""

from __future__ import annotations

import json
from typing import Any

from litecoder.trajectory.formats import terminus as T
from litecoder.trajectory.formats.registry import Format, register
from litecoder.trajectory.neutral import Trajectory, Turn


def assistant(t: Turn) -> str:
    body = {
        "analysis": t.analysis,
        "plan": t.plan,
        "commands": t.commands,
        "task_complete": t.task_complete,
    }
    return json.dumps(body, indent=2, ensure_ascii=False)


def render(traj: Trajectory, drop_parse_errors: bool) -> dict[str, Any]:
    return T.render(
        traj,
        drop_parse_errors,
        template_name="terminus-json-plain.txt",
        assistant=assistant,
        again='include "task_complete": true in your JSON response again.',
    )


def read_commands(record: dict[str, Any]) -> list[str]:
    from harbor.agents.terminus_2.terminus_json_plain_parser import TerminusJSONPlainParser

    return T.read_commands(record, TerminusJSONPlainParser())


FORMAT = register(Format("terminus_json", render, read_commands))
