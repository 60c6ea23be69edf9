"""Pure logic: rollups, power allocation, memory binding, conditions. No kopf, no I/O."""
