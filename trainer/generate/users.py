"""The users: latent tastes (departments, favourite leaves, brands, price level, propensities) and their profiles."""

from __future__ import annotations

import math

import numpy as np

from protos.aisle.v1 import users_pb2
from trainer.generate.catalog import sample_in_leaf
from trainer.generate.model import (
    ACTIVITY_SIGMA,
    FAVOURITE_LEAVES,
    MEAN_EXTRA_SESSIONS,
    PREFERRED_BRANDS,
    ROWS_PER_BLOCK,
    CatalogArrays,
    UserArrays,
)
from trainer.taxonomy import (
    AGE_BANDS,
    AGE_LEAN,
    AGE_SHARE,
    DEPARTMENTS,
    GENDER_LEAN,
    GENDER_SHARE,
    GENDER_SUBCATEGORY_LEAN,
    GENDERS,
    LOYALTY_QUANTILES,
    LOYALTY_TIERS,
    REGION_SHARE,
    REGIONS,
    TAXONOMY,
)


def build_users(n: int, catalog: CatalogArrays, rng: np.random.Generator) -> UserArrays:
    n_leaves = len(catalog.leaves)
    age = rng.choice(len(AGE_BANDS), size=n, p=AGE_SHARE)
    gender = rng.choice(len(GENDERS), size=n, p=GENDER_SHARE)
    region = rng.choice(len(REGIONS), size=n, p=REGION_SHARE)

    # Lognormal activity: a long tail of heavy users over a majority of light ones.
    sigma = ACTIVITY_SIGMA
    activity = rng.lognormal(math.log(MEAN_EXTRA_SESSIONS) - sigma**2 / 2, sigma, n)
    sessions = 1 + rng.poisson(activity)
    # Loyalty follows activity, loosely.
    loyalty_score = np.log(activity) + rng.normal(0.0, 0.5, n)
    tier = np.searchsorted(np.quantile(loyalty_score, LOYALTY_QUANTILES), loyalty_score, side="right")

    # Department taste: Dirichlet (normalized Gammas) with a concentration leaning by age and gender.
    lean = np.ones((len(AGE_BANDS), len(GENDERS), len(DEPARTMENTS)))
    for a, band in enumerate(AGE_BANDS):
        for department, factor in AGE_LEAN[band].items():
            lean[a, :, DEPARTMENTS.index(department)] *= factor
    for g, name in enumerate(GENDERS):
        for department, factor in GENDER_LEAN.get(name, {}).items():
            lean[:, g, DEPARTMENTS.index(department)] *= factor
    concentration = 2.0 * np.array([spec.share for spec in TAXONOMY.values()]) * lean[age, gender]
    department_taste = rng.gamma(concentration)

    # Favourite leaves: drawn by department taste x the leaf's traffic within its department x gender lean.
    leaf_department = np.array([leaf.department for leaf in catalog.leaves])
    department_total = np.bincount(leaf_department, weights=catalog.leaf_share, minlength=len(DEPARTMENTS))
    within = catalog.leaf_share / department_total[leaf_department]
    leaf_lean = np.ones((len(GENDERS), n_leaves))
    for g, name in enumerate(GENDERS):
        for prefix, factor in GENDER_SUBCATEGORY_LEAN.get(name, {}).items():
            for j, leaf in enumerate(catalog.leaves):
                if leaf.path.startswith(prefix + "/"):
                    leaf_lean[g, j] *= factor
    favourite_leaf = np.empty((n, FAVOURITE_LEAVES), dtype=np.int64)
    block = max(1, ROWS_PER_BLOCK // (n_leaves * FAVOURITE_LEAVES))
    for lo in range(0, n, block):
        hi = min(n, lo + block)
        # The tiny floor keeps a row drawable when every Gamma of its departments underflowed to zero.
        weights = department_taste[lo:hi, leaf_department] * within * leaf_lean[gender[lo:hi]] + 1e-12
        cdf = np.cumsum(weights, axis=1)
        draws = rng.random((hi - lo, FAVOURITE_LEAVES)) * cdf[:, -1:]
        favourite_leaf[lo:hi] = (draws[:, :, None] >= cdf[:, None, :]).sum(axis=2)
    favourite_leaf = np.minimum(favourite_leaf, n_leaves - 1)
    favourite_cdf = np.cumsum(rng.dirichlet(np.full(FAVOURITE_LEAVES, 0.7), size=n), axis=1)

    # Preferred brands: brands of popular items in the user's favourite leaves.
    slot = rng.integers(0, FAVOURITE_LEAVES, size=(n, PREFERRED_BRANDS))
    brand_leaf = np.take_along_axis(favourite_leaf, slot, axis=1).ravel()
    preferred_brand = catalog.item_brand[sample_in_leaf(catalog, brand_leaf, rng)].reshape(
        n, PREFERRED_BRANDS
    )

    return UserArrays(
        age=age,
        gender=gender,
        region=region,
        tier=tier,
        sessions=sessions,
        favourite_leaf=favourite_leaf,
        favourite_cdf=favourite_cdf,
        preferred_brand=preferred_brand,
        price_level=rng.normal(0.0, 0.7, n),
        price_width=rng.lognormal(0.0, 0.4, n),
        p_click=rng.beta(2, 6, n),
        p_search=rng.beta(2, 4, n),
        p_cart=rng.beta(1.5, 10, n),
        p_buy=rng.beta(3, 3, n),
        p_rebuy=rng.beta(2, 2, n),
    )


def user_messages(users: UserArrays) -> list[users_pb2.User]:
    # Every generated customer consents: an unset Consent would make the whole shop non-personalized.
    consent = users_pb2.Consent(personalization=True, analytics=True)
    return [
        users_pb2.User(
            user_id=f"u{u + 1}",
            attributes={
                "age_band": AGE_BANDS[a],
                "gender": GENDERS[g],
                "loyalty_tier": LOYALTY_TIERS[t],
                "region": REGIONS[r],
            },
            consent=consent,
        )
        for u, (a, g, t, r) in enumerate(
            zip(users.age.tolist(), users.gender.tolist(), users.tier.tolist(), users.region.tolist())
        )
    ]
