"""models package of SymmetryAwareCore."""
