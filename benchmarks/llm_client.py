"""Throughput of the LLM client layer against the bare `openai` SDK, side by side in one run,
on one loopback OpenAI-compatible server that answers each request after a fixed latency
(the offline stand-in with --latency, in its own process). Ideal throughput is
concurrency / latency.

The layer runs with everything on: response cache (a fresh one), concurrency and
requests/tokens-per-minute limits (set far above the load, so their bookkeeping is measured,
not their waits), circuit breaker, usage accounting and the spending guard. The bare SDK gets
the same aiohttp transport and a semaphore for the same concurrency. Each point is the median
of 3 rounds of each, interleaved.

    python benchmarks/llm_client.py                      # the two reference points
    python benchmarks/llm_client.py --requests 500 --latency 0.1 --concurrency 64

Targets: the layer >= 0.95x the bare SDK at both points, and >= 0.9 of ideal at 1 s / 256.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

import openai

from litecoder.config import Limits, Magpie, Teacher
from litecoder.llm import LLMClient, ResponseCache, Usage, UsageBook
from litecoder.llm.usage import Limit
from litecoder.standin import StandIn

META = {"stage": "sample", "domain": "version_control"}
# (requests, latency s, concurrency, target vs bare SDK, target vs ideal)
POINTS = [(3000, 1.0, 256, 0.95, 0.9), (2000, 0.1, 64, 0.95, None)]
ROUNDS = 3


def teacher(base_url: str, concurrency: int) -> Teacher:
    return Teacher(
        name="bench",
        model="bench-model",
        base_url=base_url,
        magpie=Magpie(pre_query_template="<|user|>{system}", stop=["<|end|>"]),
        limits=Limits(
            concurrency=concurrency, requests_per_minute=10_000_000, tokens_per_minute=10**10
        ),
        timeout_s=60,
        max_wait_s=60,
    )


async def layer(base_url: str, n: int, concurrency: int, cache_dir: Path, tag: str) -> float:
    book = UsageBook(stage_limit=Limit(max_cost_usd=1e9), run_limit=Limit(max_tokens=10**12))
    usage: Usage = book.for_teacher("bench")
    cache = ResponseCache(cache_dir)
    async with LLMClient(teacher(base_url, concurrency), cache=cache, usage=usage, book=book) as c:
        # A warm-up round fills the connection pool, as a long stage would have.
        await asyncio.gather(
            *(c.complete(f"warm {tag} {i}", seed=i, meta=META) for i in range(concurrency))
        )
        start = time.perf_counter()
        await asyncio.gather(
            *(c.complete(f"req {tag} {i}", seed=i, max_tokens=64, meta=META) for i in range(n))
        )
        elapsed = time.perf_counter() - start
    cache.close()
    assert usage.errors == 0 and usage.calls == n + concurrency
    return n / elapsed


async def bare(base_url: str, n: int, concurrency: int, tag: str) -> float:
    client = openai.AsyncOpenAI(
        base_url=base_url,
        api_key="EMPTY",
        max_retries=0,
        timeout=60,
        http_client=openai.DefaultAioHttpClient(timeout=60),
    )
    sem = asyncio.Semaphore(concurrency)
    headers = {"X-Litecoder-Request": '{"stage": "sample", "domain": "version_control"}'}

    async def one(prompt: str, seed: int, **kw: object) -> None:
        async with sem:
            await client.completions.create(
                model="bench-model",
                prompt=prompt,
                seed=seed,
                extra_headers=headers,
                **kw,  # type: ignore[arg-type]
            )

    await asyncio.gather(*(one(f"warm {tag} {i}", i) for i in range(concurrency)))
    start = time.perf_counter()
    await asyncio.gather(*(one(f"req {tag} {i}", i, max_tokens=64) for i in range(n)))
    elapsed = time.perf_counter() - start
    await client.close()
    return n / elapsed


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--requests", type=int)
    p.add_argument("--latency", type=float)
    p.add_argument("--concurrency", type=int)
    a = p.parse_args()
    points = (
        [(a.requests, a.latency, a.concurrency, None, None)]
        if a.requests and a.latency and a.concurrency
        else POINTS
    )
    print(
        f"{'requests':>8} {'latency':>8} {'conc':>5} {'bare SDK':>10} {'layer':>10} "
        f"{'ideal':>8} {'vs bare':>8} {'vs ideal':>9}  targets"
    )
    failed = False
    for n, latency, conc, t_bare, t_ideal in points:
        b_runs, l_runs = [], []
        with StandIn(latency_s=latency) as server, tempfile.TemporaryDirectory() as tmp:
            for r in range(ROUNDS):
                b_runs.append(asyncio.run(bare(server.base_url, n, conc, f"b{r}")))
                l_runs.append(
                    asyncio.run(layer(server.base_url, n, conc, Path(tmp) / str(r), f"l{r}"))
                )
        b, lay = statistics.median(b_runs), statistics.median(l_runs)
        ideal = conc / latency
        vs_bare, vs_ideal = lay / b, lay / ideal
        ok = (t_bare is None or vs_bare >= t_bare) and (t_ideal is None or vs_ideal >= t_ideal)
        failed |= not ok
        targets = f">= {t_bare}x bare" + (f", >= {t_ideal} ideal" if t_ideal else "")
        print(
            f"{n:>8} {latency:>7.2f}s {conc:>5} {b:>8.1f}/s {lay:>8.1f}/s {ideal:>6.0f}/s "
            f"{vs_bare:>7.2f}x {vs_ideal:>9.2f}  {targets if t_bare else '-'}"
            + ("" if ok else "  BELOW TARGET")
        )
    raise SystemExit(1 if failed else 0)


if __name__ == "__main__":
    main()
