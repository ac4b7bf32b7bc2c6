"""A student's teacher: leak-free soft targets per fold from a finished ensemble, written before
``make train`` trains a recipe with ``teacher = "<ensemble>"`` (``targets``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from ..util.lazy import lazy_exports

if TYPE_CHECKING:
    from ..competition import Competition
    from ..workspace import Workspace

__getattr__, __dir__, __all__ = lazy_exports(
    __name__, {"teach": "targets", "fold_targets": "targets"}
)


def student_targets(
    comp: Competition, ws: Workspace, device: str
) -> Callable[[str, str, list[int]], None]:
    """The train stage's ``teach`` hook (train may not import teach: the CLI hands it in):
    ``write_targets(run, teacher, folds)`` writes student ``run``'s targets of ``teacher`` for
    ``folds`` on ``device``, resolved (and torch loaded) only when a student needs them."""

    def write_targets(run: str, teacher: str, folds: list[int]) -> None:
        from ..model.device import resolve_device
        from .targets import teach

        teach(comp, ws, resolve_device(device), run, teacher, folds)

    return write_targets
