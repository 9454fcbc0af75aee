"""Redaction by key shape (autoscaling/redaction.py): every secret-bearing field of the Alertmanager and Prometheus
configuration references, fields no list names yet, and texts that are not valid YAML."""

import difflib

from autoscaling.redaction import SECRET_MASK, redact

ALERTMANAGER = """\
global:
  smtp_auth_username: alerts
  smtp_auth_password: "SEC-smtp-password"
  smtp_auth_secret: SEC-smtp-secret
  slack_api_url: https://127.0.0.1:9/services/T0/B0/SEC-slack
  opsgenie_api_key: SEC-opsgenie
  wechat_api_secret: SEC-wechat
  telegram_api_url: http://127.0.0.1:9/SEC-telegram
receivers:
  - name: all
    email_configs:
      - to: ops@example.internal
        auth_password: SEC-email-password
    webhook_configs:
      - url: http://127.0.0.1:9/SEC-webhook-url
        http_config:
          basic_auth:
            username: bob
            password: SEC-basic
          authorization: {type: Bearer, credentials: SEC-authz}
          bearer_token: SEC-bearer
          proxy_url: http://proxyuser:SEC-proxy@127.0.0.1:3128
          oauth2:
            client_id: id
            client_secret: SEC-oauth
            token_url: http://127.0.0.1:9/token
          proxy_connect_header:
            Proxy-Authorization: [SEC-proxy-header]
          tls_config:
            key_file: /etc/alertmanager/client.key
    pagerduty_configs:
      - routing_key: SEC-routing
        service_key: |
          SEC-multiline-service-key
    pushover_configs:
      - user_key: SEC-user-key
        token: SEC-pushover-token
    discord_configs:
      - webhook_url: http://127.0.0.1:9/api/webhooks/SEC-discord
    sns_configs:
      - sigv4:
          access_key: SEC-access
          secret_key: SEC-secret-key
    future_service_configs:
      - signing_passphrase: SEC-unknown-passphrase
        "api-token": SEC-quoted-unknown
"""

PROMETHEUS = """\
scrape_configs:
  - job_name: secured
    basic_auth: {username: u, password: SEC-prom-basic}
    authorization:
      credentials_file: /etc/prometheus/token
    consul_sd_configs:
      - server: 127.0.0.1:8500
        token: SEC-consul
    openstack_sd_configs:
      - application_credential_secret: SEC-openstack
remote_write:
  - url: http://writer:SEC-userinfo@127.0.0.1:9/write
    sigv4: {region: eu, access_key: SEC-rw-access, secret_key: SEC-rw-secret}
"""


def leaked(text):
    return sorted({word for word in text.replace('"', " ").split() if "SEC-" in word})


def test_every_secret_of_both_files_is_masked_and_the_rest_kept():
    for source in (ALERTMANAGER, PROMETHEUS):
        shown = redact(source)
        assert leaked(shown) == []
        assert SECRET_MASK in shown
    shown = redact(ALERTMANAGER)
    for kept in (
        "smtp_auth_username: alerts",
        "username: bob",
        "key_file: /etc/alertmanager/client.key",
        "- name: all",
    ):
        assert kept in shown
    assert "credentials_file: /etc/prometheus/token" in redact(PROMETHEUS)


def test_diffs_and_unparsable_text_are_masked_too():
    changed = ALERTMANAGER.replace("name: all", "name: everyone")
    diff = "".join(difflib.unified_diff(ALERTMANAGER.splitlines(True), changed.splitlines(True), "a", "b", n=99))
    assert leaked(redact(diff)) == []
    broken = ALERTMANAGER + "  : this line : breaks : the YAML\n\t- [\n"
    assert leaked(redact(broken)) == []


def test_known_secrets_are_masked_anywhere_and_public_urls_are_kept():
    text = "url: http://127.0.0.1:8000/api/webhook/autoscale/web\nerror: amtool said tok-abcdef-123 is bad\n"
    shown = redact(text, known=["tok-abcdef-123"], public=["http://127.0.0.1:8000/"])
    assert "http://127.0.0.1:8000/api/webhook/autoscale/web" in shown
    assert "tok-abcdef-123" not in shown


def test_jenkins_job_xml_tokens_are_masked():
    xml = "<token>SEC-gwt</token><secretToken>SEC-other</secretToken><name>CALLBACK_TOKEN</name>"
    shown = redact(xml)
    assert leaked(shown) == [] and "<name>CALLBACK_TOKEN</name>" in shown
