#!/usr/bin/env bash
# Installs the Debian packages some tests talk to, when they are missing: kcat (the README's
# alert-tailing command), docker-compose (validates docker-compose.yml offline),
# prometheus-alertmanager (the forwarder's real receiver) and prometheus (promtool, for the
# alerting rules' unit tests). This script never fails: it says what it could not do. Run by
# hand, tests whose tool is missing skip with a message; `make test` and `make test-faults`
# set STREAM_MONITOR_REQUIRE_TOOLS=1, which turns those skips into failures. Entries are
# command:package.
set -u
wanted=(kcat:kcat docker-compose:docker-compose prometheus-alertmanager:prometheus-alertmanager promtool:prometheus)
missing=()
for entry in "${wanted[@]}"; do
  command -v "${entry%%:*}" >/dev/null 2>&1 || missing+=("${entry#*:}")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if ! command -v apt-get >/dev/null 2>&1; then
  echo "test tools missing (${missing[*]}) and no apt-get here: their tests fail under make test (skip when pytest runs by hand)"
  exit 0
fi
sudo=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    sudo="sudo -n"
  else
    echo "test tools missing (${missing[*]}): install them as root (apt-get install ${missing[*]}); their tests fail under make test (skip when pytest runs by hand)"
    exit 0
  fi
fi
echo "installing test tools from Debian's packages: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
if ! $sudo apt-get install -y -q --no-install-recommends "${missing[@]}" >/tmp/stream-monitor-apt.log 2>&1; then
  $sudo apt-get update -q >>/tmp/stream-monitor-apt.log 2>&1
  $sudo apt-get install -y -q --no-install-recommends "${missing[@]}" >>/tmp/stream-monitor-apt.log 2>&1 \
    || echo "could not install ${missing[*]} (see /tmp/stream-monitor-apt.log): their tests fail under make test (skip when pytest runs by hand)"
fi
exit 0
