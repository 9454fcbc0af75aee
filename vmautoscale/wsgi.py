"""WSGI entry point (gunicorn vmautoscale.wsgi)."""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "vmautoscale.settings")
application = get_wsgi_application()
