"""``python -m ropebench`` works as the ``ropebench`` command."""

from ropebench.cli import main

if __name__ == "__main__":
    main()
