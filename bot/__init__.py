"""The `!stylize` Discord bot: discord.py cogs in front of the engine service (see docs/bot.md)."""
