"""`litecoder params`: compose conf/ into params.yaml the way DVC does, validated first.

Overrides given here persist in `conf/local/overrides.yaml` (included by conf/config.yaml),
so every later composition keeps them: `dvc exp run -S ...` (which composes conf/ anew), plain
`litecoder <stage>` and `litecoder run`. Nothing is written when the result does not validate.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import yaml

from litecoder.config import CONF_DIR_NAME, ConfigError
from litecoder.config.load import load_config

LOCAL = Path("local") / "overrides.yaml"
HEADER = """\
# @package _global_
# Written by `litecoder params OVERRIDE ...`: overrides that every composition of conf/ keeps
# (dvc exp run -S, litecoder <stage>, litecoder run). Edit it, or `litecoder params --reset`.
"""


def _set(tree: dict[str, Any], dotted: str, value: Any) -> None:
    *path, last = dotted.split(".")
    for part in path:
        tree = tree.setdefault(part, {})
        if not isinstance(tree, dict):
            raise ConfigError(f"config error: {dotted}: {part} is not a section")
    tree[last] = value


def persisted(conf_dir: Path, overrides: list[str], base: dict[str, Any]) -> dict[str, Any]:
    """`base` (the current local overrides) with `overrides` (Hydra syntax) folded in."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except HydraException as e:
        raise ConfigError(f"config error: {str(e).strip().splitlines()[0]}") from None
    out = {k: v for k, v in base.items() if k != "defaults"}
    defaults: dict[str, str] = {}
    for entry in base.get("defaults") or []:
        for k, v in entry.items():
            defaults[k] = v
    for o in parsed:
        if o.is_delete():
            raise ConfigError(f"config error: {o.input_line}: deletions cannot persist")
        group = o.key_or_group
        if (conf_dir / group.split("@")[0]).is_dir():
            target = f"override /{group}" + (f"@{o.package}" if o.package else "")
            defaults[target] = str(o.value())
        else:
            _set(out, group, o.value())
    if defaults:
        out = {"defaults": [{k: v} for k, v in defaults.items()], **out}
    return out


def write_params(output: Path, overrides: list[str], *, reset: bool = False) -> Path:
    """Persist `overrides`, compose, validate, then write `output`; on any error nothing
    (neither the overrides file nor `output`) changes."""
    from dvc.utils.hydra import compose_and_dump
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    conf_dir = (Path.cwd() / CONF_DIR_NAME).resolve()
    local = conf_dir / LOCAL
    before = local.read_text() if local.exists() else None
    if reset:
        local.unlink(missing_ok=True)
    if overrides:
        base = {} if reset or before is None else yaml.safe_load(before) or {}
        local.parent.mkdir(parents=True, exist_ok=True)
        local.write_text(
            HEADER + yaml.safe_dump(persisted(conf_dir, overrides, base), sort_keys=False)
        )
    fd, tmp = tempfile.mkstemp(dir=output.parent.resolve(), suffix=".yaml", prefix=".params.")
    os.close(fd)
    try:
        try:
            compose_and_dump(Path(tmp), str(conf_dir), None, "config", str(Path.cwd()), [])
        except (HydraException, OmegaConfBaseException) as e:
            raise ConfigError(f"config error: {str(e).strip().splitlines()[0]}") from None
        load_config(params=Path(tmp), check_env=False)  # validate before anything is kept
        os.replace(tmp, output)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        if before is None:
            local.unlink(missing_ok=True)
        else:
            local.write_text(before)
        raise
    return local
