"""Untrusted Markdown (prompts, model output, guidelines) to HTML that is safe to show.

markdown-it renders with raw HTML disabled (it comes out as text); fenced code is highlighted by
Pygments, only for the languages in ``LEXERS`` and never guessed from the text (some of Pygments'
lexers are exponential in their input: ``tads3`` took 15 s on a 93-character block, ``systemd`` and
``autoit`` 3 s on 5,000 characters; the text names the lexer, so it may not pick one); then nh3 keeps only an allow-list of tags and attributes, drops every URL scheme but
http(s) and mailto, and gives links ``rel="noopener noreferrer nofollow"``. Only the output of
``markdown_html`` may be marked safe in a template.

Its work is bounded by structure, not only by characters: markdown-it is linear on prose but
slow on text that is mostly Markdown delimiters (99,999 ``[`` took 1.8 s, ``*a`` repeated 1.0 s, a
16,000-row table 1.0 s), so a text with more than ``MAX_MARKUP`` delimiter characters or ``MAX_LINES``
lines is shown as escaped plain text instead, with a note. Each text is rendered once per process
and reused (a page reloads, several annotators see the same answer).
"""

from __future__ import annotations

import threading
from functools import lru_cache
from html import escape

import nh3
from markdown_it import MarkdownIt
from pygments import highlight
from pygments.formatters import HtmlFormatter
from pygments.lexers import get_lexer_by_name

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


# The languages whose code is highlighted, by the names a fence may give them. Any other name, or
# none, is shown as plain code: escaped, never guessed. Each was run on adversarial input
# (benchmarks/lexers.py; Scala's, which never ended on 200 characters, is left out): none here is
# exponential, but several are quadratic on runs of quotes and backslashes (2.4-2.6 s for 20,000 characters of C#, CSS, Go or JavaScript), so a text highlights at
# most MAX_HIGHLIGHTED characters of code, its first blocks, and shows the rest plain.
LEXERS = {
    "python": "python", "py": "python", "python3": "python", "pycon": "pycon",
    "javascript": "javascript", "js": "javascript", "jsx": "javascript",
    "typescript": "typescript", "ts": "typescript",
    "json": "json", "bash": "bash", "sh": "bash", "shell": "bash", "zsh": "bash", "console": "console",
    "c": "c", "cpp": "cpp", "c++": "cpp", "java": "java", "go": "go", "rust": "rust", "rs": "rust",
    "sql": "sql", "html": "html", "xml": "xml", "css": "css", "yaml": "yaml", "yml": "yaml",
    "toml": "toml", "ruby": "ruby", "rb": "ruby", "php": "php", "kotlin": "kotlin", "swift": "swift",
    "csharp": "csharp", "cs": "csharp", "c#": "csharp", "diff": "diff", "ini": "ini",
    "dockerfile": "docker", "lua": "lua", "r": "r", "haskell": "haskell",
    "latex": "latex", "tex": "latex",
}  # fmt: skip
MAX_HIGHLIGHTED = 4000  # characters of code highlighted in one text (the worst lexer: ~0.1 s)
_budget = threading.local()  # what is left of MAX_HIGHLIGHTED for the text being rendered


def _highlight(code: str, lang: str, _attrs: str) -> str:
    name = LEXERS.get(lang.strip().lower())
    left = getattr(_budget, "left", 0)
    if name is None or len(code) > left:
        return ""  # markdown-it escapes and wraps it as plain code
    _budget.left = left - len(code)
    return highlight(code, get_lexer_by_name(name), _FORMATTER)


@lru_cache(maxsize=1)
def _markdown() -> MarkdownIt:
    # breaks: a single newline is a line break, as model output (poems, lists without markup) expects.
    return MarkdownIt("commonmark", {"html": False, "breaks": True, "highlight": _highlight}).enable(
        ["table", "strikethrough"]
    )


MAX_MARKUP = 4000  # delimiter characters ([]*_|`<>#~) beyond which a text is not formatted
MAX_LINES = 2000
_MARKUP = str.maketrans("", "", "[]*_|`<>#~")
PLAIN_NOTE = '<p class="muted plain-note">Shown as plain text: too much Markdown structure to format.</p>'


def markdown_is_bounded(text: str) -> bool:
    """Whether formatting ``text`` stays cheap (see the module's docstring)."""
    return len(text) - len(text.translate(_MARKUP)) <= MAX_MARKUP and text.count("\n") < MAX_LINES


@lru_cache(maxsize=256)
def markdown_html(text: str) -> str:
    """Sanitised HTML for untrusted Markdown ``text``; escaped plain text where formatting it would
    cost too much."""
    if not markdown_is_bounded(text):
        return f'{PLAIN_NOTE}<pre class="plain">{escape(text)}</pre>'
    _budget.left = MAX_HIGHLIGHTED
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
