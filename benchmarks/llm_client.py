"""Throughput of the LLM client layer (cache, limits and accounting on) against a loopback
OpenAI-compatible server that answers each request after a fixed latency (the offline
stand-in with --latency, in its own process). Ideal throughput is concurrency / latency.

    python benchmarks/llm_client.py                      # the two reference scenarios
    python benchmarks/llm_client.py --requests 500 --latency 0.1 --concurrency 64

Targets on a 2-core machine: >= 0.9 of ideal at 3000 req / 1 s / conc. 256 and >= 0.6 of
ideal at 2000 req / 100 ms / conc. 64.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

from litecoder.config import Limits, Magpie, Teacher
from litecoder.llm import LLMClient, ResponseCache, Usage
from litecoder.standin import StandIn

META = {"stage": "sample", "domain": "version_control"}
SCENARIOS = [(3000, 1.0, 256, 0.9), (2000, 0.1, 64, 0.6)]


async def run_once(
    base_url: str, n: int, concurrency: int, cache_dir: Path, warmup: bool
) -> tuple[float, Usage]:
    teacher = Teacher(
        name="bench",
        model="bench-model",
        base_url=base_url,
        magpie=Magpie(pre_query_template="<|user|>{system}", stop=["<|end|>"]),
        # Limits on but far above the load, so their bookkeeping is measured, not their waits.
        limits=Limits(
            concurrency=concurrency, requests_per_minute=10_000_000, tokens_per_minute=10**10
        ),
        timeout_s=60,
        max_retries=2,
    )
    usage = Usage()
    cache = ResponseCache(cache_dir / "llm.sqlite")
    async with LLMClient(teacher, cache=cache, usage=usage) as client:
        # One warm-up round fills the connection pool, as a long stage would have.
        if warmup:
            await asyncio.gather(
                *(client.complete(f"warm {i}", seed=i, meta=META) for i in range(concurrency))
            )
        start = time.perf_counter()
        await asyncio.gather(
            *(
                client.complete(f"benchmark request {i}", seed=i, max_tokens=64, meta=META)
                for i in range(n)
            )
        )
        elapsed = time.perf_counter() - start
    cache.close()
    return elapsed, usage


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--requests", type=int)
    p.add_argument("--latency", type=float)
    p.add_argument("--concurrency", type=int)
    p.add_argument("--no-warmup", action="store_true", help="start with an empty connection pool")
    a = p.parse_args()
    scenarios = (
        [(a.requests, a.latency, a.concurrency, None)]
        if a.requests and a.latency and a.concurrency
        else SCENARIOS
    )
    print(
        f"{'requests':>8} {'latency':>8} {'conc':>5} {'achieved':>10} {'ideal':>8} "
        f"{'ratio':>6} {'target':>6}  accounting"
    )
    failed = False
    for n, latency, conc, target in scenarios:
        with StandIn(latency_s=latency) as server, tempfile.TemporaryDirectory() as tmp:
            elapsed, usage = asyncio.run(
                run_once(server.base_url, n, conc, Path(tmp), not a.no_warmup)
            )
        achieved = n / elapsed
        ideal = conc / latency
        ratio = achieved / ideal
        ok = target is None or ratio >= target
        failed |= not ok
        print(
            f"{n:>8} {latency:>7.2f}s {conc:>5} {achieved:>8.1f}/s {ideal:>6.0f}/s "
            f"{ratio:>6.2f} {target or '-':>6}  requests={usage.requests} calls={usage.calls} "
            f"retries={usage.retries} tokens={usage.prompt_tokens + usage.completion_tokens}"
            + ("" if ok else "  BELOW TARGET")
        )
    raise SystemExit(1 if failed else 0)


if __name__ == "__main__":
    main()
