"""Trial environments: Harbor's environment types as config. A cloud environment without its
credentials, or out of reach, stops a stage at once with one line; remote task copies leave
building to the provider and cut the network through Harbor's own policy."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from litecoder.harbor import runner
from tests.conftest import compose_cfg, make_project, run
from tests.test_evaluate import tb1_tasks

CREDENTIALS = ["E2B_API_KEY", "DAYTONA_API_KEY", "DAYTONA_JWT_TOKEN", "MODAL_TOKEN_ID",
               "MODAL_TOKEN_SECRET", "RUNLOOP_API_KEY"]  # fmt: skip


@pytest.mark.parametrize(
    ("stage", "env", "says"),
    [
        ("rollout", "e2b", "E2B_API_KEY"),
        ("evaluate", "daytona", "DAYTONA_API_KEY"),
        ("envprep", "runloop", "RUNLOOP_API_KEY"),
    ],
)
def test_cloud_environment_without_credentials_fails_before_any_trial(
    stage: str, env: str, says: str, tmp_path: Path
) -> None:
    project = make_project(tmp_path / "p", git=False)
    r = run(
        ["litecoder", stage, f"environment={env}", "environment.api_host=null",
         "tracking=disabled"],
        project,
        check=False,
        env={k: "" for k in CREDENTIALS} | {"HOME": str(tmp_path)},  # no ~/.modal.toml either
    )  # fmt: skip
    last = r.stderr.strip().splitlines()[-1]
    assert r.returncode == 5, r.stderr[-2000:]
    assert last.startswith(f"error: environment {env}: ") and says in last, last
    assert not (project / ".litecoder/rollout/jobs").exists()  # no trial was started


def test_unreachable_provider_fails_at_once(tmp_path: Path) -> None:
    project = make_project(tmp_path / "p", git=False)
    r = run(
        ["litecoder", "evaluate", "environment=modal", "environment.api_host=api.modal.invalid",
         "tracking=disabled"],
        project,
        check=False,
        env={"HTTPS_PROXY": "", "https_proxy": ""},
    )  # fmt: skip
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("error: environment modal cannot be reached from here: "), last


def test_remote_copies_are_built_by_the_provider_with_harbors_network_policy(
    tmp_path: Path,
) -> None:
    src = tmp_path / "tb1"
    tb1_tasks(src)
    run(["harbor", "tasks", "migrate", "-i", str(src), "-o", str(tmp_path / "tasks")], tmp_path)
    cfg = compose_cfg("environment=e2b")
    policy = runner.TrialPolicy.of(cfg)
    assert policy.environment.type == "e2b" and not policy.disk_quota  # no Docker quota
    staged = runner.stage(sorted((tmp_path / "tasks").iterdir()), tmp_path / "staged", run="r",
                          policy=policy)  # fmt: skip
    for d in staged:
        toml = tomllib.loads((d / "task.toml").read_text())
        assert toml["environment"]["network_mode"] == "no-network"
        assert "docker_image" not in toml["environment"]  # the provider builds the Dockerfile
        assert not (d / "environment/docker-compose.yaml").exists()
    job = runner.job_config(job_name="j", jobs_dir=tmp_path, agents=[{"name": "oracle"}],
                            tasks=staged, environment=runner.environment_config(cfg))  # fmt: skip
    assert job["environment"]["type"] == "e2b" and job["environment"]["delete"] is True
    assert "import_path" not in job["verifier"]  # Harbor's own verifier in a provider's sandbox
    # Docker stays the default: litecoder's own trial environment, by import path.
    local = runner.environment_config(compose_cfg())
    assert local["import_path"] == runner.IMPORT_PATH and "type" not in local
    from harbor.environments.factory import EnvironmentFactory

    cls = EnvironmentFactory.get_environment_class(import_path=local["import_path"])
    assert cls.type() == "litecoder-docker"
