"""Local-only training: each site trains alone; nothing leaves the client (every entry is personal)."""
from fedicra.fl.method import NoExchange
from fedicra.fl.registry import register


@register
class Local(NoExchange):
    name = "local"
    new_site = False   # nothing is shared: a new site would get nothing
    description = "Each site trains its own model on its own weak labels; no communication."
