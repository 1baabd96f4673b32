"""The base layer: what every other package stands on, importing none of them.

``home`` (where state lives, ``CVM_HOME``), ``engines`` (DuckDB and Spark as context
managers), ``config`` (strict YAML configuration with ``extends``), ``atomic``
(directories and files swapped in whole), ``dates`` (the as-of cut-off and the
``as_of=YYYY-MM-DD`` partition names) and ``processes`` (start a server, wait until it is
ready, stop its whole process group).
"""
