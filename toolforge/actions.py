"""The optimizer's actions on a toolset, as the paper names them: add, revise and remove a function.

`Action` is a pydantic discriminated union on the `action` field, so that an LM's JSON reply or a saved report
parses straight into the right class:

    >>> TypeAdapter(Action).validate_python({"action": "remove_function", "name": "area"})
    RemoveFunction(action='remove_function', name='area')
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from toolforge.function import ForgedFunction, FunctionFields

__all__ = ["Action", "AddFunction", "RemoveFunction", "ReviseFunction"]


class _FunctionAction(FunctionFields):
    """Fields of a function; `to_function()` validates them into a `ForgedFunction`."""

    def to_function(self, parent: str | None = None) -> ForgedFunction:
        """The function this action carries. Raises `FunctionError` with the reason when it is not valid."""
        return ForgedFunction(
            name=self.name,
            description=self.description,
            parameters=self.parameters,
            code=self.code,
            packages=self.packages,
            deterministic=self.deterministic,
            parent=parent,
        )

    @classmethod
    def of(cls, function: ForgedFunction) -> Any:
        """The action that carries `function`."""
        return cls(**function.model_dump(exclude={"parent"}))


class AddFunction(_FunctionAction):
    """Add a new function; its name must not be in the toolset yet."""

    action: Literal["add_function"] = "add_function"


class ReviseFunction(_FunctionAction):
    """Replace the function of the same name (interface, code or both); the new one records its parent."""

    action: Literal["revise_function"] = "revise_function"


class RemoveFunction(BaseModel):
    """Remove the function of this name."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    action: Literal["remove_function"] = "remove_function"
    name: str

    def __init__(self, name: str | None = None, /, **data: Any) -> None:
        if name is not None:
            data["name"] = name
        super().__init__(**data)


Action = Annotated[AddFunction | ReviseFunction | RemoveFunction, Field(discriminator="action")]

_ADAPTER: TypeAdapter[Any] = TypeAdapter(Action)


def parse_action(data: Any) -> Action:
    """The action that `data` (its JSON form, a dict) describes. Raises pydantic's ValidationError."""
    action: Action = _ADAPTER.validate_python(data)
    return action


def validation_reasons(exc: ValidationError) -> str:
    """The first few reasons of a ValidationError, each with where it applies, on one line."""
    return "; ".join(f"{'.'.join(map(str, e['loc'])) or 'action'}: {e['msg']}" for e in exc.errors()[:3])
