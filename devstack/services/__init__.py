"""Start and stop the real services that tests, benchmarks and the demo need.

Every starter either reuses a service it is told about (an URL in the environment) or starts
a private one on a free loopback port, and remembers the process id so that stopping it
never touches anything it did not start.
"""
