from config.errors import Conflict, DomainError, NotAllowed, NotFound


class AlreadyJudged(Conflict):
    code = "already_judged"


class ComparisonFull(Conflict):
    code = "comparison_full"


class NotServed(NotAllowed):
    code = "not_served"


class ComparisonNotFound(NotFound):
    code = "comparison_not_found"


class CampaignNotFound(NotFound):
    code = "campaign_not_found"


class CampaignNotOpen(NotAllowed):
    code = "campaign_not_open"


class AlreadySkipped(Conflict):
    code = "already_skipped"


class ArenaBusy(Conflict):
    """An answer pair is still generating for this annotator, or they started turns too fast."""

    code = "arena_busy"


class TurnNotFound(NotFound):
    code = "turn_not_found"


class TurnChanged(Conflict):
    """The turn is not in the state the action needs (voted already, still generating)."""

    code = "turn_changed"


class JudgmentSteered(Conflict):
    """An arena vote the conversation went on from: it no longer changes."""

    code = "judgment_steered"


class JudgeFailed(DomainError):
    """An AI judge's endpoint could not be reached, timed out, or answered something unusable."""

    status = 502
    code = "judge_failed"
