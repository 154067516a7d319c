"""The `faults:` section (and the body of `POST /faults`): a fault to inject."""

from __future__ import annotations

from pydantic import Field, model_validator

from .types import Section, unit
from .units import Duration, Ratio


class FaultSpec(Section):
    route: str | None = None
    """The route whose attempts it hits (or give `upstream`)."""
    upstream: str | None = None
    delay: Duration | None = None
    """Wait this long before the attempt goes out."""
    abort: int | None = Field(default=None, ge=200, le=599)
    """Answer this status instead of the upstream."""
    reset: bool = False
    """Fail the attempt as a connection reset."""
    percentage: Ratio = unit("100%")

    @model_validator(mode="after")
    def _one_target_and_an_effect(self) -> FaultSpec:
        if (self.route is None) == (self.upstream is None):
            raise ValueError("give exactly one of route or upstream")
        if self.delay is None and self.abort is None and not self.reset:
            raise ValueError("give a delay, an abort status or reset: true")
        return self
