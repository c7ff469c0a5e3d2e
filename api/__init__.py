"""The HTTP layer: a thin aiohttp application over a Vault (routes, auth,
errors, the OpenAPI document). It maps engine errors to HTTP and adds nothing
the engine should know."""
