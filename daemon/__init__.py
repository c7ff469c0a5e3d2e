"""medvault engine: crypto, formats, block stores, the Vault service and the CLI."""
