"""How the bot reaches the style engine: `http.EngineClient` (the engine's HTTP API, one or more
engines) and `process.EmbeddedEngine` (the engine the bot starts itself when none is configured)."""
