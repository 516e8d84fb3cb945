"""`python -m clara`: the `clara` command."""

from clara.cli import main

main()
