"""Per-node GPU power traces, at 1 s resolution, from documented shapes.

Every figure is a share of the GPU's TDP (spec.gpu.maxPowerWatts). The shapes, and where they come
from (the parameters are this simulator's assumptions, chosen inside what the sources describe):

- Synchronous training. Every GPU of a data-parallel job computes, then waits on the collective
  (all-reduce) that ends the iteration, so the whole job swings between a compute level near TDP
  and a communication level well below it, in lockstep, once per iteration (seconds), and drops
  for checkpoints. Sources: Patel et al., "Characterizing Power Management Opportunities for LLMs
  in the Cloud" (ASPLOS 2024, the POLCA paper: training power swings between near-TDP and far
  lower within an iteration, synchronised across the job); Meta, "The Llama 3 Herd of Models"
  (2024), section 3.3.4 (power across the data centre fluctuates by tens of megawatts with
  synchronised computation, collectives and checkpoints); Choukse et al., "Power Stabilization for
  AI Training Datacenters" (Microsoft, OpenAI, NVIDIA, 2025: iteration-scale swings of the whole
  job's power). Here: an iteration period of 2-10 s, 60-80 % of it computing at 85-100 % of TDP,
  the rest at 35-50 %; a checkpoint every 20-60 minutes, 30-120 s at 20-35 %; per-GPU noise of
  1.5 %.
- Inference. A diurnal load with bursts, each server on its own: Patel et al., "Splitwise"
  (ISCA 2024; Azure LLM inference traces: diurnal request rates, bursty arrivals) and POLCA (ASPLOS
  2024: inference clusters rarely reach their provisioned power, peaks are short). Here: a level
  of 25 % of TDP at the daily trough (04:00) to 70 % at the peak (16:00), slow noise (an AR(1) with
  a 30 s memory, 5 %), and bursts at about 4 an hour per server lasting 5-30 s at 90-100 %.
- Idle. A powered GPU with nothing to run draws about a tenth of its TDP (POLCA's measurements of
  idle servers; NVIDIA's H100 idles near 70-100 W of its 700 W). Here: 10 % with 1 % noise.

Which racks run what: racks are taken in the order the site is filled (site.py) and grouped into
jobs of 1, 2, 4 or 8 consecutive racks, each job training, serving inference or idle by the mix
(default 40 / 35 / 25 %: a site that trains and serves; its mean
draw at the daily peak is about 70 % of nameplate, above the 30-60 % NVIDIA PRS reports for GPU
clusters). The grouping and every job's parameters come from the seed alone, rack by
rack, so rack k runs the same trace whatever the number of nodes: a bigger site only adds racks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

Array = npt.NDArray[np.float64]

TRAINING = "training"
INFERENCE = "inference"
IDLE = "idle"
SUBSTEPS = 10  # samples per second of a training wave, averaged: what a 1 s power reading shows
JOB_RACK_SIZES = (1, 2, 4, 8)
JOB_RACK_WEIGHTS = (0.25, 0.3, 0.3, 0.15)


@dataclass(frozen=True, slots=True)
class Mix:
    """Shares of racks by workload; they need not add up to 1 (they are weights)."""

    training: float = 0.40
    inference: float = 0.35
    idle: float = 0.25

    @classmethod
    def parse(cls, text: str) -> Mix:
        """`training=60,inference=25,idle=15` (weights; missing ones are 0)."""
        shares = {TRAINING: 0.0, INFERENCE: 0.0, IDLE: 0.0}
        for part in text.split(","):
            key, _, value = part.partition("=")
            key = key.strip()
            if key not in shares or not value.strip():
                raise ValueError(f"not a share of {', '.join(shares)}: {part!r}")
            shares[key] = float(value)
            if shares[key] < 0:
                raise ValueError(f"a share is not negative: {part!r}")
        if sum(shares.values()) <= 0:
            raise ValueError("the mix needs a share above 0")
        return cls(shares[TRAINING], shares[INFERENCE], shares[IDLE])

    def weights(self) -> tuple[float, float, float]:
        total = self.training + self.inference + self.idle
        return self.training / total, self.inference / total, self.idle / total


@dataclass(frozen=True, slots=True)
class Job:
    """A block of consecutive racks and what they run."""

    index: int
    kind: str
    first_rack: int
    racks: int


def jobs_for(racks: int, mix: Mix, seed: int) -> list[Job]:
    """The jobs covering racks 0..racks-1, in order; a prefix of a longer site's jobs."""
    rng = np.random.default_rng([seed, 0x10B5])
    kinds = (TRAINING, INFERENCE, IDLE)
    weights = mix.weights()
    given = [0, 0, 0]  # racks given to each kind so far
    out: list[Job] = []
    at = 0
    while at < racks:
        size = int(rng.choice(JOB_RACK_SIZES, p=JOB_RACK_WEIGHTS))
        # The kind furthest below its share once this job is placed (a little jitter breaks ties
        # and varies the order), so the racks' shares track the mix even on a small site.
        need = [w * (at + size) - g + rng.uniform(0.0, 0.5) for w, g in zip(weights, given, strict=True)]
        k = max(range(3), key=lambda i: (weights[i] > 0, need[i]))
        given[k] += size
        out.append(Job(len(out), kinds[k], at, size))
        at += size
    return out


def _training_wave(job: Job, seed: int, start_s: float, duration: int) -> Array:
    """The job's power share per second (every GPU of it in lockstep), before per-GPU noise."""
    rng = np.random.default_rng([seed, 0x7A1, job.index])
    period = rng.uniform(2.0, 10.0)
    duty = rng.uniform(0.6, 0.8)
    high = rng.uniform(0.85, 1.0)
    low = rng.uniform(0.35, 0.5)
    phase = rng.uniform(0.0, period)
    every = rng.uniform(1200.0, 3600.0)
    length = rng.uniform(30.0, 120.0)
    level = rng.uniform(0.2, 0.35)
    first = rng.uniform(0.0, every)
    t = start_s + (np.arange(duration * SUBSTEPS) + 0.5) / SUBSTEPS
    computing = ((t + phase) % period) < duty * period
    wave = np.where(computing, high, low)
    checkpointing = ((t - first) % every) < length
    wave = np.where(checkpointing, level, wave)
    return wave.reshape(duration, SUBSTEPS).mean(axis=1)  # type: ignore[no-any-return]


def _diurnal(start_s: float, duration: int) -> Array:
    """0 at the daily trough (04:00), 1 at the peak (16:00)."""
    hours = (start_s + np.arange(duration)) / 3600.0
    return 0.5 - 0.5 * np.cos(2 * math.pi * (hours - 4.0) / 24.0)  # type: ignore[no-any-return]


def _inference(rngs: list[np.random.Generator], diurnal: Array) -> Array:
    """Rows of inference servers, each with its own generator (so each row is the same whichever
    other rows are drawn with it)."""
    duration = diurnal.size
    n = len(rngs)
    a = math.exp(-1 / 30.0)  # AR(1) noise with a 30 s memory and a stationary spread of 5 %
    shocks = np.empty((n, duration))
    x = np.empty(n)
    for j, rng in enumerate(rngs):
        x[j] = rng.normal(0.0, 0.05)
        shocks[j] = rng.normal(0.0, 0.05 * math.sqrt(1 - a * a), duration)
    noise = np.empty((n, duration))
    for i in range(duration):
        x = a * x + shocks[:, i]
        noise[:, i] = x
    out = (0.25 + 0.45 * diurnal)[None, :] + noise
    for j, rng in enumerate(rngs):
        for _ in range(int(rng.poisson(4.0 * duration / 3600.0))):
            begin = int(rng.integers(0, duration))
            out[j, begin:begin + int(rng.integers(5, 31))] = rng.uniform(0.9, 1.0)
    return out


class TraceBank:
    """Traces by (rack place, slot in rack), computed once and kept (as float32) for every run of a
    search: a node's trace never depends on the site's size."""

    def __init__(self, mix: Mix, seed: int, start_s: float, duration: int) -> None:
        self.mix, self.seed, self.start_s, self.duration = mix, seed, start_s, duration
        self._rows: dict[tuple[int, int], npt.NDArray[np.float32]] = {}
        self._jobs: list[Job] = []
        self._job_of_rack: list[Job] = []
        self._waves: dict[int, Array] = {}
        self._diurnal = _diurnal(start_s, duration)

    def _job(self, rack: int) -> Job:
        if rack >= len(self._job_of_rack):
            self._jobs = jobs_for(max(rack + 1, 2 * len(self._job_of_rack)), self.mix, self.seed)
            self._job_of_rack = []
            for job in self._jobs:
                self._job_of_rack += [job] * job.racks
        return self._job_of_rack[rack]

    def kinds(self, racks: int) -> list[str]:
        return [self._job(r).kind for r in range(racks)]

    def traces(self, nodes: list[tuple[int, int]]) -> npt.NDArray[np.float32]:
        """Shares of TDP, one row per (rack place, slot), one column per second."""
        missing = [key for key in dict.fromkeys(nodes) if key not in self._rows]
        inference: list[tuple[int, int]] = []
        for key in missing:
            rack, slot = key
            job = self._job(rack)
            if job.kind == INFERENCE:
                inference.append(key)
                continue
            rng = np.random.default_rng([self.seed, 0xD0DE, rack, slot])
            if job.kind == TRAINING:
                wave = self._waves.get(job.index)
                if wave is None:
                    wave = self._waves[job.index] = _training_wave(job, self.seed, self.start_s,
                                                                   self.duration)
                row = wave * (1.0 + rng.normal(0.0, 0.015, self.duration))
            else:
                row = 0.10 + rng.normal(0.0, 0.01, self.duration)
            self._rows[key] = np.clip(row, 0.0, 1.0).astype(np.float32)
        if inference:
            rngs = [np.random.default_rng([self.seed, 0xD0DE, r, s]) for r, s in inference]
            rows = np.clip(_inference(rngs, self._diurnal), 0.0, 1.0).astype(np.float32)
            for key, row in zip(inference, rows, strict=True):
                self._rows[key] = row
        out = np.empty((len(nodes), self.duration), dtype=np.float32)
        for i, key in enumerate(nodes):
            out[i] = self._rows[key]
        return out
