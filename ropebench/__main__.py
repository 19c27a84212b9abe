"""``python -m ropebench`` runs the command line."""

from ropebench.cli import main

if __name__ == "__main__":  # pragma: no cover
    main()
