"""cli package of SymmetryAwareCore."""
