"""Gateway tokens: one per Harbor job, and one per trial derived from it.

A job's token (`lc-…`) is what the Harbor process gets as its agents' API key. An agent that
runs inside a trial container never sees it: litecoder's trial environment replaces it, in
every command and environment value it passes into the container, by the trial's own token
(`lct-<mac>.<trial>`), an HMAC of the trial's name under the job token. The gateway checks
the MAC, so a trial's token names its trial (per-trial accounting) and cannot be turned into
another trial's or into the job's.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Iterable

JOB_PREFIX = "lc-"
TRIAL_PREFIX = "lct-"
_JOB_TOKEN = re.compile(r"lc-[A-Za-z0-9_-]{32}")


def job_token() -> str:
    return JOB_PREFIX + secrets.token_urlsafe(24)  # 32 characters


def trial_token(job: str, trial: str) -> str:
    return f"{TRIAL_PREFIX}{_mac(job, trial)}.{trial}"


def _mac(job: str, trial: str) -> str:
    return hmac.new(job.encode(), trial.encode(), hashlib.sha256).hexdigest()[:40]


def trial_of(token: str, jobs: Iterable[str]) -> tuple[str, str] | None:
    """(job token, trial name) of a valid trial token, else None."""
    if not token.startswith(TRIAL_PREFIX) or "." not in token:
        return None
    mac, trial = token.removeprefix(TRIAL_PREFIX).split(".", 1)
    for job in jobs:
        if trial and hmac.compare_digest(mac, _mac(job, trial)):
            return job, trial
    return None


def confine(text: str, trial: str) -> str:
    """`text` with every job token in it replaced by that job's token for `trial`."""
    return _JOB_TOKEN.sub(lambda m: trial_token(m.group(0), trial), text)
