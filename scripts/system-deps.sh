#!/usr/bin/env bash
# System packages the stream tests use as real peers: nginx (the documented
# proxy config) and Chromium (a browser's own EventSource). Installs them
# from Debian's packages when missing; a no-op when they are there.
set -euo pipefail
missing=()
command -v nginx >/dev/null 2>&1 || [[ -x /usr/sbin/nginx ]] || missing+=(nginx)
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v node >/dev/null 2>&1 || missing+=(nodejs npm)
if ((${#missing[@]})); then
  echo "installing ${missing[*]} (Debian packages)"
  SUDO=""; [[ $(id -u) -eq 0 ]] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
