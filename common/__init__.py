"""The floor below the apps: what every app shares (clients built from settings, the error shape of the API).

Knows no app: nothing here imports autoscaling, events, templates_app, fleet or dashboard.
"""
