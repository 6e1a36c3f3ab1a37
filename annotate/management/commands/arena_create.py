from annotate.services.campaigns import campaign_arena_pool_set, campaign_get_or_create
from config.commands import Command as BaseCommand
from generation.services import policy_named


class Command(BaseCommand):
    help = (
        "Create an arena campaign (or add to one) with a pool of policies that meet two at a time; a "
        "round's new policy joins the pools its parent is in."
    )

    def add_arguments(self, parser):
        parser.add_argument("name")
        parser.add_argument("--policy", action="append", default=[], help="a policy of the pool (repeatable)")
        parser.add_argument("--guidelines", default="", help="Markdown shown above the arena")

    def handle(self, *args, name, policy, guidelines, **options):
        campaign = campaign_get_or_create(name=name, task="arena", guidelines=guidelines)
        pool = {*campaign.arena_policies.all(), *(policy_named(p) for p in policy)}
        campaign_arena_pool_set(campaign=campaign, policies=pool)
        names = ", ".join(sorted(p.name for p in pool)) or "none yet"
        self.say(f"arena {campaign.name!r} (campaign {campaign.pk}): pool {names}")
