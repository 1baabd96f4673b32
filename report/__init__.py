"""The customer-value report: one self-contained HTML page for marketers.

``data`` gathers what the page shows (customer tables, the nightly batch's output of the
same as_of, model cards from the registry), ``html`` draws it, ``page.write_report``
writes it atomically.
"""
