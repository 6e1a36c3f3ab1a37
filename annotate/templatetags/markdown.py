from django import template
from django.utils.safestring import SafeString, mark_safe

from annotate.rendering import markdown_html

register = template.Library()


@register.filter(name="markdown")
def markdown_filter(text: str) -> SafeString:
    """Untrusted Markdown → sanitised HTML (annotate.rendering); the only mark_safe on such text."""
    return mark_safe(markdown_html(text or ""))
