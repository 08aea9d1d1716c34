"""`python -m eclair` runs the eclair command."""

from .cli import main

main()
