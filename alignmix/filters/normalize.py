"""Which text a filter looks at, and the normalization used to compare it.

A filter names a field; `text_expr` turns it into a polars expression over SFT, prompt or preference rows:

    field           preference rows                      SFT and prompt rows
    prompt          `prompt` (the last user turn)        the first user turn
    first_user      first user turn of `chosen`          first user turn of `messages`
    conversation    the whole `chosen` conversation      the whole `messages` conversation
    response        the final `chosen` turn              the final assistant turn ("" for a prompt row)
    chosen          the final `chosen` turn              -
    rejected        the final `rejected` turn            -

A prompt row has no answer yet, so its `response` is empty text: dedup never groups empty text, and response
rules (length, quality) leave prompt rows alone.
A conversation reads "user: Hi\\nassistant: Hello!".
"""

from __future__ import annotations

from typing import Literal

import polars as pl

from alignmix.pipeline.schema import RowKind

TextField = Literal["prompt", "first_user", "conversation", "response", "chosen", "rejected"]


def final_turn(column: str) -> pl.Expr:
    """The content of the last message of a conversation column (the response, for valid rows)."""
    return pl.col(column).list.last().struct.field("content")


def final_answer(column: str) -> pl.Expr:
    """The content of the last message when it is the assistant's, else null (a prompt row awaits its answer)."""
    last = pl.col(column).list.last()
    return pl.when(last.struct.field("role") == "assistant").then(last.struct.field("content"))


def first_user_turn(column: str) -> pl.Expr:
    user = pl.element().struct.field("role") == "user"
    return pl.col(column).list.eval(pl.element().filter(user).struct.field("content")).list.first()


def conversation_text(column: str) -> pl.Expr:
    turn = pl.element().struct.field("role") + pl.lit(": ") + pl.element().struct.field("content")
    return pl.col(column).list.eval(turn).list.join("\n")


def text_expr(field: TextField, kind: RowKind) -> pl.Expr:
    """The expression for `field` in rows of `kind`; a ValueError names the fields that exist."""
    conv = "chosen" if kind == "preference" else "messages"
    if field == "prompt":
        expr = pl.col("prompt") if kind == "preference" else first_user_turn(conv)
    elif field == "first_user":
        expr = first_user_turn(conv)
    elif field == "conversation":
        expr = conversation_text(conv)
    elif field == "response":
        expr = final_turn(conv) if kind == "preference" else final_answer(conv)
    elif field in ("chosen", "rejected") and kind == "preference":
        expr = final_turn(field)
    else:
        raise ValueError(
            f"text field {field!r} does not exist for {kind} rows; use one of "
            "prompt, first_user, conversation, response" + (", chosen, rejected" if kind == "preference" else "")
        )
    return expr.fill_null("")


def normalized(expr: pl.Expr) -> pl.Expr:
    """The expression form of `schema.normalize_text`: NFKC, lower case, whitespace collapsed and stripped.

    "  Hello\\u00a0  WORLD\\n" -> "hello world"
    """
    return _collapsed(expr.str.normalize("NFKC"))


def normalized_series(texts: pl.Series) -> pl.Series:
    """`normalized` on a column of text, several times faster on mostly-ASCII text: NFKC only where a row has a
    non-ASCII character (ASCII text is its own NFKC form), the same polars NFKC there, so the same result.

    >>> normalized_series(pl.Series(["  Hello\\u00a0  WORLD\\n", "\\ufb01ne"])).to_list()
    ['hello world', 'fine']
    """
    texts = texts.cast(pl.String)
    other = texts.str.contains(r"[^\x00-\x7F]").fill_null(False).arg_true()
    if other.len():
        texts = texts.scatter(other, texts.gather(other).str.normalize("NFKC"))
    return texts.to_frame("t").select(_collapsed(pl.col("t"))).to_series().alias(texts.name)


def _collapsed(expr: pl.Expr) -> pl.Expr:
    # Only runs other than a lone space are replaced (a lone space would become itself): 3x fewer writes than
    # `\s+`, the same text.
    return expr.str.to_lowercase().str.replace_all(r"\s{2,}|[^\S ]", " ").str.strip_chars()
