"""A stand-in for NVIDIA's dcgm-exporter: a tiny HTTP endpoint serving its metric format from a table
of fake GPUs that a test changes while Prometheus scrapes it.

    with FakeDcgmExporter() as exporter:
        exporter.set_node("node-a", [FakeGpu(power=600.0, fb_used_mib=40_000)] * 8)
        ... Prometheus scrapes exporter.address ...
        exporter.remove_node("node-a")

The series and labels are dcgm-exporter's (gpu, UUID, device, modelName, Hostname, driver version);
`extra_labels` adds others, e.g. `node` as the kubelet pod-resources mapping or relabelling gives, or
`pod`/`namespace`/`container`; two entries with the same `index` and different pods are one GPU
time-sliced between pods, which dcgm-exporter reports once per pod.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

METRICS = [
    ("DCGM_FI_DEV_POWER_USAGE", "gauge", "Power draw (in W).", "power"),
    ("DCGM_FI_DEV_FB_USED", "gauge", "Framebuffer memory used (in MiB).", "fb_used_mib"),
    ("DCGM_FI_DEV_FB_FREE", "gauge", "Framebuffer memory free (in MiB).", "fb_free_mib"),
    ("DCGM_FI_DEV_XID_ERRORS", "gauge", "Value of the last XID error encountered.", "xid"),
    ("DCGM_FI_DEV_ROW_REMAP_FAILURE", "gauge", "Whether remapping of rows has failed", "row_remap_failure"),
    ("DCGM_FI_DEV_GPU_TEMP", "gauge", "GPU temperature (in C).", "temp"),
]


@dataclass
class FakeGpu:
    power: float = 650.0
    fb_used_mib: int = 40_000
    fb_free_mib: int = 41_000
    xid: int = 0
    row_remap_failure: int = 0
    temp: int = 55
    model: str = "NVIDIA H100 80GB HBM3"
    index: int | None = None  # the GPU index it reports; None: its position in the node's list
    extra_labels: dict[str, str] = field(default_factory=dict)


def _esc(v: str) -> str:
    return v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


class FakeDcgmExporter:
    def __init__(self) -> None:
        self.nodes: dict[str, list[FakeGpu]] = {}
        self.lock = threading.Lock()
        self.scrapes = 0
        exporter = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path.split("?")[0] != "/metrics":
                    self.send_error(404)
                    return
                body = exporter.render().encode()
                exporter.scrapes += 1
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                del format, args

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.address = f"127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, name="fake-dcgm", daemon=True)

    def __enter__(self) -> FakeDcgmExporter:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=10)

    def set_node(self, hostname: str, gpus: list[FakeGpu]) -> None:
        with self.lock:
            self.nodes[hostname] = gpus

    def remove_node(self, hostname: str) -> None:
        with self.lock:
            self.nodes.pop(hostname, None)

    def render(self) -> str:
        with self.lock:
            nodes = {h: list(g) for h, g in self.nodes.items()}
        lines: list[str] = []
        for name, kind, help_text, attr in METRICS:
            lines += [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"]
            for host, gpus in sorted(nodes.items()):
                for pos, g in enumerate(gpus):
                    i = pos if g.index is None else g.index
                    labels = {"gpu": str(i), "UUID": f"GPU-{host}-{i:04d}", "device": f"nvidia{i}",
                              "modelName": g.model, "Hostname": host,
                              "DCGM_FI_DRIVER_VERSION": "550.54.15", **g.extra_labels}
                    text = ",".join(f'{k}="{_esc(v)}"' for k, v in labels.items())
                    lines.append(f"{name}{{{text}}} {getattr(g, attr)}")
        return "\n".join(lines) + "\n"
