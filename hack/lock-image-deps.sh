#!/usr/bin/env bash
# Write operator/requirements.lock: every dependency of the image (the package and its `nvml` extra)
# pinned to one version with the sha256 of every file PyPI has for it, so the Dockerfile's
# `pip wheel --require-hashes` installs exactly these on any architecture (amd64 and arm64 wheels
# are both listed) and an air-gapped site knows what to mirror. Rerun after changing the
# dependencies in pyproject.toml; review the diff like code.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
exec "${PYTHON:-.venv/bin/python}" -m piptools compile --quiet --generate-hashes --strip-extras \
  --allow-unsafe --no-emit-index-url --no-emit-find-links --extra nvml \
  --output-file operator/requirements.lock pyproject.toml
