"""Simulated customers whose latent tastes decide what they click and buy from the answers they get.

Customer i has category tastes ``taste[i]`` (Dirichlet: most customers care about a few categories), an
engagement ``engagement[i]`` (log-normal, mean 1) and a buying propensity ``propensity[i]`` (log-normal, mean 1).
Shown item j of category c at position r, customer i clicks with probability
``base_ctr * engagement[i] * categories * taste[i, c] * decay**r`` (capped at 0.95): an item of a category they like
is clicked more, a random item at ``base_ctr * engagement[i] * decay**r`` on average. A click becomes an add-to-cart
with ``cart_rate`` and a cart a purchase with ``buy_rate * propensity[i] * (1 + lift)`` (lift: a known effect given
to one variant, 0 for the honest comparison of two serving configurations).

`offline_units` draws the same model without a server (every shown item a random one), vectorised: the A/A
false-positive check and the power figure run thousands of experiments with it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import pandas as pd

Floats = npt.NDArray[np.float64]


@dataclass(frozen=True)
class Behaviour:
    """The outcome model's constants."""

    base_ctr: float = 0.04
    decay: float = 0.9
    cart_rate: float = 0.4
    buy_rate: float = 0.5
    #: Dirichlet concentration of tastes (smaller: more focused customers).
    taste_alpha: float = 0.3
    #: Log-normal sigma of engagement and propensity (heterogeneity, which CUPED removes).
    sigma: float = 0.8


@dataclass
class Customers:
    taste: Floats  # [n, categories]
    engagement: Floats  # [n]
    propensity: Floats  # [n]
    behaviour: Behaviour

    @classmethod
    def draw(
        cls, n: int, categories: int, rng: np.random.Generator, behaviour: Behaviour = Behaviour()
    ) -> Customers:
        sigma = behaviour.sigma
        return cls(
            taste=rng.dirichlet(np.full(categories, behaviour.taste_alpha), size=n),
            engagement=rng.lognormal(-sigma * sigma / 2, sigma, size=n),
            propensity=rng.lognormal(-sigma * sigma / 2, sigma, size=n),
            behaviour=behaviour,
        )

    def click_probabilities(self, i: int, categories: list[int]) -> Floats:
        """Click probability of each shown item (by its category number), in the order shown."""
        b = self.behaviour
        taste = self.taste[i]
        positions = np.arange(len(categories))
        p: npt.NDArray[np.float64] = (  # float ** array is typed Any
            b.base_ctr
            * self.engagement[i]
            * len(taste)
            * taste[np.asarray(categories, dtype=int)]
            * b.decay**positions
        )
        return np.minimum(p, 0.95)

    def buy_probability(self, i: int, lift: float = 0.0) -> float:
        b = self.behaviour
        return float(min(0.95, b.buy_rate * self.propensity[i] * (1.0 + lift)))


def offline_units(
    n: int,
    rng: np.random.Generator,
    lift: float = 0.0,
    sessions: int = 3,
    k: int = 10,
    pre_sessions: int = 3,
    price: float = 20.0,
    behaviour: Behaviour = Behaviour(),
) -> pd.DataFrame:
    """`report.units_frame` rows of an experiment with 2 x n customers in variants "control" and "treatment"
    (treatment buys with ``lift``), every shown item a random one; pre-period behaviour from the same latent
    customers (the CUPED covariates)."""
    sigma = behaviour.sigma
    total = 2 * n
    engagement = rng.lognormal(-sigma * sigma / 2, sigma, size=total)
    propensity = rng.lognormal(-sigma * sigma / 2, sigma, size=total)
    treated = np.arange(total) >= n
    decay = behaviour.decay ** np.arange(k)
    expected_clicks = behaviour.base_ctr * decay.sum()  # per answer, for engagement 1 and random items

    def period(answers: int, lift_of: Floats) -> tuple[Floats, Floats, Floats, Floats]:
        clicks = rng.poisson(np.minimum(engagement * expected_clicks, k) * answers).astype(float)
        carts = rng.binomial(clicks.astype(int), behaviour.cart_rate).astype(float)
        buy = np.minimum(0.95, behaviour.buy_rate * propensity * (1.0 + lift_of))
        purchases = rng.binomial(carts.astype(int), buy).astype(float)
        return clicks, carts, purchases, purchases * price

    lifts = np.where(treated, lift, 0.0)
    pre = period(pre_sessions, np.zeros(total))
    clicks, carts, purchases, revenue = period(sessions, lifts)
    exposures = np.full(total, float(sessions))
    return pd.DataFrame(
        {
            "variant": np.where(treated, "treatment", "control"),
            "first_ms": np.arange(total, dtype=np.int64)[rng.permutation(total)],
            "exposures": exposures,
            "clicks": clicks,
            "ctr": clicks / exposures,
            "carted": (carts > 0).astype(float),
            "converted": (purchases > 0).astype(float),
            "revenue": revenue,
            "pre_clicks": pre[0],
            "pre_carts": pre[1],
            "pre_purchases": pre[2],
            "pre_revenue": pre[3],
        }
    )
