"""What a member kind is: the ``Kind`` every module of ``train/kinds/`` registers one of.

The train stage, the executors, the budget planner, ``make curve`` and a student's teacher know
a member only through these methods, so a new kind (an MLP head, partial fine-tuning on cached
activations, ...) is one module here and one line in the registry (``kinds/__init__.py``).

Whatever the kind, a fold's outputs follow one contract (``train/fold.py``): ``best.pt`` holds
the whole model as ``model.backbone.create_model(recipe, n_classes)`` loads it (inference and the
Kaggle package treat every kind alike), ``oof.npz``/``test.npz`` its ``(V, n, C)`` logits under
the recipe's TTA views, and ``done.json`` an ``artifacts.FoldDone`` naming the kind.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

import numpy as np

from ...artifacts import FoldDone
from ...config import Recipe

if TYPE_CHECKING:
    import torch

    from ..context import FoldJob, TrainContext
    from .pricing import Cost, Estimate, ProbeInput


class Kind:
    """One kind of ensemble member. Subclasses set ``name`` and implement ``fit_fold`` and
    ``probe``; the other methods have the defaults most kinds want."""

    name: ClassVar[str] = ""
    # whether BUDGET's planner (EPOCHS=auto) scales this kind's epochs; a kind without epochs
    # is priced once per fold
    scales_epochs: ClassVar[bool] = False
    # the fewest of a recipe's epochs, as a fraction, the planner may give it: below that the
    # member is worth less than leaving it out (a kind that starts from a fitted head)
    min_epoch_scale: ClassVar[float] = 0.0
    # the recipe fields this kind reads; a recipe setting another one is told it is ignored
    fields: ClassVar[frozenset[str]] = frozenset()
    # whether its once-per-run pass also writes the embeddings feature members of the same
    # backbone read (so it trains before them when their estimates tie)
    writes_embeddings: ClassVar[bool] = False

    def check(self, recipe: Recipe, source: str) -> None:
        """Refuse (``RecipeError`` naming ``source``) a recipe this kind cannot train."""

    def prepare(self, ctx: TrainContext, run: str, device: torch.device) -> None:
        """What the kind builds once for all of ``run``'s folds before any job starts (the
        decode caches are built for every kind); parallel jobs then only read it."""

    def cached_once(self, comp, ws, recipe: Recipe) -> bool:
        """Whether what a run of ``recipe`` builds once (embeddings, activations) is on disk
        already, so that a re-plan prices that part at nothing."""
        return False

    def fit_fold(self, job: FoldJob) -> None:
        """Fit one fold and write its folder: ``best.pt``, ``oof.npz``, ``test.npz``,
        ``metrics.csv``, then ``done.json`` last. Resumes what a killed call left."""
        raise NotImplementedError

    def fit_all_rows(self, ctx: TrainContext, run: str, device: torch.device) -> str:
        """Where a model on every train row is cheap (a feature head), fit it once all folds
        are done and write ``<run>/full/`` (``best.pt``, ``test.npz``, ``done.json``): the
        member's test logits then come from it, its OOF logits stay the folds'. Returns the
        log line, "" when nothing was fitted (the default: the folds' mean predicts)."""
        return ""

    def fit_curve_point(self, job: FoldJob) -> None:
        """One point of ``make curve``: the fold fitted on a subset of its training rows (the
        job's context holds the subset's folds file)."""
        self.fit_fold(job)

    def probe(self, p: ProbeInput) -> Cost:
        """What one run of this kind costs on this machine, timed on the probe's sample."""
        raise NotImplementedError

    def estimate_score(self, p: ProbeInput, outputs: np.ndarray) -> Estimate | None:
        """This run's score estimated from the probe's sample (``outputs``: what the kind's
        probe computed on it), or None when the kind cannot tell from a sample (a fine-tune's
        few timed batches say nothing of its score). When every run of a plan has one, the
        planner picks the set of runs with the best blended estimate that fits the budget."""
        return None

    def holdout_reason(self, done: FoldDone, recipe: Recipe, fold: int) -> str:
        """Why this fold's model was chosen with its own held-out labels (so it cannot teach
        that fold's student), or "" when it was not."""
        if done.holdout_used:
            return "its fold model was chosen with that fold's held-out labels: retrain the run"
        return ""

    def logits_on_rows(self, comp, ws, r: Recipe, model, norm, rows, device, memo, desc: str):
        """``(V, len(rows), C)``: a trained fold ``model`` of recipe ``r`` (input normalisation
        ``norm``) on rows ``rows`` of ``comp.train`` under the recipe's views, as the fold
        predicted: what a student's teacher asks of its members' fold models. ``memo`` (a dict)
        lives as long as the caller's loop over folds: a kind keeps there what they share."""
        from ...model.infer import predict_as_trained
        from ..cache import build_cache

        cache = ws.decode_cache("train", r.image_size)
        imgs = build_cache(comp.root, comp.train["path"].tolist(), r.image_size, cache)
        return predict_as_trained(model, imgs, rows, r.tta, norm, device, r, desc)

    def ignored_fields(self, recipe: Recipe) -> list[str]:
        """Fields the recipe sets (away from their defaults) that this kind does not read."""
        if not self.fields:
            return []
        default = Recipe().to_dict()
        return [k for k, v in recipe.to_dict().items() if k not in self.fields and v != default[k]]
