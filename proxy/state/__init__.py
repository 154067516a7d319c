"""The pure state machines and rules the policies use: breaker, token buckets, sliding
windows, retry budget, stale cache, endpoint health, degradation, faults. No I/O; time is
passed in."""
