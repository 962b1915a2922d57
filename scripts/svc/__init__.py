"""Entry points of the service starters (the code is in devstack/services):
`python -m scripts.svc start|stop|status NAME`, `python -m scripts.svc.prometheus …`,
`python -m scripts.svc.unleash …`."""
