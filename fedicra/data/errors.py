from fedicra.errors import UserError


class DataError(UserError):
    """A dataset file, folder or option is missing or malformed."""
