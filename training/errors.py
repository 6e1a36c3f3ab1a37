from config.errors import Conflict, Invalid, NotFound


class NotEnoughPairs(Invalid):
    """The policy's judged comparisons give too few preference pairs to train on."""

    code = "not_enough_pairs"


class NotTrainable(Invalid):
    """The policy's weights are not in a form the trainer loads (a GGUF file, an unmerged adapter)."""

    code = "not_trainable"


class RoundFinished(Conflict):
    code = "round_finished"


class RoundNotFound(NotFound):
    code = "round_not_found"


class RoundCancelled(Exception):
    """Raised inside the worker, between steps, when staff cancelled the running round."""


class RoundAbandoned(Exception):
    """Raised inside the worker when its round was ended meanwhile (counted as dead: no heartbeat for
    PREFLOOP_ROUND_STALE_SECONDS): the trained model is not registered."""
