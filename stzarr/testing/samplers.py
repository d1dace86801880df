"""The conformance suite of the :class:`~stzarr.plan.sampler.Sampler` protocol, class-based.

Every sampler's tests subclass :class:`SamplerTests` and say which samplers to check
(:meth:`SamplerTests.cases`); pytest then runs every promise of the protocol on each case, the
oracle being the plain set arithmetic of the window starts (nothing of the sampler's own code):

* each rank yields exactly ``len()`` batches, the same number on every rank (DDP never
  deadlocks);
* each batch is a non-empty 1-d int64 array of starts of the plan;
* no window is used twice in an epoch, on one rank or across ranks (ranks are disjoint), beyond
  ``max_repeats`` padding windows;
* every window is used at least once in every ``coverage_epochs`` consecutive epochs;
* a sampler built again from the same seed yields the same batches;
* :meth:`~stzarr.plan.sampler.Sampler.requests` yields the same batches, naming a block for
  every window.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np

from stzarr.plan.sampler import LoadRequest, Sampler


@dataclass(frozen=True)
class SamplerCase:
    """One sampler kind to check.

    Attributes
    ----------
    make : callable
        ``make(rank, seed)``: rank ``rank``'s sampler (of ``world_size``).
    starts : numpy.ndarray
        The windows the samplers draw from.
    world_size : int
    epochs : int
        Epochs checked.
    max_repeats : int
        Windows an epoch may use twice (padding to equal steps).
    coverage_epochs : int or None
        Every window is used in any this many consecutive epochs; None where the sampler
        promises no coverage (windows left out at random).
    seed : int
    """

    make: Callable[[int, int], Sampler]
    starts: np.ndarray
    world_size: int = 1
    epochs: int = 3
    max_repeats: int = 0
    coverage_epochs: int | None = 1
    seed: int = 0

    def samplers(self) -> list[Sampler]:
        """Every rank's sampler, from :attr:`seed`."""
        return [self.make(rank, self.seed) for rank in range(self.world_size)]

    def epoch(self, samplers: list[Sampler], epoch: int) -> list[list[np.ndarray]]:
        """The batches of every rank in ``epoch``."""
        out = []
        for sampler in samplers:
            sampler.set_epoch(epoch)
            out.append(list(sampler))
        return out


def _used(per_rank: list[list[np.ndarray]]) -> list[np.ndarray]:
    return [np.concatenate(b) if b else np.zeros(0, np.int64) for b in per_rank]


class SamplerTests:
    """Subclass, implement :meth:`cases`, and pytest checks each case against the protocol.

    The ``check_*`` methods take one case and raise ``AssertionError`` naming the broken
    promise; the ``test_*`` methods run them on every case of :meth:`cases`.
    """

    def cases(self) -> Iterable[SamplerCase]:
        """The samplers to check."""
        raise NotImplementedError

    def _each(self, check: Callable[[SamplerCase], None]) -> None:
        n = 0
        for case in self.cases():
            check(case)
            n += 1
        assert n > 0, "no sampler to check"

    # -- one promise each --------------------------------------------------------------------

    def check_is_a_sampler(self, case: SamplerCase) -> None:
        for sampler in case.samplers():
            assert isinstance(sampler, Sampler), f"{type(sampler).__name__} is not a Sampler"

    def check_yields_len_batches_on_every_rank(self, case: SamplerCase) -> None:
        samplers = case.samplers()
        checked = 0
        for epoch in range(case.epochs):
            per_rank = case.epoch(samplers, epoch)
            for rank, (sampler, batches) in enumerate(zip(samplers, per_rank, strict=True)):
                assert len(batches) == len(sampler), (
                    f"rank {rank}, epoch {epoch}: {len(batches)} batches, len() says {len(sampler)}"
                )
                checked += len(batches)
            steps = [len(s) for s in samplers]
            assert len(set(steps)) == 1, f"epoch {epoch}: ranks run different steps {steps}"
        assert checked > 0, "the samplers yielded no batch"

    def check_batches_are_int64_starts(self, case: SamplerCase) -> None:
        samplers = case.samplers()
        for epoch in range(case.epochs):
            for rank, batches in enumerate(case.epoch(samplers, epoch)):
                for b in batches:
                    assert b.ndim == 1 and b.size > 0 and b.dtype == np.int64, (
                        f"rank {rank}: a batch is {b.dtype} of shape {b.shape}, not 1-d int64"
                    )
                    assert np.isin(b, case.starts).all(), (
                        f"rank {rank}, epoch {epoch}: a batch holds an unknown start"
                    )

    def check_reproducible_from_the_seed(self, case: SamplerCase) -> None:
        first, again = case.samplers(), case.samplers()
        for epoch in range(case.epochs):
            a, b = case.epoch(first, epoch), case.epoch(again, epoch)
            for rank, (x, y) in enumerate(zip(a, b, strict=True)):
                assert len(x) == len(y) and all(
                    np.array_equal(p, q) for p, q in zip(x, y, strict=True)
                ), f"rank {rank}, epoch {epoch}: the same seed gave other batches"

    def check_each_window_once_and_ranks_disjoint(self, case: SamplerCase) -> None:
        samplers = case.samplers()
        for epoch in range(case.epochs):
            per_rank = _used(case.epoch(samplers, epoch))
            used = np.concatenate(per_rank)
            repeats = used.size - np.unique(used).size
            assert repeats <= case.max_repeats, f"epoch {epoch}: {repeats} windows used twice"
            shared = sum(np.unique(r).size for r in per_rank) - np.unique(used).size
            assert shared <= case.max_repeats, f"epoch {epoch}: ranks share {shared} windows"

    def check_every_window_covered(self, case: SamplerCase) -> None:
        if case.coverage_epochs is None:
            return
        samplers = case.samplers()
        covered: set[int] = set()
        wanted = set(case.starts.tolist())
        for epoch in range(case.epochs):
            covered.update(np.concatenate(_used(case.epoch(samplers, epoch))).tolist())
            if (epoch + 1) % case.coverage_epochs == 0:
                missed = len(wanted - covered)
                assert missed == 0, (
                    f"epochs {epoch + 1 - case.coverage_epochs}..{epoch}: "
                    f"{missed} windows never used"
                )
                covered = set()

    def check_requests_are_the_batches(self, case: SamplerCase) -> None:
        samplers = case.samplers()
        for epoch in range(case.epochs):
            per_rank = case.epoch(samplers, epoch)
            for rank, (sampler, batches) in enumerate(zip(samplers, per_rank, strict=True)):
                requests = list(sampler.requests())
                assert len(requests) == len(batches), (
                    f"rank {rank}, epoch {epoch}: {len(requests)} requests, {len(batches)} batches"
                )
                for r, b in zip(requests, batches, strict=True):
                    assert isinstance(r, LoadRequest) and np.array_equal(r.starts, b), (
                        f"rank {rank}, epoch {epoch}: a request is not its batch"
                    )
                    assert r.blocks.shape == b.shape and r.blocks.dtype == np.int64, (
                        f"rank {rank}, epoch {epoch}: a request names no block for a window"
                    )
                    assert (r.blocks >= 0).all()

    # -- what pytest runs ----------------------------------------------------------------------

    def test_is_a_sampler(self) -> None:
        self._each(self.check_is_a_sampler)

    def test_yields_len_batches_on_every_rank(self) -> None:
        self._each(self.check_yields_len_batches_on_every_rank)

    def test_batches_are_int64_starts(self) -> None:
        self._each(self.check_batches_are_int64_starts)

    def test_reproducible_from_the_seed(self) -> None:
        self._each(self.check_reproducible_from_the_seed)

    def test_each_window_once_and_ranks_disjoint(self) -> None:
        self._each(self.check_each_window_once_and_ranks_disjoint)

    def test_every_window_covered(self) -> None:
        self._each(self.check_every_window_covered)

    def test_requests_are_the_batches(self) -> None:
        self._each(self.check_requests_are_the_batches)
