"""What every stage run gets: validated config, paths, typed reads, LLM endpoints (checked
before anything is spent), the response cache, usage with its spending guard, and the honest
end of a stage whose records failed on the endpoint."""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from litecoder.config import Config, Teacher
from litecoder.endpoints import Endpoints
from litecoder.io import StageError, read_model, read_records
from litecoder.llm import EndpointError, Limit, LLMClient, ResponseCache, UsageBook, open_cache
from litecoder.llm.shared import Ledger
from litecoder.pipeline import STAGES, Paths, producer
from litecoder.sandbox.cgroups import set_reader_image
from litecoder.sandbox.engine import set_project

log = logging.getLogger(__name__)


@dataclass
class StageContext:
    cfg: Config
    root: Path
    paths: Paths
    endpoints: Endpoints
    cache: ResponseCache | None
    usage: UsageBook

    def read[M: BaseModel](self, name: str, model: type[M], sub: str | None = None) -> list[M]:
        """The records of a DATA location (or its file of role `sub`), typed."""
        path = self.paths.file(name, sub) if sub else getattr(self.paths, name)
        return read_records(path, model, producer=producer(name))

    def read_one[M: BaseModel](self, name: str, model: type[M], sub: str | None = None) -> M:
        """One JSON document of a DATA location (or its file of role `sub`), typed."""
        path = self.paths.file(name, sub) if sub else getattr(self.paths, name)
        return read_model(path, model, producer=producer(name))

    def client(self, role: str, *, cached: bool = True, share_identical: bool = True) -> LLMClient:
        return self.client_of(
            self.cfg.teacher(role),
            self.endpoints.url(role),
            served_as=self.endpoints.served_name(role),
            cached=cached,
            share_identical=share_identical,
        )

    def client_of(
        self,
        teacher: Teacher,
        base_url: str,
        *,
        served_as: str | None = None,
        cached: bool = True,
        share_identical: bool = True,
    ) -> LLMClient:
        """A client of any model at `base_url`, under this run's ledger, budget and limits."""
        return LLMClient(
            teacher,
            base_url=base_url,
            cache=self.cache if cached else None,
            share_identical=share_identical,
            served_as=served_as,
            usage=self.usage.for_teacher(teacher.name),
            book=self.usage,
            limits_dir=limits_dir(self.root),
        )

    def preflight(self, roles: tuple[str, ...]) -> None:
        """Check each endpoint the stage will use, before it spends anything; say so when a
        role runs on the offline stand-in."""
        checked = {self.endpoints.url(r): r for r in roles if self.cfg.teacher(r).preflight}

        async def check() -> None:
            for role in checked.values():
                async with LLMClient(
                    self.cfg.teacher(role),
                    base_url=self.endpoints.url(role),
                    served_as=self.endpoints.served_name(role),
                ) as c:
                    await c.preflight()

        if checked:
            try:
                asyncio.run(check())
            except EndpointError as e:
                raise StageError(str(e)) from None

    def check_failures(self, stage: str, errors: list[str], total: int, invalid: int = 0) -> None:
        """After everything else is done (outputs written): fail the stage (non-zero, so DVC
        does not lock it) when more records than llm.max_failed_fraction failed on the
        endpoint, or more than llm.max_invalid_fraction stayed unusable. Finished records are
        in the response cache: a re-run asks only for the others."""
        llm = self.cfg.llm
        budget = [e for e in errors if "spending guard" in e]
        if budget and len(errors) / max(1, total) > llm.max_failed_fraction:
            raise StageError(
                f"{stage}: {len(budget)} of {total} records not sent: {budget[0][:400]}"
            )
        if total and len(errors) / total > llm.max_failed_fraction:
            common, n = Counter(errors).most_common(1)[0]
            raise StageError(
                f"{stage}: {len(errors)} of {total} records failed on the endpoint (more than "
                f"llm.max_failed_fraction {llm.max_failed_fraction}); {n} of them: "
                f"{common[:300]}. Finished records are kept in the response cache: run the "
                "stage again to retry the rest"
            )
        if total and invalid / total > llm.max_invalid_fraction:
            raise StageError(
                f"{stage}: {invalid} of {total} records stayed unusable after every re-ask "
                f"(more than llm.max_invalid_fraction {llm.max_invalid_fraction}): see the "
                "stage's records for the reasons (answers cut at max_tokens? the format?)"
            )


def cache_dir(cfg: Config, root: Path) -> Path | None:
    if not cfg.llm.cache:
        return None
    d = Path(cfg.llm.cache_dir)
    return d if d.is_absolute() else root / d


def usage_book(cfg: Config, ledger: Path, stage: str = "stage") -> UsageBook:
    """The spending guard of one stage run; every call is settled into the run's ledger as it
    ends (a killed stage's spend is there too)."""
    b = cfg.llm.budget
    return UsageBook(
        stage_limit=Limit(b.stage.max_cost_usd, b.stage.max_tokens),
        run_limit=Limit(b.run.max_cost_usd, b.run.max_tokens),
        ledger=Ledger(ledger),
        stage=stage,
    )


def limits_dir(root: Path) -> Path:
    """Where the rate limits of a project's endpoints are kept (shared by its processes)."""
    return root / ".litecoder" / "limits"


@contextmanager
def stage_context(
    cfg: Config, root: Path, workdir: Path, stage: str = "stage"
) -> Iterator[StageContext]:
    set_project(root)  # the label on everything this stage makes in Docker
    set_reader_image(cfg.envprep.base_image.name)  # reads cgroup counters of another engine
    cache = open_cache(cache_dir(cfg, root))
    paths = Paths(workdir, cfg)
    usage = usage_book(cfg, paths.ledger, stage)
    try:
        with Endpoints(cfg, root) as endpoints:
            yield StageContext(cfg, root, paths, endpoints, cache, usage)
    finally:
        if cache is not None:
            cache.close()


# --- running ----------------------------------------------------------------------------------


def run_stage(name: str, cfg: Config, *, root: Path, workdir: Path) -> dict[str, Any]:
    spec = STAGES[name]
    roles = spec.roles_for(cfg)
    stand_in = [r for r in roles if cfg.teacher(r).stand_in and not cfg.teacher(r).base_url]
    note = (
        f" -- on the offline stand-in teacher ({', '.join(f'models.{r}' for r in stand_in)}: "
        "scripted answers, not a model)"
        if stand_in
        else ""
    )
    log.info("stage %s (experiment %s) in %s%s", name, cfg.experiment.name, workdir, note)
    with stage_context(cfg, root, workdir, name) as ctx:
        ctx.preflight(roles)
        metrics = spec.function()(ctx)
    log.info("stage %s done in %.1fs", name, metrics.get("duration_s", 0.0))
    return metrics
