"""Raw against length-controlled win rates of every round in a run_loop database.

    DATABASE_URL=sqlite:///var/loop.sqlite3 DEBUG=1 python benchmarks/loop_length_control.py

For each trained round, its new policy against its parent and against the base of the lineage, on
the blind held-out comparisons that round queued (simulated judgments included, as run_loop counts
them): the raw win rate (ties half) with its 95% bootstrap interval, and the length-controlled one
(``training.leaderboard.controlled_head_to_head``) with the judges' length coefficient.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")


def main() -> None:
    import django

    django.setup()
    from generation.models import Policy
    from training.leaderboard import controlled_head_to_head, head_to_head, policy_games
    from training.models import Evaluation, TrainingRound

    print(
        f"command: python benchmarks/loop_length_control.py (DATABASE_URL={os.environ.get('DATABASE_URL')})"
    )
    base = Policy.objects.filter(parent__isnull=True).order_by("id").first()
    for training_round in TrainingRound.objects.filter(output_policy__isnull=False).order_by("id"):
        new = training_round.output_policy
        for opponent in dict.fromkeys([training_round.policy, base]):
            evaluations = Evaluation.objects.filter(
                training_round=training_round, policy=new, opponent=opponent
            )
            games = policy_games(include_simulated=True, evaluations=evaluations)
            if not games:
                continue
            raw = head_to_head(games, policy=new.pk, opponent=opponent.pk)
            lc = controlled_head_to_head(games, policy=new.pk, opponent=opponent.pk)
            print(
                f"round {training_round.pk}: {new.name} over {opponent.name}: raw {raw.rate:.3f} "
                f"[{raw.low:.3f}, {raw.high:.3f}] ({raw.wins}/{raw.ties}/{raw.losses}); length-controlled "
                f"{lc['rate']:.3f} [{lc['low']:.3f}, {lc['high']:.3f}], length coefficient {lc['length_coefficient']:.2f}"
            )


if __name__ == "__main__":
    main()
