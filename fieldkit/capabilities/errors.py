"""The one error the planner raises for bad input: it names the field, the value and what is allowed."""

from __future__ import annotations

from pydantic import ValidationError


class PlanInputError(ValueError):
    """A request the planner refuses; `field` is the option or catalogue field at fault."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        super().__init__(f"{field}: {message}")


def from_validation(source: str, exc: ValidationError) -> PlanInputError:
    """The first pydantic problem as a PlanInputError naming `source` and the dotted field."""
    err = exc.errors()[0]
    where = ".".join(str(part) for part in err["loc"])
    message = err["msg"].removeprefix("Value error, ")
    if err["type"] != "missing" and "input" in err and not isinstance(err["input"], dict):
        message += f" (got {err['input']!r})"
    return PlanInputError(f"{source}.{where}" if source and where else source or where, message)
