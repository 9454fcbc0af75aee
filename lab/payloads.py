"""Alertmanager webhook notifications (payload version 4), shaped like the real captures in events/tests/payloads.

The one builder the tests, the end-to-end tests and the benchmarks post to the portal's webhook.
"""

CAPTURED_STARTS_AT = "2026-11-26T04:28:41.037Z"
CAPTURED_FINGERPRINT = "3f55c9b255a797bd"


def firing_notification(
    service,
    *,
    fingerprint=CAPTURED_FINGERPRINT,
    starts_at=CAPTURED_STARTS_AT,
    alertname=None,
    receiver=None,
    labels=None,
    annotations=None,
    generator_url="http://127.0.0.1:9090/graph",
    external_url="http://127.0.0.1:9093",
):
    """One firing alert of `service`, grouped by service and alert name as the portal's routes group them.

    `labels` are added to alertname, autoscale and service (default: severity warning); the alert's name defaults
    to ServiceCpuHigh_<service> and the receiver to the one the portal provisions, vmautoscale-<service>.
    """
    alertname = alertname or f"ServiceCpuHigh_{service}"
    all_labels = {
        "alertname": alertname,
        "autoscale": "true",
        "service": service,
        **({"severity": "warning"} if labels is None else labels),
    }
    annotations = {"summary": f"{service} avg CPU 95% > 80"} if annotations is None else annotations
    return {
        "receiver": receiver or f"vmautoscale-{service}",
        "status": "firing",
        "alerts": [
            {
                "status": "firing",
                "labels": all_labels,
                "annotations": annotations,
                "startsAt": starts_at,
                "endsAt": "0001-01-01T00:00:00Z",
                "generatorURL": generator_url,
                "fingerprint": fingerprint,
            }
        ],
        "groupLabels": {"alertname": alertname, "service": service},
        "commonLabels": dict(all_labels),
        "commonAnnotations": dict(annotations),
        "externalURL": external_url,
        "version": "4",
        "groupKey": f'{{}}/{{service="{service}"}}:{{alertname="{alertname}", service="{service}"}}',
        "truncatedAlerts": 0,
    }
