"""The time budget of a code-competition notebook: what to drop when the test set would overrun.

After its first batches ``make predict`` knows the seconds per image of decoding and of each
(member, view) over the member's folds. When the rest of the test set would not fit in the time
left (``TIME_LIMIT`` less a margin), ``drops`` names what to leave out: first TTA views (a
member whose ensemble view is the mean of its views keeps its first view), weakest member first,
then whole members, weakest first, down to one.
"""

from __future__ import annotations

DEFAULT_LIMIT = "9h"  # Kaggle's notebook limit for most code competitions


def margin_for(limit: float) -> float:
    """Seconds kept back from ``limit`` for start-up, blending and writing: 5 % plus 2 minutes
    (27 min of 9 h), never more than half the limit."""
    return min(0.05 * limit + 120.0, 0.5 * limit)


def drops(
    costs: dict[tuple[str, str], float],
    decode: float,
    n_left: int,
    seconds_left: float,
    tta_views: dict[str, tuple[str, ...]],
    weakest_first: list[str],
) -> list[tuple[str, str]]:
    """What to leave out so that ``n_left`` more images fit in ``seconds_left``.

    ``costs``: seconds per image of each ``(run, view)`` (all folds); ``decode``: seconds per
    image of decoding; ``tta_views``: each member's views when its ensemble view is their mean
    (droppable down to the first). Returns ``(run, view)`` pairs, ``(run, "*")`` for a whole
    member, in the order they are dropped; empty when everything fits."""
    kept = dict(costs)

    def fits() -> bool:
        return n_left * (decode + sum(kept.values())) <= seconds_left

    out: list[tuple[str, str]] = []
    for run in weakest_first:
        for view in reversed(tta_views.get(run, ())[1:]):
            if fits():
                return out
            kept.pop((run, view), None)
            out.append((run, view))
    for run in weakest_first[:-1]:
        if fits():
            return out
        for key in [k for k in kept if k[0] == run]:
            kept.pop(key)
        out.append((run, "*"))
    return out
