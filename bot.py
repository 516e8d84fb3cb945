"""Run Clara. The Discord adapter arrives with issue #4; until then (and whenever no
DISCORD_BOT_TOKEN is set) this starts the local terminal chat on the embedded store, exactly like
`clara chat`."""

import sys

from clara.cli import app

if __name__ == "__main__":
    sys.exit(app(["chat", *sys.argv[1:]]))
