"""Task sampling, judging and dedup: the taxonomy, MAGPIE sampling, the judge, dedup and
decontamination (stages sample, judge, dedup)."""

from __future__ import annotations

from pydantic import Field, model_validator

from litecoder.config.base import Strict


class Domain(Strict):
    description: str
    subtopics: list[str] = Field(min_length=1)
    # MAGPIE system message; `{subtopic}`, `{domain}` and `{description}` are filled in.
    system_message: str
    weight: float = Field(gt=0)


class Taxonomy(Strict):
    name: str
    domains: dict[str, Domain] = Field(min_length=1)


class Sampler(Strict):
    n_tasks: int = Field(gt=0)
    seed: int = 0
    # Restrict sampling to these taxonomy domains (None: all of them).
    domains: list[str] | None = None
    min_chars: int = Field(default=80, ge=0)
    max_chars: int = Field(default=6000, gt=0)
    max_reasks: int = Field(default=2, ge=0)


class Criterion(Strict):
    description: str
    threshold: int = Field(ge=1, le=5)


class Judge(Strict):
    system_prompt: str
    user_template: str
    criteria: dict[str, Criterion] = Field(min_length=1)
    max_reasks: int = Field(default=2, ge=0)
    temperature: float = Field(default=0.0, ge=0)
    max_tokens: int = Field(default=1024, gt=0)


def _check_lsh(threshold: float, num_perm: int) -> None:
    from datasketch import MinHashLSH

    try:  # datasketch derives bands x rows from these; some pairs have no valid split
        MinHashLSH(threshold=threshold, num_perm=num_perm)
    except ValueError as e:
        raise ValueError(f"threshold {threshold} with num_perm {num_perm}: {e}") from None


class Decontam(Strict):
    """Synthesized tasks checked against benchmark task instructions (name -> task dirs)."""

    benchmarks: dict[str, str] = Field(default_factory=dict)
    ngram: int = Field(default=13, gt=0)
    max_ngram_overlap: float = Field(default=0.5, gt=0, le=1)
    minhash_threshold: float = Field(default=0.6, gt=0, le=1)
    num_perm: int = Field(default=128, gt=0)
    shingle_words: int = Field(default=3, gt=0)

    @model_validator(mode="after")
    def _lsh_params(self) -> Decontam:
        _check_lsh(self.minhash_threshold, self.num_perm)
        return self


class Dedup(Strict):
    exact: bool = True
    near: bool = True
    threshold: float = Field(default=0.7, gt=0, le=1)
    num_perm: int = Field(default=128, gt=0)
    shingle_words: int = Field(default=3, gt=0)
    decontam: Decontam = Field(default_factory=Decontam)

    @model_validator(mode="after")
    def _lsh_params(self) -> Dedup:
        _check_lsh(self.threshold, self.num_perm)
        return self
