"""`stargate-operator demo`: the whole system on one machine.

- :mod:`.assets`: where the CRDs (generated from the models of this very package) and the sample site
  (``crds/samples/`` of the checkout, or ``--samples DIR``) come from;
- :mod:`.procs`: the subprocesses the demo starts (operator, simulated agents), each in a process
  group of its own, with a watchdog that ends them should the demo itself be killed;
- :mod:`.summary`: one cheap read of the API per refresh and the live summary drawn from it;
- :mod:`.runner`: the sequence (binaries, control plane, CRDs, samples, agents, operator, summary,
  curtailment) and the clean stop.
"""
