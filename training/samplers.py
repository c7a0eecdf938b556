"""Size-balanced sampling (paper 004, Sec. III-C: Ouyang et al., IEEE TMI 2020, doi:10.1109/TMI.2020.2995508).

The training volumes fall into four groups by infection/lung ratio (``core.imaging.infection_burden.
sampling_group``): COVID-19 small / large, CAP small / large. The group weights are
[N_cov_large / N_cov_small, 1, 1, N_cap_small / N_cap_large], so the rare groups (COVID-19 with small
infections, CAP with large ones) are drawn as often as their common counterparts; each draw picks a
group with probability weight / sum of weights, then a volume of that group uniformly.

An empty group is never drawn. A weight whose ratio is undefined or 0 (its partner group is empty)
becomes 1, so a non-empty group is never starved.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from core.imaging.infection_burden import SAMPLING_GROUPS


def group_weights(counts: dict[str, int]) -> dict[str, float]:
    """Sec. III-C's weights for the four groups from their sizes (0 for an empty group)."""
    def ratio(numerator: str, denominator: str) -> float:
        if counts.get(denominator, 0) == 0 or counts.get(numerator, 0) == 0:
            return 1.0
        return counts[numerator] / counts[denominator]

    weights = {"covid-small": ratio("covid-large", "covid-small"), "covid-large": 1.0, "cap-small": 1.0,
               "cap-large": ratio("cap-small", "cap-large")}
    return {group: weight if counts.get(group, 0) else 0.0 for group, weight in weights.items()}


class SizeBalancedSampler:
    """Batches of training indices drawn by group weight, then uniformly inside the group; deterministic per
    (seed, epoch). An epoch draws as many volumes as the training set holds (as uniform sampling sees)."""

    def __init__(self, groups: Sequence[str], seed: int = 0):
        unknown = sorted(set(groups) - set(SAMPLING_GROUPS))
        if unknown:
            raise ValueError(f"Unknown size groups {unknown}; expected {SAMPLING_GROUPS}.")
        if not len(groups):
            raise ValueError("The size-balanced sampler needs at least one training volume.")
        groups = np.asarray(groups)
        self.members = {group: np.flatnonzero(groups == group) for group in SAMPLING_GROUPS}
        self.counts = {group: len(members) for group, members in self.members.items()}
        self.weights = group_weights(self.counts)
        total = sum(self.weights.values())
        self.probabilities = {group: weight / total for group, weight in self.weights.items()}
        self.size = len(groups)
        self.seed = seed

    def draw(self, count: int, rng: np.random.Generator) -> np.ndarray:
        """``count`` training indices: a group by probability, then a member uniformly."""
        names = list(SAMPLING_GROUPS)
        picks = rng.choice(len(names), size=count, p=[self.probabilities[n] for n in names])
        out = np.empty(count, dtype=np.int64)
        for index, name in enumerate(names):
            chosen = picks == index
            if chosen.any():
                out[chosen] = self.members[name][rng.integers(0, self.counts[name], size=int(chosen.sum()))]
        return out

    def batches(self, batch: int):
        """``epoch -> list of index tensors``, the form ``training.engine.Engine.fit`` takes."""
        def for_epoch(epoch: int) -> list[torch.Tensor]:
            rng = np.random.default_rng([self.seed, epoch])
            drawn = torch.from_numpy(self.draw(self.size, rng))
            return [drawn[i:i + batch] for i in range(0, self.size, batch)]

        return for_epoch
