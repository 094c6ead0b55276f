"""Every record that crosses a stage boundary, as a pydantic model. Stages read and write them
through `StageContext.read` / `write_records`, so a missing or malformed input is one clear
error naming the file and the stage that makes it."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class Record(BaseModel):
    # Records written by an older litecoder may carry fields this one dropped: ignore them.
    model_config = ConfigDict(extra="ignore")


class Tokens(Record):
    prompt: int = 0
    completion: int = 0


# --- tasks ------------------------------------------------------------------------------------


class SampledTask(Record):
    """sample -> data/tasks/sampled.jsonl: one per request, the task or the error."""

    id: str
    domain: str
    subtopic: str
    task: str | None
    teacher: str
    model: str
    mode: Literal["completion", "chat"]
    template: str
    seed: int
    tokens: Tokens = Tokens()
    attempts: int = 0
    outcome: Literal["ok", "error"]
    error: str | None = None
    error_kind: str | None = None


class CriterionScore(Record):
    score: int = Field(ge=1, le=5)
    reason: str


class JudgeResult(Record):
    teacher: str
    attempts: int = 0
    tokens: Tokens = Tokens()
    outcome: Literal["ok", "error"]
    scores: dict[str, CriterionScore] = Field(default_factory=dict)
    summary: str = ""
    error: str | None = None
    error_kind: str | None = None
    raw: str | None = None


class JudgedTask(SampledTask):
    """judge -> data/tasks/judged.jsonl: every sampled task, accepted or not, with reasons."""

    accepted: bool
    judge: JudgeResult | None = None
    rejected_by: list[str] = Field(default_factory=list)


class DuplicateTask(JudgedTask):
    """dedup -> data/tasks/duplicates.jsonl."""

    duplicate_of: str
    dedup: Literal["exact", "near", "decontam"]
    similarity: float


# --- environments -----------------------------------------------------------------------------


class Timings(Record):
    llm_s: float = 0.0
    build_s: float = 0.0
    commands_s: float = 0.0
    sandbox_s: float = 0.0  # starting and removing the agent steps' sandboxes
    validation_s: float = 0.0
    total_s: float = 0.0


class EnvOutcome(Record):
    """envprep -> data/envs/outcomes.jsonl (and failed.jsonl): one per accepted task."""

    task_id: str
    domain: str
    status: Literal["ok", "failed"] = "failed"
    step: str | None = None
    reason: str | None = None
    checks: dict[str, Any] = Field(default_factory=dict)
    timings: Timings = Field(default_factory=Timings)
    tokens: dict[str, int] = Field(default_factory=lambda: {"prompt": 0, "completion": 0})
    # What the sandbox refused to copy out of the setup container (path + reason), and what it
    # had to do to the agent's commands (stray processes stopped, output cut, writes refused).
    capture_refused: list[dict[str, str]] = Field(default_factory=list)
    sandbox_events: list[str] = Field(default_factory=list)

    def record(self) -> dict[str, Any]:
        d = self.model_dump(mode="json")
        d["timings"] = {k: round(v, 3) for k, v in d["timings"].items()}
        return d


class Splits(Record):
    """envprep -> data/envs/splits.json: which environments train and which are held out."""

    train: list[str]
    heldout: list[str]


# --- trajectories -----------------------------------------------------------------------------


class Reason(Record):
    """Why a trajectory was rejected: the filter rule and a detail (never parsed back)."""

    rule: str
    detail: str

    def __str__(self) -> str:
        return f"{self.rule}: {self.detail}"


class TrajectoryRecord(Record):
    """filter -> data/trajectories/kept.jsonl: a trial and its trajectory in neutral form."""

    trial: str
    task_id: str
    domain: str
    agent_label: str
    reward: float | None = None
    exception: str | None = None
    turns: int = 0
    security: dict[str, Any] = Field(default_factory=dict)
    trajectory: dict[str, Any] | None = None


class RejectedTrajectory(TrajectoryRecord):
    """filter -> data/trajectories/rejected.jsonl."""

    failure: Literal["infra", "agent", "quality"]
    reasons: list[Reason]


class ModelInfo(Record):
    """train -> models/model.json: the checkpoint and the base it was tuned from."""

    checkpoint: str
    base_model: str
    recipe: str


class SftRow(Record):
    """sft -> data/sft/train.jsonl: a chat record Axolotl's `chat_template` type reads."""

    model_config = ConfigDict(extra="allow")  # formats may add fields (e.g. `tools`)

    messages: list[dict[str, Any]]
    trial: str
    task_id: str
    domain: str
    scaffold: str
    format: str
    part: int = 0
    turns: int
    tokens: int
    trained_tokens: int = 0  # tokens of its assistant turns, by the student's chat template
    source: str = "litecoder"  # or the name of the external dataset (sft.external) it is from
