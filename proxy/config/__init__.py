"""The policy file: its pydantic models (frozen, unknown keys refused), the loader that
reads YAML with lines and `${...}`, the units, and the checks across sections."""
