"""`stargate-operator simulate`: trace-driven oversubscription, as the papers evaluate it.
Pure: no cluster, no I/O but the report the caller asks for.

- traces.py: per-node GPU power traces from documented shapes (training, inference, idle);
- breaker.py: the trip curve of the breakers (a thermal-magnetic inverse-time curve);
- site.py: the site under test, from manifests or generated, scaled to any node count;
- run.py: one run at 1 s steps, the operator's own core at every control step;
- search.py: the most nodes a policy hosts under the tree, by search;
- report.py: the HTML page with its plots (the only module that imports matplotlib).

Needs numpy (the `sim` extra: `pip install 'stargate-operator[sim]'`).
"""

# Defaults, here so that the command line reads them without importing numpy.
# The enforcement path's reaction time, as a default (Dynamo's leaf controller works on a 3 s
# cycle); `--enforcement-lag` takes a figure measured on the site (hack/bench-react.py).
DEFAULT_ENFORCEMENT_LAG_S = 3.0
DEFAULT_CONTROL_INTERVAL_S = 5
DEFAULT_DURATION_S = 1800
DEFAULT_START_HOUR = 14.0  # near the daily peak of inference: the hardest hour of the day
DEFAULT_MAX_CAPPED_PERCENT = 5.0
DEFAULT_MIX = "training=40,inference=35,idle=25"
# The measured policy's oversubscription where the manifests set none: with 80 % derating, limits at
# +25 % add up to no more than the breakers' rating.
DEFAULT_OVERSUBSCRIBE_PERCENT = 25
