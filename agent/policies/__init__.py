"""Policies an evaluation drives: the interface, random, idle, trained, the hand-written rule and
the lookahead planner (a bound that sees the simulator, not a driver) and its fast batched
twin, the teacher (privileged, not deployable)."""
