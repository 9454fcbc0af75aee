"""The local lab of real systems and stand-ins; see lab/core.py."""
