"""Replay recorded closed-form choices through today's lambda search, without fitting.

A run's closed_form_choice.json keeps every fit it scored. Validation scores depend only
on the data, seed and lambda, so today's ``search_lambda`` can be run again on them: a
lambda it asks for that the run never fitted is reported (the replay cannot say what it
would have scored). Prints, per recorded choice and block, the lambda and fit count then
and now.

    python -m benchmarks.choice_replay docs/results
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from training.closed_form_choice import CHOICE_FILE
from training.lambda_search import search_lambda


class NotRecorded(Exception):
    pass


def recorded(trials: list[dict[str, float | str]], block: str, days: float) -> dict[float, float]:
    """``block``'s recorded fits, lambda -> validation score (the shared block's at
    ``days``; the markets' blocks' at their best share of the mix, as the search sees it)."""
    table: dict[float, float] = {}
    for t in trials:
        if t["block"] == block and (block == "markets" or t["days"] == days):
            lam, valid = float(t["lam"]), float(t["valid"])
            table[lam] = max(valid, table.get(lam, valid))
    return table


def replay(trials: list[dict[str, float | str]], block: str, days: float) -> tuple[float, int]:
    """Today's choice of ``block``'s lambda from recorded trials -> (lambda, fits)."""
    table = recorded(trials, block, days)
    asked: set[float] = set()

    def score(lam: float) -> float:
        asked.add(lam)
        if lam not in table:
            raise NotRecorded(f"lambda {lam:g} was never fitted")
        return table[lam]

    best, _ = search_lambda(score)
    return best, len(asked)


def main(root: Path) -> int:
    changed = 0
    for path in sorted(root.rglob(CHOICE_FILE)):
        choice = json.loads(path.read_text())
        trials = choice["trials"]
        days = choice.get("cooccurrence_days")
        days = float(trials[0]["days"]) if days is None else days
        cells = []
        for block, key in (("shared", "ease_lambda"), ("markets", "market_ease_lambda")):
            then = choice.get(key)
            if then is None:
                continue
            fits_then = len(recorded(trials, block, days))
            try:
                now, fits = replay(trials, block, days)
            except NotRecorded as missing:
                cells.append(f"{block}: {missing}")
                changed += 1
                continue
            mark = "" if now == then else "  CHANGED"
            changed += bool(mark)
            cells.append(f"{block} {then:g} ({fits_then} fits) -> {now:g} ({fits}){mark}")
        print(f"{path.parent.relative_to(root)}: {'; '.join(cells)}")
    print(f"{changed} block choice(s) differ")
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1] if len(sys.argv) > 1 else "docs/results")))
