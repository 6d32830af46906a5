"""Developer tools: a local Discord server double and a demo of the whole flow without Discord."""
