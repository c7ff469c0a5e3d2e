"""The SQLite index: schema and migrations, records and search, tokens, pins
and the audit chain. Knows nothing of the engine or the HTTP layer."""
