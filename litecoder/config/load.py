"""Loading the config: compose `conf/` (Hydra) or read a composed params.yaml (DVC), validate
it, and check the names that litecoder's registries own (filter rules, SFT formats)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from litecoder.config import Config
from litecoder.config.base import CONF_DIR_NAME, ConfigError


def _format_error(err: ValidationError) -> str:
    # An unknown key is named first: a typo'd key also shows up as the field it meant being
    # missing, and "missing" alone would hide the typo.
    errors = sorted(err.errors(), key=lambda e: e["type"] != "extra_forbidden")
    first = errors[0]
    loc = ".".join(str(p) for p in first["loc"])
    msg = first["msg"].removeprefix("Value error, ")
    if first["type"] == "extra_forbidden":
        msg = "unknown key (typo?)"
    more = f" (+{err.error_count() - 1} more)" if err.error_count() > 1 else ""
    return f"config error: {loc}: {msg}{more}" if loc else f"config error: {msg}{more}"


def validate(data: dict[str, Any], *, check_env: bool = True) -> Config:
    """Validate a composed config dict. Raises ConfigError with a one-line message."""
    try:
        cfg = Config.model_validate(data)
    except ValidationError as err:
        raise ConfigError(_format_error(err)) from None
    _check_plugin_names(cfg)
    if check_env:
        for role, t in cfg.models.items():
            if t.api_key_env and not t.stand_in and not os.environ.get(t.api_key_env):
                raise ConfigError(
                    f"config error: models.{role}.api_key_env: environment variable "
                    f"{t.api_key_env} is not set"
                )
    return cfg


def _check_plugin_names(cfg: Config) -> None:
    """Names that litecoder's registries own: each registry says which it knows."""
    from litecoder.filters import RULES
    from litecoder.trajectory.formats import FORMATS

    for key, names, known in (
        ("filter.rules", list(cfg.filter.rules), RULES),
        ("sft.formats", [*cfg.sft.formats, *cfg.sft.reasoning_formats], FORMATS),
    ):
        unknown = sorted(set(names) - set(known))
        if unknown:
            raise ConfigError(f"config error: {key}: unknown {unknown} (known: {sorted(known)})")


def compose(conf_dir: Path, overrides: list[str] | None = None) -> dict[str, Any]:
    """Compose `conf/config.yaml` with Hydra overrides, as DVC's Hydra integration does."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    try:
        with initialize_config_dir(str(conf_dir.resolve()), version_base=None):
            cfg = hydra_compose(config_name="config", overrides=list(overrides or []))
        return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]
    except (HydraException, OmegaConfBaseException) as err:
        first = str(err).strip().splitlines()[0]
        raise ConfigError(f"config error: {first}") from None


def load_params(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"config error: {path} does not exist") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"config error: {path} is not valid YAML: {err}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config error: {path} is not a mapping")
    return data


def load_config(
    *,
    params: Path | None = None,
    conf_dir: Path | None = None,
    overrides: list[str] | None = None,
    check_env: bool = True,
) -> Config:
    """Load from a composed params file (DVC) or by composing `conf/` (CLI)."""
    if params is not None:
        if overrides:
            raise ConfigError("config error: overrides cannot be combined with --params")
        data = load_params(params)
    else:
        data = compose(conf_dir or Path.cwd() / CONF_DIR_NAME, overrides)
    return validate(data, check_env=check_env)
