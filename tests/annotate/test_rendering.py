import re
from html.parser import HTMLParser

import pytest

from annotate.rendering import markdown_html


class ActiveContent(HTMLParser):
    """Collects every element and attribute that could run script or load content."""

    DANGEROUS_TAGS = {"script", "img", "iframe", "svg", "object", "embed", "style", "link", "meta", "form"}

    def __init__(self) -> None:
        super().__init__()
        self.found: list[str] = []

    def handle_starttag(self, tag, attrs):
        if tag in self.DANGEROUS_TAGS:
            self.found.append(f"<{tag}>")
        for name, value in attrs:
            if name.startswith("on") or name in {"src", "style", "srcdoc"}:
                self.found.append(f"{tag}[{name}]")
            if name == "href" and not (value or "").lower().startswith(("http://", "https://", "mailto:")):
                self.found.append(f"{tag}[href={value}]")


def active_content(html: str) -> list[str]:
    parser = ActiveContent()
    parser.feed(html)
    return parser.found


PAYLOADS = [
    "<script>alert('x')</script>",
    "<img src=x onerror=alert(1)>",
    "[click](javascript:alert(1))",
    '<a href="javascript:alert(1)">raw link</a>',
    "![pic](javascript:alert(1))",
    "```html\n<script>alert(1)</script>\n<img src=x onerror=alert(1)>\n```",
    '<iframe src="https://evil.example"></iframe>',
    "<svg onload=alert(1)>",
    '[x](JaVaScRiPt:alert(1) "t")',
    "[x](data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==)",
]


@pytest.mark.parametrize("payload", PAYLOADS)
def test_untrusted_markdown_comes_out_inert(payload):
    assert active_content(markdown_html(payload)) == []


def test_html_inside_code_blocks_is_shown_as_text():
    html = markdown_html("```html\n<script>alert(1)</script>\n```")
    assert "&lt;" in html
    assert "script" in html
    assert "<script" not in html


def test_links_get_noopener_and_safe_markdown_survives():
    html = markdown_html("**bold** and [docs](https://example.com)\n\n```python\nprint('hi')\n```")
    assert "<strong>bold</strong>" in html
    assert 'href="https://example.com"' in html
    assert 'rel="noopener noreferrer nofollow"' in html
    assert '<code class="language-python">' in html
    assert '<span class="nb">print</span>' in html


def test_single_newlines_are_line_breaks():
    assert "<br" in markdown_html("line one\nline two")


def test_the_checker_sees_active_content_in_raw_html():
    assert active_content('<img src=x onerror=alert(1)><a href="javascript:x">y</a><script></script>') == [
        "<img>",
        "img[src]",
        "img[onerror]",
        "a[href=javascript:x]",
        "<script>",
    ]


# The review's costly shapes, each within the character caps: 1.8 s, 1.0 s and 1.0 s to format before.
COSTLY = {
    "brackets": "[" * 99_999,
    "emphasis": "*a" * 49_999,
    "table": "| a | b |\n|---|---|\n" + "| x | y |\n" * 9_000,
}


@pytest.mark.parametrize("shape", COSTLY)
def test_text_that_is_mostly_markdown_structure_is_shown_escaped_as_plain_text(shape):
    html = markdown_html(COSTLY[shape])

    assert html.startswith('<p class="muted plain-note">Shown as plain text')
    assert '<pre class="plain">' in html
    assert "<table" not in html and "<em>" not in html
    assert len(html) < 2 * len(COSTLY[shape]) + 200  # escaped once, no markup added per delimiter


def test_a_long_answer_with_ordinary_markdown_is_still_formatted():
    answer = "## Steps\n\n" + "".join(
        f"{i}. Do **this** with `code` and [a link](https://x.org).\n" for i in range(300)
    )
    answer += "\n| a | b |\n|---|---|\n" + "| 1 | 2 |\n" * 200

    html = markdown_html(answer)

    assert "<strong>this</strong>" in html and "<table>" in html and "plain-note" not in html


def test_plain_text_fallback_escapes_markup():
    html = markdown_html("<script>alert(1)</script>" + "*" * 5000)
    assert active_content(html) == []
    assert "&lt;script&gt;" in html


@pytest.mark.django_db
def test_a_stored_conversation_of_many_turns_shows_only_the_last_ones(client, annotator, settings):
    from tests.factories import ComparisonFactory, PromptFactory, ResponseFactory

    turns = [{"role": "user" if i % 2 == 0 else "assistant", "content": f"t{i}"} for i in range(100_001)]
    prompt = PromptFactory(text="", messages=turns)
    ComparisonFactory(
        prompt=prompt, response_a=ResponseFactory(prompt=prompt), response_b=ResponseFactory(prompt=prompt)
    )
    client.force_login(annotator)

    html = client.get("/annotate/").content.decode()

    assert "99901 earlier messages of this conversation not shown." in html
    assert html.count('class="turn turn-') == settings.PREFLOOP_MAX_TURNS
    assert "t100000" in html and ">t5<" not in html
    assert len(html) < 200_000  # 10 MB before


# The review's slow lexers: tads3 took 15.4 s on the 93-character block (2.7x more per two characters
# added, so hours on the 200-character one); a guessed lexer is the text's choice too.
TADS3_93 = "```tads3\n" + "/" * 40 + "\\" * 40 + "\n```"
TADS3_200 = "```tads3\n" + "/" * 93 + "\\" * 94 + "\n```"


@pytest.mark.parametrize("block", [TADS3_93, TADS3_200, "```systemd\n" + "[a]\n" * 1200 + "```"])
def test_a_fence_naming_a_language_off_the_list_is_shown_as_plain_code(block):
    html = markdown_html(block)

    assert "<pre><code" in html and "<span" not in html  # escaped, no lexer ran


def test_code_with_no_language_is_never_guessed():
    html = markdown_html("```\n#!/bin/bash\nimport os\nprint('hi')\n```")

    assert "<span" not in html and "print(" in html


def test_a_text_highlights_its_code_up_to_the_budget_then_shows_the_rest_plain():
    from annotate.rendering import MAX_HIGHLIGHTED

    block = "```python\n" + "x = 1\n" * (MAX_HIGHLIGHTED // 12) + "```\n\n"
    html = markdown_html(block + block + block)

    blocks = html.split("</pre>")
    assert "<span" in blocks[0] and "<span" not in blocks[2]  # the first within it, the third not
    assert len(blocks[2]) > MAX_HIGHLIGHTED // 12 * 5  # shown whole all the same


@pytest.mark.django_db
def test_the_arena_page_shows_the_slow_lexers_blocks_as_plain_code(client, annotator):
    from annotate.models import ArenaConversation, ArenaTurn, Side, Task, TurnStatus
    from annotate.services.campaigns import campaign_arena_pool_set, campaign_create
    from tests.factories import PolicyFactory

    campaign = campaign_arena_pool_set(
        campaign=campaign_create(name="arena", task=Task.ARENA), policies=[PolicyFactory(), PolicyFactory()]
    )
    policy_a, policy_b = campaign.arena_policies.all()
    conversation = ArenaConversation.objects.create(
        campaign=campaign, annotator=annotator, policy_a=policy_a, policy_b=policy_b, left=Side.FIRST
    )
    ArenaTurn.objects.create(
        conversation=conversation,
        number=1,
        messages=[{"role": "user", "content": TADS3_93}],
        status=TurnStatus.ANSWERED,
        text_a=TADS3_200,
        text_b=TADS3_93,
    )
    client.force_login(annotator)

    html = client.get(f"/annotate/arena/{campaign.pk}/").content.decode()

    blocks = re.findall(r'<code class="language-tads3">(.*?)</code>', html, re.S)
    assert len(blocks) == 3 and not any("<span" in block for block in blocks)
