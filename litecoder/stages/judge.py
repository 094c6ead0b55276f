"""Stage `judge`: LLM-as-a-judge feasibility check of every sampled task.

Each task gets per-criterion scores (1-5) with reasons in the judge's JSON format; it is
accepted when every criterion reaches its threshold. All tasks are kept in judged.jsonl,
accepted or not, with the reasons. Thresholds are applied after the call, so changing one
re-runs this stage from the response cache without a single new request.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel, Field

from litecoder.config import Config
from litecoder.context import StageContext
from litecoder.io import write_records
from litecoder.llm import InvalidOutput, parse_json_as
from litecoder.llm.usage import output_rates
from litecoder.records import CriterionScore, JudgedTask, JudgeResult, SampledTask, Tokens
from litecoder.tracking import StageRun, progress


class Score(BaseModel):
    score: int = Field(ge=1, le=5)
    reason: str


class Verdict(BaseModel):
    scores: dict[str, Score]
    summary: str = ""


def make_parser(criteria: list[str]) -> Callable[[str], Verdict]:
    def verdict(obj: dict[str, Any]) -> Verdict:
        v = Verdict.model_validate(obj)
        missing = [c for c in criteria if c not in v.scores]
        if missing:
            raise InvalidOutput(f"missing criteria {missing}")
        return v

    def parse(text: str) -> Verdict:
        # The verdict is the answer's first object that is one: reasoning, fences, drafts and
        # prose around it are passed over (litecoder.llm.parse).
        return parse_json_as(text, verdict)

    return parse


def messages(cfg: Config, rec: SampledTask) -> list[dict[str, str]]:
    j = cfg.judge
    criteria = "\n".join(f"- {name}: {c.description}" for name, c in j.criteria.items())
    user = j.user_template.format(
        domain=rec.domain,
        subtopic=rec.subtopic,
        task=rec.task,
        criteria=criteria,
        criterion_names=", ".join(j.criteria),
    )
    return [{"role": "system", "content": j.system_prompt}, {"role": "user", "content": user}]


def decide(cfg: Config, verdict: Verdict) -> list[str]:
    """Criteria below threshold (empty: accepted)."""
    return [
        name for name, c in cfg.judge.criteria.items() if verdict.scores[name].score < c.threshold
    ]


async def _judge(ctx: StageContext, records: list[SampledTask], bar: Any) -> list[JudgedTask]:
    cfg = ctx.cfg
    teacher = cfg.teacher("judge")
    parse = make_parser(list(cfg.judge.criteria))

    async with ctx.client("judge") as client:

        async def one(rec: SampledTask) -> JudgedTask:
            base = rec.model_dump()
            if rec.outcome != "ok":
                bar.advance()
                return JudgedTask(**base, accepted=False, judge=None, rejected_by=["sample_error"])
            res = await client.chat_validated(
                messages(cfg, rec),
                parse,
                max_reasks=cfg.judge.max_reasks,
                meta={"stage": "judge", "task_id": rec.id, "criteria": list(cfg.judge.criteria)},
                temperature=cfg.judge.temperature,
                max_tokens=cfg.judge.max_tokens,
            )
            bar.advance()
            tokens = Tokens(prompt=res.prompt_tokens, completion=res.completion_tokens)
            if not res.ok:
                judge = JudgeResult(
                    teacher=teacher.name,
                    attempts=res.attempts,
                    tokens=tokens,
                    outcome="error",
                    error=res.error,
                    error_kind=res.error_kind,
                    raw=res.text,
                )
                return JudgedTask(**base, accepted=False, judge=judge, rejected_by=["judge_error"])
            assert res.value is not None
            below = decide(cfg, res.value)
            judge = JudgeResult(
                teacher=teacher.name,
                attempts=res.attempts,
                tokens=tokens,
                outcome="ok",
                scores={
                    k: CriterionScore(score=v.score, reason=v.reason)
                    for k, v in res.value.scores.items()
                },
                summary=res.value.summary,
            )
            return JudgedTask(**base, accepted=not below, judge=judge, rejected_by=below)

        return list(await asyncio.gather(*(one(r) for r in records)))


def run(ctx: StageContext) -> dict[str, Any]:
    """data/tasks/judged.jsonl from data/tasks/sampled.jsonl."""
    track = StageRun("judge", ctx.cfg, ctx.paths.workdir)
    records = ctx.read("sampled", SampledTask)
    start = time.monotonic()
    with progress("judge", len(records)) as bar:
        judged = asyncio.run(_judge(ctx, records, bar))
    wall = time.monotonic() - start
    write_records(ctx.paths.judged, judged)

    scored = [r.judge for r in judged if r.judge and r.judge.outcome == "ok"]
    per_criterion = {}
    for name, c in ctx.cfg.judge.criteria.items():
        vals = [j.scores[name].score for j in scored]
        per_criterion[name] = {
            "threshold": c.threshold,
            "mean_score": round(sum(vals) / len(vals), 3) if vals else None,
            "pass_rate": round(sum(v >= c.threshold for v in vals) / len(vals), 4)
            if vals
            else None,
        }
    per_domain: dict[str, dict[str, int]] = {}
    for r in judged:
        d = per_domain.setdefault(r.domain, {"judged": 0, "accepted": 0})
        d["judged"] += 1
        d["accepted"] += int(r.accepted)
    accepted = sum(r.accepted for r in judged)
    track.metrics.update(
        {
            "judged": len(judged),
            "accepted": accepted,
            "rejected": len(judged) - accepted,
            "acceptance_rate": round(accepted / len(judged), 4) if judged else 0.0,
            "judge_errors": sum("judge_error" in r.rejected_by for r in judged),
            "sample_errors": sum("sample_error" in r.rejected_by for r in judged),
            "rejected_by": dict(Counter(c for r in judged for c in r.rejected_by)),
            "per_criterion": per_criterion,
            "per_domain": per_domain,
            # The judge's JSON compliance: verdicts that parsed, at all and on the first ask.
            **output_rates(
                [(r.judge.outcome == "ok", r.judge.attempts) for r in judged if r.judge],
                ctx.usage.total().completion_tokens,
                wall,
            ),
            "llm": ctx.usage.to_dict(),
        }
    )
    track.table = [
        {
            "id": r.id,
            "domain": r.domain,
            "task": r.task,
            "accepted": r.accepted,
            "rejected_by": ",".join(r.rejected_by),
        }
        for r in judged
    ]
    metrics = track.finish()
    asked = [r for r in judged if r.judge is not None]
    errors = [r.judge.error or "" for r in asked if r.judge and r.judge.error_kind == "api"]
    invalid = sum(bool(r.judge and r.judge.error_kind == "invalid_output") for r in asked)
    ctx.check_failures("judge", errors, len(asked), invalid=invalid)
    return metrics
