"""Run Clara on Discord (same as `clara bot`): needs DISCORD_BOT_TOKEN in the environment or
`.env`; without it, this says so and exits (the local terminal chat is `make run` / `clara chat`)."""

import sys

from clara.cli import app

if __name__ == "__main__":
    sys.exit(app(["bot", *sys.argv[1:]]))
