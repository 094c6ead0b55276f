"""Stage `report`: reports/<experiment>.md and .html with PNG plots of this run's numbers —
the funnel (every task from sampling to SFT rows, per domain, built here from the stages'
metrics), per-domain mix, turns and token histograms, training loss, scores — and this run's
scores beside the published ones of the benchmarks in `report` (config)."""

from __future__ import annotations

import csv
import html
import json
from pathlib import Path
from typing import Any

from litecoder.config import Config
from litecoder.context import StageContext
from litecoder.io import write_json, write_text
from litecoder.metrics import (
    MODELS,
    CalibrateMetrics,
    Calling,
    Counted,
    DedupMetrics,
    EnvprepMetrics,
    EvaluateMetrics,
    JudgeMetrics,
    LLMMetrics,
    RolloutMetrics,
    SampleMetrics,
    SftMetrics,
    StageMetrics,
    TrainMetrics,
    UsageRow,
    load,
)
from litecoder.pipeline import Paths
from litecoder.records import SftRow
from litecoder.tracking import StageRun

FUNNEL = ["sampled", "accepted", "unique", "environments", "trials", "kept", "rows"]
# Each funnel column: (stage whose metrics hold it, that metric's per-domain key).
FUNNEL_SOURCES = {
    "sampled": ("sample", "sampled"),
    "accepted": ("judge", "accepted"),
    "unique": ("dedup", "kept"),
    "environments": ("envprep", "environments"),
    "trials": ("rollout", "trials"),
    "kept": ("filter", "kept"),
}


def funnel(paths: Paths) -> dict[str, Any]:
    """sampled -> accepted -> unique -> environments -> trials -> kept -> rows, per domain."""
    columns: dict[str, dict[str, int]] = {}
    for col, (stage, key) in FUNNEL_SOURCES.items():
        counted = _metrics(paths, stage, MODELS[stage])
        assert isinstance(counted, Counted), stage
        columns[col] = {d: v.get(key, 0) for d, v in counted.per_domain.items()}
    columns["rows"] = _metrics(paths, "sft", SftMetrics).per_domain
    domains = sorted({dom for col in columns.values() for dom in col})
    return {
        "total": {c: sum(v.values()) for c, v in columns.items()},
        "per_domain": {dom: {c: columns[c].get(dom, 0) for c in columns} for dom in domains},
    }


def score_header(k: int) -> list[str]:
    return ["model", "agent", "pass@1", "95% CI", f"pass@{k}", "tasks", "trials", "unfinished",
            "turns parsed", "turns/trial", "commands/trial"]  # fmt: skip


USAGE_HEADER = ["stage", "requests", "cache hits", "retries", "prompt tokens",
                "completion tokens", "USD"]  # fmt: skip


def usage_rows(paths: Paths) -> list[list[Any]]:
    """Calls, tokens and cost per stage; for the agents' calls through a gateway (rollout,
    calibrate, an evaluated endpoint) per agent too, and per trial (mean and max)."""
    rows: list[list[Any]] = []
    keys = ("requests", "cache_hits", "retries", "prompt_tokens", "completion_tokens")

    def row(name: str, u: dict[str, float]) -> list[Any]:
        return [name, *(u.get(k, 0) for k in keys), f"{u.get('cost_usd', 0):.4f}"]

    def usage(u: UsageRow | None) -> dict[str, float]:
        return {k: getattr(u, k) for k in (*keys, "cost_usd")} if u is not None else {}

    def gateway(name: str, llm: LLMMetrics) -> None:
        for agent, u in llm.per_agent.items():
            rows.append(row(f"{name}: {agent}", usage(u)))
        trials = [usage(t) for t in llm.per_trial.values()]
        if trials:
            n = len(trials)
            mean = {k: round(sum(t[k] for t in trials) / n, 1) for k in keys}
            mean["cost_usd"] = sum(t["cost_usd"] for t in trials) / n
            top = {k: max(t[k] for t in trials) for k in (*keys, "cost_usd")}
            rows.append(row(f"{name}: per trial, mean of {n}", mean))
            rows.append(row(f"{name}: per trial, max", top))

    calling: dict[str, type[Calling]] = {
        "sample": SampleMetrics, "judge": JudgeMetrics, "envprep": EnvprepMetrics,
        "calibrate": CalibrateMetrics, "rollout": RolloutMetrics,
    }  # fmt: skip
    for stage, model in calling.items():
        llm = _metrics(paths, stage, model).llm
        if llm.total is not None:
            rows.append(row(stage, usage(llm.total)))
        if llm.per_agent:
            gateway(stage, llm)
    for key, llm in _metrics(paths, "evaluate", EvaluateMetrics).llm.items():
        rows.append(row(f"evaluate: {key}", usage(llm.total)))
        gateway(f"evaluate: {key}", llm)
    return rows


def decontam_rows(paths: Paths, benchmarks: list[str]) -> list[list[Any]]:
    """What was dropped for repeating a benchmark task, per benchmark: sampled tasks (dedup),
    refined instructions (envprep), external tasks (rollout) and external SFT rows (sft)."""
    counts: list[dict[str, int]] = [
        _metrics(paths, "dedup", DedupMetrics).contaminated_per_benchmark,
        _metrics(paths, "envprep", EnvprepMetrics).contaminated_per_benchmark,
        _metrics(paths, "rollout", RolloutMetrics).external_decontam,
        _metrics(paths, "sft", SftMetrics).external_decontam,
    ]
    names = sorted(set(benchmarks).union(*counts))
    return [[b, *(c.get(b, 0) for c in counts)] for b in names]


def published_rows(cfg: Config, results: dict[str, Any]) -> tuple[list[str], list[list[Any]]]:
    """The published scores of the benchmarks in `report.benchmarks`, and this run's."""
    benches = list(cfg.report.benchmarks)
    header = ["model", *cfg.report.benchmarks.values(), "source"]
    rows: list[list[Any]] = [
        [p.model, *(p.scores.get(b) for b in benches), p.source] for p in cfg.report.published
    ]
    bench = cfg.eval.benchmark
    for m, v in results.get("models", {}).items():
        val = f"{100 * v['pass@1']:.2f}"
        trained = cfg.eval.model.source == "checkpoint" and m.startswith("tuned")
        name = f"this run: {m}" + (f" ({cfg.train.name})" if trained else "")
        row: list[Any] = [name, *[None] * len(benches)]
        if bench in benches:
            row[1 + benches.index(bench)] = val
            row.append("this run")
        else:
            row.append(f"this run, {bench} (not comparable): {val}")
        rows.append(row)
    return header, rows


def _load(p: Path) -> dict[str, Any]:
    return json.loads(p.read_text()) if p.exists() else {}


def _metrics[M: StageMetrics](paths: Paths, stage: str, model: type[M]) -> M:
    """A stage's metrics, typed (litecoder.metrics)."""
    return load(paths.metrics(stage), model)


def plots(
    out: Path,
    fun: dict[str, Any],
    rows: list[dict[str, Any]],
    loss: list[tuple[int, float]],
    results: dict[str, Any],
) -> dict[str, str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    files: dict[str, str] = {}

    def save(fig: Any, name: str, title: str) -> None:
        fig.tight_layout()
        fig.savefig(out / name, dpi=110)
        plt.close(fig)
        files[title] = name

    fig, ax = plt.subplots(figsize=(7, 3.6))
    vals = [fun["total"].get(c, 0) for c in FUNNEL]
    bars = ax.barh(FUNNEL[::-1], vals[::-1], color="#4c72b0")
    ax.bar_label(bars, padding=3)
    ax.set_xlabel("count")
    ax.set_title("Funnel: sampled tasks to SFT rows")
    save(fig, "funnel.png", "Funnel")

    domains = list(fun["per_domain"])
    fig, ax = plt.subplots(figsize=(8, 4))
    width = 0.8 / len(FUNNEL)
    for i, c in enumerate(FUNNEL):
        ax.bar(
            [d + i * width for d in range(len(domains))],
            [fun["per_domain"][dom].get(c, 0) for dom in domains],
            width,
            label=c,
        )
    ax.set_xticks(
        [d + 0.4 - width / 2 for d in range(len(domains))], domains, rotation=30, ha="right"
    )
    ax.legend(fontsize=7, ncol=4)
    ax.set_title("Per-domain mix through the funnel")
    save(fig, "domains.png", "Per-domain mix")

    for key, title, name in (
        ("turns", "Turns per SFT row", "turns.png"),
        ("tokens", "Tokens per SFT row", "tokens.png"),
    ):
        fig, ax = plt.subplots(figsize=(6, 3.2))
        ax.hist([r[key] for r in rows], bins=min(20, max(3, len(rows))), color="#55a868")
        ax.set_xlabel(key)
        ax.set_ylabel("rows")
        ax.set_title(title)
        save(fig, name, title)

    fig, ax = plt.subplots(figsize=(6, 3.2))
    if loss:
        ax.plot([s for s, _ in loss], [v for _, v in loss], marker="o", color="#c44e52")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title("Training loss")
    save(fig, "train_loss.png", "Training loss")

    k = results.get("k", 1)
    models = results.get("models", {})
    fig, ax = plt.subplots(figsize=(6, 3.2))
    labels = list(models)
    p1 = [100 * models[m]["pass@1"] for m in labels]
    pk = [100 * models[m][f"pass@{k}"] for m in labels]
    xs = range(len(labels))
    b1 = ax.bar([x - 0.2 for x in xs], p1, 0.4, label="pass@1")
    bk = ax.bar([x + 0.2 for x in xs], pk, 0.4, label=f"pass@{k}")
    ax.bar_label(b1, fmt="%.1f")
    ax.bar_label(bk, fmt="%.1f")
    ax.set_xticks(list(xs), labels)
    ax.set_ylabel("%")
    ax.set_ylim(0, max([*p1, *pk, 10]) * 1.25)
    ax.legend()
    ax.set_title(f"Scores on {results.get('benchmark', '?')}")
    save(fig, "scores.png", "Scores")
    return files


def _md_table(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join("-" if v is None else str(v) for v in r) + " |" for r in rows]
    return "\n".join(lines)


def _html_table(header: list[str], rows: list[list[Any]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join(
        "<tr>"
        + "".join(f"<td>{html.escape('-' if v is None else str(v))}</td>" for v in r)
        + "</tr>"
        for r in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def run(ctx: StageContext) -> dict[str, Any]:
    """reports/<experiment>.md + .html + PNG plots from the run's metrics and results."""
    cfg = ctx.cfg
    w = ctx.paths.workdir
    track = StageRun("report", cfg, w)
    fun = funnel(ctx.paths)
    write_json(ctx.paths.funnel_metrics, fun)
    sft = _metrics(ctx.paths, "sft", SftMetrics)
    train = _metrics(ctx.paths, "train", TrainMetrics)
    results = _load(ctx.paths.scores)
    rows = [r.model_dump() for r in ctx.read("sft", SftRow, "train")]
    loss: list[tuple[int, float]] = []
    if ctx.paths.train_loss.exists():
        with ctx.paths.train_loss.open() as f:
            loss = [(int(r["step"]), float(r["loss"])) for r in csv.DictReader(f)]
    reports = ctx.paths.reports
    img_dir = reports / cfg.experiment.name
    files = plots(img_dir, fun, rows, loss, results)
    with ctx.paths.funnel.open("w", newline="") as f:
        wr = csv.writer(f)
        wr.writerow(["stage", "count"])
        wr.writerows([c, fun["total"].get(c, 0)] for c in FUNNEL)

    k = results.get("k", 1)

    def ci(v: dict[str, Any]) -> str:
        lo_hi = v.get("pass@1_ci95")
        return f"{100 * lo_hi[0]:.1f}-{100 * lo_hi[1]:.1f}%" if lo_hi else "-"

    def share(x: float | None) -> str:
        return "-" if x is None else f"{100 * x:.1f}%"

    score_rows = [
        [m, v.get("agent", ""), f"{100 * v['pass@1']:.2f}%", ci(v),
         f"{100 * v[f'pass@{k}']:.2f}%", v["tasks"], v["trials"], v.get("unfinished", 0),
         share(v.get("parsed_turns")), v.get("mean_turns", "-"), v.get("commands_per_trial", "-")]
        for m, v in results.get("models", {}).items()
    ]  # fmt: skip
    bench = cfg.eval.benchmark
    comparable = bench in cfg.report.benchmarks
    pub_header, pub_rows = published_rows(cfg, results)
    funnel_rows = [
        [dom] + [v.get(c, 0) for c in FUNNEL] for dom, v in fun.get("per_domain", {}).items()
    ]
    funnel_rows.append(["total"] + [fun.get("total", {}).get(c, 0) for c in FUNNEL])
    train_rows = [
        [k2, getattr(train, k2)]
        for k2 in (
            "recipe",
            "base_model",
            "rows",
            "steps",
            "first_loss",
            "final_loss",
            "train_seconds",
        )
    ]
    sections = [
        (
            "Scores (unfinished trials are counted apart, not as failures)",
            score_header(k),
            score_rows,
        ),
        ("Against the published numbers (pass@1, %, Terminus-2)", pub_header, pub_rows),
        ("Funnel", ["domain", *FUNNEL], funnel_rows),
        ("Training", ["", "value"], train_rows),
        ("LLM usage (teacher calls made by this run)", USAGE_HEADER, usage_rows(ctx.paths)),
    ]
    cal = _metrics(ctx.paths, "calibrate", CalibrateMetrics)
    if cal.calibrated:
        sections.append(
            (
                f"Difficulty (pass rate of {cal.solver}, k={cal.k}; RL-useful: "
                f"inside {list(cfg.calibrate.band)})",
                ["pass rate", "environments"],
                [[b, n] for b, n in cal.pass_rate_bins.items()]
                + [["in the band", cal.in_band], ["exported", cal.exported]],
            )
        )
    if decontam := decontam_rows(ctx.paths, list(cfg.dedup.decontam.benchmarks)):
        sections.append(
            (
                "Decontamination (dropped for repeating a benchmark task)",
                [
                    "benchmark",
                    "sampled (dedup)",
                    "refined (envprep)",
                    "external tasks",
                    "external SFT rows",
                ],
                decontam,
            )
        )
    note = (
        ""
        if comparable
        else f"Scores are on `{bench}` ({results.get('dataset', '')}), a benchmark without "
        "published numbers: they check the pipeline end to end and are not comparable with the "
        "published ones."
    )
    title = f"litecoder report: {cfg.experiment.name}"
    md = [f"# {title}", "", cfg.experiment.description, "", note, ""]
    for name, header, body in sections:
        md += [f"## {name}", "", _md_table(header, body), ""]
    md += ["## Plots", ""] + [f"![{t}]({cfg.experiment.name}/{f})" for t, f in files.items()]
    md += [
        "",
        f"Dataset: {sft.rows} rows, "
        f"mean {'-' if sft.tokens.mean is None else sft.tokens.mean} tokens per row.",
    ]
    write_text(reports / f"{cfg.experiment.name}.md", "\n".join(md) + "\n")
    body_html = "".join(f"<h2>{html.escape(n)}</h2>{_html_table(h, b)}" for n, h, b in sections)
    imgs = "".join(
        f'<figure><img src="{cfg.experiment.name}/{f}" alt="{html.escape(t)}">'
        f"<figcaption>{html.escape(t)}</figcaption></figure>"
        for t, f in files.items()
    )
    write_text(
        reports / f"{cfg.experiment.name}.html",
        f"""<!doctype html>
<html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:sans-serif;max-width:1000px;margin:2em auto}}
table{{border-collapse:collapse}} td,th{{border:1px solid #ccc;padding:4px 8px}}
figure{{display:inline-block;margin:8px}}
img{{max-width:460px}}</style></head><body><h1>{html.escape(title)}</h1>
<p>{html.escape(cfg.experiment.description)}</p><p>{html.escape(note)}</p>{body_html}
<h2>Plots</h2>{imgs}</body></html>
""",
    )
    track.metrics.update(
        {"plots": sorted(files.values()), "report": f"reports/{cfg.experiment.name}.md"}
    )
    track.images = {t: img_dir / f for t, f in files.items()}
    return track.finish()
