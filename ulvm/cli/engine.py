"""`ulvm` sub-commands of the engine group (argument parsing only)."""


def register(sub) -> None:
    """Add this group's sub-commands to the `ulvm` parser."""
