"""A shuffled training loader that a run stopped mid-epoch can continue where it stopped.

Lightning saves the ``state_dict`` of a training loader that has one in every checkpoint and
hands it back on resuming (``ckpt_path=``); without one it resumes a mid-epoch checkpoint with a
fresh shuffle and warns that the loader is not resumable. :class:`ResumableLoader` is that state:
the epoch's shuffling seed and how many of its batches were trained on, so the resumed run
finishes the epoch with exactly the faces it had not reached yet.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sized

import torch
from torch.utils.data import DataLoader, RandomSampler


class ResumableShuffle(RandomSampler):
    """``DataLoader(shuffle=True)``'s order, draw for draw, that can also start part-way into an epoch.

    Each epoch's permutation comes from a seed drawn from torch's global generator exactly as
    ``RandomSampler`` draws it (so a run sees the same batches as with ``shuffle=True``). The seed
    is kept, for a checkpoint to carry; :meth:`resume` makes the next epoch that permutation
    again, less the faces already seen.
    """

    def __init__(self, data_source: Sized):
        super().__init__(data_source)
        #: The seed of the epoch being drawn (``None`` before the first).
        self.seed: int | None = None
        self._resume: tuple[int, int] | None = None

    def resume(self, seed: int, skip: int) -> None:
        """Make the next epoch the permutation of ``seed`` without its first ``skip`` indices."""
        self._resume = (int(seed), int(skip))

    def __iter__(self) -> Iterator[int]:
        n = len(self.data_source)
        if self._resume is not None:
            (seed, skip), self._resume = self._resume, None
        else:  # RandomSampler's own draw, from the global generator (seed_everything seeds it)
            seed, skip = int(torch.empty((), dtype=torch.int64).random_().item()), 0
        self.seed = seed
        generator = torch.Generator()
        generator.manual_seed(seed)
        yield from torch.randperm(n, generator=generator).tolist()[skip:]


class ResumableLoader(DataLoader):
    """A ``DataLoader`` Lightning treats as stateful (``state_dict``/``load_state_dict``).

    Its state is the epoch's seed and the batches trained on so far, which ``batches_done``
    reports (the data module points it at the trainer's progress; 0 between epochs). Loaders
    whose sampler Lightning replaced (DDP's distributed sampler, ``overfit_batches``) have no
    state to keep and resume as Lightning does by default.
    """

    #: Batches of the epoch in progress already trained on (0 between epochs).
    batches_done: Callable[[], int] = staticmethod(lambda: 0)

    def state_dict(self) -> dict:
        sampler = self.sampler
        if not isinstance(sampler, ResumableShuffle) or sampler.seed is None:
            return {}
        return {"seed": sampler.seed, "batches": int(self.batches_done())}

    def load_state_dict(self, state: dict) -> None:
        if isinstance(self.sampler, ResumableShuffle) and state.get("batches"):
            self.sampler.resume(state["seed"], state["batches"] * self.batch_size)
