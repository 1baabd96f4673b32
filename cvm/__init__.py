"""The ``cvm`` command line: the top layer, importing every other package and imported by none.

The folders follow the data's path: ``sources`` (raw tables and their contract) ->
``profiles`` (identity resolution, golden records) -> ``features`` (point-in-time RFM and
behavioural features, the online store) -> ``training`` (labels, models, the registry)
-> ``scoring`` (the one prediction path's consumers: inference, the offer engine, the
catalog, the contact policy) -> ``serving``, ``batch`` and ``report`` side by side. ``base``
sits under all of them (home, engines, configuration files, atomic writes, processes).
"""

__version__ = "0.1.0"
