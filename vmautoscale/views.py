from django.http import JsonResponse

from vmautoscale.health import health


def healthz(request):
    """200 when the database answers and a task cluster is running, 503 otherwise; the body says which."""
    state = health()
    return JsonResponse(state, status=200 if state["ok"] else 503)
