"""Training with Axolotl, evaluation through Harbor, the report, tracking and sweeps."""

from __future__ import annotations

import contextlib
import csv
import itertools
import json
import os
import socket
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from litecoder.config import ConfigError
from litecoder.config.load import compose, validate
from litecoder.harbor import runner
from litecoder.io import read_jsonl
from litecoder.stages.evaluate import Served, job_agent, pass_at_k
from litecoder.stages.train import (
    TrainError,
    axolotl_config,
    axolotl_verdicts,
    validate_axolotl,
)
from litecoder.tracking import read_offline_run
from tests.conftest import REPO, compose_cfg, make_project, run

pytestmark = pytest.mark.docker
TRAIN_PY = REPO / ".venv-train/bin/python"


def test_smoke_trains_the_real_student(smoke: Path) -> None:
    m = json.loads((smoke / "metrics/train.json").read_text())
    cfg = compose_cfg()
    assert m["recipe"] == "tiny_cpu" and m["steps"] == cfg.train.max_steps
    assert m["base_model"] == cfg.train.base_model and 0 < m["min_loss"] < 20
    out = smoke / "models/smoke"
    assert (out / "model.safetensors").exists() and (out / "axolotl.yaml").exists()
    # The real SmolLM2 weights were loaded and moved (a loss on a handful of distinct rows
    # says little step to step; the weights do).
    from safetensors.numpy import load_file

    from litecoder import models

    base = Path(models.cached_dir(cfg.train.base_model or "") or "")
    name = "model.layers.0.self_attn.q_proj.weight"
    before, after = (
        load_file(base / "model.safetensors")[name],
        load_file(out / "model.safetensors")[name],
    )
    assert before.shape == after.shape == (576, 576) and not (before == after).all()
    assert abs(after - before).max() < 0.1  # fine-tuned, not re-initialised
    rendered = yaml.safe_load((out / "axolotl.yaml").read_text())
    assert rendered["datasets"][0]["type"] == "chat_template"
    with (smoke / "plots/train_loss.csv").open() as f:
        assert len(list(csv.DictReader(f))) == m["steps"]


def test_smoke_evaluates_the_served_checkpoint(smoke: Path) -> None:
    r = json.loads((smoke / "results/local_heldout.json").read_text())
    heldout = json.loads((smoke / "data/envs/splits.json").read_text())["heldout"]
    assert set(r["models"]) == {"tuned", "baseline"}
    for label, m in r["models"].items():
        assert m["trials"] == len(heldout) * r["k"] and m["tasks"] == len(heldout)
        assert 0.0 <= m["pass@1"] <= m[f"pass@{r['k']}"] <= 1.0
        assert m["unfinished"] == 0 and m["mean_turns"] >= 0 and "parsed_turns" in m
        assert set(r["per_task"][label]) == set(heldout)
    # Real Harbor trials against a real server: requests were answered by the checkpoint.
    log = (smoke / "results/local_heldout/serve-tuned.log").read_text()
    assert 'POST /v1/chat/completions HTTP/1.1" 200' in log
    trials = list((smoke / "results/local_heldout/jobs/tuned").glob("*/result.json"))
    assert len(trials) == r["models"]["tuned"]["trials"]


def test_report_has_real_plots_of_this_run(smoke: Path) -> None:
    import matplotlib.image as mpimg

    md = (smoke / "reports/smoke.md").read_text()
    assert "LiteCoder-4b-Terminal-preview | 13.75 | 3.3" in md and "## Funnel" in md
    assert (smoke / "reports/smoke.html").read_text().count("<img") == 6
    images = sorted((smoke / "reports/smoke").glob("*.png"))
    assert {p.name for p in images} == {
        "funnel.png",
        "domains.png",
        "turns.png",
        "tokens.png",
        "train_loss.png",
        "scores.png",
    }
    for p in images:
        img = mpimg.imread(p)
        assert img.shape[0] > 200 and img.shape[1] > 300 and img.std() > 0.01  # not blank
    fun = json.loads((smoke / "metrics/funnel.json").read_text())["total"]
    with (smoke / "plots/funnel.csv").open() as f:
        assert {r["stage"]: int(r["count"]) for r in csv.DictReader(f)} == fun
    shown = run(["dvc", "plots", "show", "--json"], smoke).stdout
    assert "Training loss" in shown and "Funnel" in shown


def test_wandb_runs_cover_every_stage(smoke: Path) -> None:
    runs = [read_offline_run(d) for d in (smoke / "wandb").glob("offline-run-*")]
    job_types = {r["job_type"] for r in runs if r.get("group") == "smoke"}
    assert {
        "sample",
        "judge",
        "dedup",
        "envprep",
        "rollout",
        "filter",
        "sft",
        "train",
        "evaluate",
        "report",
    } <= job_types
    ev = next(r for r in runs if r.get("job_type") == "evaluate")
    assert "tuned/pass@1" in ev["summary"]
    assert any(r.get("name") == "smoke-train-axolotl" for r in runs)  # Axolotl's own run
    # Lineage from tasks to scores: each stage's outputs are reference artifacts naming inputs.
    arts = {a["name"]: a for r in runs for a in r["artifacts"] if "dvc_path" in a["metadata"]}
    chain = [
        "sampled-tasks",
        "judged-tasks",
        "accepted-tasks",
        "environments",
        "rollouts",
        "trajectories",
        "sft-dataset",
        "checkpoint",
        "eval-results",
        "report",
    ]
    assert {f"smoke-{c}" for c in chain} <= set(arts)
    for up, down in itertools.pairwise(chain):
        assert f"smoke-{up}" in arts[f"smoke-{down}"]["metadata"]["inputs"], (up, down)
    assert arts["smoke-checkpoint"]["type"] == "model"


def test_recipes_pass_axolotl_validation(tmp_path: Path) -> None:
    paths, bad = [], []
    for recipe in ("qwen3_4b_instruct", "qwen3_30b_a3b_instruct", "tiny_cpu", "tiny_random"):
        for adapter in (None, "lora"):
            extra = [f"train.adapter={adapter}"] if adapter else []
            cfg = compose_cfg(f"train={recipe}", *extra)
            y = axolotl_config(
                cfg,
                cfg.train.base_model or "/models/tiny",
                None,
                Path("/data/sft/train.jsonl"),
                Path("/out"),
            )
            if recipe == "qwen3_4b_instruct":
                assert y["deepspeed"].endswith("zero3_bf16.json") and y["bf16"]
            if recipe == "qwen3_30b_a3b_instruct":
                assert y["fsdp_version"] == 2 and y["fsdp_config"]["reshard_after_forward"]
            if adapter:
                assert y["adapter"] == "lora" and y["lora_target_linear"]
            paths.append(tmp_path / f"{recipe}-{adapter}.yaml")
            paths[-1].write_text(yaml.safe_dump(y))
            y["learning_rate"] = "fast"  # and the same config broken
            bad.append(tmp_path / f"{recipe}-{adapter}-bad.yaml")
            bad[-1].write_text(yaml.safe_dump(y))
    verdicts = axolotl_verdicts(TRAIN_PY, paths + bad)
    assert {p: verdicts[p] for p in paths} == dict.fromkeys(paths)
    assert all(verdicts[p] and "learning_rate" in verdicts[p] for p in bad)
    with pytest.raises(TrainError, match="Axolotl rejected"):
        validate_axolotl(TRAIN_PY, bad[0])


def test_a_recipe_whose_needs_are_missing_fails_before_launch(tmp_path: Path) -> None:
    """The release's 4B recipe names DeepSpeed, which this (CPU) training environment lacks:
    one line before anything is loaded or deleted; asking for flash-attn likewise. An `auto`
    attention resolves to what is there, and the rendered config says so."""
    project = make_project(tmp_path / "p", git=False)
    (project / "models/smoke").mkdir(parents=True)
    (project / "models/smoke/keep.txt").write_text("a previous checkpoint")
    for overrides, words in (
        (["train=qwen3_4b_instruct"], "train.deepspeed 'conf/train/deepspeed/zero3_bf16.json': "
         "DeepSpeed is not installed"),
        (["train.attention=flash_attention_2"], "flash-attn is not installed"),
    ):  # fmt: skip
        r = run(["litecoder", "train", "tracking=disabled", *overrides], project, check=False,
                timeout=600)  # fmt: skip
        assert r.returncode == 5, r.stderr[-2000:]
        last = r.stderr.strip().splitlines()[-1]
        assert last.startswith("error: ") and words in last and "make setup-train-gpu" in last
        assert (project / "models/smoke/keep.txt").exists()  # nothing was touched
    from litecoder.stages.train import resolve_needs

    cfg = compose_cfg("train.attention=auto", "train.sample_packing=true")
    assert resolve_needs(cfg, TRAIN_PY) == "sdpa"  # no flash-attn, no GPU here
    y = axolotl_config(cfg, "/m", None, Path("/d.jsonl"), Path("/o"), "sdpa")
    assert y["attn_implementation"] == "sdpa"


def test_unreadable_dataset_is_a_clear_error(tmp_path: Path) -> None:
    project = make_project(tmp_path / "p", git=False)
    (project / "data/sft").mkdir(parents=True)
    (project / "data/sft/train.jsonl").write_text('{"text": "no messages here"}\n' * 4)
    r = run(["litecoder", "train", "tracking=disabled"], project, check=False, timeout=900)
    assert r.returncode == 5
    err = r.stderr
    assert "error: axolotl train failed" in err and "last lines of" in err
    assert not (project / "models/model.json").exists()  # no silent success


def test_pass_at_k() -> None:
    assert pass_at_k(4, 0, 1) == 0.0 and pass_at_k(4, 4, 4) == 1.0
    assert pass_at_k(4, 1, 1) == pytest.approx(0.25) and pass_at_k(4, 1, 4) == 1.0
    assert pass_at_k(4, 2, 2) == pytest.approx(1 - 1 / 6)


def test_registry_benchmarks_make_harbor_jobs(tmp_path: Path) -> None:
    """A registry benchmark's tasks are downloaded, then staged and run like local ones."""
    cfg = compose_cfg("eval=terminal_bench_2")
    tasks = [tmp_path / "a", tmp_path / "b"]
    served = Served("http://127.0.0.1:8000/v1", "litecoder-eval", "EMPTY")
    agent = job_agent(cfg, served, cfg.eval.agents[0])
    assert agent["name"] == "terminus-2" and agent["model_name"] == "openai/litecoder-eval"
    assert agent["kwargs"]["api_base"] == "http://127.0.0.1:8000/v1"
    assert "session_id_headers" not in agent["kwargs"]  # a served model has no gateway
    job = runner.job_config(
        job_name="tuned", jobs_dir=tmp_path, agents=[agent], tasks=tasks, n_attempts=cfg.eval.k,
        environment=runner.environment_config(cfg),
    )  # fmt: skip
    assert [t["path"] for t in job["tasks"]] == [str(t) for t in tasks]
    assert job["n_attempts"] == 4
    assert job["environment"]["force_build"] is False  # staged tasks run prebuilt images
    # (Offline, each benchmark fails at once: tests/test_evaluate.py.)


@pytest.mark.parametrize(
    ("launcher", "target"),
    [
        ("slurm", "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"),
        ("ray_cluster", "hydra_plugins.hydra_ray_launcher.ray_launcher.RayLauncher"),
    ],
)
def test_launcher_configs_compose(launcher: str, target: str) -> None:
    from hydra import compose as hcompose
    from hydra import initialize_config_dir
    from hydra.errors import ConfigCompositionException
    from hydra.utils import get_class

    with initialize_config_dir(str(REPO / "conf"), version_base=None):
        cfg = hcompose("config", [f"hydra/launcher={launcher}"], return_hydra_config=True)
        assert cfg.hydra.launcher._target_ == target
        get_class(cfg.hydra.launcher._target_)  # the plugin is installed and importable
        with pytest.raises(ConfigCompositionException):
            hcompose(
                "config",
                [f"hydra/launcher={launcher}", "hydra.launcher.no_such_key=1"],
                return_hydra_config=True,
            )
    validate(compose(REPO / "conf", [f"hydra/launcher={launcher}"]))


@pytest.mark.cluster
def test_sweep_compares_members_and_dvc_exp_lists_them(smoke: Path, ray_head: str) -> None:
    """Two training learning rates: a Hydra multirun whose members run the whole pipeline, as
    Ray tasks on a Ray head, through train and evaluate (two W&B summary runs in one group and
    a comparison); then the same through `dvc exp run` / `dvc exp show`."""
    # The sweep is about launching and comparing members, not the model: the random-weight
    # tiny recipe (with the tokenizer trained on the data) keeps it short.
    fast = ["eval.k=1", "eval.baseline=false", "train=tiny_random", "sft.tokenizer.path=null"]
    launcher = ["hydra/launcher=ray_cluster", "hydra.launcher.ray.remote.num_gpus=0",
                "hydra.launcher.ray.remote.num_cpus=1"]  # fmt: skip
    r = run(["litecoder", "run", "-m", *launcher, "train.learning_rate=0.0005,0.005", *fast],
            smoke, timeout=2400, env={"RAY_ADDRESS": ray_head})  # fmt: skip
    assert "_run_job pid=" in r.stdout + r.stderr  # the members ran as Ray tasks
    sweep = max((smoke / "multirun/smoke").iterdir())
    members = sorted(d for d in sweep.iterdir() if (d / "metrics").is_dir())
    assert len(members) == 2
    for m in members:  # every stage ran in the member, evaluate and report included
        for stage in ("sample", "envprep", "rollout", "train", "evaluate", "report"):
            assert json.loads((m / f"metrics/{stage}.json").read_text())["stage"] == stage
    rows = list(csv.DictReader((sweep / "compare.csv").open()))
    assert len(rows) == 2 and all(r["final_loss"] and r["pass@1"] and r["rows"] for r in rows)
    assert rows[0]["final_loss"] != rows[1]["final_loss"]
    runs = [read_offline_run(d) for m in members for d in (m / "wandb").glob("offline-run-*")]
    summaries = [r for r in runs if r["job_type"] == "summary"]
    assert len(summaries) == 2 and len({r["group"] for r in summaries}) == 1
    assert summaries[0]["group"] == f"smoke/{sweep.name}"
    assert all(r["group"] == summaries[0]["group"] for r in runs)
    # Sweep members shared the stage caches: no LLM request was paid twice.
    for m in members:
        assert json.loads((m / "metrics/sample.json").read_text())["llm"]["total"]["requests"] == 0

    run(["git", "add", "-A"], smoke)
    run(["git", "-c", "user.email=t@e", "-c", "user.name=t", "commit", "-qm", "smoke"], smoke)
    # An experiment through DVC: only the stages whose params changed run (here the report),
    # and `dvc exp show` lists it with the params and metrics of the whole pipeline.
    r = run(["dvc", "exp", "run", "-S", "experiment.description=exp-check"], smoke, timeout=2400)
    assert "Running stage 'report'" in r.stdout and "Running stage 'train'" not in r.stdout
    shown = json.loads(run(["dvc", "exp", "show", "--json"], smoke).stdout)
    text = json.dumps(shown)
    assert "exp-check" in text and "final_loss" in text and "pass@1" in text
    assert read_jsonl(smoke / "data/sft/train.jsonl")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.cluster
def test_two_nodes_train_one_model_data_parallel_on_cpu(smoke: Path, tmp_path: Path) -> None:
    """Multi-node for real: two `litecoder train` processes as nodes 0 and 1 of one launch
    (torchrun node ranks over a loopback rendezvous, gloo, Axolotl's trainer), sharing the
    project as a cluster's nodes share a file system, fine-tune the smoke student on the smoke
    run's SFT data. Node 0 alone prepares and finalises the output dir (node 1 waits for it);
    each step takes one row per node; the loss is logged by rank 0 only; one checkpoint."""
    project = make_project(tmp_path / "p", git=False)
    (project / "data/sft").mkdir(parents=True)
    rows = read_jsonl(smoke / "data/sft/train.jsonl")
    (project / "data/sft/train.jsonl").write_text((smoke / "data/sft/train.jsonl").read_text())
    # A stale recipe from an earlier run: node 1 must not start from it.
    (project / "models/smoke").mkdir(parents=True)
    (project / "models/smoke/prepared.json").write_text(json.dumps({"launch": "old"}))
    steps, port = 4, free_port()
    cmd = ["litecoder", "train", "tracking=disabled", "train.launcher=torchrun",
           "train.num_machines=2", "train.num_processes=1", f"train.max_steps={steps}"]  # fmt: skip
    env = {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port),
           "LITECODER_TRAIN_LAUNCH": f"test-{port}"}  # fmt: skip
    nodes = [
        subprocess.Popen(
            cmd,
            cwd=project,
            env={**os.environ, **env, "MACHINE_RANK": str(rank)},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for rank in (1, 0)  # node 1 first: it waits for node 0
    ]
    outputs = [p.communicate(timeout=2400)[0] for p in nodes]
    assert [p.returncode for p in nodes] == [0, 0], outputs
    out = project / "models/smoke"
    log, log1 = (out / "train.log").read_text(), (out / "train.node1.log").read_text()
    # Both nodes came through Axolotl's trainer, as global ranks 0 and 1 of 2.
    assert "train-cpu: rank 0 of 2 finished" in log, log[-3000:]
    assert "train-cpu: rank 1 of 2 finished" in log1, log1[-3000:]
    logged = [ln for ln in log.splitlines() if ln.lstrip().startswith("{'loss'")]
    assert len(logged) == steps, logged  # rank 0 only
    assert not [ln for ln in log1.splitlines() if ln.lstrip().startswith("{'loss'")]
    m = json.loads((project / "metrics/train.json").read_text())  # node 0's, alone
    assert m["steps"] == steps and m["first_loss"] > 0 and m["final_loss"] > 0
    # Data parallel, not two copies of one run: an epoch is ceil(rows / 2) steps, not rows.
    first_epoch = float(logged[0].split("'epoch': '")[1].split("'")[0])
    assert first_epoch == pytest.approx(1 / -(-len(rows) // 2), abs=1e-3), (first_epoch, len(rows))
    assert len(list(out.glob("*.safetensors"))) == 1 and not list(out.glob("checkpoint-*"))
    assert not (out / "prepared.json").exists()
    assert json.loads((project / "models/model.json").read_text())["checkpoint"] == "models/smoke"


@pytest.mark.cluster
def test_a_timed_out_multi_process_run_leaves_no_worker(tmp_path: Path) -> None:
    """At train.timeout_s the launcher is stopped and its workers with it (they run in
    sessions of their own: a SIGKILL of torchrun alone would leave them training)."""
    project = make_project(tmp_path / "p", git=False)
    (project / "data/sft").mkdir(parents=True)
    row = {"messages": [{"role": "user", "content": "ls"}, {"role": "assistant", "content": "ok"}]}
    (project / "data/sft/train.jsonl").write_text(json.dumps(row) + "\n")
    r = run(["litecoder", "train", "tracking=disabled", "train.launcher=torchrun",
             "train.num_processes=2", "train.max_steps=100000", "train.timeout_s=120"],
            project, check=False, timeout=900)  # fmt: skip
    assert r.returncode != 0 and "timed out after 120s" in r.stderr, r.stderr[-2000:]
    # Both workers had started (each writes its line within a second or two of starting), so
    # "no worker left" below means stopped, not never started.
    log = (project / "models/smoke/train.log").read_text()
    assert all(f"train-cpu: rank {r} of 2 started" in log for r in (0, 1)), log[-3000:]

    def workers() -> list[str]:
        found = []
        for proc in Path("/proc").iterdir():
            with contextlib.suppress(OSError):
                cmd = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
                if str(project) in cmd and "train-cpu" in cmd:
                    found.append(cmd)
        return found

    deadline = time.monotonic() + 120
    while workers() and time.monotonic() < deadline:
        time.sleep(1)
    assert not workers()


def test_multi_node_launch_is_rendered_from_config(monkeypatch: pytest.MonkeyPatch) -> None:
    """The 30B recipe's launch on node 1 of 2 under Slurm: accelerate (or torchrun) arguments
    for 2 x 8 processes with the rendezvous the scheduler's environment gives."""
    from litecoder.stages.train import launch_cmd, train_env

    monkeypatch.setenv("SLURM_NODEID", "1")
    monkeypatch.setenv("MASTER_ADDR", "node-a")
    monkeypatch.setenv("MASTER_PORT", "29555")
    monkeypatch.delenv("MACHINE_RANK", raising=False)
    py = Path("/venv/bin/python")
    cfg = compose_cfg("train=qwen3_30b_a3b_instruct")
    cmd = launch_cmd(cfg, py, Path("/out/axolotl.yaml"))
    assert cmd[:5] == [
        "/venv/bin/axolotl",
        "train",
        "/out/axolotl.yaml",
        "--launcher",
        "accelerate",
    ]
    assert cmd[5:] == ["--", "--num_processes", "16", "--num_machines", "2", "--machine_rank", "1",
                       "--main_process_ip", "node-a", "--main_process_port", "29555"]  # fmt: skip
    cmd = launch_cmd(compose_cfg("train=qwen3_30b_a3b_instruct", "train.launcher=torchrun"), py,
                     Path("/out/axolotl.yaml"))  # fmt: skip
    assert cmd[6:] == ["--nproc_per_node=8", "--nnodes=2", "--node_rank=1",
                       "--master_addr=node-a", "--master_port=29555"]  # fmt: skip
    # One process on one machine: no launcher arguments at all.
    assert launch_cmd(compose_cfg(), py, Path("/x.yaml"))[-1] == "python"
    # Processes on CPU: the same torchrun rendezvous, around Axolotl's trainer fixed for CPU.
    cpu = compose_cfg("train.launcher=torchrun", "train.num_processes=2", "train.num_machines=2")
    cmd = launch_cmd(cpu, py, Path("/x.yaml"))
    assert cmd[:3] == ["/venv/bin/python", "-m", "torch.distributed.run"]
    assert cmd[3:8] == ["--nproc_per_node=2", "--nnodes=2", "--node_rank=1",
                        "--master_addr=node-a", "--master_port=29555"]  # fmt: skip
    assert cmd[-2:] == ["train-cpu", "/x.yaml"] and cmd[-3].endswith("train_env/helpers.py")
    assert train_env(cpu, py, Path("/w"))["ACCELERATE_USE_CPU"] == "true"
    assert "ACCELERATE_USE_CPU" not in train_env(compose_cfg(), py, Path("/w"))
    for bad, says in [
        (["train.num_processes=2"], "need launcher: torchrun or accelerate"),
        (["train.num_processes=2", "train.launcher=accelerate"], "under launcher: torchrun"),
    ]:
        with pytest.raises(ConfigError, match=says):
            compose_cfg(*bad)
