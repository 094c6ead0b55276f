"""What the gateway costs an agent: latency added per call and throughput, against going to
the endpoint directly, in one run.

A fixed-latency loopback OpenAI-compatible endpoint (the offline stand-in with --latency, its
own process), the gateway in front of it (`litecoder gateway`, its own process, the teacher's
limits far above the load), and 64 concurrent streams of agent calls (each a chat request
after the other), first straight to the endpoint, then through the gateway; median of 3
rounds each, interleaved.

    python benchmarks/gateway.py [--streams 64] [--calls 20] [--latency 0.05]

Targets: p50 added latency < 5 ms, throughput >= 0.9 of direct.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import openai

from litecoder.standin import StandIn

META = {"stage": "rollout", "agent": "bench", "parser": "json"}


async def streams(
    base: str, n_streams: int, calls: int, tag: str, key: str = "none"
) -> tuple[list[float], float]:
    client = openai.AsyncOpenAI(
        base_url=base,
        api_key=key,
        max_retries=0,
        timeout=60,
        http_client=openai.DefaultAioHttpClient(timeout=60),
    )
    latencies: list[float] = []
    messages = [{"role": "user", "content": "Task Description:\\nbenchmark\\n"}]

    async def one_stream(k: int) -> None:
        headers = {
            "X-Litecoder-Request": json.dumps(META),
            "X-Litecoder-Session": f"{tag}-{k}__agent",
        }
        for i in range(calls):
            t = time.perf_counter()
            await client.chat.completions.create(
                model="litecoder-offline-stand-in",
                messages=[*messages, {"role": "user", "content": f"{tag} {k} {i}"}],  # type: ignore[arg-type]
                extra_headers=headers,
            )
            latencies.append(time.perf_counter() - t)

    start = time.perf_counter()
    await asyncio.gather(*(one_stream(k) for k in range(n_streams)))
    elapsed = time.perf_counter() - start
    await client.close()
    return latencies, n_streams * calls / elapsed


def start_gateway(target: str, conc: int, workdir: Path) -> tuple[subprocess.Popen[str], str, str]:
    repo = Path(__file__).resolve().parent.parent
    overrides = [
        f"models.agent.base_url={target}",
        f"models.agent.limits.concurrency={conc}",
        "++models.agent.limits.requests_per_minute=100000000",
        "tracking=disabled",
    ]
    proc = subprocess.Popen(
        [sys.executable, "-m", "litecoder.cli", "gateway", *overrides],
        cwd=repo,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env={**os.environ, "HOME": str(workdir)},
    )
    assert proc.stdout is not None
    token = proc.stdout.readline()
    line = proc.stdout.readline()
    if not (token.startswith("TOKEN ") and line.startswith("READY ")):
        raise SystemExit(f"the gateway did not start: {token!r} {line!r}")
    return proc, line.split()[1], token.split()[1]


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--streams", type=int, default=64)
    p.add_argument("--calls", type=int, default=20)
    p.add_argument("--latency", type=float, default=0.05)
    p.add_argument("--rounds", type=int, default=3)
    a = p.parse_args()
    results: dict[str, list[tuple[list[float], float]]] = {"direct": [], "gateway": []}
    with StandIn(latency_s=a.latency) as server, tempfile.TemporaryDirectory() as tmp:
        gw, gw_url, token = start_gateway(server.base_url, a.streams * 2, Path(tmp))
        try:
            for r in range(a.rounds):
                results["direct"].append(
                    asyncio.run(streams(server.base_url, a.streams, a.calls, f"d{r}"))
                )
                results["gateway"].append(
                    asyncio.run(streams(gw_url, a.streams, a.calls, f"g{r}", token))
                )
        finally:
            gw.terminate()
            gw.wait(30)
    rows = {}
    for name, runs in results.items():
        p50 = statistics.median(pct(lat, 0.5) for lat, _ in runs)
        p99 = statistics.median(pct(lat, 0.99) for lat, _ in runs)
        tput = statistics.median(t for _, t in runs)
        rows[name] = (p50, p99, tput)
        print(f"{name:>8}: p50 {p50 * 1000:7.1f} ms  p99 {p99 * 1000:7.1f} ms  {tput:7.1f} calls/s")
    added50 = (rows["gateway"][0] - rows["direct"][0]) * 1000
    added99 = (rows["gateway"][1] - rows["direct"][1]) * 1000
    ratio = rows["gateway"][2] / rows["direct"][2]
    ok = added50 < 5 and ratio >= 0.9
    print(
        f"added by the gateway: p50 {added50:.1f} ms, p99 {added99:.1f} ms; throughput "
        f"{ratio:.2f} of direct (targets: p50 < 5 ms, >= 0.9)" + ("" if ok else "  BELOW TARGET")
    )
    raise SystemExit(0 if ok else 1)


if __name__ == "__main__":
    main()
