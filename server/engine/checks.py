"""The bounds of a request that every service checks the same way (batch sizes, k, exclusions, category)."""

from __future__ import annotations

from collections.abc import Sequence

from feature_worker.validation import MAX_TEXT_LEN, check_id, check_text
from server.recommender import DEFAULT_K, DEFAULT_MAX_PER_CATEGORY, MAX_K

MAX_BATCH = 1000
MAX_EXCLUDE = 1000


def check_common(
    k: int,
    exclude: Sequence[str],
    category_prefix: str,
    violations: list[tuple[str, str]],
    max_per_category: int = 0,
) -> None:
    """Append to `violations` what is wrong with the bounds Recommend and SimilarItems share."""
    if not 0 <= k <= MAX_K:
        violations.append(("k", f"must be from 1 to {MAX_K} (0 means {DEFAULT_K}), got {k}"))
    if not -1 <= max_per_category <= MAX_K:
        violations.append(
            (
                "max_per_category",
                f"must be from 1 to {MAX_K} (0 means {DEFAULT_MAX_PER_CATEGORY}, -1 no cap), got {max_per_category}",
            )
        )
    if len(exclude) > MAX_EXCLUDE:
        violations.append(("exclude_item_ids", f"has more than {MAX_EXCLUDE} ids"))
    else:
        for i, item in enumerate(exclude):
            check_id(item, f"exclude_item_ids[{i}]", violations)
    check_text(category_prefix, "category_prefix", MAX_TEXT_LEN, violations)
