"""Container images for the single-node cluster of tests/e2e, built here: nothing comes from a registry.

- a **Debian bookworm base with Python 3.11**, made by debootstrap from Debian's packages, cached as
  a root-filesystem tarball under ``~/.cache/stargate-operator/images/``;
- a **pause image** (the pod sandbox): a static C program of a few lines (``pause.c`` beside this
  module), compiled with the host's gcc and cached;
- the **operator image**, built from ``operator/Dockerfile`` on that base by BuildKit in Debian's
  ``dockerd`` (started here with a data root in the cache, so a second build reuses its layers).

The images leave Docker as ``docker save`` archives, which ``ctr images import`` reads.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from stargate_operator.localcp.binaries import cache_root

# Bumped whenever the way an image is made changes, so that an older cached one is not reused.
BASE_REVISION = "1"
PAUSE_REVISION = "1"
DEBIAN_SUITE = "bookworm"
BASE_IMAGE = "stargate.local/python:3.11-bookworm"
PAUSE_IMAGE = "stargate.local/pause:3.10"
OPERATOR_IMAGE_REPOSITORY = "stargate.local/stargate-operator"
# Packages of the base besides debootstrap's minimal set: Python 3.11 and pip for the Dockerfile's
# `pip install`, the CA certificates for pip's TLS, passwd for its `useradd`.
BASE_PACKAGES = ("python3", "python3-pip", "python3-venv", "ca-certificates", "passwd")
_REPO_ROOT = Path(__file__).resolve().parents[4]
_DOCKER = "/usr/bin/docker"  # Debian's docker.io client: it speaks BuildKit without buildx
_DOCKERD = "/usr/sbin/dockerd"


class ImageError(RuntimeError):
    """An image could not be built; the message says what is missing."""


def _log(msg: str) -> None:
    print(f"[node-images] {msg}", file=sys.stderr, flush=True)


def images_dir() -> Path:
    d = cache_root() / "images"
    d.mkdir(parents=True, exist_ok=True)
    return d


@contextlib.contextmanager
def _locked(name: str) -> Iterator[None]:
    with open(images_dir() / f".{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _run(args: list[str], what: str, **kw: object) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(args, capture_output=True, text=True, **kw)  # type: ignore[call-overload]
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-30:])
        raise ImageError(f"{what} failed ({' '.join(args[:4])} ...):\n{tail}")
    return proc  # type: ignore[no-any-return]


def debian_mirror() -> str:
    """The host's Debian mirror (its apt sources), so that debootstrap uses what apt uses."""
    for path in (Path("/etc/apt/sources.list.d/debian.sources"), Path("/etc/apt/sources.list")):
        with contextlib.suppress(OSError):
            for line in path.read_text().splitlines():
                words = line.split()
                if words[:1] == ["URIs:"] and len(words) > 1 and "security" not in words[1]:
                    return words[1]
                if words[:1] == ["deb"] and len(words) > 2 and "security" not in words[1]:
                    return words[1] if words[1].startswith("http") else words[2]
    return "http://deb.debian.org/debian"


def ensure_base_rootfs() -> Path:
    """The base's root filesystem as a tarball (debootstrap, once; minutes the first time)."""
    target = images_dir() / f"python3.11-{DEBIAN_SUITE}-r{BASE_REVISION}.tar"
    if target.exists():
        return target
    if shutil.which("debootstrap") is None:
        raise ImageError("debootstrap is not installed; run hack/install-node-deps.sh")
    with _locked("base"):
        if target.exists():
            return target
        started = time.monotonic()
        with tempfile.TemporaryDirectory(prefix="sg-rootfs-", dir=images_dir()) as tmp:
            root = Path(tmp) / "rootfs"
            _log(f"debootstrap {DEBIAN_SUITE} with {', '.join(BASE_PACKAGES)} (first time only)")
            _run(["debootstrap", "--variant=minbase", f"--include={','.join(BASE_PACKAGES)}",
                  DEBIAN_SUITE, str(root), debian_mirror()], "debootstrap", timeout=1800)
            # An image, not a system: pip installs into it (no PEP 668 marker), and apt's lists and
            # caches are dropped as the official slim images drop them.
            for marker in (root / "usr/lib").glob("python3*/EXTERNALLY-MANAGED"):
                marker.unlink()
            for junk in ("var/cache/apt/archives", "var/lib/apt/lists", "var/log"):
                for p in (root / junk).glob("*"):
                    if p.is_file():
                        p.unlink()
            # The building host's CA bundle: where the host reaches the package index through a TLS
            # proxy of its own, pip in the build must trust that proxy as the host does.
            host_bundle = Path("/etc/ssl/certs/ca-certificates.crt")
            if host_bundle.exists():
                shutil.copyfile(host_bundle, root / "etc/ssl/certs/ca-certificates.crt")
            (root / "usr/bin/python").unlink(missing_ok=True)
            (root / "usr/bin/python").symlink_to("python3")
            partial = target.with_suffix(".partial")
            _run(["tar", "--numeric-owner", "-C", str(root), "-cf", str(partial), "."], "tar rootfs")
            partial.rename(target)
        _log(f"base root filesystem ready in {time.monotonic() - started:.0f}s: {target}")
    return target


def ensure_pause_binary() -> Path:
    """``pause``: sleeps until a signal ends it and reaps orphans (the sandbox's PID 1)."""
    target = images_dir() / f"pause-r{PAUSE_REVISION}"
    if target.exists():
        return target
    cc = shutil.which("gcc") or shutil.which("cc")
    if cc is None:
        raise ImageError("gcc is needed to build the pause image; run hack/install-node-deps.sh")
    with _locked("pause"):
        if not target.exists():
            partial = target.with_suffix(".partial")
            _run([cc, "-Os", "-static", "-o", str(partial), str(Path(__file__).with_name("pause.c"))],
                 "compiling pause.c")
            partial.rename(target)
    return target


class DockerDaemon:
    """Debian's dockerd, started for a build with its data in the cache and stopped after it.

    No bridge, no iptables rules of its own (builds use the host's network, as pip needs)."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        self.socket = run_dir / "docker.sock"
        self._proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> DockerDaemon:
        for exe in (_DOCKERD, _DOCKER):
            if not os.access(exe, os.X_OK):
                raise ImageError(f"{exe} is missing; run hack/install-node-deps.sh (Debian's docker.io)")
        self.run_dir.mkdir(parents=True, exist_ok=True)
        data = cache_root() / "docker"
        log = (self.run_dir / "dockerd.log").open("ab")
        self._proc = subprocess.Popen(
            [_DOCKERD, f"--data-root={data}", f"--exec-root={self.run_dir / 'exec'}",
             f"--pidfile={self.run_dir / 'dockerd.pid'}", f"--host=unix://{self.socket}",
             "--bridge=none", "--iptables=false", "--ip-masq=false", "--ip-forward=false",
             "--storage-driver=overlay2"],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
        )
        log.close()
        deadline = time.monotonic() + 60
        while self.docker("version", check=False).returncode != 0:
            if self._proc.poll() is not None or time.monotonic() > deadline:
                self.__exit__(None, None, None)
                log_text = (self.run_dir / "dockerd.log").read_text(errors="replace")
                raise ImageError("dockerd did not start:\n" + "\n".join(log_text.splitlines()[-20:]))
            time.sleep(0.3)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._proc is not None and self._proc.poll() is None:
            os.killpg(self._proc.pid, signal.SIGTERM)
            try:
                self._proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self._proc.pid, signal.SIGKILL)
                self._proc.wait()
        self._proc = None

    def docker(self, *args: str, check: bool = True, **kw: object) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "DOCKER_HOST": f"unix://{self.socket}", "DOCKER_BUILDKIT": "1"}
        cmd = [_DOCKER, *args]
        if not check:
            return subprocess.run(cmd, capture_output=True, text=True, env=env)
        return _run(cmd, f"docker {args[0]}", env=env, **kw)

    def has_image(self, ref: str) -> bool:
        return self.docker("image", "inspect", ref, check=False).returncode == 0


def _import_rootfs(d: DockerDaemon, tarball: Path, ref: str, *changes: str) -> None:
    args = ["import"]
    for c in changes:
        args += ["--change", c]
    d.docker(*args, str(tarball), ref, timeout=600)


def build_images(run_dir: Path, tag: str, out_dir: Path) -> dict[str, Path]:
    """Build the pause and operator images; return ``docker save`` archives by image reference."""
    base = ensure_base_rootfs()
    pause = ensure_pause_binary()
    out: dict[str, Path] = {}
    with DockerDaemon(run_dir) as d:
        base_ref = f"{BASE_IMAGE}-r{BASE_REVISION}"
        if not d.has_image(base_ref):
            _import_rootfs(d, base, base_ref, "ENV LANG=C.UTF-8", 'CMD ["python3"]')
        if not d.has_image(PAUSE_IMAGE + f"-r{PAUSE_REVISION}"):
            with tempfile.TemporaryDirectory() as tmp:
                shutil.copy(pause, Path(tmp) / "pause")
                _run(["tar", "--owner=0", "--group=0", "-C", tmp, "-cf", f"{tmp}/pause.tar", "pause"],
                     "tar pause")
                _import_rootfs(d, Path(tmp) / "pause.tar", PAUSE_IMAGE + f"-r{PAUSE_REVISION}",
                               'ENTRYPOINT ["/pause"]', "USER 65535:65535")
        d.docker("tag", PAUSE_IMAGE + f"-r{PAUSE_REVISION}", PAUSE_IMAGE)
        operator_ref = f"{OPERATOR_IMAGE_REPOSITORY}:{tag}"
        started = time.monotonic()
        d.docker(*dockerfile_build_args(base_ref, operator_ref), str(_REPO_ROOT), timeout=1800)
        _log(f"operator image {operator_ref} built in {time.monotonic() - started:.0f}s")
        for ref in (PAUSE_IMAGE, operator_ref):
            path = out_dir / (ref.replace("/", "_").replace(":", "_") + ".tar")
            d.docker("save", "-o", str(path), ref, timeout=600)
            out[ref] = path
        # The image a rebuild replaced under the same tag: its layers stay cached, the old image goes.
        d.docker("image", "prune", "--force", check=False)
    return out


def dockerfile_build_args(base_ref: str, image_ref: str) -> list[str]:
    """``docker build`` arguments for operator/Dockerfile on the local base (pure, tested)."""
    return [
        "build", "-f", str(_REPO_ROOT / "operator" / "Dockerfile"),
        "--build-arg", f"PYTHON_IMAGE={base_ref}",
        # pip in the build reaches the package index through the host's network.
        "--network=host",
        "-t", image_ref,
    ]
