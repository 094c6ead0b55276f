"""Spending, limits and failures that hold at any concurrency, in several processes: the
spending guard reserves each request's worst case before it is sent, rate limits are slots of
a schedule shared through a file, and a stage whose records failed on the endpoint (or stayed
unusable) is never locked. Real HTTP on loopback (the stand-in behind a proxy that sets the
price of each answer, fails some requests or cuts every answer)."""

from __future__ import annotations

import asyncio
import itertools
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from litecoder.config import Price, RateLimits, Teacher
from litecoder.io import read_jsonl
from litecoder.llm import Limit, LLMClient, LLMError, UsageBook
from litecoder.llm.shared import Ledger, RateSchedule
from litecoder.standin import StandIn
from tests.conftest import REPO, make_project, point_offline_teacher, run
from tests.flaky_proxy import FlakyProxy
from tests.loopback_api import ScriptedAPI

# Each answer reports 1000 + 1000 tokens; at $45 per million either way it costs $0.09.
PRICED = (1000, 1000)
PRICE = {"input_per_mtok": 45.0, "output_per_mtok": 45.0}


def _teacher(base_url: str, **kw: Any) -> Teacher:
    args: dict[str, Any] = {
        "name": "t", "model": "m", "base_url": base_url, "sampling_mode": "chat",
        "chat_task_prompt": "x", "timeout_s": 10, "max_wait_s": 60,
        "price": Price(**PRICE),
    }  # fmt: skip
    args.update(kw)
    return Teacher(**args)


def _ask_all(t: Teacher, book: UsageBook, n: int) -> list[Any]:
    async def go() -> list[Any]:
        async with LLMClient(t, usage=book.for_teacher(t.name), book=book) as c:

            async def one(i: int) -> Any:
                try:
                    return await c.chat([{"role": "user", "content": f"task {i}"}], seed=i)
                except LLMError as e:
                    return e

            return await asyncio.gather(*(one(i) for i in range(n)))

    return asyncio.run(go())


@pytest.mark.parametrize("concurrency", [128, 4])
def test_a_stage_limit_is_never_passed(concurrency: int, tmp_path: Path) -> None:
    """100 calls of $0.09 against a $1 limit: what is spent stays within it, however many
    are in flight; the rest are refused by the guard before anything is sent."""
    with ScriptedAPI(lambda n, body: [("ok", "answer", *PRICED)]) as api:
        t = _teacher(api.base_url, limits=RateLimits(concurrency=concurrency))
        book = UsageBook(stage_limit=Limit(max_cost_usd=1.0), ledger=Ledger(tmp_path / "l.json"))
        out = _ask_all(t, book, 100)
        sent = len(api.requests)
    spent = book.total().cost_usd
    refused = [o for o in out if isinstance(o, LLMError)]
    assert spent <= 1.0 and sent == len(out) - len(refused)
    assert all(e.budget and "spending guard" in str(e) for e in refused)
    assert 8 <= sent <= 11, sent  # as many as the worst cases left room for
    assert book.reserved_usd == pytest.approx(0) and book.reserved_tokens == 0
    # Every answered call is in the run's ledger, as it ended.
    spent_ledger = Ledger(tmp_path / "l.json").by_stage()["stage"]
    assert spent_ledger["calls"] == sent and spent_ledger["cost_usd"] == pytest.approx(spent)


def test_two_processes_share_one_run_budget(tmp_path: Path) -> None:
    """Two processes (as two envprep shards would be) with the same run ledger and a $1 run
    limit: together they spend at most $1."""
    code = (
        "import asyncio, sys, json\n"
        "from pathlib import Path\n"
        "from tests.test_spend import _teacher, _ask_all\n"
        "from litecoder.config import RateLimits\n"
        "from litecoder.llm import Limit, UsageBook\n"
        "from litecoder.llm.shared import Ledger\n"
        "t = _teacher(sys.argv[1], limits=RateLimits(concurrency=16))\n"
        "book = UsageBook(run_limit=Limit(max_cost_usd=1.0), ledger=Ledger(Path(sys.argv[2])),\n"
        "                 stage=sys.argv[3])\n"
        "out = _ask_all(t, book, 60)\n"
        "print(json.dumps({'spent': book.total().cost_usd, 'refused': sum(\n"
        "    isinstance(o, Exception) for o in out)}))\n"
    )
    ledger = tmp_path / "spend.json"
    with ScriptedAPI(lambda n, body: [("ok", "answer", *PRICED)], latency_s=0.02) as api:
        procs = [
            subprocess.Popen(
                [sys.executable, "-c", code, api.base_url, str(ledger), f"shard-{i}"],
                cwd=REPO,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for i in range(2)
        ]
        results = []
        for p in procs:
            out, err = p.communicate(timeout=300)
            assert p.returncode == 0, err[-2000:]
            results.append(json.loads(out.splitlines()[-1]))
        sent = len(api.requests)
    total = sum(r["spent"] for r in results)
    assert total <= 1.0 and sent == round(total / 0.09)
    assert all(r["refused"] > 0 for r in results)
    # Alone, each would have spent $1; the second to reach the ledger's limit was refused.
    by_stage = Ledger(ledger).by_stage()
    assert set(by_stage) <= {"shard-0", "shard-1"}
    assert sum(s["cost_usd"] for s in by_stage.values()) == pytest.approx(total)


def test_rate_limits_right_at_any_rate() -> None:
    """10 RPM: 20 requests take 19 slots of 6 s (read off the limiter's own schedule, with a
    clock that does not wait); 30 RPM likewise 2 s apart."""
    for rpm, n, gap in ((10, 20, 6.0), (30, 8, 2.0), (6000, 50, 0.01)):
        now = [1000.0]

        async def fake_sleep(s: float, now: list[float] = now) -> None:
            now[0] += s

        sched = RateSchedule(rpm, clock=lambda now=now: now[0], sleep=fake_sleep)

        async def go(sched: RateSchedule = sched, n: int = n) -> None:
            await asyncio.gather(*(sched.acquire() for _ in range(n)))

        asyncio.run(go())
        slots = sorted(sched.granted)
        assert slots[-1] - slots[0] == pytest.approx((n - 1) * gap)
        assert min(b - a for a, b in itertools.pairwise(slots)) == pytest.approx(gap)


def test_processes_share_one_rate_limit(tmp_path: Path) -> None:
    """Two processes on one endpoint, 120 RPM between them: their requests' slots (from the
    shared schedule) are never closer than 0.5 s, whoever sent them."""
    code = (
        "import asyncio, json, sys\n"
        "from pathlib import Path\n"
        "from litecoder.llm.shared import RateSchedule\n"
        "s = RateSchedule(120, Path(sys.argv[1]))\n"
        "async def go():\n"
        "    await asyncio.gather(*(s.acquire() for _ in range(4)))\n"
        "asyncio.run(go())\n"
        "print(json.dumps(s.granted))\n"
    )
    path = tmp_path / "rpm.json"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code, str(path)], cwd=REPO, stdout=subprocess.PIPE, text=True
        )
        for _ in range(2)
    ]
    slots = sorted(s for p in procs for s in json.loads(p.communicate(timeout=120)[0]))
    assert len(slots) == 8
    assert min(b - a for a, b in itertools.pairwise(slots)) >= 0.5 - 1e-6


# --- stages --------------------------------------------------------------------------------


def _sample_project(tmp_path: Path, base_url: str, *params: str) -> Path:
    project = make_project(tmp_path / "p", git=False)
    point_offline_teacher(project, base_url)
    run(["litecoder", "params", *params], project)
    return project


@pytest.mark.parametrize("concurrency", [128, 4])
def test_a_stage_stops_at_its_limit_and_resumes_without_paying_twice(
    concurrency: int, tmp_path: Path
) -> None:
    with StandIn() as server, FlakyProxy(server.base_url, usage=PRICED) as proxy:
        project = _sample_project(
            tmp_path, proxy.base_url, "sampler.n_tasks=100",
            f"models.sample.limits.concurrency={concurrency}",
            *[f"models.sample.price.{k}={v}" for k, v in PRICE.items()],
            "llm.budget.stage.max_cost_usd=1.0",
        )  # fmt: skip
        r = run(["litecoder", "sample"], project, check=False)
        assert r.returncode != 0
        errors = [ln for ln in r.stderr.splitlines() if ln.startswith("error: ")]
        assert len(errors) == 1 and "spending guard" in errors[0], r.stderr[-2000:]
        assert "Traceback" not in r.stderr
        paid = proxy.served
        spent = json.loads((project / "metrics/sample.json").read_text())["llm"]["total"]
        ledger = Ledger(project / ".litecoder/spend.json").by_stage()["sample"]
        assert spent["cost_usd"] <= 1.0 and ledger["cost_usd"] == pytest.approx(spent["cost_usd"])
        assert paid == spent["calls"] and 5 <= paid <= 11

        # The limit raised: the rest are asked, the paid ones come from the cache.
        run(["litecoder", "params", "llm.budget.stage.max_cost_usd=100"], project)
        run(["litecoder", "sample"], project)
        assert proxy.served - paid == 100 - paid
    recs = read_jsonl(project / "data/tasks/sampled.jsonl")
    assert len(recs) == 100 and all(x["outcome"] == "ok" for x in recs)
    spend = run(["litecoder", "spend"], project).stdout
    assert "sample" in spend and "$9.0000" in spend


def test_endpoint_failures_are_never_locked_and_truncation_fails(tmp_path: Path) -> None:
    """1% of requests always answered 500: the stage exits non-zero by default (DVC does not
    lock it) and the next run asks only for those. Every answer cut at max_tokens: the stage
    fails too, unusable results being no results."""
    with StandIn() as server, FlakyProxy(server.base_url, fail_share=0.02) as proxy:
        project = _sample_project(
            tmp_path, proxy.base_url, "sampler.n_tasks=100", "models.sample.max_wait_s=3"
        )
        r = run(["litecoder", "sample"], project, check=False)
        assert r.returncode != 0, r.stderr[-2000:]
        line = next(ln for ln in r.stderr.splitlines() if ln.startswith("error: "))
        assert "records failed on the endpoint" in line and "HTTP 500" in line
        failed = [x for x in read_jsonl(project / "data/tasks/sampled.jsonl")
                  if x["outcome"] != "ok"]  # fmt: skip
        assert 0 < len(failed) < 10
        proxy.set(fail_share=0.0)
        before = proxy.served
        run(["litecoder", "sample"], project)
        assert proxy.served - before == len(failed)  # only what had failed

        proxy.set(mode="truncate")
        run(["litecoder", "params", "sampler.n_tasks=20", "sampler.seed=99"], project)
        r = run(["litecoder", "sample"], project, check=False)
        assert r.returncode != 0
        line = next(ln for ln in r.stderr.splitlines() if ln.startswith("error: "))
        assert "stayed unusable" in line and "max_invalid_fraction" in line
