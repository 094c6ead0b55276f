"""Stage `sample`: MAGPIE task synthesis over the taxonomy.

For each domain the teacher gets the domain's system message inside the model's own chat
template, cut right after the user-turn header (raw `/v1/completions`), and completes the
user turn: a task. Chat-only teachers get the system message plus an instruction to write a
task. Every request ends as a record: the task, or the error that stopped it.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from litecoder.config import Config, Domain, Teacher
from litecoder.context import StageContext
from litecoder.io import write_records
from litecoder.llm import InvalidOutput, Outcome, split_reasoning
from litecoder.llm.usage import output_rates
from litecoder.magpie import effective as effective_magpie
from litecoder.records import SampledTask, Tokens
from litecoder.tracking import StageRun, progress


def allocate(weights: dict[str, float], n: int) -> dict[str, int]:
    """Split n over keys by weight (largest remainder), deterministic."""
    total = sum(weights.values())
    exact = {k: n * w / total for k, w in weights.items()}
    out = {k: int(v) for k, v in exact.items()}
    rest = n - sum(out.values())
    for k in sorted(exact, key=lambda k: (-(exact[k] - out[k]), k))[:rest]:
        out[k] += 1
    return out


def system_message(name: str, domain: Domain, subtopic: str) -> str:
    return (
        domain.system_message.replace("{domain}", name)
        .replace("{description}", domain.description)
        .replace("{subtopic}", subtopic)
    )


def plan(cfg: Config) -> list[dict[str, Any]]:
    """The requests: one per task, with domain, subtopic, seed and system message."""
    domains = cfg.sampled_domains()
    counts = allocate({k: d.weight for k, d in domains.items()}, cfg.sampler.n_tasks)
    reqs = []
    for name, domain in domains.items():
        for i in range(counts[name]):
            sub = domain.subtopics[i % len(domain.subtopics)]
            reqs.append(
                {
                    "domain": name,
                    "subtopic": sub,
                    "seed": cfg.sampler.seed + i,
                    "system": system_message(name, domain, sub),
                }
            )
    return reqs


def task_id(teacher: Teacher, req: dict[str, Any]) -> str:
    key = f"{teacher.model}|{req['domain']}|{req['subtopic']}|{req['seed']}|{req['system']}"
    return "t-" + hashlib.sha256(key.encode()).hexdigest()[:12]


def make_parser(stops: list[str], min_chars: int, max_chars: int) -> Callable[[str], str]:

    def parse(text: str) -> str:
        # A reasoning model thinks before it writes the task: only what follows is the task.
        text, _ = split_reasoning(text)
        for s in stops:  # some servers return the stop string
            text = text.split(s)[0]
        text = text.strip()
        if len(text) < min_chars:
            raise InvalidOutput(f"task text too short ({len(text)} < {min_chars} chars)")
        if len(text) > max_chars:
            raise InvalidOutput(f"task text too long ({len(text)} > {max_chars} chars)")
        if "<|" in text or "|>" in text:
            raise InvalidOutput("task text contains chat-template tokens")
        return text

    return parse


async def _sample(ctx: StageContext, reqs: list[dict[str, Any]], bar: Any) -> list[SampledTask]:
    cfg = ctx.cfg
    teacher = cfg.teacher("sample")
    # A null pre-query template is derived from the model's own chat template.
    magpie = effective_magpie(teacher, cfg.train.python, ctx.root)
    parse = make_parser(magpie.stop if magpie else [], cfg.sampler.min_chars, cfg.sampler.max_chars)

    async with ctx.client("sample") as client:

        async def one(req: dict[str, Any]) -> SampledTask:
            meta = {"stage": "sample", **{k: req[k] for k in ("domain", "subtopic", "seed")}}
            if teacher.sampling_mode == "completion":
                assert magpie is not None and magpie.pre_query_template is not None
                prompt = magpie.pre_query_template.replace("{system}", req["system"])
                out: Outcome[str] = await client.complete_validated(
                    prompt,
                    parse,
                    max_reasks=cfg.sampler.max_reasks,
                    seed=req["seed"],
                    stop=magpie.stop,
                    meta=meta,
                )
                template = magpie.pre_query_template
            else:
                msgs = [
                    {"role": "system", "content": req["system"]},
                    {"role": "user", "content": teacher.chat_task_prompt},
                ]
                out = await client.chat_validated(
                    msgs, parse, max_reasks=cfg.sampler.max_reasks, seed=req["seed"], meta=meta
                )
                template = "chat"
            bar.advance()
            return SampledTask(
                id=task_id(teacher, req),
                domain=req["domain"],
                subtopic=req["subtopic"],
                task=out.value,
                teacher=teacher.name,
                model=teacher.model,
                mode=teacher.sampling_mode,
                template=template,
                seed=req["seed"],
                tokens=Tokens(prompt=out.prompt_tokens, completion=out.completion_tokens),
                attempts=out.attempts,
                outcome="ok" if out.ok else "error",
                error=out.error,
                error_kind=out.error_kind,
            )

        return list(await asyncio.gather(*(one(r) for r in reqs)))


def run(ctx: StageContext) -> dict[str, Any]:
    """data/tasks/sampled.jsonl from the taxonomy and the sampling teacher."""
    track = StageRun("sample", ctx.cfg, ctx.paths.workdir)
    reqs = plan(ctx.cfg)
    start = time.monotonic()
    with progress("sample", len(reqs)) as bar:
        records = asyncio.run(_sample(ctx, reqs, bar))
    wall = time.monotonic() - start
    write_records(ctx.paths.sampled, records)

    ok = [r for r in records if r.outcome == "ok"]
    per_domain: dict[str, dict[str, int]] = {}
    for r in records:
        d = per_domain.setdefault(r.domain, {"requested": 0, "sampled": 0, "errors": 0})
        d["requested"] += 1
        d["sampled" if r.outcome == "ok" else "errors"] += 1
    track.metrics.update(
        {
            "requested": len(records),
            "sampled": len(ok),
            "errors": len(records) - len(ok),
            "errors_by_kind": dict(Counter(r.error_kind for r in records if r.error_kind)),
            "per_domain": per_domain,
            "mean_task_chars": round(sum(len(r.task or "") for r in ok) / max(1, len(ok)), 1),
            **output_rates(
                [(r.outcome == "ok", r.attempts) for r in records],
                ctx.usage.total().completion_tokens,
                wall,
            ),
            "llm": ctx.usage.to_dict(),
        }
    )
    track.table = [
        r.model_dump(include={"id", "domain", "subtopic", "task", "outcome"}) for r in records
    ]
    metrics = track.finish()
    ctx.check_failures(
        "sample",
        [r.error or "" for r in records if r.error_kind == "api"],
        len(records),
        invalid=sum(r.error_kind == "invalid_output" for r in records),
    )
    return metrics
