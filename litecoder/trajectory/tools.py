"""Tool calls of agents other than Terminus -> the keystrokes that do the same in a shell.

Harbor copies OpenHands' and Claude Code's tool calls into ATIF as they are (`execute_bash`,
`str_replace_editor`, ... / `Bash`, `Write`, `Edit`, ...). The neutral form speaks keystrokes,
so every format can render any trajectory: a shell call is its command, a file edit becomes the
shell command that makes the same edit (a quoted heredoc or a small python3 script), a read
becomes `cat`/`sed`. Calls that do not touch the terminal (think, task lists, sub-agents)
become the turn's analysis or are left out; `finish` marks the task complete.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Converted:
    keystrokes: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # text for the turn's analysis
    complete: bool = False


def heredoc(path: str, content: str) -> str:
    """`cat > path` with a quoted heredoc whose delimiter the content does not contain; the
    file comes out byte-exact (a missing final newline is cut again with `head -c -1`)."""
    tag = "LITECODER_EOF"
    n = 0
    while f"\n{tag}\n" in f"\n{content}\n":
        n += 1
        tag = f"LITECODER_EOF_{n}"
    q = shlex.quote(path)
    writer = "cat" if content.endswith("\n") or not content else "head -c -1"
    body = content if content.endswith("\n") or not content else content + "\n"
    return f"mkdir -p \"$(dirname {q})\" && {writer} > {q} <<'{tag}'\n{body}{tag}\n"


def python_script(code: str) -> str:
    tag = "LITECODER_PY"
    while f"\n{tag}\n" in f"\n{code}\n":
        tag += "_"
    return f"python3 - <<'{tag}'\n{code.rstrip(chr(10))}\n{tag}\n"


def replace(path: str, old: str, new: str, count_all: bool = False) -> str:
    """The exact string replacement an editor tool makes (fails, as the tool does, when the
    old text is not there)."""
    code = (
        "import json, pathlib, sys\n"
        f"p, old, new = pathlib.Path({json.dumps(path)}), {json.dumps(old)}, {json.dumps(new)}\n"
        "s = p.read_text()\n"
        "if old not in s: sys.exit(f'{p}: text to replace not found')\n"
        f"p.write_text(s.replace(old, new{'' if count_all else ', 1'}))\n"
    )
    return python_script(code)


def insert(path: str, line: int, text: str) -> str:
    code = (
        "import json, pathlib\n"
        f"p = pathlib.Path({json.dumps(path)})\n"
        "lines = p.read_text().splitlines(keepends=True)\n"
        f"new = {json.dumps(text)}\n"
        "new = new if new.endswith('\\n') else new + '\\n'\n"
        f"lines.insert({int(line)}, new)\n"
        "p.write_text(''.join(lines))\n"
    )
    return python_script(code)


def view(path: str, start: int | None = None, end: int | None = None) -> str:
    q = shlex.quote(path)
    if start is None:
        return f"if [ -d {q} ]; then ls -la {q}; else cat -n {q}; fi\n"
    last = "$" if end in (None, -1) else str(end)
    return f"sed -n '{int(start)},{last}p' {q}\n"


# --- OpenHands (CodeAct) -------------------------------------------------------------------


def _openhands(name: str, a: dict[str, Any]) -> Converted | None:
    c = Converted()
    if name in ("execute_bash", "terminal"):
        cmd = str(a.get("command", ""))
        if a.get("is_input") in (True, "true"):  # input to the running process
            c.keystrokes.append(cmd if cmd.startswith("C-") else cmd + "\n")
        elif cmd:
            c.keystrokes.append(cmd + "\n")
    elif name == "execute_ipython_cell":
        c.keystrokes.append(python_script(str(a.get("code", ""))))
    elif name in ("str_replace_editor", "file_editor"):
        path, cmd = str(a.get("path", "")), str(a.get("command", ""))
        if cmd == "create":
            c.keystrokes.append(heredoc(path, str(a.get("file_text", ""))))
        elif cmd == "str_replace":
            c.keystrokes.append(replace(path, str(a.get("old_str", "")), str(a.get("new_str", ""))))
        elif cmd == "insert":
            line = int(a.get("insert_line", 0))
            c.keystrokes.append(insert(path, line, str(a.get("new_str", ""))))
        elif cmd == "view":
            rng = a.get("view_range") or [None, None]
            c.keystrokes.append(view(path, *[*rng, None, None][:2]))
        else:  # undo_edit: the editor's own history, which a shell does not have
            return None
    elif name == "edit_file":
        c.keystrokes.append(heredoc(str(a.get("path", "")), str(a.get("content", ""))))
    elif name == "think":
        c.notes.append(str(a.get("thought", "")))
    elif name == "finish":
        c.complete = True
        if a.get("message"):
            c.notes.append(str(a["message"]))
    elif name in ("task_tracker",):
        c.notes.append(f"Task list: {json.dumps(a.get('task_list', []), ensure_ascii=False)}")
    else:
        return None
    return c


# --- Claude Code -----------------------------------------------------------------------------


def _claude_code(name: str, a: dict[str, Any]) -> Converted | None:
    c = Converted()
    path = str(a.get("file_path", ""))
    if name == "Bash":
        if a.get("command"):
            c.keystrokes.append(str(a["command"]) + "\n")
    elif name == "Write":
        c.keystrokes.append(heredoc(path, str(a.get("content", ""))))
    elif name == "Edit":
        old, new = str(a.get("old_string", "")), str(a.get("new_string", ""))
        c.keystrokes.append(replace(path, old, new, bool(a.get("replace_all"))))
    elif name == "MultiEdit":
        for e in a.get("edits") or []:
            old, new = str(e.get("old_string", "")), str(e.get("new_string", ""))
            c.keystrokes.append(replace(path, old, new, bool(e.get("replace_all"))))
    elif name == "Read":
        off, lim = a.get("offset"), a.get("limit")
        start = int(off) if off else (1 if lim else None)
        end = (start or 1) + int(lim) - 1 if lim else None
        c.keystrokes.append(view(path, start, end))
    elif name == "LS":
        c.keystrokes.append(f"ls -la {shlex.quote(str(a.get('path', '.')))}\n")
    elif name == "Glob":
        where = shlex.quote(str(a.get("path", ".")))
        pattern = str(a.get("pattern", "*")).split("/")[-1]
        c.keystrokes.append(f"find {where} -name {shlex.quote(pattern)}\n")
    elif name == "Grep":
        where = shlex.quote(str(a.get("path", ".")))
        c.keystrokes.append(f"grep -rn -E {shlex.quote(str(a.get('pattern', '')))} {where}\n")
    elif name == "TodoWrite":
        c.notes.append(f"Todo: {json.dumps(a.get('todos', []), ensure_ascii=False)}")
    else:  # Task (a sub-agent), WebFetch, NotebookEdit, ...: not terminal actions
        return None
    return c


CONVERTERS: dict[str, Callable[[str, dict[str, Any]], Converted | None]] = {
    "openhands": _openhands,
    "openhands-sdk": _openhands,
    "claude-code": _claude_code,
}
# Agents with no finish tool: their last turn without tool calls ends the task.
ENDS_WITHOUT_TOOL = {"claude-code"}
