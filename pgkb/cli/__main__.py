"""`python -m pgkb.cli`."""

from pgkb.cli import main

main()
