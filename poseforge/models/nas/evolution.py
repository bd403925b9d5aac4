"""Evolutionary architecture search under a cost budget: OFA's and LitePose's ``EvolutionFinder``
(mit-han-lab/litepose ``arch_search/evolution.py``), deterministic for a seed.

A population of subnets within the budget is drawn at random; each generation keeps the best
``parent_ratio`` of it as parents and refills it with ``mutation_ratio`` mutated parents (every gene redrawn with
probability ``mutate_prob``) and crossovers of two parents (every gene from either), each redrawn until it
fits the budget. Fitness and cost are callables (held-out AP after BatchNorm recalibration, MACs or measured
latency: :mod:`poseforge.train.nas`), each evaluated once per distinct subnet. LitePose's defaults: population
40, 40 generations, parents 0.25, mutations 0.5, mutation probability 0.1.
"""
from __future__ import annotations

import dataclasses
import logging
import random
import time
from typing import Any, Callable

from ...errors import PoseforgeError
from .space import Subnet, SubnetSpace

__all__ = ["EvolutionSettings", "evolution_search"]

log = logging.getLogger("poseforge")


@dataclasses.dataclass(frozen=True)
class EvolutionSettings:
    """Evolution hyper-parameters (LitePose / OFA defaults); ``max_tries``: draws allowed to find one subnet
    within the budget before giving up."""

    population: int = 40
    generations: int = 40
    parent_ratio: float = 0.25
    mutation_ratio: float = 0.5
    mutate_prob: float = 0.1
    seed: int = 0
    max_tries: int = 20000

    def __post_init__(self) -> None:
        if self.population < 2 or self.generations < 0 or not 0 < self.parent_ratio <= 1 or \
                not 0 <= self.mutation_ratio <= 1 or not 0 <= self.mutate_prob <= 1 or self.max_tries < 1:
            raise PoseforgeError(f"evolution settings: expected population >= 2, generations >= 0, parent_ratio in "
                                 f"(0, 1], mutation_ratio and mutate_prob in [0, 1], got {self}")


def evolution_search(space: SubnetSpace, fitness: Callable[[Subnet], float], cost: Callable[[Subnet], float],
                     budget: float, settings: EvolutionSettings | None = None) -> dict[str, Any]:
    """The fittest subnet of ``space`` whose ``cost`` is at most ``budget`` (see the module doc).

    Returns ``{"best": {"subnet", "fitness", "cost"}, "history": [per generation: best and parents' mean
    fitness, distinct subnets scored so far, seconds], "evaluated": distinct subnets scored, "tries": draws}``.
    """
    settings = settings or EvolutionSettings()
    rng = random.Random(settings.seed)
    scores: dict[str, float] = {}
    costs: dict[str, float] = {}
    tries = 0

    def cost_of(subnet: Subnet) -> float:
        key = subnet.key()
        if key not in costs:
            costs[key] = float(cost(subnet))
        return costs[key]

    def score(subnet: Subnet) -> float:
        key = subnet.key()
        if key not in scores:
            scores[key] = float(fitness(subnet))
            log.debug(f"{key}: fitness {scores[key]:.4f}, cost {costs.get(key)}")
        return scores[key]

    smallest = space.smallest()
    if cost_of(smallest) > budget:
        raise PoseforgeError(f"no subnet fits the budget {budget:g}: the smallest subnet already costs {cost_of(smallest):g}")

    def within(draw: Callable[[], Subnet]) -> Subnet:
        nonlocal tries
        for _ in range(settings.max_tries):
            tries += 1
            subnet = draw()
            if cost_of(subnet) <= budget:
                return subnet
        raise PoseforgeError(f"no subnet within the budget {budget:g} in {settings.max_tries} draws; raise the budget "
                             f"(the smallest subnet costs {cost_of(smallest):g})")

    start = time.perf_counter()
    population = [within(lambda: space.sample(rng)) for _ in range(settings.population)]
    ranked = sorted(((score(s), i, s) for i, s in enumerate(population)), key=lambda t: (-t[0], t[1]))
    parents_size = max(1, round(settings.parent_ratio * settings.population))
    mutations = round(settings.mutation_ratio * settings.population)
    history = []
    for generation in range(settings.generations + 1):
        parents = [s for _, _, s in ranked[:parents_size]]
        history.append({"generation": generation, "best": ranked[0][0],
                        "parents_mean": sum(f for f, _, _ in ranked[:parents_size]) / len(parents),
                        "evaluated": len(scores), "seconds": round(time.perf_counter() - start, 2)})
        log.info(f"generation {generation}: best fitness {ranked[0][0]:.4f} ({ranked[0][2].key()}), "
                 f"{len(scores)} subnets scored")
        if generation == settings.generations:
            break
        def mutant(parents: list[Subnet] = parents) -> Subnet:
            return space.mutate(rng.choice(parents), rng, settings.mutate_prob)

        def cross(parents: list[Subnet] = parents) -> Subnet:
            return space.crossover(rng.choice(parents), rng.choice(parents), rng)

        children = [within(mutant) for _ in range(mutations)]
        children += [within(cross) for _ in range(settings.population - mutations)]
        # stable ranking: ties keep the earlier (parents first), so the run is reproducible
        pool = parents + children
        ranked = sorted(((score(s), i, s) for i, s in enumerate(pool)), key=lambda t: (-t[0], t[1]))
    best_fitness, _, best = ranked[0]
    return {"best": {"subnet": best, "fitness": best_fitness, "cost": cost_of(best)}, "history": history,
            "evaluated": len(scores), "tries": tries}
