#!/usr/bin/env bash
# Ensure the server binaries used by tests/integration and the browser used by
# tests/browser are installed.
#
# The integration fixtures start REAL prometheus / postgres / redis-server
# processes (and the alerting tests use alertmanager / amtool), and the browser
# tests drive Debian's chromium through Playwright (Playwright's own browser
# download cannot be used), so CI needs the Debian packages.  This script is
# idempotent and silent when everything is already present, so it is cheap to
# call at the start of every CI job.
#
#   root:     apt-get update (once) + install only the missing packages
#   non-root: print what is missing and the command to fix it, exit 1
#
# Debian binary names worth knowing:
#   * prometheus-alertmanager ships /usr/bin/prometheus-alertmanager, NOT
#     "alertmanager"; either name is accepted here.
#   * postgresql does not put initdb/postgres on PATH; they live in
#     /usr/lib/postgresql/<major>/bin.
#   * chromium is /usr/bin/chromium (the path tests/browser launch); its fonts
#     are only a Recommends, so fonts-liberation is named here (installs run
#     with --no-install-recommends) to keep screenshots readable.
set -euo pipefail

missing_cmds=()
missing_pkgs=()

need() { # need <what is missing> <debian package that provides it>
    local what=$1 pkg=$2
    missing_cmds+=("$what")
    case " ${missing_pkgs[*]-} " in
        *" $pkg "*) ;;
        *) missing_pkgs+=("$pkg") ;;
    esac
}

have_initdb() {
    compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null
}

check() {
    missing_cmds=()
    missing_pkgs=()
    command -v prometheus >/dev/null 2>&1 || need prometheus prometheus
    command -v promtool >/dev/null 2>&1 || need promtool prometheus
    command -v alertmanager >/dev/null 2>&1 ||
        command -v prometheus-alertmanager >/dev/null 2>&1 ||
        need alertmanager prometheus-alertmanager
    command -v amtool >/dev/null 2>&1 || need amtool prometheus-alertmanager
    command -v redis-server >/dev/null 2>&1 || need redis-server redis-server
    have_initdb || need '/usr/lib/postgresql/*/bin/initdb' postgresql
    [ -x /usr/bin/chromium ] || need /usr/bin/chromium chromium
    [ -e /usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf ] ||
        need 'Liberation fonts' fonts-liberation
}

check
if [ "${#missing_cmds[@]}" -eq 0 ]; then
    exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
    echo "missing: ${missing_cmds[*]} — install with: sudo apt-get install ${missing_pkgs[*]}" >&2
    exit 1
fi

# Debian postinst scripts start (and enable) postgresql, redis-server,
# prometheus and prometheus-alertmanager on their default ports (5432, 6379,
# 9090, 9093).  The fixtures use free ports in private temp dirs, so such
# services would not conflict, but they waste CI memory and CPU and could mask
# a fixture bug by answering on a default port.  So, unless the machine
# already has a policy (Docker images ship one that denies everything), deny
# service starts for the duration of the install via policy-rc.d, which both
# invoke-rc.d and deb-systemd-invoke honour.  The packages stay enabled, so a
# reboot would still start them; that is acceptable for throwaway CI machines.
policy=/usr/sbin/policy-rc.d
if [ ! -e "$policy" ]; then
    trap 'rm -f "$policy"' EXIT
    printf '#!/bin/sh\n# temporary, from .ci/system-packages.sh\nexit 101\n' >"$policy"
    chmod 0755 "$policy"
fi

export DEBIAN_FRONTEND=noninteractive
apt-get -o DPkg::Lock::Timeout=600 update -qq
apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends "${missing_pkgs[@]}"

check
if [ "${#missing_cmds[@]}" -ne 0 ]; then
    echo "still missing after apt-get install: ${missing_cmds[*]}" >&2
    exit 1
fi
