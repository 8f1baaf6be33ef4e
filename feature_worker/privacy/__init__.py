"""Customer data at rest: per-customer data keys (AES-256-GCM) wrapped by a master key, where the keys live,
and crypto-shredding (erasing a customer destroys their key). See `sealing`, `vault` and `keystores`."""
