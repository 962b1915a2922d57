"""The traffic generator (generator.py) and the HTTP client that carries its load
(transport.py); tests and the demo use it as a library, people through scripts/traffic.py."""
