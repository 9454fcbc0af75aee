#!/usr/bin/env bash
# Installs or upgrades the VM Autoscale portal on a Debian host, from this checkout:
#   system user `vmautoscale`, code in /opt/vmautoscale/app, a venv in /opt/vmautoscale/venv,
#   /etc/vmautoscale/vmautoscale.env (root, mode 600) from vmautoscale.env.template, an SSH key for the
#   monitoring host, static files, database migrations, and the systemd units (plus the nginx site).
#
# Usage: sudo scripts/deploy/install.sh [--dry-run] [--stage DIR]
#   --dry-run   print every command that would change the system, change nothing.
#   --stage DIR only copy the code that would be installed into DIR (no root needed), then stop.
#
# A first run writes the env file and stops: fill in every CHANGE-ME value, then run it again.
# Needs: python3, python3-venv, systemd, openssh-client; nginx for the reverse proxy (skipped when missing).
set -euo pipefail

PREFIX=/opt/vmautoscale
APP_DIR=$PREFIX/app
VENV_DIR=$PREFIX/venv
ETC_DIR=/etc/vmautoscale
ENV_FILE=$ETC_DIR/vmautoscale.env
SSH_DIR=$ETC_DIR/ssh
SERVICE_USER=vmautoscale
UNIT_DIR=/etc/systemd/system
NGINX_SITE=/etc/nginx/sites-available/vmautoscale.conf
NGINX_ENABLED=/etc/nginx/sites-enabled/vmautoscale.conf
UNITS=(vmautoscale-web.service vmautoscale-tasks.service)
# What a host runs: the project, its apps, the pipeline's commands, the Jenkins files and the translations. Never
# the local lab, the demo (it needs the lab), the tests (tests/ and every app's tests/) or the benchmarks.
SHIPPED=(manage.py requirements.txt README.md vmautoscale common access templates_app autoscaling fleet events dashboard pipeline
  integrations jenkins scripts locale)

DEPLOY_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
SOURCE_DIR=$(cd "$DEPLOY_DIR/../.." && pwd)
DRY_RUN=0
STAGE_DIR=

usage() { sed -n '2,12s/^# \{0,1\}//p' "${BASH_SOURCE[0]}"; }

while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) DRY_RUN=1 ;;
    --stage)
      [ $# -ge 2 ] || { echo "install.sh: --stage needs a directory" >&2; exit 2; }
      STAGE_DIR=$2
      shift
      ;;
    -h | --help) usage; exit 0 ;;
    *) echo "install.sh: unknown option $1" >&2; usage >&2; exit 2 ;;
  esac
  shift
done

say() { printf '==> %s\n' "$*"; }

# Runs a command, or only prints it (shell-quoted) in a dry run.
run() {
  if [ "$DRY_RUN" -eq 1 ]; then
    printf '+'; printf ' %q' "$@"; printf '\n'
  else
    "$@"
  fi
}

# A management command with exactly the units' environment and user (the env file is readable by root only).
# Files it creates are private to the service (umask 027) unless MANAGE_UMASK says otherwise.
manage() {
  run systemd-run --quiet --wait --pipe --collect --service-type=exec \
    --uid="$SERVICE_USER" --gid="$SERVICE_USER" \
    --property=EnvironmentFile="$ENV_FILE" \
    --property=WorkingDirectory="$APP_DIR" --property=UMask="${MANAGE_UMASK:-0027}" \
    --setenv=DJANGO_SETTINGS_MODULE=vmautoscale.settings \
    "$VENV_DIR/bin/python" "$APP_DIR/manage.py" "$@"
}

preflight() {
  if [ "$DRY_RUN" -eq 0 ] && [ "$(id -u)" -ne 0 ]; then
    echo "install.sh: run as root (or with --dry-run to see what it would do)." >&2
    exit 1
  fi
  local missing=()
  command -v python3 >/dev/null 2>&1 || missing+=(python3)
  python3 -c 'import ensurepip, venv' >/dev/null 2>&1 || missing+=(python3-venv)
  command -v systemctl >/dev/null 2>&1 || missing+=(systemd)
  command -v ssh-keygen >/dev/null 2>&1 || missing+=(openssh-client)
  if [ ${#missing[@]} -gt 0 ]; then
    echo "install.sh: missing Debian packages: apt-get install -y ${missing[*]}" >&2
    [ "$DRY_RUN" -eq 1 ] || exit 1
  fi
  for file in "${UNITS[@]}" vmautoscale-nginx.conf vmautoscale.env.template; do
    [ -f "$DEPLOY_DIR/$file" ] || { echo "install.sh: $DEPLOY_DIR/$file is missing" >&2; exit 1; }
  done
}

create_user() {
  say "System user $SERVICE_USER"
  if id -u "$SERVICE_USER" >/dev/null 2>&1; then
    echo "    exists"
  else
    run useradd --system --user-group --home-dir "$PREFIX" --no-create-home --shell /usr/sbin/nologin \
      --comment "VM Autoscale portal" "$SERVICE_USER"
  fi
}

# Copies the shipped part of the checkout (SHIPPED, without any tests/ or caches) into an existing directory.
copy_code() {
  local dest=$1
  if [ "$DRY_RUN" -eq 1 ]; then
    printf '+ tar -C %q --exclude=tests --exclude=... -cf -' "$SOURCE_DIR"
    printf ' %q' "${SHIPPED[@]}"
    printf ' | tar -C %q -xf -\n' "$dest"
  else
    tar -C "$SOURCE_DIR" --exclude=tests --exclude=__pycache__ --exclude=.pytest_cache --exclude=.ruff_cache \
      --owner=root --group=root -cf - "${SHIPPED[@]}" | tar -C "$dest" --no-same-owner -xf -
  fi
}

# Copies the code next to the live code, keeps the live var/ (database, secrets), then swaps the two.
install_code() {
  say "Code in $APP_DIR"
  run install -d -o root -g root -m 0755 "$PREFIX"
  run rm -rf "$APP_DIR.new" "$APP_DIR.old"
  run install -d -o root -g root -m 0755 "$APP_DIR.new"
  copy_code "$APP_DIR.new"
  if [ -d "$APP_DIR/var" ] || [ "$DRY_RUN" -eq 1 ]; then
    run mv "$APP_DIR/var" "$APP_DIR.new/var" || true
  fi
  if [ -d "$APP_DIR" ] || [ "$DRY_RUN" -eq 1 ]; then
    run mv "$APP_DIR" "$APP_DIR.old" || true
  fi
  run mv "$APP_DIR.new" "$APP_DIR"
  run rm -rf "$APP_DIR.old"
  # var/ holds the SQLite database and generated secrets (owner only); var/static is served by nginx.
  run install -d -o "$SERVICE_USER" -g "$SERVICE_USER" -m 0711 "$APP_DIR/var"
  run install -d -o "$SERVICE_USER" -g "$SERVICE_USER" -m 0755 "$APP_DIR/var/static"
}

install_venv() {
  say "Virtual environment $VENV_DIR"
  [ -x "$VENV_DIR/bin/python" ] || run python3 -m venv "$VENV_DIR"
  run "$VENV_DIR/bin/pip" install --quiet --disable-pip-version-check --requirement "$APP_DIR/requirements.txt"
  # The code is read-only for the service (ProtectSystem=strict): compile it now, as root.
  run "$VENV_DIR/bin/python" -m compileall -q "$APP_DIR"
}

# The env file is written once; an existing one is never overwritten (upgrades keep the operator's values).
install_env_file() {
  say "Environment file $ENV_FILE"
  run install -d -o root -g root -m 0755 "$ETC_DIR"
  if [ -f "$ENV_FILE" ]; then
    echo "    exists, kept"
    # Files written before PRODUCTION existed: a real host, so no lab defaults and the HTTPS settings on.
    if ! grep -q '^PRODUCTION=' "$ENV_FILE"; then
      echo "    adding PRODUCTION=true (every address and credential is then required)"
      [ "$DRY_RUN" -eq 1 ] || printf 'PRODUCTION=true\n' >>"$ENV_FILE"
    fi
    return 0
  fi
  if [ "$DRY_RUN" -eq 1 ]; then
    printf '+ install -o root -g root -m 600 <template with generated secrets> %q\n' "$ENV_FILE"
    return 0
  fi
  local tmp
  tmp=$(mktemp "$ETC_DIR/.vmautoscale.env.XXXXXX")
  chmod 600 "$tmp"
  while IFS= read -r line; do
    if [[ "$line" == *=@GENERATED@ ]]; then
      line="${line%@GENERATED@}$(python3 -c 'import secrets; print(secrets.token_urlsafe(48))')"
    fi
    printf '%s\n' "$line"
  done <"$DEPLOY_DIR/vmautoscale.env.template" >"$tmp"
  install -o root -g root -m 600 "$tmp" "$ENV_FILE"
  rm -f "$tmp"
}

# The portal's SSH identity for the monitoring host; the operator adds the public key and the host key there.
install_ssh_key() {
  say "SSH key for the monitoring host in $SSH_DIR"
  run install -d -o root -g "$SERVICE_USER" -m 0750 "$SSH_DIR"
  if [ -f "$SSH_DIR/id_ed25519" ]; then
    echo "    exists, kept"
  else
    run ssh-keygen -q -t ed25519 -N "" -C "vmautoscale@$(hostname -s)" -f "$SSH_DIR/id_ed25519"
    run chown "$SERVICE_USER:$SERVICE_USER" "$SSH_DIR/id_ed25519" "$SSH_DIR/id_ed25519.pub"
    run chmod 600 "$SSH_DIR/id_ed25519"
  fi
  [ -f "$SSH_DIR/known_hosts" ] || run install -o root -g "$SERVICE_USER" -m 0640 /dev/null "$SSH_DIR/known_hosts"
}

env_file_complete() {
  [ "$DRY_RUN" -eq 1 ] && return 0
  if grep -q '=CHANGE-ME$' "$ENV_FILE"; then
    echo
    echo "Edit $ENV_FILE and replace every CHANGE-ME, then run this script again:" >&2
    grep -n '=CHANGE-ME$' "$ENV_FILE" | sed 's/=CHANGE-ME$//; s/^/    line /' >&2
    echo "Install the public key $SSH_DIR/id_ed25519.pub on the monitoring host, and its host key in" >&2
    echo "$SSH_DIR/known_hosts (docs/operations-guide.md, 'Preparing the monitoring host')." >&2
    return 1
  fi
}

prepare_database() {
  say "Static files, database migrations, cache table"
  # nginx (www-data) serves these files: world-readable.
  MANAGE_UMASK=0022 manage collectstatic --noinput --verbosity 0
  manage migrate --noinput
  manage createcachetable
}

install_units() {
  say "systemd units"
  local unit
  for unit in "${UNITS[@]}"; do
    run install -o root -g root -m 0644 "$DEPLOY_DIR/$unit" "$UNIT_DIR/$unit"
  done
  run systemctl daemon-reload
  run systemctl enable "${UNITS[@]}"
  run systemctl restart "${UNITS[@]}"
}

install_nginx_site() {
  say "nginx site $NGINX_SITE"
  if ! command -v nginx >/dev/null 2>&1 && [ "$DRY_RUN" -eq 0 ]; then
    echo "    nginx is not installed: skipped (apt-get install -y nginx, then run this script again)"
    return 0
  fi
  run install -o root -g root -m 0644 "$DEPLOY_DIR/vmautoscale-nginx.conf" "$NGINX_SITE"
  if [ "$DRY_RUN" -eq 1 ] || { [ -f "$ETC_DIR/tls/portal.crt" ] && [ -f "$ETC_DIR/tls/portal.key" ]; }; then
    # Debian's stock site is the default server on port 80 and would answer instead of the redirect to HTTPS.
    if [ -L /etc/nginx/sites-enabled/default ]; then
      run rm -f /etc/nginx/sites-enabled/default
    fi
    run ln -sfn "$NGINX_SITE" "$NGINX_ENABLED"
    run nginx -t
    run systemctl reload-or-restart nginx
  else
    echo "    not enabled yet: put the certificate in $ETC_DIR/tls/portal.crt and the key in $ETC_DIR/tls/portal.key"
  fi
}

main() {
  if [ -n "$STAGE_DIR" ]; then
    mkdir -p "$STAGE_DIR"
    copy_code "$STAGE_DIR"
    say "Staged in $STAGE_DIR: the code install.sh ships"
    return 0
  fi
  [ "$DRY_RUN" -eq 1 ] && say "Dry run: nothing is changed"
  preflight
  create_user
  install_code
  install_venv
  install_env_file
  install_ssh_key
  env_file_complete || exit 3
  prepare_database
  install_units
  install_nginx_site
  say "Done. Check: systemctl status ${UNITS[*]}; curl -s http://127.0.0.1:8000/healthz"
}

main
