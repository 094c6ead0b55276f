"""`terminus_xml`: Terminus-2's XML format."""

from __future__ import annotations

from typing import Any

from litecoder.trajectory.formats import terminus as T
from litecoder.trajectory.formats.registry import Format, register
from litecoder.trajectory.neutral import Trajectory, Turn


def assistant(t: Turn) -> str:
    cmds = "".join(
        f'<keystrokes duration="{c["duration"]}">{c["keystrokes"]}</keystrokes>\n'
        for c in t.commands
    )
    done = "<task_complete>true</task_complete>\n" if t.task_complete else ""
    return (
        f"<response>\n<analysis>\n{t.analysis}\n</analysis>\n<plan>\n{t.plan}\n</plan>\n"
        f"<commands>\n{cmds}</commands>\n{done}</response>"
    )


def render(traj: Trajectory, drop_parse_errors: bool) -> dict[str, Any]:
    return T.render(
        traj,
        drop_parse_errors,
        template_name="terminus-xml-plain.txt",
        assistant=assistant,
        again="include <task_complete>true</task_complete> again.",
    )


def read_commands(record: dict[str, Any]) -> list[str]:
    from harbor.agents.terminus_2.terminus_xml_plain_parser import TerminusXMLPlainParser

    return T.read_commands(record, TerminusXMLPlainParser())


FORMAT = register(Format("terminus_xml", render, read_commands))
