from annotate.models import AIJudge
from annotate.services.ai_judges import ROUTE_CONFIDENCE, judge_route
from annotate.services.campaigns import campaign_named
from config.commands import Command as BaseCommand
from config.errors import NotFound


class Command(BaseCommand):
    help = (
        "People where the judge is unsure: each pair the judge read the same way in both orders with a "
        f"probability of at least --confidence (default {ROUTE_CONFIDENCE}) needs one person fewer (its "
        "overlap lowered by one, never below one); the others keep the campaign's overlap and are served first."
    )

    def add_arguments(self, parser):
        parser.add_argument("--judge", required=True)
        parser.add_argument("--campaign", required=True)
        parser.add_argument("--confidence", type=float, default=ROUTE_CONFIDENCE)

    def handle(self, *args, judge, campaign, confidence, **options):
        found = AIJudge.objects.filter(name=judge).first()
        if found is None:
            raise NotFound(f"no AI judge named {judge!r} (register_judge registers one)")
        report = judge_route(judge=found, campaign=campaign_named(campaign), confidence=confidence)
        self.say(
            f"{report.lowered} pairs need one person fewer ({report.judgments_saved} judgments no longer asked "
            f"for); {report.kept} the judge was unsure of or read differently in the two orders keep theirs and "
            "are served to people first"
        )
