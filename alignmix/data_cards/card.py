"""`write_card(mix_dir)`: README.md (Hub dataset card), card/*.png and card/card.html for a built mix.

    >>> paths = write_card("out/demo")                                                  # doctest: +SKIP
    >>> paths["readme"], paths["html"]                                                  # doctest: +SKIP
    (PosixPath('out/demo/README.md'), PosixPath('out/demo/card/card.html'))

Everything is rendered from manifest.json and stats/*.json; nothing is recomputed from the shards.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from alignmix.data_cards.collect import hub_metadata, load_card_data
from alignmix.data_cards.plots import make_plots
from alignmix.data_cards.render import render_html, render_markdown, render_terminal
from alignmix.data_cards.sections import build_sections
from alignmix.pipeline.store import atomic_path


def _write_text(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_card(mix_dir: str | Path) -> dict[str, Any]:
    """Write the card of the mix in `mix_dir`; return {"readme": path, "html": path, "plots": {key: path}}."""
    root = Path(mix_dir)
    card = load_card_data(root)
    plots = make_plots(card, root / "card")
    sections = build_sections(card, plots)
    meta = hub_metadata(card)
    readme = root / "README.md"
    _write_text(readme, render_markdown(card, sections, plots, meta, root))
    html_path = root / "card" / "card.html"
    _write_text(html_path, render_html(card, sections, plots, meta))
    return {"readme": readme, "html": html_path, "plots": plots}


def show_card(mix_dir: str | Path, console: Any) -> None:
    """Print the card of `mix_dir` in the terminal (plots are named by the files `write_card` would draw)."""
    root = Path(mix_dir)
    card = load_card_data(root)
    plots_dir = root / "card"
    plots = {p.stem: p for p in plots_dir.glob("*.png")} if plots_dir.exists() else {}
    keyed = {("stage:" + k.removeprefix("stage-") if k.startswith("stage-") else k): v for k, v in plots.items()}
    render_terminal(card, build_sections(card, keyed), keyed, console)
