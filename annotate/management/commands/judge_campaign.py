from annotate.models import AIJudge
from annotate.services.ai_judges import judge_agreement_with_people, judge_campaign
from annotate.services.campaigns import campaign_named
from config.commands import Command as BaseCommand
from config.errors import NotFound


def _share(value: float | None) -> str:
    return "–" if value is None else f"{value:.0%}"


class Command(BaseCommand):
    help = (
        "An AI judge reads a campaign's pairs it has not judged, each in both orders, and stores its "
        "verdicts (never as a person's judgments); then prints its agreement with the people's majority. "
        "A rerun judges what is left."
    )

    def add_arguments(self, parser):
        parser.add_argument("--judge", required=True)
        parser.add_argument("--campaign", required=True)
        parser.add_argument("--limit", type=int, help="judge at most this many pairs")

    def handle(self, *args, judge, campaign, limit, **options):
        found = AIJudge.objects.filter(name=judge).first()
        if found is None:
            raise NotFound(f"no AI judge named {judge!r} (register_judge registers one)")
        target = campaign_named(campaign)

        def progress(done: int, total: int) -> None:
            if done == total or done % 10 == 0:
                self.say(f"judged {done} of {total} pairs")

        skipped: list[str] = []
        judged = judge_campaign(
            judge=found, campaign=target, limit=limit, on_progress=progress, on_skip=skipped.append
        )
        if skipped:
            self.say(f"{len(skipped)} pairs skipped, left unjudged: {skipped[-1]}")
        agreement = judge_agreement_with_people(judge=found, campaign=target)
        self.say(f"{found.name} judged {judged} pairs of {target.name!r} now")
        kappa = "–" if agreement.kappa is None else f"{agreement.kappa:.2f}"
        if agreement.kappa_interval is not None:
            low, high = agreement.kappa_interval
            kappa += f" [{low:.2f}, {high:.2f}]"
        self.say(
            f"against the people's majority on {agreement.compared} pairs: kappa {kappa}, "
            f"consistent in both orders {_share(agreement.consistency)}, calibration error "
            f"{'–' if agreement.calibration_error is None else f'{agreement.calibration_error:.2f}'}, "
            f"chose the longer answer {_share(agreement.judge_longer)} (people {_share(agreement.people_longer)})"
        )
