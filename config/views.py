from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render

from annotate.models import Comparison, Judgment
from generation.models import Policy, Prompt


@login_required
def landing(request: HttpRequest) -> HttpResponse:
    """Where logging in leads (unless ``?next=`` says otherwise): staff to the dashboard, annotators
    to the judging page."""
    return redirect("training:dashboard" if request.user.is_staff else "annotate:queue")


@login_required
def home(request: HttpRequest) -> HttpResponse:
    counts = {
        "prompts": Prompt.objects.count(),
        "policies": Policy.objects.count(),
        "comparisons": Comparison.objects.count(),
        "judgments": Judgment.objects.count(),
        "mine": Judgment.objects.filter(annotator=request.user).count(),
    }
    return render(request, "home.html", {"counts": counts})
