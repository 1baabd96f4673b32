"""Customer Value Management scoring service.

The folders follow the data's path: ``sources`` (raw tables and their contract)
-> ``profiles`` (identity resolution, golden records) -> ``features`` (point-in-time
RFM and behavioural features, online store) -> ``training`` -> ``serving``.
This package holds what they share: the home directory, engines and the CLI.
"""

__version__ = "0.1.0"
