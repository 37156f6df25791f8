#!/usr/bin/env bash
# System packages the test suite needs that pip cannot provide: Debian's Chromium for the dashboard test.
# Idempotent: does nothing when everything is there; runs `apt-get update` only when something is missing.
set -euo pipefail

packages=(chromium)
missing=()
for pkg in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done

if [ ${#missing[@]} -eq 0 ]; then
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "system-deps: missing ${missing[*]}; not root, so not installing them." >&2
    echo "system-deps: install them yourself (sudo apt-get install -y --no-install-recommends ${missing[*]})," >&2
    echo "system-deps: or the dashboard browser test will fail saying that Chromium is missing." >&2
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "system-deps: missing ${missing[*]} and there is no apt-get here; install them by hand." >&2
    exit 0
fi
echo "system-deps: installing ${missing[*]} (Debian packages)"
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q --no-install-recommends "${missing[@]}"
