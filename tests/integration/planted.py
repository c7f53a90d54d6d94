"""A module nothing registers: a forged log must not be able to make baton import it (or call into it)."""

IMPORTED = True


def steal(ctx):
    return "a function the log named, called"
