"""How often a short command's output is lost: docker-py's `exec_start` against litecoder's
`exec_output` (docker/docker-py#2042). Run by hand on a loaded machine, e.g. next to
`make test`; prints the counts. Needs Docker and the base image (make setup)."""

from __future__ import annotations

import argparse

from litecoder.sandbox import Limits, Sandbox, labels
from litecoder.sandbox.container import exec_output


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("-n", type=int, default=300, help="commands of each kind")
    p.add_argument("--image", default="litecoder-base:bookworm")
    a = p.parse_args()
    with Sandbox(a.image, Limits(memory_mb=256), labels("bench", None, "bench")) as sb:
        api = sb.client.api
        lost = {"docker-py exec_start": 0, "litecoder exec_output": 0}
        for _ in range(a.n):
            ex = api.exec_create(sb.container.id, ["echo", "hello"])
            if b"".join(api.exec_start(ex["Id"], stream=True)) != b"hello\n":
                lost["docker-py exec_start"] += 1
            ex = api.exec_create(sb.container.id, ["echo", "hello"])
            if b"".join(exec_output(api, ex["Id"])) != b"hello\n":
                lost["litecoder exec_output"] += 1
    for name, n in lost.items():
        print(f"{name:24s} lost the output of {n} of {a.n} `echo hello` commands")


if __name__ == "__main__":
    main()
