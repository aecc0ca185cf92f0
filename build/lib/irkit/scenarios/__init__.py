"""Recorded incidents bundled with irkit, and the deterministic generators that produce them."""
