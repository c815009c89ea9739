"""Dashboards: one catalog of panels, rendered three ways.

- :mod:`.panels` holds every panel once: its ClickHouse SQL (history, drill-down) or its
  PromQL (live), the columns it returns, its unit.
- :mod:`.grafana` renders the catalog as Grafana dashboard JSON (``railwatch
  dashboards render``); :mod:`.rules` renders the Prometheus recording and alerting
  rules with their thresholds as parameters.
- :mod:`.page` serves the built-in ``/dashboard`` page from the same SQL, with charts
  drawn server-side as inline SVG (:mod:`.svg`).
"""
