"""The decision log (interaction history): every decision and its outcomes, durable.

``records`` says what a decision and an outcome are; ``store`` keeps them, embedded in
SQLite under CVM_HOME or in PostgreSQL (``CVM_DECISIONS_URL``); ``group_commit`` lets
concurrent requests share one transaction and one fsync. The service, the nightly
batch and the simulation write it; the live contact policy (``scoring.contacts``) and the
impact measurement (``scoring.impact``) read it.
"""

from scoring.decisions.group_commit import GroupCommitter
from scoring.decisions.records import (
    MAX_OUTCOMES,
    OUTCOME_TYPES,
    Decision,
    DecisionStoreUnavailable,
    LiveHistory,
    Outcome,
    OutcomeCounts,
    OutcomeError,
    from_us,
    to_us,
)
from scoring.decisions.store import (
    DecisionStore,
    PostgresDecisionStore,
    SQLiteDecisionStore,
    open_decision_store,
)

__all__ = [
    "MAX_OUTCOMES",
    "OUTCOME_TYPES",
    "Decision",
    "DecisionStore",
    "DecisionStoreUnavailable",
    "GroupCommitter",
    "LiveHistory",
    "Outcome",
    "OutcomeCounts",
    "OutcomeError",
    "PostgresDecisionStore",
    "SQLiteDecisionStore",
    "from_us",
    "open_decision_store",
    "to_us",
]
