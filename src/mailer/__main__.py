"""``python -m mailer``: the same as the ``mailer`` console script, for when it is not on PATH."""

from ._cli import main

main()
