"""How a state family takes more data: its resume plan, declared once per state class.

The transforms (``Train``, ``TrainEpochs``, continuous training) read the plan instead of
probing configs for fields (``getattr(config, "epochs", 1)``) or classes for flags.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["ResumePlan"]

_RESUME = ("merge", "continue")


@dataclass(frozen=True)
class ResumePlan:
    """A state family's plan for new data, rounds of replicas and epochs.

    Parameters
    ----------
    resume : {'merge', 'continue'}
        How new data extends a trained state (``Train(resume_from=...)``, ``--resume``,
        every cycle of continuous training). 'merge': the new data's own state is merged
        in (sufficient statistics: exact). 'continue': order matters, so the new rows
        train from ``old.continued()`` and ``old.followed_by(new)`` joins them: SGD models
        go on from the old parameters (merging a fresh replica would average the old
        model with an untrained one); a decaying summary forgets old rows as new ones come.
    finishes_rounds : bool
        A round is replicas that all began at one start point, each trained on its share,
        then merged; with this the merge is finished by ``finish_round(start)`` (SGD
        states that scale the merged step). Statistics states merge exactly: False.
    epochs : str, optional
        The config field that asks for passes over bounded input (gradient-trained
        families, whose models forget old data as they learn on); None: one pass.
    """

    resume: str = "merge"
    finishes_rounds: bool = False
    epochs: str | None = None

    def __post_init__(self) -> None:
        if self.resume not in _RESUME:
            raise ValueError(f"resume must be one of {list(_RESUME)}; got {self.resume!r}.")

    @property
    def continues(self) -> bool:
        """Whether new data trains on from the old state (rather than merging with it)."""
        return self.resume == "continue"

    def epochs_of(self, config: Any) -> int:
        """The passes ``config`` asks for (1 for families without epochs)."""
        return 1 if self.epochs is None else int(getattr(config, self.epochs))
