"""The card's layout primitives (sections of plain blocks: paragraphs, tables, plots, code) and the three ways
they are written: Hub markdown (README.md), self-contained HTML, and the terminal. `sections` builds the blocks
from the recorded statistics; `wording` writes their sentences.

Rows are untrusted text. Markdown cells and paragraphs are HTML-escaped (the Hub renders HTML inside markdown)
and pipes escaped; the HTML is rendered by Jinja with autoescaping on, so every value, names and numbers
included, is escaped; the one thing inserted unescaped is each plot's base64 data, which only holds [A-Za-z0-9+/=].
"""

from __future__ import annotations

import base64
import html
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from jinja2 import Environment, PackageLoader, select_autoescape


@dataclass
class Block:
    kind: str  # "p" | "table" | "plot" | "code"
    text: str = ""
    headers: list[str] = field(default_factory=list)
    rows: list[list[Any]] = field(default_factory=list)
    plot: str = ""  # a key of make_plots()'s result
    lang: str = ""


@dataclass
class Section:
    title: str
    blocks: list[Block] = field(default_factory=list)

    def p(self, text: str) -> Section:
        self.blocks.append(Block("p", text=text))
        return self

    def table(self, headers: list[str], rows: list[list[Any]]) -> Section:
        self.blocks.append(Block("table", headers=headers, rows=rows))
        return self

    def plot(self, key: str, plots: dict[str, Path], alt: str) -> Section:
        if key in plots:
            self.blocks.append(Block("plot", plot=key, text=alt))
        return self

    def code(self, text: str, lang: str = "") -> Section:
        self.blocks.append(Block("code", text=text, lang=lang))
        return self


# --- markdown -----------------------------------------------------------------------------------------------


def md_escape(value: Any) -> str:
    """Escape a value for a markdown table cell or paragraph: HTML-escaped, pipes escaped, one line."""
    text = "-" if value is None else str(value)
    return html.escape(" ".join(text.split()), quote=False).replace("|", "\\|")


def _fence(text: str) -> str:
    longest = max((len(m) for m in re.findall(r"`+", text)), default=0)
    return "`" * max(3, longest + 1)


def render_markdown(card: dict[str, Any], sections: list[Section], plots: dict[str, Path], meta: dict[str, Any],
                    root: Path) -> str:
    header = yaml.safe_dump(meta, sort_keys=False, allow_unicode=True)
    out = ["---", header.rstrip("\n"), "---", "", f"# {md_escape(card['manifest']['name'])}", ""]
    for sec in sections:
        out += [f"## {md_escape(sec.title)}", ""]
        for b in sec.blocks:
            if b.kind == "p":
                out += [md_escape(b.text), ""]
            elif b.kind == "table":
                out.append("| " + " | ".join(md_escape(h) for h in b.headers) + " |")
                out.append("|" + "|".join("---" for _ in b.headers) + "|")
                out += ["| " + " | ".join(md_escape(c) for c in row) + " |" for row in b.rows]
                out.append("")
            elif b.kind == "plot":
                out += [f"![{md_escape(b.text)}]({plots[b.plot].relative_to(root).as_posix()})", ""]
            elif b.kind == "code":
                fence = _fence(b.text)
                out += [fence + b.lang, b.text.rstrip("\n"), fence, ""]
    return "\n".join(out)


# --- HTML ---------------------------------------------------------------------------------------------------

_ENV = Environment(loader=PackageLoader("alignmix.data_cards", "templates"), autoescape=select_autoescape(["html", "j2"]))
_BASE64 = re.compile(r"^[A-Za-z0-9+/=]*$")


def render_html(card: dict[str, Any], sections: list[Section], plots: dict[str, Path], meta: dict[str, Any]) -> str:
    images = {}
    for key, path in plots.items():
        data = base64.b64encode(path.read_bytes()).decode("ascii")
        assert _BASE64.match(data)
        images[key] = data
    template = _ENV.get_template("card.html.j2")
    return template.render(card=card, sections=sections, images=images,
                           meta_yaml=yaml.safe_dump(meta, sort_keys=False, allow_unicode=True))


# --- terminal -----------------------------------------------------------------------------------------------


def render_terminal(card: dict[str, Any], sections: list[Section], plots: dict[str, Path], console: Any) -> None:
    """Print the card with rich: a rule per section, tables as tables, plots named by their file."""
    from rich.markup import escape
    from rich.syntax import Syntax
    from rich.table import Table

    console.rule(f"[bold]{escape(card['manifest']['name'])}[/] data card")
    for sec in sections:
        console.rule(escape(sec.title), style="cyan", align="left")
        for b in sec.blocks:
            if b.kind == "p":
                console.print(escape(b.text), highlight=False)
            elif b.kind == "table":
                t = Table(*[escape(h) for h in b.headers], show_lines=False, header_style="bold")
                for row in b.rows:
                    t.add_row(*[escape("-" if c is None else str(c)) for c in row])
                console.print(t)
            elif b.kind == "plot":
                console.print(f"[dim]plot: {escape(str(plots[b.plot]))}[/]", highlight=False)
            elif b.kind == "code":
                console.print(Syntax(b.text, b.lang or "text", word_wrap=True))
