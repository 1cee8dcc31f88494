"""`ulvm` sub-commands of the model group (argument parsing only)."""


def register(sub) -> None:
    """Add this group's sub-commands to the `ulvm` parser."""
