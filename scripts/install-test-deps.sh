#!/usr/bin/env bash
# System packages the test suite can use: Chromium, for the headless check of the HTML
# report (tests/test_report.py). Installs it with apt when running as root and it is
# missing; otherwise says why the browser tests will be skipped. Never fails the caller.
set -u
if command -v chromium >/dev/null 2>&1 || [ -x /usr/bin/chromium ]; then
    exit 0
fi
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "install-test-deps: chromium not installed and cannot install it (needs root and apt);" \
         "the headless report check will be skipped" >&2
    exit 0
fi
echo "install-test-deps: installing chromium (for the headless report check)..." >&2
export DEBIAN_FRONTEND=noninteractive
if ! { apt-get update -qq && apt-get install -y -qq chromium >/dev/null; }; then
    echo "install-test-deps: apt-get install chromium failed; the headless report check will be skipped" >&2
fi
exit 0
