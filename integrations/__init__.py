"""Plain-Python clients, one module per external system. Nothing here imports Django.

Each client has one choke point for its I/O, takes typed inputs, returns plain dataclasses, and raises only
IntegrationError (with `permanent` true when retrying cannot help).
"""

from integrations.errors import IntegrationError

__all__ = ["IntegrationError"]
