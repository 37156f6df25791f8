#!/usr/bin/env bash
# System packages the test suite needs that pip cannot provide, all from Debian (bookworm):
#   chromium        the dashboard browser test
#   postgresql      the service suite's second run, on PostgreSQL (ZORGPOT_TEST_DB=postgresql)
#   docker-compose  `docker-compose config -q` validates docker-compose.yml (no Docker engine needed)
#   promtool        `promtool check config|rules` validates deploy/prometheus; taken out of Debian's
#                   `prometheus` package without installing it (that would also install and start a server)
# Idempotent: does nothing when everything is there; runs `apt-get update` only when something is missing.
# Versions: Debian's stable release is the pin (it only takes security fixes). The versions the project was
# tested with are below; another version of the same release gets a notice, not a failure, because Debian
# keeps only the newest security update in its archive.
set -euo pipefail

packages=(chromium postgresql docker-compose)
tested_versions=("postgresql-15=15.18-0+deb12u1" "docker-compose=1.29.2-3" "prometheus=2.42.0+ds-5+deb12u1")
PROMTOOL=/usr/local/bin/promtool

missing=()
for pkg in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
need_promtool=0
command -v promtool >/dev/null 2>&1 || need_promtool=1

if [ ${#missing[@]} -eq 0 ] && [ $need_promtool -eq 0 ]; then
    exit 0
fi
wanted="${missing[*]}$([ $need_promtool -eq 1 ] && echo ' promtool (from prometheus)')"
if [ "$(id -u)" -ne 0 ]; then
    echo "system-deps: missing ${wanted}; not root, so not installing them." >&2
    echo "system-deps: install them yourself (sudo bash ops/system-deps.sh)," >&2
    echo "system-deps: or the tests that need them fail saying what is missing." >&2
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "system-deps: missing ${wanted} and there is no apt-get here; install them by hand." >&2
    exit 0
fi
echo "system-deps: installing ${wanted} (Debian packages)"
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
if [ ${#missing[@]} -gt 0 ]; then
    apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

if [ $need_promtool -eq 1 ]; then
    workdir="$(mktemp -d)"
    chmod 0755 "$workdir"  # apt downloads as the _apt user
    trap 'rm -rf "$workdir"' EXIT
    (cd "$workdir" && apt-get download -q prometheus)
    dpkg-deb --fsys-tarfile "$workdir"/prometheus_*.deb | tar -x -C "$workdir" ./usr/bin/promtool
    install -m 0755 "$workdir/usr/bin/promtool" "$PROMTOOL"
    echo "system-deps: $("$PROMTOOL" --version 2>&1 | head -1)"
fi

for pinned in "${tested_versions[@]}"; do
    name="${pinned%%=*}" want="${pinned#*=}"
    have="$(apt-cache policy "$name" 2>/dev/null | awk '/Installed:/ {print $2}')"
    if [ "$name" = prometheus ]; then
        have="$(apt-cache policy prometheus 2>/dev/null | awk '/Candidate:/ {print $2}')"
    fi
    if [ -n "$have" ] && [ "$have" != "(none)" ] && [ "$have" != "$want" ]; then
        echo "system-deps: notice: $name is $have here; the project was tested with $want" >&2
    fi
done
