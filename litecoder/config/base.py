"""The config's common ground: strict models, the error type, names every section uses."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

CONF_DIR_NAME = "conf"
AGENT_ROLES = ("sample", "judge", "agent")


class ConfigError(Exception):
    """A config problem, reported as one line that names the key."""


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
