#!/usr/bin/env bash
# System packages the test suite drives for real: Debian's chromium (the chat page, through
# Playwright), nginx (the reverse-proxy tests), Node.js with npm (the openai npm package's
# tests), redis-server (resumable streams across replicas) and prometheus (the scrape test; its
# promtool checks and unit-tests deploy/prometheus/). Installs only what is missing; uses sudo
# when not root. Browser downloads are not used: Playwright runs the system chromium.
set -euo pipefail
missing=()
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || missing+=(nginx)
command -v redis-server >/dev/null 2>&1 || [ -x /usr/bin/redis-server ] || missing+=(redis-server)
command -v node >/dev/null 2>&1 || missing+=(nodejs)
command -v npm >/dev/null 2>&1 || missing+=(npm)
command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
[ ${#missing[@]} -eq 0 ] && exit 0
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
echo "installing ${missing[*]} (apt-get)"
$sudo apt-get -o DPkg::Lock::Timeout=600 update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends "${missing[@]}"
