"""The `alignmix` command. Each command is a thin wrapper: parse options, call the library, print a summary."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.markup import escape

app = typer.Typer(
    help="alignmix: build, curate and mix post-training data (SFT and preference rows), then train on it. "
    "Commands that read rows (ingest, dedup, filter, review, judge, generate responses) take a JSONL, gzip JSONL, "
    "JSON or parquet file, a folder of them, a datasets save_to_disk folder, hf:<dataset id>[:<split>], or a "
    "folder alignmix wrote (`alignmix ingest --format help` lists the formats).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console()


def fail(message: str) -> None:
    # Escaped: messages quote user text ("[...]" would be read as markup); unwrapped: paths stay whole.
    console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, markup=True, soft_wrap=True)
    raise typer.Exit(code=2)


def _format_help(value: Optional[str]) -> Optional[str]:
    """`--format help` lists the formats and exits, before SOURCES and --out are asked for."""
    if value == "help":
        from alignmix.pipeline.adapters import formats_help

        console.print("formats (detected from the records' fields, or forced with --format NAME):")
        console.print(formats_help(), highlight=False, markup=False, soft_wrap=True)
        raise typer.Exit()
    return value


# What a command that reads rows takes: the same words in every command's help.
INPUT_HELP = ("a JSONL / JSON / parquet file, a folder of them, a save_to_disk folder or hf:<dataset id>[:<split>] "
              "(anything `alignmix ingest` reads, ingested into --out on the fly), or rows alignmix wrote (read as they are)")


def _read_input(src: str, work_dir: Optional[Path], format: Optional[str], *, folder: bool = False):
    """The rows of IN (see pipeline/inputs.py), with one line saying how they were read; a bad IN is an error."""
    from alignmix.pipeline.inputs import InputError, input_folder, read_input

    try:
        rows = input_folder(src, work_dir, format=format) if folder else read_input(src, work_dir, format=format)
    except InputError as err:
        fail(str(err))
    except ValueError as err:  # rows alignmix wrote whose columns do not match a row schema
        fail(f"{src}: {err}")
    console.print(rows.describe(), highlight=False, soft_wrap=True)
    return rows


# Options several commands share: the same flags, default and help text wherever they appear.
_OPTIONS: dict[str, tuple[tuple, dict]] = {
    "stage_out": ((..., "--out"), {"help": "the folder that receives data/, rejected/, stats/"}),
    "model": ((None,), {"help": "'default', a Hub id or a local folder"}),
    "backend": ((None,), {"help": "transformers | vllm | openai"}),
    "base_url": ((None,), {"help": "openai backend: the server's /v1 URL"}),
    "batch_size": ((None,), {"help": "requests decoded together"}),
    "seed": ((None,), {}),
    "name": ((None,), {"help": "the source name recorded in each row"}),
    "prefs_config": ((None,), {"help": "a YAML file with PreferencesConfig settings"}),
    "train_out": ((..., "--out"), {"help": "output folder: adapter/, metrics.jsonl, plots/, README.md"}),
    "train_config": ((None, "--config"), {"help": "a YAML file of config fields"}),
    "dpo_mix": ((..., "--mix"), {"help": "a mix directory holding preference rows"}),
    "dpo_model": ((None, "--model"), {"help": "'default', a Hub id, a folder, or an SFT output"}),
    "max_steps": ((None,), {"help": "stop after this many optimizer steps"}),
    "max_length": ((None,), {"help": "tokens per sequence"}),
    "quantize": ((None,), {"help": "auto | none | 4bit (QLoRA, CUDA)"}),
    "merge": ((None, "--merge/--no-merge"), {"help": "also write the merged model"}),
    "input_format": ((None, "--format"), {
        "help": "force a format adapter when IN is not rows alignmix wrote (`--format help` lists them)",
        "callback": _format_help, "is_eager": True}),
    "sets": (([], "--set"), {
        "help": "override any config field: --set lora.r=8 --set warmup_ratio=0 (repeatable; see `config.py`)"}),
}


def _option(key: str):
    """A fresh typer.Option for one of the shared options, e.g. `seed: Optional[int] = _option("seed")`."""
    (default, *flags), kwargs = _OPTIONS[key]
    return typer.Option(list(default) if isinstance(default, list) else default, *flags, **kwargs)


# --- pipeline commands --------------------------------------------------------------------------------------


@app.command()
def ingest(
    sources: list[str] = typer.Argument(..., help="files, folders, or hf:<dataset id>[:<split>]"),
    out: Path = typer.Option(..., "--out", help="the folder that receives data/, rejected/, stats/, manifest.json"),
    format: Optional[str] = typer.Option(
        None, "--format", help="force a format adapter (`--format help` lists them)", callback=_format_help, is_eager=True
    ),
    name: Optional[str] = typer.Option(None, "--name", help="the source name recorded in each row (default: file stem)"),
    rows_per_shard: int = typer.Option(100_000, help="rows per parquet shard"),
    workers: Optional[int] = typer.Option(
        None, help="processes that parse and convert (same output); default: from the CPU count for large files"),
    columns: Optional[str] = typer.Option(
        None, "--columns", help="which field holds what, for files in no known format: "
        "'{prompt: question, response: gen_ans, reasoning: reason, ground_truth: answer}' "
        "(keys: prompt, query, options, system, response, reasoning, ground_truth)"),
    column: Optional[list[str]] = typer.Option(
        None, "--column", help="one key=field of the column mapping, repeatable: --column prompt=question"),
) -> None:
    """Read SOURCES in any supported format and write normalized shards, rejected rows and stats."""
    from alignmix.pipeline.columns import parse_columns
    from alignmix.pipeline.ingest import IngestError, ingest_sources

    try:
        mapping = parse_columns(column, columns)
    except ValueError as err:
        fail(str(err))
    try:
        summary = ingest_sources(
            sources, out, format=format, name=name, rows_per_shard=rows_per_shard, workers=workers, progress=True,
            columns=mapping,
        )
    except IngestError as err:
        fail(str(err))
    console.print(summary.render(), highlight=False)


@app.command()
def inspect(
    path: Path = typer.Argument(..., help="a directory written by alignmix (ingest, dedup, mix, ...)"),
    rows: int = typer.Option(3, help="how many rows to show"),
) -> None:
    """Show the counts, schema and a few rows of a directory alignmix wrote."""
    from alignmix.pipeline.inspect import render_inspect

    try:
        render_inspect(path, rows=rows, console=console)
    except FileNotFoundError as err:
        fail(str(err))


# --- synth commands (generate, judge) -----------------------------------------------------------------------

generate_app = typer.Typer(help="Generate synthetic data: MAGPIE, Self-Instruct, or responses to prompts.", no_args_is_help=True)
app.add_typer(generate_app, name="generate")


def _synth_spec(config: Optional[Path], **options) -> dict:
    """A YAML config file (a generators entry or a preferences section), with the given CLI options on top."""
    import yaml

    spec = yaml.safe_load(config.read_text(encoding="utf-8")) if config else {}
    if not isinstance(spec, dict):
        fail(f"{config}: expected a YAML mapping of settings")
    spec.update({k: v for k, v in options.items() if v is not None})
    return spec


def _run_synth(call) -> dict:
    from pydantic import ValidationError

    from alignmix.pipeline.progress import progress_bars

    try:
        with progress_bars(True, console):  # requests, tokens/s, ETA (a final line when not a terminal)
            return call()
    except (ValidationError, ValueError, FileNotFoundError, ImportError) as err:
        fail(str(err))
        raise


def _model_options(model, backend, base_url, batch_size) -> dict:
    return {"model": model, "backend": backend, "base_url": base_url, "batch_size": batch_size}


@generate_app.command("magpie")
def generate_magpie(
    out: Path = _option("stage_out"),
    count: Optional[int] = typer.Option(None, help="conversations to request"),
    n_turns: Optional[int] = typer.Option(None, "--turns", help="user/assistant exchanges per conversation"),
    template: Optional[str] = typer.Option(None, help="'auto' (derive from the chat template) or a preset"),
    model: Optional[str] = _option("model"),
    backend: Optional[str] = _option("backend"),
    base_url: Optional[str] = _option("base_url"),
    batch_size: Optional[int] = _option("batch_size"),
    seed: Optional[int] = _option("seed"),
    name: Optional[str] = _option("name"),
    config: Optional[Path] = typer.Option(None, help="a YAML file with MagpieConfig settings"),
) -> None:
    """Instructions from the model's own prior (MAGPIE), answered by the same model."""
    from alignmix.synth.magpie import run_magpie
    from alignmix.synth.report import render_stats

    spec = _synth_spec(config, count=count, n_turns=n_turns, template=template, seed=seed, name=name,
                       **_model_options(model, backend, base_url, batch_size))  # fmt: skip
    console.print(render_stats(_run_synth(lambda: run_magpie(spec, out, progress=True))), highlight=False)


@generate_app.command("self-instruct")
def generate_self_instruct(
    out: Path = _option("stage_out"),
    count: Optional[int] = typer.Option(None, help="new instructions to keep"),
    seed_tasks: Optional[Path] = typer.Option(None, help="a seed file in the reference JSON Lines format"),
    model: Optional[str] = _option("model"),
    backend: Optional[str] = _option("backend"),
    base_url: Optional[str] = _option("base_url"),
    batch_size: Optional[int] = _option("batch_size"),
    seed: Optional[int] = _option("seed"),
    name: Optional[str] = _option("name"),
    config: Optional[Path] = typer.Option(None, help="a YAML file with SelfInstructConfig settings"),
) -> None:
    """New instructions bootstrapped from seed tasks (Self-Instruct), with the ROUGE-L 0.7 filter."""
    from alignmix.synth.report import render_stats
    from alignmix.synth.self_instruct import run_self_instruct

    spec = _synth_spec(config, count=count, seed_tasks=str(seed_tasks) if seed_tasks else None, seed=seed, name=name,
                       **_model_options(model, backend, base_url, batch_size))  # fmt: skip
    console.print(render_stats(_run_synth(lambda: run_self_instruct(spec, out, progress=True))), highlight=False)


@generate_app.command("responses")
def generate_responses_cmd(
    prompts: str = typer.Argument(..., help="prompts: SFT, preference or prompt rows, " + INPUT_HELP
                                   + "; or a .txt file, one prompt a line"),
    out: Path = typer.Option(..., "--out", help="the folder that receives data/ (one SFT row per response)"),
    format: Optional[str] = _option("input_format"),
    temperatures: Optional[str] = typer.Option(None, help="one responder per temperature, e.g. 0.3,0.7,1.0,1.3"),
    max_new_tokens: int = typer.Option(256, help="per response (for the responders of --temperatures)"),
    model: Optional[str] = _option("model"),
    backend: Optional[str] = _option("backend"),
    base_url: Optional[str] = _option("base_url"),
    limit: Optional[int] = typer.Option(None, help="use at most this many prompts"),
    seed: Optional[int] = _option("seed"),
    config: Optional[Path] = _option("prefs_config"),
) -> None:
    """N responses per prompt, varied by temperature (or by the responders of --config)."""
    from alignmix.synth.config import PreferencesConfig
    from alignmix.synth.report import render_stats
    from alignmix.synth.responses import generate_responses

    spec = _synth_spec(config, limit=limit, seed=seed)
    if temperatures:
        common = {k: v for k, v in _model_options(model, backend, base_url, None).items() if v is not None}
        spec["responders"] = [{"temperature": float(t), "max_new_tokens": max_new_tokens, **common} for t in temperatures.split(",")]
    cfg = _run_synth(lambda: PreferencesConfig.model_validate(spec))  # a bad setting fails before IN is read
    if prompts.endswith(".txt") and Path(prompts).is_file():
        source = [line for line in Path(prompts).read_text(encoding="utf-8").splitlines() if line.strip()]
    else:
        source = _read_input(prompts, out, format).frame
    console.print(render_stats(_run_synth(lambda: generate_responses(source, cfg, out, progress=True))), highlight=False)


@app.command()
def judge(
    responses: str = typer.Argument(..., help="responses: a folder `alignmix generate responses` wrote, or SFT "
                                     "rows (answers to the same prompt are grouped) or preference pairs (both sides "
                                     "rated): " + INPUT_HELP),
    out: Path = typer.Option(..., "--out", help="the folder that receives the rated rows (or the pairs)"),
    format: Optional[str] = _option("input_format"),
    binarize: bool = typer.Option(False, "--binarize", help="write preference pairs, the UltraFeedback way"),
    rejected: str = typer.Option("random", help="binarization: random (seeded) or lowest"),
    pairwise: bool = typer.Option(False, "--pairwise", help="also judge each pair in both orders"),
    model: Optional[str] = typer.Option(None, help="the judge: 'default', a Hub id or a local folder"),
    backend: Optional[str] = _option("backend"),
    base_url: Optional[str] = _option("base_url"),
    temperature: Optional[float] = typer.Option(None, help="0 (default): greedy judgements"),
    seed: Optional[int] = _option("seed"),
    config: Optional[Path] = _option("prefs_config"),
) -> None:
    """Rate every response (helpfulness, honesty, instruction following, truthfulness; 1-5 with rationale)."""
    from alignmix.pipeline.inputs import written_by_alignmix
    from alignmix.synth.config import PreferencesConfig
    from alignmix.synth.judge import judge_responses
    from alignmix.synth.preferences import binarize_ratings
    from alignmix.synth.report import render_stats

    spec = _synth_spec(config, seed=seed)
    judge_opts = {"temperature": temperature, "pairwise": pairwise or None, **_model_options(model, backend, base_url, None)}
    spec["judge"] = {**spec.get("judge", {}), **{k: v for k, v in judge_opts.items() if v is not None}}
    spec["binarize"] = {**spec.get("binarize", {}), "rejected": rejected}
    cfg = _run_synth(lambda: PreferencesConfig.model_validate(spec))  # a bad setting fails before IN is read
    source = responses if format is None and written_by_alignmix(responses) else _read_input(responses, out, format).frame
    stats = _run_synth(lambda: judge_responses(source, cfg, out, progress=True, write_data=not binarize))
    console.print(render_stats(stats), highlight=False)
    if binarize:
        console.print(render_stats(_run_synth(lambda: binarize_ratings(out, cfg, out, progress=True))), highlight=False)


# --- filter commands (dedup, filter, review) ----------------------------------------------------------------


@app.command()
def dedup(
    src: str = typer.Argument(..., metavar="IN", help=INPUT_HELP),
    out: Path = _option("stage_out"),
    format: Optional[str] = _option("input_format"),
    on: str = typer.Option("prompt", "--on", help="text compared: prompt, first_user, conversation, response, ..."),
    threshold: float = typer.Option(0.8, "--threshold", help="Jaccard similarity of word 5-gram sets for near duplicates"),
    exact_only: bool = typer.Option(False, "--exact-only", help="only drop rows equal after normalization"),
    keep: str = typer.Option("first", "--keep", help="which row of a cluster stays: first or highest_score"),
) -> None:
    """Drop exact duplicates, then MinHash near duplicates, keeping one row per cluster."""
    specs = [{"stage": "exact_dedup", "field": on, "keep": keep}]
    if not exact_only:
        specs.append({"stage": "near_dedup", "field": on, "threshold": threshold, "keep": keep})
    _curate(src, out, format, specs)


@app.command("filter")
def filter_rows(
    src: str = typer.Argument(..., metavar="IN", help=INPUT_HELP),
    out: Path = _option("stage_out"),
    format: Optional[str] = _option("input_format"),
    stage: list[str] = typer.Option(
        ..., "--stage", help='a stage name (length, consistency, language, ...) or a JSON object {"stage": ..., ...}; repeatable'
    ),
) -> None:
    """Apply curation stages in the order given, writing kept rows, rejected rows with reasons, and stats."""
    import orjson

    try:
        specs = [orjson.loads(s) if s.lstrip().startswith("{") else {"stage": s} for s in stage]
    except orjson.JSONDecodeError as err:
        fail(f"--stage: not a stage name or a JSON object: {err}")
    _curate(src, out, format, specs)


def _curate(src: str, out: Path, format: Optional[str], specs: list[dict]) -> None:
    """Build the stages (a bad one fails before anything is read), read IN, run them in order, print their counts."""
    from alignmix.filters.apply import curate, render_stats
    from alignmix.filters.registry import build_stage

    try:
        stages = [build_stage(spec) for spec in specs]
    except ValueError as err:
        fail(str(err))
    rows = _read_input(src, out, format)
    try:
        stats = curate(rows.frame, out, stages)
    except (ValueError, FileNotFoundError, RuntimeError) as err:
        fail(str(err))
    console.print(render_stats(stats), highlight=False)


@app.command()
def review(
    src: str = typer.Argument(..., metavar="IN", help="preference rows: " + INPUT_HELP),
    out: Optional[Path] = typer.Option(
        None, "--out", help="the folder that receives review/ (and the rows read, when IN is not a folder alignmix "
        "wrote); default: IN itself when it is, else ./<IN's name>-review"),
    format: Optional[str] = _option("input_format"),
    sample: int = typer.Option(50, "--sample", help="how many random pairs to show"),
    seed: int = typer.Option(0, "--seed", help="seed of the sample and of the A/B order"),
) -> None:
    """Spot-check pairs by hand: judge random pairs blind; report agreement with the labels (warns below 80%)."""
    from alignmix.filters.review import review as run_review
    from alignmix.pipeline.ingest import source_name
    from alignmix.pipeline.inputs import is_store

    in_place = out is None and format is None and is_store(src)  # a folder alignmix wrote: reviewed where it is
    folder = out if out is not None or in_place else Path(f"{source_name(src)}-review")
    rows = _read_input(src, folder, format, folder=True)
    try:
        report = run_review(rows.folder, sample=sample, seed=seed, console=console)
    except (ValueError, FileNotFoundError) as err:
        fail(str(err))
    console.print(report.render(), highlight=False)

# --- mix and card commands ----------------------------------------------------------------------------------


@app.command()
def mix(
    recipe: Path = typer.Argument(..., help="a recipe YAML file"),
    out: Path = typer.Option(..., "--out", help="the folder that receives <out>/<recipe name>/"),
) -> None:
    """Read the recipe's sources, run its curation stages, mix by recipe, write shards and the data card.

    The same steps, files and bytes as the `build-ultrafeedback-mix` flow, without Prefect and without
    generation (parts that `alignmix build` generated earlier into the same folder are mixed too). Resumable:
    sources and stages that finished with the same inputs are not redone.
    """
    from alignmix.data_cards import write_card
    from alignmix.filters.apply import curate_recipe
    from alignmix.pipeline import curation
    from alignmix.pipeline.mixing import MixError
    from alignmix.pipeline.progress import progress_bars
    from alignmix.pipeline.recipe import RecipeError, load_recipe
    from alignmix.pipeline.store import MixStore

    try:
        r = load_recipe(recipe)
    except RecipeError as err:
        fail(str(err))
    r = r.model_copy(update={"output": r.output.model_copy(update={"dir": str(out)})})
    store = MixStore(r.out_dir())
    log = lambda line: console.print(line, highlight=False)  # noqa: E731
    try:
        part_dirs = curation.finished_parts(r)
        for source in r.sources:
            folder, stats = curation.ingest_part(r, source.name)
            part_dirs[source.name] = str(folder)
            again = " (finished in an earlier run)" if stats.get("resumed") else ""
            log(f"read {source.name}: {stats['rows_in']} rows in, {stats['rows_kept']} kept{again}")
        with progress_bars(console.is_terminal, console):  # rows scored per stage, rows/s, ETA
            curated_path = curate_recipe(r, part_dirs, log=log)
        curation.prune_stale(r, part_dirs)
        manifest = curation.mix_curated(r, curated_path)
    except (MixError, ValueError, FileNotFoundError, RuntimeError) as err:
        fail(str(err))
    paths = write_card(store.root)
    splits = ", ".join(f"{s} {n}" for s, n in manifest["splits"].items())
    log(f"mix {r.name}: {splits} rows in {len(manifest['shards'])} shards -> {store.root}")
    log(f"card: {paths['readme']}, {paths['html']}")


@app.command()
def card(
    path: Path = typer.Argument(..., help="a mix directory written by `alignmix mix`"),
    html: bool = typer.Option(False, "--html", help="write README.md, card/*.png and card/card.html; print the HTML path"),
) -> None:
    """Show a mix's data card in the terminal, or (--html) write it and name the HTML file."""
    from alignmix.data_cards import show_card, write_card
    from alignmix.data_cards.collect import CardError

    try:
        if html:
            console.print(str(write_card(path)["html"]), highlight=False)
        else:
            show_card(path, console)
    except CardError as err:
        fail(str(err))

# --- training commands --------------------------------------------------------------------------------------

train_app = typer.Typer(help="LoRA/QLoRA SFT and DPO on a mix's shards.", no_args_is_help=True)
app.add_typer(train_app, name="train")


def _train_config(kind: str, config: Optional[Path], model: Optional[str], overrides: dict, sets: list[str]):
    from alignmix.training.config import ConfigError, load_config

    fixed = {k: v for k, v in overrides.items() if v is not None}
    if model is not None:
        fixed["model"] = model
    try:
        cfg = load_config(kind, config, sets)  # file, then --set
        return load_config(kind, None, {**cfg.model_dump(exclude_unset=True), **fixed}) if fixed else cfg
    except (ConfigError, FileNotFoundError) as err:
        fail(str(err))


def _print_run(result: dict) -> None:
    before, after, tr = result["eval"]["before"], result["eval"]["after"], result["train"]
    console.print(f"[bold]{result['kind']}[/]: {tr['steps']} steps, {tr['rows']} rows, {tr['runtime_s']} s, "
                  f"{tr.get('tokens_per_s')} tokens/s", highlight=False)
    for k in before:
        console.print(f"  test {k}: {before[k]} -> {after.get(k)}", highlight=False)
    for w in result["warnings"]:
        console.print(f"  [yellow]warning[/] step {w['step']} {w['code']}: {w['message']}", highlight=False)
    console.print(f"  adapter {result['adapter']}\n  metrics {result['metrics']}\n  card    {result['model_card']}",
                  highlight=False)


def _run_training(run, show: bool = True):
    """Run; a bad mix, config or machine (TrainingDataError, ValueError, RuntimeError) is an error message."""
    from alignmix.training.data import TrainingDataError

    try:
        result = run()
    except (TrainingDataError, ValueError, RuntimeError, FileNotFoundError) as err:
        fail(str(err))
    if show:
        _print_run(result)
    return result


@train_app.command("sft")
def train_sft_cmd(
    mix: Path = typer.Option(..., "--mix", help="a mix directory holding SFT rows (data/train-*, data/test-*)"),
    out: Path = _option("train_out"),
    model: Optional[str] = typer.Option(None, "--model", help="'default', a Hub id or a local folder"),
    config: Optional[Path] = _option("train_config"),
    max_steps: Optional[int] = _option("max_steps"),
    learning_rate: Optional[float] = typer.Option(None, "--lr", help="peak learning rate (default 2e-4)"),
    batch_size: Optional[int] = typer.Option(None, help="rows per forward pass"),
    max_length: Optional[int] = _option("max_length"),
    quantize: Optional[str] = _option("quantize"),
    merge: Optional[bool] = _option("merge"),
    sets: list[str] = _option("sets"),
) -> None:
    """LoRA/QLoRA SFT on a mix's SFT rows (loss on assistant tokens only)."""
    from alignmix.training import train_sft

    cfg = _train_config("sft", config, model, {"max_steps": max_steps, "learning_rate": learning_rate,
                                               "batch_size": batch_size, "max_length": max_length,
                                               "quantize": quantize, "merge": merge}, sets)
    _run_training(lambda: train_sft(mix, out, cfg))


@train_app.command("dpo")
def train_dpo_cmd(
    mix: Path = _option("dpo_mix"),
    out: Path = _option("train_out"),
    model: Optional[str] = _option("dpo_model"),
    config: Optional[Path] = _option("train_config"),
    loss: Optional[str] = typer.Option(None, help="sigmoid | ipo | simpo"),
    beta: Optional[float] = typer.Option(None, help="KL strength (0.1), or SimPO's scale (2.0)"),
    max_steps: Optional[int] = _option("max_steps"),
    learning_rate: Optional[float] = typer.Option(None, "--lr", help="peak learning rate (default 5e-6)"),
    batch_size: Optional[int] = typer.Option(None, help="pairs per forward pass"),
    max_length: Optional[int] = _option("max_length"),
    quantize: Optional[str] = _option("quantize"),
    merge: Optional[bool] = _option("merge"),
    sets: list[str] = _option("sets"),
) -> None:
    """DPO (sigmoid, IPO or SimPO) on a mix's preference rows; reference = the adapter disabled."""
    from alignmix.training import train_dpo

    cfg = _train_config("dpo", config, model, {"loss": loss, "beta": beta, "max_steps": max_steps,
                                               "learning_rate": learning_rate, "batch_size": batch_size,
                                               "max_length": max_length, "quantize": quantize, "merge": merge}, sets)
    _run_training(lambda: train_dpo(mix, out, cfg))


@train_app.command("beta-sweep")
def train_beta_sweep_cmd(
    mix: Path = _option("dpo_mix"),
    out: Path = typer.Option(..., "--out", help="one run per <out>/beta-<b>, and <out>/sweep.json"),
    model: Optional[str] = _option("dpo_model"),
    config: Optional[Path] = _option("train_config"),
    betas: str = typer.Option("0.05,0.1,0.5", help="comma-separated betas"),
    max_steps: Optional[int] = typer.Option(None, help="stop each run after this many optimizer steps"),
    sets: list[str] = _option("sets"),
) -> None:
    """DPO at several betas on the same data; the final metrics side by side."""
    from rich.table import Table

    from alignmix.training import beta_sweep

    try:
        values = tuple(float(b) for b in betas.split(","))
    except ValueError:
        fail(f"--betas {betas!r}: expected numbers separated by commas, e.g. 0.05,0.1,0.5")
    cfg = _train_config("dpo", config, model, {"max_steps": max_steps}, sets)
    sweep = _run_training(lambda: beta_sweep(mix, out, cfg, values), show=False)
    table = Table(title=f"DPO beta sweep ({sweep['loss']} loss)")
    columns = [k for k in sweep["runs"][0] if k != "out_dir"]
    for c in columns:
        table.add_column(c, justify="right")
    for run in sweep["runs"]:
        table.add_row(*(f"{run[c]:.4g}" if isinstance(run[c], float) else str(run[c]) for c in columns))
    console.print(table)
    console.print(f"written: {Path(out) / 'sweep.json'}", highlight=False)


# --- flow commands (build, serve) ---------------------------------------------------------------------------


@app.command()
def build(
    recipe: str = typer.Argument(..., help="a recipe: a YAML path, a bundled recipe's name (demo), or inline YAML"),
    dask_address: Optional[str] = typer.Option(
        None, "--dask-address", help="run per-shard tasks on this Dask scheduler (tcp://host:8786)"
    ),
) -> None:
    """Run the build-ultrafeedback-mix flow without a server (Prefect's ephemeral mode)."""
    from alignmix.flows.build import build_ultrafeedback_mix
    from alignmix.pipeline.progress import progress_bars
    from alignmix.pipeline.recipe import RecipeError

    try:
        with progress_bars(console.is_terminal, console):  # besides the flow's progress lines in its log
            result = build_ultrafeedback_mix(recipe, dask_address=dask_address)
    except RecipeError as err:
        fail(str(err))
    console.print(f"[bold]mix:[/] {result['mix_dir']}  splits: {result.get('splits')}")
    console.print(f"[bold]data card:[/] {result['card'].get('readme')}  html: {result['card'].get('html')}")
    for kind in ("sft", "dpo"):
        if result.get(kind):
            console.print(f"[bold]{kind} adapter:[/] {result[kind].get('adapter')}")


@app.command()
def serve(
    limit: Optional[int] = typer.Option(None, help="at most this many flow runs at once"),
) -> None:
    """Serve the flows as deployments against the Prefect server at PREFECT_API_URL.

    Then: prefect deployment run build-ultrafeedback-mix/demo --watch
    """
    from alignmix.flows.deployments import serve as serve_deployments

    serve_deployments(limit=limit)


if __name__ == "__main__":
    app()
