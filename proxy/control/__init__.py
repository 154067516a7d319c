"""The control port: probes, /metrics, /status, the operator's actions and their audit
log, served by aiohttp (never on a request's path)."""
