"""Reliability catalogue: hostile inputs get typed, actionable errors; state is transactional."""
