"""The strict pydantic base of every alignmix config: recipes, stage configs, generator and training settings.

Unknown fields are errors, so a typo in a recipe never passes silently:

    >>> class Demo(StrictModel):
    ...     seed: int = 0
    >>> try:
    ...     Demo(sede=3)
    ... except ValueError as err:
    ...     print(err.errors()[0]["type"])
    extra_forbidden
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class StrictModel(BaseModel):
    """A pydantic model that refuses fields it does not declare."""

    model_config = ConfigDict(extra="forbid")
