"""Turn MediaWiki markup into plain prose (for the Wikipedia snippet shipped in gensim's wheel).

Good enough for calibration and perplexity text: templates, references, tables, files and
categories are dropped; links keep their label; emphasis quotes and heading marks go.
"""

from __future__ import annotations

import bz2
import html
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

_COMMENT = re.compile(r"<!--.*?-->", re.S)
_REF = re.compile(r"<ref[^>/]*/>|<ref[^>]*>.*?</ref>", re.S)
_TAG = re.compile(r"<[^>]+>")
_TABLE = re.compile(r"\{\|.*?\|\}", re.S)
_FILE_LINK = re.compile(
    r"\[\[(?:File|Image|Category):[^\[\]]*(?:\[\[[^\]]*\]\][^\[\]]*)*\]\]", re.I
)
_LINK = re.compile(r"\[\[(?:[^|\]]*\|)?([^\]]*)\]\]")
_EXT_LINK = re.compile(r"\[https?://\S+\s*([^\]]*)\]")
_EMPHASIS = re.compile(r"'{2,}")
_HEADING = re.compile(r"^=+\s*(.*?)\s*=+\s*$", re.M)
_LIST = re.compile(r"^[*#:;]+\s*", re.M)
_BLANKS = re.compile(r"\n{3,}")


_BRACES = re.compile(r"\{\{|\}\}")


def _drop_templates(text: str) -> str:
    """Remove ``{{...}}`` templates, nested ones included (an unmatched ``}}`` stays), scanning
    from one ``{{``/``}}`` to the next rather than character by character."""
    out, depth, kept_from = [], 0, 0
    for brace in _BRACES.finditer(text):
        if brace.group() == "{{":
            if not depth:
                out.append(text[kept_from : brace.start()])
            depth += 1
        elif depth:
            depth -= 1
            if not depth:
                kept_from = brace.end()
    if not depth:
        out.append(text[kept_from:])
    return "".join(out)


def wiki_to_text(markup: str) -> str:
    """Plain text of one article's markup."""
    text = _COMMENT.sub("", markup)
    text = _REF.sub("", text)
    text = _drop_templates(text)
    text = _TABLE.sub("", text)
    text = _FILE_LINK.sub("", text)
    text = _LINK.sub(r"\1", text)
    text = _EXT_LINK.sub(r"\1", text)
    text = _TAG.sub("", text)
    text = _EMPHASIS.sub("", text)
    text = _HEADING.sub(r"\1", text)
    text = _LIST.sub("", text)
    lines = [line.strip() for line in text.splitlines()]
    return html.unescape(_BLANKS.sub("\n\n", "\n".join(lines)).strip())


def iter_articles(dump: Path, min_chars: int = 200) -> Iterator[str]:
    """Plain text of each article (redirects and stubs shorter than ``min_chars`` skipped)."""
    with bz2.open(dump, "rb") as handle:
        for _, element in ET.iterparse(handle):
            if not element.tag.endswith("}text") and element.tag != "text":
                continue
            markup = element.text or ""
            element.clear()
            if markup.lstrip().upper().startswith("#REDIRECT"):
                continue
            text = wiki_to_text(markup)
            if len(text) >= min_chars:
                yield text
