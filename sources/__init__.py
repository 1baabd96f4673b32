"""Raw customer data: the table contract, loading with validation and quarantine,
the built-in Complete Journey dataset and the synthetic generator."""
