"""``python -m sfda ...``: the ``sfda`` command."""

from .commands import main

if __name__ == "__main__":
    main()
