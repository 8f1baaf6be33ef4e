"""Team-draft interleaving (Radlinski, Kurup and Joachims 2008): one answer from two rankings.

Each round, the team with fewer picks so far (a fair coin when even) adds its highest-ranked item not yet taken.
Every item remembers the team that contributed it; a click credits that team. Per answer, the team with more
credited clicks wins; over many answers, the share of wins says which ranking users prefer, with far fewer
users than an A/B test needs (`trainer.experiments.report`).
"""

from __future__ import annotations

import random
from collections.abc import Sequence


def team_draft(a: Sequence[str], b: Sequence[str], k: int, rng: random.Random) -> tuple[list[str], list[int]]:
    """Up to ``k`` item ids from rankings ``a`` and ``b``, and per item the team (0: a, 1: b) that picked it.

    Deterministic for a seeded ``rng``. When one ranking runs out, the other fills the rest.
    """
    taken: set[str] = set()
    out: list[str] = []
    teams: list[int] = []
    picks = [0, 0]
    cursor = [0, 0]
    rankings = (a, b)

    def next_new(team: int) -> str | None:
        ranking = rankings[team]
        while cursor[team] < len(ranking) and ranking[cursor[team]] in taken:
            cursor[team] += 1
        return ranking[cursor[team]] if cursor[team] < len(ranking) else None

    while len(out) < k:
        team = 0 if picks[0] < picks[1] else 1 if picks[1] < picks[0] else rng.randrange(2)
        item = next_new(team)
        if item is None:  # this team has nothing new: the other one fills, if it can
            team = 1 - team
            item = next_new(team)
            if item is None:
                break
        taken.add(item)
        out.append(item)
        teams.append(team)
        picks[team] += 1
    return out, teams
