import itertools
import subprocess

import pytest

from autoscaling import services
from autoscaling.models import AutoscalingConfig, IpPool
from templates_app.models import VMTemplate

_numbers = itertools.count(1)


@pytest.fixture
def template(db):
    return VMTemplate.objects.create(name=f"tpl-{next(_numbers)}", status=VMTemplate.Status.READY)


@pytest.fixture
def pool(db):
    return IpPool.objects.create(
        name=f"pool-{next(_numbers)}",
        network="127.77.0.0/24",
        first_address="127.77.0.10",
        last_address="127.77.0.29",
        gateway="127.77.0.1",
        dns_servers=["127.0.0.53"],
        ping_check=False,
    )


@pytest.fixture
def make_config(template):
    def make(service_name=None, **fields):
        data = {
            "service_name": service_name or f"svc-{next(_numbers)}",
            "template": template,
            "enabled": True,
            "metric": "cpu",
            "threshold": 80.0,
            "duration_seconds": 30,
            "min_instances": 1,
            "max_instances": 3,
            "f5_pool": "web-pool",
            **fields,
        }
        return services.config_create(data=data)

    return make


@pytest.fixture
def monitoring(lab, lab_settings, db):
    """Settings pointed at the lab's monitoring host (sshd, Prometheus, Alertmanager) and Jenkins.

    Every test leaves the shared host as it found it: its configs are deleted and a pass pushes the empty state.
    """
    settings = lab_settings("prometheus", "sshd", "jenkins")
    yield settings
    for config in AutoscalingConfig.objects.all():
        services.config_delete(config=config)  # with its inventory (its adopted instances)
    services.provisioning_run(reason="test cleanup")


def amtool_route(lab, **labels):
    """The receiver Alertmanager's live config file routes a label set to (amtool config routes test)."""
    info = lab.info("alertmanager")
    argv = [info["amtool"], "config", "routes", "test", f"--config.file={info['config_file']}"]
    argv += [f"{key}={value}" for key, value in labels.items()]
    return subprocess.run(argv, capture_output=True, text=True, check=True).stdout.strip()
