#!/usr/bin/env bash
# Installs the Debian packages the lab and the tests need, when they are missing.
set -euo pipefail

need=()
have() { command -v "$1" >/dev/null 2>&1; }
have prometheus || need+=(prometheus)
have prometheus-alertmanager || need+=(prometheus-alertmanager)
have amtool || need+=(prometheus-alertmanager)
have promtool || need+=(prometheus)
have prometheus-node-exporter || need+=(prometheus-node-exporter)
[ -x /usr/sbin/sshd ] || need+=(openssh-server)
have go || need+=(golang-go)
[ -d /usr/share/gocode/src/github.com/vmware/govmomi ] || need+=(golang-github-vmware-govmomi-dev)
have ping || need+=(iputils-ping)
have ssh-keygen || need+=(openssh-client)
# The Jenkinsfile syntax check (tests/pipeline/test_jenkinsfile.py) parses it with Groovy.
have groovy || need+=(groovy)
have curl || need+=(curl)
# Translations: makemessages / compilemessages and tests/test_i18n.py use GNU gettext.
have msgfmt || need+=(gettext)
# Browser tests (headless Chromium driven by selenium through Debian's chromedriver).
[ -x /usr/bin/chromium ] || need+=(chromium)
[ -x /usr/bin/chromedriver ] || need+=(chromium-driver)
# A Korean font, or Chromium draws boxes for Hangul (browser tests, docs/img/screenshots.py); fc-list is fontconfig's.
have fc-list || need+=(fontconfig)
{ have fc-list && [ -n "$(fc-list :lang=ko family)" ]; } || need+=(fonts-noto-cjk)
# scripts/deploy/ checks (tests/test_deploy.py): systemd-analyze verify, nginx -t, shellcheck, a test certificate.
have systemd-analyze || need+=(systemd)
[ -x /usr/sbin/nginx ] || need+=(nginx)
have shellcheck || need+=(shellcheck)
have openssl || need+=(openssl)
if [ -n "${VMAS_EXTRA_APT:-}" ]; then need+=($VMAS_EXTRA_APT); fi

[ ${#need[@]} -eq 0 ] && exit 0
mapfile -t need < <(printf '%s\n' "${need[@]}" | sort -u)
if [ "$(id -u)" -ne 0 ]; then
  echo "The lab needs Debian packages that are missing. As root, run:" >&2
  echo "  apt-get update && apt-get install -y ${need[*]}" >&2
  exit 1
fi
echo "Installing Debian packages: ${need[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
