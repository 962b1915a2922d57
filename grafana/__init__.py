"""Grafana dashboards as code (grafana-foundation-sdk); `python -m grafana.build` renders them."""
