import factory
from django.contrib.auth import get_user_model

from annotate.models import Campaign, Choice, Comparison, Judgment, Kind, Source
from generation.models import Policy, Prompt, Response


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = get_user_model()
        django_get_or_create = ["username"]

    username = factory.Sequence(lambda n: f"annotator{n}")
    password = factory.django.Password("pw-for-tests")


class PromptFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Prompt

    text = factory.Sequence(lambda n: f"Prompt number {n}?")


class PolicyFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Policy

    name = factory.Sequence(lambda n: f"policy-{n}")
    location = factory.Sequence(lambda n: f"/models/policy-{n}")


class ResponseFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Response

    prompt = factory.SubFactory(PromptFactory)
    policy = factory.SubFactory(PolicyFactory)
    text = factory.Sequence(lambda n: f"Answer number {n}.")


class CampaignFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Campaign
        django_get_or_create = ["name"]

    name = "default"


class ComparisonFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Comparison

    campaign = factory.SubFactory(CampaignFactory)
    prompt = factory.SubFactory(PromptFactory)
    response_a = factory.SubFactory(ResponseFactory, prompt=factory.SelfAttribute("..prompt"))
    response_b = factory.SubFactory(ResponseFactory, prompt=factory.SelfAttribute("..prompt"))


class JudgmentFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Judgment
        skip_postgeneration_save = True

    comparison = factory.SubFactory(ComparisonFactory)
    annotator = factory.SubFactory(UserFactory)
    choice = Choice.FIRST
    source = Source.HUMAN

    @factory.post_generation
    def counted(self, create, extracted, **kwargs):
        """Keep the comparison's judgment count as the services do (the factory writes directly)."""
        if create:
            comparison_counts_refresh(self.comparison)


def judged_pairs(policy, n, choice=Choice.FIRST):
    """``n`` comparisons between two of ``policy``'s answers, each judged once: n preference pairs."""
    for _ in range(n):
        prompt = PromptFactory()
        JudgmentFactory(
            comparison=ComparisonFactory(
                prompt=prompt,
                response_a=ResponseFactory(prompt=prompt, policy=policy),
                response_b=ResponseFactory(prompt=prompt, policy=policy),
            ),
            choice=choice,
        )


def comparison_counts_refresh(comparison):
    """Recount a comparison's judgments (for rows tests write without the judging services)."""
    comparison.refresh_from_db()
    n = Judgment.objects.filter(comparison=comparison).count()
    Comparison.objects.filter(pk=comparison.pk).update(
        judgment_count=n, needs_judgments=comparison.kind == Kind.GOLD or n < comparison.overlap
    )
    comparison.refresh_from_db()
