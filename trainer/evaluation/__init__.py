"""``trainer evaluate``: accuracy of the serving path and of baselines on public and generated data.

``protocols`` turns a data set into training events and scored cases, ``serving`` ranks through the very
objects that answer ``RecommendationService.Recommend``, ``baselines`` holds the reference models, ``harness``
runs them all on one split and ``metrics`` and ``report`` turn their rankings into numbers.
"""
