"""What every stage run gets: validated config, paths, LLM endpoints, cache and accounting."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel

from litecoder.config import Config
from litecoder.endpoints import Endpoints
from litecoder.io import read_model, read_records
from litecoder.llm import LLMClient, ResponseCache, UsageBook, open_cache
from litecoder.pipeline import Paths, producer


@dataclass
class StageContext:
    cfg: Config
    root: Path
    paths: Paths
    endpoints: Endpoints
    cache: ResponseCache | None
    usage: UsageBook

    def read[M: BaseModel](self, name: str, model: type[M], sub: str | None = None) -> list[M]:
        """The records of a DATA location (or a file `sub` inside it), typed."""
        path = getattr(self.paths, name) / sub if sub else getattr(self.paths, name)
        return read_records(path, model, producer=producer(name))

    def read_one[M: BaseModel](self, name: str, model: type[M], sub: str | None = None) -> M:
        """One JSON document of a DATA location, typed."""
        path = getattr(self.paths, name) / sub if sub else getattr(self.paths, name)
        return read_model(path, model, producer=producer(name))

    def client(self, role: str) -> LLMClient:
        teacher = self.cfg.teacher(role)
        return LLMClient(
            teacher,
            base_url=self.endpoints.url(role),
            cache=self.cache,
            usage=self.usage.for_teacher(teacher.name),
        )


SOURCE_ROOT = Path(__file__).resolve().parent.parent


def env_python(path: str, root: Path) -> Path | None:
    """An interpreter path from config: absolute, else under the project root, else under
    litecoder's own checkout (where scripts/setup.sh creates .venv-train)."""
    p = Path(path)
    candidates = [p] if p.is_absolute() else [root / p, SOURCE_ROOT / p]
    return next((c for c in candidates if c.exists()), None)


def cache_dir(cfg: Config, root: Path) -> Path | None:
    if not cfg.llm.cache:
        return None
    d = Path(cfg.llm.cache_dir)
    return d if d.is_absolute() else root / d


@contextmanager
def stage_context(cfg: Config, root: Path, workdir: Path) -> Iterator[StageContext]:
    cache = open_cache(cache_dir(cfg, root))
    try:
        with Endpoints(cfg, root) as endpoints:
            yield StageContext(cfg, root, Paths(workdir, cfg), endpoints, cache, UsageBook())
    finally:
        if cache is not None:
            cache.close()
