"""How the bot reaches the style engine, through one interface (`base.Engine`): `http.EngineClient` (one engine's
HTTP API), `broker.BrokerEngine` (a NATS JetStream queue that GPU workers pull from), and
`process.EmbeddedEngine` (the engine the bot starts itself when none is configured)."""
