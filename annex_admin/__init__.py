"""annex-admin: the pool administrator's tool (region setup, credentials, enforcement, teardown)."""
