"""Name-keyed registries for the model catalogue and the importance criteria."""

from __future__ import annotations

from typing import Generic, TypeVar

Item = TypeVar("Item")


class Registry(Generic[Item]):
    """Items keyed by their `name` attribute, in registration order."""

    def __init__(self, kind: str, unknown_error: type[KeyError] = KeyError):
        self.kind = kind  # "model" or "criterion", used in messages
        self.unknown_error = unknown_error
        self._items: dict[str, Item] = {}

    def register(self, item: Item) -> Item:
        """Add `item`; a second item with the same name raises ValueError."""
        name = item.name  # type: ignore[attr-defined]
        if name in self._items:
            raise ValueError(f"{self.kind} {name!r} is already registered")
        self._items[name] = item
        return item

    def get(self, name: str) -> Item:
        """Look up an item, naming the valid choices when `name` is unknown."""
        try:
            return self._items[name]
        except KeyError:
            choices = ", ".join(self._items)
            raise self.unknown_error(f"unknown {self.kind} {name!r}; choose one of: {choices}") from None

    def names(self) -> list[str]:
        return list(self._items)

    def items(self):
        return self._items.items()
