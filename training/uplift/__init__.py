"""Uplift modelling: who should be contacted because contact changes what they do.

``metrics`` judges an uplift ranking on a randomised log (Qini and uplift curves, their
normalised areas, uplift at k; equal to scikit-uplift's definitions); ``learners`` estimates
individual uplift with T-, X- and DR-learners on LightGBM, with bootstrap intervals.
Pure library code: nothing here reads or writes files.
"""

from training.uplift.learners import DRLearner, TLearner, XLearner
from training.uplift.metrics import auuc, qini_coefficient, qini_curve, qini_frame, uplift_at_k, uplift_curve

__all__ = ["DRLearner", "TLearner", "XLearner", "auuc", "qini_coefficient", "qini_curve", "qini_frame",
           "uplift_at_k", "uplift_curve"]
