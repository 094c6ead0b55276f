"""Config tree: every preset composes and validates; bad configs fail at start in one line;
params.yaml does not drift from conf/."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from dvc.utils.hydra import compose_and_dump

from litecoder.config import ConfigError
from litecoder.config.load import compose, validate
from tests.conftest import REPO, compose_cfg, make_project, run

KEYS = {"KIMI_API_KEY": "k", "MINIMAX_API_KEY": "m", "OPENAI_API_KEY": "o"}


@pytest.mark.parametrize("exp", ["smoke", "litecoder_4b_preview", "litecoder_30a3b_preview"])
def test_experiments_compose(exp: str, monkeypatch: pytest.MonkeyPatch) -> None:
    for k, v in KEYS.items():
        monkeypatch.setenv(k, v)
    cfg = compose_cfg(f"experiment={exp}")
    assert cfg.experiment.name == exp
    assert set(cfg.taxonomy.domains) == {
        "ai_ml",
        "build_tools",
        "data_science",
        "networking",
        "security",
        "system_admin",
        "version_control",
    }
    if exp != "smoke":
        assert cfg.models["sample"].name == "kimi_k2_instruct_0905"
        assert cfg.models["judge"].name == "kimi_k2_instruct_0905"
        assert cfg.models["agent"].name == "minimax_m2"


EXPERIMENTS = sorted(p.stem for p in (REPO / "conf/experiment").glob("*.yaml"))


@pytest.mark.parametrize("exp", EXPERIMENTS)
def test_recipe_invariants(exp: str) -> None:
    """Every experiment: the SFT rows are measured with the student's own tokenizer and cut at
    the student's training length; the release's recipes train on Terminus-2 JSON rows only."""
    cfg = compose_cfg(f"experiment={exp}", check_env=False)
    assert cfg.sft.max_seq_len == cfg.train.sequence_len
    if cfg.train.tokenizer is None:  # the base model's own tokenizer
        assert cfg.sft.tokenizer.path == cfg.train.base_model
    else:  # a tokenizer the sft stage trains (the tiny student) is the one train uses
        assert cfg.sft.tokenizer.path is None and cfg.train.tokenizer == "data/sft/tokenizer"
    if exp.endswith("_preview"):
        assert {f for f, w in cfg.sft.formats.items() if w > 0} == {"terminus_json"}
        assert [a.kwargs.get("parser_name", "json") for a in cfg.rollout.agents] == ["json"]
        assert cfg.eval.benchmark == "terminal-bench-1.0" and cfg.eval.expected_tasks == 80


def test_default_is_offline_smoke() -> None:
    cfg = compose_cfg()
    assert cfg.experiment.name == "smoke"
    assert all(t.stand_in and t.base_url is None for t in cfg.models.values())


@pytest.mark.parametrize(
    "teacher",
    ["kimi_k2_instruct_0905", "minimax_m2", "qwen3_vllm", "llama3_vllm", "openai_chat", "offline"],
)
def test_teachers_validate(teacher: str, monkeypatch: pytest.MonkeyPatch) -> None:
    for k, v in KEYS.items():
        monkeypatch.setenv(k, v)
    t = compose_cfg(f"teacher@models.sample={teacher}").models["sample"]
    assert t.name == teacher and t.model and t.limits.concurrency > 0 and t.timeout_s > 0
    assert t.price.input_per_mtok >= 0


def test_magpie_templates_match_chat_templates() -> None:
    t = {
        n: compose_cfg(f"teacher@models.sample={n}", check_env=False).models["sample"]
        for n in ("kimi_k2_instruct_0905", "qwen3_vllm", "llama3_vllm", "minimax_m2")
    }
    kimi = t["kimi_k2_instruct_0905"].magpie
    assert kimi.pre_query_template == (
        "<|im_system|>system<|im_middle|>{system}<|im_end|><|im_user|>user<|im_middle|>"
    )
    assert kimi.stop == ["<|im_end|>"]
    assert t["qwen3_vllm"].magpie.pre_query_template.endswith("<|im_end|>\n<|im_start|>user\n")
    # Llama-3.1+'s template: the system preamble comes before the system message.
    assert t["llama3_vllm"].magpie.pre_query_template == (
        "<|start_header_id|>system<|end_header_id|>\n\nCutting Knowledge Date: December 2023\n"
        "Today Date: 26 Jul 2024\n\n{system}<|eot_id|><|start_header_id|>user<|end_header_id|>\n\n"
    )
    assert t["minimax_m2"].magpie.pre_query_template == "]~!b[]~b]system\n{system}[e~[\n]~b]user\n"
    chat = compose_cfg("teacher@models.sample=openai_chat", check_env=False).models["sample"]
    assert chat.sampling_mode == "chat" and chat.chat_task_prompt


def test_v2_taxonomy_adds_three_domains() -> None:
    cfg = compose_cfg("taxonomy=litecoder_terminal_v2")
    assert len(cfg.taxonomy.domains) == 10
    assert {"coding", "scientific_computing", "games"} <= set(cfg.taxonomy.domains)
    for d in cfg.taxonomy.domains.values():
        assert len(d.subtopics) >= 8 and d.weight > 0 and "{subtopic}" in d.system_message


def test_user_adds_domain_by_yaml(tmp_path: Path) -> None:
    import shutil

    shutil.copytree(REPO / "conf", tmp_path / "conf")
    extra = yaml.safe_load((tmp_path / "conf/taxonomy/litecoder_terminal.yaml").read_text())
    extra["domains"]["databases"] = {
        "description": "SQL databases",
        "weight": 2.0,
        "subtopics": ["indexes"] * 8,
        "system_message": "You are a database expert. Focus: {subtopic}.",
    }
    (tmp_path / "conf/taxonomy/litecoder_terminal.yaml").write_text(yaml.safe_dump(extra))
    cfg = validate(compose(tmp_path / "conf", ["sampler.domains=[databases]"]))
    assert cfg.sampled_domains().keys() == {"databases"}


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["sampler.domains=[ai_ml,netwroking]"], "sampler.domains: unknown domain 'netwroking'"),
        (["~judge.criteria.clarity.threshold"], "judge.criteria.clarity.threshold: Field required"),
        (["sampler.n_tasks=many"], "sampler.n_tasks: Input should be a valid integer"),
        (["+sampler.n_taks=3"], "sampler.n_taks: unknown key"),
        (
            ["judge.criteria.safety.threshold=9"],
            "judge.criteria.safety.threshold: Input should be less than or equal to 5",
        ),
        (["models.judge.stand_in=false"], "models.judge: base_url is missing"),
        (
            ["teacher@models.sample=kimi_k2_instruct_0905"],
            "models.sample.api_key_env: environment variable KIMI_API_KEY is not set",
        ),
        (["judge.criteria.clarity.thresh=2"], "Could not override 'judge.criteria.clarity.thresh'"),
    ],
)
def test_bad_config_is_one_line_error(
    overrides: list[str], expected: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("KIMI_API_KEY", raising=False)
    with pytest.raises(ConfigError) as err:
        compose_cfg(*overrides)
    msg = str(err.value)
    assert expected in msg
    assert "\n" not in msg and msg.startswith("config error:")


def test_bad_config_fails_cli_before_any_call(tmp_path: Path) -> None:
    r = run(["litecoder", "sample", "sampler.domains=[nope]"], REPO, check=False)
    assert r.returncode == 2
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert lines == [lines[0]] and "sampler.domains: unknown domain 'nope'" in lines[0]
    bad = tmp_path / "params.yaml"
    data = yaml.safe_load((REPO / "params.yaml").read_text())
    data["dedup"]["threshold"] = "high"
    bad.write_text(yaml.safe_dump(data))
    r = run(["litecoder", "dedup", "--params", str(bad)], tmp_path, check=False)
    assert r.returncode == 2 and "dedup.threshold: Input should be a valid number" in r.stderr
    assert not (tmp_path / "data").exists()
    # A typo in a hand-edited params.yaml: the unknown key is what is named, not the field
    # it meant (which is then missing).
    data = yaml.safe_load((REPO / "params.yaml").read_text())
    data["dedup"]["treshold"] = data["dedup"].pop("threshold")
    bad.write_text(yaml.safe_dump(data))
    r = run(["litecoder", "dedup", "--params", str(bad)], tmp_path, check=False)
    assert r.returncode == 2 and "dedup.treshold: unknown key" in r.stderr, r.stderr


def test_run_reports_a_stage_error_as_the_stage_does(tmp_path: Path) -> None:
    """`litecoder run` (the Hydra app): a stage that cannot start is one line with the
    stage's exit code, as `litecoder <stage>` says it, not a traceback and exit 1."""
    project = make_project(tmp_path / "p", git=False)
    r = run(["litecoder", "run", "--stages", "judge", "tracking=disabled"], project, check=False)
    assert r.returncode == 4, r.stderr[-2000:]
    assert r.stderr.strip().splitlines()[-1].startswith("error: ") and "Traceback" not in r.stderr
    assert "run `litecoder sample` first" in r.stderr


def test_params_yaml_matches_conf(tmp_path: Path) -> None:
    """params.yaml is what DVC's Hydra composition makes of conf/ (regenerate: litecoder params)."""
    out = tmp_path / "params.yaml"
    compose_and_dump(out, str(REPO / "conf"), None, "config", str(tmp_path), [])
    assert yaml.safe_load(out.read_text()) == yaml.safe_load((REPO / "params.yaml").read_text()), (
        "params.yaml drifted from conf/: run `litecoder params` and commit it"
    )
    validate(yaml.safe_load(out.read_text()))


def test_impossible_lsh_parameters_fail_at_load() -> None:
    with pytest.raises(ConfigError, match=r"dedup: threshold 0\.99 with num_perm 128"):
        compose_cfg("dedup.threshold=0.99")


def test_missing_input_is_a_clear_error(tmp_path: Path) -> None:
    import shutil

    shutil.copytree(REPO / "conf", tmp_path / "conf")
    r = run(["litecoder", "judge", "tracking=disabled"], tmp_path, check=False)
    assert r.returncode == 4
    assert (
        r.stderr.strip().splitlines()[-1].startswith("error: ")
        and "sampled.jsonl does not exist" in r.stderr
    )
    assert "written by stage `sample`" in r.stderr
    # A malformed input is the same kind of error, naming the line and the field.
    (tmp_path / "data/tasks").mkdir(parents=True)
    (tmp_path / "data/tasks/sampled.jsonl").write_text('{"id": "t-1", "domain": "x"}\n')
    r = run(["litecoder", "judge", "tracking=disabled"], tmp_path, check=False)
    last = r.stderr.strip().splitlines()[-1]
    assert r.returncode == 4 and last.startswith("error: ") and "Traceback" not in r.stderr
    assert "sampled.jsonl:1: not a SampledTask record" in last and "`sample`" in last
