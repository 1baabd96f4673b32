"""The scoring core: what the service, the nightly batch and the offline offer evaluation
share, so that they give the same numbers.

- ``champions``: the registered champion of each task, loaded into its fast form;
- ``inference``: every champion's outputs for a block of snapshot rows, population priors,
  reason codes;
- ``catalog``: the offer catalog (``catalogs/<dataset>.yaml``), strictly validated;
- ``contacts``: the contact history published with a snapshot, counted for caps and cooldowns;
- ``nbo``: next-best-offer arbitration, propensity x value x lever - cost.
"""
