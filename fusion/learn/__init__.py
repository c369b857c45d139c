"""Leakage-free models: every learned step is a scikit-learn estimator inside one
Pipeline fitted on the training set only."""
