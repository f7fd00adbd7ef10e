"""``make bench``: throughput scenarios against the local stack, written to ``docs/benchmarks.md``.

A scenario is a module in ``local/bench/scenarios/`` exposing ``SCENARIO`` (:class:`~local.bench.scenario.Scenario`):
a name, a title and a ``run(context)`` returning :class:`~local.bench.report.Table` s. Scenarios run in the
order of ``scenarios.ALL``; a later one can read an earlier one's numbers from ``context.results`` (ratios
against baselines measured in the same run). Nothing here asserts a speed: targets are reported.
"""
