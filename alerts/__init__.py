"""Prometheus rules, their promtool tests and runbooks; `alerts.queries` reads them."""
