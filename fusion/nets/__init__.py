"""Networks shared by the stages that train or run them: weights resolution."""
