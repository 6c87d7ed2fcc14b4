"""Experiments: sticky assignment, A/B analysis and off-policy evaluation.

The statistical core is a set of plain functions over plain data:

- `experiments.hashing.assign` puts a unit (a customer) in a variant, deterministically.
- `experiments.analysis.analyze` reads a per-unit frame (one row per unit: `variant`,
  `value`, optional pre-period `covariate`) and returns an `AnalysisResult`: per-variant
  summaries, sample-ratio check, CUPED adjustment, and per treatment the frequentist lift
  intervals, Bayesian chance to beat control and, on request, always-valid sequential results.
- `experiments.guardrails.judge_guardrails` judges metrics that must not get worse with the
  same machinery.
- `experiments.ope` estimates a new policy's value from logged decisions (IPS, SNIPS, DR).

Nothing here does I/O; randomness, where any, comes from a generator owned by the call.
"""
