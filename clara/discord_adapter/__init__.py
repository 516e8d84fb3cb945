"""The Discord transport: a discord.py adapter over the core (`clara.chat.ChatEngine`)."""
