"""From candidates to an answer: blend scores, apply business rules, backfill, explain."""
