"""Untrusted Markdown (prompts, model output, guidelines) to HTML that is safe to show.

markdown-it renders with raw HTML disabled (it comes out as text); fenced code is highlighted by
Pygments; then nh3 keeps only an allow-list of tags and attributes, drops every URL scheme but
http(s) and mailto, and gives links ``rel="noopener noreferrer nofollow"``. Only the output of
``markdown_html`` may be marked safe in a template.
"""

from __future__ import annotations

from functools import lru_cache

import nh3
from markdown_it import MarkdownIt
from pygments import highlight
from pygments.formatters import HtmlFormatter
from pygments.lexers import get_lexer_by_name, guess_lexer
from pygments.util import ClassNotFound

_TAGS = {
    "p", "br", "hr", "strong", "em", "del", "s", "code", "pre", "blockquote", "ul", "ol", "li",
    "h1", "h2", "h3", "h4", "h5", "h6", "a", "table", "thead", "tbody", "tr", "th", "td", "span",
}  # fmt: skip
_ATTRIBUTES = {
    "a": {"href", "title"},
    "span": {"class"},
    "code": {"class"},
    "pre": {"class"},
    "th": {"align"},
    "td": {"align"},
    "ol": {"start"},
}
# nowrap: markdown-it wraps the spans in <pre><code class="language-..."> itself.
_FORMATTER = HtmlFormatter(nowrap=True)


def _highlight(code: str, lang: str, _attrs: str) -> str:
    try:
        lexer = get_lexer_by_name(lang) if lang else guess_lexer(code)
    except ClassNotFound:
        return ""  # markdown-it escapes and wraps it as plain code
    return highlight(code, lexer, _FORMATTER)


@lru_cache(maxsize=1)
def _markdown() -> MarkdownIt:
    # breaks: a single newline is a line break, as model output (poems, lists without markup) expects.
    return MarkdownIt("commonmark", {"html": False, "breaks": True, "highlight": _highlight}).enable(
        ["table", "strikethrough"]
    )


def markdown_html(text: str) -> str:
    """Sanitised HTML for untrusted Markdown ``text``."""
    html = _markdown().render(text)
    return nh3.clean(
        html,
        tags=_TAGS,
        attributes=_ATTRIBUTES,
        url_schemes={"http", "https", "mailto"},
        link_rel="noopener noreferrer nofollow",
        strip_comments=True,
    )


def highlight_css() -> str:
    """The stylesheet for highlighted code (written to static/css/highlight.css)."""
    return _FORMATTER.get_style_defs(".md pre")
