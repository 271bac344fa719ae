#!/usr/bin/env bash
# Installs what building and testing Magrathea needs on a fresh Debian 12 machine.
# Idempotent: installs only what is missing. Runs as root (or with sudo available).
set -euo pipefail

SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi

need=()
command -v git >/dev/null || need+=(git)
command -v ssh >/dev/null || need+=(openssh-client)
command -v ssh-keygen >/dev/null || need+=(openssh-client)
command -v cc >/dev/null || need+=(gcc)
command -v curl >/dev/null || need+=(curl)
# Tests serve buildpacks and tarballs with `python3 -m http.server` on loopback.
command -v python3 >/dev/null || need+=(python3)
command -v script >/dev/null || need+=(bsdutils)
command -v tmux >/dev/null || need+=(tmux)
# The swarm tests (scripts/swarm-up.sh): network namespaces, veth pairs, a bridge.
command -v ip >/dev/null || need+=(iproute2)
command -v nsenter >/dev/null || need+=(util-linux)
# tests/acme.rs: a real ACMEv2 server with its own CA (scripts/acme-server.sh runs it).
command -v pebble >/dev/null || need+=(pebble)
command -v openssl >/dev/null || need+=(openssl)
if [ "${#need[@]}" -gt 0 ]; then
    echo "==> installing: ${need[*]}"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi
if ! command -v cargo >/dev/null; then
    echo "error: cargo (Rust toolchain) is not installed; install Rust 1.89+ first" >&2
    exit 1
fi
