"""Local-only training: each site trains alone; nothing leaves the client (every entry is personal)."""
from fedicra.fl.method import Method
from fedicra.fl.registry import register


@register
class Local(Method):
    name = "local"
    description = "Each site trains its own model on its own weak labels; no communication."

    def is_personal(self, name: str) -> bool:
        return True

    def aggregate(self, server, replies) -> None:
        pass
