"""operator/Dockerfile and /.dockerignore, checked without a Docker engine: what the image must be
(a pinned slim Python base, a numeric non-root user that matches the chart's runAsUser, the package
installed from the repository, `stargate-operator run` as the entrypoint) and a build context that
holds everything the package build needs. tests/e2e/test_node.py builds and runs the image for
real, on the real node."""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "operator" / "Dockerfile"


def instructions() -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            op, _, rest = line.partition(" ")
            out.append((op.upper(), rest.strip()))
    return out


def test_base_image_is_slim_and_pinned() -> None:
    ins = instructions()
    args = dict(a.split("=", 1) for op, a in ins if op == "ARG" and "=" in a)
    bases = [
        args.get(m.group(1), "") if (m := re.fullmatch(r"\$\{(\w+)\}(?: AS \w+)?", b)) else b.split()[0]
        for op, b in ins
        if op == "FROM"
    ]
    assert bases, "no FROM"
    for base in bases:
        assert re.fullmatch(r"python:3\.1[1-9][\w.]*-slim-bookworm(@sha256:[0-9a-f]{64})?", base), base


def test_runs_as_the_charts_non_root_user() -> None:
    ins = instructions()
    users = [a for op, a in ins if op == "USER"]
    assert users, "the image runs as root"
    uid, _, gid = users[-1].partition(":")
    assert uid.isdigit() and int(uid) != 0, "USER must be numeric for runAsNonRoot"
    values = yaml.safe_load((ROOT / "helm" / "stargate-operator" / "values.yaml").read_text())
    assert values["podSecurityContext"]["runAsUser"] == int(uid)
    assert values["podSecurityContext"]["runAsGroup"] == int(gid)


def test_entrypoint_is_the_operator() -> None:
    (entry,) = [a for op, a in instructions() if op == "ENTRYPOINT"]
    assert json.loads(entry) == ["stargate-operator", "run"]
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "stargate-operator" in pyproject["project"]["scripts"]


def test_build_context_holds_what_the_package_build_needs() -> None:
    """The COPY lines bring in every file pyproject.toml refers to, and /.dockerignore lets them in."""
    copied = set()
    for op, arg in instructions():
        if op == "COPY" and "--from" not in arg:
            *sources, _dest = arg.split()
            copied |= set(sources)
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    needed = {"pyproject.toml", pyproject["project"]["readme"]}
    needed |= {w.rstrip("/") for w in pyproject["tool"]["setuptools"]["packages"]["find"]["where"]}
    assert needed <= copied, f"not copied into the build: {needed - copied}"
    rules = [
        r.strip()
        for r in (ROOT / ".dockerignore").read_text().splitlines()
        if r.strip() and not r.startswith("#")
    ]
    assert rules[0] == "*", "the context is an allow-list"
    allowed = {r[1:].rstrip("/") for r in rules if r.startswith("!")}
    assert needed <= allowed, f".dockerignore keeps out {needed - allowed}"
    for path in needed:
        assert (ROOT / path).exists(), path


def test_dependencies_come_from_the_lock_file_with_hashes() -> None:
    """pip checks every dependency against operator/requirements.lock's sha256 (reproducible, and what
    an air-gapped site mirrors), and the lock pins every dependency of the package and its nvml extra."""
    runs = " ".join(a for op, a in instructions() if op == "RUN")
    assert "--require-hashes -r operator/requirements.lock" in runs
    assert "syntax=" not in DOCKERFILE.read_text().splitlines()[0], "a # syntax= line pulls a frontend"
    lock = (ROOT / "operator" / "requirements.lock").read_text()
    pins = dict(re.findall(r"^([A-Za-z0-9_.-]+)==(\S+) \\$", lock, re.M))
    blocks = re.split(r"\n(?=[A-Za-z0-9_.-]+==)", lock)
    assert all("--hash=sha256:" in b for b in blocks if "==" in b.split("\n")[0])
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    wanted = [*pyproject["project"]["dependencies"], *pyproject["project"]["optional-dependencies"]["nvml"]]

    def norm(name: str) -> str:
        return re.sub(r"[-_.]+", "-", name).lower()

    pinned = {norm(n) for n in pins}
    for requirement in wanted:
        name = norm(re.match(r"[A-Za-z0-9_.-]+", requirement).group(0))  # type: ignore[union-attr]
        assert name in pinned, f"{name} is not in operator/requirements.lock: run hack/lock-image-deps.sh"
