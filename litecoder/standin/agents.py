"""Scripted agents of the offline stand-in (not models): they replay each scenario's material
in the protocol of the agent that asks: litecoder's envprep steps, and Harbor's Terminus-2.
What is asked (stage, step, turn, parser) comes from the request's metadata; which scenario,
from the scenario's own task text in the request."""

from __future__ import annotations

import json
from typing import Any

from litecoder.standin import library as S

PYTEST_TAIL = "cd /tests && python3 -m pytest -q -p no:cacheprovider test_outputs.py | tail -3"


def text_of(messages: list[dict[str, Any]], role: str) -> str:
    return "\n".join(str(m.get("content") or "") for m in messages if m.get("role") == role)


def _run(cmd: str) -> dict[str, str]:
    return {"type": "run", "command": cmd}


def _write(path: str, content: str) -> dict[str, str]:
    return {"type": "write_file", "path": path, "content": content}


def _finish(summary: str) -> dict[str, str]:
    return {"type": "finish", "summary": summary}


def default_turns(scen: S.Scenario, step: str, base: str) -> list[list[dict[str, str]]]:
    if step == "setup_container":
        first = [_write(p, c) for p, c in scen.files.items()]
        if scen.setup:
            first.append(_run(scen.setup))
        return [
            first or [_run("true")],
            [_run("ls -la /app 2>/dev/null | head -20")],
            [_finish("starting state ready")],
        ]
    if step == "setup_dockerfile":
        acts = [_write("environment/files" + p, c) for p, c in scen.files.items()]
        lines = [f"FROM {base}"]
        if scen.files:
            lines.append("COPY files/ /")
        if scen.setup:
            acts.append(_write("environment/setup.sh", scen.setup))
            lines += [
                "COPY setup.sh /tmp/litecoder-setup.sh",
                "RUN bash -e /tmp/litecoder-setup.sh && rm /tmp/litecoder-setup.sh",
            ]
        lines += ["RUN mkdir -p /app", "WORKDIR /app"]
        acts.append(_write("environment/Dockerfile", "\n".join(lines) + "\n"))
        return [acts, [_finish("Dockerfile and inputs written")]]
    if step == "solution":
        return [
            [
                _write("solution/solve.sh", scen.solution),
                _run("bash /solution/solve.sh && echo SOLVED"),
            ],
            [_finish("solve.sh solves the task")],
        ]
    if step == "verifier":
        return [
            [_write("tests/test_outputs.py", scen.tests), _run(PYTEST_TAIL)],
            [_finish("the tests fail on the starting state, as they should")],
        ]
    if step == "near_miss":
        if not scen.wrong_solution:
            return [[_finish("no near miss scripted for this scenario")]]
        return [
            [_write("solution/near_miss.sh", scen.wrong_solution),
             _run("bash /solution/near_miss.sh; bash /tests/test.sh; "
                  "cat /logs/verifier/reward.txt")],
            [_finish("the near miss fails the tests")],
        ]  # fmt: skip
    return [[_finish("nothing scripted for this step")]]


def envprep_answer(messages: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    step = str(meta.get("step") or "")
    scen = S.find(text_of(messages, "user"))
    if step == "refine":
        if scen is None:
            return json.dumps({"instruction": "(the stand-in has no scenario for this task)"})
        return json.dumps(
            {
                "instruction": scen.task,
                "difficulty": "medium",
                "category": scen.domain,
                "tags": [scen.domain, scen.id],
                "expert_time_estimate_min": 10,
                "junior_time_estimate_min": 30,
            }
        )
    if scen is None or not (scen.runnable or scen.envprep):
        return json.dumps(
            {
                "thought": "The stand-in has no scripted environment for this task.",
                "actions": [_finish("no scripted scenario")],
            }
        )
    base = str(meta.get("base_image") or "litecoder-base:bookworm")
    turns = scen.envprep.get(step) or default_turns(scen, step, base)
    turns = [[{k: v.replace("{base}", base) for k, v in a.items()} for a in t] for t in turns]
    i = min(int(meta.get("turn") or 0), len(turns) - 1)
    return json.dumps(
        {"thought": f"Scripted {step} turn {i + 1} for {scen.id}.", "actions": turns[i]}
    )


# --- Terminus-2 -----------------------------------------------------------------------------

# Behaviours a request can ask for through the model name (`<model>@<behaviour>`); without
# one, each scenario's own behaviour is played.
BEHAVIOURS = ("solve", "fail", "loop", "garbled", "stall")


def _heredoc(script: str) -> str:
    return f"bash <<'LITECODER_EOF'\n{script.rstrip()}\nLITECODER_EOF\n"


def terminus_turns(scen: S.Scenario | None, behaviour: str) -> list[dict[str, Any]]:
    """Turns as (analysis, plan, commands, task_complete); the last is repeated as needed."""
    look = {"keystrokes": "ls -la\n", "duration": 0.2}
    done = {
        "analysis": "The work is finished.",
        "plan": "Confirm completion.",
        "commands": [],
        "task_complete": True,
    }
    if scen is None or not scen.runnable:
        return [
            {
                "analysis": "I cannot tell what to do.",
                "plan": "Stop.",
                "commands": [look],
                "task_complete": True,
            },
            done,
        ]
    if behaviour == "loop":
        cmd = {"keystrokes": (scen.loop_command or "ls -la") + "\n", "duration": 0.2}
        turn = {
            "analysis": "I need to look at the files again.",
            "plan": "List them once more.",
            "commands": [cmd],
            "task_complete": False,
        }
        return [turn] * 8 + [done, done]
    if behaviour == "stall":
        wait = {"keystrokes": "sleep 30\n", "duration": 30}
        return [
            {
                "analysis": "Waiting for the job.",
                "plan": "Wait.",
                "commands": [wait],
                "task_complete": False,
            }
        ]
    script = (
        scen.solution
        if behaviour in ("solve", "garbled")
        else (scen.wrong_solution or "echo 'I believe this is already done.'\n")
    )
    turns = [
        {
            "analysis": "A fresh shell; I should inspect the working directory first.",
            "plan": "List the files.",
            "commands": [look],
            "task_complete": False,
        },
        {
            "analysis": "I know the layout now.",
            "plan": "Run the whole fix as one script.",
            "commands": [{"keystrokes": _heredoc(script), "duration": 3.0}],
            "task_complete": False,
        },
        {
            "analysis": "The script ran.",
            "plan": "Check the result and finish.",
            "commands": [{"keystrokes": "echo check-done\n", "duration": 0.2}],
            "task_complete": True,
        },
        done,
    ]
    if behaviour == "garbled":
        return [{"garbled": True}] * 3 + turns
    return turns


def _render(turn: dict[str, Any], parser: str) -> str:
    if turn.get("garbled"):
        return 'Let me think about this... {"analysis": "unfinished'
    if parser == "json":
        return json.dumps(
            {k: turn[k] for k in ("analysis", "plan", "commands", "task_complete")}, indent=2
        )
    cmds = "".join(
        f'<keystrokes duration="{c["duration"]}">{c["keystrokes"]}</keystrokes>\n'
        for c in turn["commands"]
    )
    complete = "<task_complete>true</task_complete>\n" if turn["task_complete"] else ""
    return (
        f"<response>\n<analysis>{turn['analysis']}</analysis>\n<plan>{turn['plan']}</plan>\n"
        f"<commands>\n{cmds}</commands>\n{complete}</response>"
    )


def terminus_answer(
    messages: list[dict[str, Any]], meta: dict[str, Any], body: dict[str, Any]
) -> str:
    first = next((m for m in messages if m.get("role") == "user"), {})
    scen = S.find(str(first.get("content") or ""))
    parser = "xml" if meta.get("parser") == "xml" else "json"
    model = str(body.get("model") or "")
    behaviour = model.rsplit("@", 1)[1] if "@" in model else (scen.behaviour if scen else "solve")
    turns = terminus_turns(scen, behaviour if behaviour in BEHAVIOURS else "solve")
    n = sum(1 for m in messages if m.get("role") == "assistant")
    return _render(turns[min(n, len(turns) - 1)], parser)
