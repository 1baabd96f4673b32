"""Triggered offers: "when X and not Y within T" rules over the event stream, a logged
next-best-offer decision when one fires, and its signed webhook delivery through an outbox
(``rules``, ``store`` on SQLite or ``redis_store`` on Redis, chosen by ``open``, ``engine``,
``webhook``, ``runner``)."""
