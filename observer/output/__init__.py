"""Outputs: the stdout renderer, the systemd journal, Prometheus metrics, the top screen."""
