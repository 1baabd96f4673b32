"""The event log: events posted by tracking systems (POST /events, cvm events ingest), durable before
they are acknowledged, read back by the nightly batch as its events and transactions."""
