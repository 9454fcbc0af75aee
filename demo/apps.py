from django.apps import AppConfig


class DemoConfig(AppConfig):
    """The demo of `make run`: installed only with the lab (settings.DEMO_ENABLED), never on a real host."""

    name = "demo"
